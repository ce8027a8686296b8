//! `endpoints_file`: an upstream's endpoints read from a JSON file that something else
//! keeps current (consul-template, a Kubernetes endpoint sync, a script), in the forms
//! `endpoints` accepts and checked by the same rules. The config loader reads it once;
//! the reloader reads it again whenever it changes (see `crate::reload`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Balancer;
use super::schema_upstream::EndpointEntry;
use super::upstream::{Endpoint, Upstream};
use super::validate_upstream::{EntryProblem, MAX_HASH_WEIGHT_SUM, check_entry};

/// Why an endpoints file cannot be used (the previous list, if any, keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum EndpointsFileError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read endpoints file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a JSON array of `"host:port"` strings and
    /// `{"address": ..., "weight": N}` objects.
    #[error(
        "endpoints file {} is not a JSON array of \"host:port\" strings or \
         {{\"address\": \"host:port\", \"weight\": N}} objects: {source}",
        path.display()
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },
    /// The array is empty: the upstream would have nothing to send to.
    #[error("endpoints file {} lists no endpoints", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Entries break the rules `endpoints` has (address form, weight range, duplicates,
    /// the `consistent_hash` weight bound).
    #[error("endpoints file {}: {}", path.display(), problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One message per problem, naming the entry.
        problems: Vec<String>,
    },
}

/// Reads and checks the endpoints file at `path` for an upstream balanced by
/// `balancer`.
pub(super) fn read(path: &Path, balancer: Balancer) -> Result<Vec<Endpoint>, EndpointsFileError> {
    let text = std::fs::read(path).map_err(|source| EndpointsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let entries: Vec<EndpointEntry> =
        serde_json::from_slice(&text).map_err(|source| EndpointsFileError::Json {
            path: path.to_owned(),
            source,
        })?;
    if entries.is_empty() {
        return Err(EndpointsFileError::Empty {
            path: path.to_owned(),
        });
    }
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    let mut endpoints = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match check_entry(entry, &mut seen) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(found) => problems.extend(found.into_iter().map(|p| match p {
                EntryProblem::Weight(why) | EntryProblem::Address(why) => {
                    format!("entry {i}: {why}")
                }
            })),
        }
    }
    if balancer == Balancer::ConsistentHash {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        if total > MAX_HASH_WEIGHT_SUM {
            problems.push(format!(
                "the weights of a `consistent_hash` upstream add up to {total}; at most \
                 {MAX_HASH_WEIGHT_SUM} (scale them down: only their ratios matter)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(endpoints)
    } else {
        Err(EndpointsFileError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

impl Upstream {
    /// Reads this upstream's endpoints file again: `None` when it has none.
    pub fn reread_endpoints(&self) -> Option<Result<Vec<Endpoint>, EndpointsFileError>> {
        let path = self.endpoints_file.as_deref()?;
        Some(read(path, self.balancer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("weir-endpoints-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn both_forms_read_with_their_weights() {
        let path = file(r#"["127.0.0.1:9001", {"address": "api.internal:80", "weight": 3}]"#);
        let endpoints = read(&path, Balancer::RoundRobin).expect("valid");
        let got: Vec<(String, u32)> = endpoints
            .iter()
            .map(|e| (e.authority.to_string(), e.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:9001".to_owned(), 1),
                ("api.internal:80".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("", "is not a JSON array"),
            ("{\"address\": \"a:1\"}", "is not a JSON array"),
            ("[\"a:1\",", "line 1 column"),
            ("[{\"adress\": \"a:1\"}]", "unknown field `adress`"),
            ("[]", "lists no endpoints"),
            (
                "[\"a:1\", \"a:1\"]",
                "entry 1: endpoint `a:1` is listed twice",
            ),
            ("[\"nope\"]", "entry 0: `nope` is not an endpoint address"),
            (
                "[{\"address\": \"a:1\", \"weight\": 0}]",
                "entry 0: weight 0 is out of range",
            ),
        ];
        for (text, expected) in cases {
            let path = file(text);
            let error = read(&path, Balancer::RoundRobin)
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
        let missing = std::env::temp_dir().join("weir-no-such-endpoints.json");
        let error = read(&missing, Balancer::RoundRobin).expect_err("missing");
        assert!(
            error.to_string().starts_with("cannot read endpoints file"),
            "{error}"
        );
        let heavy = file(
            r#"[{"address": "a:1", "weight": 1000}, {"address": "b:1", "weight": 1000}, {"address": "c:1", "weight": 1000}, {"address": "d:1", "weight": 1000}, {"address": "e:1", "weight": 1000}]"#,
        );
        assert!(read(&heavy, Balancer::RoundRobin).is_ok());
        let error = read(&heavy, Balancer::ConsistentHash).expect_err("too heavy");
        assert!(error.to_string().contains("add up to 5000"), "{error}");
    }
}
