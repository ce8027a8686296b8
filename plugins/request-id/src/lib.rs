//! `request-id`: every request gets an id, on its way upstream and on its response.
//!
//! An incoming id in the configured header (default `x-request-id`) is kept when it is
//! valid: 1 to 200 visible ASCII characters, none of `"`, `,`, `;` or `\`. Otherwise
//! (absent, empty, too long, odd characters, or several values) the plugin generates a
//! UUID v7 (time-ordered, see [`new_id`]) and sets it, replacing what came in.
//! The response carries the same id in the same header, queued from the request phase
//! so the plugin costs one call per request: the gateway sends the header with the call
//! ([`Plugin::header_reads`]) and takes both edits back with its result.
//!
//! ```toml
//! plugins = [{ name = "request-id", config = { header = "x-correlation-id" } }]
//! ```

use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

use chacha20::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use serde::Deserialize;
use uuid::fmt::Hyphenated;
use uuid::{Builder, Uuid};
use weir_plugin_sdk::{Action, Headers, PhaseResult, Plugin, Request, is_header_name};

/// The longest incoming id that is kept.
const MAX_ID_LEN: usize = 200;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The header that carries the id.
    header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-request-id".to_owned(),
        }
    }
}

/// The plugin: the header name, lower-cased.
#[derive(Debug)]
pub struct RequestId {
    header: String,
}

/// Whether an incoming id is kept as it is.
pub fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

thread_local! {
    /// The time field of the last id this instance made, so that the next one is later.
    static LAST_TIME: Cell<u64> = const { Cell::new(0) };
    /// The generator of the ids' random bits, seeded from the host's randomness by the
    /// first id the instance makes (never in `new`, so a pre-initialised snapshot holds
    /// no seed for its instances to share). ChaCha12: ids stay unpredictable, and an id
    /// costs no host call for its randomness.
    static RANDOM: RefCell<Option<ChaCha12Rng>> = const { RefCell::new(None) };
}

/// 64 random bits: from the instance's generator, seeded on first use.
fn random_u64() -> Result<u64, getrandom::Error> {
    RANDOM.with_borrow_mut(|rng| {
        let rng = match rng {
            Some(rng) => rng,
            None => {
                let mut seed = [0; 32];
                getrandom::fill(&mut seed)?;
                rng.insert(ChaCha12Rng::from_seed(seed))
            }
        };
        Ok(rng.next_u64())
    })
}

/// A new id for a request received at `now`: a UUID v7 (RFC 9562) in its hyphenated
/// lower-case form. Its 48-bit millisecond timestamp is followed, in the 12 bits the
/// RFC calls `rand_a`, by the fraction of the millisecond (its method 3), so the ids of
/// one instance sort by when they were made, never repeat a time, and never go back if
/// the clock does. The other 62 bits are random, from a ChaCha12 generator the instance
/// seeds once from the host ([`random_u64`]). The time is the request's
/// (`Request::received_at`), which the gateway sends with the call: an id costs no
/// host call (a `uuid::Uuid::now_v7` makes two, and divides 128-bit numbers).
pub fn new_id(now: SystemTime) -> Result<[u8; Hyphenated::LENGTH], getrandom::Error> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let uuid = uuid_v7(next_time(now), random_u64()?);
    let mut id = [0; Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut id);
    Ok(id)
}

/// The time field for an id made at `now` (since the Unix epoch): milliseconds above,
/// 4096ths of a millisecond in the low 12 bits.
fn time_field(now: Duration) -> u64 {
    let millis = now.as_secs() * 1000 + u64::from(now.subsec_millis());
    let fraction = u64::from(now.subsec_nanos() % 1_000_000) * 4096 / 1_000_000;
    (millis << 12) | fraction
}

/// The time field of the next id, made at `now`: one more than the last if that is
/// not later.
fn next_time(now: Duration) -> u64 {
    let time = time_field(now);
    LAST_TIME.with(|last| {
        let time = time.max(last.get() + 1);
        last.set(time);
        time
    })
}

/// The UUID v7 of a time field (see [`next_time`]) and 62 random bits (of `random`).
fn uuid_v7(time: u64, random: u64) -> Uuid {
    let mut rest = [0; 10];
    // The version takes the top four bits of the first byte, the variant the top two of
    // the third: the fraction fills the 12 bits between them.
    rest[0] = ((time >> 8) & 0x0f) as u8;
    rest[1] = time as u8;
    rest[2..].copy_from_slice(&random.to_be_bytes());
    Builder::from_unix_timestamp_millis(time >> 12, &rest).into_uuid()
}

#[weir_plugin_sdk::plugin]
impl Plugin for RequestId {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if !is_header_name(&config.header) {
            return Err(format!(
                "`header`: {:?} is not a valid HTTP header name",
                config.header
            ));
        }
        // The id is set on every request and response: refuse a name the gateway would
        // not let the plugin set (`host`, `content-length`, a hop-by-hop header) now,
        // rather than fail each request. The SDK applies the gateway's rules to a local
        // message.
        if let Err(e) = Headers::default().set(&config.header, "id") {
            return Err(format!(
                "`header`: {:?} cannot carry the id: the plugin could not set it ({e})",
                config.header
            ));
        }
        Ok(RequestId {
            header: config.header.to_ascii_lowercase(),
        })
    }

    fn header_reads(&self) -> Vec<&str> {
        vec![&self.header]
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        // The header name was checked in `new` and the id is either a valid incoming
        // value or a UUID: the gateway has no reason to refuse these edits, and if it
        // ever did, the request must not go on without its id.
        let incoming = request.headers.get_all(&self.header);
        match incoming.as_slice() {
            [one] if is_valid_id(one) => request.response_headers.set(&self.header, one)?,
            _ => {
                let id = new_id(request.received_at())?;
                request.headers.set(&self.header, id)?;
                request.response_headers.set(&self.header, id)?;
            }
        }
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::Response;
    use weir_plugin_sdk::testing::Harness;

    fn plugin(header: &str) -> RequestId {
        RequestId::new(Config {
            header: header.to_owned(),
        })
        .unwrap()
    }

    /// Runs the request phase, which always lets the request go on.
    fn tag(plugin: &RequestId, request: &mut Request<'_>) {
        let action = plugin.on_request_headers(request, &mut ()).unwrap();
        assert_eq!(action, Action::Continue);
    }

    fn is_uuid_v7(id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
    }

    #[test]
    fn generates_a_uuid_v7_when_absent() {
        let mut request = Request::new("GET", "/");
        tag(&plugin("x-request-id"), &mut request);
        let id = request.headers.get_str("x-request-id").unwrap().to_owned();
        assert!(is_uuid_v7(&id), "{id}");
        assert_eq!(
            request.edits().response_set,
            [("x-request-id".to_owned(), id.into_bytes())],
            "the response gets the same id"
        );
    }

    #[test]
    fn keeps_a_valid_incoming_id() {
        let mut request = Request::new("GET", "/").with_header("X-Request-Id", "abc-123:def.456");
        tag(&plugin("x-request-id"), &mut request);
        assert_eq!(
            request.headers.get_str("x-request-id"),
            Some("abc-123:def.456")
        );
        let edits = request.edits();
        assert!(edits.set.is_empty(), "nothing was changed");
        assert_eq!(
            edits.response_set,
            [("x-request-id".to_owned(), b"abc-123:def.456".to_vec())]
        );
    }

    #[test]
    fn replaces_invalid_or_repeated_ids() {
        for bad in [
            vec!["has space"],
            vec![""],
            vec!["quote\"d"],
            vec!["a", "b"],
        ] {
            let mut request = Request::new("GET", "/");
            for value in &bad {
                request = request.with_header("x-request-id", value);
            }
            tag(&plugin("x-request-id"), &mut request);
            let all = request.headers.get_all("x-request-id");
            assert_eq!(all.len(), 1, "{bad:?}");
            assert!(is_uuid_v7(std::str::from_utf8(&all[0]).unwrap()), "{bad:?}");
        }
        assert!(!is_valid_id(&[b'a'; 201]));
        assert!(is_valid_id(&[b'a'; 200]));
    }

    #[test]
    fn ids_are_time_ordered_and_unique() {
        let ids: Vec<[u8; Hyphenated::LENGTH]> = (0..1000)
            .map(|_| new_id(SystemTime::now()).unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        for id in &ids {
            assert!(is_uuid_v7(std::str::from_utf8(id).unwrap()));
        }
    }

    #[test]
    fn the_time_field_holds_milliseconds_then_their_fraction() {
        // 2026-12-06T00:00:00.123750Z: 123 ms, then 0.75 of a millisecond = 3072/4096.
        let now = Duration::new(1_796_515_200, 123_750_000);
        let time = time_field(now);
        assert_eq!(time >> 12, 1_796_515_200_123);
        assert_eq!(time & 0xfff, 3072);
        let uuid = uuid_v7(time, u64::MAX);
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos), (1_796_515_200, 123_000_000));
        // 1_796_515_200_123 ms is 0x01a2_48a6_7c7b; then version 7 and the fraction 0xc00.
        assert_eq!(
            uuid.hyphenated().to_string(),
            "01a248a6-7c7b-7c00-bfff-ffffffffffff"
        );
        assert_eq!(
            uuid_v7(time, 0).hyphenated().to_string(),
            "01a248a6-7c7b-7c00-8000-000000000000"
        );
    }

    #[test]
    fn the_time_field_never_repeats_or_goes_back() {
        let now = Duration::new(2_000_000_000, 999_999_999);
        let first = next_time(now);
        let same = next_time(now);
        let earlier = next_time(now - Duration::from_secs(5));
        assert_eq!(same, first + 1, "the same instant: one step later");
        assert_eq!(earlier, first + 2, "a clock gone back: still later");
        assert_eq!(first & 0xfff, 4095, "the last fraction of a millisecond");
        assert_eq!(
            same >> 12,
            (first >> 12) + 1,
            "the step carries into the ms"
        );
    }

    #[test]
    fn a_custom_header_is_used_and_a_bad_one_refused() {
        let mut request = Request::new("GET", "/");
        tag(&plugin("X-Correlation-Id"), &mut request);
        assert!(request.headers.contains("x-correlation-id"));
        assert!(!request.headers.contains("x-request-id"));
        let refused = RequestId::new(Config {
            header: "bad header".to_owned(),
        })
        .unwrap_err();
        assert!(refused.contains("`header`"), "{refused}");
        for name in ["Host", "content-length", "connection", "proxy-id"] {
            let refused = RequestId::new(Config {
                header: name.to_owned(),
            })
            .unwrap_err();
            assert!(refused.contains("`header`"), "{refused}");
        }
    }

    #[test]
    fn the_upstream_and_the_client_see_the_same_id() {
        // The crate has no serde_json of its own: the config is parsed from its text.
        let mut harness = Harness::<RequestId>::new("{}".parse().unwrap());
        harness.upstream(
            Response::new(200).with_header("x-request-id", "from-upstream"),
            "",
        );
        let outcome = harness.run(Request::new("GET", "/"));
        let sent = outcome.upstream_request().unwrap();
        let id = sent.headers.get_str("x-request-id").unwrap();
        assert!(is_uuid_v7(id), "{id}");
        assert_eq!(
            outcome.header("x-request-id"),
            Some(id),
            "the queued id replaces the upstream's"
        );
        let kept = harness.run(Request::new("GET", "/").with_header("x-request-id", "abc"));
        let sent = kept.upstream_request().unwrap();
        assert_eq!(sent.headers.get_str("x-request-id"), Some("abc"));
        assert_eq!(kept.header("x-request-id"), Some("abc"));
    }
}
