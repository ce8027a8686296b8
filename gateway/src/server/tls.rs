//! The TLS handshake on the client listener: the certificate chosen by SNI from the
//! snapshot in force (so a reload's certificates serve the next handshake while open
//! connections keep theirs), the client certificate verified when `client_ca` is set,
//! and the protocol ALPN settled on.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP version ALPN chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    /// `h2`.
    H2,
    /// `http/1.1`.
    Http1,
    /// The client offered no ALPN: the first bytes tell.
    None,
}

/// A connection after a successful handshake.
pub(super) struct Accepted {
    pub(super) stream: TlsStream<TcpStream>,
    pub(super) alpn: Alpn,
    /// The verified client certificate as `x-forwarded-client-cert` (mTLS only).
    pub(super) client_cert: Option<HeaderValue>,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    /// The client or rustls ended it (no certificate for the name, no or an untrusted
    /// client certificate, no common protocol version or cipher suite, a reset).
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
    /// The client did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
}

/// Runs the server side of the handshake on `stream` with `config`.
pub(super) async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
) -> Result<Accepted, HandshakeError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
        .await
        .map_err(|_| HandshakeError::TimedOut)?
        .map_err(HandshakeError::Failed)?;
    let session = stream.get_ref().1;
    let alpn = match session.alpn_protocol() {
        Some(crate::tls::ALPN_H2) => Alpn::H2,
        Some(_) => Alpn::Http1,
        None => Alpn::None,
    };
    // With `client_ca` set, a handshake only completes with a verified certificate.
    let client_cert = session
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(crate::tls::forwarded_client_cert);
    Ok(Accepted {
        stream,
        alpn,
        client_cert,
    })
}
