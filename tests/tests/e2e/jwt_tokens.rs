//! Signed test tokens for `jwt-auth`, made with the RustCrypto crates the plugin
//! verifies with; the RSA and P-256 keys are the ones of RFC 7515 appendices A.2 and
//! A.3. Shared by the end-to-end tests and the `first_party` bench.
#![allow(dead_code, reason = "each user takes what it needs")]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

// RFC 7515 appendix A.2: the RSA key (modulus, primes).
pub(crate) const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
pub(crate) const RSA_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
pub(crate) const RSA_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
// RFC 7515 appendix A.3: the P-256 private scalar.
pub(crate) const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

pub(crate) const SECRET: &str = "an-e2e-test-secret-of-at-least-32-bytes";

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims valid for ten minutes from now.
pub(crate) fn claims() -> Value {
    json!({
        "iss": "https://idp.test",
        "aud": "api",
        "sub": "user-42",
        "admin": true,
        "iat": now(),
        "exp": now() + 600,
    })
}

/// `claims()` with `changes` merged in.
pub(crate) fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().expect("an object") {
        claims[name] = value.clone();
    }
    claims
}

/// The signing input of a token with `header` and `claims`.
pub(crate) fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

pub(crate) fn hs256(claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "HS256", "typ": "JWT"}), claims);
    let mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())
        .expect("any key length")
        .chain_update(input.as_bytes())
        .finalize()
        .into_bytes();
    format!("{input}.{}", B64.encode(mac))
}

pub(crate) fn rs256(kid: &str, claims: &Value) -> String {
    let b = |text: &str| rsa::BoxedUint::from_be_slice_vartime(&B64.decode(text).expect("b64"));
    let key = rsa::PrivateKey::from_p_q(b(RSA_P), b(RSA_Q), rsa::BoxedUint::from(65_537u32))
        .expect("the RFC key");
    let input = signing_input(&json!({"alg": "RS256", "kid": kid}), claims);
    let signature = key
        .sign(
            rsa::Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input.as_bytes()),
        )
        .expect("signs");
    format!("{input}.{}", B64.encode(signature))
}

/// A P-256 key: the RFC one (`seed` None) or one made from a repeated byte.
pub(crate) fn p256_key(seed: Option<u8>) -> p256::ecdsa::SigningKey {
    let scalar = match seed {
        None => B64.decode(EC_D).expect("b64"),
        Some(byte) => vec![byte; 32],
    };
    p256::ecdsa::SigningKey::from_slice(&scalar).expect("a valid scalar")
}

/// The public JWK of `key`.
pub(crate) fn p256_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(32);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": B64.encode(x), "y": B64.encode(y)})
}

pub(crate) fn es256(key: &p256::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    let input = signing_input(&json!({"alg": "ES256", "kid": kid}), claims);
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}
