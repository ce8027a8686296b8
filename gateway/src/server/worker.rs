//! One worker: a single-threaded event loop that accepts on its own listener and serves
//! HTTP/1.1 and h2c connections (or, with `[server.tls]`, HTTP/1.1 and h2 over TLS) until
//! shutdown, then drains them within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::{self, Alpn};
use crate::pipeline::{self, Connection};
use crate::snapshot::SharedSnapshot;

pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) snapshot: SharedSnapshot,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
    /// Whether the listener speaks TLS (fixed at start; the certificates are not).
    pub(crate) tls: bool,
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
        let builders = Arc::new(HttpBuilders::new());
        let graceful = GracefulShutdown::new();
        // Upgraded connections (WebSocket tunnels) outlive their HTTP connection.
        let tunnels = TaskTracker::new();

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
                client_cert: None,
                tunnels: tunnels.clone(),
            };
            if self.tls {
                accept_tls(&self.snapshot, stream, conn, &builders, &graceful);
                continue;
            }
            tokio::spawn(serve_connection(
                &builders.auto,
                TokioIo::new(stream),
                self.snapshot.clone(),
                conn,
                graceful.watcher(),
            ));
        }

        drop(listener);
        tunnels.close();
        let drained = async {
            graceful.shutdown().await;
            tunnels.wait().await;
        };
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!(
                    worker = self.id,
                    grace = ?self.grace,
                    tunnels = tunnels.len(),
                    "grace period over; closing remaining connections and tunnels"
                );
            }
        }
        // Returning drops the worker's runtime, and with it every tunnel still open.
        Ok(())
    }
}

/// Completes the TLS handshake with the certificates of the snapshot in force, then
/// serves the HTTP version ALPN chose; all in the connection's own task, so a slow
/// handshake never holds up accepting.
fn accept_tls(
    snapshot: &SharedSnapshot,
    stream: TcpStream,
    mut conn: Connection,
    builders: &Arc<HttpBuilders>,
    graceful: &GracefulShutdown,
) {
    let Some(config) = snapshot.load().tls.clone() else {
        tracing::error!(
            worker = conn.worker,
            "no TLS configuration in force: connection closed"
        );
        return;
    };
    // Taken now, so a shutdown that starts during the handshake waits for it too.
    let watcher = graceful.watcher();
    let (builders, snapshot) = (builders.clone(), snapshot.clone());
    tokio::spawn(async move {
        let accepted = match tls::handshake(config, stream).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(client = %conn.client, error = %e, "connection closed");
                return;
            }
        };
        conn.scheme = "https";
        conn.client_cert = accepted.client_cert;
        let builder = match accepted.alpn {
            Alpn::H2 => &builders.http2,
            Alpn::Http1 => &builders.http1,
            Alpn::None => &builders.auto,
        };
        let io = TokioIo::new(accepted.stream);
        serve_connection(builder, io, snapshot, conn, watcher).await;
    });
}

/// The HTTP server settings, one per way a connection can say which version it speaks.
struct HttpBuilders {
    /// HTTP/1.1 or h2, told by the first bytes: plain connections, and TLS without ALPN.
    auto: auto::Builder<TokioExecutor>,
    /// ALPN chose `http/1.1`.
    http1: auto::Builder<TokioExecutor>,
    /// ALPN chose `h2`.
    http2: auto::Builder<TokioExecutor>,
}

impl HttpBuilders {
    fn new() -> HttpBuilders {
        HttpBuilders {
            auto: http_builder(),
            http1: http_builder().http1_only(),
            http2: http_builder().http2_only(),
        }
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        // One flat write per response instead of writev of head and body: fewer
        // kernel cycles per small response (measured with bench/run.sh).
        .writev(false);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves the requests of one connection through the pipeline until it closes, or
/// closes it gracefully when `watcher` says the worker is shutting down.
fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    snapshot: SharedSnapshot,
    conn: Connection,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let client = conn.client;
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let snapshot = snapshot.load_full();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(pipeline::handle(&snapshot, &conn, req).await) }
    });
    let served = watcher.watch(
        builder
            .serve_connection_with_upgrades(io, service)
            .into_owned(),
    );
    async move {
        if let Err(e) = served.await {
            tracing::debug!(%client, error = %e, "connection ended with an error");
        }
    }
}
