//! The admin listener: `GET /healthz` (the process is alive) and `GET /readyz` (config is
//! loaded and the gateway serves). Metrics and the admin API join it with the
//! observability milestone.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use crate::snapshot::SharedSnapshot;

pub(crate) struct Admin {
    pub(crate) listener: std::net::TcpListener,
    pub(crate) snapshot: SharedSnapshot,
    pub(crate) shutdown: CancellationToken,
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
            let snapshot = self.snapshot.clone();
            let service = service_fn(move |req| {
                let ready = !snapshot.load().config.routes.is_empty();
                async move { Ok::<_, Infallible>(respond(&req, ready)) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    }
}

fn respond(req: &Request<Incoming>, ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "{\"status\":\"ok\"}\n"),
        (&Method::GET, "/readyz") if ready => (StatusCode::OK, "{\"status\":\"ready\"}\n"),
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"no routes configured\"}\n",
        ),
        _ => (StatusCode::NOT_FOUND, "{\"error\":\"not found\"}\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
