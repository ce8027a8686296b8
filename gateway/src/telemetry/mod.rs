//! Logging: `tracing` with a `RUST_LOG`-style filter, as text or JSON lines. Access-log
//! events use the target `weir::access`, so `RUST_LOG=info,weir::access=off` silences
//! them alone.

pub mod metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard output: `weir run`, whose output is its log (what a container runtime
    /// or a process supervisor collects).
    Stdout,
    /// Standard error: the commands whose standard output is their result (`check`'s
    /// summary, `plugin inspect`'s report), so the two never mix.
    Stderr,
}

/// Installs the global subscriber (once; later calls are ignored). The filter comes from
/// `RUST_LOG`, defaulting to `info`. Colours only when `output` is a terminal.
pub fn init(format: LogFormat, output: LogOutput) {
    use std::io::IsTerminal as _;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, terminal) = match output {
        LogOutput::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogOutput::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal && format == LogFormat::Text)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
