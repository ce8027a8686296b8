//! Weir, a programmable HTTP gateway: a reverse proxy with a fixed request pipeline whose
//! filter points call sandboxed WebAssembly plugins.
//!
//! This crate is the gateway as a library; the `weir` binary only parses its command line
//! and calls into it. Tests start gateways in-process with [`Gateway::start`].
#![deny(unsafe_code)] // one audited exception: loading cached compiled plugins

mod admin;
pub mod body;
pub mod cache;
pub mod client_trust;
pub mod config;
pub mod error;
pub mod grpc_status;
pub mod grpc_web;
pub mod handover;
pub mod hop_by_hop;
pub mod kv;
pub mod path;
pub mod pipeline;
pub mod plugin;
pub mod quickstart;
mod random;
pub mod reload;
pub mod reply;
pub mod request_body;
pub mod router;
pub mod run;
pub mod scaffold;
mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use server::{Gateway, LoadedPlugins, StartError, load_plugins};
