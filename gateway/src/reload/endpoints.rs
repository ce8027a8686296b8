//! Endpoints files (`endpoints_file` on an upstream), read again on every reload; a
//! change to one is a file change like any other, so it asks for a reload. A file that
//! now holds a different valid list gives its upstream those endpoints (the cluster is
//! rebuilt from the one serving, so the endpoints that stayed keep their pooled
//! connections); one that cannot be read or does not check keeps the list serving,
//! and why shows in `/admin/upstreams`, the reload's report and the log (logged once,
//! when the problem appears).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::records::{Failure, rfc3339};
use crate::config::{Config, Endpoint};

/// What an upstream's endpoints file gave, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointsFileRecord {
    /// The file.
    pub path: PathBuf,
    /// When the list serving was read (RFC 3339, UTC).
    pub loaded_at: String,
    /// Why the file's current contents are refused; the list read at `loaded_at`
    /// keeps serving. `None` once the file checks again.
    pub error: Option<Failure>,
}

/// One upstream's endpoints file news in a reload.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointsChange {
    /// The upstream.
    pub upstream: String,
    /// What happened.
    pub result: EndpointsResult,
    /// Why the file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What happened to an upstream's endpoints file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointsResult {
    /// Its new list serves.
    Applied,
    /// It cannot be read or does not check: the list serving stays.
    Refused,
}

/// Reads the endpoints file of every upstream of `config` that has one. Returns
/// `config` with the lists that changed (`None`: none did) and each file's news;
/// `records` (by upstream) follows.
pub(super) fn refresh(
    config: &Config,
    records: &mut BTreeMap<String, EndpointsFileRecord>,
) -> (Option<Config>, Vec<EndpointsChange>) {
    let mut next: Option<Config> = None;
    let mut changes = Vec::new();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let Some(read) = upstream.reread_endpoints() else {
            continue;
        };
        let record = records
            .entry(upstream.name.clone())
            .or_insert_with(|| fresh_record(upstream.endpoints_file.clone()));
        match read {
            Ok(endpoints) => {
                if let Some(failure) = record.error.take() {
                    tracing::info!(
                        upstream = %upstream.name,
                        file = %record.path.display(),
                        "endpoints file checks again (it was refused: {})",
                        failure.message
                    );
                }
                if endpoints == upstream.endpoints {
                    continue;
                }
                let (added, removed) = difference(&upstream.endpoints, &endpoints);
                tracing::info!(
                    upstream = %upstream.name,
                    file = %record.path.display(),
                    endpoints = endpoints.len(),
                    added = ?added,
                    removed = ?removed,
                    "endpoints file changed: applying its endpoints"
                );
                record.loaded_at = rfc3339(SystemTime::now());
                next.get_or_insert_with(|| config.clone()).upstreams[index].endpoints = endpoints;
                changes.push(EndpointsChange {
                    upstream: upstream.name.clone(),
                    result: EndpointsResult::Applied,
                    error: None,
                });
            }
            Err(e) => {
                let message = e.to_string();
                if record.error.as_ref().is_none_or(|f| f.message != message) {
                    tracing::warn!(
                        upstream = %upstream.name,
                        error = %message,
                        "endpoints file refused: its previous endpoints keep serving"
                    );
                    record.error = Some(Failure::now(message.clone(), None));
                }
                changes.push(EndpointsChange {
                    upstream: upstream.name.clone(),
                    result: EndpointsResult::Refused,
                    error: Some(message),
                });
            }
        }
    }
    (next, changes)
}

/// Brings `records` in line with the config in force: a record per upstream with an
/// endpoints file (a new file, or an upstream new to the config, starts afresh).
pub(super) fn follow(config: &Config, records: &mut BTreeMap<String, EndpointsFileRecord>) {
    records.retain(|name, record| {
        config
            .upstreams
            .iter()
            .any(|u| u.name == *name && u.endpoints_file.as_ref() == Some(&record.path))
    });
    for upstream in &config.upstreams {
        if let Some(path) = &upstream.endpoints_file {
            records
                .entry(upstream.name.clone())
                .or_insert_with(|| fresh_record(Some(path.clone())));
        }
    }
}

fn fresh_record(path: Option<PathBuf>) -> EndpointsFileRecord {
    EndpointsFileRecord {
        path: path.unwrap_or_default(),
        loaded_at: rfc3339(SystemTime::now()),
        error: None,
    }
}

/// The addresses `after` adds to `before`, and those it drops.
fn difference(before: &[Endpoint], after: &[Endpoint]) -> (Vec<String>, Vec<String>) {
    let missing_from =
        |list: &[Endpoint], e: &Endpoint| list.iter().all(|o| o.authority != e.authority);
    let added = after
        .iter()
        .filter(|e| missing_from(before, e))
        .map(|e| e.authority.to_string())
        .collect();
    let removed = before
        .iter()
        .filter(|e| missing_from(after, e))
        .map(|e| e.authority.to_string())
        .collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_changed_file_applies_and_a_broken_one_keeps_the_list() {
        let dir = std::env::temp_dir().join(format!("weir-refresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users.json");
        std::fs::write(&file, r#"["127.0.0.1:9001"]"#).unwrap();
        let text = format!(
            "[[upstream]]\nname = \"users\"\nendpoints_file = \"{}\"\n\
             [[upstream]]\nname = \"static\"\nendpoints = [\"127.0.0.1:9\"]\n",
            file.display()
        );
        let config = Config::parse(Path::new("weir.toml"), &text).expect("valid");
        let mut records = BTreeMap::new();
        follow(&config, &mut records);
        assert_eq!(records.len(), 1);

        let (next, changes) = refresh(&config, &mut records);
        assert!(
            next.is_none() && changes.is_empty(),
            "unchanged: {changes:?}"
        );

        std::fs::write(
            &file,
            r#"["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 2}]"#,
        )
        .unwrap();
        let (next, changes) = refresh(&config, &mut records);
        let next = next.expect("a new list");
        assert_eq!(next.upstreams[0].endpoints.len(), 2);
        assert_eq!(next.upstreams[0].endpoints[1].weight, 2);
        assert_eq!(next.upstreams[1], config.upstreams[1]);
        assert_eq!(changes[0].result, EndpointsResult::Applied);

        std::fs::write(&file, r#"["127.0.0.1:9001", "#).unwrap();
        let (broken, changes) = refresh(&next, &mut records);
        assert!(broken.is_none());
        assert_eq!(changes[0].result, EndpointsResult::Refused);
        let error = records["users"].error.clone().expect("recorded");
        assert!(error.message.contains("users.json"), "{}", error.message);

        std::fs::remove_file(&file).unwrap();
        let (missing, changes) = refresh(&next, &mut records);
        assert!(missing.is_none());
        assert!(
            changes[0].error.as_deref().unwrap().contains("cannot read"),
            "{changes:?}"
        );

        std::fs::write(
            &file,
            r#"["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 2}]"#,
        )
        .unwrap();
        let (same, changes) = refresh(&next, &mut records);
        assert!(same.is_none() && changes.is_empty());
        assert!(records["users"].error.is_none(), "cleared once it checks");
    }
}
