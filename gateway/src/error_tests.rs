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
            upstream(UpstreamFailure::Exchange(hyper_error().await.into())),
            S::BAD_GATEWAY,
            "upstream connection reset or invalid response",
        ),
        (
            upstream(UpstreamFailure::ClientBody(hyper_error().await.into())),
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
        let response = error_response(&error, None, &via);
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

/// The gRPC code each proxy error's status stands for in [`proxy_table`] (one error per
/// status there is answered with another code: noted in the match).
fn expected_grpc_code(error: &ProxyError, status: StatusCode) -> u16 {
    match (error, status.as_u16()) {
        (ProxyError::NoRoute | ProxyError::ConnectNotAllowed, _) => 12,
        (ProxyError::BodyTooLarge { .. }, _) => 8,
        (
            ProxyError::Upstream {
                failure: UpstreamFailure::Timeout(_),
                ..
            },
            _,
        ) => 4,
        // A connect timeout is an endpoint that is down, not a slow answer.
        (
            ProxyError::Upstream {
                failure: UpstreamFailure::ConnectTimeout(_),
                ..
            },
            _,
        ) => 14,
        (ProxyError::ResponseBodyForPlugin { .. } | ProxyError::UpgradeImpossible, _) => 13,
        (_, 400 | 414 | 500) => 13,
        (_, 502 | 503) => 14,
        (error, status) => panic!("no expected code for {error} ({status})"),
    }
}

#[tokio::test]
async fn every_proxy_error_has_a_grpc_status_for_grpc_calls() {
    let via = HeaderValue::from_static("2 weir");
    let protocols = [
        (GrpcProtocol::Grpc, "application/grpc"),
        (GrpcProtocol::Web, "application/grpc-web"),
        (GrpcProtocol::WebText, "application/grpc-web-text"),
    ];
    for ((error, status, reason), (protocol, content_type)) in proxy_table()
        .await
        .into_iter()
        .zip(protocols.into_iter().cycle())
    {
        let response = error_response(&error, Some(protocol), &via);
        assert_eq!(response.status(), StatusCode::OK, "{error}");
        assert_eq!(AnsweredStatus::of(&response), status, "{error}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{error}");
        assert_eq!(
            headers["grpc-status"],
            expected_grpc_code(&error, status).to_string().as_str(),
            "{error}"
        );
        assert_eq!(headers["grpc-message"], reason, "{error}");
        assert_eq!(headers[header::VIA], "2 weir");
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{error}: trailers-only, no body");
    }
}

#[tokio::test]
async fn answers_of_plugins_become_grpc_statuses_by_their_status() {
    let reply = |status: u16, headers: &[(&'static str, &'static str)], body: &'static str| {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        LocalReply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: bytes::Bytes::from_static(body.as_bytes()),
        }
    };
    let denied = grpc_reply(
        reply(
            401,
            &[
                ("content-type", "application/json"),
                ("content-length", "29"),
                ("www-authenticate", "ApiKey"),
            ],
            "{\"error\":\"missing api key\"}\n",
        ),
        None,
        GrpcProtocol::Grpc,
    );
    assert_eq!(denied.status, StatusCode::OK);
    assert!(denied.body.is_empty());
    assert_eq!(denied.headers["grpc-status"], "16");
    assert_eq!(
        denied.headers["grpc-message"],
        "{\"error\":\"missing api key\"}"
    );
    assert_eq!(denied.headers["www-authenticate"], "ApiKey", "kept");
    assert_eq!(denied.headers["content-type"], "application/grpc");
    assert!(!denied.headers.contains_key("content-length"));

    let forbidden = grpc_reply(reply(403, &[], ""), None, GrpcProtocol::Web);
    assert_eq!(forbidden.headers["grpc-status"], "7");
    assert_eq!(forbidden.headers["grpc-message"], "Forbidden");
    assert_eq!(forbidden.headers["content-type"], "application/grpc-web");
    let limited = grpc_reply(
        reply(429, &[("retry-after", "3")], "slow down 100%"),
        None,
        GrpcProtocol::WebText,
    );
    assert_eq!(limited.headers["grpc-status"], "8");
    assert_eq!(limited.headers["grpc-message"], "slow down 100%25");
    assert_eq!(limited.headers["retry-after"], "3");

    // A plugin that answers in gRPC already, and a success, are left alone.
    let own = grpc_reply(
        reply(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "5")],
            "",
        ),
        None,
        GrpcProtocol::Grpc,
    );
    assert_eq!(own.headers["grpc-status"], "5");
    let ok = grpc_reply(
        reply(200, &[("content-type", "text/plain")], "hi"),
        None,
        GrpcProtocol::Grpc,
    );
    assert_eq!(ok.headers["content-type"], "text/plain");
    assert_eq!(ok.body, "hi");

    // The gateway's error replaced by a plugin's answer: the answer's status decides.
    let error = ProxyError::NoRoute;
    let replaced = grpc_reply(reply(403, &[], "nope"), Some(&error), GrpcProtocol::Grpc);
    assert_eq!(replaced.headers["grpc-status"], "7");
    assert_eq!(replaced.headers["grpc-message"], "nope");
}
