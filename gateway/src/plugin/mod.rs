//! The wasmtime plugin host: one engine, compiled components cached by content hash,
//! instances with per-plugin limits, the host side of the `weir:plugin` imports, and
//! the chain runner the pipeline calls at its filter points.
//!
//! Loading (compile, version check, `phases`, and `init` with each route's config)
//! happens off the request path; a request only instantiates (request isolation) and
//! calls. A plugin failure never takes the gateway down: it becomes a [`PluginFailure`]
//! that the failure policy turns into a 5xx or a skipped plugin.

mod bindings;
mod chain;
mod compile;
mod edits;
mod engine;
mod entry;
mod error;
mod exports;
mod host;
mod inspect;
mod instance;
mod kv_host;
mod loaded;
mod message;
mod one_call;
mod output;
mod preinit;
mod state;
mod suspension;
mod sync_io;
mod wasi_calls;

pub use crate::reply::LocalReply;
pub use chain::{ChainRun, Flow, RequestParts};
pub use compile::WIT_VERSION;
#[doc(hidden)]
pub use edits::fuzzing;
pub use entry::ChainEntry;
pub use error::{FailureKind, PluginError};
pub use host::{PluginHost, block_on, version_of};
pub use inspect::{Inspection, Preinitialised};
pub use instance::{Instance, PluginFailure};
use loaded::{Image, imports_waiting};
pub use loaded::{LoadedPlugin, Phases, PluginStats};
pub use message::CacheSteering;
pub use state::PluginMetrics;
