//! Write plugins for the [Weir](https://github.com/weir-gateway/weir) HTTP gateway in
//! Rust.
//!
//! A plugin is a type that implements [`Plugin`] in a block marked [`#[plugin]`](plugin):
//! it gets typed configuration from the route that names it, and in each phase it
//! implements (an `on_*` method) it reads and edits the request or response, or answers
//! the client itself. It is compiled to a WebAssembly component and dropped into the
//! gateway's plugins directory as `NAME.wasm`.
//!
//! # A worked plugin
//!
//! A per-client quota: it counts each client's requests in the shared key-value store,
//! answers 429 with a JSON body over the limit, carries the count from the request
//! phase to the response in its per-request state, and logs slow answers.
//!
//! ```
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use weir_plugin_sdk::host::{self, kv};
//! use weir_plugin_sdk::{Action, LocalResponse, PhaseResult, Plugin, Request, Response, plugin};
//!
//! pub struct Quota {
//!     limit: i64,
//!     window: Duration,
//! }
//!
//! /// The route's `config = { ... }`; every field has a default, so the plugin also
//! /// loads with no config at all.
//! #[derive(Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! pub struct Config {
//!     limit: i64,
//!     window_seconds: u64,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { limit: 100, window_seconds: 60 }
//!     }
//! }
//!
//! /// What one request carries from phase to phase; no other request ever sees it.
//! #[derive(Default)]
//! pub struct State {
//!     used: i64,
//! }
//!
//! #[derive(Serialize)]
//! struct Refusal<'a> {
//!     error: &'a str,
//!     limit: i64,
//! }
//!
//! #[plugin]
//! impl Plugin for Quota {
//!     type Config = Config;
//!     type State = State;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.limit < 1 {
//!             return Err("`limit` must be at least 1".into());
//!         }
//!         Ok(Quota { limit: config.limit, window: Duration::from_secs(config.window_seconds) })
//!     }
//!
//!     fn on_request_headers(&self, request: &mut Request<'_>, state: &mut State) -> PhaseResult {
//!         let key = format!("quota:{}", request.client_address());
//!         // `?`: a full store fails the call, and the route's `on_error` decides.
//!         state.used = kv::increment(&key, 1, Some(self.window))?;
//!         if state.used > self.limit {
//!             let body = Refusal { error: "quota exceeded", limit: self.limit };
//!             return Ok(Action::Respond(LocalResponse::json(429, &body)));
//!         }
//!         // The one way to put a header on the response from a request phase.
//!         request.response_headers.set("x-quota-remaining", (self.limit - state.used).to_string())?;
//!         Ok(Action::Continue)
//!     }
//!
//!     fn on_log(&self, request: &Request<'_>, response: &Response<'_>, state: State) {
//!         if response.status() >= 500 {
//!             host::log(host::Level::Warn, &format!("{} failed after {} requests", request.path(), state.used));
//!         }
//!     }
//! }
//!
//! // Phases are plain methods, and `testing::Harness` runs whole requests natively:
//! use weir_plugin_sdk::testing::Harness;
//!
//! let mut quota = Harness::<Quota>::new(serde_json::json!({ "limit": 2 }));
//! assert_eq!(quota.run(Request::new("GET", "/")).header("x-quota-remaining"), Some("1"));
//! assert_eq!(quota.run(Request::new("GET", "/")).header("x-quota-remaining"), Some("0"));
//! let refused = quota.run(Request::new("GET", "/"));
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.body_json()["error"], "quota exceeded");
//! assert!(refused.upstream_request().is_none());
//! // Another client has its own count.
//! let other = quota.run(Request::new("GET", "/").with_client_address("192.0.2.1"));
//! assert_eq!(other.status(), 200);
//! assert_eq!(Harness::<Quota>::new(serde_json::json!({ "limit": 0 })).build_error(),
//!            Some("`limit` must be at least 1"));
//! ```
//!
//! # Building
//!
//! The plugin crate has `crate-type = ["cdylib"]` and depends on `weir-plugin-sdk`,
//! `serde` and (for JSON) `serde_json`. `weir plugin new NAME` writes such a crate,
//! ready to build. Build it with `cargo build --release --target wasm32-wasip2` (add the
//! target once with `rustup target add wasm32-wasip2`); the `.wasm` under
//! `target/wasm32-wasip2/release/` is the plugin (cargo writes `my_plugin.wasm` for a
//! crate named `my-plugin`: copy it into the plugins directory as `my-plugin.wasm`, the
//! name routes use). Small, fast plugins come from a release profile with
//! `opt-level = "s"`, `lto = true`, `codegen-units = 1`, `strip = true` and
//! `panic = "abort"`. `weir plugin inspect FILE.wasm` shows what the gateway sees in it.
//!
//! Routes that run the plugin with `isolation = "request"` (a fresh instance per request)
//! pay less per request when it is linked with `wasm-component-ld` 0.5.31 or newer and
//! an imported memory: the component then calls most host functions directly instead of
//! through a shim module (~0.75 µs less per fresh instance). Rust 1.95 ships an older
//! linker, so install that one and point cargo at it:
//!
//! ```sh
//! cargo install wasm-component-ld --locked --version 0.5.31
//! CARGO_TARGET_WASM32_WASIP2_LINKER=$HOME/.cargo/bin/wasm-component-ld \
//!   CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C link-arg=--import-memory" \
//!   cargo build --release --target wasm32-wasip2
//! ```
//!
//! The plugin behaves the same either way. `weir plugin inspect` tells which way a
//! `.wasm` was linked (its `linking` line).
//!
//! # Configuration
//!
//! A route names the plugin and gives it a TOML table:
//!
//! ```toml
//! [[route]]
//! name = "api"
//! upstream = "api"
//! plugins = [{ name = "quota", config = { limit = 1000 } }]
//! ```
//!
//! The gateway hands the table to the plugin as JSON; [`Plugin::new`] receives it
//! deserialised into [`Plugin::Config`]. An error from `new` refuses the config at load
//! time with that message, so a typo never reaches traffic.
//!
//! # Requests, responses and edits
//!
//! Inside the gateway, a phase's [`Request`] and [`Response`] are handles on the
//! gateway's own message, not copies: [`Headers::get`] asks for one header and lends it
//! (a second read of it is free), and [`Headers::set`], [`Headers::remove`],
//! [`Request::set_path`] and [`Response::set_status`] change the real message. A plugin
//! pays for the headers it reads, not for every header of the request.
//!
//! [`Plugin::on_request_headers`], the phase most plugins have, is one call into the
//! plugin (from WIT 0.1.8 on): the headers named in [`Plugin::header_reads`] come with
//! it, so reading them costs no call, and the time of the request
//! ([`Request::received_at`]) too; its header edits, of the request and queued for the
//! response, are checked here and go back with its result, not one call each. Reading a
//! header after editing it sees the edit. A phase that reads a header it did not list
//! still gets it, for one call more.
//!
//! Every edit returns `Result<(), EditError>`: the gateway refuses an invalid name or
//! value, a hop-by-hop header, `content-length` and `host`, and any edit of a message
//! that is read-only in that phase. A phase returns [`PhaseResult`], so `?` passes a
//! refusal on as the phase's [`Error`]; the gateway then applies the route's
//! `on_error` policy. Native tests follow the same rules (the gateway and this crate
//! pass one table of cases).
//!
//! To put a header on the response from a request phase, use
//! [`Request::response_headers`]: the gateway applies it where the plugin's response
//! phase would run, with no second call. Implement [`Plugin::on_response_headers`] only
//! when the edit depends on the response itself (its status, the upstream's headers).
//! Edits that are the same on every request, whatever it carries, are the fast path of
//! the same thing: return them from [`Plugin::static_edits`] and the gateway makes them
//! with no call at all (a phase with nothing else to do is then left out of
//! [`Plugin::phases`]).
//!
//! # The response cache
//!
//! On a route with `cache`, a plugin can steer the gateway's response cache:
//! [`Request::cache_key_append`] adds a part to the key (entries per tenant or plan, from
//! a claim the plugin verified), [`Request::set_uncacheable`] keeps the cache out of a
//! request (neither served from it nor stored), and [`Response::set_uncacheable`], in
//! [`Plugin::on_response_headers`], keeps a response from being stored. On a route
//! without `cache` they change nothing, so one plugin serves both kinds of route.
//! [`testing::Outcome::cache_key`] and [`testing::Outcome::uncacheable`] show what a
//! request told the cache; the latter's docs have a whole plugin that caches per tenant
//! and never stores what the upstream marks personal, with its test.
//!
//! # State
//!
//! [`Plugin::State`] is per request: created when the request reaches the plugin, lent
//! to each phase, handed to [`Plugin::on_log`], and never seen by another request. The
//! plugin value is built once from the config and shared by every request. The shared
//! key-value store ([`host::kv`]) is for what outlives a request; it survives plugin
//! version swaps and reloads. The [`Plugin`] trait's docs say exactly what lives how
//! long under each isolation mode.
//!
//! # The host
//!
//! [`host`] has the gateway's services as plain functions: [`host::log`], the shared
//! key-value store [`host::kv`] (atomic increments with TTLs: the basis of rate limits),
//! [`host::metrics`] (Prometheus series labelled with the plugin), and outbound HTTP
//! to the hosts listed in the plugin's `allowed_hosts`: [`host::http::call`] for one
//! request, [`host::http::call_all`] for several sent at once (fan out and compose).
//!
//! A plugin that uses [`host::http::call`] or `call_all` is called on a fiber (a stack switch per
//! call), because the call waits on the network. So is one whose code uses `std::fs` or
//! `std::net` anywhere: the sandbox refuses them, and they only cost. `weir plugin
//! inspect` says how a plugin is called (its `calls` line).
//!
//! # Testing
//!
//! Built for the host target (`cargo test`), the host functions talk to an in-memory fake
//! instead of the gateway: see [`testing`]. [`testing::Harness`] runs whole requests
//! through the plugin and returns what the client got; phase methods can also be
//! called directly with [`Request::new`] and [`Response::new`].
//!
//! # Compatibility
//!
//! This is SDK 0.2, for gateways speaking `weir:plugin` 0.1.4 or later; it builds
//! against 0.1.8 ([`WIT_VERSION`]). A gateway from 0.1.8 on calls the request phase in
//! one crossing; an older one calls it as before, one call per read and edit, with the
//! same results. What came after 0.1.4 needs a gateway that has it:
//! [`host::http::call_all`] (0.1.5), and the cache calls [`Request::cache_key_append`],
//! [`Request::set_uncacheable`] and [`Response::set_uncacheable`] (0.1.6). A plugin that
//! calls none of them loads into 0.1.4 gateways too. Plugins built with SDK 0.1 keep
//! loading in those gateways.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bindings;
mod edits;
mod error;
mod flat;
mod headers;
pub mod host;
mod message;
mod plugin;
#[cfg(not(target_family = "wasm"))]
pub mod testing;

#[doc(hidden)]
pub use bindings as __bindings;
pub use edits::{HeaderEdit, StaticEdits};
pub use error::{EditError, Error};
pub use headers::{
    Headers, is_header_name, is_header_value, is_removable_header_name, is_settable_header_name,
};
pub use message::{Action, Body, LocalResponse, QueuedHeaders, Request, RequestEdits, Response};
pub use plugin::{Phase, PhaseResult, Plugin, build, parse_config};
/// Marks a plugin's `impl Plugin for X` block: its phases are the `on_*` methods
/// written in it, and `X` is exported as the component's plugin when built for
/// WebAssembly. Use it once per plugin crate, which must depend on this crate under its
/// own name (`weir-plugin-sdk`, not renamed in `Cargo.toml`).
pub use weir_plugin_sdk_macros::plugin;

/// Internals used by the `#[plugin]` attribute; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::{Adapter, Slot, StateSlot, phase_of};
}

/// The version of the `weir:plugin` WIT package this SDK builds plugins for (read from
/// `wit/plugin.wit` when the SDK is built).
pub const WIT_VERSION: &str = env!("WEIR_WIT_VERSION");

/// Exports a [`Plugin`] type as the component's implementation of `weir:plugin`; the
/// `#[plugin]` attribute writes it.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty) => {
        impl $crate::__private::Slot for $plugin {
            fn slot() -> &'static ::std::sync::OnceLock<::std::result::Result<Self, ::std::string::String>> {
                static SLOT: ::std::sync::OnceLock<::std::result::Result<$plugin, ::std::string::String>> =
                    ::std::sync::OnceLock::new();
                &SLOT
            }
            fn state() -> &'static ::std::thread::LocalKey<
                $crate::__private::StateSlot<<$plugin as $crate::Plugin>::State>,
            > {
                ::std::thread_local! {
                    static STATE: $crate::__private::StateSlot<<$plugin as $crate::Plugin>::State> =
                        const { ::std::cell::RefCell::new(::std::option::Option::None) };
                }
                &STATE
            }
            fn crosses_phases() -> &'static ::std::thread::LocalKey<::std::cell::OnceCell<bool>> {
                ::std::thread_local! {
                    static CROSSES: ::std::cell::OnceCell<bool> = const { ::std::cell::OnceCell::new() };
                }
                &CROSSES
            }
        }
        type __WeirPluginAdapter = $crate::__private::Adapter<$plugin>;
        $crate::__bindings::__export_weir_plugin!(__WeirPluginAdapter with_types_in $crate::__bindings);
    };
}
