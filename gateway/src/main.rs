//! The `weir` command line. All logic lives in the `weir_gateway` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_gateway::config::Overrides;
use weir_gateway::handover::Inherited;
use weir_gateway::scaffold::{self, SdkSource};
use weir_gateway::telemetry::{self, LogFormat, LogOutput};
use weir_gateway::{Config, Gateway, quickstart, run};

/// Weir: a programmable HTTP gateway with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic. Without --config, starts the quickstart: 127.0.0.1:8080 in front of
    /// a built-in demo upstream.
    Run {
        /// The config file (TOML). The flag wins over `WEIR_CONFIG`.
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
        /// Listen here instead of `[server] listen` (e.g. 127.0.0.1:0 for a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Serve the admin API here instead of `[admin] listen`.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate a config file and every plugin it names, and print a summary of its
    /// listeners, upstreams, routes and plugins.
    Check {
        /// The config file (TOML). The flag wins over `WEIR_CONFIG`.
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show what the gateway sees in a plugin: weir:plugin version, phases, imports,
    /// size and hash. Exits 1 if this gateway cannot load it.
    Inspect {
        /// The plugin file.
        file: PathBuf,
    },
    /// Write a ready plugin crate: Cargo.toml, a plugin with one phase, per-request
    /// state and a config with defaults, native tests, and a README with the build and
    /// copy commands.
    New {
        /// The plugin's name (what routes call it; its file is NAME.wasm).
        name: String,
        /// Where to write it (default: ./NAME). Must not exist or be empty.
        dir: Option<PathBuf>,
        /// Depend on the SDK at this path (default: this build's checkout if it is
        /// still there, else Weir's git repository).
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
}

/// mimalloc: measurably cheaper than glibc malloc for the many small, short-lived
/// allocations of request handling (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread starts: this takes inherited sockets out of the environment.
    let inherited = Inherited::from_env();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: None,
        listen: None,
        admin_listen: None,
    });
    // `run`'s output is its log; the other commands print their result on stdout and
    // keep their log lines (warnings) apart, on stderr.
    let output = match command {
        Command::Run { .. } => LogOutput::Stdout,
        Command::Check { .. } | Command::Plugin { .. } => LogOutput::Stderr,
    };
    telemetry::init(cli.log_format, output);
    let mut inherited = match inherited {
        Ok(inherited) => inherited,
        Err(e) => return fail(&e),
    };
    inherited.log();
    match command {
        Command::Run {
            config,
            listen,
            admin_listen,
        } => {
            let overrides = |c: Config| {
                c.with_overrides(Overrides {
                    listen,
                    admin_listen,
                })
            };
            match config {
                Some(path) => match Config::load(&path) {
                    Ok(config) => serve(overrides(config), &mut inherited),
                    Err(e) => fail(&e),
                },
                None => quickstart(overrides, cli.log_format, &mut inherited),
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(config) => match weir_gateway::load_plugins(&config) {
                Ok((_, chains)) => {
                    print!("{}", run::summary(&config, &chains));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        },
        Command::Plugin {
            command: PluginCommand::Inspect { file },
        } => inspect(&file),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    dir,
                    sdk_path,
                },
        } => new_plugin(&name, dir, sdk_path),
    }
}

fn serve(config: Config, inherited: &mut Inherited) -> ExitCode {
    let signals = match run::Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(&e),
    };
    match Gateway::start_with(config, inherited)
        .map_err(run::RunError::from)
        .and_then(|gateway| {
            inherited.report_ready();
            signals.serve_until_signal(gateway)
        }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn quickstart(
    overrides: impl FnOnce(Config) -> Config,
    format: LogFormat,
    inherited: &mut Inherited,
) -> ExitCode {
    let demo = match quickstart::start_demo_upstream() {
        Ok(addr) => addr,
        Err(e) => return fail(&e),
    };
    let plugins = match quickstart::install_plugins() {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the quickstart's plugins; serving without /private");
            None
        }
    };
    let config = match quickstart::config(demo, plugins.as_deref()) {
        Ok(config) => overrides(config),
        Err(e) => return fail(&e),
    };
    let signals = match run::Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(&e),
    };
    let gateway = match Gateway::start_with(config, inherited) {
        Ok(gateway) => gateway,
        Err(e) => return fail(&e),
    };
    let banner = quickstart::banner(
        gateway.local_addr(),
        gateway.admin_addr(),
        demo,
        plugins.is_some(),
    );
    match format {
        // Stdout is the log: with JSON, every line on it is one JSON object.
        LogFormat::Json => tracing::info!(
            gateway = %gateway.local_addr(),
            admin = %gateway.admin_addr(),
            demo_upstream = %demo,
            help = %banner.trim(),
            "weir quickstart is running (no config file given)"
        ),
        LogFormat::Text => println!("{banner}"),
    }
    inherited.report_ready();
    match signals.serve_until_signal(gateway) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn inspect(file: &std::path::Path) -> ExitCode {
    let host = match weir_gateway::plugin::PluginHost::new(None) {
        Ok(host) => host,
        Err(e) => return fail(&e),
    };
    match weir_gateway::plugin::block_on(host.inspect(file)) {
        Ok(found) => {
            print!("{}", found.report(file));
            if found.load_error.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&e),
    }
}

fn new_plugin(name: &str, dir: Option<PathBuf>, sdk_path: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = sdk_path.map_or_else(SdkSource::default_for_this_build, SdkSource::Path);
    match scaffold::new_plugin(name, &dir, &sdk) {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            println!(
                "\nnext: cd {} && cargo test && cargo build --release --target wasm32-wasip2 (README.md)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
