//! `examples/kubernetes/`: the manifests validate against the Kubernetes schemas
//! (offline, with PyPI's `kubernetes-validate`), the Deployment mounts what the shipped
//! `weir.toml` names and that config passes `weir check`, and a running `weir` follows a
//! ConfigMap update the way the kubelet makes it on disk (the `..data` symlink swap)
//! for both its config and its plugins, under load, without a failed request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use weir_tests::gateway::fresh_dir;
use weir_tests::{TestUpstream, WeirProcess, client, guest_wasm, load, weir_bin};

/// `examples/kubernetes/`.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes")
}

fn read(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `weir.toml` that `configmap.yaml` ships (its `weir.toml: |` block).
fn shipped_config() -> String {
    let yaml = read("configmap.yaml");
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "weir.toml: |")
        .skip(1);
    let mut toml = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        toml.push_str(line.strip_prefix("    ").unwrap_or(line));
        toml.push('\n');
    }
    assert!(
        toml.contains("[server]"),
        "no weir.toml block in configmap.yaml"
    );
    toml
}

/// The first-party plugins' names.
const FIRST_PARTY: [&str; 8] = [
    "aggregate",
    "api-key",
    "cors",
    "headers",
    "ip-filter",
    "jwt-auth",
    "rate-limit",
    "request-id",
];

/// The plugin names the shipped config's routes use.
fn plugin_names(toml: &str) -> Vec<String> {
    let mut names: Vec<String> = toml
        .match_indices("name = \"")
        .map(|(at, key)| &toml[at + key.len()..])
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| FIRST_PARTY.contains(name))
        .map(str::to_owned)
        .collect();
    names.dedup();
    names
}

/// The validator: `WEIR_KUBERNETES_VALIDATE` (set by `cargo xtask test`, which
/// installs it), else the one `cargo xtask setup` installed, else one on `PATH`.
fn validator() -> Option<PathBuf> {
    weir_tests::installed_tool(
        "WEIR_KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "kubernetes-validate",
    )
}

/// The plugins ConfigMap as `kubectl create configmap weir-plugins --from-file=...
/// --dry-run=client -o yaml` writes it: each file under `binaryData`, base64.
fn plugins_configmap(plugins: &[(String, PathBuf)]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: weir-plugins\n  labels:\n    \
         app.kubernetes.io/name: weir\nbinaryData:\n",
    );
    for (name, wasm) in plugins {
        let bytes = std::fs::read(wasm).expect("read plugin");
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        yaml.push_str(&format!("  {name}.wasm: {encoded}\n"));
    }
    yaml
}

/// Runs the validator (strict: unknown fields are errors) on `files`.
fn validate(validator: &Path, files: &[PathBuf]) -> std::process::Output {
    Command::new(validator)
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", validator.display()))
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let Some(validator) = validator() else {
        eprintln!(
            "skipped: kubernetes-validate is not installed (`cargo xtask setup` installs it)"
        );
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        [
            "configmap.yaml",
            "deployment.yaml",
            "hpa.yaml",
            "pdb.yaml",
            "service.yaml"
        ]
    );
    // The plugins ConfigMap is made from the .wasm files, not committed: validate the
    // one the README's command makes from the plugins the config names.
    let plugins: Vec<(String, PathBuf)> = plugin_names(&shipped_config())
        .into_iter()
        .map(|name| {
            let wasm = guest_wasm!(&name.replace('-', "_")).to_owned();
            (name, wasm)
        })
        .collect();
    let generated = fresh_dir().join("weir-plugins.yaml");
    std::fs::write(&generated, plugins_configmap(&plugins)).expect("write");
    files.push(generated);
    let out = validate(&validator, &files);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The validator does refuse a broken manifest (a misspelt securityContext key).
    let broken = fresh_dir().join("deployment.yaml");
    std::fs::write(
        &broken,
        read("deployment.yaml").replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .expect("write");
    let out = validate(&validator, &[broken]);
    assert!(!out.status.success(), "a misspelt key passed validation");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("readOnlyRootFileSystem"),
        "{out:?}"
    );
}

/// The number after `key: ` in `yaml` (the first occurrence).
fn number_after(yaml: &str, key: &str) -> u64 {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` number"))
}

#[test]
fn the_deployment_mounts_what_the_shipped_config_names_and_it_passes_check() {
    let deployment = read("deployment.yaml");
    let toml = shipped_config();
    let readme = read("README.md");

    // The config comes from the weir-config ConfigMap, mounted as a directory (not
    // subPath, which never sees updates), found through WEIR_CONFIG.
    assert!(read("configmap.yaml").contains("name: weir-config"));
    for needed in [
        "name: weir-config",
        "name: weir-plugins",
        "mountPath: /etc/weir/config",
        "value: /etc/weir/config/weir.toml",
        "name: WEIR_CONFIG",
        "mountPath: /etc/weir/plugins",
        "mountPath: /var/cache/weir",
        "path: /readyz",
        "path: /healthz",
        "containerPort: 9901",
        "containerPort: 8080",
        "name: WEIR_ADMIN_TOKEN",
    ] {
        assert!(
            deployment.contains(needed),
            "deployment.yaml lacks {needed:?}"
        );
    }
    assert!(
        !deployment.contains("subPath"),
        "subPath mounts miss updates"
    );
    for needed in [
        "dir = \"/etc/weir/plugins\"",
        "cache_dir = \"/var/cache/weir/",
        "listen = \"0.0.0.0:9901\"",
        "listen = \"0.0.0.0:8080\"",
        "token_env = \"WEIR_ADMIN_TOKEN\"",
    ] {
        assert!(toml.contains(needed), "weir.toml lacks {needed:?}");
    }
    // The kubelet's SIGKILL comes after the preStop pause and the drain.
    let grace: u64 = toml
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_grace = \"")?.strip_suffix("s\""))
        .and_then(|s| s.parse().ok())
        .expect("shutdown_grace in seconds");
    let pre_stop = number_after(&deployment, "seconds:");
    let termination = number_after(&deployment, "terminationGracePeriodSeconds:");
    assert!(
        termination > pre_stop + grace,
        "terminationGracePeriodSeconds {termination} <= preStop {pre_stop} + shutdown_grace {grace}"
    );
    // The README's command puts every plugin the config names in the ConfigMap.
    let names = plugin_names(&toml);
    assert!(!names.is_empty());
    for name in &names {
        assert!(
            readme.contains(&format!("--from-file=plugins/{name}.wasm")),
            "README.md's configmap command lacks {name}.wasm"
        );
    }

    // The shipped config itself is valid, with its plugins in place.
    let dir = fresh_dir();
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    for name in &names {
        std::fs::copy(
            guest_wasm!(&name.replace('-', "_")),
            dir.join("plugins").join(format!("{name}.wasm")),
        )
        .expect("copy plugin");
    }
    let config = dir.join("weir.toml");
    let local = toml
        .replace(
            "/etc/weir/plugins",
            &dir.join("plugins").display().to_string(),
        )
        .replace(
            "/var/cache/weir/",
            &format!("{}/", dir.join("cache").display()),
        );
    std::fs::write(&config, local).expect("write config");
    let out = Command::new(weir_bin!())
        .arg("check")
        .env("WEIR_CONFIG", &config)
        .env("WEIR_ADMIN_TOKEN", "test-token")
        .output()
        .expect("run weir check");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory laid out as the kubelet lays out a mounted ConfigMap: the files in a
/// timestamped directory `..TIMESTAMP`, `..data` a symlink to it, and each key a
/// symlink `KEY -> ..data/KEY`.
struct ConfigMapMount {
    dir: PathBuf,
    current: PathBuf,
    updates: usize,
}

impl ConfigMapMount {
    fn new(dir: PathBuf, files: &[(&str, Vec<u8>)]) -> ConfigMapMount {
        std::fs::create_dir_all(&dir).expect("mount dir");
        let current = Self::write_version(&dir, 0, files);
        std::os::unix::fs::symlink(current.file_name().expect("name"), dir.join("..data"))
            .expect("..data");
        for (key, _) in files {
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).expect("key");
        }
        ConfigMapMount {
            dir,
            current,
            updates: 0,
        }
    }

    fn write_version(dir: &Path, n: usize, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let version = dir.join(format!("..2026_12_06_10_00_0{n}.00000000{n}"));
        std::fs::create_dir(&version).expect("timestamped dir");
        for (key, bytes) in files {
            std::fs::write(version.join(key), bytes).expect("write key");
        }
        version
    }

    /// An update with the same keys: a new timestamped directory, a `..data_tmp`
    /// symlink to it renamed over `..data` (the atomic step), the old directory removed.
    fn update(&mut self, files: &[(&str, Vec<u8>)]) {
        self.updates += 1;
        let next = Self::write_version(&self.dir, self.updates, files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(next.file_name().expect("name"), &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(&self.current).expect("remove the old version");
        self.current = next;
    }
}

fn gateway_config(up: &TestUpstream, plugins: &Path, cache: &Path, extra_route: &str) -> Vec<u8> {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\n\
         [reload]\ndebounce = \"50ms\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         {extra_route}\
         [[route]]\nname = \"all\"\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"up\"\n\
         plugins = [{{ name = \"swap\" }}]\n",
        plugins.display(),
        cache.display(),
        up.addr
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configmap_update_swaps_plugin_and_config_live_with_no_failed_request() {
    let up = TestUpstream::start("up");
    let root = fresh_dir();
    let cache = root.join("cache");
    let plugins_mount = root.join("plugins");
    let config_mount = root.join("config");
    let swap_a = std::fs::read(guest_wasm!("swap_a")).expect("swap_a");
    let swap_b = std::fs::read(guest_wasm!("swap_b")).expect("swap_b");
    let mut plugins = ConfigMapMount::new(plugins_mount.clone(), &[("swap.wasm", swap_a)]);
    let v2_route = "[[route]]\nname = \"v2\"\nmatch = { path = \"/v2\" }\n\
                    respond = { status = 200, body = \"config v2\\n\" }\n";
    let mut config = ConfigMapMount::new(
        config_mount.clone(),
        &[("weir.toml", gateway_config(&up, &plugins_mount, &cache, ""))],
    );
    let path = config_mount.join("weir.toml");
    let mut weir = WeirProcess::spawn(
        weir_bin!(),
        &["run", "--config", path.to_str().expect("UTF-8 path")],
    );
    let url = format!("http://{}/", weir.addr);
    let v2 = format!("http://{}/v2", weir.addr);
    assert_eq!(
        client::get(&url).await.header("x-swap").as_deref(),
        Some("a/a")
    );
    assert_ne!(client::get(&v2).await.text(), "config v2\n");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(load::until_stopped(
        url.clone(),
        4,
        5_000,
        stop.clone(),
        "x-swap",
    ));
    weir_tests::poll::until(Duration::from_secs(10), "load under way", || async {
        up.seen().len() >= 20
    })
    .await;

    // As an operator would: the new plugin version first, then the config.
    plugins.update(&[("swap.wasm", swap_b)]);
    weir_tests::poll::until(
        Duration::from_secs(20),
        "the new plugin version",
        || async { client::get(&url).await.header("x-swap").as_deref() == Some("b/b") },
    )
    .await;
    config.update(&[(
        "weir.toml",
        gateway_config(&up, &plugins_mount, &cache, v2_route),
    )]);
    weir_tests::poll::until(Duration::from_secs(20), "the new config", || async {
        client::get(&v2).await.text() == "config v2\n"
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let tally = traffic.await.expect("load");
    eprintln!("load across both swaps: {tally:?}");
    assert!(tally.ok > 0, "{tally:?}");
    assert!(tally.failed.is_empty(), "failed requests: {tally:?}");
    // Each response comes wholly from one version.
    assert!(
        tally.by_header.keys().all(|v| v == "a/a" || v == "b/b"),
        "a response mixed versions: {tally:?}"
    );
    // Still the new plugin on the catch-all route, after the config swap.
    assert_eq!(
        client::get(&url).await.header("x-swap").as_deref(),
        Some("b/b")
    );
    weir.signal("TERM");
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(0));
}
