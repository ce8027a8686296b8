//! The Weir plugin SDK.
//!
//! This crate is where plugin authors will implement Weir plugins against the
//! `weir:plugin` WIT world (see `wit/`). The plugin ABI and host land in a later
//! milestone; until then the crate only reserves the name and the place in the workspace.
#![deny(missing_docs)]

/// The version of the `weir:plugin` WIT package this SDK targets.
pub const WIT_VERSION: &str = "0.1.0";
