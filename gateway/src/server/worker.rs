//! One worker: a single-threaded event loop that accepts on its own listener and serves
//! HTTP/1.1 and h2c connections (or, with `[server.tls]`, HTTP/1.1 and h2 over TLS) until
//! shutdown, then drains them within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deadlines::{Activity, Expiry, Watched};
use super::tls::{self, Alpn};
use crate::config::ClientLimits;
use crate::pipeline::{self, Connection};
use crate::snapshot::SharedSnapshot;
use crate::telemetry::metrics::CLIENT_CONNECTIONS;

pub(crate) struct Worker {
    pub(crate) id: usize,
    /// Client connections open over all workers, against `max_connections`.
    pub(crate) connections: Arc<AtomicUsize>,
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
        let mut limits = self.snapshot.load().config.server.limits;
        let mut builders = Arc::new(HttpBuilders::new(&limits));
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
            // Past `max_connections` (over all workers) a connection is closed as it is
            // accepted: the client sees the close at once instead of waiting on a
            // backlog, and the gateway keeps serving the ones it has.
            let snapshot = self.snapshot.load();
            if snapshot.config.server.limits != limits {
                limits = snapshot.config.server.limits;
                builders = Arc::new(HttpBuilders::new(&limits));
            }
            let Some(open) = OpenConnection::claim(&self.connections, limits.max_connections)
            else {
                CLIENT_CONNECTIONS.over_limit.inc();
                tracing::debug!(%client, max = limits.max_connections, "connection refused: max_connections reached");
                drop(stream);
                continue;
            };
            drop(snapshot);
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
            // Taken now, so a shutdown that starts during a TLS handshake waits for it too.
            let served = Served {
                snapshot: self.snapshot.clone(),
                conn,
                watcher: graceful.watcher(),
                limits,
                open,
            };
            if self.tls {
                accept_tls(stream, served, &builders);
                continue;
            }
            tokio::spawn(serve_connection(&builders.auto, stream, served));
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
fn accept_tls(stream: TcpStream, mut served: Served, builders: &Arc<HttpBuilders>) {
    let Some(config) = served.snapshot.load().tls.clone() else {
        tracing::error!(
            worker = served.conn.worker,
            "no TLS configuration in force: connection closed"
        );
        return;
    };
    let builders = builders.clone();
    tokio::spawn(async move {
        let accepted = match tls::handshake(config, stream).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(client = %served.conn.client, error = %e, "connection closed");
                return;
            }
        };
        served.conn.scheme = "https";
        served.conn.client_cert = accepted.client_cert;
        let builder = match accepted.alpn {
            Alpn::H2 => &builders.http2,
            Alpn::Http1 => &builders.http1,
            Alpn::None => &builders.auto,
        };
        // The handshake has its own timeout; the head deadline starts after it.
        serve_connection(builder, accepted.stream, served).await;
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
    fn new(limits: &ClientLimits) -> HttpBuilders {
        HttpBuilders {
            auto: http_builder(limits),
            http1: http_builder(limits).http1_only(),
            http2: http_builder(limits).http2_only(),
        }
    }
}

/// hyper's settings for `[server.limits]`: a head past `max_header_bytes` or
/// `max_headers` is a 431 and a closed connection; HTTP/2 gets the same header list
/// bound and its stream limit. The head and idle deadlines are the gateway's own
/// ([`super::deadlines`]): hyper's header timer would also close idle keep-alive
/// connections.
fn http_builder(limits: &ClientLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // The read buffer's bound is the head's: a head that does not fit is a 431.
        .max_buf_size(limits.max_header_bytes)
        // One flat write per response instead of writev of head and body: fewer
        // kernel cycles per small response (measured with bench/run.sh).
        .writev(false);
    // hyper keeps up to 100 headers on the stack; another bound costs a heap
    // allocation per request, so it is only set when it differs.
    if limits.max_headers != 100 {
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    builder
}

/// A connection counted against `max_connections`, until it is dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    /// Counts a new connection, unless `max` are open already.
    fn claim(open: &Arc<AtomicUsize>, max: usize) -> Option<OpenConnection> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        CLIENT_CONNECTIONS.open.inc();
        Some(OpenConnection(open.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        CLIENT_CONNECTIONS.open.dec();
    }
}

/// What serving one connection needs besides its transport.
struct Served {
    snapshot: SharedSnapshot,
    conn: Connection,
    /// Closes it gracefully when the worker shuts down.
    watcher: Watcher,
    limits: ClientLimits,
    open: OpenConnection,
}

/// Serves the requests of one connection through the pipeline until it closes, closes
/// it gracefully when its watcher says the worker is shutting down, or drops it when it
/// passes one of its client deadlines.
fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    served: Served,
) -> impl Future<Output = ()> + Send + 'static
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        snapshot,
        conn,
        watcher,
        limits,
        open,
    } = served;
    // Its requests and reads, for its deadlines, from now on.
    let activity = Activity::new();
    let io = Watched::new(io, activity.clone());
    let client = conn.client;
    let conn = Arc::new(conn);
    let requests = activity.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let slot = requests.request_started(req.version() == http::Version::HTTP_2);
        let snapshot = snapshot.load_full();
        let conn = conn.clone();
        // Boxed: the pipeline's future is a few kilobytes, and hyper moves the service's
        // future (into its dispatcher, and for HTTP/2 into a task of its own per
        // stream); a box is moved as a pointer.
        Box::pin(async move {
            let mut response = pipeline::handle(&snapshot, &conn, req).await;
            response.body_mut().hold(slot.answered());
            Ok::<_, Infallible>(response)
        })
    });
    let served = watcher.watch(
        builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned(),
    );
    async move {
        let _open = open;
        // Pinned out here so that a connection closed for a deadline is counted before
        // it is dropped: whoever sees the close and then reads the metrics finds it.
        tokio::pin!(served);
        tokio::select! {
            ended = &mut served => {
                if let Err(e) = ended {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
            }
            expiry = activity.expired(limits) => {
                let (counter, reason) = match expiry {
                    Expiry::HeaderRead => (&CLIENT_CONNECTIONS.header_timeout, "header_read_timeout"),
                    Expiry::Idle => (&CLIENT_CONNECTIONS.idle, "idle_timeout"),
                    Expiry::ResetFlood => (&CLIENT_CONNECTIONS.reset_flood, "reset_flood"),
                };
                counter.inc();
                tracing::debug!(%client, reason, "connection closed");
            }
        }
    }
}
