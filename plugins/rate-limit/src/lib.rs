//! `rate-limit`: at most `requests` (plus `burst`) requests per `window` for each client,
//! counted in the gateway's shared key-value store.
//!
//! Windows are fixed and aligned to the Unix epoch (a `"1m"` window starts on every whole
//! minute). Each request atomically increments its bucket's counter for the current
//! window, and the value the increment returns decides: at most the limit, the request
//! goes on; past it, the client gets `429 Too Many Requests` with `Retry-After` and the
//! JSON body `{"error":"rate limit exceeded"}`. Since every increment returns a distinct
//! count, no more than the limit are admitted per bucket and window, however many
//! requests race. Responses, admitted or refused, carry `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the window ends). By
//! default (`headers = "unless-present"`) they are queued from the request phase, each
//! set unless the response already has it (the upstream's own, or a refusal by a later
//! limit on the route), and the plugin costs one call per request; `headers =
//! "tightest"` sets them in a response phase instead, unless the response already
//! carries a lower `RateLimit-Remaining`.
//!
//! A bucket is the route plus what `key` names: the client's IP (`"ip"`, the default),
//! a request header (`"header:NAME"`), the `x-consumer` header the `api-key` plugin sets
//! (`"consumer"`), or nothing more (`"route"`: one bucket for the whole route). A request
//! without the header (or with an empty one) is counted by its IP instead.
//!
//! ```toml
//! plugins = [{ name = "rate-limit", config = { requests = 100, window = "1m", key = "header:x-user" } }]
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use weir_plugin_sdk::host::{self, Level, kv, metrics};
use weir_plugin_sdk::{
    Action, EditError, Headers, LocalResponse, Phase, PhaseResult, Plugin, QueuedHeaders, Request,
    Response, is_header_name, plugin,
};

/// The header the `api-key` plugin sets to the authenticated consumer's name.
const CONSUMER_HEADER: &str = "x-consumer";
/// The shortest window: the headers count in whole seconds.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window: a year (365.25 days, as `humantime` counts `"1y"`).
const MAX_WINDOW: Duration = Duration::from_secs(31_557_600);
/// How much longer than its window a counter lives in the store, so that it cannot
/// expire (and restart from zero) while its window still runs.
const TTL_SLACK_MS: u64 = 1_000;

/// `RateLimit-Limit`: the requests admitted per window.
pub const LIMIT_HEADER: &str = "ratelimit-limit";
/// `RateLimit-Remaining`: the requests still admitted in this window.
pub const REMAINING_HEADER: &str = "ratelimit-remaining";
/// `RateLimit-Reset`: seconds until the window ends.
pub const RESET_HEADER: &str = "ratelimit-reset";

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Requests admitted per window and bucket; at least 1.
    requests: u64,
    /// The window's length, e.g. `"1s"`, `"1m"`, `"1h"`, `"1m 30s"`.
    window: String,
    /// Extra requests admitted per window on top of `requests`.
    #[serde(default)]
    burst: u64,
    /// What a bucket is: `"ip"`, `"header:NAME"`, `"consumer"` or `"route"`.
    #[serde(default = "default_key")]
    key: String,
    /// How admitted requests' responses get the `RateLimit-*` headers.
    #[serde(default)]
    headers: HeadersMode,
}

/// How the `RateLimit-*` headers reach an admitted request's response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadersMode {
    /// Queued from the request phase, each set unless the response already has it (the
    /// upstream's own, or a later limit's refusal): one call per request.
    #[default]
    UnlessPresent,
    /// Set in a response phase, unless the response already reports a lower
    /// `RateLimit-Remaining`: the client hears about the limit that runs out first, at
    /// the cost of a second call per request.
    Tightest,
}

fn default_key() -> String {
    "ip".to_owned()
}

/// What a bucket is, besides the route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyBy {
    /// The client's IP address.
    Ip,
    /// A request header's first value (lower-case name); the IP when it is absent.
    Header(String),
    /// Nothing: the whole route is one bucket.
    Route,
}

/// What the request phase counted: the limit, what is left of it, and the seconds until
/// the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests admitted per window.
    pub limit: u64,
    /// Requests still admitted in this window.
    pub remaining: u64,
    /// Whole seconds (rounded up) until the window ends.
    pub reset: u64,
}

/// The body of a 429.
#[derive(Serialize)]
struct Refusal {
    error: &'static str,
}

impl Quota {
    /// Passes each `RateLimit-*` header field to `field`, its value written without an
    /// allocation (this runs on every request); stops at the first edit refused.
    fn fields(
        &self,
        mut field: impl FnMut(&'static str, &str) -> Result<(), EditError>,
    ) -> Result<(), EditError> {
        let mut digits = itoa::Buffer::new();
        field(LIMIT_HEADER, digits.format(self.limit))?;
        field(REMAINING_HEADER, digits.format(self.remaining))?;
        field(RESET_HEADER, digits.format(self.reset))
    }

    /// Sets the `RateLimit-*` headers.
    fn write(&self, headers: &mut Headers<'_>) -> Result<(), EditError> {
        self.fields(|name, value| headers.set(name, value))
    }

    /// Queues the `RateLimit-*` headers for the response, unless it has them.
    fn queue(&self, response: &mut QueuedHeaders<'_>) -> Result<(), EditError> {
        self.fields(|name, value| response.set_if_absent(name, value))
    }

    /// The 429 for a request past the limit.
    fn refusal(&self) -> Result<LocalResponse, EditError> {
        let body = Refusal {
            error: "rate limit exceeded",
        };
        let mut response =
            LocalResponse::json(429, &body).header("retry-after", self.reset.to_string());
        self.write(&mut response.headers)?;
        Ok(response)
    }
}

/// What one request carries from its request phase to its response phase (with
/// `headers = "tightest"`): the quota it counted, if it was admitted. Per request, so no
/// other request (under `isolation = "worker"` the instance serves many) ever sees it.
#[derive(Debug, Default)]
pub struct State {
    quota: Option<Quota>,
}

/// The plugin.
#[derive(Debug)]
pub struct RateLimit {
    /// `requests + burst`.
    limit: u64,
    window_ms: u64,
    by: KeyBy,
    /// `WINDOW_MS|LIMIT|KEY|`: part of every bucket's store key, so that two limits with
    /// different settings on one route count separately.
    scope: String,
    headers: HeadersMode,
}

/// Parses `window` into whole milliseconds.
pub fn parse_window(text: &str) -> Result<u64, String> {
    let window = humantime::parse_duration(text).map_err(|e| {
        format!(
            "`window`: {text:?} is not a duration ({e}); write it like \"1s\", \"1m\" or \"1h\""
        )
    })?;
    if window < MIN_WINDOW {
        return Err(format!("`window`: {text:?} is shorter than 1s"));
    }
    if window > MAX_WINDOW {
        return Err(format!("`window`: {text:?} is longer than a year"));
    }
    if !window.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "`window`: {text:?} is not a whole number of milliseconds"
        ));
    }
    Ok(window.as_secs() * 1000 + u64::from(window.subsec_millis()))
}

/// Parses `key` into what a bucket is and the key's canonical form (header names
/// lower-cased), which is part of every bucket's store key.
fn parse_key(text: &str) -> Result<(KeyBy, String), String> {
    match text {
        "ip" => Ok((KeyBy::Ip, text.to_owned())),
        "route" => Ok((KeyBy::Route, text.to_owned())),
        "consumer" => Ok((KeyBy::Header(CONSUMER_HEADER.to_owned()), text.to_owned())),
        _ => match text.strip_prefix("header:") {
            Some(name) if is_header_name(name) => {
                let name = name.to_ascii_lowercase();
                let form = format!("header:{name}");
                Ok((KeyBy::Header(name), form))
            }
            Some(name) => Err(format!(
                "`key`: {name:?} in {text:?} is not a valid HTTP header name"
            )),
            None => Err(format!(
                "`key`: expected \"ip\", \"header:NAME\", \"consumer\" or \"route\", got {text:?}"
            )),
        },
    }
}

/// Appends `value` to `out`, visible ASCII as is and every other byte (and `%`) as `%XX`,
/// so that distinct values stay distinct keys.
fn push_escaped(out: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Milliseconds since the Unix epoch at `time` (0 before it).
fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RateLimit {
    /// The store key of `request`'s bucket in window number `index`:
    /// `ROUTE_LEN:ROUTE|WINDOW_MS|LIMIT|KEY|INDEX|CLIENT`, where `CLIENT` is `ip=ADDRESS`,
    /// `v=VALUE` (a header's value, escaped) or empty (`key = "route"`). The route is
    /// length-prefixed and the client part comes last, so no two buckets share a key.
    pub fn bucket(&self, request: &Request<'_>, index: u64) -> String {
        // Built by hand, not with `format!`: this runs on every request.
        let route = request.route();
        let mut digits = itoa::Buffer::new();
        let mut key = String::with_capacity(route.len() + self.scope.len() + 64);
        key.push_str(digits.format(route.len()));
        key.push(':');
        key.push_str(route);
        key.push('|');
        key.push_str(&self.scope);
        key.push_str(digits.format(index));
        key.push('|');
        let value = match &self.by {
            KeyBy::Route => return key,
            KeyBy::Ip => None,
            KeyBy::Header(name) => request.headers.get(name).filter(|v| !v.is_empty()),
        };
        match value {
            Some(value) => {
                key.push_str("v=");
                push_escaped(&mut key, value);
            }
            None => {
                key.push_str("ip=");
                key.push_str(request.client_address());
            }
        }
        key
    }

    /// Counts `request` at `now_ms` (milliseconds since the Unix epoch) with one atomic
    /// increment of its bucket: whether it is admitted, and the quota after it.
    pub fn count(&self, request: &Request<'_>, now_ms: u64) -> (bool, Quota) {
        let index = now_ms / self.window_ms;
        let left_ms = (index + 1) * self.window_ms - now_ms;
        let ttl = Duration::from_millis(left_ms + TTL_SLACK_MS);
        // A request whose counter the store has no room for is not admitted: a limit
        // that cannot be counted is not granted (its quota reads as spent).
        let count = match kv::increment(&self.bucket(request, index), 1, Some(ttl)) {
            Ok(count) => u64::try_from(count).unwrap_or(0),
            Err(full) => {
                host::log(Level::Warn, &format!("request refused: {full}"));
                metrics::counter_add("store_full", 1);
                u64::MAX
            }
        };
        let quota = Quota {
            limit: self.limit,
            remaining: self.limit.saturating_sub(count),
            reset: left_ms.div_ceil(1000),
        };
        (count <= self.limit, quota)
    }
}

#[plugin]
impl Plugin for RateLimit {
    type Config = Config;
    type State = State;

    fn new(config: Config) -> Result<Self, String> {
        if config.requests == 0 {
            return Err("`requests`: must be at least 1".to_owned());
        }
        let limit = config
            .requests
            .checked_add(config.burst)
            .filter(|&limit| i64::try_from(limit).is_ok())
            .ok_or_else(|| "`burst`: `requests` + `burst` is too large".to_owned())?;
        let window_ms = parse_window(&config.window)?;
        let (by, form) = parse_key(&config.key)?;
        Ok(RateLimit {
            limit,
            window_ms,
            by,
            scope: format!("{window_ms}|{limit}|{form}|"),
            headers: config.headers,
        })
    }

    fn phases(&self) -> &[Phase] {
        match self.headers {
            HeadersMode::UnlessPresent => &[Phase::RequestHeaders],
            HeadersMode::Tightest => &[Phase::RequestHeaders, Phase::ResponseHeaders],
        }
    }

    fn header_reads(&self) -> Vec<&str> {
        match &self.by {
            KeyBy::Header(name) => vec![name],
            KeyBy::Route | KeyBy::Ip => Vec::new(),
        }
    }

    fn on_request_headers(&self, request: &mut Request<'_>, state: &mut State) -> PhaseResult {
        // The request's time, which the gateway sends with the call (no clock read).
        let (admitted, quota) = self.count(request, unix_ms(request.received_at()));
        if admitted {
            match self.headers {
                HeadersMode::UnlessPresent => quota.queue(&mut request.response_headers)?,
                HeadersMode::Tightest => state.quota = Some(quota),
            }
            return Ok(Action::Continue);
        }
        metrics::counter_add("rate_limited", 1);
        Ok(Action::Respond(quota.refusal()?))
    }

    fn on_response_headers(
        &self,
        _request: &Request<'_>,
        response: &mut Response<'_>,
        state: &mut State,
    ) -> PhaseResult {
        let Some(quota) = state.quota.take() else {
            return Ok(Action::Continue);
        };
        // Another limit on the way (a second rate-limit, the upstream) may be tighter:
        // the client hears about the one that runs out first.
        let tighter = response
            .headers
            .get_str(REMAINING_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|remaining| remaining < quota.remaining);
        if !tighter {
            quota.write(&mut response.headers)?;
        }
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, Harness};

    /// 12:00:00 UTC on 1 January 2025, in milliseconds: a whole hour, minute and second.
    const NOON: u64 = 1_735_732_800_000;

    fn plugin(requests: u64, window: &str, burst: u64, key: &str) -> RateLimit {
        RateLimit::new(Config {
            requests,
            window: window.to_owned(),
            burst,
            key: key.to_owned(),
            headers: HeadersMode::UnlessPresent,
        })
        .unwrap()
    }

    /// A `headers = "tightest"` limit of `requests` per hour, by IP.
    fn tightest(requests: u64) -> RateLimit {
        RateLimit::new(Config {
            requests,
            window: "1h".to_owned(),
            burst: 0,
            key: "ip".to_owned(),
            headers: HeadersMode::Tightest,
        })
        .unwrap()
    }

    fn refused(requests: u64, window: &str, burst: u64, key: &str) -> String {
        RateLimit::new(Config {
            requests,
            window: window.to_owned(),
            burst,
            key: key.to_owned(),
            headers: HeadersMode::UnlessPresent,
        })
        .unwrap_err()
    }

    fn get() -> Request<'static> {
        Request::new("GET", "/")
    }

    /// Whether `request` is admitted at `now`.
    fn admits(plugin: &RateLimit, request: &Request<'_>, now: u64) -> bool {
        plugin.count(request, now).0
    }

    fn header<'h>(headers: &'h Headers<'_>, name: &str) -> Option<&'h str> {
        headers.get_str(name)
    }

    #[test]
    fn a_client_the_store_has_no_room_for_is_refused_and_counted() {
        testing::reset();
        testing::with(|fake| fake.kv_max_entries = Some(1));
        let limit = plugin(3, "1m", 0, "header:x-client");
        let client = |id: &str| get().with_header("x-client", id);
        assert!(admits(&limit, &client("a"), NOON));
        assert!(
            !admits(&limit, &client("b"), NOON),
            "no room for b's counter"
        );
        assert!(
            admits(&limit, &client("a"), NOON),
            "a's counter still counts"
        );
        testing::with(|fake| {
            assert_eq!(fake.counters.get("store_full"), Some(&1));
            assert!(
                fake.logs
                    .iter()
                    .any(|(_, line)| line.contains("store is full"))
            );
        });
    }

    #[test]
    fn counts_down_then_refuses_with_429_retry_after_and_headers() {
        testing::reset();
        let limit = plugin(3, "1m", 0, "ip");
        let now = NOON + 15_000; // 45 s left in the minute
        for remaining in [2, 1, 0] {
            assert_eq!(
                limit.count(&get(), now),
                (
                    true,
                    Quota {
                        limit: 3,
                        remaining,
                        reset: 45
                    }
                )
            );
        }
        assert_eq!(
            limit.count(&get(), now),
            (
                false,
                Quota {
                    limit: 3,
                    remaining: 0,
                    reset: 45
                }
            )
        );

        let response = limit.count(&get(), now).1.refusal().unwrap();
        assert_eq!(response.status, 429);
        assert_eq!(header(&response.headers, "retry-after"), Some("45"));
        assert_eq!(
            header(&response.headers, "content-type"),
            Some("application/json")
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body, serde_json::json!({ "error": "rate limit exceeded" }));
        assert_eq!(header(&response.headers, LIMIT_HEADER), Some("3"));
        assert_eq!(header(&response.headers, REMAINING_HEADER), Some("0"));
        assert_eq!(header(&response.headers, RESET_HEADER), Some("45"));
    }

    #[test]
    fn the_phases_refuse_past_the_limit_and_count_refusals() {
        testing::reset();
        let limit = plugin(1, "1h", 0, "ip");
        assert_eq!(
            limit
                .on_request_headers(&mut get(), &mut State::default())
                .unwrap(),
            Action::Continue
        );
        match limit
            .on_request_headers(&mut get(), &mut State::default())
            .unwrap()
        {
            Action::Respond(response) => {
                assert_eq!(response.status, 429);
                let retry: u64 = header(&response.headers, "retry-after")
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&retry), "{retry}");
            }
            other => panic!("{other:?}"),
        }
        testing::with(|fake| assert_eq!(fake.counters["rate_limited"], 1));
    }

    #[test]
    fn burst_adds_to_the_limit() {
        testing::reset();
        let limit = plugin(2, "1m", 3, "ip");
        let admitted = (0..10).filter(|_| admits(&limit, &get(), NOON)).count();
        assert_eq!(admitted, 5);
        assert_eq!(limit.count(&get(), NOON).1.limit, 5);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        testing::reset();
        let limit = plugin(2, "1s", 0, "ip");
        assert!(admits(&limit, &get(), NOON));
        assert!(admits(&limit, &get(), NOON + 999));
        assert!(!admits(&limit, &get(), NOON + 999));
        assert_eq!(limit.count(&get(), NOON + 1_000).1.remaining, 1);
        assert!(admits(&limit, &get(), NOON + 1_999));
        assert!(!admits(&limit, &get(), NOON + 1_999));
    }

    #[test]
    fn reset_is_the_seconds_left_rounded_up_and_the_ttl_covers_the_window() {
        testing::reset();
        let limit = plugin(100, "1m", 0, "ip");
        assert_eq!(limit.count(&get(), NOON).1.reset, 60);
        assert_eq!(limit.count(&get(), NOON + 59_001).1.reset, 1);
        assert_eq!(limit.count(&get(), NOON + 59_999).1.reset, 1);
        assert_eq!(limit.count(&get(), NOON + 30_500).1.reset, 30);

        testing::reset();
        let before = std::time::Instant::now();
        limit.count(&get(), NOON + 20_000);
        let after = std::time::Instant::now();
        testing::with(|fake| {
            assert_eq!(fake.kv.len(), 1);
            let (value, expires) = fake.kv.values().next().unwrap();
            assert_eq!(value, b"1");
            let expires = expires.expect("counters expire");
            let ttl = Duration::from_millis(40_000 + TTL_SLACK_MS);
            assert!(expires >= before + ttl && expires <= after + ttl);
        });
    }

    #[test]
    fn buckets_by_ip() {
        testing::reset();
        let limit = plugin(1, "1m", 0, "ip");
        let from = |ip: &str| get().with_client_address(ip);
        assert!(admits(&limit, &from("10.0.0.1"), NOON));
        assert!(!admits(&limit, &from("10.0.0.1"), NOON));
        assert!(admits(&limit, &from("10.0.0.2"), NOON));
        assert!(admits(&limit, &from("2001:db8::1"), NOON));
    }

    #[test]
    fn buckets_by_header_falling_back_to_the_ip() {
        testing::reset();
        let limit = plugin(1, "1m", 0, "header:X-User");
        let user = |name: &str| get().with_header("x-user", name);
        assert!(admits(&limit, &user("alice"), NOON));
        assert!(!admits(&limit, &user("alice"), NOON));
        assert!(admits(&limit, &user("bob"), NOON));
        // The same user from another address is the same bucket.
        assert!(!admits(
            &limit,
            &user("bob").with_client_address("10.9.9.9"),
            NOON
        ));
        // Without the header (or with an empty one), the client's IP is the bucket.
        assert!(admits(&limit, &get(), NOON));
        assert!(!admits(&limit, &user(""), NOON));
        assert!(admits(&limit, &get().with_client_address("10.0.0.2"), NOON));
        // An IP-looking header value is not the IP's bucket.
        assert!(admits(&limit, &user("127.0.0.1"), NOON));
    }

    #[test]
    fn header_values_are_escaped_not_merged() {
        testing::reset();
        let limit = plugin(1, "1m", 0, "header:x-user");
        for value in [&b"a b"[..], b"a%20b", b"a\xffb", b"a%FFb", b"a\tb"] {
            let request = get().with_header("x-user", value);
            assert!(admits(&limit, &request, NOON), "{value:?}");
        }
        assert_eq!(
            limit.bucket(&get().with_header("x-user", "a b%"), 7),
            "4:test|60000|1|header:x-user|7|v=a%20b%25"
        );
    }

    #[test]
    fn buckets_by_consumer() {
        testing::reset();
        let limit = plugin(1, "1m", 0, "consumer");
        let consumer = |name: &str| get().with_header("x-consumer", name);
        assert!(admits(&limit, &consumer("acme"), NOON));
        assert!(!admits(&limit, &consumer("acme"), NOON));
        assert!(admits(&limit, &consumer("globex"), NOON));
        assert!(admits(&limit, &get(), NOON));
        assert!(!admits(&limit, &get(), NOON));
    }

    #[test]
    fn route_shares_one_bucket_between_clients() {
        testing::reset();
        let limit = plugin(2, "1m", 0, "route");
        assert!(admits(&limit, &get().with_client_address("10.0.0.1"), NOON));
        assert!(admits(&limit, &get().with_client_address("10.0.0.2"), NOON));
        assert!(!admits(
            &limit,
            &get().with_client_address("10.0.0.3"),
            NOON
        ));
        assert_eq!(limit.bucket(&get(), 3), "4:test|60000|2|route|3|");
    }

    #[test]
    fn routes_and_differently_configured_limits_count_separately() {
        testing::reset();
        let limit = plugin(1, "1m", 0, "ip");
        assert!(admits(&limit, &get().with_route("a"), NOON));
        assert!(!admits(&limit, &get().with_route("a"), NOON));
        assert!(admits(&limit, &get().with_route("b"), NOON));
        // Route names cannot run into the rest of the key.
        assert!(admits(&limit, &get().with_route("a|60000"), NOON));
        // A second limit on the same route, with another window, has its own counter.
        let hourly = plugin(1, "1h", 0, "ip");
        assert!(admits(&hourly, &get().with_route("a"), NOON));
        assert!(!admits(&hourly, &get().with_route("a"), NOON));
    }

    #[test]
    fn by_default_the_quota_is_queued_from_the_request_phase() {
        testing::reset();
        let limit = plugin(5, "1m", 0, "ip");
        assert_eq!(limit.phases(), [Phase::RequestHeaders]);
        let mut request = get();
        let mut state = State::default();
        assert_eq!(
            limit.on_request_headers(&mut request, &mut state).unwrap(),
            Action::Continue
        );
        assert!(
            state.quota.is_none(),
            "nothing is left for a response phase"
        );
        let edits = request.edits();
        let queued = &edits.response_set_if_absent;
        let names: Vec<&str> = queued.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER]);
        assert_eq!(queued[0].1, b"5");
        assert_eq!(queued[1].1, b"4");
        assert!(edits.set.is_empty(), "the request itself is untouched");
    }

    #[test]
    fn the_response_phase_reports_the_counted_quota_once() {
        testing::reset();
        let limit = tightest(5);
        assert_eq!(
            limit.phases(),
            [Phase::RequestHeaders, Phase::ResponseHeaders]
        );
        let mut request = get();
        let mut state = State::default();
        assert_eq!(
            limit.on_request_headers(&mut request, &mut state).unwrap(),
            Action::Continue
        );
        assert!(request.edits().response_set_if_absent.is_empty());
        let mut response = Response::new(200);
        assert_eq!(
            limit
                .on_response_headers(&request, &mut response, &mut state)
                .unwrap(),
            Action::Continue
        );
        assert_eq!(header(&response.headers, LIMIT_HEADER), Some("5"));
        assert_eq!(header(&response.headers, REMAINING_HEADER), Some("4"));
        let reset: u64 = header(&response.headers, RESET_HEADER)
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");

        // The state was taken: a response phase without a request phase adds nothing.
        let mut response = Response::new(200);
        limit
            .on_response_headers(&request, &mut response, &mut state)
            .unwrap();
        assert!(response.headers.all().is_empty());
        let mut response = Response::new(200);
        limit
            .on_response_headers(&request, &mut response, &mut State::default())
            .unwrap();
        assert!(response.headers.all().is_empty());
    }

    #[test]
    fn a_refusal_carries_no_state_of_an_earlier_request() {
        testing::reset();
        let limit = tightest(1);
        let mut first = State::default();
        assert_eq!(
            limit.on_request_headers(&mut get(), &mut first).unwrap(),
            Action::Continue
        );
        assert!(
            first.quota.is_some(),
            "kept for the first request's response"
        );
        // Under worker isolation the next request may reuse the instance; if the first
        // never reached its response phase, its state must not leak into the next: each
        // request has its own.
        let mut second = State::default();
        assert!(matches!(
            limit.on_request_headers(&mut get(), &mut second),
            Ok(Action::Respond(_))
        ));
        assert!(second.quota.is_none());
        let mut response = Response::new(200);
        limit
            .on_response_headers(&get(), &mut response, &mut second)
            .unwrap();
        assert!(response.headers.all().is_empty());
    }

    #[test]
    fn a_tighter_limit_already_on_the_response_is_kept() {
        testing::reset();
        let limit = tightest(5);
        let mut request = get();
        let mut state = State::default();
        limit.on_request_headers(&mut request, &mut state).unwrap();
        let mut response = Response::new(200)
            .with_header(LIMIT_HEADER, "2")
            .with_header(REMAINING_HEADER, "1")
            .with_header(RESET_HEADER, "9");
        limit
            .on_response_headers(&request, &mut response, &mut state)
            .unwrap();
        assert_eq!(header(&response.headers, LIMIT_HEADER), Some("2"));
        assert_eq!(header(&response.headers, REMAINING_HEADER), Some("1"));

        let mut state = State::default();
        limit.on_request_headers(&mut request, &mut state).unwrap();
        let mut response = Response::new(200).with_header(REMAINING_HEADER, "100");
        limit
            .on_response_headers(&request, &mut response, &mut state)
            .unwrap();
        assert_eq!(header(&response.headers, REMAINING_HEADER), Some("3"));
    }

    #[test]
    fn whole_requests_by_default_get_the_quota_unless_the_response_has_one() {
        let mut limit =
            Harness::<RateLimit>::new(serde_json::json!({ "requests": 2, "window": "1h" }));
        assert_eq!(limit.phases(), [Phase::RequestHeaders]);
        let first = limit.run(get());
        assert_eq!(first.status(), 200);
        assert_eq!(first.header(LIMIT_HEADER), Some("2"));
        assert_eq!(first.header(REMAINING_HEADER), Some("1"));
        let reset: u64 = first.header(RESET_HEADER).unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
        // The upstream's own report is kept.
        limit.upstream(Response::new(200).with_header(REMAINING_HEADER, "7"), "");
        let second = limit.run(get());
        assert_eq!(second.header(REMAINING_HEADER), Some("7"));
        assert_eq!(second.header(LIMIT_HEADER), Some("2"));
        // Past the limit: answered here, nothing goes upstream.
        let refused = limit.run(get());
        assert_eq!(refused.status(), 429);
        assert!(refused.upstream_request().is_none());
        assert_eq!(refused.header(REMAINING_HEADER), Some("0"));
        assert_eq!(refused.header("retry-after"), refused.header(RESET_HEADER));
        assert_eq!(
            refused.body_json(),
            serde_json::json!({ "error": "rate limit exceeded" })
        );
        assert!(refused.failure().is_none());
    }

    #[test]
    fn whole_requests_with_tightest_carry_the_quota_to_the_response_phase() {
        let mut limit = Harness::<RateLimit>::new(
            serde_json::json!({ "requests": 3, "window": "1h", "headers": "tightest" }),
        );
        assert_eq!(
            limit.phases(),
            [Phase::RequestHeaders, Phase::ResponseHeaders]
        );
        let first = limit.run(get());
        assert_eq!(first.status(), 200);
        assert_eq!(first.header(REMAINING_HEADER), Some("2"));
        assert_eq!(first.header(LIMIT_HEADER), Some("3"));
        // A tighter limit reported by the upstream is kept; a looser one is replaced.
        limit.upstream(Response::new(200).with_header(REMAINING_HEADER, "0"), "");
        assert_eq!(limit.run(get()).header(REMAINING_HEADER), Some("0"));
        limit.upstream(
            Response::new(200)
                .with_header(LIMIT_HEADER, "100")
                .with_header(REMAINING_HEADER, "50"),
            "",
        );
        let third = limit.run(get());
        assert_eq!(third.header(REMAINING_HEADER), Some("0"));
        assert_eq!(
            third.header(LIMIT_HEADER),
            Some("3"),
            "ours, not the upstream's"
        );
        let refused = limit.run(get());
        assert_eq!(refused.status(), 429);
        assert!(refused.upstream_request().is_none());
    }

    #[test]
    fn windows_parse_strictly() {
        assert_eq!(parse_window("1s"), Ok(1_000));
        assert_eq!(parse_window("1m"), Ok(60_000));
        assert_eq!(parse_window("1h"), Ok(3_600_000));
        assert_eq!(parse_window("1m 30s"), Ok(90_000));
        assert_eq!(parse_window("1500ms"), Ok(1_500));
        assert_eq!(parse_window("1d"), Ok(86_400_000));
        for bad in [
            "", "1", "soon", "-1s", "0s", "999ms", "2y", "1s 1us", "1 parsec",
        ] {
            let e = parse_window(bad).unwrap_err();
            assert!(e.starts_with("`window`: "), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        for (e, key) in [
            (refused(0, "1s", 0, "ip"), "`requests`"),
            (refused(1, "soon", 0, "ip"), "`window`"),
            (refused(1, "0s", 0, "ip"), "`window`"),
            (refused(1, "1s", 0, "cookie:x"), "`key`"),
            (refused(1, "1s", 0, "IP"), "`key`"),
            (refused(1, "1s", 0, "header:"), "`key`"),
            (refused(1, "1s", 0, "header:bad name"), "`key`"),
            (refused(u64::MAX, "1s", 1, "ip"), "`burst`"),
            (refused(i64::MAX as u64, "1s", 1, "ip"), "`burst`"),
        ] {
            assert!(e.starts_with(key), "{e}");
        }
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let config: Config = serde_json::from_str(r#"{"requests": 10, "window": "1m"}"#).unwrap();
        let limit = RateLimit::new(config).unwrap();
        assert_eq!((limit.limit, limit.window_ms), (10, 60_000));
        assert_eq!(limit.by, KeyBy::Ip);
        let e = serde_json::from_str::<Config>(r#"{"requests": 1, "window": "1s", "rps": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `rps`"), "{e}");
        let e = serde_json::from_str::<Config>(r#"{"window": "1s"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `requests`"), "{e}");
        assert!(serde_json::from_str::<Config>(r#"{"requests": -1, "window": "1s"}"#).is_err());
        assert_eq!(limit.headers, HeadersMode::UnlessPresent);
        let config: Config = weir_plugin_sdk::parse_config(
            r#"{"requests": 1, "window": "1s", "headers": "tightest"}"#,
        )
        .unwrap();
        assert_eq!(config.headers, HeadersMode::Tightest);
        let e = weir_plugin_sdk::parse_config::<Config>(
            r#"{"requests": 1, "window": "1s", "headers": "min"}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("`headers`: unknown variant `min`"), "{e}");
    }
}
