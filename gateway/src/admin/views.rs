//! The admin API's JSON documents, built from the live snapshot and the reload status.

use serde_json::{Value, json};

use crate::config::{HeaderMatch, HostPattern, HostRewrite, PathPattern, RouteUpstream};
use crate::plugin::FailureKind;
use crate::reload::Status;
use crate::reload::records::rfc3339;
use crate::snapshot::Snapshot;

/// `GET /admin/routes`: every route in match order, its conditions, upstream and
/// plugin chain.
pub(super) fn routes(snapshot: &Snapshot) -> Value {
    let config = &snapshot.config;
    let routes: Vec<Value> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut conditions = serde_json::Map::new();
            match &r.host {
                Some(HostPattern::Exact(h)) => {
                    conditions.insert("host".into(), json!(h));
                }
                Some(HostPattern::Suffix(s)) => {
                    conditions.insert("host".into(), json!(format!("*{s}")));
                }
                None => {}
            }
            match &r.path {
                Some(PathPattern::Exact(p)) => {
                    conditions.insert("path".into(), json!(p));
                }
                Some(PathPattern::Prefix(p)) => {
                    conditions.insert("path_prefix".into(), json!(p));
                }
                None => {}
            }
            if !r.methods.is_empty() {
                let methods: Vec<&str> = r.methods.iter().map(http::Method::as_str).collect();
                conditions.insert("methods".into(), json!(methods));
            }
            if !r.headers.is_empty() {
                let headers: serde_json::Map<String, Value> = r
                    .headers
                    .iter()
                    .map(|(n, condition)| {
                        let shown = match condition {
                            HeaderMatch::Exact(v) => json!(String::from_utf8_lossy(v.as_bytes())),
                            HeaderMatch::Present(present) => json!({ "present": present }),
                            HeaderMatch::Prefix(p) => {
                                json!({ "prefix": String::from_utf8_lossy(p) })
                            }
                        };
                        (n.to_string(), shown)
                    })
                    .collect();
                conditions.insert("headers".into(), Value::Object(headers));
            }
            if !r.cookies.is_empty() {
                let cookies: serde_json::Map<String, Value> = r
                    .cookies
                    .iter()
                    .map(|(n, v)| (n.clone(), json!(v)))
                    .collect();
                conditions.insert("cookies".into(), Value::Object(cookies));
            }
            let plugins: Vec<Value> = snapshot
                .chains
                .get(i)
                .into_iter()
                .flat_map(|c| c.iter())
                .map(|e| {
                    json!({
                        "name": e.plugin.name,
                        "version": e.plugin.version,
                        "isolation": format!("{:?}", e.settings.isolation).to_lowercase(),
                        "on_error": format!("{:?}", e.settings.on_error).to_lowercase(),
                        "preinitialised": e.preinitialised(),
                        "phases": e.phases.names(),
                    })
                })
                .collect();
            let name_of = |index: usize| config.upstreams[index].name.as_str();
            let split: Option<Vec<Value>> = match &r.upstream {
                RouteUpstream::Single(_) | RouteUpstream::Respond(_) => None,
                RouteUpstream::Split(targets) => Some(
                    targets
                        .iter()
                        .map(|t| json!({ "upstream": name_of(t.upstream), "weight": t.weight }))
                        .collect(),
                ),
            };
            json!({
                "name": r.name,
                "match": Value::Object(conditions),
                "upstream": r.upstream.single().map(name_of),
                "split": split,
                "respond": match &r.upstream {
                    RouteUpstream::Respond(d) => json!({
                        "status": d.status.as_u16(),
                        "content_type": d.content_type.as_ref().map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned()),
                        "body_bytes": d.body.len(),
                    }),
                    _ => Value::Null,
                },
                "mirror": r.mirror.as_ref().map(|m| json!({
                    "upstream": name_of(m.upstream),
                    "percent": m.percent,
                })),
                "host_rewrite": match &r.host_rewrite {
                    HostRewrite::Preserve => "preserve".to_owned(),
                    HostRewrite::Endpoint => "endpoint".to_owned(),
                    HostRewrite::Literal(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                },
                "plugins": plugins,
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// `GET /admin/upstreams`: every cluster, its settings and endpoints with their health,
/// and where its endpoints come from (an endpoints file: when it was read, and why its
/// current contents are refused, if they are).
pub(super) fn upstreams(snapshot: &Snapshot, status: &Status) -> Value {
    let upstreams: Vec<Value> = snapshot
        .clusters
        .iter()
        .map(|cluster| {
            let u = &cluster.source;
            let checked = u.health.is_some();
            let endpoints: Vec<Value> = cluster
                .endpoint_status()
                .into_iter()
                .map(|e| {
                    json!({
                        "address": e.address,
                        "weight": e.weight,
                        "healthy": e.healthy,
                        "health_checked": checked,
                        "last_check_error": e.check_error,
                        "in_rotation": e.in_rotation,
                        "in_flight": e.in_flight,
                        "ejected_for_ms": e.ejected_for.map(|d| d.as_millis() as u64),
                        "ejections": e.ejections,
                    })
                })
                .collect();
            let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
            let load = cluster.load();
            json!({
                "name": u.name,
                "balancer": u.balancer.as_str(),
                "hash_on": u.hash_on.as_ref().map(ToString::to_string),
                "protocol": u.protocol.as_str(),
                "tls": u.tls.as_ref().map(|t| json!({
                    "ca": t.ca.as_ref().map_or_else(
                        || "system".to_owned(),
                        |p| p.display().to_string(),
                    ),
                    "server_name": t.server_name.as_ref().map(|n| n.to_str().into_owned()),
                    "client_cert": t.cert.as_ref().map(|p| p.display().to_string()),
                })),
                "timeouts": {
                    "connect": duration(u.timeouts.connect),
                    "request": duration(u.timeouts.request),
                    "idle": duration(u.timeouts.idle),
                },
                "limits": {
                    "max_connections": u.limits.max_connections,
                    "max_pending": u.limits.max_pending,
                    "max_requests": u.limits.max_requests,
                },
                "load": {
                    "requests": load.requests,
                    "connections": load.connections,
                    "pending": load.pending,
                    "retries": load.retries,
                },
                "retries": retries_view(&u.retries, duration),
                "health": u.health.as_ref().map(|h| json!({
                    "path": h.path,
                    "interval": duration(h.interval),
                    "timeout": duration(h.timeout),
                    "healthy": h.healthy,
                    "unhealthy": h.unhealthy,
                    "expected_statuses": h.expected_statuses.iter()
                        .map(|(low, high)| if low == high { low.to_string() } else { format!("{low}-{high}") })
                        .collect::<Vec<_>>(),
                })),
                "outlier": json!({
                    "consecutive_failures": u.outlier.consecutive_failures,
                    "base_ejection": duration(u.outlier.base_ejection),
                    "max_ejection": duration(u.outlier.max_ejection),
                    "max_ejected_percent": u.outlier.max_ejected_percent,
                    "connect_failures_only": u.outlier.connect_failures_only,
                }),
                "panic_threshold": u.panic_threshold,
                "panic": cluster.panicking(),
                "endpoints_file": u.endpoints_file.as_ref().map(|path| {
                    let record = status.endpoint_files.get(&u.name);
                    json!({
                        "path": path.display().to_string(),
                        "loaded_at": record.map(|r| r.loaded_at.clone()),
                        "error": record.and_then(|r| r.error.as_ref()).map(|f| json!({
                            "message": f.message,
                            "at": f.at,
                        })),
                    })
                }),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "upstreams": upstreams })
}

/// `GET /admin/plugins`: each plugin the config names (version serving, phases, file,
/// load time, last error, calls and failures), the config file's status and the last
/// reload's report.
pub(super) fn plugins(status: &Status, snapshot: &Snapshot) -> Value {
    let plugins: Vec<Value> = status
        .plugins
        .iter()
        .map(|(name, record)| {
            let routes: Vec<&str> = snapshot
                .config
                .routes
                .iter()
                .filter(|r| r.plugins.iter().any(|u| u.name == *name))
                .map(|r| r.name.as_str())
                .collect();
            let mut doc = json!({
                "name": name,
                "file": if record.file_present { "present" } else { "missing" },
                "routes": routes,
                "loaded_at": record.loaded_at.map(rfc3339),
                "last_error": record.last_error,
                // History, marked as such: a refusal a good version has since cleared.
                "previous_error": record.previous_error,
            });
            if let Some(p) = &record.current {
                let failures: serde_json::Map<String, Value> = [
                    FailureKind::Trap,
                    FailureKind::Timeout,
                    FailureKind::Memory,
                    FailureKind::Error,
                ]
                .into_iter()
                .map(|k| (k.as_str().to_owned(), json!(p.stats.failures(k))))
                .collect();
                let extra = json!({
                    "version": p.version,
                    "wit_version": p.wit_version,
                    "phases": p.phases.names(),
                    "path": p.path.display().to_string(),
                    "from_compile_cache": p.from_cache,
                    "calls": p.stats.calls.load(std::sync::atomic::Ordering::Relaxed),
                    "failures": failures,
                });
                if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
                    doc.extend(extra);
                }
            }
            doc
        })
        .collect();
    json!({
        "plugins": plugins,
        "config": {
            "source": status.config_source.display().to_string(),
            "loaded_at": rfc3339(status.config_loaded_at),
            "last_error": status.config_error,
        },
        "last_reload": status.last_reload.as_ref().map(|(at, report)| json!({
            "at": rfc3339(*at),
            "report": report,
        })),
    })
}

/// A retry policy as `/admin/upstreams` shows it.
fn retries_view(
    r: &crate::config::Retries,
    duration: impl Fn(std::time::Duration) -> String,
) -> Value {
    let on = [
        (r.on.connect_failure, "connect-failure"),
        (r.on.reset, "reset"),
        (r.on.server_error, "5xx"),
        (r.on.gateway_error, "gateway-error"),
        (r.on.retriable_statuses, "retriable-status-codes"),
    ];
    json!({
        "attempts": r.attempts,
        "on": on.iter().filter(|(set, _)| *set).map(|(_, n)| *n).collect::<Vec<_>>(),
        "retriable_statuses": r.retriable_statuses,
        "per_try_timeout": r.per_try_timeout.map(&duration),
        "allow_non_idempotent": r.allow_non_idempotent,
        "backoff_base": duration(r.backoff_base),
        "backoff_max": duration(r.backoff_max),
        "budget_percent": r.budget_percent,
        "min_retry_concurrency": r.min_retry_concurrency,
    })
}

/// `GET /admin/cache`: the response cache's budget, what it holds, and its keys (the
/// first 1000, sorted), which `POST /admin/cache/purge?key=` takes.
pub(super) fn cache(snapshot: &Snapshot) -> Value {
    match &snapshot.cache {
        None => json!({ "enabled": false }),
        Some(cache) => json!({
            "enabled": true,
            "memory": cache.memory(),
            "bytes": cache.weighted_size(),
            "entries": cache.entry_count(),
            "keys": cache.keys(1000),
        }),
    }
}
