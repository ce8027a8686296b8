//! Support for end-to-end tests of the first-party plugins (`plugins/`): a plugins
//! directory holding every one under its contract name, a one-route config, requests
//! with headers, and the load-time refusal of a bad plugin config.

use std::path::{Path, PathBuf};

use crate::{Reply, TestUpstream, guest_wasm};

/// A fresh plugins directory holding every first-party plugin as `NAME.wasm`.
pub fn plugin_dir() -> PathBuf {
    crate::gateway::plugin_dir(&[
        (guest_wasm!("aggregate"), "aggregate"),
        (guest_wasm!("api_key"), "api-key"),
        (guest_wasm!("cors"), "cors"),
        (guest_wasm!("headers"), "headers"),
        (guest_wasm!("ip_filter"), "ip-filter"),
        (guest_wasm!("jwt_auth"), "jwt-auth"),
        (guest_wasm!("rate_limit"), "rate-limit"),
        (guest_wasm!("request_id"), "request-id"),
    ])
}

/// A config with one route `r` (prefix `/`) to upstream `up` through `plugins` (the
/// inside of the route's `plugins = [...]` array).
pub fn config(up: &TestUpstream, plugins: &str) -> String {
    let dir = plugin_dir();
    format!(
        "[plugins]\ndir = \"{}/plugins\"\ncache_dir = \"{}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"r\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/\" }}\nplugins = [{plugins}]\n",
        dir.display(),
        crate::gateway::compile_cache().display(),
        up.addr
    )
}

/// Sends `method url` with `headers` and an empty body.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    crate::send(
        &crate::h1_client(),
        req.body(crate::client::empty())
            .expect("a valid test request"),
    )
    .await
}

/// `GET url` with `headers`.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", url, headers).await
}

/// Starts a gateway whose route uses `plugin` with `plugin_config` (a TOML inline
/// table) and returns the error it refused to start with; panics if it started.
pub fn refusal(up: &TestUpstream, plugin: &str, plugin_config: &str) -> String {
    let text = crate::gateway::with_test_listeners(&config(
        up,
        &format!("{{ name = \"{plugin}\", config = {plugin_config} }}"),
    ));
    let config = weir_gateway::Config::parse(Path::new("test.toml"), &text)
        .expect("the config file itself is valid");
    match weir_gateway::Gateway::start(config) {
        Ok(_) => panic!("the gateway started with {plugin} config {plugin_config}"),
        Err(e) => format!("{e:#}"),
    }
}
