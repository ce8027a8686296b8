//! The one chain builder, used by `weir check`, startup and every reload: it reads the
//! plugin files a config names, runs the [planner](super::plan) and answers its
//! questions by configuring plugins (`init` with each route's config), then assembles
//! the served config's chains from the answers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::plan::{self, Answers, Candidate, File, Input, Plan, Side, Step, Use, Uses, Version};
use crate::config::Config;
use crate::plugin::{ChainEntry, LoadedPlugin, PluginError, PluginHost};
use crate::snapshot::Snapshot;

/// Each route's chain, in route order.
pub(crate) type Chains = Vec<Arc<[ChainEntry]>>;

impl Uses {
    /// The plugin uses of `config`'s routes.
    pub(crate) fn of(config: &Config) -> Uses {
        Uses {
            routes: config
                .routes
                .iter()
                .map(|r| r.plugins.iter().map(|u| u.name.clone()).collect())
                .collect(),
        }
    }
}

/// Loaded plugins by name and version: those serving and those read by this reload.
pub(crate) type Loaded = HashMap<(String, Version), Arc<LoadedPlugin>>;

/// Reads `NAME.wasm` in `dir` for each of `names` and loads the versions not in
/// `loaded` (adding them). A version that failed to load is in `failed` and is not
/// compiled again: loading depends on the bytes alone.
pub(crate) async fn read_plugins(
    host: &PluginHost,
    dir: &Path,
    names: &[&str],
    loaded: &mut Loaded,
    failed: &mut HashMap<(String, Version), PluginError>,
) -> BTreeMap<String, File> {
    let mut files = BTreeMap::new();
    for &name in names {
        let path = dir.join(format!("{name}.wasm"));
        let file = match std::fs::read(&path) {
            Err(e) => {
                let mut reason = e.to_string();
                if e.kind() == std::io::ErrorKind::NotFound
                    && let Some(hint) = near_miss_hint(dir, name)
                {
                    reason = format!("{reason}; {hint}");
                }
                File::Missing(PluginError::Read {
                    name: name.to_owned(),
                    path,
                    reason,
                })
            }
            Ok(bytes) => {
                let key = (name.to_owned(), crate::plugin::version_of(&bytes));
                let load = if loaded.contains_key(&key) {
                    Ok(())
                } else if let Some(error) = failed.get(&key) {
                    Err(error.clone())
                } else {
                    match host.load_bytes(name, &path, bytes).await {
                        Ok(plugin) => {
                            loaded.insert(key.clone(), plugin);
                            Ok(())
                        }
                        Err(error) => {
                            failed.insert(key.clone(), error.clone());
                            Err(error)
                        }
                    }
                };
                File::Read {
                    version: key.1,
                    load,
                }
            }
        };
        files.insert(name.to_owned(), file);
    }
    files
}

/// When plugin `name` has no `NAME.wasm` in `dir`, the files there whose names differ
/// from it only by `_` for `-` (the way cargo names a crate's output: crate
/// `tenant-gate` builds `tenant_gate.wasm`) or by case, as a sentence saying which to
/// rename. `None` when there is no such file.
fn near_miss_hint(dir: &Path, name: &str) -> Option<String> {
    let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let wanted = fold(&format!("{name}.wasm"));
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|file| fold(file) == wanted && dir.join(file).is_file())
        .collect();
    found.sort();
    let listed: Vec<String> = found.iter().map(|f| format!("`{f}`")).collect();
    let there = match listed.as_slice() {
        [] => return None,
        [one] => format!("{one} is there: rename it"),
        [first @ .., last] => format!(
            "{} and {last} are there: rename one of them",
            first.join(", ")
        ),
    };
    Some(format!(
        "{there} to `{name}.wasm` (the file must be named exactly as the plugin; cargo \
         writes a crate's `-` as `_`)"
    ))
}

/// The configs a plan is about.
pub(crate) struct Configs<'a> {
    /// The config file's new config.
    pub(crate) candidate: Option<&'a Config>,
    /// The config in force.
    pub(crate) in_force: Option<&'a Config>,
}

/// A plan and, when it serves a config, that config's chains.
pub(crate) struct Built {
    /// What the reload does.
    pub(crate) plan: Plan,
    /// One chain per route of the served config, every use in it.
    pub(crate) chains: Option<Chains>,
}

/// Plans `input` and builds the served config's chains. Entries of `previous` with the
/// same plugin version and use are kept (with their idle instances); other uses are
/// configured through `host`.
pub(crate) async fn build(
    host: Option<&PluginHost>,
    input: &Input,
    configs: &Configs<'_>,
    loaded: &Loaded,
    previous: Option<&Snapshot>,
) -> Built {
    let mut answers = Answers::new();
    let mut entries: BTreeMap<Use, ChainEntry> = BTreeMap::new();
    let plan = loop {
        let asks = match plan::plan(input, &answers) {
            Step::Done(plan) => break plan,
            Step::Configure(asks) => asks,
        };
        for question in asks {
            let answer = match configure(host, &question, configs, loaded, previous).await {
                Ok(entry) => {
                    entries.insert(question.clone(), entry);
                    Ok(())
                }
                Err(error) => Err(error),
            };
            answers.insert(question, answer);
        }
    };
    let chains = plan.serve.as_ref().and_then(|(side, versions)| {
        let config = side_config(configs, *side)?;
        let chains = config
            .routes
            .iter()
            .enumerate()
            .map(|(route, r)| {
                r.plugins
                    .iter()
                    .enumerate()
                    .filter_map(|(index, usage)| {
                        let question = Use {
                            side: *side,
                            route,
                            index,
                            name: usage.name.clone(),
                            version: versions.get(&usage.name)?.clone(),
                        };
                        entries.remove(&question)
                    })
                    .collect()
            })
            .collect();
        Some(chains)
    });
    Built { plan, chains }
}

fn side_config<'a>(configs: &Configs<'a>, side: Side) -> Option<&'a Config> {
    match side {
        Side::Candidate => configs.candidate,
        Side::InForce => configs.in_force,
    }
}

/// Configures one use, or takes it over from `previous` when nothing about it changed.
async fn configure(
    host: Option<&PluginHost>,
    question: &Use,
    configs: &Configs<'_>,
    loaded: &Loaded,
    previous: Option<&Snapshot>,
) -> Result<ChainEntry, PluginError> {
    let unknown = |reason: &str| PluginError::Link {
        name: question.name.clone(),
        reason: reason.to_owned(),
    };
    let config = side_config(configs, question.side).ok_or_else(|| unknown("no such config"))?;
    let route = &config.routes[question.route];
    let usage = &route.plugins[question.index];
    let plugin = loaded
        .get(&(question.name.clone(), question.version.clone()))
        .ok_or_else(|| unknown("this version is not loaded"))?;
    let kept = previous.and_then(|p| {
        p.chains
            .iter()
            .flat_map(|c| c.iter())
            .find(|e| Arc::ptr_eq(&e.plugin, plugin) && e.usage == *usage)
            .cloned()
    });
    match (kept, host) {
        (Some(entry), _) => Ok(entry),
        (None, Some(host)) => host.configure(&route.name, plugin.clone(), usage).await,
        (None, None) => Err(unknown("there is no plugin host")),
    }
}

/// What `weir check` and startup build: every plugin `config` names, loaded from its
/// file and configured for each route. Returns the chains and the version of each
/// plugin, or every problem found.
pub(crate) async fn build_config(
    host: Option<&PluginHost>,
    config: &Config,
) -> Result<(Chains, BTreeMap<String, Arc<LoadedPlugin>>), Vec<PluginError>> {
    let uses = Uses::of(config);
    let names = uses.names();
    let mut loaded = Loaded::new();
    let files = match host {
        Some(host) if !names.is_empty() => {
            read_plugins(
                host,
                &config.plugins.dir,
                &names,
                &mut loaded,
                &mut HashMap::new(),
            )
            .await
        }
        _ => BTreeMap::new(),
    };
    let input = Input {
        serving: BTreeMap::new(),
        in_force: None,
        candidate: Candidate::New(uses),
        files,
    };
    let configs = Configs {
        candidate: Some(config),
        in_force: None,
    };
    let built = build(host, &input, &configs, &loaded, None).await;
    let errors = built.plan.errors();
    match (built.chains, built.plan.serve) {
        (Some(chains), Some((_, versions))) => {
            let plugins = versions
                .into_iter()
                .filter_map(|(name, version)| {
                    let plugin = loaded.get(&(name.clone(), version))?.clone();
                    Some((name, plugin))
                })
                .collect();
            Ok((chains, plugins))
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::near_miss_hint;

    /// A fresh directory holding empty files named `files`.
    fn dir_with(test: &str, files: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        dir
    }

    #[test]
    fn a_file_named_the_cargo_way_or_in_another_case_is_pointed_at() {
        let dir = dir_with(
            "near-miss",
            &[
                "tenant_gate.wasm",
                "Auth.WASM",
                "rate_limit.wasm",
                "other.wasm",
            ],
        );
        assert_eq!(
            near_miss_hint(&dir, "tenant-gate").as_deref(),
            Some(
                "`tenant_gate.wasm` is there: rename it to `tenant-gate.wasm` (the file must \
                 be named exactly as the plugin; cargo writes a crate's `-` as `_`)"
            )
        );
        let auth = near_miss_hint(&dir, "auth").unwrap();
        assert!(
            auth.starts_with("`Auth.WASM` is there: rename it to `auth.wasm`"),
            "{auth}"
        );
        // The other way round: the route says `_`, the file has `-`.
        std::fs::write(dir.join("ip-filter.wasm"), b"").unwrap();
        let ip = near_miss_hint(&dir, "ip_filter").unwrap();
        assert!(
            ip.starts_with("`ip-filter.wasm` is there: rename it to `ip_filter.wasm`"),
            "{ip}"
        );
        // No near miss, or only a near miss that is not a file.
        assert_eq!(near_miss_hint(&dir, "absent"), None);
        std::fs::create_dir(dir.join("a_dir.wasm")).unwrap();
        assert_eq!(near_miss_hint(&dir, "a-dir"), None);
        assert_eq!(
            near_miss_hint(&dir.join("nonexistent"), "tenant-gate"),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_near_misses_are_all_named() {
        let dir = dir_with("near-misses", &["tenant_gate.wasm", "Tenant-Gate.wasm"]);
        let hint = near_miss_hint(&dir, "tenant-gate").unwrap();
        assert!(
            hint.starts_with(
                "`Tenant-Gate.wasm` and `tenant_gate.wasm` are there: rename one of them to \
                 `tenant-gate.wasm`"
            ),
            "{hint}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
