//! Validation of `[[upstream]]` tables: endpoints and weights, the balancer and what it
//! hashes. Every problem is collected with its key path (`upstream[0].endpoints[1]`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr;

use http::HeaderName;
use http::uri::Authority;
use toml::Spanned;

use super::Balancer;
use super::schema::{EndpointEntry, UpstreamConfig};
use super::upstream::{Endpoint, HashOn, MAX_WEIGHT, Upstream};
use super::validate::Checker;

/// The largest sum of endpoint weights a `consistent_hash` cluster may have: its ring
/// holds [`crate::upstream`]'s points per unit of weight, and this bounds its size.
pub(crate) const MAX_HASH_WEIGHT_SUM: u64 = 4096;

pub(super) fn check_upstreams(c: &mut Checker<'_>, raw: &[UpstreamConfig]) -> Vec<Upstream> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstream[{i}]");
        c.name(&u.name, &format!("{key}.name"));
        if !seen.insert(u.name.get_ref()) {
            c.error(
                &u.name.span(),
                format!("{key}.name"),
                format!("duplicate upstream name `{}`", u.name.get_ref()),
            );
        }
        let endpoints = check_endpoints(c, &key, u);
        let hash_on = check_balancer(c, &key, u, &endpoints);
        out.push(Upstream {
            name: u.name.get_ref().clone(),
            endpoints,
            balancer: u.balancer,
            hash_on,
            timeouts: u.timeouts,
        });
    }
    out
}

fn check_endpoints(c: &mut Checker<'_>, key: &str, u: &UpstreamConfig) -> Vec<Endpoint> {
    if u.endpoints.get_ref().is_empty() {
        c.error(
            &u.endpoints.span(),
            format!("{key}.endpoints"),
            format!("upstream `{}` has no endpoints", u.name.get_ref()),
        );
    }
    let mut endpoints = Vec::new();
    let mut addresses = HashSet::new();
    for (j, e) in u.endpoints.get_ref().iter().enumerate() {
        let EndpointEntry { address, weight } = e.get_ref();
        let ekey = format!("{key}.endpoints[{j}]");
        let weight = match weight {
            None => 1,
            Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
            Some(w) => {
                c.error(
                    &e.span(),
                    format!("{ekey}.weight"),
                    format!("weight {w} is out of range: write 1 to {MAX_WEIGHT}"),
                );
                1
            }
        };
        match parse_endpoint(address) {
            Ok(authority) if !addresses.insert(authority.clone()) => c.error(
                &e.span(),
                ekey,
                format!("endpoint `{address}` is listed twice (give it a weight instead)"),
            ),
            Ok(authority) => endpoints.push(Endpoint { authority, weight }),
            Err(why) => c.error(&e.span(), ekey, why),
        }
    }
    endpoints
}

/// Checks `hash_on` against the balancer; returns what to hash for `consistent_hash`.
fn check_balancer(
    c: &mut Checker<'_>,
    key: &str,
    u: &UpstreamConfig,
    endpoints: &[Endpoint],
) -> Option<HashOn> {
    match (&u.hash_on, u.balancer) {
        (None, Balancer::ConsistentHash) => {
            c.error(
                &u.name.span(),
                format!("{key}.hash_on"),
                "balancer `consistent_hash` needs `hash_on`: \"header:NAME\", \"cookie:NAME\" or \"ip\"",
            );
            None
        }
        (None, _) => None,
        (Some(h), Balancer::ConsistentHash) => {
            let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
            if total > MAX_HASH_WEIGHT_SUM {
                c.error(
                    &u.endpoints.span(),
                    format!("{key}.endpoints"),
                    format!(
                        "the weights of a `consistent_hash` upstream add up to {total}; at most \
                         {MAX_HASH_WEIGHT_SUM} (scale them down: only their ratios matter)"
                    ),
                );
            }
            parse_hash_on(c, &format!("{key}.hash_on"), h)
        }
        (Some(h), other) => {
            c.error(
                &h.span(),
                format!("{key}.hash_on"),
                format!(
                    "`hash_on` applies to balancer `consistent_hash` only, not `{}`",
                    other.as_str()
                ),
            );
            None
        }
    }
}

fn parse_hash_on(c: &mut Checker<'_>, key: &str, h: &Spanned<String>) -> Option<HashOn> {
    let text = h.get_ref();
    let parsed = match text.split_once(':') {
        None if text == "ip" => Some(HashOn::Ip),
        Some(("header", name)) => HeaderName::from_str(name).ok().map(HashOn::Header),
        Some(("cookie", name))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
        {
            Some(HashOn::Cookie(name.to_owned()))
        }
        _ => None,
    };
    if parsed.is_none() {
        c.error(
            &h.span(),
            key,
            format!(
                "`{text}` is not something to hash: write \"header:NAME\", \"cookie:NAME\" or \"ip\""
            ),
        );
    }
    parsed
}

/// `ip:port`, `[v6]:port` or `hostname:port`.
fn parse_endpoint(text: &str) -> Result<Authority, String> {
    let bad = || format!("`{text}` is not an endpoint address: write `host:port` or `ip:port`");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("endpoint `{text}` needs a non-zero port"));
        }
        return Authority::from_str(&addr.to_string()).map_err(|_| bad());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(format!("endpoint `{text}` has an invalid port `{port}`")),
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        });
    if !host_ok {
        return Err(bad());
    }
    Authority::from_str(text).map_err(|_| bad())
}
