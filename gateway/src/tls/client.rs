//! TLS towards upstreams: the trust anchors the gateway verifies endpoints against (a
//! CA file, or the operating system's trusted CAs), the client certificate it presents
//! for mutual TLS, and the ALPN protocol it offers.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{ALPN_H2, ALPN_HTTP1, TlsError, provider};

/// A client certificate chain and its key, already checked to belong together.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Why the system's trusted CAs could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no usable system CA certificates ({0}): name a CA file with `ca`")]
pub struct SystemRootsError(String);

/// The operating system's trusted CAs (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured), read once per process: every upstream with `tls = {}` shares them.
pub fn system_roots() -> Result<Arc<RootCertStore>, SystemRootsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, SystemRootsError>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_, unusable) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = match found.errors.first() {
                    Some(e) => e.to_string(),
                    None if unusable > 0 => format!("{unusable} certificates could not be parsed"),
                    None => "none found".to_owned(),
                };
                return Err(SystemRootsError(why));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The client config for one upstream cluster: TLS 1.3 and 1.2, endpoints verified
/// against `roots`, `identity` presented when an endpoint asks for a client
/// certificate, and ALPN `h2` (`http2`) or `http/1.1` offered.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<ClientIdentity>,
    http2: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(ClientIdentity { chain, key }) => builder
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Rustls)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if http2 { ALPN_H2 } else { ALPN_HTTP1 }.to_vec()];
    Ok(Arc::new(config))
}
