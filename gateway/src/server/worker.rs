//! One worker: a single-threaded event loop that accepts on its own listener and serves
//! HTTP/1.1 and h2c connections until shutdown, then drains them within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{self, Connection};
use crate::snapshot::SharedSnapshot;

pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) snapshot: SharedSnapshot,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
}

impl Worker {
    /// Runs the worker on the current thread until shutdown completes.
    pub(crate) fn run(self) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> std::io::Result<()> {
        let listener = TcpListener::from_std(self.listener)?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            // One flat write per response instead of writev of head and body: fewer
            // kernel cycles per small response (measured with bench/run.sh).
            .writev(false);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();

        loop {
            let (stream, client) = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(worker = self.id, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                client,
                client_ip: HeaderValue::try_from(client.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                scheme: "http",
                worker: self.id,
            };
            let snapshot = self.snapshot.clone();
            let conn = Arc::new(conn);
            let service = service_fn(move |req| {
                let snapshot = snapshot.load_full();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(pipeline::handle(&snapshot, &conn, req).await) }
            });
            let served = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let served = graceful.watch(served);
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
            });
        }

        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!(worker = self.id, grace = ?self.grace, "grace period over; closing remaining connections");
            }
        }
        Ok(())
    }
}
