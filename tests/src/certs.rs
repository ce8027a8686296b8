//! Certificates made at test time with rcgen: a CA per test, server certificates for
//! DNS names and IP addresses, client certificates, and the files a config names.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority made for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM (for files) and the certificate in DER (what a peer
/// is presented).
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A new CA whose common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for `names`: DNS names, or IP addresses (as IP SANs); its
    /// common name is the first name.
    pub fn server(&self, names: &[&str]) -> TestCert {
        self.server_named(names.first().copied().unwrap_or("server"), names)
    }

    /// [`TestCa::server`] with `cn` as the common name.
    pub fn server_named(&self, cn: &str, names: &[&str]) -> TestCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("DNS name")),
            });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: `O=Weir Tests, CN=cn`, with the DNS SAN
    /// `cn.clients.weir.test` and the URI SAN `spiffe://weir.test/client/cn`.
    pub fn client(&self, cn: &str) -> TestCert {
        let mut params =
            CertificateParams::new(vec![format!("{cn}.clients.weir.test")]).expect("params");
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://weir.test/client/{cn}")
                .try_into()
                .expect("URI SAN"),
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Weir Tests");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> TestCert {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// The CA as the only trust anchor of a rustls root store.
    pub fn roots(&self) -> rustls::RootCertStore {
        roots_from_pem(&self.pem)
    }
}

impl TestCert {
    /// Writes `dir/NAME.pem` and `dir/NAME-key.pem`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// Replaces the files [`TestCert::write`] wrote the way deploy tools do: each
    /// written beside its destination, then renamed over it; the key first.
    pub fn replace(&self, dir: &Path, name: &str) {
        for (file, text) in [
            (format!("{name}-key.pem"), &self.key_pem),
            (format!("{name}.pem"), &self.cert_pem),
        ] {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).expect("write temp file");
            std::fs::rename(&tmp, dir.join(file)).expect("rename into place");
        }
    }

    /// The chain and key, for rustls.
    pub fn der(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM");
        (chain, key)
    }
}

/// The certificates in `pem` as a rustls root store.
pub fn roots_from_pem(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(der.expect("CA PEM")).expect("CA as root");
    }
    roots
}
