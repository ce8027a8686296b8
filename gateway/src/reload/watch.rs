//! Watching the config file, the plugins directory and the TLS certificate, key and CA
//! files (inotify on Linux, through `notify`), debounced so that a file written in
//! several steps is acted on once.
//!
//! Directories are watched, not files: an editor's or `cp`'s rewrite, an atomic
//! rename into place and a Kubernetes ConfigMap update (the `..data` symlink swapped
//! in the mounted directory) all show up as events in the directory. Each batch of
//! relevant events asks for a reload, which compares contents, so a spurious event
//! costs a re-read and nothing else.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc::UnboundedSender;

use super::Trigger;
use crate::config::Config;

/// What to watch: a directory, and which entries in it matter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    dir: PathBuf,
    entries: Entries,
}

/// The entries of a watched directory that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entries {
    /// Files with these names: the config file, TLS certificates, keys and CA bundles,
    /// endpoints files.
    Named(Vec<OsString>),
    /// Every `*.wasm` (the plugins directory).
    Wasm,
}

impl Watched {
    fn matches(&self, path: &Path) -> bool {
        if path.parent() != Some(self.dir.as_path()) {
            return false;
        }
        let Some(name) = path.file_name() else {
            return false;
        };
        // `..data` and friends: a Kubernetes ConfigMap or Secret volume swapping its
        // contents.
        if name.to_string_lossy().starts_with("..") {
            return true;
        }
        match &self.entries {
            Entries::Named(files) => files.iter().any(|f| f == name),
            Entries::Wasm => path.extension() == Some(OsStr::new("wasm")),
        }
    }
}

/// Watches the directories a config's files live in; each debounced change asks for a
/// reload. [`Watcher::follow`] moves it to a reloaded config's files.
pub(super) struct Watcher {
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    /// What the event handler tests events against.
    watched: Arc<Mutex<Vec<Watched>>>,
    /// The directories watched now.
    dirs: BTreeSet<PathBuf>,
}

/// The files `config` reads and the directories they are in: the config file, the
/// plugins directory, the TLS files (the listener's and the upstreams') and the
/// upstreams' endpoints files.
fn watch_list(config: &Config) -> Vec<Watched> {
    let mut watched: Vec<Watched> = Vec::new();
    if config.source.is_file() {
        add_named(&mut watched, [config.source.as_path()]);
    }
    add_named(&mut watched, config.tls_files());
    add_named(&mut watched, config.endpoint_files());
    if config.plugins.dir.is_dir() {
        watched.push(Watched {
            dir: absolute(&config.plugins.dir),
            entries: Entries::Wasm,
        });
    }
    watched
}

/// Adds each of `files` by name to the entry for its directory.
fn add_named<P: AsRef<Path>>(watched: &mut Vec<Watched>, files: impl IntoIterator<Item = P>) {
    for path in files {
        let path = path.as_ref();
        let Some(name) = path.file_name() else {
            continue;
        };
        let dir = absolute(path.parent().unwrap_or(Path::new(".")));
        let entry = watched
            .iter_mut()
            .find(|w| w.dir == dir && matches!(w.entries, Entries::Named(_)));
        match entry {
            Some(Watched {
                entries: Entries::Named(names),
                ..
            }) => {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            _ => watched.push(Watched {
                dir,
                entries: Entries::Named(vec![name.to_owned()]),
            }),
        }
    }
}

/// Starts watching `config`'s files; each debounced change asks for a reload on
/// `triggers`. `None` (with a warning) when nothing can be watched.
pub(super) fn start(config: &Config, triggers: UnboundedSender<Trigger>) -> Option<Watcher> {
    let uses_plugins = config.routes.iter().any(|r| !r.plugins.is_empty());
    if uses_plugins && !config.plugins.dir.is_dir() {
        tracing::warn!(dir = %config.plugins.dir.display(), "the plugins directory does not exist: plugin files are not watched");
    }
    let list = watch_list(config);
    if list.is_empty() {
        return None;
    }
    let watched: Arc<Mutex<Vec<Watched>>> = Arc::default();
    let relevant = watched.clone();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let relevant = relevant.lock().unwrap_or_else(PoisonError::into_inner);
            // Reads are events too (and a reload reads every file): only changes count.
            let changed = events.iter().any(|e| {
                !matches!(e.kind, EventKind::Access(_))
                    && e.paths
                        .iter()
                        .any(|p| relevant.iter().any(|w| w.matches(p)))
            });
            if changed {
                let _ = triggers.send(Trigger {
                    cause: "file change",
                    reply: None,
                });
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "file watching failed");
            }
        }
    };
    let debouncer = match new_debouncer(config.reload.debounce, None, handler) {
        Ok(debouncer) => debouncer,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files: reload with SIGHUP or POST /admin/reload");
            return None;
        }
    };
    let mut watcher = Watcher {
        debouncer,
        watched,
        dirs: BTreeSet::new(),
    };
    watcher.watch(list);
    (!watcher.dirs.is_empty()).then_some(watcher)
}

impl Watcher {
    /// Watches what `config` reads from now on (after a reload applied it), and the
    /// `pending` files a refused config named: new directories are added, ones no
    /// longer needed dropped.
    pub(super) fn follow(&mut self, config: &Config, pending: &[PathBuf]) {
        let mut list = watch_list(config);
        add_named(&mut list, pending);
        if *self.watched.lock().unwrap_or_else(PoisonError::into_inner) != list {
            self.watch(list);
        }
    }

    fn watch(&mut self, list: Vec<Watched>) {
        let wanted: BTreeSet<PathBuf> = list.iter().map(|w| w.dir.clone()).collect();
        for dir in self.dirs.difference(&wanted) {
            let _ = self.debouncer.unwatch(dir);
            tracing::debug!(dir = %dir.display(), "no longer watching");
        }
        let mut watching = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                watching.insert(dir);
                continue;
            }
            match self.debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    watching.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory: reload with SIGHUP or POST /admin/reload");
                }
            }
        }
        self.dirs = watching;
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = list;
    }
}

/// `path` made absolute against the working directory (events carry absolute paths).
fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::path::absolute(path)
        .map(|p| normalize(&p))
        .unwrap_or_else(|_| path.to_owned())
}

/// Drops `.` components (`std::path::absolute` keeps a trailing `/.`).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevant_entries() {
        let config = Watched {
            dir: PathBuf::from("/etc/weir"),
            entries: Entries::Named(vec!["weir.toml".into(), "tls.crt".into()]),
        };
        assert!(config.matches(Path::new("/etc/weir/weir.toml")));
        assert!(config.matches(Path::new("/etc/weir/tls.crt")));
        assert!(config.matches(Path::new("/etc/weir/..data")));
        assert!(!config.matches(Path::new("/etc/weir/other.toml")));
        assert!(!config.matches(Path::new("/etc/weir/sub/weir.toml")));
        let plugins = Watched {
            dir: PathBuf::from("/srv/plugins"),
            entries: Entries::Wasm,
        };
        assert!(plugins.matches(Path::new("/srv/plugins/auth.wasm")));
        assert!(!plugins.matches(Path::new("/srv/plugins/auth.wasm.tmp")));
        assert!(!plugins.matches(Path::new("/srv/plugins/notes.txt")));
    }

    #[test]
    fn absolute_paths_have_no_dot() {
        let p = absolute(Path::new("."));
        assert!(p.is_absolute());
        assert!(!p.ends_with("."));
    }
}
