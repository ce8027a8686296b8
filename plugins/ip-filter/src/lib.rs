//! `ip-filter`: allows or denies clients by IP address.
//!
//! `allow` and `deny` are lists of CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single
//! addresses. A client in `deny` gets 403, whatever `allow` says (deny wins). When
//! `allow` is not empty, a client outside it gets 403 too; when it is empty, everyone
//! not denied passes. An IPv4 client reached over IPv6 (`::ffff:192.0.2.7`) is matched
//! as the IPv4 address it is.
//!
//! ```toml
//! plugins = [{ name = "ip-filter", config = { allow = ["10.0.0.0/8"], deny = ["10.6.6.0/24"] } }]
//! ```

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use weir_plugin_sdk::{Action, LocalResponse, PhaseResult, Plugin, Request};

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Clients allowed (empty: everyone not denied).
    allow: Vec<String>,
    /// Clients denied, whatever `allow` says.
    deny: Vec<String>,
}

/// The plugin: the parsed lists.
#[derive(Debug)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// Parses one list entry: a CIDR block or a single address (a /32 or /128).
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        // `10.1.2.3/8` names 10.0.0.0/8; keep what the operator meant, normalised.
        return Ok(normalise_net(net.trunc()));
    }
    text.parse::<IpAddr>()
        .map(|ip| normalise_net(IpNet::from(ip)))
        .map_err(|_| format!("{text:?} is neither a CIDR block nor an IP address"))
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it is.
fn normalise_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_list(key: &str, entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_net(entry).map_err(|e| format!("`{key}[{i}]`: {e}")))
        .collect()
}

impl IpFilter {
    /// Whether a client at `ip` may pass.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = normalise_ip(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

fn forbidden() -> Action {
    Action::Respond(LocalResponse::json(
        403,
        &serde_json::json!({ "error": "forbidden" }),
    ))
}

#[weir_plugin_sdk::plugin]
impl Plugin for IpFilter {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err("`allow` and `deny` are both empty: the filter would do nothing".into());
        }
        Ok(IpFilter {
            allow: parse_list("allow", &config.allow)?,
            deny: parse_list("deny", &config.deny)?,
        })
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        // The gateway always knows the peer's address; one it cannot parse is denied
        // rather than waved through.
        Ok(match request.client_address().parse::<IpAddr>() {
            Ok(ip) if self.admits(ip) => Action::Continue,
            _ => forbidden(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::Harness;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        IpFilter::new(Config {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn admits(f: &IpFilter, ip: &str) -> bool {
        f.admits(ip.parse().unwrap())
    }

    #[test]
    fn allow_list_admits_only_its_blocks() {
        let f = filter(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], &[]);
        assert!(admits(&f, "10.1.2.3"));
        assert!(admits(&f, "192.0.2.7"));
        assert!(!admits(&f, "192.0.2.8"));
        assert!(admits(&f, "2001:db8::1"));
        assert!(!admits(&f, "2001:db9::1"));
        assert!(!admits(&f, "11.0.0.1"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = filter(&["10.0.0.0/8"], &["10.6.6.0/24"]);
        assert!(admits(&f, "10.6.5.1"));
        assert!(!admits(&f, "10.6.6.1"));
        let only_deny = filter(&[], &["203.0.113.0/24", "::1"]);
        assert!(admits(&only_deny, "198.51.100.1"));
        assert!(!admits(&only_deny, "203.0.113.9"));
        assert!(!admits(&only_deny, "::1"));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_blocks() {
        let f = filter(&["127.0.0.0/8"], &[]);
        assert!(admits(&f, "::ffff:127.0.0.1"));
        let mapped_rule = filter(&["::ffff:10.0.0.0/104"], &[]);
        assert!(admits(&mapped_rule, "10.9.9.9"));
    }

    #[test]
    fn host_bits_in_a_block_are_ignored() {
        let f = filter(&["10.1.2.3/8"], &[]);
        assert!(admits(&f, "10.200.0.1"));
    }

    #[test]
    fn requests_are_answered_403_or_continued() {
        let f = filter(&["127.0.0.1"], &[]);
        let mut ok = Request::new("GET", "/").with_client_address("127.0.0.1");
        assert_eq!(
            f.on_request_headers(&mut ok, &mut ()).unwrap(),
            Action::Continue
        );
        let mut other = Request::new("GET", "/").with_client_address("127.0.0.2");
        match f.on_request_headers(&mut other, &mut ()).unwrap() {
            Action::Respond(r) => {
                assert_eq!(r.status, 403);
                assert_eq!(r.body, br#"{"error":"forbidden"}"#);
            }
            Action::Continue => panic!("denied client passed"),
        }
    }

    #[test]
    fn bad_config_names_the_key() {
        let bad = IpFilter::new(Config {
            allow: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            deny: vec![],
        })
        .unwrap_err();
        assert!(bad.contains("`allow[1]`"), "{bad}");
        let bad = IpFilter::new(Config {
            allow: vec![],
            deny: vec!["nonsense".into()],
        })
        .unwrap_err();
        assert!(bad.contains("`deny[0]`"), "{bad}");
        let empty = IpFilter::new(Config::default()).unwrap_err();
        assert!(empty.contains("`allow`"), "{empty}");
    }

    #[test]
    fn a_denied_client_never_reaches_the_upstream() {
        let mut harness = Harness::<IpFilter>::new(serde_json::json!({ "deny": ["192.0.2.0/24"] }));
        let denied = harness.run(Request::new("GET", "/").with_client_address("192.0.2.9"));
        assert_eq!(denied.status(), 403);
        assert_eq!(denied.header("content-type"), Some("application/json"));
        assert_eq!(
            denied.body_json(),
            serde_json::json!({ "error": "forbidden" })
        );
        assert!(denied.upstream_request().is_none());
        let admitted = harness.run(Request::new("GET", "/").with_client_address("198.51.100.1"));
        assert_eq!(admitted.status(), 200);
        assert!(admitted.upstream_request().is_some());
        let unparsable = harness.run(Request::new("GET", "/").with_client_address("not-an-ip"));
        assert_eq!(
            unparsable.status(),
            403,
            "an odd address is denied, not waved through"
        );
    }
}
