//! Request mirroring (Envoy's request shadowing): a copy of a sampled request goes to
//! the route's mirror upstream, fire-and-forget.
//!
//! - The copy is made after the request phases, so the shadow sees what the primary
//!   upstream sees, except that its `Host` gets `-shadow` appended to the host name
//!   (`shop.example.com:8080` → `shop.example.com-shadow:8080`), as in Envoy.
//! - It runs in a task of its own: its answer is read and discarded, it never delays or
//!   fails the client's request.
//! - At most `max_in_flight` copies per route are in flight; past that a copy is
//!   dropped and counted.
//! - Bodies: a request without a body, one a plugin's body phase already buffered, or
//!   one that declares a `Content-Length` of at most [`MAX_MIRROR_BODY`] is mirrored
//!   (the last is read whole before the primary request is sent, as Envoy buffers the
//!   body for its shadow). A larger or chunked body is streamed to the primary only and
//!   the copy is skipped, and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version, header};
use http_body_util::{BodyExt, Either, Full};

use crate::router::MirrorTarget;
use crate::telemetry::metrics::MirrorResult;
use crate::upstream::{Cluster, UpstreamHost};

/// The largest streamed request body that is buffered to be mirrored.
pub(super) const MAX_MIRROR_BODY: u64 = 64 * 1024;

/// The parts of a request a shadow copy is made from (cloned: headers and method are
/// cheap to clone, the URI and body are shared bytes).
pub(super) struct Copy {
    pub(super) method: Method,
    pub(super) path_and_query: PathAndQuery,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// How a request's body can be mirrored, judged from its head.
pub(super) enum BodyPlan {
    /// No body, or one already in memory.
    Ready,
    /// A body of at most [`MAX_MIRROR_BODY`] bytes to read first.
    Buffer,
    /// Streamed or too large: the copy is skipped.
    Skip,
}

/// How the body of a request with `headers` that streams (`ends`: it is already over)
/// can be mirrored.
pub(super) fn plan(headers: &HeaderMap, ends: bool) -> BodyPlan {
    if ends {
        return BodyPlan::Ready;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n <= MAX_MIRROR_BODY => BodyPlan::Buffer,
        _ => BodyPlan::Skip,
    }
}

/// Counts a copy that was skipped for its body.
pub(super) fn skipped(mirror: &MirrorTarget) {
    mirror.series.record(MirrorResult::Skipped);
}

/// Sends `copy` to `cluster` from worker `worker` in a task of its own, unless the
/// route has `max_in_flight` copies in flight already (then it is dropped and counted).
pub(super) fn send(
    mirror: &MirrorTarget,
    cluster: &Arc<Cluster>,
    worker: usize,
    copy: Copy,
    host: &UpstreamHost,
) {
    let Some(slot) = Slot::take(&mirror.in_flight, mirror.max_in_flight) else {
        mirror.series.record(MirrorResult::Dropped);
        return;
    };
    let host = shadow_host(host);
    let mut req = Request::new(Either::Right(Full::new(copy.body)));
    *req.method_mut() = copy.method;
    *req.uri_mut() = Uri::from(copy.path_and_query);
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = copy.headers;
    let (cluster, series) = (cluster.clone(), mirror.series.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let result = match cluster.forward(worker, req, &host, None).await {
            Ok(forwarded) => {
                // Read the answer to its end so the connection goes back to the pool;
                // it is discarded.
                let body = forwarded.response.into_body().collect();
                let _ = tokio::time::timeout(cluster.timeouts.request, body).await;
                MirrorResult::Sent
            }
            Err(e) => {
                tracing::debug!(upstream = %cluster.name, error = %e, "mirror request failed");
                MirrorResult::Failed
            }
        };
        series.record(result);
    });
}

/// The `Host` of a shadow request: the primary's with `-shadow` appended to the host
/// name, before any port (Envoy's convention). With `auto_host_rewrite` the shadow
/// carries its own endpoint's address.
fn shadow_host(host: &UpstreamHost) -> UpstreamHost {
    match host {
        UpstreamHost::Fixed(Some(value)) => {
            UpstreamHost::Fixed(Some(shadow_value(value).unwrap_or_else(|| value.clone())))
        }
        other => other.clone(),
    }
}

fn shadow_value(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    // The port starts at the last `:` after any `]` of an IPv6 literal.
    let host_end = match text.rfind(']') {
        Some(bracket) => text[bracket..]
            .find(':')
            .map_or(text.len(), |i| bracket + i),
        None => text.rfind(':').unwrap_or(text.len()),
    };
    let (host, port) = text.split_at(host_end);
    HeaderValue::try_from(format!("{host}-shadow{port}")).ok()
}

/// A place among a route's shadow requests in flight, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(in_flight: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(in_flight.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(text: &'static str) -> String {
        let value = shadow_value(&HeaderValue::from_static(text)).unwrap();
        value.to_str().unwrap().to_owned()
    }

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow("shop.example.com"), "shop.example.com-shadow");
        assert_eq!(
            shadow("shop.example.com:8080"),
            "shop.example.com-shadow:8080"
        );
        assert_eq!(shadow("127.0.0.1:80"), "127.0.0.1-shadow:80");
        assert_eq!(shadow("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow("[::1]"), "[::1]-shadow");
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&counter, 2).unwrap();
        let b = Slot::take(&counter, 2).unwrap();
        assert!(Slot::take(&counter, 2).is_none());
        drop(a);
        assert!(Slot::take(&counter, 2).is_some());
        drop(b);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn bodies_are_mirrored_when_small_and_declared() {
        let mut h = HeaderMap::new();
        assert!(matches!(plan(&h, true), BodyPlan::Ready));
        assert!(matches!(plan(&h, false), BodyPlan::Skip), "chunked");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(10));
        assert!(matches!(plan(&h, false), BodyPlan::Buffer));
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(MAX_MIRROR_BODY + 1),
        );
        assert!(matches!(plan(&h, false), BodyPlan::Skip));
    }
}
