// The probe test plugin's source, shared by `probe` and `probe-local` (see their
// crate docs).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use weir_plugin_sdk::host::{self, kv};
use weir_plugin_sdk::{
    Action, Error, HeaderEdit, LocalResponse, Phase, PhaseResult, Plugin, Request, Response,
    StaticEdits, plugin,
};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Config {
    mode: String,
    tag: String,
    path: Option<String>,
    url: String,
    size: Option<usize>,
}

pub struct Probe {
    config: Config,
}

static REMEMBERED: AtomicU64 = AtomicU64::new(0);

/// Requests this instance has served (the `secret` mode reports it, so a test knows
/// two requests met the same instance).
static SERVED: AtomicU64 = AtomicU64::new(0);

/// This instance's number (0 until the `instance` mode first runs in it): taken from a
/// shared KV counter, so no two instances of one gateway share one.
static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// Per-request state: what the `secret` mode keeps between its two phases.
#[derive(Default)]
pub struct Secret {
    secret: String,
}

#[plugin]
impl Plugin for Probe {
    type Config = Config;
    type State = Secret;

    fn new(config: Config) -> Result<Self, String> {
        if config.mode == "bad-config" {
            return Err("mode `bad-config` is refused on purpose".into());
        }
        if config.mode.starts_with("init-") {
            let _ = kv::increment("inits", 1, None);
        }
        if config.mode == "init-print" {
            println!("probe initialised");
        }
        if config.mode == "init-slow" {
            // Busy for `size` iterations (default 20 million, tens of milliseconds):
            // longer than a request's timeout, well within the load budget.
            let mut n: u64 = 0;
            for _ in 0..config.size.unwrap_or(20_000_000) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if config.mode == "init-loop" {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if config.mode == "init-hashmap" {
            // std's HashMap seeds itself from wasi:random: no snapshot can hold that.
            std::hint::black_box(std::collections::HashMap::<u8, u8>::new());
        }
        Ok(Probe { config })
    }

    /// `instance` runs in the request phase only; every other mode in both.
    fn phases(&self) -> &[Phase] {
        match self.config.mode.as_str() {
            "instance" => &[Phase::RequestHeaders],
            _ => &[Phase::RequestHeaders, Phase::ResponseHeaders],
        }
    }

    /// `reads`: the gateway sends these headers with the call (any case here).
    fn header_reads(&self) -> Vec<&str> {
        match self.config.mode.as_str() {
            "reads" => vec!["x-read", "X-Multi", "x-added"],
            _ => Vec::new(),
        }
    }

    /// `declare-bad`: declares an edit the gateway must refuse (a name with a space).
    /// `init-print` (whose `new` prints, so no snapshot holds it) declares a response
    /// header.
    fn static_edits(&self) -> StaticEdits {
        match self.config.mode.as_str() {
            "init-print" => StaticEdits {
                request: Vec::new(),
                response: vec![HeaderEdit::Set("x-declared".into(), b"init-print".to_vec())],
            },
            "declare-bad" => StaticEdits {
                request: vec![HeaderEdit::Set("bad name".into(), b"1".to_vec())],
                response: Vec::new(),
            },
            _ => StaticEdits::default(),
        }
    }

    fn on_request_headers(&self, request: &mut Request, state: &mut Secret) -> PhaseResult {
        match self.config.mode.as_str() {
            "deny" => {
                return Ok(Action::Respond(
                    LocalResponse::json(
                        403,
                        &serde_json::json!({ "error": "denied", "tag": self.config.tag }),
                    )
                    .header("x-denied-by", &self.config.tag),
                ));
            }
            "edit" => {
                request.headers.set("x-added", "yes")?;
                request.headers.remove("x-remove-me")?;
                // A read after edits sees them (the SDK sends its pending edits first).
                let sees = request.headers.get_str("x-added") == Some("yes")
                    && !request.headers.contains("x-remove-me")
                    && request.headers.get_all("x-keep") == [b"2".to_vec()];
                request.headers.set("x-read-back", if sees { "yes" } else { "no" })?;
                // Invalid edits are refused (and logged by the gateway); the plugin sees
                // the refusals and reports them, and the request goes on.
                let refused = refusals(&[
                    request.headers.set("bad name", "v"),
                    request.headers.append("x-bad-value", "a\r\nb"),
                ]);
                request.headers.set("x-refused-edits", refused.to_string())?;
                if let Some(path) = &self.config.path {
                    request.set_path(path.clone())?;
                }
            }
            "reads" => {
                // Headers the gateway sent with the call, one it did not (`x-other`),
                // and each read again after an edit of it.
                let joined = |values: Vec<Vec<u8>>| {
                    let values: Vec<String> = values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    values.join(",")
                };
                let text = |request: &Request, name: &str| {
                    request.headers.get_str(name).unwrap_or("-").to_owned()
                };
                let before = [
                    text(request, "X-Read"),
                    joined(request.headers.get_all("x-multi")),
                    text(request, "x-other"),
                    text(request, "x-added"),
                ];
                request.headers.set("X-Read", "changed")?;
                request.headers.append("x-multi", "c")?;
                request.headers.remove("x-other")?;
                let after = [
                    text(request, "x-read"),
                    joined(request.headers.get_all("X-MULTI")),
                    text(request, "x-other"),
                    request.headers.all().len().to_string(),
                ];
                request
                    .headers
                    .set("x-reads", format!("{} / {}", before.join("|"), after.join("|")))?;
                // The request's time came with the call: near the guest's own clock.
                let gap = std::time::SystemTime::now()
                    .duration_since(request.received_at())
                    .unwrap_or_default();
                let recent = if gap.as_secs() < 60 { "recent" } else { "off" };
                request.headers.set("x-received", recent)?;
                // A refused edit is an error at once; it is not made.
                let refused = request.headers.set("x-bad", "a\nb").is_err();
                request.response_headers.set("x-reads-refused", refused.to_string())?;
            }
            "queue" => queue(request, &self.config.tag)?,
            "queue-deny" => {
                queue(request, &self.config.tag)?;
                return Ok(Action::Respond(
                    LocalResponse::new(403).header("x-denied-by", &self.config.tag),
                ));
            }
            "queue-trap" => {
                queue(request, &self.config.tag)?;
                core::arch::wasm32::unreachable()
            }
            "queue-fail" => {
                queue(request, &self.config.tag)?;
                return Err(Error::msg("the probe fails on purpose after queueing"));
            }
            "fail" => return Err(Error::msg("the probe fails on purpose")),
            "secret" => {
                // What this request's state held before it: always nothing, even on an
                // instance that served an earlier request with a secret.
                let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                request.headers.set("x-served", served.to_string())?;
                request
                    .response_headers
                    .set("x-state-before", format!("[{}]", state.secret))?;
                if let Some(secret) = request.headers.get_str("x-secret") {
                    state.secret = secret.to_owned();
                }
                request.headers.remove("x-secret")?;
            }
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("the probe panics on purpose"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let depth = recurse(std::hint::black_box(1));
                request.headers.set("x-depth", depth.to_string())?;
            }
            "huge" => {
                // A local answer of `config.size` bytes (default 8 MiB).
                let size = self.config.size.unwrap_or(8 << 20);
                return Ok(Action::Respond(LocalResponse::new(200).body(vec![b'x'; size])));
            }
            "forbidden" => {
                // Each is the gateway's to decide, and refused: the plugin sees five
                // refusals.
                let refused = refusals(&[
                    request.headers.set("content-length", "0"),
                    request.headers.set("transfer-encoding", "chunked"),
                    request.headers.set("host", "evil.example"),
                    request.headers.remove("host"),
                    request.response_headers.set("content-length", "1"),
                ]);
                request.headers.set("x-after-forbidden", "yes")?;
                request.headers.set("x-refused-edits", refused.to_string())?;
            }
            "forbidden-respond" => {
                return Ok(Action::Respond(
                    LocalResponse::new(200)
                        .header("content-length", "1000")
                        .header("transfer-encoding", "chunked")
                        .header("connection", "close")
                        .header("x-kept", "yes")
                        .body("short"),
                ));
            }
            "log-flood" => {
                // Far past the log budget, with lines far past the longest kept.
                let long = "y".repeat(64 * 1024);
                for i in 0..self.config.size.unwrap_or(5_000) {
                    host::log(host::Level::Warn, &format!("flood {i} {long}"));
                }
            }
            #[cfg(feature = "fetch")]
            "call-loop" => {
                // Calls until the gateway refuses, then reports how many got through.
                let mut made = 0;
                let refusal = loop {
                    match host::http::call(&host::http::OutboundRequest::get(&self.config.url)) {
                        Ok(_) => made += 1,
                        Err(e) => break e.to_string(),
                    }
                    if made > 1_000 {
                        break "never refused".to_owned();
                    }
                };
                request.headers.set("x-calls-made", made.to_string())?;
                request.headers.set("x-calls-refusal", refusal)?;
            }
            // Behind `fetch` too: std's files and sockets import WASI interfaces that can
            // wait, which would put every call of `probe-local` on a fiber.
            #[cfg(feature = "fetch")]
            "escape" => {
                // Everything outside the imports must fail from inside the sandbox.
                let outcome = |r: Result<String, std::io::Error>| match r {
                    Ok(what) => format!("allowed: {what}"),
                    Err(e) => format!("refused: {e}"),
                };
                let file = std::fs::read_to_string("/etc/hostname").map(|_| "read".to_owned());
                request.headers.set("x-escape-file", outcome(file))?;
                let dir = std::fs::read_dir(".").map(|d| format!("{} entries", d.count()));
                request.headers.set("x-escape-dir", outcome(dir))?;
                let created = std::fs::write("/tmp/weir-escape", b"x").map(|()| "written".to_owned());
                request.headers.set("x-escape-write", outcome(created))?;
                request.headers.set("x-escape-env", std::env::vars_os().count().to_string())?;
                request.headers.set("x-escape-args", std::env::args_os().count().to_string())?;
                let tcp = std::net::TcpStream::connect(self.config.url.as_str())
                    .map(|_| "connected".to_owned());
                request.headers.set("x-escape-tcp", outcome(tcp))?;
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").map(|_| "bound".to_owned());
                request.headers.set("x-escape-udp", outcome(udp))?;
                let listen =
                    std::net::TcpListener::bind("127.0.0.1:0").map(|_| "listening".to_owned());
                request.headers.set("x-escape-listen", outcome(listen))?;
                let lookup = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
                    .map(|a| format!("{} addresses", a.count()));
                request.headers.set("x-escape-dns", outcome(lookup))?;
            }
            "count" => {
                let n = kv::increment("hits", 1, None).unwrap_or(-1);
                request.headers.set("x-count", n.to_string())?;
            }
            "kv-fill" => {
                // Writes distinct keys until the store refuses; reports how many it took.
                let mut written = 0u64;
                let refused = loop {
                    let key = format!("fill-{}-{written}", self.config.tag);
                    match kv::set(&key, &[7u8; 100], None) {
                        Ok(()) => written += 1,
                        Err(full) => break full.to_string(),
                    }
                    if written >= 10_000_000 {
                        break "never refused".to_owned();
                    }
                };
                request.headers.set("x-kv-written", written.to_string())?;
                request.headers.set("x-kv-refused", refused)?;
                // What is there can still be read and counted.
                let first = kv::get(&format!("fill-{}-0", self.config.tag)).map_or(0, |v| v.len());
                request.headers.set("x-kv-first", first.to_string())?;
            }
            #[cfg(feature = "fetch")]
            "fetch" => {
                match host::http::call(&host::http::OutboundRequest::get(&self.config.url)) {
                    Ok(response) => {
                        request
                            .headers
                            .set("x-fetch-status", response.status.to_string())?;
                        request.headers.set("x-fetch-body", response.body)?;
                    }
                    Err(e) => request.headers.set("x-fetch-error", e.to_string())?,
                }
            }
            "sleep" => std::thread::sleep(std::time::Duration::from_millis(20)),
            "print" => {
                for i in 0..200 {
                    println!("probe line {i}");
                }
                eprintln!("probe complains");
            }
            "init-count" | "init-print" => {
                let inits = kv::get("inits").unwrap_or_default();
                request.headers.set("x-inits", inits)?;
            }
            "connection" => {
                let scheme = request.scheme().to_owned();
                request.headers.set("x-seen-scheme", scheme)?;
                let authority = request.authority().to_owned();
                request.headers.set("x-seen-authority", authority)?;
                let client = request.client_address().to_owned();
                request.headers.set("x-seen-client", client)?;
                let cert = request
                    .headers
                    .get("x-forwarded-client-cert")
                    .unwrap_or_default()
                    .to_vec();
                request.headers.set("x-seen-client-cert", cert)?;
            }
            "hop-by-hop" => {
                // Each is refused: they describe the gateway's connections.
                let refused = refusals(&[
                    request.headers.set("connection", "close"),
                    request.headers.append("te", "gzip"),
                    request.headers.set("proxy-authorization", "Basic eA=="),
                ]);
                request.headers.set("x-after-hop", "yes")?;
                request.headers.set("x-refused-edits", refused.to_string())?;
            }
            #[cfg(feature = "fetch")]
            "fetch-state" => {
                // 1 in instance memory while the call is under way, 0 once it returns:
                // an instance whose call was abandoned still says 1.
                let before = REMEMBERED.swap(1, Ordering::Relaxed);
                request.headers.set("x-state-before", before.to_string())?;
                // Whether the call succeeds does not matter: the test abandons it.
                let _ = host::http::call(&host::http::OutboundRequest::get(&self.config.url));
                REMEMBERED.store(0, Ordering::Relaxed);
            }
            "dirty" => {
                // Leaves 7 in instance memory, then ends the call the way the request's
                // `x-then` asks: an instance that did not finish cleanly must never
                // serve another request, so the next one reports 0 again.
                let before = REMEMBERED.swap(7, Ordering::Relaxed);
                request.headers.set("x-state-before", before.to_string())?;
                match request.headers.get_str("x-then").unwrap_or_default() {
                    "trap" => core::arch::wasm32::unreachable(),
                    "loop" => loop {
                        std::hint::black_box(&before);
                    },
                    "fail" => return Err(Error::msg("the probe fails on purpose")),
                    // A host call the gateway refuses (no allowed hosts), passed on.
                    #[cfg(feature = "fetch")]
                    "host" => {
                        host::http::call(&host::http::OutboundRequest::get(&self.config.url))?;
                    }
                    _ => {}
                }
            }
            "instance" => {
                if INSTANCE.load(Ordering::Relaxed) == 0 {
                    let number = kv::increment("instances", 1, None)?;
                    INSTANCE.store(number.max(1) as u64, Ordering::Relaxed);
                }
                let number = INSTANCE.load(Ordering::Relaxed);
                request.headers.set("x-instance", number.to_string())?;
            }
            "state" => {
                let before = REMEMBERED.swap(7, Ordering::Relaxed);
                request.headers.set("x-state-before", before.to_string())?;
            }
            "cache" => {
                // Steers the route's response cache from the request's headers.
                if let Some(part) = request.headers.get_str("x-cache-part").map(str::to_owned) {
                    request.cache_key_append(&part)?;
                }
                if request.headers.contains("x-keep-out") {
                    request.set_uncacheable()?;
                }
                if request.headers.contains("x-then-fail") {
                    return Err(Error::msg("the probe fails on purpose after steering"));
                }
            }
            _ => {
                let chain = request.headers.get_str("x-chain").unwrap_or_default();
                let chain = if chain.is_empty() {
                    self.config.tag.clone()
                } else {
                    format!("{chain},{}", self.config.tag)
                };
                request.headers.set("x-chain", chain)?;
                host::log(
                    host::Level::Debug,
                    &format!("probe {} saw {}", self.config.tag, request.path()),
                );
            }
        }
        Ok(Action::Continue)
    }

    fn on_response_headers(
        &self,
        request: &Request,
        response: &mut Response,
        state: &mut Secret,
    ) -> PhaseResult {
        match self.config.mode.as_str() {
            "edit" => {
                response.headers.set("x-resp-added", "yes")?;
                response.headers.remove("x-upstream")?;
                // The request as the request phases left it, read-only here.
                response.headers.set("x-seen-path", request.path())?;
                let added = request.headers.get("x-added").unwrap_or_default().to_vec();
                response.headers.set("x-seen-added", added)?;
            }
            "queue" => {
                // The edits this plugin queued were applied just before this call.
                let seen = response.headers.get("x-queued-set").unwrap_or_default().to_vec();
                response.headers.set(&format!("x-seen-queued-{}", self.config.tag), seen)?;
            }
            "secret" => {
                // The secret the request phase kept, carried in this request's state.
                response.headers.set("x-state-secret", &state.secret)?;
            }
            "cache" => {
                // A response the upstream marks personal is kept out of the cache.
                if response.headers.contains("x-personal") {
                    response.set_uncacheable()?;
                }
            }
            "deny" | "trap" | "panic" | "loop" | "oom" | "count" | "state" | "fetch" | "fetch-state" | "dirty"
            | "print" | "sleep"
            | "hop-by-hop" | "recurse" | "huge" | "forbidden" | "forbidden-respond" | "log-flood"
            | "call-loop" | "kv-fill" | "escape"
            | "init-count" | "init-print" | "connection" | "fail" | "instance" => {}
            _ => {
                let chain = response
                    .headers
                    .get_str("x-chain-response")
                    .unwrap_or_default();
                let chain = if chain.is_empty() {
                    self.config.tag.clone()
                } else {
                    format!("{chain},{}", self.config.tag)
                };
                response.headers.set("x-chain-response", chain)?;
            }
        }
        Ok(Action::Continue)
    }
}

/// Recurses until the stack runs out (the black boxes keep every frame).
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(std::hint::black_box(frame[63] + 1)) + std::hint::black_box(1)
}

/// Queues response edits from a request phase: an append, a set, a default, a removal
/// of the upstream's `x-upstream`, and an invalid one (refused; the gateway logs it).
fn queue(request: &mut Request, tag: &str) -> Result<(), Error> {
    request.response_headers.append("x-queued", tag)?;
    request.response_headers.set("x-queued-set", tag)?;
    request.response_headers.set_if_absent("x-queued-default", tag)?;
    request.response_headers.remove("x-upstream")?;
    if request.response_headers.set("bad name", tag).is_ok() {
        return Err(Error::msg("an invalid queued edit was accepted"));
    }
    Ok(())
}

/// How many of these edits the gateway refused.
fn refusals(edits: &[Result<(), weir_plugin_sdk::EditError>]) -> usize {
    edits.iter().filter(|r| r.is_err()).count()
}
