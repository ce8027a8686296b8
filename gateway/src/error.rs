//! The gateway's own errors and the one place they become client responses:
//! [`error_reply`]. Every error answered on the proxy listener is a [`ProxyError`], every
//! one on the admin listener an [`AdminError`]; both leave as a [`LocalReply`].
//!
//! Clients get a status and a short JSON reason (`{"error":"<reason>"}`), never internals
//! (addresses, error chains); the full story goes to the log with the route and upstream.
//! A gRPC or gRPC-Web client gets the same answer as a gRPC status instead
//! ([`grpc_reply`]).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::grpc_status::GrpcProtocol;
use crate::path::PathError;
use crate::plugin::{FailureKind, PluginFailure};
use crate::upstream::{Refusal, UpstreamFailure};

pub use crate::body::ResponseBody;
pub use crate::reply::LocalReply;

/// Why the gateway answered a request itself instead of relaying the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request path could not be normalised.
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// The request's `Host` is missing (HTTP/1.1), repeated or invalid (RFC 9112 §3.2).
    #[error("bad Host header: {0}")]
    BadHost(&'static str),
    /// The request target is longer than `[server.limits] max_uri_bytes`.
    #[error("request target longer than the {limit}-byte limit")]
    UriTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// No route matches.
    #[error("no route matches the request")]
    NoRoute,
    /// A `CONNECT` request: the gateway does not open TCP tunnels on request.
    #[error("CONNECT is not supported")]
    ConnectNotAllowed,
    /// The request body is larger than the route, a plugin or the mirror takes.
    #[error("request body larger than the {limit}-byte limit")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The client's request body could not be read (malformed or cut off).
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    /// A plugin failed and its policy (`on_error = "deny"`) denied the request.
    #[error("{0}")]
    Plugin(PluginFailure),
    /// The upstream's response body could not be read whole for a response-body phase.
    #[error("upstream response body larger than the {limit}-byte plugin limit, or broken")]
    ResponseBodyForPlugin {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The upstream agreed to an upgrade the client's connection cannot make.
    #[error("the upstream switched protocols but the client connection cannot upgrade")]
    UpgradeImpossible,
    /// The upstream exchange failed.
    #[error("upstream `{upstream}` endpoint {endpoint}: {failure}")]
    Upstream {
        /// The cluster.
        upstream: std::sync::Arc<str>,
        /// The endpoint tried.
        endpoint: http::uri::Authority,
        /// What went wrong.
        #[source]
        failure: UpstreamFailure,
    },
    /// The cluster did not send the request to any endpoint.
    #[error("upstream `{upstream}`: {refusal}")]
    Refused {
        /// The cluster.
        upstream: std::sync::Arc<str>,
        /// Why.
        refusal: Refusal,
    },
}

/// Why the admin listener refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// `[admin] token_env` is set and the request lacks the token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// No such admin path.
    #[error("not found")]
    NotFound,
    /// The path takes another method (the one named).
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The gateway is draining and takes no more reloads.
    #[error("shutting down")]
    ShuttingDown,
    /// A cache purge that names neither one `key` nor one `prefix`.
    #[error("purge takes one of ?key=KEY or ?prefix=PREFIX")]
    BadPurge,
}

/// An error the gateway answers with: its status, the reason in its body and any header
/// that status requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The status.
    pub status: StatusCode,
    /// The short reason, the body's `error` field.
    pub reason: &'static str,
    /// A header the status requires (`Allow`, `WWW-Authenticate`).
    pub header: Option<(HeaderName, &'static str)>,
}

impl ErrorAnswer {
    const fn new(status: StatusCode, reason: &'static str) -> ErrorAnswer {
        ErrorAnswer {
            status,
            reason,
            header: None,
        }
    }
}

impl ProxyError {
    /// The status the client gets, the reason in its body, and any extra header.
    pub fn answer(&self) -> ErrorAnswer {
        use StatusCode as S;
        match self {
            ProxyError::BadPath(_) => ErrorAnswer::new(S::BAD_REQUEST, "bad request path"),
            ProxyError::BadHost(_) => ErrorAnswer::new(S::BAD_REQUEST, "bad Host header"),
            ProxyError::UriTooLong { .. } => {
                ErrorAnswer::new(S::URI_TOO_LONG, "request target too long")
            }
            ProxyError::NoRoute => ErrorAnswer::new(S::NOT_FOUND, "no route matches the request"),
            ProxyError::ConnectNotAllowed => {
                ErrorAnswer::new(S::METHOD_NOT_ALLOWED, "CONNECT is not supported")
            }
            ProxyError::BodyTooLarge { .. } => {
                ErrorAnswer::new(S::PAYLOAD_TOO_LARGE, "request body too large")
            }
            ProxyError::BadBody(_) => ErrorAnswer::new(S::BAD_REQUEST, "malformed request body"),
            ProxyError::Plugin(failure) => match failure.kind {
                FailureKind::Timeout => ErrorAnswer::new(S::SERVICE_UNAVAILABLE, "plugin timeout"),
                FailureKind::Suspended => {
                    ErrorAnswer::new(S::SERVICE_UNAVAILABLE, "plugin suspended")
                }
                FailureKind::Trap | FailureKind::Memory | FailureKind::Error => {
                    ErrorAnswer::new(S::INTERNAL_SERVER_ERROR, "plugin failure")
                }
            },
            ProxyError::ResponseBodyForPlugin { .. } => ErrorAnswer::new(
                S::BAD_GATEWAY,
                "upstream response body too large for a plugin, or broken",
            ),
            ProxyError::UpgradeImpossible => {
                ErrorAnswer::new(S::BAD_GATEWAY, "upgrade not possible")
            }
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::ConnectTimeout(_) => {
                    ErrorAnswer::new(S::GATEWAY_TIMEOUT, "upstream connect timeout")
                }
                UpstreamFailure::Connect(_) | UpstreamFailure::ClosedBeforeSend => {
                    ErrorAnswer::new(S::BAD_GATEWAY, "upstream connection failed")
                }
                UpstreamFailure::Tls(_) => {
                    ErrorAnswer::new(S::BAD_GATEWAY, "upstream TLS handshake failed")
                }
                UpstreamFailure::Exchange(_) => ErrorAnswer::new(
                    S::BAD_GATEWAY,
                    "upstream connection reset or invalid response",
                ),
                UpstreamFailure::Timeout(_) => {
                    ErrorAnswer::new(S::GATEWAY_TIMEOUT, "upstream response timeout")
                }
                UpstreamFailure::Overloaded(_) => {
                    ErrorAnswer::new(S::SERVICE_UNAVAILABLE, "upstream overloaded")
                }
                // The client's fault, found while its body streamed upstream.
                UpstreamFailure::ClientBody(_) => {
                    ErrorAnswer::new(S::BAD_REQUEST, "malformed request body")
                }
            },
            ProxyError::Refused { refusal, .. } => match refusal {
                Refusal::NoEndpoints => {
                    ErrorAnswer::new(S::SERVICE_UNAVAILABLE, "no upstream endpoint available")
                }
                Refusal::Overloaded(_) => {
                    ErrorAnswer::new(S::SERVICE_UNAVAILABLE, "upstream overloaded")
                }
            },
        }
    }
}

impl AdminError {
    /// The status the client gets, the reason in its body, and any extra header.
    pub fn answer(&self) -> ErrorAnswer {
        let reason = match self {
            AdminError::Unauthorized => "a valid bearer token is required",
            AdminError::NotFound => "not found",
            AdminError::MethodNotAllowed(_) => "method not allowed",
            AdminError::ShuttingDown => "shutting down",
            AdminError::BadPurge => "purge takes one of ?key=KEY or ?prefix=PREFIX",
        };
        let (status, header) = match *self {
            AdminError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Some((header::WWW_AUTHENTICATE, "Bearer realm=\"weir-admin\"")),
            ),
            AdminError::NotFound => (StatusCode::NOT_FOUND, None),
            AdminError::MethodNotAllowed(allow) => {
                (StatusCode::METHOD_NOT_ALLOWED, Some((header::ALLOW, allow)))
            }
            AdminError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, None),
            AdminError::BadPurge => (StatusCode::BAD_REQUEST, None),
        };
        ErrorAnswer {
            status,
            reason,
            header,
        }
    }
}

impl From<&ProxyError> for ErrorAnswer {
    fn from(error: &ProxyError) -> ErrorAnswer {
        error.answer()
    }
}

impl From<AdminError> for ErrorAnswer {
    fn from(error: AdminError) -> ErrorAnswer {
        error.answer()
    }
}

/// The one function that turns an error into the reply the client gets:
/// `{"error":"<reason>"}` as `application/json`, with the header its status requires.
/// The reply becomes a response through [`LocalReply::into_response`] (which adds `Via`
/// on the proxy listener), after the route's response phases saw it.
pub fn error_reply(error: impl Into<ErrorAnswer>) -> LocalReply {
    let answer = error.into();
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some((name, value)) = answer.header {
        headers.insert(name, HeaderValue::from_static(value));
    }
    LocalReply {
        status: answer.status,
        headers,
        body: Bytes::from(format!(
            "{{\"error\":\"{}\"}}\n",
            answer.reason.replace('"', "'")
        )),
    }
}

/// An answer to a gRPC request as a gRPC client reads it: a trailers-only response
/// (HTTP 200, the `content-type` of the client's `protocol`, no body) whose
/// `grpc-status` and `grpc-message` say what `reply` said: for the gateway's own `error`, the code its
/// failure maps to and its reason; for a plugin's or a route's answer, the code its
/// status maps to and its body when that is short text (see [`crate::grpc_status`]).
/// The other headers stay (`www-authenticate`, rate-limit headers). A reply that
/// already carries `grpc-status`, or a success, is returned as it is.
pub fn grpc_reply(
    reply: LocalReply,
    error: Option<&ProxyError>,
    protocol: GrpcProtocol,
) -> LocalReply {
    use crate::grpc_status::{code_for_error, code_for_status, message_for, message_value};
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    if reply.headers.contains_key(&GRPC_STATUS) || reply.status.is_success() {
        return reply;
    }
    let LocalReply {
        status,
        mut headers,
        body,
    } = reply;
    let (code, message) = match error {
        // The reply is still the one the error made (no plugin replaced it).
        Some(error) if error.answer().status == status => {
            (code_for_error(error), error.answer().reason.to_owned())
        }
        _ => (code_for_status(status), message_for(status, &body)),
    };
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_TYPE, protocol.content_type());
    headers.insert(GRPC_STATUS, code.header_value());
    headers.insert(GRPC_MESSAGE, message_value(&message));
    LocalReply {
        status: StatusCode::OK,
        headers,
        body: Bytes::new(),
    }
}

/// On a response sent as a gRPC status ([`grpc_reply`]), the HTTP status the answer
/// had: what `weir_requests_total` and the access log count it as, so that failed gRPC
/// calls do not pass for successes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnsweredStatus(pub StatusCode);

impl AnsweredStatus {
    /// The status `response` is counted as: its own, or the one it stands for.
    pub fn of<B>(response: &Response<B>) -> StatusCode {
        response
            .extensions()
            .get::<AnsweredStatus>()
            .map_or(response.status(), |answered| answered.0)
    }
}

/// The response for `reply` on the proxy listener, as a gRPC status when the request
/// was a gRPC or gRPC-Web call (`grpc`) and the reply an error; `error` is the gateway's own
/// failure the reply reports, if it is one. `via` is appended to `Via`.
pub fn local_response(
    reply: LocalReply,
    error: Option<&ProxyError>,
    grpc: Option<GrpcProtocol>,
    via: &HeaderValue,
) -> Response<ResponseBody> {
    let Some(protocol) = grpc else {
        return reply.into_response(Some(via));
    };
    let answered = reply.status;
    let mut response = grpc_reply(reply, error, protocol).into_response(Some(via));
    if response.status() != answered {
        response.extensions_mut().insert(AnsweredStatus(answered));
    }
    response
}

/// The response for `error` on the proxy listener, when no plugin is to see it.
pub fn error_response(
    error: &ProxyError,
    grpc: Option<GrpcProtocol>,
    via: &HeaderValue,
) -> Response<ResponseBody> {
    local_response(error_reply(error), Some(error), grpc, via)
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
