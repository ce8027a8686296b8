//! The fuzz targets' checks (`fuzz/src/lib.rs`), compiled here on stable and run over
//! fixed inputs: the configs this repository ships, hostile paths (among them the one
//! the fuzzer found), and plugin answers with every forbidden header. CI builds and
//! runs what the fuzzer runs; the fuzzer itself stays a nightly script (fuzz/README.md).

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

#[test]
fn config_parse_holds_for_shipped_configs_and_broken_text() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut shipped = vec![root.join("gateway/src/quickstart.toml")];
    for example in std::fs::read_dir(root.join("examples")).unwrap() {
        let config = example.unwrap().path().join("weir.toml");
        if config.exists() {
            shipped.push(config);
        }
    }
    assert!(shipped.len() >= 4, "{shipped:?}");
    for path in &shipped {
        let text = std::fs::read_to_string(path).unwrap();
        checks::config_parse(&text);
        // Every prefix of a real config: cut anywhere, it still parses or fails cleanly.
        for cut in (0..text.len())
            .step_by(7)
            .filter(|&i| text.is_char_boundary(i))
        {
            checks::config_parse(&text[..cut]);
        }
    }
    let deep = "a = ".to_owned() + &"[".repeat(10_000);
    for text in [
        "",
        "[",
        "[[route]]",
        "[[route]]\nname = 1",
        "\u{0}",
        "[server]\nlisten = 5",
        "[server]\nworkers = -1\n[server.limits]\nmax_headers = 99999999999999999999",
        "[[upstream]]\nname = \"u\"\nendpoints = [\"\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"",
        "[[route]]\nname = \"r\"\nplugins = [{ name = \"x\", config = { a = nan, b = inf } }]",
        deep.as_str(),
    ] {
        checks::config_parse(text);
    }
}

#[test]
fn path_normalize_holds_for_hostile_paths() {
    for path in [
        "",
        "*",
        "/",
        "//",
        "/a/../b",
        "/a/./b/.",
        "/..",
        "/%2e%2e/%2E%2e/etc",
        "/a/..%2f..%2fetc/passwd",
        "/a/%2F../b",
        "\\..\\..\\windows",
        "/a\\..\\b",
        "/a;x=1/../b;y",
        "/%",
        "/%zz/%4",
        "/%00/%ff/%C0%AF",
        "/caf\u{e9}/\u{1F600}/%E2%82%AC",
        // Found by the fuzzer (fuzz/artifacts): a non-ASCII character next to escapes.
        "/,$//$%FF$//$/P\u{450}/\u{1}\u{0}$",
    ] {
        checks::path_normalize(path);
    }
}

#[test]
fn local_head_holds_for_forbidden_and_broken_headers() {
    let h = |name: &str, value: &[u8]| (name.to_owned(), value.to_vec());
    for status in [0, 99, 100, 200, 204, 304, 418, 599, 999, 1000, u16::MAX] {
        checks::local_head(
            status,
            vec![
                h("content-length", b"5"),
                h("Content-Length", b"0"),
                h("transfer-encoding", b"chunked"),
                h("Host", b"evil.example"),
                h("connection", b"close"),
                h("upgrade", b"websocket"),
                h("trailer", b"x"),
                h("x-ok", b"1"),
                h("x-ok", b"2"),
                h("bad name", b"v"),
                h("", b"v"),
                h("x-crlf", b"a\r\nx-injected: 1"),
                h("x-nul", b"\0"),
                h("x-\u{e9}", b"v"),
            ],
            b"body".to_vec(),
        );
    }
    checks::local_head(200, Vec::new(), Vec::new());
}
