//! Errors a plugin sees: a phase's [`Error`] (which fails the call), and why the gateway
//! refused an edit ([`EditError`]).

use crate::bindings::weir::plugin::types as wit;

/// Why a phase failed. Returned from a phase, it fails the call: the gateway logs the
/// message with the plugin's name, counts a failure of kind `error`, and applies the
/// route's `on_error` policy (deny the request with 500, or skip the plugin). Any
/// [`std::error::Error`] converts into it, so `?` works on edits ([`EditError`]), the
/// key-value store ([`KvFull`](crate::host::kv::KvFull)) and outbound calls
/// ([`HttpError`](crate::host::http::HttpError)); [`Error::msg`] makes one from text.
///
/// A refusal the client should see (a 401, a 429) is not an error: answer it with
/// [`Action::Respond`](crate::Action::Respond).
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

/// Errors compare by message (for assertions in tests).
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.message == other.message
    }
}

impl Eq for Error {}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Error {
        Error::msg(error)
    }
}

/// Why an edit was refused; nothing was changed. The gateway also logs the refusal with
/// the plugin's name and counts it (`weir_plugin_refusals_total{reason="edit"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// The header name is not an HTTP field name (an RFC 9110 token), names a
    /// hop-by-hop field (`connection`, `keep-alive`, `transfer-encoding`, `upgrade`,
    /// `trailer`, `te`, `proxy-*`; removing one is allowed), or names `content-length`
    /// or `host`, which only the gateway sets.
    InvalidName(String),
    /// The value holds bytes HTTP forbids (CR, LF, NUL or another control byte but tab),
    /// or, from [`Request::cache_key_append`](crate::Request::cache_key_append), the
    /// part would take the request's cache key parts past 1024 bytes.
    InvalidValue(String),
    /// The path is not an absolute path with optional query (`/...`).
    InvalidPath(String),
    /// The status code is outside 100..=999.
    InvalidStatus(u16),
    /// This message cannot be changed in this phase (the request in response phases,
    /// anything in the log phase).
    ReadOnly,
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::InvalidName(name) => write!(f, "header name `{name}` refused"),
            EditError::InvalidValue(value) => write!(f, "value {value:?} refused"),
            EditError::InvalidPath(path) => write!(f, "path `{path}` refused"),
            EditError::InvalidStatus(status) => write!(f, "status {status} refused"),
            EditError::ReadOnly => f.write_str("the message is read-only in this phase"),
        }
    }
}

impl std::error::Error for EditError {}

impl From<wit::EditError> for EditError {
    fn from(error: wit::EditError) -> EditError {
        match error {
            wit::EditError::InvalidName(name) => EditError::InvalidName(name),
            wit::EditError::InvalidValue(value) => EditError::InvalidValue(value),
            wit::EditError::InvalidPath(path) => EditError::InvalidPath(path),
            wit::EditError::InvalidStatus(status) => EditError::InvalidStatus(status),
            wit::EditError::ReadOnly => EditError::ReadOnly,
        }
    }
}
