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
        // Validated apart (`max_reuse`): it needs the checker.
        max_reuse: base.max_reuse,
    }
}

/// `max_reuse` at `key` when written, else `base`: the requests a worker-isolated
/// instance serves before it is replaced, at least 1 (and at most `u32::MAX`).
pub(super) fn max_reuse(
    c: &mut Checker<'_>,
    key: &str,
    value: Option<&toml::Spanned<i64>>,
    base: u32,
) -> u32 {
    let Some(value) = value else {
        return base;
    };
    let n = *value.get_ref();
    match u32::try_from(n) {
        Ok(n) if n >= 1 => n,
        _ => {
            let problem = if n < 1 {
                "must be at least 1"
            } else {
                "must be at most 4294967295"
            };
            c.error(
                &value.span(),
                key,
                format!(
                    "max_reuse {problem}, not {n}: it is how many requests a worker-isolated \
                     instance serves before a fresh one replaces it"
                ),
            );
            base
        }
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
    let mut settings = settings(
        defaults,
        p.memory_limit,
        p.timeout,
        p.on_error,
        p.isolation,
        p.max_body_bytes,
        p.max_outbound_calls,
    );
    settings.max_reuse = max_reuse(
        c,
        &format!("{key}.max_reuse"),
        p.max_reuse.as_ref(),
        defaults.max_reuse,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const UP: &str = "[[upstream]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9001\"]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("weir.toml"), text)
    }

    /// A config with `plugins` (the `[plugins]` table's extra lines) and one route whose
    /// plugin chain is `chain`.
    fn with(plugins: &str, chain: &str) -> String {
        format!(
            "[plugins]\ndir = \"/nonexistent\"\n{plugins}{UP}\
             [[route]]\nname = \"r\"\nupstream = \"up\"\nplugins = [{chain}]\n"
        )
    }

    #[test]
    fn max_reuse_defaults_to_10000_and_is_overridden_per_plugin() {
        let config = parse(&with("", "{ name = \"a\" }")).unwrap();
        assert_eq!(config.plugins.defaults.max_reuse, 10_000);
        assert_eq!(config.routes[0].plugins[0].settings.max_reuse, 10_000);

        let config = parse(&with(
            "max_reuse = 50\n",
            "{ name = \"a\" }, { name = \"b\", max_reuse = 500 }, { name = \"c\", max_reuse = 1 }",
        ))
        .unwrap();
        assert_eq!(config.plugins.defaults.max_reuse, 50);
        let got: Vec<u32> = config.routes[0]
            .plugins
            .iter()
            .map(|p| p.settings.max_reuse)
            .collect();
        assert_eq!(got, [50, 500, 1], "the default, then two overrides");
    }

    #[test]
    fn max_reuse_below_1_or_past_u32_is_refused_naming_the_key() {
        let cases = [
            (
                with("max_reuse = 0\n", "{ name = \"a\" }"),
                "plugins.max_reuse",
                "0",
            ),
            (
                with("", "{ name = \"a\" }, { name = \"b\", max_reuse = -5 }"),
                "route[0].plugins[1].max_reuse",
                "-5",
            ),
            (
                with("", "{ name = \"a\", max_reuse = 4294967296 }"),
                "route[0].plugins[0].max_reuse",
                "4294967296",
            ),
        ];
        for (text, key, shown) in cases {
            // The diagnostic points at the value as written.
            let written = format!("max_reuse = {shown}");
            let (line, column) = text
                .lines()
                .enumerate()
                .find_map(|(i, l)| l.find(&written).map(|at| (i + 1, at + 13)))
                .unwrap();
            let err = parse(&text).expect_err(&text);
            let [d] = err.diagnostics() else {
                panic!("one diagnostic expected:\n{err}");
            };
            assert_eq!(
                (d.key.as_str(), d.line, d.column),
                (key, line, column),
                "{err}"
            );
            assert!(d.message.starts_with("max_reuse must be at"), "{err}");
            assert!(d.message.contains(&format!("not {shown}:")), "{err}");
            assert!(d.message.contains("worker-isolated instance"), "{err}");
        }
    }

    #[test]
    fn max_reuse_of_the_wrong_type_is_a_schema_error_at_the_key() {
        let err = parse(&with("", "{ name = \"a\", max_reuse = \"lots\" }")).unwrap_err();
        let [d] = err.diagnostics() else {
            panic!("one diagnostic expected:\n{err}");
        };
        assert_eq!(d.key, "route[0].plugins[0].max_reuse", "{err}");
    }
}
