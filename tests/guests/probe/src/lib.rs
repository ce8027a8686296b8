//! A test plugin whose behaviour each route chooses with `config.mode`:
//!
//! - `tag` (default): appends `config.tag` to `x-chain` on the request and to
//!   `x-chain-response` on the response, so tests can see the order plugins ran in;
//! - `deny`: answers 403 with a JSON body and an `x-denied-by` header;
//! - `edit`: sets `x-added`, removes `x-remove-me` on the request, reads them back
//!   (`x-read-back: yes` when the read saw both edits), and tries two invalid edits; sets `x-resp-added`, removes `x-upstream`, and reports the request's path
//!   and `x-added` as `x-seen-path` / `x-seen-added` on the response; rewrites the path
//!   when `config.path` is set;
//! - `trap`: traps (unreachable) in the request phase;
//! - `panic`: panics in the request phase;
//! - `loop`: spins forever in the request phase;
//! - `oom`: allocates without bound in the request phase;
//! - `count`: increments the shared KV counter `hits` and reports it in `x-count`;
//! - `state`: remembers a value in instance memory and reports what it found before,
//!   so tests can prove instances are not shared between requests;
//! - `instance`: reports the instance's number (one per instance, from a KV counter) in
//!   `x-instance`; the only mode with a single phase (the request's headers);
//! - `fetch`: calls `config.url` with `http-call` and reports the outcome in
//!   `x-fetch-status` / `x-fetch-body` or `x-fetch-error`;
//! - `fetch-state`: reports `state`'s value in `x-state-before`, sets it to 1, calls
//!   `config.url` and sets it back to 0, so an instance reused after an abandoned call
//!   reports 1;
//! - `recurse`: recurses without bound in the request phase;
//! - `huge`: answers locally with a body of `config.size` bytes (8 MiB by default);
//! - `forbidden`: tries to set `content-length`, `transfer-encoding` and `host` on the
//!   request (and to remove `host`), and to queue a response `content-length`; then
//!   sets `x-after-forbidden`;
//! - `forbidden-respond`: answers locally with `content-length: 1000`,
//!   `transfer-encoding: chunked`, `connection: close`, `x-kept: yes` and a 5-byte body;
//! - `log-flood`: writes `config.size` (5000 by default) 64 KiB lines through `host.log`;
//! - `call-loop`: calls `config.url` until the gateway refuses, and reports the calls
//!   made and the refusal in `x-calls-made` / `x-calls-refusal`;
//! - `kv-fill`: writes distinct 100-byte values under `fill-TAG-N` until the store
//!   refuses, and reports the count, the refusal and the first value's length in
//!   `x-kv-written` / `x-kv-refused` / `x-kv-first`;
//! - `escape`: tries to read, list and write files, read the environment and arguments,
//!   connect to `config.url` (`host:port`), bind UDP and TCP sockets and resolve a name,
//!   and reports each outcome in an `x-escape-*` header;
//! - `print`: writes 200 lines to stdout and one to stderr;
//! - `sleep`: sleeps 20 ms in the request phase (which the gateway refuses: plugins may
//!   not wait);
//! - `bad-config`: `new` refuses the config;
//! - `init-count`: `new` increments the shared KV counter `inits`, and requests report it
//!   in `x-inits` (so tests see how often the plugin was built);
//! - `init-print`: as `init-count`, and `new` also prints (WASI), which rules out a
//!   pre-initialised snapshot;
//! - `cache`: appends the request's `x-cache-part` to the cache key, keeps the cache out
//!   of a request with `x-keep-out`, then fails if it has `x-then-fail`; keeps a
//!   response with `x-personal` out of the cache;
//! - `connection`: reports the request's scheme and `x-forwarded-client-cert` as it
//!   sees them, in `x-seen-scheme` / `x-seen-client-cert` on the request.
//!
//! This crate is built with the `fetch` feature: it imports `http-call`, so the gateway
//! runs it on a fiber. `probe-local` is the same source without it.

include!("../../probe.rs");
