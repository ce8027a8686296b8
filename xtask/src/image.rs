//! `cargo xtask image [TAG]`: Weir's container image built with no registry in reach. A
//! static `weir` (release, [`MUSL_TARGET`]) and the first-party plugins are staged as a
//! root filesystem under `target/image` and `podman build` puts it in an image from
//! `scratch` (`container/Containerfile.scratch`), which is then run once (`--version`)
//! to show the binary starts there. CI builds this command but does not run it: the
//! release build for musl takes far longer than the suite may
//! (docs/operations.md#an-image-built-without-a-registry); the e2e test builds the same
//! Containerfile around the tests' own binary instead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{ROOT, install_debian_packages, install_podman, plugins, run};

/// The static target the image's `weir` is built for.
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The image's tag when none is given.
const DEFAULT_TAG: &str = concat!("localhost/weir:", env!("CARGO_PKG_VERSION"), "-static");
/// Where the host keeps its CA roots (Debian's `ca-certificates`), staged when present.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Builds and stages everything, builds the image `tag` and runs it once.
pub(crate) fn build(tag: Option<String>) -> Result<(), String> {
    let tag = tag.unwrap_or_else(|| DEFAULT_TAG.to_owned());
    let root = Path::new(ROOT)
        .canonicalize()
        .map_err(|e| format!("cannot find the repository root: {e}"))?;
    install_musl_target()?;
    // The C parts (ring, mimalloc) compile with musl's headers and `musl-gcc`.
    install_debian_packages(
        &["x86_64-linux-musl-gcc"],
        &["musl-tools"],
        "a static weir's C dependencies build with it",
    )?;
    install_podman()?;

    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo).current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "--target",
        MUSL_TARGET,
        "--bin",
        "weir",
    ]))?;
    eprintln!("xtask: static weir built in {:.0?}", started.elapsed());

    let context = root.join("target").join("image");
    let binary = root
        .join("target")
        .join(MUSL_TARGET)
        .join("release")
        .join("weir");
    stage(&root, &context, &binary)?;

    run(Command::new("podman")
        .args(["build", "--tag", &tag, "--file"])
        .arg(root.join("container").join("Containerfile.scratch"))
        .arg(&context))?;
    // The binary starts from scratch: `weir run --version` (the entrypoint plus this).
    // The run options are the ones some hosts need (docs: runc where crun refuses the
    // host's cgroups; limits no higher than the host's).
    let mut version = Command::new("podman");
    version.args(["run", "--rm"]);
    if Command::new("runc").arg("--version").output().is_ok() {
        version.args(["--runtime", "runc"]);
    }
    run(version
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args([tag.as_str(), "--version"]))?;
    run(Command::new("podman").args(["image", "ls", &tag]))?;
    println!(
        "\nbuilt {tag}; run it with (docs/operations.md#an-image-built-without-a-registry):\n  \
         podman run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:9901:9901 -e WEIR_ADMIN_TOKEN=change-me {tag}"
    );
    Ok(())
}

/// Adds the musl target with rustup when it is not installed.
fn install_musl_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == MUSL_TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the {MUSL_TARGET} target");
    run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
}

/// Makes `context` the Containerfile's build context (a fresh `rootfs/`): `binary`
/// as `/usr/local/bin/weir` (stripped of debug info), the default config, the first-party plugins, the host's CA
/// roots when it has them, and a `/tmp` anyone may write.
fn stage(root: &Path, context: &Path, binary: &Path) -> Result<(), String> {
    let rootfs = context.join("rootfs");
    if context.exists() {
        std::fs::remove_dir_all(context)
            .map_err(|e| format!("cannot remove {}: {e}", context.display()))?;
    }
    let copy = |from: &Path, to: PathBuf| -> Result<(), String> {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::copy(from, &to)
            .map(drop)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
    };
    // Without its debug info (the release profile keeps line tables): the same code in
    // a quarter of the size.
    let bin_dir = rootfs.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(bin_dir.join("weir"))
        .arg(binary))?;
    copy(
        &root.join("container").join("weir.toml"),
        rootfs.join("etc/weir/weir.toml"),
    )?;
    plugins(Some(rootfs.join("etc/weir/plugins").display().to_string()))?;
    let ca = Path::new("/").join(CA_BUNDLE);
    if ca.is_file() {
        copy(&ca, rootfs.join(CA_BUNDLE))?;
    } else {
        eprintln!(
            "xtask: no {} here: the image has no CA roots (upstream TLS then needs a `ca` in the config)",
            ca.display()
        );
    }
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)))
        .map_err(|e| format!("cannot make {}: {e}", tmp.display()))
}
