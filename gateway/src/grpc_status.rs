//! gRPC statuses for the answers the gateway makes itself. A gRPC client reads a call's
//! outcome from `grpc-status`, not from an HTTP status and a JSON body, so when the
//! gateway (or a plugin, or a route's `respond`) answers a gRPC or gRPC-Web request with
//! an error, [`crate::error::grpc_reply`] sends it as a trailers-only response built
//! from what is here: the status code chosen for the failure and a percent-encoded
//! `grpc-message` (the gRPC over HTTP/2 spec; gRPC-Web takes trailers-only responses
//! unchanged).
//!
//! Only requests answered locally are ever looked at, so the check costs the request
//! path nothing until an answer is being made (and one header lookup for HTTP/2
//! requests that reach an upstream, whose head is gone when its failure comes back).

use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::ProxyError;
use crate::plugin::FailureKind;
use crate::upstream::UpstreamFailure;

/// The gRPC status codes the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    /// 2: an error the other codes do not describe.
    Unknown = 2,
    /// 4: the deadline passed before the upstream answered.
    DeadlineExceeded = 4,
    /// 7: the caller may not do this (HTTP 403).
    PermissionDenied = 7,
    /// 8: a limit was hit (a rate limit, a message too large).
    ResourceExhausted = 8,
    /// 12: nothing serves this method (no route).
    Unimplemented = 12,
    /// 13: something is broken (a malformed request, a failing plugin).
    Internal = 13,
    /// 14: the service is unavailable for now; retrying may help.
    Unavailable = 14,
    /// 16: the caller is not authenticated (HTTP 401).
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The value of `grpc-status`.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from(self as u16)
    }
}

/// How a gRPC client reads a status the gateway answers with: every form is a
/// trailers-only response (HTTP 200, `grpc-status` and `grpc-message` headers, no
/// body); they differ in `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcProtocol {
    /// gRPC over HTTP/2 (`application/grpc`).
    Grpc,
    /// gRPC-Web, binary (`application/grpc-web`).
    Web,
    /// gRPC-Web, base64 (`application/grpc-web-text`).
    WebText,
}

impl GrpcProtocol {
    /// The protocol of a request with this version and headers, if it is a gRPC call:
    /// gRPC runs over HTTP/2 only, gRPC-Web over any version.
    /// One `content-type` lookup, and nothing built: it runs for every request that
    /// goes upstream.
    pub fn of(version: Version, headers: &HeaderMap) -> Option<GrpcProtocol> {
        let content_type = headers.get(header::CONTENT_TYPE)?.as_bytes();
        if version == Version::HTTP_2 && is_grpc_type(content_type) {
            return Some(GrpcProtocol::Grpc);
        }
        crate::grpc_web::text_response(content_type, headers).map(|text| match text {
            true => GrpcProtocol::WebText,
            false => GrpcProtocol::Web,
        })
    }

    /// The form a gRPC-Web `call` gets its statuses in.
    pub fn web(call: &crate::grpc_web::WebCall) -> GrpcProtocol {
        match call.text_response {
            true => GrpcProtocol::WebText,
            false => GrpcProtocol::Web,
        }
    }

    /// The `content-type` of a status answered in this form.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            GrpcProtocol::Grpc => "application/grpc",
            GrpcProtocol::Web => "application/grpc-web",
            GrpcProtocol::WebText => "application/grpc-web-text",
        })
    }
}

/// Whether a request with these headers is a gRPC call: `content-type` is
/// `application/grpc`, alone or followed by `+format` or parameters. gRPC-Web
/// (`application/grpc-web...`) is not: see [`GrpcProtocol::of`].
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| is_grpc_type(value.as_bytes()))
}

/// [`is_grpc`] for a `content-type` value.
fn is_grpc_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The code for one of the gateway's own failures.
pub fn code_for_error(error: &ProxyError) -> GrpcCode {
    match error {
        ProxyError::NoRoute | ProxyError::ConnectNotAllowed => GrpcCode::Unimplemented,
        ProxyError::BodyTooLarge { .. } => GrpcCode::ResourceExhausted,
        ProxyError::Plugin(failure) => match failure.kind {
            FailureKind::Timeout | FailureKind::Suspended => GrpcCode::Unavailable,
            FailureKind::Trap | FailureKind::Memory | FailureKind::Error => GrpcCode::Internal,
        },
        ProxyError::Upstream { failure, .. } => match failure {
            UpstreamFailure::Timeout(_) => GrpcCode::DeadlineExceeded,
            UpstreamFailure::Connect(_)
            | UpstreamFailure::ConnectTimeout(_)
            | UpstreamFailure::Tls(_)
            | UpstreamFailure::Exchange(_)
            | UpstreamFailure::ClosedBeforeSend
            | UpstreamFailure::Overloaded(_) => GrpcCode::Unavailable,
            UpstreamFailure::ClientBody(_) => GrpcCode::Internal,
        },
        ProxyError::Refused { .. } => GrpcCode::Unavailable,
        // Requests gRPC cannot have sent, or broken ones: the spec's code for HTTP 400.
        ProxyError::BadPath(_)
        | ProxyError::BadHost(_)
        | ProxyError::UriTooLong { .. }
        | ProxyError::BadBody(_)
        | ProxyError::ResponseBodyForPlugin { .. }
        | ProxyError::UpgradeImpossible => GrpcCode::Internal,
    }
}

/// The code for an error status a plugin or a route's `respond` chose: the gRPC spec's
/// HTTP mapping, with 429 and 413 as `RESOURCE_EXHAUSTED` (a rate limit is not an
/// outage) and 408 and 504 as `DEADLINE_EXCEEDED`.
pub fn code_for_status(status: StatusCode) -> GrpcCode {
    match status.as_u16() {
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 | 501 => GrpcCode::Unimplemented,
        408 | 504 => GrpcCode::DeadlineExceeded,
        413 | 429 => GrpcCode::ResourceExhausted,
        502 | 503 => GrpcCode::Unavailable,
        400 | 500 => GrpcCode::Internal,
        _ => GrpcCode::Unknown,
    }
}

/// What `grpc-message` may carry as it is: printable ASCII but `%` (everything else is
/// percent-encoded, UTF-8 first).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// The longest body of a plugin's answer that becomes `grpc-message`; a longer one (or
/// one that is not text) gives way to the status's reason phrase.
const MAX_MESSAGE: usize = 512;

/// `message` as a `grpc-message` value: percent-encoded per the gRPC spec.
pub fn message_value(message: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(message.trim(), GRPC_MESSAGE).to_string();
    // Only visible ASCII and spaces remain, which a header value always takes.
    HeaderValue::try_from(encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The message for an answer with `status` and `body` that is not the gateway's own:
/// the body when it is short text (what the plugin chose to tell the client), else the
/// status's reason phrase.
pub fn message_for(status: StatusCode, body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if !text.trim().is_empty() && text.len() <= MAX_MESSAGE => text.trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_grpc(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC+json"));
        assert!(with("application/grpc;charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/grpc-web-text+proto"));
        assert!(!with("application/json"));
        assert!(!with("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn protocols_by_version_and_content_type() {
        let of = |version, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            GrpcProtocol::of(version, &headers)
        };
        assert_eq!(
            of(Version::HTTP_2, "application/grpc+proto"),
            Some(GrpcProtocol::Grpc)
        );
        assert_eq!(of(Version::HTTP_11, "application/grpc"), None);
        assert_eq!(
            of(Version::HTTP_11, "application/grpc-web+proto"),
            Some(GrpcProtocol::Web)
        );
        assert_eq!(
            of(Version::HTTP_2, "application/grpc-web-text"),
            Some(GrpcProtocol::WebText)
        );
        assert_eq!(of(Version::HTTP_2, "application/json"), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(message_value("no route"), "no route");
        assert_eq!(message_value(" 100% done\n"), "100%25 done");
        assert_eq!(message_value("déjà\tvu"), "d%C3%A9j%C3%A0%09vu");
        assert_eq!(
            message_for(StatusCode::FORBIDDEN, b"{\"error\":\"no\"}\n"),
            "{\"error\":\"no\"}"
        );
        assert_eq!(message_for(StatusCode::FORBIDDEN, b""), "Forbidden");
        assert_eq!(
            message_for(StatusCode::TOO_MANY_REQUESTS, &[0xff, 0xfe]),
            "Too Many Requests"
        );
        assert_eq!(
            message_for(StatusCode::UNAUTHORIZED, &[b'x'; 600]),
            "Unauthorized"
        );
    }

    #[test]
    fn statuses_map_as_the_spec_says() {
        let code = |s: u16| code_for_status(StatusCode::from_u16(s).unwrap()) as u16;
        assert_eq!(
            [
                400, 401, 403, 404, 408, 413, 429, 500, 501, 502, 503, 504, 418, 302
            ]
            .map(code),
            [13, 16, 7, 12, 4, 8, 8, 13, 12, 14, 14, 4, 2, 2]
        );
    }
}
