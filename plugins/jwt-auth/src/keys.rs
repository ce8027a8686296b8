//! Verification keys: the HMAC secret, and public keys read from a JSON Web Key Set
//! (RFC 7517). Keys are parsed once (inline keys in `new`); verifying is then the
//! signature check alone. All cryptography is RustCrypto's.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use p256::ecdsa::signature::Verifier as _;
use rsa::{Pkcs1v15Sign, Pss, PublicKey as RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::alg::{Alg, AlgSet};

/// Decodes unpadded base64url (RFC 7515 §2), refusing padding and non-canonical input.
pub fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A serde_json error without its " at line L column C" (positions in JSON text the
/// operator may not have written: the gateway converts TOML tables to JSON).
fn without_position(error: &serde_json::Error) -> String {
    let mut text = error.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    text
}

/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
pub const RSA_MIN_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (bounds the cost of a verification).
pub const RSA_MAX_BITS: usize = 8192;

/// The HMAC secret, keyed once for each hash: a verification clones the keyed state.
#[derive(Clone)]
pub struct HmacKeys {
    h256: Hmac<Sha256>,
    h384: Hmac<Sha384>,
    h512: Hmac<Sha512>,
}

impl fmt::Debug for HmacKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKeys(..)")
    }
}

impl HmacKeys {
    /// Keys made from `secret`.
    pub fn new(secret: &[u8]) -> HmacKeys {
        HmacKeys {
            h256: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
            h384: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
            h512: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Whether `signature` is the `alg` HMAC of `input` (compared in constant time).
    pub fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        match alg {
            Alg::Hs256 => self
                .h256
                .clone()
                .chain_update(input)
                .verify_slice(signature),
            Alg::Hs384 => self
                .h384
                .clone()
                .chain_update(input)
                .verify_slice(signature),
            Alg::Hs512 => self
                .h512
                .clone()
                .chain_update(input)
                .verify_slice(signature),
            _ => return false,
        }
        .is_ok()
    }
}

/// A public key of one of the supported types.
#[derive(Clone)]
pub enum PublicKey {
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa(Box<RsaPublicKey>),
    /// EC P-256: ES256.
    P256(p256::ecdsa::VerifyingKey),
    /// EC P-384: ES384.
    P384(p384::ecdsa::VerifyingKey),
    /// OKP Ed25519: EdDSA.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublicKey::Rsa(_) => "PublicKey::Rsa",
            PublicKey::P256(_) => "PublicKey::P256",
            PublicKey::P384(_) => "PublicKey::P384",
            PublicKey::Ed25519(_) => "PublicKey::Ed25519",
        })
    }
}

/// The algorithms a key of a type verifies.
fn algorithms_of(kind: KeyKind) -> AlgSet {
    let algs: &[Alg] = match kind {
        KeyKind::Rsa => &[
            Alg::Rs256,
            Alg::Rs384,
            Alg::Rs512,
            Alg::Ps256,
            Alg::Ps384,
            Alg::Ps512,
        ],
        KeyKind::P256 => &[Alg::Es256],
        KeyKind::P384 => &[Alg::Es384],
        KeyKind::Ed25519 => &[Alg::EdDsa],
    };
    algs.iter().copied().collect()
}

/// The supported key types, as a JWK's `kty` and `crv` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "P-256",
            KeyKind::P384 => "P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

impl PublicKey {
    fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa(_) => KeyKind::Rsa,
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::P384(_) => KeyKind::P384,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Whether `signature` is a valid `alg` signature of `input` by this key. An
    /// algorithm that does not fit the key's type is never valid.
    pub fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (PublicKey::Rsa(key), _) => rsa_verify(key, alg, input, signature),
            (PublicKey::P256(key), Alg::Es256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
            (PublicKey::P384(key), Alg::Es384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(input, &sig).is_ok()),
            (PublicKey::Ed25519(key), Alg::EdDsa) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_strict(input, &sig).is_ok())
            }
            _ => false,
        }
    }
}

fn rsa_verify(key: &RsaPublicKey, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    match alg {
        Alg::Rs256 => key.verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input),
            signature,
        ),
        Alg::Rs384 => key.verify(
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(input),
            signature,
        ),
        Alg::Rs512 => key.verify(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(input),
            signature,
        ),
        // RFC 7518 §3.5: MGF1 with the same hash, a salt as long as the hash.
        Alg::Ps256 => key.verify(Pss::<Sha256>::new(), &Sha256::digest(input), signature),
        Alg::Ps384 => key.verify(Pss::<Sha384>::new(), &Sha384::digest(input), signature),
        Alg::Ps512 => key.verify(Pss::<Sha512>::new(), &Sha512::digest(input), signature),
        _ => return false,
    }
    .is_ok()
}

/// One usable key of a set: its id, the one algorithm it is restricted to (the JWK's
/// `alg`), and the key.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// The JWK's `kid`.
    pub kid: Option<String>,
    /// The JWK's `alg`, if it names one.
    pub alg: Option<Alg>,
    /// The key.
    pub key: PublicKey,
}

impl Jwk {
    /// Whether this key may verify an `alg` token whose header names `kid`. A key
    /// without a `kid` fits every token; a token without a `kid` fits every key.
    fn fits(&self, kid: Option<&str>, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg)
            && algorithms_of(self.key.kind()).contains(alg)
            && match (kid, &self.kid) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            }
    }

    /// The algorithms this key verifies.
    pub fn algorithms(&self) -> AlgSet {
        match self.alg {
            Some(alg) => [alg].into_iter().collect(),
            None => algorithms_of(self.key.kind()),
        }
    }
}

/// How a set treats a key of a supported type that is malformed (bad base64, a point
/// off the curve, a short RSA modulus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Refuse the set, naming the key (an inline `jwks`: a typo must not reach traffic).
    Strict,
    /// Skip the key (a fetched JWKS, which may hold keys for others).
    Lenient,
}

/// The outcome of checking a signature against a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A key fitting the token verified the signature.
    Valid,
    /// Keys fit the token, and none verified the signature.
    Invalid,
    /// No key fits the token (its `kid` is unknown, or no key does its `alg`).
    NoKey,
}

/// The usable signing keys of a JSON Web Key Set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawSet<'a> {
    #[serde(borrow)]
    keys: Vec<RawJwk<'a>>,
}

/// A JWK as written: only the members used here; others are ignored.
#[derive(Deserialize)]
struct RawJwk<'a> {
    #[serde(borrow)]
    kty: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "use")]
    use_: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    key_ops: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    crv: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    e: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    x: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    y: Option<Cow<'a, str>>,
}

impl RawJwk<'_> {
    /// Its type, if supported and meant for verifying signatures.
    fn kind(&self) -> Option<KeyKind> {
        if self.use_.as_deref().is_some_and(|u| u != "sig")
            || self
                .key_ops
                .as_ref()
                .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return None;
        }
        match (&*self.kty, self.crv.as_deref()) {
            ("RSA", _) => Some(KeyKind::Rsa),
            ("EC", Some("P-256")) => Some(KeyKind::P256),
            ("EC", Some("P-384")) => Some(KeyKind::P384),
            ("OKP", Some("Ed25519")) => Some(KeyKind::Ed25519),
            _ => None,
        }
    }

    /// The key, `Ok(None)` if it is not one this plugin can use (another type or
    /// curve, an encryption key, an algorithm it does not verify), or why it is
    /// malformed.
    fn build(&self) -> Result<Option<Jwk>, String> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let alg = match self.alg.as_deref() {
            None => None,
            Some(name) => match Alg::parse(name) {
                Some(alg) if algorithms_of(kind).contains(alg) => Some(alg),
                Some(alg) => {
                    return Err(format!("`alg` {alg} does not fit a {} key", kind.name()));
                }
                None => return Ok(None),
            },
        };
        let member = |name: &str, value: &Option<Cow<'_, str>>| -> Result<Vec<u8>, String> {
            let text = value
                .as_deref()
                .ok_or_else(|| format!("`{name}` is missing"))?;
            b64(text).ok_or_else(|| format!("`{name}` is not unpadded base64url"))
        };
        let key = match kind {
            KeyKind::Rsa => {
                let n = member("n", &self.n)?;
                let e = member("e", &self.e)?;
                let n = rsa::BoxedUint::from_be_slice_vartime(&n);
                let e = rsa::BoxedUint::from_be_slice_vartime(&e);
                let key = RsaPublicKey::new_with_size_limits(n, e, RSA_MIN_BITS..=RSA_MAX_BITS)
                    .map_err(|e| {
                        format!("not a usable RSA key ({e}; {RSA_MIN_BITS} to {RSA_MAX_BITS} bits)")
                    })?;
                PublicKey::Rsa(Box::new(key))
            }
            KeyKind::P256 | KeyKind::P384 => {
                let x = member("x", &self.x)?;
                let y = member("y", &self.y)?;
                let size = if kind == KeyKind::P256 { 32 } else { 48 };
                if x.len() != size || y.len() != size {
                    return Err(format!("`x` and `y` must be {size} bytes each"));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let invalid = |_| "the point is not on the curve".to_owned();
                if kind == KeyKind::P256 {
                    PublicKey::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?,
                    )
                } else {
                    PublicKey::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?,
                    )
                }
            }
            KeyKind::Ed25519 => {
                let x: [u8; 32] = member("x", &self.x)?
                    .try_into()
                    .map_err(|_| "`x` must be 32 bytes".to_owned())?;
                PublicKey::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "`x` is not an Ed25519 public key".to_owned())?,
                )
            }
        };
        Ok(Some(Jwk {
            kid: self.kid.as_deref().map(str::to_owned),
            alg,
            key,
        }))
    }
}

impl KeySet {
    /// The usable keys of the JWKS `json` (`{"keys": [...]}`, or one JWK on its own).
    pub fn parse(json: &[u8], strictness: Strictness) -> Result<KeySet, String> {
        KeySet::parse_where(json, strictness, |_| true)
    }

    /// The usable keys of `json` that may verify an `alg` token naming `kid`. Only those
    /// are built: an RSA key costs a Montgomery setup, so a per-request lookup in a
    /// fetched set builds one key, not all.
    pub fn parse_for(json: &[u8], kid: Option<&str>, alg: Alg) -> KeySet {
        KeySet::parse_where(json, Strictness::Lenient, |raw| {
            raw.kind()
                .is_some_and(|kind| algorithms_of(kind).contains(alg))
                && match (kid, raw.kid.as_deref()) {
                    (Some(wanted), Some(have)) => wanted == have,
                    _ => true,
                }
        })
        .unwrap_or_default()
    }

    fn parse_where(
        json: &[u8],
        strictness: Strictness,
        wanted: impl Fn(&RawJwk<'_>) -> bool,
    ) -> Result<KeySet, String> {
        let raw: Vec<RawJwk<'_>> = match serde_json::from_slice::<RawSet<'_>>(json) {
            Ok(set) => set.keys,
            Err(set_error) => match serde_json::from_slice::<RawJwk<'_>>(json) {
                Ok(one) => vec![one],
                Err(key_error) => {
                    let value: serde_json::Value = serde_json::from_slice(json)
                        .map_err(|e| format!("not JSON: {}", without_position(&e)))?;
                    return Err(if value.get("kty").is_some() {
                        format!("not a JWK: {}", without_position(&key_error))
                    } else {
                        format!(
                            "not a JWK set (`{{\"keys\": [...]}}`): {}",
                            without_position(&set_error)
                        )
                    });
                }
            },
        };
        let mut keys = Vec::new();
        for (index, jwk) in raw.iter().enumerate() {
            if !wanted(jwk) {
                continue;
            }
            match jwk.build() {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(why) if strictness == Strictness::Strict => {
                    let name = match jwk.kid.as_deref() {
                        Some(kid) => format!("key {kid:?}"),
                        None => format!("key {index}"),
                    };
                    return Err(format!("{name}: {why}"));
                }
                Err(_) => {}
            }
        }
        Ok(KeySet { keys })
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The algorithms some key of the set verifies.
    pub fn algorithms(&self) -> AlgSet {
        self.keys
            .iter()
            .flat_map(|k| k.algorithms().iter())
            .collect()
    }

    /// Checks an `alg` signature of `input` by a key fitting `kid` and `alg`.
    pub fn verify(&self, kid: Option<&str>, alg: Alg, input: &[u8], signature: &[u8]) -> Verdict {
        let mut fitting = self.keys.iter().filter(|k| k.fits(kid, alg)).peekable();
        if fitting.peek().is_none() {
            return Verdict::NoKey;
        }
        if fitting.any(|k| k.key.verify(alg, input, signature)) {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }
}
