//! Choosing the certificate for a handshake by the name the client asked for (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A name a certificate is served for: exact, or `*.suffix` (any name ending in
/// `.suffix`, like a route's `host`). Lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// This name exactly.
    Exact(String),
    /// Names ending with this suffix, which starts with `.` (from `*.example.com`).
    Wildcard(String),
}

impl ServerName {
    /// Parses `a.example.com` or `*.example.com` (case-insensitive); `None` when it is
    /// neither.
    pub fn parse(text: &str) -> Option<ServerName> {
        let lower = text.to_ascii_lowercase();
        let (name, bare) = match lower.strip_prefix("*.") {
            Some(rest) => (ServerName::Wildcard(format!(".{rest}")), rest),
            None => (ServerName::Exact(lower.clone()), lower.as_str()),
        };
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            });
        valid.then_some(name)
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Exact(name) => f.write_str(name),
            ServerName::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Picks a certificate by SNI: an exact name first, then the longest matching
/// wildcard, then the default. No match and no default refuses the handshake.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Longest suffix first, so the most specific wildcard wins.
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver with no certificates (it refuses every handshake until some are added).
    pub fn new() -> SniResolver {
        SniResolver::default()
    }

    /// Serves `key` for each of `names`, or as the default when `names` is empty.
    /// Names given before win over the same names given again.
    pub fn add(&mut self, names: &[ServerName], key: Arc<CertifiedKey>) {
        if names.is_empty() {
            self.default.get_or_insert(key);
            return;
        }
        for name in names {
            match name {
                ServerName::Exact(name) => {
                    self.exact
                        .entry(name.clone())
                        .or_insert_with(|| key.clone());
                }
                ServerName::Wildcard(suffix) => {
                    if !self.wildcards.iter().any(|(s, _)| s == suffix) {
                        self.wildcards.push((suffix.clone(), key.clone()));
                    }
                }
            }
        }
        self.wildcards
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    }

    /// The certificate for a client that asked for `name` (`None`: no SNI).
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, key)| key.clone())
            .or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.choose(hello.server_name());
        if chosen.is_none() {
            tracing::debug!(
                sni = hello.server_name().unwrap_or("-"),
                "no certificate for this server name and no default: handshake refused"
            );
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let der = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .expect("key der");
        let provider = crate::tls::provider();
        Arc::new(
            CertifiedKey::from_der(vec![made.cert.der().clone()], der, &provider).expect("pair"),
        )
    }

    fn names(list: &[&str]) -> Vec<ServerName> {
        list.iter()
            .map(|n| ServerName::parse(n).expect("valid name"))
            .collect()
    }

    #[test]
    fn parses_exact_and_wildcard_names() {
        assert_eq!(
            ServerName::parse("A.Example"),
            Some(ServerName::Exact("a.example".into()))
        );
        assert_eq!(
            ServerName::parse("*.example.com"),
            Some(ServerName::Wildcard(".example.com".into()))
        );
        for bad in ["", "*.", "a..b", "a.example:443", "a*.example", "*", "a b"] {
            assert_eq!(ServerName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn exact_then_longest_wildcard_then_default() {
        let (a, wide, narrow, default) = (key("a"), key("wide"), key("narrow"), key("default"));
        let mut r = SniResolver::new();
        r.add(&names(&["a.example.com"]), a.clone());
        r.add(&names(&["*.example.com"]), wide.clone());
        r.add(&names(&["*.api.example.com"]), narrow.clone());
        r.add(&[], default.clone());
        let pick = |n: Option<&str>| r.choose(n).expect("some certificate");
        assert!(Arc::ptr_eq(&pick(Some("a.example.com")), &a));
        assert!(Arc::ptr_eq(&pick(Some("A.Example.COM.")), &a));
        assert!(Arc::ptr_eq(&pick(Some("b.example.com")), &wide));
        assert!(Arc::ptr_eq(&pick(Some("x.api.example.com")), &narrow));
        assert!(Arc::ptr_eq(&pick(Some("example.com")), &default));
        assert!(Arc::ptr_eq(&pick(Some("other.test")), &default));
        assert!(Arc::ptr_eq(&pick(None), &default));
    }

    #[test]
    fn no_default_refuses_unknown_names_and_no_sni() {
        let mut r = SniResolver::new();
        r.add(&names(&["a.example"]), key("a"));
        assert!(r.choose(Some("a.example")).is_some());
        assert!(r.choose(Some("b.example")).is_none());
        assert!(r.choose(None).is_none());
    }
}
