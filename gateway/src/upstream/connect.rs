//! Opening a connection to an endpoint: TCP, then a TLS handshake when the cluster has
//! `tls`, both within the connect timeout. A failed handshake is a connect failure
//! (retriable as `connect-failure`, counted by outlier detection) whose error says why
//! (an unknown issuer, a name mismatch).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::UpstreamFailure;
use super::endpoint::EndpointState;
use crate::config;

/// A connection to an endpoint: plain TCP or TLS over it.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    /// Plain TCP (`http1`, or h2c with prior knowledge).
    Plain(TcpStream),
    /// TLS; boxed, as its buffers would make every plain connection large too.
    Tls(Box<TlsStream<TcpStream>>),
}

/// How one cluster's connections are opened, shared by its workers and health checks.
#[derive(Debug)]
pub(crate) struct Connector {
    timeout: Duration,
    tls: Option<TlsSettings>,
}

struct TlsSettings {
    connector: TlsConnector,
    /// The name each endpoint is verified as (and sent as SNI when it is a DNS name).
    names: Box<[ServerName<'static>]>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// The connector for `config`'s endpoints.
    pub(crate) fn new(config: &config::Upstream) -> Connector {
        let tls = config.tls.as_ref().map(|tls| TlsSettings {
            connector: TlsConnector::from(tls.client_config.clone()),
            names: config
                .endpoints
                .iter()
                .map(|e| endpoint_name(tls.server_name.as_ref(), &e.authority))
                .collect(),
        });
        Connector {
            timeout: config.timeouts.connect,
            tls,
        }
    }

    /// `https` with TLS, `http` without: the scheme of HTTP/2 requests.
    pub(crate) fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// Connects to endpoint `index` at `authority` within the connect timeout.
    pub(crate) async fn connect(
        &self,
        index: usize,
        endpoint: &EndpointState,
    ) -> Result<UpstreamStream, UpstreamFailure> {
        tokio::time::timeout(self.timeout, self.open(index, endpoint))
            .await
            .map_err(|_| UpstreamFailure::ConnectTimeout(self.timeout))?
    }

    async fn open(
        &self,
        index: usize,
        endpoint: &EndpointState,
    ) -> Result<UpstreamStream, UpstreamFailure> {
        // The endpoint's current addresses (a DNS name's latest answer), each in turn.
        let addresses = endpoint.resolved.current();
        let stream = TcpStream::connect(&addresses[..])
            .await
            .map_err(UpstreamFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(UpstreamStream::Plain(stream));
        };
        let name = tls.names[index].clone();
        let stream = tls
            .connector
            .connect(name, stream)
            .await
            .map_err(UpstreamFailure::Tls)?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    }
}

/// The name endpoint `authority` is verified as: `server_name` when set, else its host
/// (an IP address: no SNI, verified against the certificate's IP SANs).
fn endpoint_name(
    server_name: Option<&ServerName<'static>>,
    authority: &Authority,
) -> ServerName<'static> {
    if let Some(name) = server_name {
        return name.clone();
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        // A validated endpoint host is a DNS name, so this does not fail; an invalid
        // name would only fail verification.
        Err(_) => ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())),
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
