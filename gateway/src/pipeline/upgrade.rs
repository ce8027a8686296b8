//! HTTP/1.1 `Upgrade` passthrough (WebSocket and any other protocol): the request goes
//! upstream with its `Upgrade` and `Connection: upgrade` headers on a dedicated
//! connection; on `101 Switching Protocols` the client's and the upstream's upgraded
//! streams are bridged byte for byte until either side closes. Any other answer is
//! proxied as a normal response.
//!
//! A tunnel runs in a task tracked by its worker, so a shutdown waits for open tunnels
//! within the grace period and cuts those still open when it ends. When one side ends
//! its stream, the other side's end is closed for writing and the tunnel lingers at
//! most [`LINGER`] for the rest to drain.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use super::exchange::Upstreamed;
use crate::error::{ProxyError, ResponseBody};
use crate::upstream::{
    self, Cluster, ForwardError, TunnelGuard, UnpooledBody, UpstreamBody, UpstreamHost,
};

/// The protocol an HTTP/1.1 request asks to upgrade to: its `Upgrade` value, when
/// `Connection` lists `upgrade`. HTTP/2 has no `Upgrade` (and HTTP/1.0 no upgrades).
pub(super) fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocol = headers.get(header::UPGRADE)?;
    crate::hop_by_hop::connection_lists(headers, b"upgrade").then(|| protocol.clone())
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop (hygiene
/// removed them with the client's other hop-by-hop headers).
fn set_upgrade_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The client's `101` from the upstream's: its headers after hop-by-hop hygiene, with
/// the protocol the upstream switched to.
fn switched(mut parts: http::response::Parts, via: &HeaderValue) -> Response<ResponseBody> {
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    crate::hop_by_hop::remove(&mut parts.headers);
    if let Some(protocol) = protocol {
        set_upgrade_headers(&mut parts.headers, protocol);
    }
    super::forwarding::append_via(&mut parts.headers, via);
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    Response::from_parts(parts, ResponseBody::full(bytes::Bytes::new()))
}

/// Where an upgrade request goes and what its tunnel needs.
pub(super) struct Tunnel<'a> {
    pub(super) cluster: &'a Arc<Cluster>,
    pub(super) host: &'a UpstreamHost,
    pub(super) key: Option<u64>,
    /// The worker's open tunnels (see [`bridge`]).
    pub(super) tunnels: &'a TaskTracker,
    pub(super) via: &'a HeaderValue,
}

impl Tunnel<'_> {
    /// Sends an upgrade request (origin form) over a dedicated connection. On a `101`
    /// bridges the two upgraded connections and answers the client's `101`; any other
    /// answer is relayed as a normal response.
    pub(super) async fn open(
        self,
        request: Request<UpstreamBody>,
        protocol: HeaderValue,
    ) -> Result<(Result<Upstreamed, ProxyError>, Authority), ForwardError> {
        let (mut head, body) = request.into_parts();
        let client = head.extensions.remove::<OnUpgrade>();
        set_upgrade_headers(&mut head.headers, protocol);
        let upstream::Tunnel {
            mut response,
            endpoint,
            guard,
        } = self
            .cluster
            .open_tunnel(Request::from_parts(head, body), self.host, self.key)
            .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let response =
                response.map(|body| ResponseBody::unpooled(UnpooledBody::new(body, guard)));
            return Ok((Ok(Upstreamed::Relayed(response)), endpoint));
        }
        let Some(client) = client else {
            // Only a connection served with upgrades can switch; ours all are.
            return Ok((Err(ProxyError::UpgradeImpossible), endpoint));
        };
        let upstream = hyper::upgrade::on(&mut response);
        bridge(
            client,
            upstream,
            guard,
            self.tunnels,
            self.cluster.name.clone(),
        );
        let (parts, _) = response.into_parts();
        Ok((
            Ok(Upstreamed::Switched(switched(parts, self.via))),
            endpoint,
        ))
    }
}

/// How long a tunnel stays open in one direction after the other has ended (its
/// sender closed): enough to deliver what is in flight, such as a WebSocket close
/// handshake, without keeping a tunnel whose peer never closes.
const LINGER: Duration = Duration::from_secs(5);

/// Bridges the client's and the upstream's upgraded connections in a task of
/// `tunnels`, holding `guard` (the cluster's count of the connection) until the tunnel
/// ends: both directions done, or one done and the other idle past [`LINGER`].
fn bridge(
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: TunnelGuard,
    tunnels: &TaskTracker,
    cluster: std::sync::Arc<str>,
) {
    tunnels.spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(upstream = %cluster, error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client_rx, mut client_tx) = tokio::io::split(TokioIo::new(client));
        let (mut upstream_rx, mut upstream_tx) = tokio::io::split(TokioIo::new(upstream));
        let up = pin!(relay(&mut client_rx, &mut upstream_tx));
        let down = pin!(relay(&mut upstream_rx, &mut client_tx));
        let (first, rest, first_is_up) = match select(up, down).await {
            Either::Left((sent, down)) => (sent, Either::Left(down), true),
            Either::Right((sent, up)) => (sent, Either::Right(up), false),
        };
        let rest = tokio::time::timeout(LINGER, rest).await;
        let (up, down) = match (first_is_up, rest) {
            (true, Ok(down)) => (first, down),
            (false, Ok(up)) => (up, first),
            (true, Err(_)) => (first, Ok(0)),
            (false, Err(_)) => (Ok(0), first),
        };
        tracing::debug!(
            upstream = %cluster,
            bytes_up = up.as_ref().ok(),
            bytes_down = down.as_ref().ok(),
            "tunnel closed"
        );
    });
}

/// Copies one direction of a tunnel to its end, then closes the sending side so the
/// peer sees the end too.
async fn relay<R, W>(from: &mut R, to: &mut W) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let copied = tokio::io::copy(from, to).await;
    let _ = to.shutdown().await;
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_needs_the_connection_token_and_http_1_1() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            requested(Version::HTTP_11, &h),
            None,
            "no Connection: upgrade"
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            requested(Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(requested(Version::HTTP_10, &h), None);
        assert_eq!(requested(Version::HTTP_2, &h), None);
        h.remove(header::UPGRADE);
        assert_eq!(requested(Version::HTTP_11, &h), None);
    }
}
