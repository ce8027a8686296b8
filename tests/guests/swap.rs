// The hot-swap test plugin, built twice with a different `VERSION` (crates `swap-a` and
// `swap-b`), so tests can replace one `.wasm` with another whose responses differ.
//
// The request phase records its version on the request (`x-swap-request`); the
// response phase answers `x-swap: REQUEST-VERSION/RESPONSE-VERSION`, so a test sees
// that each response came wholly from one version. `config.refuse` naming this version
// makes `new` refuse the config (a new version that rejects a route's config).

use serde::Deserialize;
use weir_plugin_sdk::{Action, PhaseResult, Plugin, Request, Response, plugin};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Config {
    refuse: String,
}

pub struct Swap;

#[plugin]
impl Plugin for Swap {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if config.refuse == VERSION {
            return Err(format!("version {VERSION} refuses this config on purpose"));
        }
        Ok(Swap)
    }

    fn on_request_headers(&self, request: &mut Request, _: &mut ()) -> PhaseResult {
        request.headers.set("x-swap-request", VERSION)?;
        Ok(Action::Continue)
    }

    fn on_response_headers(
        &self,
        request: &Request,
        response: &mut Response,
        _: &mut (),
    ) -> PhaseResult {
        let seen = request.headers.get_str("x-swap-request").unwrap_or_default();
        response.headers.set("x-swap", format!("{seen}/{VERSION}"))?;
        Ok(Action::Continue)
    }
}
