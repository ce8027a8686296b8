//! Watching the config file and the plugins directory (inotify on Linux, through
//! `notify`), debounced so that a file written in several steps is acted on once.
//!
//! Directories are watched, not files: an editor's or `cp`'s rewrite, an atomic
//! rename into place and a Kubernetes ConfigMap update (the `..data` symlink swapped
//! in the mounted directory) all show up as events in the directory. Each batch of
//! relevant events asks for a reload, which compares contents, so a spurious event
//! costs a re-read and nothing else.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc::UnboundedSender;

use super::Trigger;
use crate::config::Config;

/// What to watch: a directory, and which entries in it matter.
struct Watched {
    dir: PathBuf,
    /// A file name in `dir` (the config file), or `None` for every `*.wasm`.
    file: Option<PathBuf>,
}

impl Watched {
    fn matches(&self, path: &Path) -> bool {
        if path.parent() != Some(self.dir.as_path()) {
            return false;
        }
        let Some(name) = path.file_name() else {
            return false;
        };
        // `..data` and friends: a Kubernetes ConfigMap volume swapping its contents.
        if name.to_string_lossy().starts_with("..") {
            return true;
        }
        match &self.file {
            Some(file) => name == file.as_os_str(),
            None => path.extension() == Some(OsStr::new("wasm")),
        }
    }
}

/// Starts watching `config`'s file and plugins directory; each debounced change asks
/// for a reload on `triggers`. `None` (with a warning) when nothing can be watched.
pub(super) fn start(
    config: &Config,
    triggers: UnboundedSender<Trigger>,
) -> Option<Debouncer<RecommendedWatcher, RecommendedCache>> {
    let mut watched = Vec::new();
    if config.source.is_file() {
        let dir = absolute(config.source.parent().unwrap_or(Path::new(".")));
        watched.push(Watched {
            dir,
            file: config.source.file_name().map(PathBuf::from),
        });
    }
    let uses_plugins = config.routes.iter().any(|r| !r.plugins.is_empty());
    if config.plugins.dir.is_dir() {
        watched.push(Watched {
            dir: absolute(&config.plugins.dir),
            file: None,
        });
    } else if uses_plugins {
        tracing::warn!(dir = %config.plugins.dir.display(), "the plugins directory does not exist: plugin files are not watched");
    }
    if watched.is_empty() {
        return None;
    }
    let dirs: Vec<PathBuf> = watched.iter().map(|w| w.dir.clone()).collect();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            // Reads are events too (and a reload reads every file): only changes count.
            let changed = events.iter().any(|e| {
                !matches!(e.kind, EventKind::Access(_))
                    && e.paths.iter().any(|p| watched.iter().any(|w| w.matches(p)))
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
    let mut debouncer = match new_debouncer(config.reload.debounce, None, handler) {
        Ok(debouncer) => debouncer,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files: reload with SIGHUP or POST /admin/reload");
            return None;
        }
    };
    let mut any = false;
    for dir in dirs {
        match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                any = true;
                tracing::debug!(dir = %dir.display(), "watching");
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory: reload with SIGHUP or POST /admin/reload");
            }
        }
    }
    any.then_some(debouncer)
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
            file: Some(PathBuf::from("weir.toml")),
        };
        assert!(config.matches(Path::new("/etc/weir/weir.toml")));
        assert!(config.matches(Path::new("/etc/weir/..data")));
        assert!(!config.matches(Path::new("/etc/weir/other.toml")));
        assert!(!config.matches(Path::new("/etc/weir/sub/weir.toml")));
        let plugins = Watched {
            dir: PathBuf::from("/srv/plugins"),
            file: None,
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
