//! The benchmark and soak scripts under `bench/` are not run by the suite (they take
//! minutes and pinned cores), but every one of them must at least parse (`bash -n`), be
//! clean under shellcheck when it is installed, and `bench/scenarios.sh` must refuse what
//! it does not know, write configs that each installed peer (and `weir check`) accepts,
//! ship an Envoy filter that is a proxy-wasm module, and compute its report's ratios
//! right. Nothing here starts a proxy or a load generator.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weir_tests::gateway::fresh_dir;
use weir_tests::{guest_wasm, weir_bin};

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench")
}

/// The files directly under `bench/` ending in `.ext`, sorted.
fn bench_files(ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(bench_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `bench/scenarios.sh ARGS` with `env`, from the repository root.
fn scenarios(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(bench_dir().join("scenarios.sh"))
        .args(args)
        .current_dir(bench_dir().join(".."));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_bench_script_parses() {
    let scripts = bench_files("sh");
    assert!(
        scripts.iter().any(|p| p.ends_with("soak.sh"))
            && scripts.iter().any(|p| p.ends_with("scenarios.sh")),
        "{scripts:?}"
    );
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(out.status.success(), "{}: {}", script.display(), text(&out));
    }
}

#[test]
fn every_bench_script_is_shellcheck_clean() {
    if !installed("shellcheck") {
        eprintln!("skipped: shellcheck is not installed (apt-get install shellcheck)");
        return;
    }
    for script in bench_files("sh") {
        // From bench/, so that `-x` follows the scripts' `. "$HERE/upstream.sh"`.
        let out = Command::new("shellcheck")
            .arg("-x")
            .arg(script.file_name().unwrap())
            .current_dir(bench_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}",
            script.display(),
            text(&out)
        );
    }
}

#[test]
fn every_bench_helper_in_python_parses() {
    if !installed("python3") {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let helpers = bench_files("py");
    assert!(
        helpers.iter().any(|p| p.ends_with("scenarios-report.py")),
        "{helpers:?}"
    );
    for helper in &helpers {
        let out = Command::new("python3")
            .args([
                "-c",
                "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])",
            ])
            .arg(helper)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", helper.display(), text(&out));
    }
}

#[test]
fn scenarios_lists_every_scenario_and_refuses_unknown_ones() {
    let out = scenarios(&["help"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let help = text(&out);
    for scenario in [
        "h1",
        "h2c",
        "tls-h1",
        "tls-h2",
        "handshake",
        "plugin",
        "chain",
        "body",
        "idle",
        "scaling",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{scenario} "))),
            "help does not describe {scenario}:\n{help}"
        );
    }
    let mut cmd = Command::new("bash");
    cmd.arg(bench_dir().join("scenarios.sh"))
        .env("SCENARIOS", "h1 h3");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown scenario 'h3'"),
        "{}",
        text(&out)
    );
    let out = Command::new("bash")
        .arg(bench_dir().join("scenarios.sh"))
        .env("PEERS", "nginx caddy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown peer 'caddy'"),
        "{}",
        text(&out)
    );
}

/// The configs the run would write, checked by `weir check` (this build's binary, the
/// first-party plugins built for the tests) and by nginx, haproxy and Envoy where they
/// are installed (the script says which it skipped).
#[test]
fn scenarios_configs_pass_each_tools_own_check() {
    let plugins = fresh_dir();
    for (guest, name) in [
        ("request_id", "request-id"),
        ("jwt_auth", "jwt-auth"),
        ("rate_limit", "rate-limit"),
        ("headers", "headers"),
    ] {
        std::fs::copy(guest_wasm!(guest), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let dir = fresh_dir();
    let out = scenarios(
        &["configs", dir.to_str().unwrap()],
        &[
            ("WEIR_BIN", weir_bin!()),
            ("PLUGINS_DIR", plugins.as_path()),
        ],
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("ok    weir-chain-h1.toml"), "{report}");
    assert!(
        report.contains("ok    weir-tls.toml") || !installed("openssl"),
        "{report}"
    );
    eprintln!("{report}");
}

/// bench/proxy-wasm/request_id.wat is a proxy-wasm 0.2.1 module: the exports Envoy calls
/// and only imports Envoy provides.
#[test]
fn the_envoy_filter_is_a_proxy_wasm_module() {
    let wasm = wat::parse_file(bench_dir().join("proxy-wasm/request_id.wat")).unwrap();
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, &wasm).unwrap();
    let exports: Vec<_> = module.exports().map(|e| e.name().to_owned()).collect();
    for name in [
        "memory",
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
    ] {
        assert!(
            exports.iter().any(|e| e == name),
            "no export {name}: {exports:?}"
        );
    }
    for import in module.imports() {
        let ok = (import.module() == "env" && import.name().starts_with("proxy_"))
            || (import.module() == "wasi_snapshot_preview1" && import.name() == "random_get");
        assert!(
            ok,
            "unexpected import {}.{}",
            import.module(),
            import.name()
        );
    }
}

/// The report's medians, ratios and target checks, from made-up rows.
#[test]
fn scenarios_report_computes_ratios_from_rows() {
    if !installed("python3") {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = fresh_dir();
    std::fs::write(
        dir.join("meta.txt"),
        "date 2026-01-01T00:00Z\nmachine test\nweir /bin/weir\ntool nginx 1\ncommand x\npinning p\nnoisy_pct 25\ntls13_cipher C\n",
    )
    .unwrap();
    let mut rows = String::new();
    // h1: nginx 10 s of CPU for 1M requests (10 µs), weir 15 µs; three rounds for weir
    // with one noisy round that must not count.
    let mut row = |scen: &str, case: &str, target: &str, round: u32, kv: &[(&str, f64)]| {
        for (k, v) in kv {
            rows += &format!("{scen}\t{case}\t{target}\t{round}\t{k}\t{v}\n");
        }
    };
    row(
        "h1",
        "",
        "nginx",
        1,
        &[
            ("rps", 100000.0),
            ("requests", 1e6),
            ("proxy_s", 10.0),
            ("p50_ms", 0.5),
            ("p99_ms", 2.0),
            ("errors", 0.0),
            ("other_pct", 1.0),
        ],
    );
    row(
        "h1",
        "",
        "weir",
        1,
        &[
            ("rps", 80000.0),
            ("requests", 1e6),
            ("proxy_s", 15.0),
            ("p50_ms", 0.6),
            ("p99_ms", 3.0),
            ("errors", 0.0),
            ("other_pct", 2.0),
        ],
    );
    row(
        "h1",
        "",
        "weir",
        2,
        &[
            ("rps", 10.0),
            ("requests", 1e6),
            ("proxy_s", 99.0),
            ("p50_ms", 9.0),
            ("p99_ms", 9.0),
            ("errors", 0.0),
            ("other_pct", 90.0),
        ],
    );
    row(
        "h1",
        "",
        "weir",
        3,
        &[
            ("rps", 80000.0),
            ("requests", 1e6),
            ("proxy_s", 15.0),
            ("p50_ms", 0.6),
            ("p99_ms", 3.0),
            ("errors", 0.0),
            ("other_pct", 3.0),
        ],
    );
    row(
        "chain",
        "",
        "weir",
        1,
        &[
            ("rps", 50000.0),
            ("requests", 1e5),
            ("proxy_s", 1.0),
            ("p50_ms", 1.0),
            ("p99_ms", 2.0),
            ("other_pct", 0.0),
        ],
    );
    row(
        "chain",
        "",
        "weir-chain",
        1,
        &[
            ("rps", 45000.0),
            ("requests", 1e5),
            ("proxy_s", 1.2),
            ("p50_ms", 1.0),
            ("p99_ms", 2.0),
            ("other_pct", 0.0),
        ],
    );
    row(
        "idle",
        "",
        "nginx",
        1,
        &[
            ("conns", 10000.0),
            ("rss_before_kib", 1000.0),
            ("rss_after_kib", 11000.0),
            ("kib_per_conn", 1.0),
        ],
    );
    row(
        "idle",
        "",
        "weir",
        1,
        &[
            ("conns", 10000.0),
            ("rss_before_kib", 1000.0),
            ("rss_after_kib", 31000.0),
            ("kib_per_conn", 3.0),
        ],
    );
    std::fs::write(dir.join("rows.tsv"), rows).unwrap();
    let out = Command::new("python3")
        .arg(bench_dir().join("scenarios-report.py"))
        .arg(&dir)
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    // weir: the noisy round left out, medians of rounds 1 and 3
    assert!(
        report.contains("| weir (2/3) | 80.0k | 0.600 | 3.000 | 15.0 | 0.80 | 1.50 | 1.50 |"),
        "{report}"
    );
    assert!(
        report.contains("| h1 | CPU/req ≤ nginx's | 1.50× | not met |"),
        "{report}"
    );
    assert!(
        report.contains("| chain | req/s ≥ 0.8× no plugin | 0.90× | met |"),
        "{report}"
    );
    assert!(
        report.contains("| idle | memory per connection ≤ nginx's | 3.00 vs 1.00 KiB | not met |"),
        "{report}"
    );
}
