//! The container image's files (the `Dockerfile`'s image is not built here; podman.rs
//! builds and runs the one from `scratch`): the `Dockerfile` and
//! `container/Containerfile.scratch` pass hadolint with no finding, the `Dockerfile`
//! agrees with its default config, the docs and `examples/kubernetes/`, and that
//! default config (`container/weir.toml`) passes `weir check` and serves as it says
//! with the first-party plugins the image ships.

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_tests::gateway::fresh_dir;
use weir_tests::{WeirProcess, client, guest_wasm, weir_bin};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// hadolint: `WEIR_HADOLINT` (set by `cargo xtask test`, which installs it: there a
/// missing linter fails the test), else the one `cargo xtask setup` installed, else one
/// on `PATH`.
fn hadolint() -> Option<PathBuf> {
    weir_tests::installed_tool("WEIR_HADOLINT", "hadolint", "hadolint")
}

/// hadolint on `dockerfile`, failing on any finding, style included; with an empty
/// config and no environment (no `HADOLINT_IGNORE`), so nothing is ignored but what the
/// file ignores inline.
fn lint(hadolint: &Path, dockerfile: &Path) -> (bool, String) {
    let config = fresh_dir().join("hadolint.yaml");
    std::fs::write(&config, "ignored: []\n").expect("write hadolint config");
    let out = Command::new(hadolint)
        .env_clear()
        .args(["--no-color", "--failure-threshold", "style", "--config"])
        .arg(&config)
        .arg(dockerfile)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", hadolint.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_dockerfile_and_the_scratch_containerfile_pass_hadolint_with_no_finding() {
    let Some(hadolint) = hadolint() else {
        eprintln!("skipped: hadolint is not installed (`cargo xtask setup` installs it)");
        return;
    };
    // And the image built from `scratch` here (tests/tests/e2e/podman.rs).
    for file in ["Dockerfile", "container/Containerfile.scratch"] {
        let (ok, findings) = lint(&hadolint, &root().join(file));
        assert!(ok && findings.trim().is_empty(), "{file}: {findings}");
    }

    // The linter does refuse what it should: an unpinned base, unpinned packages, no
    // cleanup of the apt lists, a shell-form entrypoint.
    let bad = fresh_dir().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian\nRUN apt-get update && apt-get install -y curl\nENTRYPOINT weir run\n",
    )
    .expect("write");
    let (ok, findings) = lint(&hadolint, &bad);
    assert!(!ok, "{findings}");
    for rule in ["DL3006", "DL3008", "DL3009", "DL3025"] {
        assert!(findings.contains(rule), "{rule} missing: {findings}");
    }
}

/// The default config with its absolute paths moved into `dir`, which holds every
/// first-party plugin as the image's `/etc/weir/plugins` does.
fn local_default_config(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    for name in [
        "aggregate",
        "api-key",
        "cors",
        "headers",
        "ip-filter",
        "jwt-auth",
        "rate-limit",
        "request-id",
    ] {
        std::fs::copy(
            guest_wasm!(&name.replace('-', "_")),
            plugins.join(format!("{name}.wasm")),
        )
        .expect("copy plugin");
    }
    let text = read("container/weir.toml")
        .replace("/etc/weir/plugins", &plugins.display().to_string())
        .replace("/tmp/weir-cache", &dir.join("cache").display().to_string());
    let config = dir.join("weir.toml");
    std::fs::write(&config, text).expect("write config");
    config
}

#[test]
fn the_image_default_config_passes_weir_check() {
    let config = local_default_config(&fresh_dir());
    let out = Command::new(weir_bin!())
        .arg("check")
        .env("WEIR_CONFIG", &config)
        .env("WEIR_ADMIN_TOKEN", "test-token")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weir check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "server  0.0.0.0:8080",
        "admin   0.0.0.0:9901",
        "plugin request-id",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }

    // Without the token variable the admin listener off loopback is refused, naming it.
    let out = Command::new(weir_bin!())
        .arg("check")
        .env("WEIR_CONFIG", &config)
        .env_remove("WEIR_ADMIN_TOKEN")
        .output()
        .expect("run weir check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("WEIR_ADMIN_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn the_image_default_config_serves_its_reply_through_a_plugin() {
    let dir = fresh_dir();
    let config = local_default_config(&dir);
    let weir = WeirProcess::spawn_with_env(
        weir_bin!(),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[
            ("WEIR_CONFIG", config.to_str().expect("UTF-8 path")),
            ("WEIR_ADMIN_TOKEN", "test-token"),
        ],
    );
    let reply = client::get(&format!("http://{}/anything", weir.addr)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("Weir is running"), "{}", reply.text());
    assert!(reply.header("x-request-id").is_some(), "{reply:?}");
    // The probes answer without the token; the rest of the admin API wants it.
    let health = client::get(&format!("http://{}/healthz", weir.admin)).await;
    assert_eq!(health.status, 200);
    let routes = client::get(&format!("http://{}/admin/routes", weir.admin)).await;
    assert_eq!(routes.status, 401, "{}", routes.text());
    // Compiled plugins were cached where the config says (a writable path in the image).
    assert!(
        std::fs::read_dir(dir.join("cache")).is_ok_and(|mut d| d.next().is_some()),
        "nothing cached in {}",
        dir.join("cache").display()
    );
}

/// The lines of `text` that are Dockerfile instructions `word` (e.g. `EXPOSE`).
fn instructions<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(word))
        .filter_map(|rest| rest.strip_prefix(' '))
        .map(str::trim)
        .collect()
}

#[test]
fn the_dockerfile_agrees_with_its_config_the_toolchain_and_the_kubernetes_example() {
    let dockerfile = read("Dockerfile");
    let config = read("container/weir.toml");

    // The build stage uses the project's toolchain (the workspace's rust-version).
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    let froms = instructions(&dockerfile, "FROM");
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert_eq!(froms[0], format!("rust:{rust_version}-bookworm AS build"));
    assert!(
        dockerfile.contains(&format!("RUSTUP_TOOLCHAIN={rust_version}.0")),
        "{dockerfile}"
    );

    // What runs, where, as whom.
    assert_eq!(
        instructions(&dockerfile, "ENTRYPOINT"),
        [r#"["/usr/local/bin/weir", "run"]"#]
    );
    assert_eq!(
        instructions(&dockerfile, "ENV").last().copied(),
        Some("WEIR_CONFIG=/etc/weir/weir.toml")
    );
    let copies = instructions(&dockerfile, "COPY");
    for copy in [
        "--from=build /out/weir /usr/local/bin/weir",
        "--from=build /out/plugins/ /etc/weir/plugins/",
        "container/weir.toml /etc/weir/weir.toml",
    ] {
        assert!(copies.contains(&copy), "{copy:?} not in {copies:?}");
    }
    assert_eq!(instructions(&dockerfile, "USER"), ["65532:65532"]);

    // EXPOSE names the ports the default config listens on.
    assert_eq!(instructions(&dockerfile, "EXPOSE"), ["8080 9901"]);
    assert!(config.contains("listen = \"0.0.0.0:8080\""), "{config}");
    assert!(config.contains("listen = \"0.0.0.0:9901\""), "{config}");
    assert!(config.contains("dir = \"/etc/weir/plugins\""), "{config}");

    // The Kubernetes example runs this image as its user, on these ports, with the
    // plugins where the image keeps them.
    let deployment = read("examples/kubernetes/deployment.yaml");
    let docs = read("docs/operations.md");
    let image = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("image in deployment.yaml");
    assert!(
        docs.contains(&format!("build -t {image} .")),
        "docs/operations.md does not build {image}"
    );
    for expected in [
        "runAsUser: 65532",
        "containerPort: 8080",
        "containerPort: 9901",
        "mountPath: /etc/weir/plugins",
    ] {
        assert!(
            deployment.contains(expected),
            "{expected:?} not in deployment.yaml"
        );
    }

    // The build context leaves out build output and history.
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l == entry), "{entry} not ignored");
    }
}
