//! An out-of-tree plugin, as an author would make one: `weir plugin new` writes the
//! crate, which depends on the SDK as `cargo package` makes it (not on the workspace),
//! builds natively to run its tests and for `wasm32-wasip2`, and loads in a gateway.

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_tests::{TestGateway, TestUpstream, get};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// `cargo` without the outer build's flags and target directory.
fn cargo(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run a command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Packages the SDK and its macros crate as they would be published, and unpacks
/// both: (the SDK's directory, the macros' directory).
fn packaged_sdk(work: &Path) -> (PathBuf, PathBuf) {
    let target = work.join("package-target");
    run(cargo(&root())
        .args([
            "package",
            "--offline",
            "--no-verify",
            "--allow-dirty",
            "-p",
            "weir-plugin-sdk-macros",
            "-p",
            "weir-plugin-sdk",
            "--target-dir",
        ])
        .arg(&target));
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut dirs = Vec::new();
    for name in ["weir-plugin-sdk-0.2.0", "weir-plugin-sdk-macros-0.2.0"] {
        let crate_file = target.join("package").join(format!("{name}.crate"));
        run(Command::new("tar")
            .arg("xzf")
            .arg(&crate_file)
            .arg("-C")
            .arg(&unpacked));
        dirs.push(unpacked.join(name));
    }
    (dirs[0].clone(), dirs[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_builds_against_the_packaged_sdk_tests_and_loads() {
    let work = weir_tests::gateway::fresh_dir();
    let (sdk, macros) = packaged_sdk(&work);
    assert!(
        sdk.join("wit/plugin.wit").is_file(),
        "the packaged SDK carries its WIT"
    );
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("workspace = true"), "{manifest}");

    let crate_dir = work.join("tenant-gate");
    let bin = weir_tests::weir_bin!();
    let wrote = run(Command::new(bin)
        .args(["plugin", "new", "tenant-gate"])
        .arg(&crate_dir)
        .arg("--sdk-path")
        .arg(&sdk));
    assert!(wrote.contains("src/lib.rs"), "{wrote}");
    // A second run into the same directory is refused, and writes nothing.
    let again = Command::new(bin)
        .args(["plugin", "new", "tenant-gate"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    // The macros crate is not on a registry here: point the packaged SDK's dependency
    // on it at the unpacked one.
    let mut manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    manifest.push_str(&format!(
        "\n[patch.crates-io]\nweir-plugin-sdk-macros = {{ path = {:?} }}\n",
        macros.display().to_string()
    ));
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();

    // Built in a target directory kept between runs, so dependencies compile once.
    let target = root().join("target").join("scaffold");
    let tested = run(cargo(&crate_dir)
        .args(["test", "--offline", "--target-dir"])
        .arg(&target));
    assert!(tested.contains("test result: ok. 3 passed"), "{tested}");
    run(cargo(&crate_dir)
        .args([
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target));
    let wasm = target.join("wasm32-wasip2/release/tenant_gate.wasm");

    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[(&wasm, "tenant-gate")]);
    let config = format!(
        "[plugins]\ndir = \"{}/plugins\"\n[[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"app\"\nupstream = \"up\"\nplugins = [{{ name = \"tenant-gate\" }}]\n",
        dir.display(),
        up.addr
    );
    let gw = TestGateway::start(&config);
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-tenant-gate").as_deref(), Some("hello"));

    let path = weir_tests::gateway::write_config(&config);
    let checked = run(Command::new(bin).arg("check").arg("--config").arg(&path));
    assert!(
        checked.contains("plugin tenant-gate (") && checked.contains("isolation Worker"),
        "{checked}"
    );
}
