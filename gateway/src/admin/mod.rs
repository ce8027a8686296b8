//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (config is
//! loaded and the gateway serves) and `GET /metrics` (Prometheus text). The admin API
//! joins it with the observability milestone.

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

pub(crate) struct Admin {
    pub(crate) listener: std::net::TcpListener,
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
            let service = service_fn(|req| async move { Ok::<_, Infallible>(respond(&req)) });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    }
}

/// `/readyz` is answered once the admin listener runs, which is after the config was
/// loaded and the workers started; plugin loading joins the condition with the plugin host.
fn respond(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if (req.method(), req.uri().path()) == (&Method::GET, "/metrics") {
        let mut response =
            Response::new(Full::new(Bytes::from(crate::telemetry::metrics::render())));
        if let Ok(value) = header::HeaderValue::from_str(&crate::telemetry::metrics::content_type())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        return response;
    }
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "{\"status\":\"ok\"}\n"),
        (&Method::GET, "/readyz") => (StatusCode::OK, "{\"status\":\"ready\"}\n"),
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
