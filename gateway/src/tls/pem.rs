//! Reading certificate chains, private keys and CA bundles from PEM files, with errors
//! that name the file and say what was expected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// What is wrong with a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("`{}` is not valid PEM: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// No `CERTIFICATE` block.
    #[error("`{}` holds no certificate (expected a `-----BEGIN CERTIFICATE-----` block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A `CERTIFICATE` block that is not an X.509 certificate.
    #[error("certificate {index} in `{}` is not a valid X.509 certificate: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Which block (0-based).
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// No private key block.
    #[error(
        "`{}` holds no private key (expected a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A key of a kind or encoding the crypto provider cannot sign with.
    #[error("the private key in `{}` cannot be used: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls' message.
        reason: String,
    },
    /// The private key is not the one the certificate was issued for.
    #[error("the private key in `{}` does not match the certificate in `{}`", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA certificate that cannot serve as a trust anchor.
    #[error("certificate {index} in `{}` cannot be a trusted CA: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Which block (0-based).
        index: usize,
        /// rustls' message.
        reason: String,
    },
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The `CERTIFICATE` blocks of `pem` (read from `path`), leaf first, each checked to
/// be X.509.
pub fn read_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, &e))?;
    if chain.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (index, der) in chain.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(PemError::BadCertificate {
                path: path.to_owned(),
                index,
                reason: e.to_string(),
            });
        }
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in `pem` (read from `path`).
pub fn read_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => PemError::NoKey {
            path: path.to_owned(),
        },
        e => malformed(path, &e),
    })
}

/// Pairs a chain with its key, checking that the key is the certificate's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, PemError> {
    let provider = super::provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                PemError::KeyMismatch {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                }
            }
            e => PemError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            },
        })
}

/// The CA certificates in `pem` (read from `path`) as trust anchors.
pub fn read_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for (index, der) in read_chain(path, pem)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| PemError::BadCa {
            path: path.to_owned(),
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn malformed(path: &Path, e: &pem::Error) -> PemError {
    PemError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// A SHA-256 over a set of files' names and contents (or, for a file that cannot be
/// read, the kind of error), so that a reload can tell whether any of them changed.
#[derive(Debug, Clone, Default)]
pub struct FileDigest(Sha256);

impl FileDigest {
    /// Adds one file and what reading it gave.
    pub fn add(&mut self, path: &Path, contents: Result<&[u8], &PemError>) {
        let name = path.as_os_str().as_encoded_bytes();
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name);
        match contents {
            Ok(bytes) => {
                self.0.update([1]);
                self.0.update((bytes.len() as u64).to_le_bytes());
                self.0.update(bytes);
            }
            Err(e) => {
                self.0.update([0]);
                self.0.update(e.to_string().as_bytes());
            }
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    /// The digest of these files as they are now.
    pub fn of_files<'a>(paths: impl IntoIterator<Item = &'a Path>) -> [u8; 32] {
        let mut digest = FileDigest::default();
        for path in paths {
            digest.add(path, read_file(path).as_deref());
        }
        digest.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = pair("a.example");
        let chain = read_chain(Path::new("a.pem"), cert.as_bytes()).expect("chain");
        let key = read_key(Path::new("a-key.pem"), key.as_bytes()).expect("key");
        certified_key(chain, key, Path::new("a.pem"), Path::new("a-key.pem")).expect("pair");
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (cert, _) = pair("a.example");
        let (_, other_key) = pair("b.example");
        let chain = read_chain(Path::new("a.pem"), cert.as_bytes()).expect("chain");
        let key = read_key(Path::new("b-key.pem"), other_key.as_bytes()).expect("key");
        let err = certified_key(chain, key, Path::new("a.pem"), Path::new("b-key.pem"))
            .expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "the private key in `b-key.pem` does not match the certificate in `a.pem`"
        );
    }

    #[test]
    fn files_without_the_expected_blocks_say_what_was_expected() {
        let (cert, key) = pair("a.example");
        let err = read_chain(Path::new("k.pem"), key.as_bytes()).expect_err("no cert");
        assert!(matches!(err, PemError::NoCertificate { .. }), "{err}");
        let err = read_key(Path::new("c.pem"), cert.as_bytes()).expect_err("no key");
        assert!(matches!(err, PemError::NoKey { .. }), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let err = read_chain(Path::new("g.pem"), garbage).expect_err("bad pem");
        assert!(matches!(err, PemError::Malformed { .. }), "{err}");
        let not_x509 = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let err = read_chain(Path::new("h.pem"), not_x509.as_bytes()).expect_err("not x509");
        assert!(
            matches!(err, PemError::BadCertificate { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn digests_change_with_contents() {
        let digest = |bytes: &[u8]| {
            let mut d = FileDigest::default();
            d.add(Path::new("a.pem"), Ok(bytes));
            d.finish()
        };
        assert_eq!(digest(b"one"), digest(b"one"));
        assert_ne!(digest(b"one"), digest(b"two"));
    }
}
