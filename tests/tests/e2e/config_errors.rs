//! Bad configs and the diagnostics they must produce: the file, line, column and key
//! of each problem, its message and, for typos, the nearest valid name. Also: every
//! semantic problem in a file is reported at once, sorted by position, and valid configs
//! load.

use std::path::Path;
use std::time::Duration;

use weir_gateway::config::{
    ConfigError, Diagnostic, HeaderMatch, HostPattern, HostRewrite, PathPattern,
};
use weir_gateway::{Config, quickstart};

/// One upstream named `users`, for the route cases to refer to (lines 1-3, then a blank).
const USERS: &str = "[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9001\"]\n\n";

/// A bad config and the single diagnostic it must produce.
struct Case {
    what: &'static str,
    text: String,
    line: usize,
    column: usize,
    key: &'static str,
    /// Fragments the message must contain.
    message: &'static [&'static str],
    /// The exact help text, or `None` when there must be none.
    help: Option<&'static str>,
}

/// A route named `r` to upstream `users` with `rest` (lines after `name`), after `USERS`:
/// `[[route]]` is line 5, `name` line 6, the first line of `rest` line 7.
fn route(rest: &str) -> String {
    format!("{USERS}[[route]]\nname = \"r\"\n{rest}")
}

fn cases() -> Vec<Case> {
    vec![
        // --- schema errors: unknown keys, wrong types, bad values (one per file) ---
        Case {
            what: "unknown top-level table with a close name",
            text: "[servr]\nlisten = \"127.0.0.1:8080\"\n".into(),
            line: 1,
            column: 2,
            key: "servr",
            message: &["unknown field `servr`", "`server`", "`route`"],
            help: Some("did you mean `server`?"),
        },
        Case {
            what: "unknown top-level key with no close name",
            text: "\ncolour = \"blue\"\n".into(),
            line: 2,
            column: 1,
            key: "colour",
            message: &["unknown field `colour`"],
            help: None,
        },
        Case {
            what: "unknown key in [server]",
            text: "[server]\nlisen = \"127.0.0.1:8080\"\n".into(),
            line: 2,
            column: 1,
            key: "server.lisen",
            message: &["unknown field `lisen`", "expected one of", "`listen`"],
            help: Some("did you mean `listen`?"),
        },
        Case {
            what: "a trusted proxy that is no address or CIDR block",
            text: "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n".into(),
            line: 2,
            column: 20,
            key: "server.trusted_proxies[0]",
            message: &["`10.0.0.0/33` is not an address or a CIDR block"],
            help: None,
        },
        Case {
            what: "a hop-by-hop header in strip_client_headers",
            text: "[server]\nstrip_client_headers = [\"x-consumer\", \"connection\"]\n".into(),
            line: 2,
            column: 39,
            key: "server.strip_client_headers[1]",
            message: &["`connection` is handled by the gateway itself"],
            help: None,
        },
        Case {
            what: "unknown key in [admin]",
            text: "[admin]\nlistn = \"127.0.0.1:9901\"\n".into(),
            line: 2,
            column: 1,
            key: "admin.listn",
            message: &["unknown field `listn`"],
            help: Some("did you mean `listen`?"),
        },
        Case {
            what: "unknown key in a route's match",
            text: route("match = { path_prefx = \"/users\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 11,
            key: "route[0].match.path_prefx",
            message: &["unknown field `path_prefx`", "`path_prefix`"],
            help: Some("did you mean `path_prefix`?"),
        },
        Case {
            what: "unknown key in an upstream's timeouts",
            text: format!("{USERS}[[upstream]]\nname = \"b\"\nendpoints = [\"127.0.0.1:1\"]\ntimeouts = {{ conect = \"1s\" }}\n"),
            line: 8,
            column: 14,
            key: "upstream[1].timeouts.conect",
            message: &["unknown field `conect`"],
            help: Some("did you mean `connect`?"),
        },
        Case {
            what: "unknown balancer variant with a close name",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"round_robn\"\n".into(),
            line: 4,
            column: 12,
            key: "upstream[0].balancer",
            message: &["unknown variant `round_robn`", "`round_robin`", "`least_request`"],
            help: Some("did you mean `round_robin`?"),
        },
        Case {
            what: "unknown balancer variant with no close name",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"fastest\"\n".into(),
            line: 4,
            column: 12,
            key: "upstream[0].balancer",
            message: &["unknown variant `fastest`", "`round_robin`", "`consistent_hash`"],
            help: None,
        },
        Case {
            what: "wrong type",
            text: "[server]\nlisten = 5\n".into(),
            line: 2,
            column: 10,
            key: "server.listen",
            message: &["invalid type: integer `5`", "expected a string"],
            help: None,
        },
        Case {
            what: "missing required key",
            text: "[[upstream]]\nendpoints = [\"127.0.0.1:9001\"]\n".into(),
            line: 1,
            column: 1,
            key: "upstream[0]",
            message: &["missing field `name`"],
            help: None,
        },
        Case {
            what: "an upstream without endpoints or endpoints_file",
            text: "[[upstream]]\nname = \"u\"\n".into(),
            line: 2,
            column: 8,
            key: "upstream[0].endpoints",
            message: &["has no endpoints: set `endpoints` or `endpoints_file`"],
            help: None,
        },
        Case {
            what: "TOML syntax error: unterminated string",
            text: "[server]\nlisten = \"127.0.0.1:8080\n".into(),
            line: 2,
            column: 25,
            key: "",
            message: &["invalid basic string"],
            help: None,
        },
        Case {
            what: "TOML syntax error: unclosed table header",
            text: "[server\nlisten = \"127.0.0.1:8080\"\n".into(),
            line: 1,
            column: 8,
            key: "",
            message: &["unclosed table", "expected `]`"],
            help: None,
        },
        Case {
            what: "invalid duration",
            text: "[server]\nshutdown_grace = \"5 parsecs\"\n".into(),
            line: 2,
            column: 18,
            key: "server.shutdown_grace",
            message: &["invalid duration `5 parsecs`", "\"500ms\""],
            help: None,
        },
        Case {
            what: "invalid duration in timeouts",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\ntimeouts = { connect = \"soon\" }\n".into(),
            line: 4,
            column: 24,
            key: "upstream[0].timeouts.connect",
            message: &["invalid duration `soon`"],
            help: None,
        },
        // --- semantic errors ---
        Case {
            what: "route names a missing upstream",
            text: route("upstream = \"user\"\n"),
            line: 7,
            column: 12,
            key: "route[0].upstream",
            message: &["route `r` names upstream `user`, which is not defined"],
            help: Some("did you mean `users`?"),
        },
        Case {
            what: "route names a missing upstream with no close name",
            text: route("upstream = \"billing\"\n"),
            line: 7,
            column: 12,
            key: "route[0].upstream",
            message: &["upstream `billing`, which is not defined"],
            help: None,
        },
        Case {
            what: "duplicate upstream names",
            text: format!("{USERS}[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9002\"]\n"),
            line: 6,
            column: 8,
            key: "upstream[1].name",
            message: &["duplicate upstream name `users`"],
            help: None,
        },
        Case {
            what: "duplicate route names",
            text: route("upstream = \"users\"\n\n[[route]]\nname = \"r\"\nupstream = \"users\"\n"),
            line: 10,
            column: 8,
            key: "route[1].name",
            message: &["duplicate route name `r`"],
            help: None,
        },
        Case {
            what: "invalid upstream name",
            text: "[[upstream]]\nname = \"my users\"\nendpoints = [\"127.0.0.1:1\"]\n".into(),
            line: 2,
            column: 8,
            key: "upstream[0].name",
            message: &["name `my users` must be non-empty"],
            help: None,
        },
        Case {
            what: "empty endpoint list",
            text: "[[upstream]]\nname = \"u\"\nendpoints = []\n".into(),
            line: 3,
            column: 13,
            key: "upstream[0].endpoints",
            message: &["upstream `u` has no endpoints"],
            help: None,
        },
        Case {
            what: "unparsable endpoint address",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\", \"not an address\"]\n"
                .into(),
            line: 3,
            column: 29,
            key: "upstream[0].endpoints[1]",
            message: &["`not an address` is not an endpoint address", "`host:port`"],
            help: None,
        },
        Case {
            what: "endpoint with an out-of-range port",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"localhost:99999\"]\n".into(),
            line: 3,
            column: 14,
            key: "upstream[0].endpoints[0]",
            message: &["endpoint `localhost:99999` has an invalid port `99999`"],
            help: None,
        },
        Case {
            what: "endpoint with port zero",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:0\"]\n".into(),
            line: 3,
            column: 14,
            key: "upstream[0].endpoints[0]",
            message: &["endpoint `127.0.0.1:0` needs a non-zero port"],
            help: None,
        },
        Case {
            what: "unparsable listen address",
            text: "[server]\nlisten = \"localhost\"\n".into(),
            line: 2,
            column: 10,
            key: "server.listen",
            message: &["`localhost` is not an IP address with a port"],
            help: None,
        },
        Case {
            what: "unparsable admin listen address",
            text: "[admin]\nlisten = \"127.0.0.1\"\n".into(),
            line: 2,
            column: 10,
            key: "admin.listen",
            message: &["`127.0.0.1` is not an IP address with a port"],
            help: None,
        },
        Case {
            what: "admin and server on the same address",
            text: "[server]\nlisten = \"127.0.0.1:8080\"\n\n[admin]\nlisten = \"127.0.0.1:8080\"\n"
                .into(),
            line: 5,
            column: 10,
            key: "admin.listen",
            message: &["cannot share the client listener's address 127.0.0.1:8080"],
            help: None,
        },
        Case {
            what: "path and path_prefix both set",
            text: route("match = { path = \"/a\", path_prefix = \"/a\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 18,
            key: "route[0].match.path",
            message: &["set either `path` or `path_prefix`, not both"],
            help: None,
        },
        Case {
            what: "non-normalised path prefix",
            text: route("match = { path_prefix = \"/a/../b\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 25,
            key: "route[0].match.path_prefix",
            message: &["`/a/../b` is not a normalised path"],
            help: Some("did you mean `/b`?"),
        },
        Case {
            what: "non-normalised exact path",
            text: route("match = { path = \"/a//b/./c\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 18,
            key: "route[0].match.path",
            message: &["`/a//b/./c` is not a normalised path"],
            help: Some("did you mean `/a/b/c`?"),
        },
        Case {
            what: "relative path",
            text: route("match = { path = \"users\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 18,
            key: "route[0].match.path",
            message: &["`users`", "must start with `/`"],
            help: None,
        },
        Case {
            what: "lower-case method",
            text: route("match = { methods = [\"GET\", \"post\"] }\nupstream = \"users\"\n"),
            line: 7,
            column: 29,
            key: "route[0].match.methods[1]",
            message: &["`post` is not an HTTP method"],
            help: Some("methods are case-sensitive: did you mean `POST`?"),
        },
        Case {
            what: "method that is not a token",
            text: route("match = { methods = [\"GET POST\"] }\nupstream = \"users\"\n"),
            line: 7,
            column: 22,
            key: "route[0].match.methods[0]",
            message: &["`GET POST` is not an HTTP method"],
            help: None,
        },
        Case {
            what: "bad header name in match",
            text: route("match = { headers = { \"x tenant\" = \"acme\" } }\nupstream = \"users\"\n"),
            line: 7,
            column: 36,
            key: "route[0].match.headers.x tenant",
            message: &["`x tenant` is not a header name"],
            help: None,
        },
        Case {
            what: "bad header value in match",
            text: route("match = { headers = { x-tenant = \"a\\nb\" } }\nupstream = \"users\"\n"),
            line: 7,
            column: 34,
            key: "route[0].match.headers.x-tenant",
            message: &["is not a valid header value"],
            help: None,
        },
        Case {
            what: "host pattern with a port",
            text: route("match = { host = \"api.example.com:8080\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 18,
            key: "route[0].match.host",
            message: &[
                "`api.example.com:8080` is not a host pattern",
                "without a port",
            ],
            help: None,
        },
        Case {
            what: "host pattern with a wildcard in the middle",
            text: route("match = { host = \"api.*.com\" }\nupstream = \"users\"\n"),
            line: 7,
            column: 18,
            key: "route[0].match.host",
            message: &["`api.*.com` is not a host pattern"],
            help: None,
        },
        Case {
            what: "host_rewrite together with auto_host_rewrite",
            text: route(
                "upstream = \"users\"\nhost_rewrite = \"users.internal\"\nauto_host_rewrite = true\n",
            ),
            line: 8,
            column: 16,
            key: "route[0].host_rewrite",
            message: &["set either `host_rewrite` or `auto_host_rewrite`, not both"],
            help: None,
        },
        Case {
            what: "invalid host_rewrite",
            text: route("upstream = \"users\"\nhost_rewrite = \"users internal\"\n"),
            line: 8,
            column: 16,
            key: "route[0].host_rewrite",
            message: &["`users internal` is not a valid host"],
            help: None,
        },
        Case {
            what: "plugin name that cannot be a file name",
            text: route("upstream = \"users\"\nplugins = [{ name = \"Auth\" }]\n"),
            line: 8,
            column: 21,
            key: "route[0].plugins[0].name",
            message: &["plugin name `Auth` must use only a-z, 0-9, `-` and `_`"],
            help: None,
        },
        Case {
            what: "workers = 0",
            text: "[server]\nworkers = 0\n".into(),
            line: 2,
            column: 11,
            key: "server.workers",
            message: &["workers must be at least 1"],
            help: None,
        },
        Case {
            what: "invalid Via pseudonym",
            text: "[server]\nvia = \"my gateway\"\n".into(),
            line: 2,
            column: 7,
            key: "server.via",
            message: &["`my gateway` is not a valid Via pseudonym"],
            help: None,
        },
        Case {
            what: "endpoint weight out of range",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", weight = 0 }]\n".into(),
            line: 3,
            column: 29,
            key: "upstream[0].endpoints[1].weight",
            message: &["weight 0 is out of range", "1 to 1000"],
            help: None,
        },
        Case {
            what: "unknown key in an endpoint table",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [{ adress = \"127.0.0.1:2\" }]\n".into(),
            line: 3,
            column: 14,
            key: "upstream[0].endpoints[0]",
            message: &["unknown field `adress`", "`address`"],
            help: Some("did you mean `address`?"),
        },
        Case {
            what: "the same endpoint twice",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n".into(),
            line: 3,
            column: 29,
            key: "upstream[0].endpoints[1]",
            message: &["listed twice"],
            help: None,
        },
        Case {
            what: "consistent_hash without hash_on",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"consistent_hash\"\n".into(),
            line: 2,
            column: 8,
            key: "upstream[0].hash_on",
            message: &["needs `hash_on`", "header:NAME"],
            help: None,
        },
        Case {
            what: "hash_on something unknown",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"consistent_hash\"\nhash_on = \"query:id\"\n".into(),
            line: 5,
            column: 11,
            key: "upstream[0].hash_on",
            message: &["`query:id` is not something to hash"],
            help: None,
        },
        Case {
            what: "hash_on with another balancer",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nhash_on = \"ip\"\n".into(),
            line: 4,
            column: 11,
            key: "upstream[0].hash_on",
            message: &["applies to balancer `consistent_hash` only, not `round_robin`"],
            help: None,
        },
        Case {
            what: "zero timeout",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\ntimeouts = { connect = \"0s\" }\n".into(),
            line: 4,
            column: 24,
            key: "upstream[0].timeouts.connect",
            message: &["a timeout must be longer than zero"],
            help: None,
        },
        Case {
            what: "zero dns_refresh",
            text: "[[upstream]]\nname = \"u\"\nendpoints = [\"localhost:1\"]\ndns_refresh = \"0s\"\n".into(),
            line: 4,
            column: 15,
            key: "upstream[0].dns_refresh",
            message: &["longer than zero"],
            help: None,
        },
        // --- traffic: split, mirror, cookie and header conditions ---
        Case {
            what: "route with both upstream and split",
            text: route("upstream = \"users\"\nsplit = [{ upstream = \"users\", weight = 1 }]\n"),
            line: 8,
            column: 9,
            key: "route[0].split",
            message: &["set either `upstream` or `split`, not both"],
            help: None,
        },
        Case {
            what: "route with neither upstream nor split",
            text: route(""),
            line: 6,
            column: 8,
            key: "route[0].upstream",
            message: &["route `r` needs `upstream`", "`split`", "or `respond`"],
            help: None,
        },
        Case {
            what: "route with both upstream and respond",
            text: route("upstream = \"users\"\nrespond = { status = 403 }\n"),
            line: 8,
            column: 11,
            key: "route[0].respond",
            message: &["set one of `upstream`, `split` or `respond`"],
            help: None,
        },
        Case {
            what: "respond with a status that is not final",
            text: route("respond = { status = 99 }\n"),
            line: 7,
            column: 22,
            key: "route[0].respond.status",
            message: &["status must be a final status code from 200 to 599, not 99"],
            help: None,
        },
        Case {
            what: "respond with a body on a 204",
            text: route("respond = { status = 204, body = \"x\" }\n"),
            line: 7,
            column: 34,
            key: "route[0].respond.body",
            message: &["a 204 No Content response has no body"],
            help: None,
        },
        Case {
            what: "respond with an empty content type",
            text: route("respond = { status = 200, content_type = \" \" }\n"),
            line: 7,
            column: 42,
            key: "route[0].respond.content_type",
            message: &["is not a valid Content-Type value"],
            help: None,
        },
        Case {
            what: "respond with a mirror",
            text: route("respond = { status = 403 }\nmirror = { upstream = \"users\" }\n"),
            line: 8,
            column: 10,
            key: "route[0].mirror",
            message: &["`mirror` has no effect on a route that responds itself"],
            help: None,
        },
        Case {
            what: "split names a missing upstream",
            text: route("split = [{ upstream = \"user\", weight = 1 }]\n"),
            line: 7,
            column: 23,
            key: "route[0].split[0].upstream",
            message: &["route `r` names upstream `user`, which is not defined"],
            help: Some("did you mean `users`?"),
        },
        Case {
            what: "split weight zero",
            text: route("split = [{ upstream = \"users\", weight = 0 }]\n"),
            line: 7,
            column: 41,
            key: "route[0].split[0].weight",
            message: &["weight must be a whole number from 1 to 1000000, not 0"],
            help: None,
        },
        Case {
            what: "empty split",
            text: route("split = []\n"),
            line: 7,
            column: 9,
            key: "route[0].split",
            message: &["a split needs at least one"],
            help: None,
        },
        Case {
            what: "split lists an upstream twice",
            text: route(
                "split = [{ upstream = \"users\", weight = 1 }, { upstream = \"users\", weight = 2 }]\n",
            ),
            line: 7,
            column: 59,
            key: "route[0].split[1].upstream",
            message: &["upstream `users` is listed twice in the split"],
            help: None,
        },
        Case {
            what: "mirror names a missing upstream",
            text: route("upstream = \"users\"\nmirror = { upstream = \"userz\" }\n"),
            line: 8,
            column: 23,
            key: "route[0].mirror.upstream",
            message: &["route `r` names upstream `userz`, which is not defined"],
            help: Some("did you mean `users`?"),
        },
        Case {
            what: "mirror percent above 100",
            text: route("upstream = \"users\"\nmirror = { upstream = \"users\", percent = 150 }\n"),
            line: 8,
            column: 42,
            key: "route[0].mirror.percent",
            message: &["percent must be between 0 and 100, not 150"],
            help: None,
        },
        Case {
            what: "unknown key in mirror",
            text: route("upstream = \"users\"\nmirror = { upstream = \"users\", percnt = 5 }\n"),
            line: 8,
            column: 32,
            key: "route[0].mirror.percnt",
            message: &["unknown field `percnt`"],
            help: Some("did you mean `percent`?"),
        },
        Case {
            what: "cookie value with a space",
            text: route("upstream = \"users\"\nmatch = { cookies = { canary = \"a b\" } }\n"),
            line: 8,
            column: 32,
            key: "route[0].match.cookies.canary",
            message: &["`a b` is not a valid cookie value"],
            help: None,
        },
        Case {
            what: "unknown header condition",
            text: route("upstream = \"users\"\nmatch = { headers = { x-canary = { presnt = true } } }\n"),
            line: 8,
            column: 34,
            key: "route[0].match.headers.x-canary",
            message: &["unknown field `presnt`"],
            help: Some("did you mean `present`?"),
        },
        Case {
            what: "an unparsable Redis URL",
            text: "[kv]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:99999\"\n".to_owned(),
            line: 3,
            column: 7,
            key: "kv.url",
            message: &["`redis://127.0.0.1:99999` is not a valid Redis URL"],
            help: None,
        },
        Case {
            what: "a URL that is not Redis's, its password hidden",
            text: "[kv]\nbackend = \"redis\"\nurl = \"http://u:secret@cache:6379\"\n".to_owned(),
            line: 3,
            column: 7,
            key: "kv.url",
            message: &["`http://u:***@cache:6379` is not a Redis URL", "rediss://"],
            help: None,
        },
        Case {
            what: "the Redis backend without a URL",
            text: "[kv]\nbackend = \"redis\"\n".to_owned(),
            line: 2,
            column: 11,
            key: "kv.url",
            message: &["`backend = \"redis\"` needs `url`"],
            help: None,
        },
        Case {
            what: "a Redis password variable that is not set",
            text: "[kv]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\npassword_env = \"WEIR_TEST_UNSET_REDIS_PASSWORD\"\n".to_owned(),
            line: 4,
            column: 16,
            key: "kv.password_env",
            message: &["environment variable `WEIR_TEST_UNSET_REDIS_PASSWORD` is not set"],
            help: None,
        },
        Case {
            what: "a URL for the in-memory store",
            text: "[kv]\nurl = \"redis://127.0.0.1:6379\"\n".to_owned(),
            line: 2,
            column: 7,
            key: "kv.url",
            message: &["`url` is only used with `backend = \"redis\"`"],
            help: None,
        },
        Case {
            what: "an unknown backend",
            text: "[kv]\nbackend = \"memcached\"\n".to_owned(),
            line: 2,
            column: 11,
            key: "kv.backend",
            message: &["unknown variant `memcached`"],
            help: None,
        },
    ]
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("weir.toml"), text)
}

fn check(case: &Case) -> Result<(), String> {
    let err = match parse(&case.text) {
        Ok(_) => return Err("the config was accepted".to_owned()),
        Err(err) => err,
    };
    let [d] = err.diagnostics() else {
        return Err(format!("expected exactly one diagnostic, got:\n{err}"));
    };
    let mut wrong = Vec::new();
    if d.file != Path::new("weir.toml") {
        wrong.push(format!("file {}", d.file.display()));
    }
    if (d.line, d.column) != (case.line, case.column) {
        wrong.push(format!(
            "position {}:{}, expected {}:{}",
            d.line, d.column, case.line, case.column
        ));
    }
    if d.key != case.key {
        wrong.push(format!("key `{}`, expected `{}`", d.key, case.key));
    }
    for fragment in case.message {
        if !d.message.contains(fragment) {
            wrong.push(format!("message lacks {fragment:?}"));
        }
    }
    if d.help.as_deref() != case.help {
        wrong.push(format!("help {:?}, expected {:?}", d.help, case.help));
    }
    // The full text: a count, then `file:line:column: `key`: message (help)`.
    let full = err.to_string();
    let mut located = format!("weir.toml:{}:{}: ", case.line, case.column);
    if !case.key.is_empty() {
        located.push_str(&format!("`{}`: ", case.key));
    }
    if !full.starts_with("1 error in configuration\n  ") || !full.contains(&located) {
        wrong.push(format!("full text lacks the count or {located:?}"));
    }
    if let Some(help) = case.help
        && !full.contains(&format!("({help})"))
    {
        wrong.push("full text lacks the help".to_owned());
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{}\n  got: {d:?}\n  full text:\n{full}",
            wrong.join("; ")
        )),
    }
}

#[test]
fn each_bad_config_names_its_place_key_and_fix() {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            check(case)
                .err()
                .map(|why| format!("{}: {why}\n--- config ---\n{}", case.what, case.text))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_semantic_error_in_a_file_is_reported_together_sorted_by_position() {
    // Routes come before upstreams and [server] last, so the order the checks run in
    // is not the order of the file: the report must be sorted.
    let text = r#"[[route]]
name = "users-api"
match = { path_prefix = "/users/../admin", methods = ["get"] }
upstream = "user"

[[route]]
name = "users-api"
upstream = "users"
plugins = [{ name = "Auth" }]

[[upstream]]
name = "users"
endpoints = ["127.0.0.1:9001", "localhost"]

[[upstream]]
name = "users"
endpoints = []

[server]
listen = "localhost:8080"
workers = 0
"#;
    let err = parse(text).expect_err("the config has errors");
    let found: Vec<(usize, usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.column, d.key.as_str()))
        .collect();
    let expected = [
        (3, 25, "route[0].match.path_prefix"),
        (3, 55, "route[0].match.methods[0]"),
        (4, 12, "route[0].upstream"),
        (7, 8, "route[1].name"),
        (9, 21, "route[1].plugins[0].name"),
        (13, 32, "upstream[0].endpoints[1]"),
        (16, 8, "upstream[1].name"),
        (17, 13, "upstream[1].endpoints"),
        (20, 10, "server.listen"),
        (21, 11, "server.workers"),
    ];
    assert_eq!(found, expected, "full text:\n{err}");

    let mut sorted = found.clone();
    sorted.sort();
    assert_eq!(found, sorted, "diagnostics are sorted by line, then column");

    let full = err.to_string();
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines[0], "10 errors in configuration", "full text:\n{full}");
    assert_eq!(lines.len(), 11, "one line per error:\n{full}");
    for (line, (l, c, key)) in lines[1..].iter().zip(expected) {
        assert!(
            line.starts_with(&format!("  weir.toml:{l}:{c}: `{key}`: ")),
            "{line:?} should start with its place and key"
        );
    }
    // The typo hints survive in the combined report.
    assert!(full.contains("(did you mean `/admin`?)"), "{full}");
    assert!(
        full.contains("(methods are case-sensitive: did you mean `GET`?)"),
        "{full}"
    );
    assert!(full.contains("(did you mean `users`?)"), "{full}");
}

#[test]
fn a_schema_error_stops_before_semantic_checks() {
    // Parsing stops at the first schema error, so the semantic problems in the same file
    // (an unknown upstream, workers = 0) are not reported alongside it.
    let text = "[server]\nworkers = 0\n\n[[route]]\nname = \"r\"\nupstrem = \"users\"\n";
    let err = parse(text).expect_err("the config has errors");
    let [d] = err.diagnostics() else {
        panic!("expected one diagnostic:\n{err}");
    };
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (6, 1, "route[0].upstrem")
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `upstream`?"));
}

#[test]
fn an_unreadable_file_is_a_read_error_without_diagnostics() {
    let path = Path::new("/nonexistent/weir-config-errors/weir.toml");
    let err = Config::load(path).expect_err("the file does not exist");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.diagnostics().is_empty());
    let text = err.to_string();
    assert!(
        text.contains("cannot read config file /nonexistent/weir-config-errors/weir.toml"),
        "{text}"
    );
}

#[test]
fn the_basic_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/basic/weir.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));

    let upstreams: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(upstreams, ["users", "web"]);
    let users = &config.upstreams[0];
    let endpoints: Vec<String> = users
        .endpoints
        .iter()
        .map(|e| e.authority.to_string())
        .collect();
    assert_eq!(endpoints, ["127.0.0.1:9001", "127.0.0.1:9002"]);
    assert_eq!(users.timeouts.connect, Duration::from_secs(1));
    assert_eq!(users.timeouts.request, Duration::from_secs(15));
    assert_eq!(config.upstreams[1].timeouts.connect, Duration::from_secs(5));

    let routes: Vec<(&str, Option<usize>)> = config
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.upstream.single()))
        .collect();
    assert_eq!(
        routes,
        [
            ("users-write", Some(0)),
            ("users-api", Some(0)),
            ("web", Some(1))
        ]
    );
    let write = &config.routes[0];
    assert_eq!(write.path, Some(PathPattern::Prefix("/users".to_owned())));
    assert_eq!(write.methods, ["POST", "PUT", "DELETE"]);
    assert_eq!(write.headers.len(), 1);
    assert_eq!(write.headers[0].0, "x-tenant");
    assert_eq!(
        write.headers[0].1,
        HeaderMatch::Exact(http::HeaderValue::from_static("acme"))
    );
    let api = &config.routes[1];
    assert_eq!(
        api.host,
        Some(HostPattern::Exact("api.example.com".to_owned()))
    );
    assert_eq!(
        api.host_rewrite,
        HostRewrite::Literal(http::HeaderValue::from_static("users.internal"))
    );
    assert_eq!(
        config.routes[2].host,
        Some(HostPattern::Suffix(".example.com".to_owned()))
    );
}

#[test]
fn an_empty_file_is_valid_with_defaults() {
    let config = parse("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.server.workers, None);
    assert_eq!(config.server.via, "weir");
    assert!(config.server.trace_context);
    assert!(config.upstreams.is_empty());
    assert!(config.routes.is_empty());
}

#[test]
fn the_quickstart_config_is_valid() {
    let demo = "127.0.0.1:4321".parse().unwrap();
    let config = quickstart::config(demo, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.upstreams[0].endpoints[0].authority, "127.0.0.1:4321");
    assert_eq!(config.routes.len(), 1);
    assert_eq!(
        config.routes[0].path,
        Some(PathPattern::Prefix("/".to_owned()))
    );
    let dir = Path::new("/tmp/a \"quoted\" dir");
    let with_plugins = quickstart::config(demo, Some(dir)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(with_plugins.routes.len(), 2);
    assert_eq!(
        with_plugins.routes[0].path,
        Some(PathPattern::Prefix("/private".to_owned())),
        "/private is matched before the catch-all"
    );
    assert_eq!(with_plugins.plugins.dir, dir);
}

/// A `Diagnostic` prints as `file:line:column: `key`: message (help)`, and without the
/// position when it has none.
#[test]
fn a_diagnostic_prints_place_key_message_and_help() {
    let mut d = Diagnostic {
        file: "conf/weir.toml".into(),
        line: 3,
        column: 7,
        key: "route[0].upstream".to_owned(),
        message: "it is wrong".to_owned(),
        help: Some("did you mean `x`?".to_owned()),
    };
    assert_eq!(
        d.to_string(),
        "conf/weir.toml:3:7: `route[0].upstream`: it is wrong (did you mean `x`?)"
    );
    d.line = 0;
    d.help = None;
    assert_eq!(
        d.to_string(),
        "conf/weir.toml: `route[0].upstream`: it is wrong"
    );
}
