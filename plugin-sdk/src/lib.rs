//! Write plugins for the [Weir](https://github.com/weir-gateway/weir) HTTP gateway in
//! Rust.
//!
//! A plugin is a type that implements [`Plugin`]: it gets typed configuration from the
//! route that names it, lists the pipeline phases it implements, and in each phase reads
//! and edits the request or response — or answers the client itself. It is compiled to a
//! WebAssembly component and dropped into the gateway's plugins directory as `NAME.wasm`.
//!
//! ```
//! use serde::Deserialize;
//! use weir_plugin_sdk::{Action, LocalResponse, Phase, Plugin, Request, host};
//!
//! /// Answers 403 unless the request carries the configured header; tags responses.
//! pub struct RequireHeader {
//!     header: String,
//! }
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     header: String,
//! }
//!
//! impl Plugin for RequireHeader {
//!     type Config = Config;
//!     const PHASES: &'static [Phase] = &[Phase::RequestHeaders];
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.header.is_empty() {
//!             return Err("`header` must not be empty".into());
//!         }
//!         Ok(RequireHeader { header: config.header })
//!     }
//!
//!     fn on_request_headers(&self, request: &mut Request) -> Action {
//!         if !request.headers.contains(&self.header) {
//!             host::log(host::Level::Info, "request without the header refused");
//!             return Action::Respond(LocalResponse::json(
//!                 403,
//!                 &serde_json::json!({ "error": "missing header" }),
//!             ));
//!         }
//!         request.headers.remove(&self.header); // the upstream need not see it
//!         // Tag the response from here: no response phase, one call per request.
//!         request.response_headers.set("x-checked-by", "require-header");
//!         Action::Continue
//!     }
//! }
//!
//! // In the plugin crate (a `cdylib`), export it:
//! // weir_plugin_sdk::export_plugin!(RequireHeader);
//!
//! // Phases are plain methods, so plugin logic unit-tests natively:
//! let plugin = RequireHeader::new(Config { header: "x-token".into() }).unwrap();
//! let mut request = Request::new("GET", "/").with_header("X-Token", "t");
//! assert_eq!(plugin.on_request_headers(&mut request), Action::Continue);
//! let edits = request.edits();
//! assert_eq!(edits.removed, ["x-token"]);
//! assert_eq!(edits.response_set, [("x-checked-by".to_owned(), b"require-header".to_vec())]);
//! ```
//!
//! # Building
//!
//! The plugin crate has `crate-type = ["cdylib"]` and depends on `weir-plugin-sdk`,
//! `serde` and (for JSON bodies) `serde_json`. Build it with
//! `cargo build --release --target wasm32-wasip2` (add the target once with
//! `rustup target add wasm32-wasip2`); the `.wasm` under
//! `target/wasm32-wasip2/release/` is the plugin. Small, fast plugins come from a
//! release profile with `opt-level = "s"`, `lto = true`, `codegen-units = 1`,
//! `strip = true` and `panic = "abort"`. `weir plugin inspect FILE.wasm` shows what the
//! gateway sees in it. `examples/hello-plugin/` in the Weir repository is a complete
//! out-of-tree plugin.
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
//! The plugin behaves the same either way; Weir's own plugins are built so. `weir plugin
//! inspect` tells which way a `.wasm` was linked (its `linking` line).
//!
//! # Configuration
//!
//! A route names the plugin and gives it a TOML table:
//!
//! ```toml
//! [[route]]
//! name = "api"
//! upstream = "api"
//! plugins = [{ name = "require-header", config = { header = "x-token" } }]
//! ```
//!
//! The gateway hands the table to the plugin as JSON; [`Plugin::new`] receives it
//! deserialised into [`Plugin::Config`]. An error from `new` refuses the config at load
//! time with that message, so a typo never reaches traffic.
//!
//! # Requests and responses
//!
//! Inside the gateway, a phase's [`Request`] and [`Response`] are handles on the
//! gateway's own message, not copies: [`Headers::get`] asks for one header, and
//! [`Headers::set`], [`Headers::remove`], [`Request::set_path`] and
//! [`Response::set_status`] change the real message at once. A plugin pays for the
//! headers it reads, not for every header of the request, so read what you need
//! ([`Headers::all`] copies them all). Method, path and the other request fields are
//! fetched once per phase and then cached. An invalid edit (a header name that is not an
//! HTTP token, a value with CR or LF, a path not starting with `/`) is ignored and
//! logged with the plugin's name. In response phases the request is read-only; in the
//! response-body and log phases the response is too.
//!
//! A request phase can also edit the response to come, through
//! [`Request::response_headers`]: the gateway applies those edits where the plugin's
//! response phase would run. Implement [`Plugin::on_response_headers`] only when the
//! edit depends on the response itself (its status, the upstream's headers); each phase
//! a plugin lists is one more call per request.
//!
//! Edits that are the same for every request (a header a route's config sets, whatever
//! the request carries) need no call at all: return them from
//! [`Plugin::static_edits`], and the gateway makes them itself at the plugin's place in
//! the chain. A plugin left with nothing else to do in a phase leaves it out of
//! [`Plugin::phases`] and costs nothing per request (the `headers` plugin works so).
//!
//! # The host
//!
//! [`host`] has the gateway's services as plain functions: [`host::log`], the shared
//! key-value store [`host::kv`] (atomic increments with TTLs: the basis of rate limits),
//! [`host::metrics`] (Prometheus series labelled with the plugin), and outbound HTTP
//! [`host::http::call`] to the hosts listed in the plugin's `allowed_hosts`.
//!
//! # Testing
//!
//! Built for the host target (`cargo test`), the host functions talk to an in-memory fake
//! instead of the gateway: see [`testing`]. Call the phase methods directly with
//! [`Request::new`] and [`Response::new`], and assert on the edits, the action, and the
//! fake's logs, key-value store and metrics.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bindings;
mod edits;
pub mod host;
mod message;
mod plugin;
#[cfg(not(target_family = "wasm"))]
pub mod testing;

#[doc(hidden)]
pub use bindings as __bindings;
pub use edits::{HeaderEdit, StaticEdits};
pub use message::{
    Action, Headers, LocalResponse, QueuedHeaders, Request, RequestEdits, Response, is_header_name,
    is_header_value,
};
pub use plugin::{Phase, Plugin, build, parse_config};

/// Internals used by [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::{Adapter, Slot};
}

/// The version of the `weir:plugin` WIT package this SDK builds plugins for (read from
/// `wit/plugin.wit` when the SDK is built).
pub const WIT_VERSION: &str = env!("WEIR_WIT_VERSION");

/// Exports a [`Plugin`] type as the component's implementation of `weir:plugin`. Use it
/// once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        impl $crate::__private::Slot for $plugin {
            fn slot() -> &'static ::std::sync::OnceLock<::std::result::Result<Self, ::std::string::String>> {
                static SLOT: ::std::sync::OnceLock<::std::result::Result<$plugin, ::std::string::String>> =
                    ::std::sync::OnceLock::new();
                &SLOT
            }
        }
        type __WeirPluginAdapter = $crate::__private::Adapter<$plugin>;
        $crate::__bindings::__export_weir_plugin!(__WeirPluginAdapter with_types_in $crate::__bindings);
    };
}
