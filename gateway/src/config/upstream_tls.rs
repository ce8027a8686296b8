//! `[[upstream]].tls`: checked and loaded whole, like `[server.tls]`. The CA file and
//! the client certificate and key are read and parsed during validation, so a missing
//! file, unparsable PEM, a key that is not the certificate's or a certificate without
//! its key is a config error naming its key (`upstream[0].tls.ca`), and a reload never
//! swaps in a cluster whose handshakes cannot work.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use toml::Spanned;

use super::schema_upstream::{Protocol, UpstreamTlsConfig};
use super::validate::Checker;
use crate::tls::{self, ClientIdentity, FileDigest};

/// TLS to a cluster's endpoints, typed: the files as configured and the client config
/// loaded from them.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The CA file endpoints must chain to (`None`: the system's trusted CAs).
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified (`None`: each endpoint's host).
    pub server_name: Option<ServerName<'static>>,
    /// The client certificate chain presented to endpoints, if any.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// What handshakes use: trust anchors, client certificate, ALPN.
    pub client_config: Arc<rustls::ClientConfig>,
    /// A digest of the files as they were loaded, to tell when they change.
    pub fingerprint: [u8; 32],
}

impl PartialEq for UpstreamTls {
    /// Equal when configured alike from files with the same contents (the client
    /// config is built from exactly those).
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.server_name == other.server_name
            && self.cert == other.cert
            && self.key == other.key
            && self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Every file it reads: the CA file, the client certificate and key.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .filter_map(|p| p.as_deref())
    }

    /// The digest of its files as they are now; differs from
    /// [`UpstreamTls::fingerprint`] when any of them changed since they were loaded.
    pub fn current_fingerprint(&self) -> [u8; 32] {
        FileDigest::of_files(self.files())
    }
}

/// Checks and loads `upstream[i].tls` (`key` is `upstream[i].tls`); `None` (with the
/// problems recorded in `c`) when anything is wrong.
pub(super) fn check(
    c: &mut Checker<'_>,
    key: &str,
    raw: &Spanned<UpstreamTlsConfig>,
    protocol: Protocol,
) -> Option<UpstreamTls> {
    let before = c.problem_count();
    let t = raw.get_ref();
    // Files are digested in the order `UpstreamTls::files` lists them.
    let mut digest = FileDigest::default();

    let ca = t.ca.as_ref().map(|ca| PathBuf::from(ca.get_ref()));
    let roots = match (&t.ca, &ca) {
        (Some(spanned), Some(path)) => {
            let bytes = tls::read_file(path);
            digest.add(path, bytes.as_deref());
            bytes
                .and_then(|pem| tls::read_roots(path, &pem))
                .map(Arc::new)
                .map_err(|err| c.error(&spanned.span(), format!("{key}.ca"), err.to_string()))
                .ok()
        }
        _ => tls::system_roots()
            .map_err(|err| c.error(&raw.span(), format!("{key}.ca"), err.to_string()))
            .ok(),
    };

    let server_name = t.server_name.as_ref().and_then(|name| {
        let text = name.get_ref();
        match ServerName::try_from(text.as_str()) {
            Ok(parsed) if !text.contains(':') || text.parse::<std::net::IpAddr>().is_ok() => {
                Some(parsed.to_owned())
            }
            _ => {
                c.error(
                    &name.span(),
                    format!("{key}.server_name"),
                    format!(
                        "`{text}` is not a server name: write a DNS name like \
                         \"users.internal\" or an IP address, without a port"
                    ),
                );
                None
            }
        }
    });

    let cert = t.cert.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let key_path = t.key.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let identity = match (&t.cert, &t.key) {
        (None, None) => None,
        (Some(cert_span), None) => {
            c.error(
                &cert_span.span(),
                format!("{key}.key"),
                "a client certificate needs its private key: add `key = \"...\"`",
            );
            None
        }
        (None, Some(key_span)) => {
            c.error(
                &key_span.span(),
                format!("{key}.cert"),
                "a private key needs its client certificate: add `cert = \"...\"`",
            );
            None
        }
        (Some(cert_span), Some(key_span)) => {
            let cert_path = PathBuf::from(cert_span.get_ref());
            let key_file = PathBuf::from(key_span.get_ref());
            let cert_bytes = tls::read_file(&cert_path);
            digest.add(&cert_path, cert_bytes.as_deref());
            let key_bytes = tls::read_file(&key_file);
            digest.add(&key_file, key_bytes.as_deref());
            let chain = cert_bytes
                .and_then(|pem| tls::read_chain(&cert_path, &pem))
                .map_err(|e| c.error(&cert_span.span(), format!("{key}.cert"), e.to_string()));
            let private_key = key_bytes
                .and_then(|pem| tls::read_key(&key_file, &pem))
                .map_err(|e| c.error(&key_span.span(), format!("{key}.key"), e.to_string()));
            match (chain, private_key) {
                (Ok(chain), Ok(private_key)) => {
                    // Checked here for a message naming both files; rustls checks again.
                    let checked = tls::certified_key(
                        chain.clone(),
                        private_key.clone_key(),
                        &cert_path,
                        &key_file,
                    );
                    match checked {
                        Ok(_) => Some(ClientIdentity {
                            chain,
                            key: private_key,
                        }),
                        Err(e) => {
                            c.error(&key_span.span(), format!("{key}.key"), e.to_string());
                            None
                        }
                    }
                }
                _ => None,
            }
        }
    };

    let roots = roots?;
    if c.problem_count() > before {
        return None;
    }
    match tls::client_config(roots, identity, protocol == Protocol::Http2) {
        Ok(client_config) => Some(UpstreamTls {
            ca,
            server_name,
            cert,
            key: key_path,
            client_config,
            fingerprint: digest.finish(),
        }),
        Err(err) => {
            c.error(&raw.span(), key.to_owned(), err.to_string());
            None
        }
    }
}
