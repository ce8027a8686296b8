//! `jwt-auth`: only requests with a valid JSON Web Token (RFC 7519) reach the upstream.
//!
//! The token comes in `Authorization: Bearer TOKEN` (RFC 6750 §2.1; the header and the
//! scheme are configurable). It must be a compact JWS signed with one of the route's
//! `algorithms` (HS256/384/512 with `secret`; RS256/384/512, PS256/384/512, ES256,
//! ES384 and EdDSA with a public key from an inline `jwks` or one fetched from
//! `jwks_url`), unexpired (`exp`, required by default) and already valid (`nbf`), with
//! `leeway_seconds` of clock skew, and, when configured, from the `issuer` and for the
//! `audience`. `alg: none` is never accepted.
//!
//! A request without a token gets 401 with a bare `WWW-Authenticate: Bearer` challenge;
//! one with a bad token gets 401 with `error="invalid_token"` and an
//! `error_description`; several token headers get 400 `invalid_request`; a route whose
//! `jwks_url` cannot be fetched (and has no cached keys) answers 503. A valid token's
//! claims named in `claims_to_headers` are copied to request headers, replacing whatever
//! the client sent in them (a claim the token lacks removes the header), so the upstream
//! can trust them.
//!
//! ```toml
//! plugins = [{ name = "jwt-auth", config = { secret = "...32 bytes or more...", issuer = "https://idp.example", audience = "api", claims_to_headers = { sub = "x-user-id" } } }]
//! ```
//!
//! Keys are parsed once, when the route is loaded. Per request the plugin reads one
//! header, checks one signature and sets the claim headers. A valid public-key signature
//! is remembered for a minute in the host KV store (keyed by a hash of the route's
//! config and the token), and with `isolation = "worker"` a verified token is also
//! remembered in the instance; either way its claims and window are checked at every
//! use.

mod alg;
mod keys;
mod remote;
mod token;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use weir_plugin_sdk::host::{self, Level, kv};
use weir_plugin_sdk::{
    Action, EditError, Headers, LocalResponse, PhaseResult, Plugin, Request, is_header_name,
    is_header_value, is_removable_header_name, is_settable_header_name, plugin,
};

use crate::alg::{Alg, AlgSet};
use crate::keys::{HmacKeys, KeySet, Strictness, Verdict};
use crate::remote::Remote;
use crate::token::{Rules, Token, Window};

/// Verified tokens remembered per instance (with `isolation = "worker"`).
const CACHE_ENTRIES: usize = 128;
/// Longer tokens are verified every time, not remembered.
const CACHE_TOKEN_MAX: usize = 4096;
/// A remembered token (in the instance, or its signature in the KV store) is verified
/// again after this long, so a key dropped from a fetched JWKS stops being honoured
/// soon.
const CACHE_SECONDS: u64 = 60;

/// The plugin's configuration.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Accepted `iss` values (a string or a list); none: any issuer.
    #[serde(deserialize_with = "one_or_many")]
    issuer: Vec<String>,
    /// Accepted audiences (a string or a list); the token's `aud` must hold one.
    #[serde(deserialize_with = "one_or_many")]
    audience: Vec<String>,
    /// Accepted algorithms; default: every one the configured keys can verify.
    algorithms: Option<Vec<String>>,
    /// The HMAC secret (HS256/384/512), as text.
    secret: Option<String>,
    /// Whether `secret` is base64 (standard or URL-safe alphabet, padding optional).
    secret_base64: bool,
    /// An inline JWK set: a table, or JSON text.
    jwks: Option<Value>,
    /// Where to fetch the JWK set (an `http://` URL in the entry's `allowed_hosts`).
    jwks_url: Option<String>,
    /// How long a fetched set is used before it is refreshed.
    jwks_cache_seconds: u64,
    /// The shortest time between two fetches for a token whose key is unknown.
    jwks_min_refetch_seconds: u64,
    /// How long a fetch may take.
    jwks_timeout_ms: u64,
    /// Clock skew tolerated for `exp` and `nbf`.
    leeway_seconds: u64,
    /// Whether a token without `exp` is refused.
    require_exp: bool,
    /// Claim name → request header to copy it to.
    claims_to_headers: BTreeMap<String, String>,
    /// The header carrying the token.
    header: String,
    /// The auth scheme before the token (`""`: the header holds the bare token).
    scheme: String,
    /// The `realm` of the challenge, if any.
    realm: Option<String>,
    /// Whether the token's header goes on to the upstream.
    forward_token: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuer: Vec::new(),
            audience: Vec::new(),
            algorithms: None,
            secret: None,
            secret_base64: false,
            jwks: None,
            jwks_url: None,
            jwks_cache_seconds: 300,
            jwks_min_refetch_seconds: 10,
            jwks_timeout_ms: 5000,
            leeway_seconds: 60,
            require_exp: true,
            claims_to_headers: BTreeMap::new(),
            header: "authorization".to_owned(),
            scheme: "Bearer".to_owned(),
            realm: None,
            forward_token: true,
        }
    }
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

/// The plugin: keys parsed, rules and header names ready.
#[derive(Debug)]
pub struct JwtAuth {
    /// The token's header, lower-case.
    header: String,
    /// The scheme before the token, or `None` for a bare token.
    scheme: Option<String>,
    algorithms: AlgSet,
    hmac: Option<HmacKeys>,
    keys: Option<KeySet>,
    remote: Option<Remote>,
    rules: Rules,
    /// (claim, header) pairs; headers lower-case.
    claims: Vec<(String, String)>,
    /// The bare challenge: `Bearer` or `Bearer realm="..."`.
    challenge: String,
    forward_token: bool,
    min_refetch: u64,
    /// SHA-256 of the whole config: scopes the signature memo in the KV store (shared
    /// by every route using this plugin) to routes configured exactly like this one.
    fingerprint: [u8; 32],
    verified: Mutex<TokenCache>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No credentials of the scheme: 401 with a bare challenge (RFC 6750 §3.1).
    Missing,
    /// 401 `invalid_token`.
    Invalid(Cow<'static, str>),
    /// 400 `invalid_request`.
    BadRequest(&'static str),
    /// 503: no JWKS could be had from `jwks_url`.
    Unavailable,
}

impl Refusal {
    fn invalid(why: &'static str) -> Refusal {
        Refusal::Invalid(Cow::Borrowed(why))
    }
}

/// The JSON body of a refusal (RFC 6750 §3's error codes).
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// What a verified token contributes to requests: the claim header values (in
/// `claims` order) and its validity window.
#[derive(Debug, Clone)]
struct Verified {
    values: Arc<[Option<String>]>,
    window: Window,
    at: u64,
}

/// Recently verified tokens, by a hash of their text ([`token_hash`]); a hit still
/// compares the whole text ([`same_text`]). Hash and comparison go a word at a time:
/// a token is hundreds of bytes, and wasm's `memcmp` goes byte by byte.
#[derive(Default)]
struct TokenCache {
    tokens: BTreeMap<u64, (Box<[u8]>, Verified)>,
}

/// An FxHash-style hash of `text`, eight bytes at a step. Only verified tokens are
/// stored, so no one chooses keys to collide; two that do share a slot (the later one
/// is kept).
fn token_hash(text: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
    let mut words = text.chunks_exact(8);
    let mut hash = step(0, text.len() as u64);
    for word in &mut words {
        hash = step(
            hash,
            u64::from_le_bytes(word.try_into().expect("eight bytes")),
        );
    }
    words
        .remainder()
        .iter()
        .fold(hash, |hash, &byte| step(hash, u64::from(byte)))
}

/// Whether `a` and `b` are the same text, compared in full (no early exit) eight bytes
/// at a step.
fn same_text(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut diff = (&mut x)
        .zip(&mut y)
        .fold(0, |diff, (p, q)| diff | (word(p) ^ word(q)));
    for (p, q) in x.remainder().iter().zip(y.remainder()) {
        diff |= u64::from(p ^ q);
    }
    diff == 0
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenCache({} tokens)", self.tokens.len())
    }
}

/// A claim as header text: strings as they are, numbers and booleans as JSON writes
/// them, a list of those joined with `,`. Objects, null, and values that cannot be a
/// header value give `None`.
fn header_text(value: &Value) -> Option<String> {
    fn scalar(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    is_header_value(&text).then_some(text)
}

/// Seconds since the Unix epoch at `time`.
fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The smallest HMAC key for `alg`: as long as its hash (RFC 7518 §3.2).
fn hmac_min_len(alg: Alg) -> usize {
    match alg {
        Alg::Hs384 => 48,
        Alg::Hs512 => 64,
        _ => 32,
    }
}

/// The secret's bytes.
fn secret_bytes(secret: &str, base64: bool) -> Result<Vec<u8>, String> {
    if !base64 {
        return Ok(secret.as_bytes().to_vec());
    }
    let trimmed = secret.trim_end_matches('=');
    let engine = if trimmed.contains(['-', '_']) {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    engine
        .decode(trimmed)
        .map_err(|e| format!("`secret`: not base64 ({e}) though `secret_base64` is set"))
}

/// The inline JWKS as JSON bytes: JSON text, or a table.
fn jwks_json(jwks: &Value) -> Result<Vec<u8>, String> {
    match jwks {
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Object(_) => Ok(serde_json::to_vec(jwks).expect("a JSON value serialises")),
        _ => Err("`jwks`: must be a JWK set, as a table or as JSON text".to_owned()),
    }
}

/// The accepted algorithms: the configured ones, checked against the key material,
/// or by default every one the material can verify.
fn algorithms(
    config: &Config,
    secret: Option<&[u8]>,
    inline: Option<&KeySet>,
) -> Result<AlgSet, String> {
    let has_public = inline.is_some() || config.jwks_url.is_some();
    let public_key = if inline.is_some() { "jwks" } else { "jwks_url" };
    let Some(names) = &config.algorithms else {
        if secret.is_none() && !has_public {
            return Err(
                "`secret`, `jwks` or `jwks_url`: one is required (the keys to verify tokens with)"
                    .to_owned(),
            );
        }
        let mut set = AlgSet::EMPTY;
        if let Some(secret) = secret {
            for alg in [Alg::Hs256, Alg::Hs384, Alg::Hs512] {
                if secret.len() >= hmac_min_len(alg) {
                    set.insert(alg);
                }
            }
            if set.is_empty() {
                return Err(format!(
                    "`secret`: HS256 needs a secret of at least 32 bytes (RFC 7518 §3.2); this one has {}",
                    secret.len()
                ));
            }
        }
        let public = match inline {
            Some(keys) => keys.algorithms(),
            None if has_public => AlgSet::asymmetric(),
            None => AlgSet::EMPTY,
        };
        return Ok(set.iter().chain(public.iter()).collect());
    };
    if names.is_empty() {
        return Err("`algorithms`: must not be empty".to_owned());
    }
    let mut set = AlgSet::EMPTY;
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            return Err("`algorithms`: \"none\" (unsigned tokens) is never accepted".to_owned());
        }
        let alg = Alg::parse(name).ok_or_else(|| {
            let all: AlgSet = Alg::ALL.into_iter().collect();
            format!("`algorithms`: unknown algorithm {name:?} (supported: {all})")
        })?;
        if alg.is_hmac() {
            let Some(secret) = secret else {
                return Err(format!("`secret`: required by {alg} in `algorithms`"));
            };
            if secret.len() < hmac_min_len(alg) {
                return Err(format!(
                    "`secret`: {alg} needs a secret of at least {} bytes (RFC 7518 §3.2); this one has {}",
                    hmac_min_len(alg),
                    secret.len()
                ));
            }
        } else if !has_public {
            return Err(format!(
                "`jwks` or `jwks_url`: required by {alg} in `algorithms`"
            ));
        } else if let Some(keys) = inline
            && !keys.algorithms().contains(alg)
        {
            return Err(format!(
                "`algorithms`: no key in `jwks` verifies {alg} (they verify: {})",
                keys.algorithms()
            ));
        }
        set.insert(alg);
    }
    if secret.is_some() && !set.iter().any(Alg::is_hmac) {
        return Err("`secret`: set, but `algorithms` has no HS algorithm".to_owned());
    }
    if has_public && set.iter().all(Alg::is_hmac) {
        return Err(format!(
            "`{public_key}`: set, but `algorithms` has no public-key algorithm"
        ));
    }
    Ok(set)
}

#[plugin]
impl Plugin for JwtAuth {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        let fingerprint =
            Sha256::digest(serde_json::to_vec(&config).expect("a config serialises")).into();
        if !is_header_name(&config.header) {
            return Err(format!(
                "`header`: {:?} is not a valid HTTP header name",
                config.header
            ));
        }
        let header = config.header.to_ascii_lowercase();
        if !config.forward_token && !is_removable_header_name(&header) {
            return Err(format!(
                "`header`: {header:?} cannot be removed by a plugin, so `forward_token` must stay true"
            ));
        }
        let scheme = match config.scheme.as_str() {
            "" => None,
            s if is_header_name(s) => Some(s.to_owned()),
            s => return Err(format!("`scheme`: {s:?} is not a valid auth scheme")),
        };
        let mut challenge = scheme.clone().unwrap_or_else(|| "Bearer".to_owned());
        if let Some(realm) = &config.realm {
            if realm.contains(['"', '\\']) || !is_header_value(realm) {
                return Err(
                    "`realm`: must not contain quotes, backslashes or control characters"
                        .to_owned(),
                );
            }
            challenge.push_str(&format!(" realm=\"{realm}\""));
        }

        let secret = match &config.secret {
            Some(s) if s.is_empty() => return Err("`secret`: must not be empty".to_owned()),
            Some(s) => Some(secret_bytes(s, config.secret_base64)?),
            None if config.secret_base64 => {
                return Err("`secret_base64`: set, but there is no `secret`".to_owned());
            }
            None => None,
        };
        if config.jwks.is_some() && config.jwks_url.is_some() {
            return Err("`jwks_url`: set either `jwks` or `jwks_url`, not both".to_owned());
        }
        let inline = match &config.jwks {
            None => None,
            Some(jwks) => {
                let keys = KeySet::parse(&jwks_json(jwks)?, Strictness::Strict)
                    .map_err(|e| format!("`jwks`: {e}"))?;
                if keys.is_empty() {
                    return Err("`jwks`: no usable signing key (RSA of 2048 bits or more, EC P-256 or P-384, or OKP Ed25519, not `use` = \"enc\")".to_owned());
                }
                Some(keys)
            }
        };
        let remote = match &config.jwks_url {
            None => None,
            Some(url) => {
                let host = url
                    .strip_prefix("http://")
                    .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
                    .ok_or_else(|| {
                        format!("`jwks_url`: {url:?} is not an http:// URL (outbound calls are plain HTTP)")
                    })?;
                if host.is_empty() {
                    return Err(format!("`jwks_url`: {url:?} has no host"));
                }
                if config.jwks_cache_seconds == 0 {
                    return Err("`jwks_cache_seconds`: must be at least 1".to_owned());
                }
                if !(1..=60_000).contains(&config.jwks_timeout_ms) {
                    return Err("`jwks_timeout_ms`: must be 1 to 60000".to_owned());
                }
                Some(Remote::new(
                    url,
                    config.jwks_cache_seconds,
                    Duration::from_secs(config.jwks_min_refetch_seconds),
                    Duration::from_millis(config.jwks_timeout_ms),
                ))
            }
        };
        let algorithms = algorithms(&config, secret.as_deref(), inline.as_ref())?;

        let mut claims = Vec::new();
        for (claim, target) in &config.claims_to_headers {
            if claim.is_empty() {
                return Err("`claims_to_headers`: a claim name is empty".to_owned());
            }
            if !is_header_name(target) {
                return Err(format!(
                    "`claims_to_headers`: {target:?} (for claim {claim:?}) is not a valid HTTP header name"
                ));
            }
            let target = target.to_ascii_lowercase();
            if !is_settable_header_name(&target) {
                return Err(format!(
                    "`claims_to_headers`: {target:?} (for claim {claim:?}) is a header only the gateway sets"
                ));
            }
            if target == header {
                return Err(format!(
                    "`claims_to_headers`: {target:?} is the header the token comes in"
                ));
            }
            if claims.iter().any(|(_, h)| *h == target) {
                return Err(format!(
                    "`claims_to_headers`: header {target:?} is the target of two claims"
                ));
            }
            claims.push((claim.clone(), target));
        }

        Ok(JwtAuth {
            header,
            scheme,
            algorithms,
            hmac: secret.as_deref().map(HmacKeys::new),
            keys: inline,
            remote,
            rules: Rules {
                issuers: config.issuer,
                audiences: config.audience,
                leeway: config.leeway_seconds,
                require_exp: config.require_exp,
            },
            claims,
            challenge,
            forward_token: config.forward_token,
            min_refetch: config.jwks_min_refetch_seconds,
            fingerprint,
            verified: Mutex::default(),
        })
    }

    fn header_reads(&self) -> Vec<&str> {
        vec![&self.header]
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _: &mut ()) -> PhaseResult {
        // The request's time, which the gateway sends with the call (no clock read).
        let now = unix_secs(request.received_at());
        match self.authenticate(&request.headers, now) {
            Ok(values) => {
                self.forward(request, &values)?;
                Ok(Action::Continue)
            }
            Err(refusal) => Ok(Action::Respond(self.refuse(refusal))),
        }
    }
}

impl JwtAuth {
    /// The claim header values of the request's valid token at `now`, or why there is
    /// none.
    fn authenticate(
        &self,
        headers: &Headers<'_>,
        now: u64,
    ) -> Result<Arc<[Option<String>]>, Refusal> {
        // Counted, then lent: the token (hundreds of bytes) is not copied.
        let value = match headers.count(&self.header) {
            0 => None,
            1 => headers.get(&self.header),
            _ => return Err(Refusal::BadRequest("the request has several token headers")),
        };
        let token = self.token(value)?;
        if let Some(values) = self.recall(token, now)? {
            return Ok(values);
        }
        let verified = self.verify(token, now)?;
        let values = verified.values.clone();
        self.remember(token, verified, now);
        Ok(values)
    }

    /// The token in the header's one value (`None`: no such header).
    fn token<'v>(&self, value: Option<&'v [u8]>) -> Result<&'v str, Refusal> {
        let Some(value) = value else {
            return Err(Refusal::Missing);
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| Refusal::invalid("the token is not ASCII"))?
            .trim_matches([' ', '\t']);
        let token = match &self.scheme {
            None => value,
            Some(scheme) => {
                let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
                if !given.eq_ignore_ascii_case(scheme) {
                    return Err(Refusal::Missing);
                }
                rest.trim_start_matches(' ')
            }
        };
        if token.is_empty() {
            return Err(match self.scheme {
                None => Refusal::Missing,
                Some(_) => Refusal::invalid("the token is empty"),
            });
        }
        Ok(token)
    }

    /// The values of a token verified recently in this instance, if it is still in its
    /// window; its refusal if it no longer is.
    fn recall(&self, token: &str, now: u64) -> Result<Option<Arc<[Option<String>]>>, Refusal> {
        let cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.tokens.get(&token_hash(token.as_bytes())) {
            Some((text, seen))
                if same_text(text, token.as_bytes())
                    && now.saturating_sub(seen.at) < CACHE_SECONDS =>
            {
                seen.window
                    .check(now, self.rules.leeway)
                    .map_err(Refusal::invalid)?;
                Ok(Some(seen.values.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Remembers a verified token, making room if needed: expired entries go first,
    /// then the first by hash (an arbitrary one).
    fn remember(&self, token: &str, verified: Verified, now: u64) {
        if token.len() > CACHE_TOKEN_MAX {
            return;
        }
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.tokens.len() >= CACHE_ENTRIES {
            let leeway = self.rules.leeway;
            cache.tokens.retain(|_, (_, seen)| {
                now.saturating_sub(seen.at) < CACHE_SECONDS
                    && seen.window.check(now, leeway).is_ok()
            });
            if cache.tokens.len() >= CACHE_ENTRIES {
                cache.tokens.pop_first();
            }
        }
        let text = Box::from(token.as_bytes());
        cache
            .tokens
            .insert(token_hash(token.as_bytes()), (text, verified));
    }

    /// Verifies `text` at `now`: its form, algorithm, signature, then its claims.
    fn verify(&self, text: &str, now: u64) -> Result<Verified, Refusal> {
        let token = Token::parse(text).map_err(Refusal::invalid)?;
        let alg = self.accepted(&token.header.alg)?;
        let input = token.signing_input.as_bytes();
        if alg.is_hmac() {
            let valid = self
                .hmac
                .as_ref()
                .is_some_and(|keys| keys.verify(alg, input, &token.signature));
            if !valid {
                return Err(Refusal::invalid("the token's signature is invalid"));
            }
        } else {
            // A public-key check costs tens to hundreds of microseconds; a valid one is
            // remembered across instances (`isolation = "request"` starts each request
            // with an empty instance cache) by a hash of config and token.
            let memo = self.memo_key(text);
            if kv::get(&memo).is_none() {
                self.verify_public(
                    alg,
                    token.header.kid.as_deref(),
                    input,
                    &token.signature,
                    now,
                )?;
                // A memo the store has no room for only costs the next check again.
                let _ = kv::set(&memo, b"1", Some(Duration::from_secs(CACHE_SECONDS)));
            }
        }
        let claims = token.claims().map_err(Refusal::invalid)?;
        let window = self.rules.check(&claims, now).map_err(Refusal::invalid)?;
        let values = self
            .claims
            .iter()
            .map(|(claim, _)| claims.get(claim).and_then(header_text))
            .collect();
        Ok(Verified {
            values,
            window,
            at: now,
        })
    }

    /// The KV key remembering that `token`'s signature is valid under this config.
    fn memo_key(&self, token: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.fingerprint)
            .chain_update(token.as_bytes())
            .finalize();
        let mut key = String::with_capacity(4 + 64);
        key.push_str("sig:");
        for byte in digest {
            key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        key
    }

    /// The token's algorithm, if the route accepts it.
    fn accepted(&self, name: &str) -> Result<Alg, Refusal> {
        if name.eq_ignore_ascii_case("none") {
            return Err(Refusal::invalid(
                "unsigned tokens (alg none) are not accepted",
            ));
        }
        match Alg::parse(name) {
            Some(alg) if self.algorithms.contains(alg) => Ok(alg),
            Some(alg) => Err(Refusal::Invalid(
                format!("the token's algorithm {alg} is not accepted").into(),
            )),
            None => Err(Refusal::invalid("the token's algorithm is not supported")),
        }
    }

    /// Checks a public-key signature with the inline keys, or the fetched ones
    /// (fetching them again, rate-limited, when no key fits the token).
    fn verify_public(
        &self,
        alg: Alg,
        kid: Option<&str>,
        input: &[u8],
        signature: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        let verdict = match (&self.keys, &self.remote) {
            (Some(keys), _) => keys.verify(kid, alg, input, signature),
            (None, Some(remote)) => {
                let current = remote.current(now).ok_or(Refusal::Unavailable)?;
                let verdict =
                    KeySet::parse_for(&current.body, kid, alg).verify(kid, alg, input, signature);
                match verdict {
                    Verdict::NoKey if !current.fetched => match remote.refetch(now) {
                        Some(body) => {
                            KeySet::parse_for(&body, kid, alg).verify(kid, alg, input, signature)
                        }
                        None => verdict,
                    },
                    _ => verdict,
                }
            }
            (None, None) => Verdict::NoKey,
        };
        match verdict {
            Verdict::Valid => Ok(()),
            Verdict::Invalid => Err(Refusal::invalid("the token's signature is invalid")),
            Verdict::NoKey => Err(Refusal::invalid("the token's signing key is unknown")),
        }
    }

    /// Sets (or clears) the claim headers, and drops the token if it is not forwarded.
    /// The names were checked in `new` and the values by [`header_text`], so the
    /// gateway has no reason to refuse an edit; if it does, the call fails (the route's
    /// `on_error` decides) rather than letting a client's copy of a claim header through.
    fn forward(
        &self,
        request: &mut Request<'_>,
        values: &[Option<String>],
    ) -> Result<(), EditError> {
        for ((_, header), value) in self.claims.iter().zip(values) {
            match value {
                Some(value) => request.headers.set(header, value)?,
                None => request.headers.remove(header)?,
            }
        }
        if !self.forward_token {
            request.headers.remove(&self.header)?;
        }
        Ok(())
    }

    /// The response for a refused request.
    fn refuse(&self, refusal: Refusal) -> LocalResponse {
        let (status, error, description): (u16, &str, Cow<'_, str>) = match &refusal {
            Refusal::Missing => (
                401,
                "missing_token",
                match &self.scheme {
                    Some(scheme) => {
                        format!("a {scheme} token in the {} header is required", self.header).into()
                    }
                    None => format!("a token in the {} header is required", self.header).into(),
                },
            ),
            Refusal::Invalid(why) => (401, "invalid_token", Cow::Borrowed(&**why)),
            Refusal::BadRequest(why) => (400, "invalid_request", Cow::Borrowed(*why)),
            Refusal::Unavailable => (
                503,
                "temporarily_unavailable",
                Cow::Borrowed("the keys to verify the token with cannot be fetched"),
            ),
        };
        host::log(Level::Debug, &format!("request refused: {description}"));
        let body = ErrorBody {
            error,
            error_description: &description,
        };
        let response = LocalResponse::json(status, &body).header("cache-control", "no-store");
        match refusal {
            Refusal::Missing => response.header("www-authenticate", &self.challenge),
            Refusal::Invalid(_) | Refusal::BadRequest(_) => {
                let separator = if self.challenge.contains(' ') {
                    ","
                } else {
                    ""
                };
                response.header(
                    "www-authenticate",
                    format!(
                        "{}{separator} error=\"{error}\", error_description=\"{description}\"",
                        self.challenge
                    ),
                )
            }
            Refusal::Unavailable => {
                response.header("retry-after", self.min_refetch.max(1).to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
