//! The upstream phase of a route with `cache`: a fresh entry answers without the
//! upstream; a stale one is revalidated (`If-None-Match`/`If-Modified-Since`, a `304`
//! refreshes it) and served stale if the upstream fails and the entry allows it; a
//! miss leads one upstream request whose response, if storable, is recorded as it
//! streams, and concurrent misses for the same key read that response as it streams
//! too.
//!
//! A client's own conditions and range (`If-None-Match`, `If-Modified-Since`, `Range`,
//! `If-Range`) are answered from a fresh entry ([`conditional`]): `304`, `206` or
//! `416`. Without a fresh entry such a request goes upstream as it is and its answer
//! is not stored (the answer is not the entry's); so does any request with `If-Match`
//! or `If-Unmodified-Since`, and methods other than GET and HEAD (a successful unsafe
//! request drops its URL's entry, RFC 9111 §4.4). A HEAD is answered from the GET's
//! entry but never stored.
//!
//! The route's plugins steer it: their request phases can add parts to the key
//! (`request.cache-key-append`) or keep the cache out of the request, which then goes
//! upstream and is not stored (`request.set-uncacheable`), and their response-headers
//! phases can keep a response from being stored (`response.set-uncacheable`: its
//! recording, which starts only after those phases, is then never made, and misses
//! waiting to share it go upstream themselves).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use super::Flow;
use super::exchange::{Exchange, Upstreamed};
use crate::cache::conditional::{self, Answer};
use crate::cache::policy::{self, Asked};
use crate::cache::{
    CacheKey, Entry, Joined, Lookup, Reader, Recording, ResponseCache, RouteCaching,
};
use crate::error::{ProxyError, ResponseBody};
use crate::plugin::ChainRun;
use crate::upstream::UpstreamBody;

/// What the cache header says.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    Stale,
}

impl Outcome {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
        })
    }
}

impl Exchange<'_> {
    /// The upstream phase through the route's cache.
    pub(super) async fn cached(
        &mut self,
        caching: Arc<RouteCaching>,
        body: UpstreamBody,
    ) -> Flow<Upstreamed> {
        let Some(cache) = self.snapshot.cache.clone() else {
            return self.forward(body).await;
        };
        let method = self.head.method.clone();
        let steering = self.plugins.as_deref().map(ChainRun::cache_steering);
        let key = CacheKey::new(
            &self.route.name,
            self.original_host.as_ref().map(HeaderValue::as_bytes),
            self.path_and_query.as_str(),
            steering.map(|s| &s.key_parts),
            &caching.settings.vary,
            &self.head.headers,
        );
        let kept_out = steering.is_some_and(|s| s.uncacheable);
        let readable = method == Method::GET || method == Method::HEAD;
        let headers = &self.head.headers;
        let conditional = conditional::CONDITIONAL
            .iter()
            .any(|h| headers.contains_key(h));
        let left_to_upstream = conditional
            && conditional::LEFT_TO_UPSTREAM
                .iter()
                .any(|h| headers.contains_key(h));
        if !readable || kept_out || left_to_upstream {
            caching.series.misses.inc();
            let flow = self.forward(body).await;
            if !readable
                && !method.is_safe()
                && let ControlFlow::Continue(Upstreamed::Relayed(response)) = &flow
                && (response.status().is_success() || response.status().is_redirection())
            {
                cache.purge_exact(&key);
            }
            return self.marked(flow, Outcome::Miss);
        }
        let uri = Uri::from(self.path_and_query.clone());
        let mut waited = false;
        let (stale, lead) = loop {
            let now = SystemTime::now();
            let asked = Asked {
                method: &method,
                uri: &uri,
                headers: &self.head.headers,
            };
            let stale = match cache.lookup(&key, &caching, &asked, now) {
                Lookup::Fresh(entry) => {
                    caching.series.hits.inc();
                    let response = self.answer_from(&entry, now, Outcome::Hit);
                    return ControlFlow::Continue(Upstreamed::Relayed(response));
                }
                Lookup::Stale(entry) => Some(entry),
                Lookup::Miss => None,
            };
            // Conditions and ranges are answered only from a fresh entry.
            if conditional {
                caching.series.misses.inc();
                let flow = self.forward(body).await;
                return self.marked(flow, Outcome::Miss);
            }
            // A HEAD's response is not stored, and a miss that waited once goes on its own.
            if method == Method::HEAD || waited {
                break (stale, None);
            }
            match cache.join(&key) {
                Joined::Lead(lead) => break (stale, Some(lead)),
                Joined::Wait(waiter) => {
                    if let Some(reader) = waiter.joined().await {
                        let now = SystemTime::now();
                        let asked = Asked {
                            method: &method,
                            uri: &uri,
                            headers: &self.head.headers,
                        };
                        // The leader's response answers this request too (its `Vary`).
                        if policy::fresh_for(&reader.broadcast().policy, &asked, now) {
                            caching.series.hits.inc();
                            let response = self.answer_shared(reader, now);
                            return ControlFlow::Continue(Upstreamed::Relayed(response));
                        }
                    }
                    waited = true;
                }
            }
        };
        if let Some(entry) = &stale {
            ask_if_changed(&mut self.head.headers, &entry.headers);
        }
        // The request's head goes upstream: what the policy reads of it is kept.
        let request_headers = self.head.headers.clone();
        let flow = self.forward(body).await;
        let now = SystemTime::now();
        let response = match flow {
            ControlFlow::Continue(Upstreamed::Relayed(response)) => response,
            ControlFlow::Break(answer) => {
                let failed = matches!(
                    answer.error,
                    Some(ProxyError::Upstream { .. } | ProxyError::Refused { .. })
                );
                if let Some(entry) = stale.filter(|e| failed && policy::may_serve_stale(&e.headers))
                {
                    caching.series.stale.inc();
                    let response = self.answer_from(&entry, now, Outcome::Stale);
                    return ControlFlow::Continue(Upstreamed::Relayed(response));
                }
                caching.series.misses.inc();
                return ControlFlow::Break(answer);
            }
            switched => return switched,
        };
        let status = response.status();
        if let Some(entry) = &stale {
            if status == StatusCode::NOT_MODIFIED {
                caching.series.hits.inc();
                let asked = Asked {
                    method: &Method::GET,
                    uri: &uri,
                    headers: &request_headers,
                };
                let refreshed = refresh(
                    &cache,
                    &key,
                    &caching,
                    entry,
                    response.headers(),
                    &asked,
                    now,
                );
                let response = self.answer_from(&refreshed, now, Outcome::Hit);
                return ControlFlow::Continue(Upstreamed::Relayed(response));
            }
            if status.is_server_error() && policy::may_serve_stale(&entry.headers) {
                caching.series.stale.inc();
                let response = self.answer_from(entry, now, Outcome::Stale);
                return ControlFlow::Continue(Upstreamed::Relayed(response));
            }
        }
        caching.series.misses.inc();
        let (mut head, body) = response.into_parts();
        if let Some(lead) = lead {
            let trimmed = policy::kept_request_headers(&request_headers, &head.headers);
            let asked = Asked {
                method: &method,
                uri: &uri,
                headers: &trimmed,
            };
            let declared = http_body::Body::size_hint(&body).exact();
            let fits = declared.is_none_or(|n| n <= caching.settings.max_entry_size);
            let ttl = caching.settings.ttl_default;
            if fits
                && let Ok(policy) = policy::storable(&asked, head.status, &head.headers, ttl, now)
            {
                // Started on the body after the response-headers phases (see
                // `record`), which may keep the response out.
                self.recording = Some(Box::new(Recording::new(
                    cache,
                    key,
                    caching,
                    head.status,
                    head.headers.clone(),
                    policy,
                    Some(lead),
                )));
            }
        }
        self.mark(&mut head.headers, Outcome::Miss);
        ControlFlow::Continue(Upstreamed::Relayed(Response::from_parts(head, body)))
    }

    /// Starts the recording of a storable miss on its body, unless a response-headers
    /// phase kept the response out of the cache; then the recording is dropped, which
    /// lands its flight, and the misses that waited for it go upstream themselves.
    pub(super) fn record(&mut self, body: ResponseBody) -> ResponseBody {
        let Some(recording) = self.recording.take() else {
            return body;
        };
        let kept_out = self
            .plugins
            .as_deref()
            .is_some_and(ChainRun::response_uncacheable);
        if kept_out {
            return body;
        }
        ResponseBody::recorded(body, *recording)
    }

    /// The response for a stored entry: the entry, or what it answers to the request's
    /// conditions or range (no body for a HEAD).
    fn answer_from(
        &self,
        entry: &Entry,
        now: SystemTime,
        outcome: Outcome,
    ) -> Response<ResponseBody> {
        let len = entry.body.len() as u64;
        let answer = match outcome {
            Outcome::Hit => conditional::evaluate(
                &self.head.method,
                &self.head.headers,
                entry.status,
                &entry.headers,
                len,
            ),
            // A stale answer stands in for a failed upstream: the whole entry.
            Outcome::Stale | Outcome::Miss => Answer::Whole,
        };
        let (status, headers, body) = match answer {
            Answer::Whole => (entry.status, entry.headers.clone(), entry.body.clone()),
            Answer::NotModified => (
                StatusCode::NOT_MODIFIED,
                not_modified_headers(&entry.headers),
                Bytes::new(),
            ),
            Answer::Part(range) => {
                let mut headers = entry.headers.clone();
                let content_range = format!("bytes {}-{}/{len}", range.start(), range.end());
                headers.insert(header::CONTENT_RANGE, header_value(content_range));
                // Within the body: the range was validated against its length.
                let (start, end) = (*range.start() as usize, *range.end() as usize);
                let part = entry.body.slice(start..=end);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
                (StatusCode::PARTIAL_CONTENT, headers, part)
            }
            Answer::Unsatisfiable => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{len}")),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                (StatusCode::RANGE_NOT_SATISFIABLE, headers, Bytes::new())
            }
        };
        let body = match self.head.method == Method::HEAD {
            true => Bytes::new(),
            false => body,
        };
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        let out = response.headers_mut();
        *out = headers;
        out.insert(header::AGE, HeaderValue::from(entry.age(now)));
        self.mark(out, outcome);
        response
    }

    /// The response a coalesced miss reads as the leader's streams in.
    fn answer_shared(&self, reader: Reader, now: SystemTime) -> Response<ResponseBody> {
        let broadcast = reader.broadcast();
        let (status, mut headers) = (broadcast.status, broadcast.headers.clone());
        let age = broadcast.policy.age(now).as_secs();
        headers.insert(header::AGE, HeaderValue::from(age));
        self.mark(&mut headers, Outcome::Hit);
        let mut response = Response::new(ResponseBody::shared(reader));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// Adds the cache header, if there is one.
    fn mark(&self, headers: &mut HeaderMap, outcome: Outcome) {
        if let Some(name) = &self.snapshot.cache_header {
            headers.insert(name.clone(), outcome.value());
        }
    }

    /// `flow` with the cache header on its response.
    fn marked(&self, mut flow: Flow<Upstreamed>, outcome: Outcome) -> Flow<Upstreamed> {
        if let ControlFlow::Continue(Upstreamed::Relayed(response)) = &mut flow {
            self.mark(response.headers_mut(), outcome);
        }
        flow
    }
}

/// Makes the request to the upstream conditional on the stored response's validators.
fn ask_if_changed(request: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// The headers of a stored response a `304` from the cache repeats (RFC 9110
/// §15.4.5: those a `200` would have sent that describe caching and validation, not
/// the body).
fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// `text` (digits, spaces, `-`, `/`, `*`) as a header value.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("a Content-Range is a valid header value")
}

/// Headers a `304` does not update in the stored response (they describe its body or
/// the connection).
const NOT_UPDATED: [header::HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// The entry a `304` with `headers` makes of `entry`: its headers updated by the 304's,
/// fresh again, stored in its place.
fn refresh(
    cache: &Arc<ResponseCache>,
    key: &CacheKey,
    caching: &RouteCaching,
    entry: &Entry,
    fresh: &HeaderMap,
    asked: &Asked<'_>,
    now: SystemTime,
) -> Arc<Entry> {
    let mut headers = entry.headers.clone();
    for name in fresh.keys() {
        if NOT_UPDATED.contains(name) || crate::hop_by_hop::is_hop_by_hop(name) {
            continue;
        }
        headers.remove(name);
        for value in fresh.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let trimmed = policy::kept_request_headers(asked.headers, &headers);
    let asked = Asked {
        headers: &trimmed,
        ..*asked
    };
    let policy = policy::policy(
        &asked,
        entry.status,
        &headers,
        caching.settings.ttl_default,
        now,
    );
    let body = entry.body.clone();
    cache.store(key, caching, entry.status, headers, body, policy, now)
}
