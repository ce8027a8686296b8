//! The reload planner: what was read (the config file, the plugin files) and what is
//! serving, in; what to do, out. Plain data, no I/O and no clocks, so every order of
//! events is a row in a table test.
//!
//! The planner cannot run a plugin's `init` itself, so [`plan`] either asks for the
//! uses it needs configured ([`Step::Configure`]) or returns the [`Plan`]. The caller
//! (the chain builder) answers and calls it again with the answers so far: answers
//! only grow, and each call asks only what is unanswered, so the exchange ends.
//!
//! The rules, in order:
//! 1. A config file that changed is tried first. Each plugin it names runs the file's
//!    version when that version loads and accepts every route's config; else the
//!    version serving now. A plugin with neither refuses the config whole: a route
//!    never runs with fewer plugins than its config names.
//! 2. A refused (or unchanged) config leaves the config in force, tried the same way:
//!    a new plugin version that fits it still goes live.
//! 3. Nothing is remembered between reloads: every reload plans from what it read.

use std::collections::{BTreeMap, BTreeSet};

use crate::plugin::PluginError;

/// A plugin version: the SHA-256 of its file, in hex.
pub(crate) type Version = String;

/// A config as the planner sees it: per route, the plugins of its chain in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    /// Route `i`'s chain: plugin names.
    pub(crate) routes: Vec<Vec<String>>,
}

impl Uses {
    /// The plugins named, each once, in order of first use.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.routes
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|name| seen.insert(*name))
            .collect()
    }
}

/// The config file as read.
#[derive(Debug, Clone, Default)]
pub(crate) enum Candidate {
    /// There is no config file (a config built in code): nothing to read.
    #[default]
    NoFile,
    /// The file holds the config in force.
    Unchanged,
    /// The file could not be read, parsed or validated.
    Invalid(String),
    /// A new config, valid on its own; whether its plugins build is for the plan.
    New(Uses),
}

/// One plugin file as read.
#[derive(Debug, Clone)]
pub(crate) enum File {
    /// `NAME.wasm` could not be read.
    Missing(PluginError),
    /// Read: its version, and whether it loads (compiles, fits the ABI).
    Read {
        /// The file's version.
        version: Version,
        /// Why it does not load, if it does not.
        load: Result<(), PluginError>,
    },
}

/// Everything a reload knows when it plans.
#[derive(Debug, Clone, Default)]
pub(crate) struct Input {
    /// The version serving, per plugin (none yet at startup).
    pub(crate) serving: BTreeMap<String, Version>,
    /// The config in force (`None` at startup and in `weir check`).
    pub(crate) in_force: Option<Uses>,
    /// The config file.
    pub(crate) candidate: Candidate,
    /// Every plugin file the in-force or the candidate config names.
    pub(crate) files: BTreeMap<String, File>,
}

/// Which config a question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// The config file's new config.
    Candidate,
    /// The config in force.
    InForce,
}

/// One use of a plugin to configure: use `index` of route `route` in `side`'s config,
/// with plugin version `version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Use {
    /// The config.
    pub(crate) side: Side,
    /// The route, by index.
    pub(crate) route: usize,
    /// The use in the route's chain, by index.
    pub(crate) index: usize,
    /// The plugin.
    pub(crate) name: String,
    /// The version to configure.
    pub(crate) version: Version,
}

/// What configuring each use gave: `Ok` when the plugin accepted the route's config.
pub(crate) type Answers = BTreeMap<Use, Result<(), PluginError>>;

/// What the planner needs next.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Configure these uses and ask again.
    Configure(Vec<Use>),
    /// The plan.
    Done(Plan),
}

/// What a reload does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// What happens to the config file.
    pub(crate) config: ConfigOutcome,
    /// The config whose chains serve next, with the version of each plugin it names;
    /// `None` when no config can be built (only at startup, or a broken state).
    pub(crate) serve: Option<(Side, BTreeMap<String, Version>)>,
    /// Per plugin the served config names: what happened to it.
    pub(crate) plugins: BTreeMap<String, PluginOutcome>,
}

impl Plan {
    /// Whether requests see something new: another config, or another plugin version.
    pub(crate) fn swaps(&self) -> bool {
        matches!(self.config, ConfigOutcome::Applied)
            || self
                .plugins
                .values()
                .any(|p| matches!(p, PluginOutcome::Loaded { .. }))
    }

    /// Why nothing can serve: the candidate's refusal (startup and `weir check`).
    pub(crate) fn errors(&self) -> Vec<PluginError> {
        match &self.config {
            ConfigOutcome::Refused(Refusal::Plugins(errors)) => errors.clone(),
            _ => Vec::new(),
        }
    }
}

/// What happens to the config file.
#[derive(Debug, Clone)]
pub(crate) enum ConfigOutcome {
    /// No config file.
    NoFile,
    /// The file holds the config in force.
    Unchanged,
    /// The new config serves.
    Applied,
    /// The new config was refused; the one in force keeps serving.
    Refused(Refusal),
}

/// Why a config was refused.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// It does not read, parse or validate.
    Invalid(String),
    /// Plugins it names cannot all be built for its routes.
    Plugins(Vec<PluginError>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(message) => f.write_str(message),
            Refusal::Plugins(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

/// What happened to one plugin the served config names.
#[derive(Debug, Clone)]
pub(crate) enum PluginOutcome {
    /// The version serving before serves on; its file is there.
    Unchanged,
    /// The file's version serves from now on.
    Loaded {
        /// The new version.
        version: Version,
        /// The version it replaces (`None`: the plugin is new).
        previous: Option<Version>,
    },
    /// The file's version was refused; `serving` serves on.
    Refused {
        /// The refused version.
        version: Version,
        /// Why.
        error: PluginError,
        /// The version that keeps serving.
        serving: Version,
    },
    /// The file is gone; the version loaded last serves on.
    Missing {
        /// The version that keeps serving.
        serving: Version,
        /// Why the file could not be read.
        error: PluginError,
    },
}

/// The next step of the reload described by `input`, given the `answers` so far.
pub(crate) fn plan(input: &Input, answers: &Answers) -> Step {
    let mut config = match &input.candidate {
        Candidate::NoFile => ConfigOutcome::NoFile,
        Candidate::Unchanged => ConfigOutcome::Unchanged,
        Candidate::Invalid(message) => ConfigOutcome::Refused(Refusal::Invalid(message.clone())),
        Candidate::New(_) => ConfigOutcome::Applied,
    };
    let mut serve = None;
    if let Candidate::New(uses) = &input.candidate {
        match fit(input, Side::Candidate, uses, answers) {
            Fit::Ask(asks) => return Step::Configure(asks),
            Fit::Fits(fitted) => serve = Some((Side::Candidate, uses, fitted)),
            Fit::Refused(errors) => config = ConfigOutcome::Refused(Refusal::Plugins(errors)),
        }
    }
    if serve.is_none()
        && let Some(uses) = &input.in_force
    {
        match fit(input, Side::InForce, uses, answers) {
            Fit::Ask(asks) => return Step::Configure(asks),
            Fit::Fits(fitted) => serve = Some((Side::InForce, uses, fitted)),
            // Every plugin of the config in force has a version serving that accepted
            // its routes: only a broken state gets here, and it keeps serving as is.
            Fit::Refused(_) => {}
        }
    }
    let Some((side, uses, fitted)) = serve else {
        return Step::Done(Plan {
            config,
            serve: None,
            plugins: BTreeMap::new(),
        });
    };
    let plugins = uses
        .names()
        .into_iter()
        .map(|name| (name.to_owned(), outcome(input, name, &fitted)))
        .collect();
    Step::Done(Plan {
        config,
        serve: Some((side, fitted.versions)),
        plugins,
    })
}

/// How a config fits the plugin files.
enum Fit {
    /// These uses need configuring first.
    Ask(Vec<Use>),
    /// It builds with these versions.
    Fits(Fitted),
    /// It cannot be built.
    Refused(Vec<PluginError>),
}

/// A config that builds: the version of each plugin, and the new versions it refused.
struct Fitted {
    versions: BTreeMap<String, Version>,
    refused: BTreeMap<String, (Version, PluginError)>,
}

/// Chooses a version for every plugin `uses` names: the file's when it loads and
/// accepts every use, else the one serving; a plugin with neither refuses the config.
fn fit(input: &Input, side: Side, uses: &Uses, answers: &Answers) -> Fit {
    let mut refused: BTreeMap<String, (Version, PluginError)> = BTreeMap::new();
    // Each turn refuses at least one new version or ends, so this ends.
    loop {
        let mut versions = BTreeMap::new();
        let mut errors = Vec::new();
        for name in uses.names() {
            let serving = input.serving.get(name);
            let file_version = match input.files.get(name) {
                Some(File::Read {
                    version,
                    load: Ok(()),
                }) if !refused.contains_key(name) => Ok(version),
                Some(File::Read {
                    load: Err(error), ..
                }) => Err(error.clone()),
                Some(File::Missing(error)) => Err(error.clone()),
                Some(File::Read { .. }) => Err(refused[name].1.clone()),
                None => Err(PluginError::Link {
                    name: name.to_owned(),
                    reason: "its file was not read".to_owned(),
                }),
            };
            match (file_version, serving) {
                (Ok(version), _) => {
                    versions.insert(name.to_owned(), version.clone());
                }
                (Err(_), Some(serving)) => {
                    versions.insert(name.to_owned(), serving.clone());
                }
                (Err(error), None) => errors.push(error),
            }
        }
        // Uses of plugins with a version are asked about even when others have none, so
        // that a refusal reports every problem together.
        let mut asks = Vec::new();
        let mut failures = Vec::new();
        for (route, chain) in uses.routes.iter().enumerate() {
            for (index, name) in chain.iter().enumerate() {
                let Some(version) = versions.get(name.as_str()) else {
                    continue;
                };
                let question = Use {
                    side,
                    route,
                    index,
                    name: name.clone(),
                    version: version.clone(),
                };
                match answers.get(&question) {
                    None => asks.push(question),
                    Some(Ok(())) => {}
                    Some(Err(error)) => failures.push((question, error.clone())),
                }
            }
        }
        if !asks.is_empty() {
            return Fit::Ask(asks);
        }
        if failures.is_empty() && errors.is_empty() {
            return Fit::Fits(Fitted { versions, refused });
        }
        // A failure with a version new to this reload is that version's fault when a
        // version serves to fall back to; otherwise it is the config's.
        let mut blamed = false;
        for (question, error) in &failures {
            let new = input.serving.get(&question.name) != Some(&question.version);
            if new
                && input.serving.contains_key(&question.name)
                && !refused.contains_key(&question.name)
            {
                refused.insert(
                    question.name.clone(),
                    (question.version.clone(), error.clone()),
                );
                blamed = true;
            }
        }
        if !blamed {
            errors.extend(failures.into_iter().map(|(_, e)| e));
            return Fit::Refused(errors);
        }
    }
}

/// What happened to plugin `name` in a config that fits.
fn outcome(input: &Input, name: &str, fitted: &Fitted) -> PluginOutcome {
    let chosen = &fitted.versions[name];
    let serving = input.serving.get(name);
    if serving != Some(chosen) {
        return PluginOutcome::Loaded {
            version: chosen.clone(),
            previous: serving.cloned(),
        };
    }
    let serving = chosen.clone();
    if let Some((version, error)) = fitted.refused.get(name) {
        return PluginOutcome::Refused {
            version: version.clone(),
            error: error.clone(),
            serving,
        };
    }
    match input.files.get(name) {
        Some(File::Missing(error)) => PluginOutcome::Missing {
            serving,
            error: error.clone(),
        },
        Some(File::Read {
            version,
            load: Err(error),
        }) if *version != serving => PluginOutcome::Refused {
            version: version.clone(),
            error: error.clone(),
            serving,
        },
        _ => PluginOutcome::Unchanged,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
