//! The admin listener: health (`/healthz`, `/readyz`), Prometheus metrics (`/metrics`)
//! and the admin API (`/admin/routes`, `/admin/upstreams`, `/admin/plugins`,
//! `POST /admin/reload`, `/admin/cache` and `POST /admin/cache/purge`), all JSON but
//! the metrics.
//!
//! With `[admin] token_env` set, every path but the two health probes requires
//! `Authorization: Bearer TOKEN` (probes disclose nothing and must work without
//! secrets). A listener on a non-loopback address refuses to start without a token.

mod views;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::{AdminError, ResponseBody, error_reply};
use crate::reload::Control;

pub(crate) struct Admin {
    pub(crate) listener: std::net::TcpListener,
    pub(crate) shutdown: CancellationToken,
    pub(crate) control: Arc<Control>,
}

impl Admin {
    pub(crate) fn run(self) -> std::io::Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.serve())
    }

    async fn serve(self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            let (stream, _) = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let control = self.control.clone();
            let service = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(respond(&control, &req).await) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    }
}

type Reply = Response<ResponseBody>;

async fn respond(control: &Control, req: &Request<Incoming>) -> Reply {
    let path = req.uri().path();
    let method = req.method();
    match path {
        "/healthz" if method == Method::GET => {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        "/readyz" if method == Method::GET => {
            // Ready once started: the config and every plugin it names loaded before
            // the listeners opened. Not ready while draining for shutdown.
            return if control.draining() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "draining"}),
                )
            } else {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            };
        }
        _ => {}
    }
    let snapshot = control.snapshot();
    if let Some(token) = &snapshot.config.admin.token
        && !authorized(req, token)
    {
        return error(AdminError::Unauthorized);
    }
    let allowed = match path {
        "/healthz" | "/readyz" | "/metrics" | "/admin/routes" | "/admin/upstreams"
        | "/admin/plugins" | "/admin/cache" => "GET",
        "/admin/reload" | "/admin/cache/purge" => "POST",
        _ => return error(AdminError::NotFound),
    };
    if method.as_str() != allowed {
        return error(AdminError::MethodNotAllowed(allowed));
    }
    match path {
        "/metrics" => metrics(),
        "/admin/routes" => json(StatusCode::OK, &views::routes(&snapshot)),
        "/admin/upstreams" => json(
            StatusCode::OK,
            &views::upstreams(&snapshot, &control.status()),
        ),
        "/admin/plugins" => json(
            StatusCode::OK,
            &views::plugins(&control.status(), &snapshot),
        ),
        "/admin/cache" => json(StatusCode::OK, &views::cache(&snapshot)),
        "/admin/cache/purge" => match purge_target(req.uri().query()) {
            Some((target, prefix)) => {
                let purged = snapshot
                    .cache
                    .as_ref()
                    .map_or(0, |c| c.purge(&target, prefix));
                json(StatusCode::OK, &serde_json::json!({ "purged": purged }))
            }
            None => error(AdminError::BadPurge),
        },
        _ => match control.reload("POST /admin/reload").await {
            Some(report) => {
                let status = if report.ok() {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                json(status, &serde_json::json!(report))
            }
            None => error(AdminError::ShuttingDown),
        },
    }
}

/// What a purge names: `?key=KEY` (that URL's entries, every variant) or
/// `?prefix=PREFIX` (every key starting with it), percent-decoded; `true` for a prefix.
fn purge_target(query: Option<&str>) -> Option<(String, bool)> {
    let mut found = None;
    for pair in query?.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let prefix = match name {
            "key" => false,
            "prefix" => true,
            _ => return None,
        };
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned();
        if found.is_some() || (!prefix && value.is_empty()) {
            return None;
        }
        found = Some((value, prefix));
    }
    found
}

/// Whether the request carries the bearer `token`. Digests are compared, so the time
/// taken says nothing about how much of a guess was right.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    Sha256::digest(presented.as_bytes()) == Sha256::digest(token.as_bytes())
}

fn metrics() -> Reply {
    let mut response = Response::new(ResponseBody::full(crate::telemetry::metrics::render()));
    if let Ok(value) = HeaderValue::from_str(&crate::telemetry::metrics::content_type()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Admin errors are made where every other error response is, in [`crate::error`].
fn error(error: AdminError) -> Reply {
    error_reply(error).into_response(None)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
