//! `cors`: work in progress (issue 4); continues every request.

use serde::Deserialize;
use weir_plugin_sdk::{Phase, Plugin};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
pub struct Config {}

/// The plugin.
#[derive(Debug)]
pub struct Cors;

impl Plugin for Cors {
    type Config = Config;
    const PHASES: &'static [Phase] = &[Phase::RequestHeaders];

    fn new(_config: Config) -> Result<Self, String> {
        Ok(Cors)
    }
}

weir_plugin_sdk::export_plugin!(Cors);
