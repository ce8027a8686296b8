//! Retries: which outcomes of an exchange are worth another try, which requests can be
//! sent again, the retry budget, and the backoff between tries.
//!
//! A request is only sent again when that cannot duplicate a streamed body: one whose
//! body is empty or was buffered by a plugin's body phase is replayed from a copy made
//! before the first try; one whose connection failed before anything was written comes
//! back untouched from the client and can be tried elsewhere whatever its method or
//! body, since no endpoint saw it. Every other request gets one try.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{Either, Full};

use super::{Cluster, UpstreamBody, UpstreamFailure};
use crate::config::Retries;
use crate::random::below;

/// How one try ended, as the retry conditions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A response head arrived.
    Answered(StatusCode),
    /// The connection could not be made (refused, timed out, closed before the request
    /// was written).
    ConnectFailure,
    /// The connection failed after the request was sent.
    Reset,
    /// No response head within the try's timeout.
    Timeout,
    /// A circuit breaker refused the try: never retried (that would defeat it).
    Overloaded,
    /// The client's body failed while it streamed: never retried (it is gone), and not
    /// the endpoint's fault.
    ClientBody,
}

impl Outcome {
    pub(super) fn of(failure: &UpstreamFailure) -> Outcome {
        match failure {
            UpstreamFailure::Connect(_)
            | UpstreamFailure::ConnectTimeout(_)
            | UpstreamFailure::Tls(_)
            | UpstreamFailure::ClosedBeforeSend => Outcome::ConnectFailure,
            UpstreamFailure::Exchange(_) => Outcome::Reset,
            UpstreamFailure::Timeout(_) => Outcome::Timeout,
            UpstreamFailure::Overloaded(_) => Outcome::Overloaded,
            UpstreamFailure::ClientBody(_) => Outcome::ClientBody,
        }
    }
}

/// Whether `policy` retries a try that ended with `outcome`.
pub(super) fn wanted(policy: &Retries, outcome: Outcome) -> bool {
    let on = &policy.on;
    let any_failure = on.server_error || on.gateway_error;
    match outcome {
        Outcome::ConnectFailure => on.connect_failure || any_failure,
        Outcome::Reset | Outcome::Timeout => on.reset || any_failure,
        Outcome::Overloaded | Outcome::ClientBody => false,
        Outcome::Answered(status) => {
            let code = status.as_u16();
            (on.server_error && status.is_server_error())
                || (on.gateway_error && (502..=504).contains(&code))
                || (on.retriable_statuses && policy.retriable_statuses.contains(&code))
        }
    }
}

/// Methods a retry may repeat without changing the outcome (RFC 9110, 9.2.2).
fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

/// What a retry needs to send a request again: its body, already in memory, and its
/// head, copied here only when the exchange does not hand it back (HTTP/2 clusters;
/// over HTTP/1.1 a failed exchange returns the head it sent, so the common request that
/// is never retried pays for no copy).
#[derive(Debug)]
pub(super) struct Replay {
    head: Option<Head>,
    body: Full<Bytes>,
}

/// A copy of a request's head.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// What a retry of `req` needs, if `policy` may send it again: an idempotent method
    /// (or `allow_non_idempotent`) and a body that is empty or already buffered; with a
    /// copy of the head when `copy_head`. Boxed, so that requests without one carry a
    /// pointer across their awaits.
    pub(super) fn capture(
        req: &Request<UpstreamBody>,
        policy: &Retries,
        copy_head: bool,
    ) -> Option<Box<Replay>> {
        if policy.attempts == 0 || !(policy.allow_non_idempotent || idempotent(req.method())) {
            return None;
        }
        let body = match req.body() {
            Either::Right(buffered) => buffered.clone(),
            Either::Left(streamed) if streamed.is_end_stream() => Full::new(Bytes::new()),
            Either::Left(_) => return None,
        };
        let head = copy_head.then(|| Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        Some(Box::new(Replay { head, body }))
    }

    /// The request again: with `sent`, the head the failed exchange handed back, else
    /// the copy (`None` when there is neither).
    pub(super) fn request(
        &self,
        sent: Option<Box<http::request::Parts>>,
    ) -> Option<Request<UpstreamBody>> {
        let body = Either::Right(self.body.clone());
        if let Some(head) = sent {
            return Some(Request::from_parts(*head, body));
        }
        let copy = self.head.as_ref()?;
        let mut req = Request::new(body);
        *req.method_mut() = copy.method.clone();
        *req.uri_mut() = copy.uri.clone();
        *req.version_mut() = copy.version;
        *req.headers_mut() = copy.headers.clone();
        Some(req)
    }
}

/// One retry in flight, counted against the cluster's retry budget while it lives.
#[derive(Debug)]
pub(super) struct RetrySlot<'c> {
    cluster: &'c Cluster,
}

impl Drop for RetrySlot<'_> {
    fn drop(&mut self) {
        self.cluster.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    /// How many retries may be in flight now: `budget_percent` of the requests in
    /// flight, or `min_retry_concurrency`, whichever is more. This is what keeps retries
    /// from multiplying an outage.
    fn retry_budget(&self, policy: &Retries) -> usize {
        let active = self.active.load(Ordering::Relaxed);
        (active * usize::from(policy.budget_percent) / 100)
            .max(policy.min_retry_concurrency as usize)
    }

    /// Whether a retry would get a slot now (a retry waits out its backoff only then).
    fn retry_budget_left(&self, policy: &Retries) -> bool {
        self.active_retries.load(Ordering::Relaxed) < self.retry_budget(policy)
    }

    /// A slot for one more retry, held while it is sent, unless retries in flight
    /// already fill the budget.
    fn retry_slot(&self, policy: &Retries) -> Option<RetrySlot<'_>> {
        let budget = self.retry_budget(policy);
        let taken = self.active_retries.fetch_add(1, Ordering::Relaxed);
        if taken >= budget {
            self.active_retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot { cluster: self })
    }
}

impl Cluster {
    /// Gets retry number `retry` of `request` under way: `None` when there is no
    /// request to send again, the `deadline` leaves no time for the backoff, or the
    /// retry budget has no room after it (the budget counts retries being sent, not
    /// retries waiting, so it is checked before the wait and taken after it).
    pub(super) async fn prepare_retry(
        &self,
        policy: &Retries,
        request: Option<Request<UpstreamBody>>,
        retry: u32,
        deadline: std::time::Instant,
    ) -> Option<(Request<UpstreamBody>, RetrySlot<'_>)> {
        let request = request?;
        let wait = backoff(policy, retry);
        if deadline.saturating_duration_since(std::time::Instant::now()) <= wait {
            return None;
        }
        if self.retry_budget_left(policy) {
            tokio::time::sleep(wait).await;
        }
        match self.retry_slot(policy) {
            Some(slot) => {
                self.retries_sent.inc();
                Some((request, slot))
            }
            None => {
                self.retries_refused.inc();
                tracing::debug!(upstream = %self.name, "retry budget exhausted: not retrying");
                None
            }
        }
    }
}

/// The wait before retry number `retry` (1 for the first): a uniformly random time
/// below `backoff_base` × (2^`retry` − 1), at most `backoff_max` (Envoy's fully
/// jittered exponential backoff).
pub(super) fn backoff(policy: &Retries, retry: u32) -> Duration {
    let factor = (1u32 << retry.min(16)) - 1;
    let ceiling = policy
        .backoff_base
        .saturating_mul(factor)
        .min(policy.backoff_max);
    let micros = usize::try_from(ceiling.as_micros()).unwrap_or(usize::MAX);
    Duration::from_micros(below(micros) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;

    fn policy(on: RetryOn) -> Retries {
        Retries {
            on,
            retriable_statuses: vec![409],
            ..Retries::default()
        }
    }

    #[test]
    fn conditions_follow_envoys_retry_on() {
        let ok = |s: u16| Outcome::Answered(StatusCode::from_u16(s).unwrap());
        let connect = policy(RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        });
        assert!(wanted(&connect, Outcome::ConnectFailure));
        assert!(!wanted(&connect, Outcome::Reset));
        assert!(!wanted(&connect, ok(503)));
        let gateway = policy(RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        });
        for (outcome, retried) in [
            (ok(502), true),
            (ok(503), true),
            (ok(504), true),
            (ok(500), false),
            (ok(409), false),
            (Outcome::Timeout, true),
            (Outcome::ConnectFailure, true),
        ] {
            assert_eq!(wanted(&gateway, outcome), retried, "{outcome:?}");
        }
        let five = policy(RetryOn {
            server_error: true,
            ..RetryOn::default()
        });
        assert!(wanted(&five, ok(500)) && !wanted(&five, ok(404)));
        let statuses = policy(RetryOn {
            retriable_statuses: true,
            ..RetryOn::default()
        });
        assert!(wanted(&statuses, ok(409)) && !wanted(&statuses, ok(500)));
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = Retries::default(); // 25 ms base, 250 ms cap
        for retry in 1..=6 {
            let ceiling = Duration::from_millis(25 * ((1 << retry) - 1)).min(p.backoff_max);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(&p, retry)).collect();
            assert!(waits.iter().all(|w| *w < ceiling), "retry {retry}");
            let longest = waits.iter().max().unwrap();
            assert!(
                *longest > ceiling * 3 / 4,
                "retry {retry}: jitter spans the range"
            );
        }
    }

    #[test]
    fn only_idempotent_requests_with_replayable_bodies_are_captured() {
        let p = Retries::default();
        let get = Request::get("/x")
            .body(Either::Right(Full::new(Bytes::from_static(b"buffered"))))
            .unwrap();
        let replay = Replay::capture(&get, &p, true).expect("GET with a buffered body");
        let again = replay.request(None).expect("its head was copied");
        assert_eq!((again.method(), again.uri().path()), (&Method::GET, "/x"));
        let post = Request::post("/x")
            .body(Either::Right(Full::new(Bytes::new())))
            .unwrap();
        assert!(Replay::capture(&post, &p, true).is_none());
        let allowed = Retries {
            allow_non_idempotent: true,
            ..Retries::default()
        };
        assert!(Replay::capture(&post, &allowed, true).is_some());
        let none = Retries {
            attempts: 0,
            ..Retries::default()
        };
        assert!(Replay::capture(&get, &none, true).is_none());
    }

    #[test]
    fn without_a_copy_the_head_the_exchange_handed_back_is_sent_again() {
        let get = Request::get("/x")
            .header("x-kept", "1")
            .body(Either::Right(Full::new(Bytes::from_static(b"buffered"))))
            .unwrap();
        let replay = Replay::capture(&get, &Retries::default(), false).expect("replayable");
        assert!(replay.request(None).is_none(), "no head: nothing to send");
        let (head, _) = get.into_parts();
        let again = replay
            .request(Some(Box::new(head)))
            .expect("the head came back");
        assert_eq!(again.uri().path(), "/x");
        assert_eq!(again.headers()["x-kept"], "1");
        assert_eq!(http_body::Body::size_hint(again.body()).exact(), Some(8));
    }
}
