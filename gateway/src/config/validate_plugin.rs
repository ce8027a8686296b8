//! Validation of a route's plugin entries: each one's settings over the `[plugins]`
//! defaults, and its `config` table with `*_env` keys resolved from the environment.

use super::schema::PluginRef;
use super::validate::Checker;
use super::{Isolation, OnError, PluginSettings, PluginUse};

pub(super) fn settings(
    base: &PluginSettings,
    memory_limit: Option<bytesize::ByteSize>,
    timeout: Option<std::time::Duration>,
    on_error: Option<OnError>,
    isolation: Option<Isolation>,
    max_body_bytes: Option<bytesize::ByteSize>,
    max_outbound_calls: Option<u32>,
) -> PluginSettings {
    PluginSettings {
        memory_limit: memory_limit.map_or(base.memory_limit, |b| b.as_u64()),
        timeout: timeout.unwrap_or(base.timeout),
        on_error: on_error.unwrap_or(base.on_error),
        isolation: isolation.unwrap_or(base.isolation),
        max_body_bytes: max_body_bytes.map_or(base.max_body_bytes, |b| b.as_u64()),
        max_outbound_calls: max_outbound_calls.unwrap_or(base.max_outbound_calls),
    }
}

/// Resolves a plugin config's `NAME_env` keys: each names an environment variable of
/// the gateway, which the plugin cannot read (its sandbox has no environment). The
/// plugin gets `{ name = "VAR", value = "..." }` in its place. Returns the keys whose
/// variable is unset or not UTF-8, with what is wrong (never the value).
fn resolve_env_keys(config: &mut toml::Table) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (key, value) in config.iter_mut() {
        if !key.ends_with("_env") {
            continue;
        }
        let toml::Value::String(var) = value else {
            continue;
        };
        match std::env::var(var.as_str()) {
            Ok(contents) => {
                let mut resolved = toml::Table::new();
                resolved.insert("name".to_owned(), toml::Value::String(var.clone()));
                resolved.insert("value".to_owned(), toml::Value::String(contents));
                *value = toml::Value::Table(resolved);
            }
            Err(std::env::VarError::NotPresent) => problems.push((
                key.clone(),
                format!("environment variable `{var}` is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => problems.push((
                key.clone(),
                format!("environment variable `{var}` is not valid UTF-8"),
            )),
        }
    }
    problems
}

pub(super) fn check_plugin(
    c: &mut Checker<'_>,
    key: &str,
    p: &PluginRef,
    defaults: &PluginSettings,
) -> Option<PluginUse> {
    let name = p.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    {
        c.error(
            &p.name.span(),
            format!("{key}.name"),
            format!("plugin name `{name}` must use only a-z, 0-9, `-` and `_` (it names the file NAME.wasm)"),
        );
        return None;
    }
    let settings = settings(
        defaults,
        p.memory_limit,
        p.timeout,
        p.on_error,
        p.isolation,
        p.max_body_bytes,
        p.max_outbound_calls,
    );
    if settings.memory_limit < 1024 * 1024 {
        c.error(
            &p.name.span(),
            format!("{key}.memory_limit"),
            "memory_limit must be at least 1MiB",
        );
    }
    let mut plugin_config = p.config.clone().unwrap_or_default();
    for (env_key, problem) in resolve_env_keys(&mut plugin_config) {
        c.error(&p.name.span(), format!("{key}.config.{env_key}"), problem);
    }
    let config_json = match serde_json::to_string(&plugin_config) {
        Ok(json) => json,
        Err(e) => {
            c.error(
                &p.name.span(),
                format!("{key}.config"),
                format!("cannot pass this config to the plugin: {e}"),
            );
            return None;
        }
    };
    Some(PluginUse {
        name: name.clone(),
        config_json,
        allowed_hosts: p
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        settings,
    })
}
