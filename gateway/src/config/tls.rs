//! `[server.tls]`: checked and loaded whole. Every certificate, key and CA file is read
//! and parsed here, so a missing file, a key that is not its certificate's, two
//! defaults or a name listed twice is a config error naming its key, reported with the
//! config's other errors, and a reload never swaps in certificates that cannot serve.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::schema::TlsConfig;
use super::validate::Checker;
use crate::tls::{self, FileDigest, ServerName, SniResolver};

/// `[server.tls]`, typed: the files as configured and the server config loaded from
/// them.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificates, in config order.
    pub certificates: Vec<TlsCertificate>,
    /// The CA bundle client certificates must chain to (`None`: no client certificates).
    pub client_ca: Option<PathBuf>,
    /// What handshakes use: the certificates by SNI, ALPN, client verification.
    pub server_config: Arc<rustls::ServerConfig>,
    /// A digest of the files as they were loaded, to tell when they change.
    pub fingerprint: [u8; 32],
}

/// One certificate of `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    /// The certificate chain's file.
    pub cert: PathBuf,
    /// The private key's file.
    pub key: PathBuf,
    /// The names it serves; empty for the default certificate.
    pub names: Vec<ServerName>,
}

impl Tls {
    /// Every file the TLS setup reads: certificates, keys, the client CA bundle.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self
            .certificates
            .iter()
            .flat_map(|c| [c.cert.as_path(), c.key.as_path()])
            .collect();
        files.extend(self.client_ca.as_deref());
        files
    }

    /// The digest of the files as they are now; differs from [`Tls::fingerprint`] when
    /// any of them changed (or became unreadable) since they were loaded.
    pub fn current_fingerprint(&self) -> [u8; 32] {
        FileDigest::of_files(self.files())
    }
}

/// The TLS files config `text` names, found even when the config is invalid (empty
/// when it does not parse), so that a config refused for a missing certificate can be
/// retried, and its files watched, until the files are there.
pub fn files_named_in(text: &str) -> Vec<PathBuf> {
    let Ok(raw) = toml::from_str::<super::ConfigFile>(text) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = raw
        .upstreams
        .iter()
        .filter_map(|u| u.tls.as_ref())
        .flat_map(|t| {
            let t = t.get_ref();
            [&t.ca, &t.cert, &t.key]
                .into_iter()
                .flatten()
                .map(|p| PathBuf::from(p.get_ref()))
        })
        .collect();
    let Some(tls) = raw.server.tls else {
        return files;
    };
    let tls = tls.into_inner();
    files.extend(tls.certificates.into_inner().into_iter().flat_map(|c| {
        let c = c.into_inner();
        [
            PathBuf::from(c.cert.into_inner()),
            PathBuf::from(c.key.into_inner()),
        ]
    }));
    files.extend(tls.client_ca.map(|ca| PathBuf::from(ca.into_inner())));
    files
}

/// Checks and loads `[server.tls]`; `None` (with the problems recorded in `c`) when
/// anything is wrong.
pub(super) fn check(c: &mut Checker<'_>, raw: &Spanned<TlsConfig>) -> Option<Tls> {
    let before = c.problem_count();
    let list = raw.get_ref().certificates.get_ref();
    if list.is_empty() {
        c.error(
            &raw.get_ref().certificates.span(),
            "server.tls.certificates",
            "no certificates: list at least one `{ cert = \"...\", key = \"...\" }`",
        );
    }
    // Files are digested in the order `Tls::files` lists them.
    let mut digest = FileDigest::default();
    let mut resolver = SniResolver::new();
    let mut default: Option<usize> = None;
    let mut listed: HashMap<ServerName, usize> = HashMap::new();
    let mut certificates = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let key = format!("server.tls.certificates[{i}]");
        let e = entry.get_ref();
        let cert_path = PathBuf::from(e.cert.get_ref());
        let key_path = PathBuf::from(e.key.get_ref());
        let cert_bytes = tls::read_file(&cert_path);
        digest.add(&cert_path, cert_bytes.as_deref());
        let key_bytes = tls::read_file(&key_path);
        digest.add(&key_path, key_bytes.as_deref());
        let chain = cert_bytes
            .and_then(|pem| tls::read_chain(&cert_path, &pem))
            .map_err(|err| c.error(&e.cert.span(), format!("{key}.cert"), err.to_string()));
        let private_key = key_bytes
            .and_then(|pem| tls::read_key(&key_path, &pem))
            .map_err(|err| c.error(&e.key.span(), format!("{key}.key"), err.to_string()));

        let names = match &e.names {
            None => {
                match default {
                    Some(first) => c.error(
                        &entry.span(),
                        key.clone(),
                        format!(
                            "two default certificates: `server.tls.certificates[{first}]` has no \
                             `names` either (only one entry may leave `names` out)"
                        ),
                    ),
                    None => default = Some(i),
                }
                Vec::new()
            }
            Some(names) if names.get_ref().is_empty() => {
                c.error(
                    &names.span(),
                    format!("{key}.names"),
                    "`names` is empty: list the server names this certificate is for, or \
                     leave `names` out to make it the default",
                );
                Vec::new()
            }
            Some(names) => check_names(c, &key, i, names.get_ref(), &mut listed),
        };

        if let (Ok(chain), Ok(private_key)) = (chain, private_key) {
            match tls::certified_key(chain, private_key, &cert_path, &key_path) {
                Ok(certified) => resolver.add(&names, certified),
                Err(err) => c.error(&e.key.span(), format!("{key}.key"), err.to_string()),
            }
        }
        certificates.push(TlsCertificate {
            cert: cert_path,
            key: key_path,
            names,
        });
    }

    let client_ca = raw.get_ref().client_ca.as_ref();
    let roots = client_ca.and_then(|ca| {
        let path = PathBuf::from(ca.get_ref());
        let bytes = tls::read_file(&path);
        digest.add(&path, bytes.as_deref());
        bytes
            .and_then(|pem| tls::read_roots(&path, &pem))
            .map_err(|err| c.error(&ca.span(), "server.tls.client_ca", err.to_string()))
            .ok()
    });

    if c.problem_count() > before {
        return None;
    }
    match tls::server_config(Arc::new(resolver), roots) {
        Ok(server_config) => Some(Tls {
            certificates,
            client_ca: client_ca.map(|ca| PathBuf::from(ca.get_ref())),
            server_config,
            fingerprint: digest.finish(),
        }),
        Err(err) => {
            let (span, key) = match client_ca {
                Some(ca) => (ca.span(), "server.tls.client_ca"),
                None => (raw.span(), "server.tls"),
            };
            c.error(&span, key, err.to_string());
            None
        }
    }
}

/// Parses one entry's `names`; each name may appear in one entry only.
fn check_names(
    c: &mut Checker<'_>,
    key: &str,
    entry: usize,
    names: &[Spanned<String>],
    listed: &mut HashMap<ServerName, usize>,
) -> Vec<ServerName> {
    let mut out = Vec::with_capacity(names.len());
    for (j, name) in names.iter().enumerate() {
        let Some(parsed) = ServerName::parse(name.get_ref()) else {
            c.error(
                &name.span(),
                format!("{key}.names[{j}]"),
                format!(
                    "`{}` is not a server name: write `a.example.com` or `*.example.com`, \
                     without a port",
                    name.get_ref()
                ),
            );
            continue;
        };
        match listed.get(&parsed) {
            Some(&first) => c.error(
                &name.span(),
                format!("{key}.names[{j}]"),
                format!(
                    "duplicate server name `{parsed}`: `server.tls.certificates[{first}]` lists \
                     it too"
                ),
            ),
            None => {
                listed.insert(parsed.clone(), entry);
                out.push(parsed);
            }
        }
    }
    out
}
