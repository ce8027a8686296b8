//! Every error the gateway answers, as the client sees it: status, headers and body.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::upstream::Limit;

/// A real `hyper::Error`: a client reading a response that is not HTTP.
async fn hyper_error() -> hyper::Error {
    use tokio::io::AsyncWriteExt;
    let (client, mut server) = tokio::io::duplex(1024);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    server.write_all(b"not http at all\r\n\r\n").await.unwrap();
    let request = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    sender.send_request(request).await.unwrap_err()
}

fn failure(kind: FailureKind) -> PluginFailure {
    PluginFailure {
        plugin: "auth".into(),
        kind,
        message: "details for the log".into(),
        spent: std::time::Duration::ZERO,
    }
}

fn upstream(failure: UpstreamFailure) -> ProxyError {
    ProxyError::Upstream {
        upstream: Arc::from("users"),
        endpoint: http::uri::Authority::from_static("10.0.0.1:80"),
        failure,
    }
}

/// Every proxy error, with the status and reason its client gets. The match in
/// [`listed`] fails to compile when a variant is added without a row here.
async fn proxy_table() -> Vec<(ProxyError, StatusCode, &'static str)> {
    use StatusCode as S;
    let refused = |refusal| ProxyError::Refused {
        upstream: Arc::from("users"),
        refusal,
    };
    vec![
        (
            ProxyError::BadPath(crate::path::PathError::BadEscape),
            S::BAD_REQUEST,
            "bad request path",
        ),
        (
            ProxyError::BadHost("more than one Host header"),
            S::BAD_REQUEST,
            "bad Host header",
        ),
        (
            ProxyError::UriTooLong { limit: 8192 },
            S::URI_TOO_LONG,
            "request target too long",
        ),
        (
            ProxyError::NoRoute,
            S::NOT_FOUND,
            "no route matches the request",
        ),
        (
            ProxyError::ConnectNotAllowed,
            S::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        ),
        (
            ProxyError::BodyTooLarge { limit: 1024 },
            S::PAYLOAD_TOO_LARGE,
            "request body too large",
        ),
        (
            ProxyError::BadBody("invalid chunk size".into()),
            S::BAD_REQUEST,
            "malformed request body",
        ),
        (
            ProxyError::Plugin(failure(FailureKind::Trap)),
            S::INTERNAL_SERVER_ERROR,
            "plugin failure",
        ),
        (
            ProxyError::Plugin(failure(FailureKind::Memory)),
            S::INTERNAL_SERVER_ERROR,
            "plugin failure",
        ),
        (
            ProxyError::Plugin(failure(FailureKind::Error)),
            S::INTERNAL_SERVER_ERROR,
            "plugin failure",
        ),
        (
            ProxyError::Plugin(failure(FailureKind::Timeout)),
            S::SERVICE_UNAVAILABLE,
            "plugin timeout",
        ),
        (
            ProxyError::ResponseBodyForPlugin { limit: 1024 },
            S::BAD_GATEWAY,
            "upstream response body too large for a plugin, or broken",
        ),
        (
            ProxyError::UpgradeImpossible,
            S::BAD_GATEWAY,
            "upgrade not possible",
        ),
        (
            upstream(UpstreamFailure::Connect(
                io::ErrorKind::ConnectionRefused.into(),
            )),
            S::BAD_GATEWAY,
            "upstream connection failed",
        ),
        (
            upstream(UpstreamFailure::ConnectTimeout(Duration::from_secs(1))),
            S::GATEWAY_TIMEOUT,
            "upstream connect timeout",
        ),
        (
            upstream(UpstreamFailure::Tls(io::ErrorKind::InvalidData.into())),
            S::BAD_GATEWAY,
            "upstream TLS handshake failed",
        ),
        (
            upstream(UpstreamFailure::Exchange(hyper_error().await)),
            S::BAD_GATEWAY,
            "upstream connection reset or invalid response",
        ),
        (
            upstream(UpstreamFailure::ClientBody(hyper_error().await)),
            S::BAD_REQUEST,
            "malformed request body",
        ),
        (
            upstream(UpstreamFailure::ClosedBeforeSend),
            S::BAD_GATEWAY,
            "upstream connection failed",
        ),
        (
            upstream(UpstreamFailure::Timeout(Duration::from_secs(15))),
            S::GATEWAY_TIMEOUT,
            "upstream response timeout",
        ),
        (
            upstream(UpstreamFailure::Overloaded(Limit::Pending)),
            S::SERVICE_UNAVAILABLE,
            "upstream overloaded",
        ),
        (
            refused(Refusal::NoEndpoints),
            S::SERVICE_UNAVAILABLE,
            "no upstream endpoint available",
        ),
        (
            refused(Refusal::Overloaded(Limit::Requests)),
            S::SERVICE_UNAVAILABLE,
            "upstream overloaded",
        ),
    ]
}

/// Whether the table has a row for the variant of `error` (exhaustive: no wildcard).
fn listed(table: &[(ProxyError, StatusCode, &str)], error: &ProxyError) -> bool {
    let same = |other: &ProxyError| std::mem::discriminant(other) == std::mem::discriminant(error);
    match error {
        ProxyError::BadPath(_)
        | ProxyError::BadHost(_)
        | ProxyError::UriTooLong { .. }
        | ProxyError::NoRoute
        | ProxyError::ConnectNotAllowed
        | ProxyError::BodyTooLarge { .. }
        | ProxyError::BadBody(_)
        | ProxyError::Plugin(_)
        | ProxyError::ResponseBodyForPlugin { .. }
        | ProxyError::UpgradeImpossible
        | ProxyError::Upstream { .. }
        | ProxyError::Refused { .. } => table.iter().any(|(e, _, _)| same(e)),
    }
}

async fn body_json(response: Response<ResponseBody>) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.ends_with(b"}\n"), "{bytes:?}");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn every_proxy_error_is_json_with_via_and_its_status() {
    let via = HeaderValue::from_static("1.1 weir");
    let table = proxy_table().await;
    for (error, _, _) in &table {
        assert!(listed(&table, error));
    }
    for (error, status, reason) in table {
        let response = error_response(&error, &via);
        assert_eq!(response.status(), status, "{error}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{error}");
        assert_eq!(headers[header::VIA], "1.1 weir", "{error}");
        assert_eq!(headers.len(), 2, "{error}: {headers:?}");
        let body = body_json(response).await;
        assert_eq!(body, serde_json::json!({ "error": reason }), "{error}");
    }
}

#[tokio::test]
async fn every_admin_error_is_json_without_via_with_the_header_its_status_needs() {
    let table = [
        (
            AdminError::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
            Some((header::WWW_AUTHENTICATE, "Bearer realm=\"weir-admin\"")),
        ),
        (
            AdminError::NotFound,
            StatusCode::NOT_FOUND,
            "not found",
            None,
        ),
        (
            AdminError::MethodNotAllowed("POST"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            Some((header::ALLOW, "POST")),
        ),
        (
            AdminError::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
            None,
        ),
    ];
    for (error, status, reason, extra) in table {
        let response = error_reply(error).into_response(None);
        assert_eq!(response.status(), status, "{error}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(!headers.contains_key(header::VIA), "{error}");
        match &extra {
            Some((name, value)) => assert_eq!(headers[name], *value, "{error}"),
            None => assert_eq!(headers.len(), 1, "{error}: {headers:?}"),
        }
        assert_eq!(body_json(response).await["error"], reason);
    }
}

#[test]
fn a_reason_cannot_break_out_of_its_json_string() {
    let reply = error_reply(ErrorAnswer {
        status: StatusCode::BAD_REQUEST,
        reason: "say \"no\"",
        header: None,
    });
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "say 'no'");
}
