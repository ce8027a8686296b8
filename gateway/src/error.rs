//! The gateway's request errors and the one place they become client responses.
//!
//! Clients get a status and a short JSON reason, never internals (addresses, error
//! chains); the full story goes to the log with the route and upstream.

use http::{HeaderValue, Response, StatusCode, header};

use crate::path::PathError;
use crate::upstream::{Refusal, UpstreamFailure};

pub use crate::body::ResponseBody;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request path could not be normalised.
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// No route matches.
    #[error("no route matches the request")]
    NoRoute,
    /// A `CONNECT` request: the gateway does not open TCP tunnels on request.
    #[error("CONNECT is not supported")]
    ConnectNotAllowed,
    /// A plugin failed and its policy denied the request (the response is already made).
    #[error("{0}")]
    Plugin(crate::plugin::PluginFailure),
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

impl ProxyError {
    /// The status the client gets, and the short reason in its body.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad request path"),
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no route matches the request"),
            ProxyError::ConnectNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported")
            }
            ProxyError::Plugin(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin failure"),
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::ConnectTimeout(_) => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream connect timeout")
                }
                UpstreamFailure::Connect(_) | UpstreamFailure::ClosedBeforeSend => {
                    (StatusCode::BAD_GATEWAY, "upstream connection failed")
                }
                UpstreamFailure::Tls(_) => {
                    (StatusCode::BAD_GATEWAY, "upstream TLS handshake failed")
                }
                UpstreamFailure::Exchange(_) => (
                    StatusCode::BAD_GATEWAY,
                    "upstream connection reset or invalid response",
                ),
                UpstreamFailure::Timeout(_) => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream response timeout")
                }
                UpstreamFailure::Overloaded(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded")
                }
            },
            ProxyError::Refused { refusal, .. } => match refusal {
                Refusal::NoEndpoints => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no upstream endpoint available",
                ),
                Refusal::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded"),
            },
        }
    }

    /// The response the client gets for this error.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let (status, reason) = self.status_and_reason();
        local_response(status, reason)
    }
}

/// The body of the gateway's own responses: `{"error": "<reason>"}` and a newline.
pub fn local_body(reason: &str) -> String {
    format!("{{\"error\":\"{}\"}}\n", reason.replace('"', "'"))
}

/// A small JSON response written by the gateway itself: `{"error": "<reason>"}`.
pub fn local_response(status: StatusCode, reason: &str) -> Response<ResponseBody> {
    let body = local_body(reason);
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
