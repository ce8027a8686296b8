//! The benchmark and soak scripts under `bench/` are not run by the suite (they take
//! minutes and pinned cores), but every one of them must at least parse: `bash -n`.

use std::path::Path;
use std::process::Command;

#[test]
fn every_bench_script_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(
        scripts.iter().any(|p| p.ends_with("soak.sh")),
        "{scripts:?}"
    );
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
