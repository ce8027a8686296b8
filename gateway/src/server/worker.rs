//! One worker: a single-threaded event loop that accepts on its own listener and serves
//! HTTP/1.1 and h2c connections (or, with `[server.tls]`, HTTP/1.1 and h2 over TLS) until
//! shutdown, then drains them within the grace period.
//!
//! Draining (at SIGTERM, or once a successor took over the sockets) closes each
//! connection where no request can be cut: an HTTP/2 one with GOAWAY at once (open
//! streams finish, and the client sends new ones on a new connection); an HTTP/1 one
//! after its next response, which says `Connection: close`, or, when its client sends
//! nothing, once it has been quiet for [`DRAIN_QUIET`]. Closing an idle keep-alive
//! connection at the instant its client reuses it would fail that request: the client
//! cannot know the server had not read it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deadlines::{Activity, Expiry, Watched};
use super::sniff::{Sniffed, sniff};
use super::tls::{self, Alpn};
use crate::config::ClientLimits;
use crate::pipeline::{self, Connection};
use crate::snapshot::SharedSnapshot;
use crate::telemetry::metrics::CLIENT_CONNECTIONS;

/// How long a draining gateway lets an HTTP/1 connection sit with nothing sent before it
/// closes it (see the module's doc).
const DRAIN_QUIET: Duration = Duration::from_secs(1);

pub(crate) struct Worker {
    pub(crate) id: usize,
    /// Client connections open over all workers, against `max_connections`.
    pub(crate) connections: Arc<AtomicUsize>,
    /// The sockets it accepts on: its own one, usually; several when the gateway
    /// inherited more sockets than it has workers, or one it shares when fewer.
    pub(crate) listeners: Vec<std::net::TcpListener>,
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
        let listeners = self
            .listeners
            .into_iter()
            .map(TcpListener::from_std)
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut limits = self.snapshot.load().config.server.limits;
        let mut builders = Arc::new(HttpBuilders::new(&limits));
        // Connections, each draining itself once `shutdown` is cancelled.
        let open = TaskTracker::new();
        let draining = Arc::new(AtomicBool::new(false));
        // Upgraded connections (WebSocket tunnels) outlive their HTTP connection.
        let tunnels = TaskTracker::new();
        let mut next = 0;

        loop {
            let (stream, client) = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                accepted = accept_any(&listeners, &mut next) => match accepted {
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
            let Some(counted) = OpenConnection::claim(&self.connections, limits.max_connections)
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
            // Tracked now, so a shutdown that starts during a TLS handshake waits for it too.
            let served = Served {
                snapshot: self.snapshot.clone(),
                conn,
                shutdown: self.shutdown.clone(),
                draining: draining.clone(),
                limits,
                open: counted,
            };
            if self.tls {
                accept_tls(stream, served, &builders, &open);
                continue;
            }
            open.spawn(serve_plain(builders.clone(), stream, served));
        }

        // The sockets stay open while a successor (or another worker) holds them.
        drop(listeners);
        draining.store(true, Ordering::Relaxed);
        open.close();
        tunnels.close();
        let drained = async {
            open.wait().await;
            tunnels.wait().await;
        };
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!(
                    worker = self.id,
                    grace = ?self.grace,
                    connections = open.len(),
                    tunnels = tunnels.len(),
                    "grace period over; closing remaining connections and tunnels"
                );
            }
        }
        // Returning drops the worker's runtime, and with it every tunnel still open.
        Ok(())
    }
}

/// Accepts the next connection on any of `listeners`, trying them in turn from `next`
/// so none is starved.
fn accept_any<'a>(
    listeners: &'a [TcpListener],
    next: &'a mut usize,
) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + 'a {
    std::future::poll_fn(move |cx| {
        let count = listeners.len();
        for i in 0..count {
            let at = (*next + i) % count;
            if let Poll::Ready(accepted) = listeners[at].poll_accept(cx) {
                *next = (at + 1) % count;
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
}

/// Completes the TLS handshake with the certificates of the snapshot in force, then
/// serves the HTTP version ALPN chose; all in the connection's own task, so a slow
/// handshake never holds up accepting.
fn accept_tls(
    stream: TcpStream,
    mut served: Served,
    builders: &Arc<HttpBuilders>,
    open: &TaskTracker,
) {
    let Some(config) = served.snapshot.load().tls.clone() else {
        tracing::error!(
            worker = served.conn.worker,
            "no TLS configuration in force: connection closed"
        );
        return;
    };
    let builders = builders.clone();
    open.spawn(async move {
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
            Alpn::H2 => Speaks::Http2(&builders.http2),
            Alpn::Http1 => Speaks::Http1(&builders.http1),
            Alpn::None => Speaks::FirstBytesTell(&builders.auto),
        };
        // The handshake has its own timeout; the head deadline starts after it.
        serve_connection(builder, accepted.stream, served).await;
    });
}

/// Serves a plain connection as HTTP/1 or h2c, told by its first bytes, which are left
/// for hyper to read (see [`sniff`]). Until they come, the connection is under the
/// head deadline of its first request, and a draining gateway closes it once it has
/// been quiet for [`DRAIN_QUIET`], as it would an idle HTTP/1 connection.
async fn serve_plain(builders: Arc<HttpBuilders>, stream: TcpStream, served: Served) {
    let opened = tokio::time::Instant::now();
    let quiet = async {
        served.shutdown.cancelled().await;
        tokio::time::sleep_until(opened + DRAIN_QUIET).await;
    };
    let sniffed = tokio::select! {
        sniffed = sniff(&stream) => sniffed,
        () = tokio::time::sleep(served.limits.header_read_timeout) => {
            CLIENT_CONNECTIONS.header_timeout.inc();
            tracing::debug!(client = %served.conn.client, reason = "header_read_timeout", "connection closed");
            return;
        }
        () = quiet => return,
    };
    let builder = match sniffed {
        Ok(Sniffed::Http2) => Speaks::Http2(&builders.http2),
        Ok(Sniffed::Http1) => Speaks::Http1(&builders.http1),
        Err(e) => {
            tracing::debug!(client = %served.conn.client, error = %e, "connection ended with an error");
            return;
        }
    };
    serve_connection(builder, stream, served).await;
}

/// The HTTP version a connection is served in, with hyper's settings for it.
#[derive(Clone, Copy)]
enum Speaks<'b> {
    Http1(&'b http1::Builder),
    Http2(&'b http2::Builder<TokioExecutor>),
    /// Told by the first bytes hyper-util's `auto` reads (TLS without ALPN).
    FirstBytesTell(&'b auto::Builder<TokioExecutor>),
}

/// The HTTP server settings, one per way a connection can say which version it speaks.
struct HttpBuilders {
    /// HTTP/1.1: ALPN chose `http/1.1`, or a plain connection's first bytes are not h2's
    /// preface.
    http1: http1::Builder,
    /// HTTP/2: ALPN chose `h2`, or a plain connection opened with h2's preface.
    http2: http2::Builder<TokioExecutor>,
    /// Either, told by the first bytes: TLS without ALPN.
    auto: auto::Builder<TokioExecutor>,
}

/// hyper's settings for `[server.limits]`: a head past `max_header_bytes` or
/// `max_headers` is a 431 and a closed connection; HTTP/2 gets the same header list
/// bound and its stream limit. The head and idle deadlines are the gateway's own
/// ([`super::deadlines`]): hyper's header timer would also close idle keep-alive
/// connections. Written once for hyper's builders and hyper-util's `auto` one, which
/// have the same methods but no common trait.
macro_rules! configure {
    (http1: $builder:expr, $limits:expr) => {{
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            // The read buffer's bound is the head's: a head that does not fit is a 431.
            .max_buf_size($limits.max_header_bytes)
            // One flat write per response instead of writev of head and body: fewer
            // kernel cycles per small response (measured with bench/run.sh).
            .writev(false);
        // hyper keeps up to 100 headers on the stack; another bound costs a heap
        // allocation per request, so it is only set when it differs.
        if $limits.max_headers != 100 {
            $builder.max_headers($limits.max_headers);
        }
    }};
    (http2: $builder:expr, $limits:expr) => {{
        $builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from($limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams($limits.max_concurrent_streams);
    }};
}

impl HttpBuilders {
    fn new(limits: &ClientLimits) -> HttpBuilders {
        let mut http1 = http1::Builder::new();
        configure!(http1: http1, limits);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        configure!(http2: http2, limits);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        configure!(http1: auto.http1(), limits);
        configure!(http2: auto.http2(), limits);
        HttpBuilders { http1, http2, auto }
    }
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
    /// Cancelled when the gateway starts draining: the connection then closes where
    /// no request is cut.
    shutdown: CancellationToken,
    /// Set once the worker drains: HTTP/1 responses then say `Connection: close`.
    draining: Arc<AtomicBool>,
    limits: ClientLimits,
    open: OpenConnection,
}

/// Serves the requests of one connection through the pipeline until it closes, closes
/// it gracefully when the gateway drains (see the module's doc), or drops it when it
/// passes one of its client deadlines.
fn serve_connection<IO>(
    speaks: Speaks<'_>,
    io: IO,
    served: Served,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served {
        snapshot,
        conn,
        shutdown,
        draining,
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
        let http1 = req.version() < http::Version::HTTP_2;
        let slot = requests.request_started(!http1);
        let snapshot = snapshot.load_full();
        let conn = conn.clone();
        let draining = draining.clone();
        // Boxed: the pipeline's future is a few kilobytes, and hyper moves the service's
        // future (into its dispatcher, and for HTTP/2 into a task of its own per
        // stream); a box is moved as a pointer.
        Box::pin(async move {
            let mut response = pipeline::handle(&snapshot, &conn, req).await;
            if http1
                && draining.load(Ordering::Relaxed)
                && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            response.body_mut().hold(slot.answered());
            Ok::<_, Infallible>(response)
        })
    });
    let io = TokioIo::new(io);
    let drive = Drive {
        open,
        activity,
        shutdown,
        limits,
        client,
    };
    match speaks {
        Speaks::Http1(builder) => Box::pin(drive.run(
            builder.serve_connection(io, service).with_upgrades(),
            |connection| connection.graceful_shutdown(),
        )),
        Speaks::Http2(builder) => Box::pin(
            drive.run(builder.serve_connection(io, service), |connection| {
                connection.graceful_shutdown()
            }),
        ),
        Speaks::FirstBytesTell(builder) => Box::pin(
            drive.run(
                builder
                    .serve_connection_with_upgrades(io, service)
                    .into_owned(),
                |connection| connection.graceful_shutdown(),
            ),
        ),
    }
}

/// What one of a connection's watches saw.
enum Watch {
    /// The gateway drains and the connection may be shut down gracefully.
    Drain,
    /// The connection passed a client deadline.
    Expired(Expiry),
}

/// What a connection is driven with besides hyper's side of it.
struct Drive {
    /// Counted against `max_connections` until the connection ends.
    open: OpenConnection,
    activity: Arc<Activity>,
    shutdown: CancellationToken,
    limits: ClientLimits,
    client: SocketAddr,
}

impl Drive {
    /// Runs `connection` until it ends, shutting it down gracefully (with
    /// `graceful_shutdown`, its own method) once the gateway drains and it is
    /// drainable, or dropping it when it passes a client deadline.
    async fn run<C, E>(self, connection: C, graceful_shutdown: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Drive {
            open: _open,
            activity,
            shutdown,
            limits,
            client,
        } = self;
        // Pinned out here so that a connection closed for a deadline is counted before
        // it is dropped: whoever sees the close and then reads the metrics finds it.
        tokio::pin!(connection);
        // The watches beside the connection. A `select!` polls every branch whenever the
        // task wakes, which for a busy connection is several times a request; in a
        // `FuturesUnordered` a watch is polled only when its own timer or notification
        // woke it (1,470 instructions a request less, `bench/callgrind.sh`).
        let mut watches: FuturesUnordered<Pin<Box<dyn Future<Output = Watch> + Send + '_>>> =
            FuturesUnordered::new();
        watches.push(Box::pin(async {
            shutdown.cancelled().await;
            while !activity.drainable(DRAIN_QUIET) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Watch::Drain
        }));
        watches.push(Box::pin(async {
            Watch::Expired(activity.expired(limits).await)
        }));
        loop {
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(%client, error = %e, "connection ended with an error");
                    }
                    break;
                }
                Some(watch) = watches.next() => match watch {
                    // Idle HTTP/1 closes now; HTTP/2 sends GOAWAY and finishes its streams.
                    Watch::Drain => graceful_shutdown(connection.as_mut()),
                    Watch::Expired(expiry) => {
                        let (counter, reason) = match expiry {
                            Expiry::HeaderRead => (&CLIENT_CONNECTIONS.header_timeout, "header_read_timeout"),
                            Expiry::Idle => (&CLIENT_CONNECTIONS.idle, "idle_timeout"),
                            Expiry::ResetFlood => (&CLIENT_CONNECTIONS.reset_flood, "reset_flood"),
                        };
                        counter.inc();
                        tracing::debug!(%client, reason, "connection closed");
                        break;
                    }
                },
            }
        }
    }
}
