//! The planner as a table: each row is a sequence of what the files hold, reload after
//! reload, with the plan expected at each step. A small simulator carries what serves
//! from one step to the next, as the reloader does.

use std::collections::BTreeMap;

use super::*;

/// A test config: per route, `(plugin, config)` pairs. A plugin config `refuse=X`
/// is refused by version `X`; `needs=X` by every version but `X`.
type Routes = &'static [&'static [(&'static str, &'static str)]];

/// What the config file holds at a step.
#[derive(Clone, Copy)]
enum ConfigFile {
    Valid(Routes),
    Invalid(&'static str),
}

/// One reload: the files as they are, and what the plan must say.
struct Row {
    config: ConfigFile,
    /// Plugin files: `(name, version)`; version `bad` does not load; absent: missing.
    files: &'static [(&'static str, &'static str)],
    /// `applied`, `unchanged`, `refused: <part of the reason>`.
    expect_config: &'static str,
    /// What serves after the step, `name=version` in name order; `-` for nothing.
    expect_serving: &'static str,
    /// Plugin outcomes, `name:outcome` in name order, outcome one of `unchanged`,
    /// `loaded`, `refused`, `missing`.
    expect_plugins: &'static str,
}

const BASE: Routes = &[&[("swap", "")]];
const LATE: Routes = &[&[("swap", "")], &[("late", "")]];
const REFUSE_B: Routes = &[&[("swap", "refuse=b")]];
const NEEDS_B: Routes = &[&[("swap", "needs=b")]];
const NO_PLUGINS: Routes = &[&[]];

fn uses(routes: Routes) -> Uses {
    Uses {
        routes: routes
            .iter()
            .map(|chain| chain.iter().map(|(name, _)| (*name).to_owned()).collect())
            .collect(),
    }
}

fn read_error(name: &str) -> PluginError {
    PluginError::Read {
        name: name.to_owned(),
        path: format!("/plugins/{name}.wasm").into(),
        reason: "No such file or directory".to_owned(),
    }
}

/// Answers a configure question the way the test plugins would.
fn answer(routes: Routes, question: &Use) -> Result<(), PluginError> {
    let (name, config) = routes[question.route][question.index];
    assert_eq!(name, question.name);
    let refused = match config.split_once('=') {
        Some(("refuse", version)) => question.version == version,
        Some(("needs", version)) => question.version != version,
        _ => false,
    };
    if refused {
        Err(PluginError::Config {
            route: format!("r{}", question.route),
            name: name.to_owned(),
            reason: format!("version {} refuses `{config}`", question.version),
        })
    } else {
        Ok(())
    }
}

/// What serves between reloads.
#[derive(Default)]
struct World {
    in_force: Option<Routes>,
    serving: BTreeMap<String, Version>,
}

impl World {
    /// Plans one reload of `row`'s files and moves to what it serves.
    fn reload(&mut self, row: &Row) -> (Plan, usize) {
        let (candidate, candidate_routes) = match row.config {
            ConfigFile::Invalid(message) => (Candidate::Invalid(message.to_owned()), None),
            ConfigFile::Valid(routes) if Some(routes) == self.in_force => {
                (Candidate::Unchanged, None)
            }
            ConfigFile::Valid(routes) => (Candidate::New(uses(routes)), Some(routes)),
        };
        let mut named: Vec<&str> = Vec::new();
        for routes in self.in_force.iter().chain(candidate_routes.iter()) {
            named.extend(routes.iter().flat_map(|c| c.iter().map(|(n, _)| *n)));
        }
        let files = named
            .into_iter()
            .map(|name| {
                let file = match row.files.iter().find(|(n, _)| *n == name) {
                    None => File::Missing(read_error(name)),
                    Some((_, "bad")) => File::Read {
                        version: "bad".to_owned(),
                        load: Err(PluginError::Compile {
                            name: name.to_owned(),
                            reason: "not a component".to_owned(),
                        }),
                    },
                    Some((_, version)) => File::Read {
                        version: (*version).to_owned(),
                        load: Ok(()),
                    },
                };
                (name.to_owned(), file)
            })
            .collect();
        let input = Input {
            serving: self.serving.clone(),
            in_force: self.in_force.map(uses),
            candidate,
            files,
        };
        let mut answers = Answers::new();
        let mut rounds = 0;
        let plan = loop {
            match plan(&input, &answers) {
                Step::Done(plan) => break plan,
                Step::Configure(asks) => {
                    rounds += 1;
                    assert!(rounds < 10, "the planner keeps asking");
                    for question in asks {
                        assert!(
                            !answers.contains_key(&question),
                            "asked twice: {question:?}"
                        );
                        let routes = match question.side {
                            Side::Candidate => candidate_routes.expect("a candidate"),
                            Side::InForce => self.in_force.expect("a config in force"),
                        };
                        let result = answer(routes, &question);
                        answers.insert(question, result);
                    }
                }
            }
        };
        if let Some((side, versions)) = &plan.serve {
            self.in_force = match side {
                Side::Candidate => candidate_routes,
                Side::InForce => self.in_force,
            };
            self.serving = versions.clone();
        }
        (plan, answers.len())
    }
}

fn config_summary(plan: &Plan) -> String {
    match &plan.config {
        ConfigOutcome::NoFile => "none".to_owned(),
        ConfigOutcome::Unchanged => "unchanged".to_owned(),
        ConfigOutcome::Applied => "applied".to_owned(),
        ConfigOutcome::Refused(refusal) => format!("refused: {refusal}"),
    }
}

fn serving_summary(world: &World) -> String {
    if world.serving.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = world
        .serving
        .iter()
        .map(|(name, version)| format!("{name}={version}"))
        .collect();
    parts.join(" ")
}

fn plugins_summary(plan: &Plan) -> String {
    let parts: Vec<String> = plan
        .plugins
        .iter()
        .map(|(name, outcome)| {
            let word = match outcome {
                PluginOutcome::Unchanged => "unchanged",
                PluginOutcome::Loaded { .. } => "loaded",
                PluginOutcome::Refused { .. } => "refused",
                PluginOutcome::Missing { .. } => "missing",
            };
            format!("{name}:{word}")
        })
        .collect();
    parts.join(" ")
}

/// Runs `rows` in order from an empty gateway; the first row is the startup.
fn run(table: &str, rows: &[Row]) {
    let mut world = World::default();
    for (i, row) in rows.iter().enumerate() {
        let (plan, _) = world.reload(row);
        let what = format!("{table}, step {i}");
        let config = config_summary(&plan);
        match row.expect_config.strip_prefix("refused: ") {
            Some(part) => assert!(
                config.starts_with("refused: ") && config.contains(part),
                "{what}: config {config:?}, expected {:?}",
                row.expect_config
            ),
            None => assert_eq!(config, row.expect_config, "{what}: config"),
        }
        assert_eq!(
            serving_summary(&world),
            row.expect_serving,
            "{what}: serving"
        );
        assert_eq!(
            plugins_summary(&plan),
            row.expect_plugins,
            "{what}: plugins"
        );
    }
}

const fn row(
    config: ConfigFile,
    files: &'static [(&'static str, &'static str)],
    expect_config: &'static str,
    expect_serving: &'static str,
    expect_plugins: &'static str,
) -> Row {
    Row {
        config,
        files,
        expect_config,
        expect_serving,
        expect_plugins,
    }
}

use ConfigFile::{Invalid, Valid};

#[test]
#[rustfmt::skip]
fn config_first_then_the_file_it_waits_for() {
    run(
        "config first",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(LATE), &[("swap", "a")], "refused: late.wasm", "swap=a", "swap:unchanged"),
            row(Valid(LATE), &[("swap", "a"), ("late", "b")], "applied", "late=b swap=a", "late:loaded swap:unchanged"),
            row(Valid(LATE), &[("swap", "a"), ("late", "b")], "unchanged", "late=b swap=a", "late:unchanged swap:unchanged"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn file_first_then_the_config_naming_it() {
    run(
        "file first",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(BASE), &[("swap", "a"), ("late", "b")], "unchanged", "swap=a", "swap:unchanged"),
            row(Valid(LATE), &[("swap", "a"), ("late", "b")], "applied", "late=b swap=a", "late:loaded swap:unchanged"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn config_and_file_at_once() {
    run(
        "both at once",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(LATE), &[("swap", "b"), ("late", "b")], "applied", "late=b swap=b", "late:loaded swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn file_refused_then_fixed() {
    run(
        "file refused then fixed",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(BASE), &[("swap", "bad")], "unchanged", "swap=a", "swap:refused"),
            // Asked again: refused again, not replayed from memory.
            row(Valid(BASE), &[("swap", "bad")], "unchanged", "swap=a", "swap:refused"),
            row(Valid(BASE), &[("swap", "b")], "unchanged", "swap=b", "swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn config_refused_then_fixed() {
    run(
        "config refused then fixed",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Invalid("unknown key `rout`"), &[("swap", "a")], "refused: rout", "swap=a", "swap:unchanged"),
            row(Invalid("unknown key `rout`"), &[("swap", "b")], "refused: rout", "swap=b", "swap:loaded"),
            row(Valid(LATE), &[("swap", "b"), ("late", "a")], "applied", "late=a swap=b", "late:loaded swap:unchanged"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn plugin_removed_while_a_route_names_it() {
    run(
        "removed while named",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(BASE), &[], "unchanged", "swap=a", "swap:missing"),
            // A new config still naming it keeps the version loaded last.
            row(Valid(LATE), &[("late", "b")], "applied", "late=b swap=a", "late:loaded swap:missing"),
            // Once no route names it, it is forgotten; naming it again needs the file.
            row(Valid(NO_PLUGINS), &[("late", "b")], "applied", "-", ""),
            row(Valid(BASE), &[("late", "b")], "refused: swap.wasm", "-", ""),
            row(Valid(BASE), &[("swap", "b")], "applied", "swap=b", "swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn a_swap_racing_a_config_change() {
    run(
        "swap racing config",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            // The new config refuses the new version: the config applies with the old.
            row(Valid(REFUSE_B), &[("swap", "b")], "applied", "swap=a", "swap:refused"),
            // The config changes so that b fits: both apply at once.
            row(Valid(BASE), &[("swap", "b")], "applied", "swap=b", "swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn a_config_that_needs_a_new_version_waits_for_it() {
    run(
        "config needs a new version",
        &[
            row(Valid(BASE), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Valid(NEEDS_B), &[("swap", "a")], "refused: version a refuses", "swap=a", "swap:unchanged"),
            row(Valid(NEEDS_B), &[("swap", "b")], "applied", "swap=b", "swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn a_new_version_is_tried_against_the_config_in_force_when_the_file_is_refused() {
    run(
        "version under a refused config",
        &[
            row(Valid(REFUSE_B), &[("swap", "a")], "applied", "swap=a", "swap:loaded"),
            row(Invalid("bad toml"), &[("swap", "b")], "refused: bad toml", "swap=a", "swap:refused"),
            row(Invalid("bad toml"), &[("swap", "c")], "refused: bad toml", "swap=c", "swap:loaded"),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn startup_refuses_a_config_whose_plugins_cannot_all_be_built() {
    run(
        "startup",
        &[row(Valid(LATE), &[("swap", "a")], "refused: late.wasm", "-", "")],
    );
    // Every problem at once: a missing file and a plugin refusing its route's config.
    const BOTH: Routes = &[&[("swap", "needs=b")], &[("late", "")]];
    run(
        "startup, two problems",
        &[row(Valid(BOTH), &[("swap", "a")], "refused: plugin `late`: cannot read /plugins/late.wasm: No such file or directory; route `r0`: plugin `swap` refused its config: version a refuses", "-", "")],
    );
    run(
        "startup, plugin refuses its config",
        &[row(Valid(NEEDS_B), &[("swap", "a")], "refused: version a refuses", "-", "")],
    );
}

#[test]
#[rustfmt::skip]
fn the_config_in_force_with_its_versions_is_never_configured_again() {
    let mut world = World::default();
    let start = row(Valid(LATE), &[("swap", "a"), ("late", "a")], "applied", "", "");
    world.reload(&start);
    // Nothing changed: the uses asked about are those of the config in force with the
    // versions serving, which the chain builder takes from the serving snapshot.
    let (plan, asked) = world.reload(&start);
    assert!(!plan.swaps());
    assert_eq!(asked, 2);
}
