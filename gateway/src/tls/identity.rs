//! A verified client certificate as the `x-forwarded-client-cert` value upstreams and
//! plugins read, in Envoy's format:
//! `Hash=<sha256 of the DER>;Subject="<DN>";URI=<first URI SAN>;DNS=<first DNS SAN>`.

use std::fmt::Write as _;

use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

/// The `x-forwarded-client-cert` value for a verified leaf certificate. Fields the
/// certificate lacks are left out; `Hash` is always there.
pub fn forwarded_client_cert(leaf: &CertificateDer<'_>) -> HeaderValue {
    let mut value = String::from("Hash=");
    for byte in Sha256::digest(leaf.as_ref()) {
        let _ = write!(value, "{byte:02x}");
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
        let subject = distinguished_name(cert.subject());
        if !subject.is_empty() {
            // RFC 4514 escaping already turned `"` and `\` into `\"` and `\\`, which is
            // also how a quoted value escapes them.
            value.push_str(";Subject=\"");
            value.push_str(&subject);
            value.push('"');
        }
        if let Some(uri) = first_san(&cert, |n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        }) {
            value.push_str(";URI=");
            push_field(&mut value, uri);
        }
        if let Some(dns) = first_san(&cert, |n| match n {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        }) {
            value.push_str(";DNS=");
            push_field(&mut value, dns);
        }
    }
    // Control characters were escaped, so only visible ASCII and UTF-8 remain.
    HeaderValue::from_bytes(value.as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("Hash=invalid"))
}

fn first_san<'a>(
    cert: &X509Certificate<'a>,
    pick: impl Fn(&GeneralName<'a>) -> Option<&'a str>,
) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(pick)
}

/// The name as RFC 4514 writes it: the most specific part first (`CN=client,O=Acme`),
/// attribute types by their short names, special characters escaped.
fn distinguished_name(name: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match oid2abbrev(attribute.attr_type(), registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&attribute.attr_type().to_id_string()),
            }
            out.push('=');
            let value = match attribute.as_str() {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(attribute.as_slice()),
            };
            push_escaped_dn_value(&mut out, &value);
        }
    }
    out
}

/// RFC 4514 §2.4 escaping, plus control characters as `\XX` so the result is a valid
/// header value.
fn push_escaped_dn_value(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        match ch {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ch if ch.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
}

/// A field value, quoted when it holds a separator (`,`, `;`, `=`) as Envoy does.
fn push_field(out: &mut String, value: &str) {
    if value.contains([',', ';', '=', '"', '\\']) || value.chars().any(|c| c.is_ascii_control()) {
        push_quoted(out, value);
    } else {
        out.push_str(value);
    }
}

/// `"value"`, with `"` and `\` escaped by a backslash and control characters as `\XX`.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            ch if ch.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn hash_subject_uri_and_dns_in_envoy_format() {
        let mut params = CertificateParams::new(vec!["client.example".to_owned()]).expect("p");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example/ns/a/sa/b".try_into().expect("uri"),
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme, Inc.");
        dn.push(DnType::CommonName, "client-1");
        params.distinguished_name = dn;
        let der = cert(params);
        let value = forwarded_client_cert(&der);
        let hash: String = Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            value.to_str().expect("ascii"),
            format!(
                "Hash={hash};Subject=\"CN=client-1,O=Acme\\, Inc.\";URI=spiffe://example/ns/a/sa/b;DNS=client.example"
            )
        );
    }

    #[test]
    fn missing_fields_are_left_out() {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("p");
        params.distinguished_name = DistinguishedName::new();
        let value = forwarded_client_cert(&cert(params));
        let text = value.to_str().expect("ascii");
        assert!(text.starts_with("Hash="), "{text}");
        assert!(!text.contains(';'), "{text}");
    }

    #[test]
    fn dn_values_are_escaped() {
        let mut out = String::new();
        push_escaped_dn_value(&mut out, " #a+b\"c\u{1}; ");
        assert_eq!(out, "\\ #a\\+b\\\"c\\01\\;\\ ");
        let mut field = String::new();
        push_field(&mut field, "plain");
        push_field(&mut field, " a;b\"c\\");
        assert_eq!(field, "plain\" a;b\\\"c\\\\\"");
    }
}
