//! No spelling of a path reaches a route other than the one a lenient backend reads it
//! as: property tests over generated spellings (`%2F`, `\`, `;` parameters, dot-segment
//! detours, escaped characters) against a table with protected routes and a catch-all.

use std::path::Path;

use http::{HeaderMap, Method};
use proptest::prelude::*;

use super::{PathRules, RequestFacts, RouteTable};
use crate::config;
use crate::error::ProxyError;
use crate::path::{AmbiguousPaths, PathError, SlashPolicy, lenient_reading, normalize};

const ROUTES: &str = "\
[[route]]\nname = \"admin\"\nupstream = \"u\"\nmatch = { path_prefix = \"/admin\" }\n\
[[route]]\nname = \"private-file\"\nupstream = \"u\"\nmatch = { path = \"/files/a/b\" }\n\
[[route]]\nname = \"users\"\nupstream = \"u\"\nmatch = { path_prefix = \"/api/v1/users\" }\n\
[[route]]\nname = \"public\"\nupstream = \"u\"\nmatch = { path_prefix = \"/public\" }\n\
[[route]]\nname = \"any\"\nupstream = \"u\"\n";

fn table(slashes: SlashPolicy, ambiguous: AmbiguousPaths) -> RouteTable {
    let text = format!("[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n{ROUTES}");
    let config = config::Config::parse(Path::new("t.toml"), &text).expect("valid routes");
    RouteTable::new(&config.routes, PathRules { slashes, ambiguous })
}

/// The route `path` resolves to, or the error.
fn resolve(t: &RouteTable, path: &str) -> Result<String, ProxyError> {
    let headers = HeaderMap::new();
    t.resolve(RequestFacts {
        host: Some("example.com"),
        path,
        method: &Method::GET,
        headers: &headers,
    })
    .map(|(route, _)| route.name.to_string())
}

/// Canonical paths: the protected routes' own, their neighbours, and the catch-all's.
fn canonical() -> impl Strategy<Value = Vec<String>> {
    let base = prop::sample::select(vec![
        vec!["admin"],
        vec!["admin", "secret"],
        vec!["files", "a", "b"],
        vec!["files", "a"],
        vec!["api", "v1", "users", "7"],
        vec!["api", "v1"],
        vec!["public", "x"],
        vec!["other"],
    ]);
    let extra = prop::collection::vec("[a-z]{1,4}", 0..3);
    (base, extra).prop_map(|(base, extra)| {
        base.into_iter()
            .map(str::to_owned)
            .chain(extra)
            .collect::<Vec<_>>()
    })
}

/// A spelling of `/seg/seg/...` that a lenient backend (one that decodes `%2F`/`%5C`,
/// reads `\` as `/` and drops `;` parameters) resolves to the same segments.
fn spelling(segments: Vec<String>) -> impl Strategy<Value = String> {
    let n = segments.len();
    let separator = prop::sample::select(vec!["/", "//", "%2F", "%2f", "\\", "%5C", "%5c"]);
    // Per segment: a detour before it (none, `./`, `x/../`), its separator, parameters
    // after it, and which of its characters are percent-encoded.
    let detour = prop::sample::select(vec![0u8, 1, 2]);
    let params = prop::sample::select(vec!["", ";", ";p=1", ";jsessionid=x"]);
    let encode = prop::collection::vec(any::<bool>(), 4);
    let dot = prop::sample::select(vec![".", "%2e", "%2E"]);
    prop::collection::vec(
        (detour, separator.clone(), separator, params, encode, dot),
        n,
    )
    .prop_map(move |parts| {
        let mut out = String::new();
        for (i, (detour, sep, detour_sep, params, encode, dot)) in parts.into_iter().enumerate() {
            // The path itself starts with a plain `/`.
            let sep = if i == 0 { "/" } else { sep };
            out.push_str(sep);
            match detour {
                1 => {
                    out.push_str(dot);
                    out.push_str(detour_sep);
                }
                2 => {
                    out.push_str("zz");
                    out.push_str(detour_sep);
                    out.push_str(dot);
                    out.push_str(dot);
                    out.push_str(detour_sep);
                }
                _ => {}
            }
            for (j, c) in segments[i].chars().enumerate() {
                if encode[j % encode.len()] {
                    out.push_str(&format!("%{:02X}", c as u8));
                } else {
                    out.push(c);
                }
            }
            out.push_str(params);
        }
        out
    })
}

fn spelled() -> impl Strategy<Value = (String, String)> {
    canonical().prop_flat_map(|segments| {
        let path = format!("/{}", segments.join("/"));
        spelling(segments).prop_map(move |spelled| (path.clone(), spelled))
    })
}

/// How a lenient backend reads the path it is sent: every escape decoded, `\` as `/`,
/// `;` parameters dropped, then dot segments resolved. Written out here, independently
/// of [`lenient_reading`], as the model the gateway is checked against.
fn backend_reading(forwarded: &str) -> String {
    let bytes = forwarded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                decoded.push(value);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The route a lenient backend's reading of `forwarded` matches.
fn routed_by_backend(t: &RouteTable, forwarded: &str) -> Option<String> {
    let headers = HeaderMap::new();
    let read = backend_reading(forwarded);
    t.find(&RequestFacts {
        host: Some("example.com"),
        path: &read,
        method: &Method::GET,
        headers: &headers,
    })
    .map(|r| r.name.to_string())
}

/// Checks one spelling: refused, or routed to the route that a lenient backend reading
/// the forwarded path would also match.
fn check_spelling(t: &RouteTable, spelled: &str) -> Result<(), TestCaseError> {
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        host: Some("example.com"),
        path: spelled,
        method: &Method::GET,
        headers: &headers,
    };
    match t.resolve(facts) {
        Ok((route, forwarded)) => {
            let backend = routed_by_backend(t, &forwarded);
            prop_assert_eq!(
                Some(route.name.to_string()),
                backend,
                "{} is forwarded as {} and read as {}",
                spelled,
                forwarded,
                backend_reading(&forwarded)
            );
        }
        Err(ProxyError::BadPath(_)) => {}
        Err(e) => prop_assert!(false, "{spelled}: unexpected {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Under the default rules, every spelling is refused or reaches the backend as a
    /// path it reads as the route the gateway chose: no route's plugins can be dodged.
    #[test]
    fn no_spelling_reaches_another_route((_, spelled) in spelled()) {
        check_spelling(&table(SlashPolicy::Keep, AmbiguousPaths::Reject), &spelled)?;
    }

    /// With `escaped_slashes = "decode"` too.
    #[test]
    fn no_spelling_reaches_another_route_when_decoding((_, spelled) in spelled()) {
        check_spelling(&table(SlashPolicy::Decode, AmbiguousPaths::Reject), &spelled)?;
    }

    /// A spelling that is not refused is forwarded as the path a lenient backend reads
    /// as the canonical one, or as a path the gateway routed the same way.
    #[test]
    fn plain_spellings_route_as_their_canonical_path((path, spelled) in spelled()) {
        let routes = table(SlashPolicy::Keep, AmbiguousPaths::Reject);
        if !spelled.contains(['%', '\\', ';']) {
            prop_assert_eq!(resolve(&routes, &spelled).ok(), resolve(&routes, &path).ok());
        }
    }

    /// Normalising is idempotent, and its result has no dot segments and no `//`; a
    /// lenient reading, when there is one, has neither either.
    #[test]
    fn normalising_is_idempotent_and_leaves_no_dot_segments(
        raw in "/[a-zA-Z0-9./\\\\;%_~-]{0,24}",
    ) {
        for slashes in [SlashPolicy::Keep, SlashPolicy::Decode] {
            let Ok(once) = normalize(&raw, slashes) else { continue };
            let twice = normalize(&once, slashes).expect("a normal path normalises");
            prop_assert_eq!(&twice, &once);
            prop_assert!(is_clean(&once), "{raw} -> {once}");
            if let Some(Ok(read)) = lenient_reading(&once) {
                prop_assert!(is_clean(&read), "{raw} -> {once} read as {read}");
            }
        }
    }
}

/// No `.` or `..` segment and no empty segment but a trailing one.
fn is_clean(path: &str) -> bool {
    let segments: Vec<&str> = path[1..].split('/').collect();
    segments.iter().all(|s| *s != "." && *s != "..")
        && segments[..segments.len() - 1].iter().all(|s| !s.is_empty())
}

#[test]
fn known_tricks_are_refused_by_default() {
    let routes = table(SlashPolicy::Keep, AmbiguousPaths::Reject);
    let refused = |path: &str| match resolve(&routes, path) {
        Err(ProxyError::BadPath(e)) => e,
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(refused("/public/..%2Fadmin"), PathError::HiddenDotSegment);
    assert_eq!(refused("/public/..%2fadmin"), PathError::HiddenDotSegment);
    assert_eq!(refused("/public\\..\\admin"), PathError::HiddenDotSegment);
    assert_eq!(refused("/public/..;/admin"), PathError::HiddenDotSegment);
    assert_eq!(refused("/admin;x/secret"), PathError::Ambiguous);
    assert_eq!(refused("/admin\\secret"), PathError::Ambiguous);
    assert_eq!(refused("/files/a%2Fb"), PathError::Ambiguous);
    // What a lenient backend reads the same way is forwarded.
    assert_eq!(resolve(&routes, "/other/a%2Fb").unwrap(), "any");
    assert_eq!(resolve(&routes, "/public/x;v=1").unwrap(), "public");
    assert_eq!(resolve(&routes, "/admin/a\\b").unwrap(), "admin");
}

#[test]
fn forward_routes_on_the_path_as_sent_which_the_model_catches() {
    let routes = table(SlashPolicy::Keep, AmbiguousPaths::Forward);
    assert_eq!(resolve(&routes, "/public/..%2Fadmin").unwrap(), "public");
    assert_eq!(resolve(&routes, "/admin;x/secret").unwrap(), "any");
    // The property's check fails for these under `forward`: it can tell.
    assert!(check_spelling(&routes, "/public/..%2Fadmin").is_err());
    assert!(check_spelling(&routes, "/admin;x/secret").is_err());
}
