//! The round-trip test's own TOML writer: a generated [`Spec`] as text, in each of the
//! equivalent spellings a [`Style`] picks. It shares no code with the loader.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::{Isolation, OnError, PluginSpec, RouteSpec, Spec, Style, Target};

/// A TOML basic string holding `s`: `"` and `\\` escaped, control characters as
/// `\\uXXXX`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04X}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        quoted(k)
    }
}

impl Style {
    fn duration(self, ms: u64) -> String {
        if !self.compound_durations {
            return quoted(&format!("{ms}ms"));
        }
        let (s, rest) = (ms / 1000, ms % 1000);
        quoted(&match (s, rest) {
            (0, _) => format!("{rest}ms"),
            (_, 0) => format!("{s}s"),
            _ => format!("{s}s {rest}ms"),
        })
    }

    fn kib(self, kib: u64) -> String {
        if self.sizes_as_bytes {
            (kib * 1024).to_string()
        } else {
            quoted(&format!("{kib}KiB"))
        }
    }

    fn mib(self, mib: u64) -> String {
        if self.sizes_as_bytes {
            (mib * 1024 * 1024).to_string()
        } else {
            quoted(&format!("{mib}MiB"))
        }
    }
}

/// A JSON value as a TOML inline value (objects as inline tables).
fn inline(value: &Json) -> String {
    match value {
        Json::Null => unreachable!("the generator makes no nulls"),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // `{:?}` is the shortest text that reads back as the same f64, always with
            // a `.` or an exponent, which TOML needs to see a float.
            (None, Some(f)) => format!("{f:?}"),
            (None, None) => unreachable!("the generator makes i64 and f64 only"),
        },
        Json::String(s) => quoted(s),
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Json::Object(map) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
    }
}

/// The plugin config as `prefix.a.b = v` lines: nested objects become dotted keys.
fn dotted(prefix: &str, value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                dotted(&format!("{prefix}.{}", key(k)), v, out);
            }
        }
        other => out.push(format!("{prefix} = {}", inline(other))),
    }
}

/// A plugin entry's key-value pairs (without the table around them).
fn plugin_pairs(p: &PluginSpec, style: Style) -> Vec<String> {
    let mut pairs = vec![format!("name = {}", quoted(&p.name))];
    if style.dotted_plugin_config && !style.inline_plugins && !style.inline_routes {
        dotted("config", &p.config, &mut pairs);
    } else {
        pairs.push(format!("config = {}", inline(&p.config)));
    }
    if let Some(ms) = p.timeout_ms {
        pairs.push(format!("timeout = {}", style.duration(ms)));
    }
    if let Some(isolation) = p.isolation {
        let name = match isolation {
            Isolation::Request => "request",
            Isolation::Worker => "worker",
        };
        pairs.push(format!("isolation = \"{name}\""));
    }
    if let Some(mib) = p.memory_mib {
        pairs.push(format!("memory_limit = {}", style.mib(mib)));
    }
    if let Some(n) = p.max_reuse {
        pairs.push(format!("max_reuse = {n}"));
    }
    pairs
}

/// A route's own pairs (without its plugins).
fn route_pairs(index: usize, r: &RouteSpec, style: Style) -> Vec<String> {
    let mut pairs = vec![format!("name = \"r{index}\"")];
    let mut conditions = Vec::new();
    if let Some(prefix) = &r.path_prefix {
        conditions.push(format!("path_prefix = {}", quoted(prefix)));
    }
    if !r.methods.is_empty() {
        let methods: Vec<String> = r.methods.iter().map(|m| quoted(m)).collect();
        conditions.push(format!("methods = [{}]", methods.join(", ")));
    }
    if !conditions.is_empty() {
        pairs.push(format!("match = {{ {} }}", conditions.join(", ")));
    }
    match &r.target {
        Target::Single(u) => pairs.push(format!("upstream = \"u{u}\"")),
        Target::Split(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(u, w)| format!("{{ upstream = \"u{u}\", weight = {w} }}"))
                .collect();
            pairs.push(format!("split = [{}]", entries.join(", ")));
        }
        Target::Respond(status, body) => pairs.push(format!(
            "respond = {{ status = {status}, body = {} }}",
            quoted(body)
        )),
    }
    if let Some(kib) = r.max_request_body_kib {
        pairs.push(format!("max_request_body = {}", style.kib(kib)));
    }
    pairs
}

/// The whole file, spelled as `style` says.
pub(super) fn write(spec: &Spec, style: Style) -> String {
    let mut t = String::new();
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
    if let Some(workers) = spec.workers {
        writeln!(t, "workers = {workers}").unwrap();
    }
    writeln!(
        t,
        "shutdown_grace = {}\naccess_log = {}\nvia = {}",
        style.duration(spec.shutdown_grace_ms),
        spec.access_log,
        quoted(&spec.via)
    )
    .unwrap();
    writeln!(
        t,
        "\n[server.limits]\nmax_headers = {}\nidle_timeout = {}",
        spec.max_headers,
        style.duration(spec.idle_timeout_ms)
    )
    .unwrap();
    if let Some(kib) = spec.max_request_body_kib {
        writeln!(t, "max_request_body = {}", style.kib(kib)).unwrap();
    }
    writeln!(
        t,
        "\n[kv]\nmax_entries = {}\nmax_bytes = {}",
        spec.kv_entries,
        style.kib(spec.kv_kib)
    )
    .unwrap();
    t.push_str("\n[plugins]\ndir = \"/nonexistent/plugins\"\n");
    if let Some(ms) = spec.plugin_timeout_ms {
        writeln!(t, "timeout = {}", style.duration(ms)).unwrap();
    }
    if let Some(on_error) = spec.plugin_on_error {
        let name = if on_error == OnError::Deny {
            "deny"
        } else {
            "allow"
        };
        writeln!(t, "on_error = \"{name}\"").unwrap();
    }
    if let Some(n) = spec.plugin_max_reuse {
        writeln!(t, "max_reuse = {n}").unwrap();
    }
    for (i, u) in spec.upstreams.iter().enumerate() {
        let endpoints: Vec<String> = u
            .endpoints
            .iter()
            .map(|(port, weight)| match weight {
                None => format!("\"127.0.0.1:{port}\""),
                Some(w) => format!("{{ address = \"127.0.0.1:{port}\", weight = {w} }}"),
            })
            .collect();
        writeln!(
            t,
            "\n[[upstream]]\nname = \"u{i}\"\nendpoints = [{}]",
            endpoints.join(", ")
        )
        .unwrap();
        if let Some(ms) = u.connect_timeout_ms {
            writeln!(t, "timeouts = {{ connect = {} }}", style.duration(ms)).unwrap();
        }
    }
    if style.inline_routes {
        let routes: Vec<String> = spec
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut pairs = route_pairs(i, r, style);
                let plugins: Vec<String> = r
                    .plugins
                    .iter()
                    .map(|p| format!("{{ {} }}", plugin_pairs(p, style).join(", ")))
                    .collect();
                pairs.push(format!("plugins = [{}]", plugins.join(", ")));
                format!("  {{ {} }}", pairs.join(", "))
            })
            .collect();
        // The array must come before any table header, so it goes in the root table.
        return format!("route = [\n{}\n]\n{t}", routes.join(",\n"));
    }
    for (i, r) in spec.routes.iter().enumerate() {
        writeln!(t, "\n[[route]]\n{}", route_pairs(i, r, style).join("\n")).unwrap();
        if style.inline_plugins {
            let plugins: Vec<String> = r
                .plugins
                .iter()
                .map(|p| format!("{{ {} }}", plugin_pairs(p, style).join(", ")))
                .collect();
            writeln!(t, "plugins = [{}]", plugins.join(", ")).unwrap();
        } else {
            for p in &r.plugins {
                writeln!(
                    t,
                    "[[route.plugins]]\n{}",
                    plugin_pairs(p, style).join("\n")
                )
                .unwrap();
            }
        }
    }
    t
}
