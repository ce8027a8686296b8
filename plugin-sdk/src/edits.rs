//! Header edits a plugin declares once, for the gateway to make on every request and
//! response without calling the plugin ([`Plugin::static_edits`](crate::Plugin::static_edits)).

use crate::error::EditError;
use crate::headers::Headers;

/// One header edit the gateway makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replaces every field of the name with one field of this value.
    Set(String, Vec<u8>),
    /// Adds a field, keeping any others of the same name.
    Append(String, Vec<u8>),
    /// Removes every field of the name.
    Remove(String),
}

impl HeaderEdit {
    /// Makes the edit on `headers`, as the gateway does (for native tests).
    pub fn apply(&self, headers: &mut Headers<'_>) -> Result<(), EditError> {
        match self {
            HeaderEdit::Set(name, value) => headers.set(name, value),
            HeaderEdit::Append(name, value) => headers.append(name, value),
            HeaderEdit::Remove(name) => headers.remove(name),
        }
    }
}

/// The header edits a route's configuration makes on every request and every response,
/// whatever they carry: see [`Plugin::static_edits`](crate::Plugin::static_edits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticEdits {
    /// Made in order where [`Plugin::on_request_headers`](crate::Plugin::on_request_headers)
    /// would run (just before it, if the plugin has that phase).
    pub request: Vec<HeaderEdit>,
    /// Made in order where [`Plugin::on_response_headers`](crate::Plugin::on_response_headers)
    /// would run (just before it), exactly when it would be called.
    pub response: Vec<HeaderEdit>,
}

impl StaticEdits {
    /// Whether there is nothing to declare.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// Checks the edits by the gateway's rules, as [`StaticEdits::declare`] has the
    /// gateway do (native tests); `Err` names the first refused.
    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn check(&self) -> Result<(), String> {
        use crate::headers::{EditKind, check_edit};
        for edit in self.request.iter().chain(&self.response) {
            let (kind, name, value) = match edit {
                HeaderEdit::Set(name, value) => (EditKind::Set, name, value.as_slice()),
                HeaderEdit::Append(name, value) => (EditKind::Append, name, value.as_slice()),
                HeaderEdit::Remove(name) => (EditKind::Remove, name, &[][..]),
            };
            check_edit(kind, name, value).map_err(|e| {
                let why = match e {
                    EditError::InvalidName(name) => format!("invalid name {name:?}"),
                    EditError::InvalidValue(value) => format!("invalid value {value:?}"),
                    other => other.to_string(),
                };
                format!("the gateway refused a declared header edit: {why}")
            })?;
        }
        Ok(())
    }

    /// Hands the edits to the gateway (in `init`); `Err` names the first it refused.
    pub(crate) fn declare(&self) -> Result<(), String> {
        #[cfg(target_family = "wasm")]
        {
            use crate::bindings::weir::plugin::{host, types};
            let wit = |edits: &[HeaderEdit]| -> Vec<types::HeaderEdit> {
                edits
                    .iter()
                    .map(|edit| match edit {
                        HeaderEdit::Set(name, value) => types::HeaderEdit::Set(types::Header {
                            name: name.clone(),
                            value: value.clone(),
                        }),
                        HeaderEdit::Append(name, value) => {
                            types::HeaderEdit::Append(types::Header {
                                name: name.clone(),
                                value: value.clone(),
                            })
                        }
                        HeaderEdit::Remove(name) => types::HeaderEdit::Remove(name.clone()),
                    })
                    .collect()
            };
            host::declare_edits(&wit(&self.request), &wit(&self.response)).map_err(|e| {
                let why = match e {
                    types::EditError::InvalidName(name) => format!("invalid name {name:?}"),
                    types::EditError::InvalidValue(value) => format!("invalid value {value:?}"),
                    other => format!("{other:?}"),
                };
                format!("the gateway refused a declared header edit: {why}")
            })
        }
        #[cfg(not(target_family = "wasm"))]
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    #[test]
    fn edits_apply_in_order_as_the_gateway_makes_them() {
        let edits = StaticEdits {
            request: vec![
                HeaderEdit::Remove("x-drop".into()),
                HeaderEdit::Set("x-env".into(), b"prod".to_vec()),
                HeaderEdit::Append("x-tag".into(), b"gw".to_vec()),
            ],
            response: Vec::new(),
        };
        assert!(!edits.is_empty());
        assert!(StaticEdits::default().is_empty());
        let mut request = Request::new("GET", "/")
            .with_header("x-drop", "1")
            .with_header("x-env", "dev")
            .with_header("x-tag", "client");
        for edit in &edits.request {
            edit.apply(&mut request.headers).unwrap();
        }
        assert!(!request.headers.contains("x-drop"));
        assert_eq!(request.headers.get_str("x-env"), Some("prod"));
        assert_eq!(
            request.headers.get_all("x-tag"),
            vec![b"client".to_vec(), b"gw".to_vec()]
        );
        assert_eq!(
            edits.declare(),
            Ok(()),
            "natively there is no gateway to refuse"
        );
    }
}
