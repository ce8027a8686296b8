//! TLS material for the client listener: certificates and keys read from PEM files,
//! the certificate chosen by SNI, client-certificate verification (mTLS), and the
//! verified client's identity as an `x-forwarded-client-cert` value; and for upstreams,
//! the client config their connections use (`client.rs`).
//!
//! This module sits low, beside `config`: config validation loads the files through it
//! (so a broken certificate is a config error naming its key), and a reload rebuilds
//! the [`rustls::ServerConfig`] that the next snapshot carries. The per-connection
//! handshake lives in `server::tls`.
//!
//! The crypto provider is `ring`: it builds with a C compiler alone (no cmake, no NASM),
//! and the gateway needs nothing `aws-lc-rs` adds (FIPS, post-quantum key exchange).

mod client;
mod identity;
mod pem;
mod sni;

use std::sync::Arc;

use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

pub use client::{ClientIdentity, SystemRootsError, client_config, system_roots};
pub use identity::forwarded_client_cert;
pub use pem::{FileDigest, PemError, certified_key, read_chain, read_file, read_key, read_roots};
pub use sni::{ServerName, SniResolver};

/// ALPN protocols offered to clients, in preference order.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a TLS server config could not be assembled from loaded material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The client CA bundle cannot verify client certificates.
    #[error("the client CA certificates cannot verify clients: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the protocol versions (cannot happen with the `ring` provider).
    #[error("cannot set up TLS: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The crypto provider every TLS object of the gateway uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server config for the client listener: TLS 1.3 and 1.2 only, the certificate
/// chosen by `resolver`, ALPN `h2` then `http/1.1`, and, with `client_roots`, a client
/// certificate required and verified against those roots.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(TlsError::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
