//! Reading the config file for a reload: its new contents parsed and validated, or the
//! config in force re-read because the TLS files it names changed. Settings that
//! cannot change live are put back to the running values and named.

use crate::config::Config;

/// The config file as one reload read it.
#[derive(Debug)]
pub(crate) enum ConfigRead {
    /// The gateway runs without a config file.
    NoFile,
    /// It holds the config in force, and the TLS files it names did not change.
    Unchanged,
    /// It cannot be used: unreadable, unparsable or invalid.
    Invalid {
        /// Why.
        message: String,
        /// Its text, when it could be read.
        text: Option<String>,
        /// Whether this is the config in force, re-read for its TLS files.
        certificates: bool,
    },
    /// A config to try.
    New {
        /// The config, with the settings that need a restart kept as running.
        config: Box<Config>,
        /// The text it was parsed from.
        text: String,
        /// Whether this is the config in force, re-read for its TLS files.
        certificates: bool,
        /// The settings the file changed that need a restart.
        restart_required: Vec<String>,
    },
}

impl ConfigRead {
    /// Whether this is the config in force, re-read because its TLS files changed.
    pub(crate) fn certificates(&self) -> bool {
        match self {
            ConfigRead::Invalid { certificates, .. } | ConfigRead::New { certificates, .. } => {
                *certificates
            }
            ConfigRead::NoFile | ConfigRead::Unchanged => false,
        }
    }

    /// The text read, when there is one to try or refuse.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            ConfigRead::Invalid { text, .. } => text.as_deref(),
            ConfigRead::New { text, .. } => Some(text),
            ConfigRead::NoFile | ConfigRead::Unchanged => None,
        }
    }
}

/// Reads the config file of `running`, whose text was `running_text` (`None`: no file).
pub(crate) fn read(running: &Config, running_text: Option<&str>) -> ConfigRead {
    let Some(current) = running_text else {
        return ConfigRead::NoFile;
    };
    let source = &running.source;
    let text = match std::fs::read_to_string(source) {
        Ok(text) => text,
        Err(e) => {
            return ConfigRead::Invalid {
                message: format!("cannot read {}: {e}", source.display()),
                text: None,
                certificates: false,
            };
        }
    };
    let certificates = text == current;
    if certificates && running.current_tls_fingerprint() == running.tls_fingerprint() {
        return ConfigRead::Unchanged;
    }
    let mut config = match Config::parse(source, &text) {
        Ok(config) => config.with_overrides(running.overrides),
        Err(e) => {
            return ConfigRead::Invalid {
                message: e.to_string(),
                text: Some(text),
                certificates,
            };
        }
    };
    if certificates && running.server.tls.is_some() && config.server.tls.is_none() {
        // Cannot happen for the same text; nothing to serve the new files with.
        return ConfigRead::Unchanged;
    }
    let restart_required = keep_running(running, &mut config);
    if let Some(problem) = config.admin.exposure_problem() {
        return ConfigRead::Invalid {
            message: problem,
            text: Some(text),
            certificates,
        };
    }
    ConfigRead::New {
        config: Box::new(config),
        text,
        certificates,
        restart_required,
    }
}

/// Puts back in `new` the settings of `running` that cannot change without a restart,
/// and names those the file changed.
fn keep_running(running: &Config, new: &mut Config) -> Vec<String> {
    let settings = [
        (
            "server.listen",
            running.server.listen.to_string(),
            new.server.listen.to_string(),
        ),
        (
            "admin.listen",
            running.admin.listen.to_string(),
            new.admin.listen.to_string(),
        ),
        (
            "server.workers",
            format!("{:?}", running.server.workers),
            format!("{:?}", new.server.workers),
        ),
        (
            "server.shutdown_grace",
            format!("{:?}", running.server.shutdown_grace),
            format!("{:?}", new.server.shutdown_grace),
        ),
        (
            "plugins.dir",
            running.plugins.dir.display().to_string(),
            new.plugins.dir.display().to_string(),
        ),
        (
            "plugins.cache_dir",
            format!("{:?}", running.plugins.cache_dir),
            format!("{:?}", new.plugins.cache_dir),
        ),
        (
            "reload",
            format!("{:?}", running.reload),
            format!("{:?}", new.reload),
        ),
        (
            "server.tls",
            tls_state(running).to_owned(),
            tls_state(new).to_owned(),
        ),
        (
            "kv.backend, kv.url, kv.password_env, kv.ca",
            format!("{:?}", running.kv.backend),
            format!("{:?}", new.kv.backend),
        ),
    ];
    let changed = settings
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(name, old, new)| format!("{name} ({old} -> {new})"))
        .collect();
    new.server.listen = running.server.listen;
    new.admin.listen = running.admin.listen;
    new.server.workers = running.server.workers;
    new.server.shutdown_grace = running.server.shutdown_grace;
    new.plugins.dir.clone_from(&running.plugins.dir);
    new.plugins.cache_dir.clone_from(&running.plugins.cache_dir);
    new.reload = running.reload;
    new.kv.backend.clone_from(&running.kv.backend);
    if running.server.tls.is_some() != new.server.tls.is_some() {
        // Certificates change live; turning TLS on or off changes the listener.
        new.server.tls.clone_from(&running.server.tls);
    }
    changed
}

/// Whether the client listener speaks TLS, for restart messages.
fn tls_state(config: &Config) -> &'static str {
    match config.server.tls {
        Some(_) => "on",
        None => "off",
    }
}
