//! Native unit tests: RFC test vectors, tokens signed here with the same RustCrypto
//! crates, every refusal, claim headers, the token cache, config refusals, and the
//! JWKS URL against the SDK's fake host.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384, Sha512};
use weir_plugin_sdk::host::http::OutboundResponse;
use weir_plugin_sdk::testing::{self, Harness};
use weir_plugin_sdk::{Action, Phase, Plugin, Request};

use super::*;

/// The time tests verify at: after every test token's `iat`, before its `exp`. Far
/// ahead of the real clock, so that tokens made for it also pass the phase method,
/// which reads the real clock.
const NOW: u64 = 4_000_000_000;

// The RSA key of RFC 7515 appendix A.2 (2048 bits): modulus, and the primes to sign with.
const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const RSA_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const RSA_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
// The P-256 key of RFC 7515 appendix A.3.
const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
// The Ed25519 key of RFC 8037 appendix A.1.
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
/// The claims of the RFC 7515 appendix A examples, expiring at 1300819380.
const RFC_CLAIMS: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const BEFORE_RFC_EXP: u64 = 1_300_819_000;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long-and-then-some-more!";

fn d(text: &str) -> Vec<u8> {
    B64.decode(text).unwrap()
}

/// A private key to sign test tokens with.
enum Signer {
    Hmac(Vec<u8>),
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

fn rsa_key() -> Signer {
    let p = rsa::BoxedUint::from_be_slice_vartime(&d(RSA_P));
    let q = rsa::BoxedUint::from_be_slice_vartime(&d(RSA_Q));
    let e = rsa::BoxedUint::from(65_537u32);
    Signer::Rsa(Box::new(rsa::PrivateKey::from_p_q(p, q, e).unwrap()))
}

fn p256_key() -> Signer {
    Signer::P256(p256::ecdsa::SigningKey::from_slice(&d(EC_D)).unwrap())
}

fn p384_key() -> (Signer, Value) {
    let key = p384::ecdsa::SigningKey::from_slice(&[0x2a; 48]).unwrap();
    let point = key.verifying_key().to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(48);
    let jwk =
        json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": B64.encode(x), "y": B64.encode(y)});
    (Signer::P384(key), jwk)
}

fn ed_key() -> Signer {
    Signer::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(
        &d(ED_D).try_into().unwrap(),
    )))
}

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB"})
}

fn p256_jwk(kid: &str) -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": EC_X, "y": EC_Y})
}

fn ed_jwk(kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": ED_X})
}

/// Signs `claims` as an `alg` JWS with `header` members added.
fn sign_with(signer: &Signer, alg: &str, extra_header: Value, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Value::Object(extra) = extra_header {
        header.as_object_mut().unwrap().extend(extra);
    }
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let bytes = input.as_bytes();
    let signature: Vec<u8> = match (signer, alg) {
        (Signer::Hmac(secret), "HS256") => hmac::Hmac::<Sha256>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
        (Signer::Hmac(secret), "HS384") => hmac::Hmac::<Sha384>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
        (Signer::Hmac(secret), "HS512") => hmac::Hmac::<Sha512>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
        (Signer::Rsa(key), alg) => {
            use rsa::{Pkcs1v15Sign, Pss};
            match alg {
                "RS256" => key.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(bytes)),
                "RS384" => key.sign(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(bytes)),
                "RS512" => key.sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(bytes)),
                "PS256" => key.sign(Pss::<Sha256>::new(), &Sha256::digest(bytes)),
                "PS384" => key.sign(Pss::<Sha384>::new(), &Sha384::digest(bytes)),
                "PS512" => key.sign(Pss::<Sha512>::new(), &Sha512::digest(bytes)),
                other => panic!("{other} with an RSA key"),
            }
            .unwrap()
        }
        (Signer::P256(key), _) => {
            use p256::ecdsa::signature::Signer as _;
            let signature: p256::ecdsa::Signature = key.sign(bytes);
            signature.to_bytes().to_vec()
        }
        (Signer::P384(key), _) => {
            use p384::ecdsa::signature::Signer as _;
            let signature: p384::ecdsa::Signature = key.sign(bytes);
            signature.to_bytes().to_vec()
        }
        (Signer::Ed25519(key), _) => {
            use ed25519_dalek::Signer as _;
            key.sign(bytes).to_bytes().to_vec()
        }
        (Signer::Hmac(_), other) => panic!("{other} with an HMAC key"),
    };
    format!("{input}.{}", B64.encode(signature))
}

fn sign(signer: &Signer, alg: &str, claims: &Value) -> String {
    sign_with(signer, alg, json!({}), claims)
}

fn hmac_key() -> Signer {
    Signer::Hmac(SECRET.as_bytes().to_vec())
}

/// Claims valid at [`NOW`].
fn good_claims() -> Value {
    json!({"sub": "user-42", "iss": "https://idp.example", "aud": "api", "iat": NOW - 10, "exp": NOW + 600})
}

fn plugin(config: Value) -> JwtAuth {
    JwtAuth::new(serde_json::from_value(config).unwrap()).unwrap()
}

fn refused(config: Value) -> String {
    match serde_json::from_value::<Config>(config) {
        Ok(config) => JwtAuth::new(config).unwrap_err(),
        Err(e) => e.to_string(),
    }
}

fn hs_plugin() -> JwtAuth {
    plugin(json!({
        "secret": SECRET,
        "issuer": "https://idp.example",
        "audience": "api",
        "claims_to_headers": {"sub": "x-user-id"},
    }))
}

fn bearer(token: &str) -> Request<'static> {
    Request::new("GET", "/").with_header("Authorization", format!("Bearer {token}"))
}

/// The claim values the plugin forwards for `request` at `now`, or its refusal.
fn check(
    plugin: &JwtAuth,
    request: &Request<'_>,
    now: u64,
) -> Result<Vec<Option<String>>, Refusal> {
    plugin
        .authenticate(&request.headers, now)
        .map(|v| v.to_vec())
}

fn check_token(plugin: &JwtAuth, token: &str, now: u64) -> Result<Vec<Option<String>>, Refusal> {
    check(plugin, &bearer(token), now)
}

fn invalid(why: &str) -> Result<Vec<Option<String>>, Refusal> {
    Err(Refusal::Invalid(why.to_owned().into()))
}

// --- RFC test vectors ---

#[test]
fn rfc7515_hs256_vector() {
    let auth = plugin(json!({
        "secret": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
        "secret_base64": true,
        "claims_to_headers": {"iss": "x-iss", "http://example.com/is_root": "x-root"},
    }));
    let token = format!(
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC_CLAIMS}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    assert_eq!(
        check_token(&auth, &token, BEFORE_RFC_EXP),
        Ok(vec![Some("true".into()), Some("joe".into())]),
        "in claim-name order"
    );
    assert_eq!(
        check_token(&auth, &token, 1_300_819_380 + 60),
        invalid("the token has expired")
    );
}

#[test]
fn rfc7515_rs256_vector() {
    let auth = plugin(json!({"jwks": {"keys": [{"kty": "RSA", "n": RSA_N, "e": "AQAB"}]}}));
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{RFC_CLAIMS}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7\
         AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K\
         0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB\
         p0igcN_IoypGlUPQGe77Rw"
    );
    assert_eq!(check_token(&auth, &token, BEFORE_RFC_EXP), Ok(vec![]));
    let tampered = token.replace(".cC4h", ".cC4i");
    assert_eq!(
        check_token(&auth, &tampered, BEFORE_RFC_EXP),
        invalid("the token's signature is invalid")
    );
}

#[test]
fn rfc7515_es256_vector() {
    let auth =
        plugin(json!({"jwks": {"keys": [p256_jwk("e9bc097a-ce51-4036-9562-d2ade882db0d")]}}));
    let token = format!(
        "eyJhbGciOiJFUzI1NiJ9.{RFC_CLAIMS}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    );
    assert_eq!(check_token(&auth, &token, BEFORE_RFC_EXP), Ok(vec![]));
}

#[test]
fn rfc8037_ed25519_vector() {
    // The payload of RFC 8037 A.4 is not JSON claims: check the signature alone.
    let keys = KeySet::parse(ed_jwk("rfc8037").to_string().as_bytes(), Strictness::Strict).unwrap();
    let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let signature =
        d("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
    assert_eq!(
        keys.verify(None, Alg::EdDsa, input, &signature),
        Verdict::Valid
    );
    assert_eq!(
        keys.verify(None, Alg::EdDsa, b"other", &signature),
        Verdict::Invalid
    );
    assert_eq!(
        keys.verify(None, Alg::Es256, input, &signature),
        Verdict::NoKey
    );
}

// --- every algorithm, signed here ---

#[test]
fn every_algorithm_round_trips() {
    let (p384, p384_jwk) = p384_key();
    let auth = plugin(json!({
        "secret": SECRET,
        "jwks": {"keys": [rsa_jwk("rsa"), p256_jwk("p256"), p384_jwk, ed_jwk("ed")]},
        "claims_to_headers": {"sub": "x-user-id"},
    }));
    let (hmac, rsa, p256, ed) = (hmac_key(), rsa_key(), p256_key(), ed_key());
    let cases: [(&str, &Signer); 12] = [
        ("HS256", &hmac),
        ("HS384", &hmac),
        ("HS512", &hmac),
        ("RS256", &rsa),
        ("RS384", &rsa),
        ("RS512", &rsa),
        ("PS256", &rsa),
        ("PS384", &rsa),
        ("PS512", &rsa),
        ("ES256", &p256),
        ("ES384", &p384),
        ("EdDSA", &ed),
    ];
    for (alg, signer) in cases {
        let token = sign(signer, alg, &good_claims());
        assert_eq!(
            check_token(&auth, &token, NOW),
            Ok(vec![Some("user-42".into())]),
            "{alg}"
        );
        // The same signature under another algorithm of the same key type is refused.
        let other = match alg {
            "RS256" => "PS256",
            "PS256" => "RS256",
            "HS256" => "HS384",
            _ => continue,
        };
        let (_, rest) = token.split_once('.').unwrap();
        let swapped = format!("{}.{rest}", B64.encode(json!({"alg": other}).to_string()));
        assert!(
            check_token(&auth, &swapped, NOW).is_err(),
            "{alg} as {other}"
        );
    }
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let auth = hs_plugin();
    let other = Signer::Hmac(b"another-secret-that-is-also-32-bytes-long".to_vec());
    assert_eq!(
        check_token(&auth, &sign(&other, "HS256", &good_claims()), NOW),
        invalid("the token's signature is invalid")
    );
    let p256 = plugin(json!({"jwks": {"keys": [p256_jwk("a")]}}));
    let stranger = Signer::P256(p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap());
    assert_eq!(
        check_token(&p256, &sign(&stranger, "ES256", &good_claims()), NOW),
        invalid("the token's signature is invalid")
    );
}

// --- refusals ---

#[test]
fn registered_claims_are_enforced() {
    let auth = hs_plugin();
    let key = hmac_key();
    let with = |changes: Value| {
        let mut claims = good_claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        check_token(&auth, &sign(&key, "HS256", &claims), NOW)
    };
    assert!(with(json!({})).is_ok());
    assert_eq!(
        with(json!({"exp": NOW - 61})),
        invalid("the token has expired")
    );
    assert!(
        with(json!({"exp": NOW - 30})).is_ok(),
        "within the default 60 s leeway"
    );
    assert_eq!(
        with(json!({"nbf": NOW + 61})),
        invalid("the token is not valid yet")
    );
    assert!(with(json!({"nbf": NOW + 30})).is_ok());
    assert_eq!(
        with(json!({"exp": null})),
        invalid("the token has no exp claim")
    );
    assert_eq!(
        with(json!({"iss": "https://evil.example"})),
        invalid("the token's issuer is not accepted")
    );
    assert_eq!(
        with(json!({"iss": null})),
        invalid("the token's issuer is not accepted")
    );
    assert_eq!(
        with(json!({"aud": "other"})),
        invalid("the token's audience is not accepted")
    );
    assert!(with(json!({"aud": ["other", "api"]})).is_ok());
    assert_eq!(
        with(json!({"exp": "tomorrow"})),
        invalid("the token's exp claim is not a number")
    );
}

#[test]
fn unsigned_and_unaccepted_algorithms_are_refused() {
    let auth = plugin(json!({"jwks": {"keys": [rsa_jwk("rsa")]}, "algorithms": ["RS256"]}));
    let claims = B64.encode(good_claims().to_string());
    for alg in ["none", "None", "NONE"] {
        let header = B64.encode(json!({"alg": alg}).to_string());
        for token in [
            format!("{header}.{claims}."),
            format!("{header}.{claims}.AA"),
        ] {
            assert_eq!(
                check_token(&auth, &token, NOW),
                invalid("unsigned tokens (alg none) are not accepted")
            );
        }
    }
    // Key confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = sign(&Signer::Hmac(d(RSA_N)), "HS256", &good_claims());
    assert_eq!(
        check_token(&auth, &confused, NOW),
        invalid("the token's algorithm HS256 is not accepted")
    );
    let ps = sign(&rsa_key(), "PS256", &good_claims());
    assert_eq!(
        check_token(&auth, &ps, NOW),
        invalid("the token's algorithm PS256 is not accepted")
    );
    let odd = format!("{}.{claims}.AA", B64.encode(r#"{"alg":"XS256"}"#));
    assert_eq!(
        check_token(&auth, &odd, NOW),
        invalid("the token's algorithm is not supported")
    );
}

#[test]
fn key_ids_select_keys() {
    let auth = plugin(json!({"jwks": {"keys": [p256_jwk("a"), ed_jwk("b")]}}));
    let token = |kid: &str| sign_with(&p256_key(), "ES256", json!({"kid": kid}), &good_claims());
    assert!(check_token(&auth, &token("a"), NOW).is_ok());
    assert_eq!(
        check_token(&auth, &token("b"), NOW),
        invalid("the token's signing key is unknown"),
        "kid b is an Ed25519 key"
    );
    assert_eq!(
        check_token(&auth, &token("zzz"), NOW),
        invalid("the token's signing key is unknown")
    );
    assert!(check_token(&auth, &sign(&p256_key(), "ES256", &good_claims()), NOW).is_ok());
    // A JWK's `alg` restricts it.
    let only_ps = plugin(
        json!({"jwks": {"keys": [{"kty": "RSA", "alg": "PS256", "n": RSA_N, "e": "AQAB"}]}}),
    );
    assert!(check_token(&only_ps, &sign(&rsa_key(), "PS256", &good_claims()), NOW).is_ok());
    assert_eq!(
        check_token(&only_ps, &sign(&rsa_key(), "RS256", &good_claims()), NOW),
        invalid("the token's algorithm RS256 is not accepted"),
        "the default algorithms follow the keys"
    );
}

#[test]
fn missing_and_malformed_credentials() {
    let auth = hs_plugin();
    let token = sign(&hmac_key(), "HS256", &good_claims());
    let request = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .fold(Request::new("GET", "/"), |r, (n, v)| r.with_header(n, v))
    };
    assert_eq!(check(&auth, &request(&[]), NOW), Err(Refusal::Missing));
    assert_eq!(
        check(
            &auth,
            &request(&[("authorization", "Basic dXNlcjpwdw==")]),
            NOW
        ),
        Err(Refusal::Missing)
    );
    assert_eq!(
        check(&auth, &request(&[("authorization", "Bearer")]), NOW),
        invalid("the token is empty")
    );
    assert_eq!(
        check(
            &auth,
            &request(&[("authorization", "Bearer not-a-jwt")]),
            NOW
        ),
        invalid("the token is not a compact JWS (three base64url parts)")
    );
    let twice = [
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("Bearer {token}")),
    ];
    let twice: Vec<(&str, &str)> = twice.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        check(&auth, &request(&twice), NOW),
        Err(Refusal::BadRequest("the request has several token headers"))
    );
    for form in [format!("bearer {token}"), format!("BEARER   {token}  ")] {
        assert!(
            check(&auth, &request(&[("authorization", &form)]), NOW).is_ok(),
            "{form}"
        );
    }
}

#[test]
fn refusals_carry_rfc6750_challenges() {
    let auth = hs_plugin();
    let respond = |request: Request<'static>| {
        let mut request = request;
        match auth.on_request_headers(&mut request, &mut ()).unwrap() {
            Action::Respond(response) => response,
            Action::Continue => panic!("continued"),
        }
    };
    let missing = respond(Request::new("GET", "/"));
    assert_eq!(missing.status, 401);
    assert_eq!(missing.headers.get_str("www-authenticate"), Some("Bearer"));
    let body: Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(body["error"], "missing_token");

    let expired = {
        let mut claims = good_claims();
        claims["exp"] = json!(1000);
        sign(&hmac_key(), "HS256", &claims)
    };
    let response = respond(bearer(&expired));
    assert_eq!(response.status, 401);
    assert_eq!(
        response.headers.get_str("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="the token has expired""#)
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_token", "error_description": "the token has expired"})
    );
    assert_eq!(response.headers.get_str("cache-control"), Some("no-store"));

    let realm = plugin(json!({"secret": SECRET, "realm": "api"}));
    let mut request = bearer("x.y.z");
    let Action::Respond(response) = realm.on_request_headers(&mut request, &mut ()).unwrap() else {
        panic!("continued")
    };
    assert_eq!(
        response.headers.get_str("www-authenticate"),
        Some(
            r#"Bearer realm="api", error="invalid_token", error_description="the token header is not base64url""#
        )
    );
    let mut request = Request::new("GET", "/");
    let Action::Respond(response) = realm.on_request_headers(&mut request, &mut ()).unwrap() else {
        panic!("continued")
    };
    assert_eq!(
        response.headers.get_str("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );

    let mut request = Request::new("GET", "/")
        .with_header("authorization", "Bearer a")
        .with_header("authorization", "Bearer b");
    let Action::Respond(response) = auth.on_request_headers(&mut request, &mut ()).unwrap() else {
        panic!("continued")
    };
    assert_eq!(response.status, 400);
    assert!(
        response
            .headers
            .get_str("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
}

// --- claim headers ---

#[test]
fn claims_are_copied_and_spoofed_copies_dropped() {
    testing::reset();
    let auth = plugin(json!({
        "secret": SECRET,
        "claims_to_headers": {
            "sub": "X-User-Id", "n": "x-n", "admin": "x-admin", "roles": "x-roles",
            "obj": "x-obj", "absent": "x-absent", "evil": "x-evil", "f": "x-f",
        },
    }));
    let mut claims = good_claims();
    for (k, v) in [
        ("n", json!(42)),
        ("f", json!(1.5)),
        ("admin", json!(false)),
        ("roles", json!(["a", "b", 3])),
        ("obj", json!({"a": 1})),
        ("evil", json!("line\r\nbreak: injected")),
    ] {
        claims[k] = v;
    }
    let token = sign(&hmac_key(), "HS256", &claims);
    let mut request = bearer(&token)
        .with_header("x-user-id", "admin")
        .with_header("x-absent", "spoofed")
        .with_header("x-obj", "spoofed")
        .with_header("x-evil", "spoofed");
    assert_eq!(
        auth.on_request_headers(&mut request, &mut ()).unwrap(),
        Action::Continue
    );
    let get = |name: &str| request.headers.get_all(name);
    assert_eq!(get("x-user-id"), [b"user-42".to_vec()]);
    assert_eq!(get("x-n"), [b"42".to_vec()]);
    assert_eq!(get("x-f"), [b"1.5".to_vec()]);
    assert_eq!(get("x-admin"), [b"false".to_vec()]);
    assert_eq!(get("x-roles"), [b"a,b,3".to_vec()]);
    for dropped in ["x-obj", "x-absent", "x-evil"] {
        assert!(get(dropped).is_empty(), "{dropped}");
    }
    assert!(
        request.headers.contains("authorization"),
        "forwarded by default"
    );
    testing::with(|fake| assert!(fake.logs.is_empty(), "{:?}", fake.logs));
}

#[test]
fn custom_header_bare_token_and_not_forwarding() {
    let auth =
        plugin(json!({"secret": SECRET, "header": "X-Jwt", "scheme": "", "forward_token": false}));
    let token = sign(&hmac_key(), "HS256", &good_claims());
    let mut request = Request::new("GET", "/").with_header("x-jwt", &token);
    assert_eq!(
        auth.on_request_headers(&mut request, &mut ()).unwrap(),
        Action::Continue
    );
    assert!(!request.headers.contains("x-jwt"));
    assert_eq!(request.edits().removed, ["x-jwt"]);
    let mut request = bearer(&token);
    let Action::Respond(response) = auth.on_request_headers(&mut request, &mut ()).unwrap() else {
        panic!("the authorization header is not this route's")
    };
    assert_eq!(response.status, 401);
}

#[test]
fn whole_requests_reach_the_upstream_only_with_a_valid_token() {
    let mut auth = Harness::<JwtAuth>::new(json!({
        "secret": SECRET,
        "claims_to_headers": {"sub": "x-user-id"},
        "forward_token": false,
    }));
    assert_eq!(auth.phases(), [Phase::RequestHeaders]);
    let token = sign(&hmac_key(), "HS256", &good_claims());
    let admitted = auth.run(bearer(&token).with_header("x-user-id", "admin"));
    assert_eq!(admitted.status(), 200);
    assert_eq!(admitted.failure(), None);
    let upstream = admitted.upstream_request().expect("sent upstream");
    assert_eq!(upstream.headers.get_all("x-user-id"), [b"user-42".to_vec()]);
    assert!(!upstream.headers.contains("authorization"), "not forwarded");

    let refused = auth.run(Request::new("GET", "/").with_header("x-user-id", "admin"));
    assert_eq!(refused.status(), 401);
    assert!(refused.upstream_request().is_none());
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(refused.body_json()["error"], "missing_token");
}

// --- the cache of verified tokens ---

#[test]
fn a_verified_token_is_remembered_but_its_window_still_holds() {
    let auth = hs_plugin();
    let mut claims = good_claims();
    claims["exp"] = json!(NOW + 30);
    let token = sign(&hmac_key(), "HS256", &claims);
    assert!(check_token(&auth, &token, NOW).is_ok());
    assert_eq!(auth.verified.lock().unwrap().tokens.len(), 1);
    assert!(check_token(&auth, &token, NOW + 20).is_ok());
    assert_eq!(
        check_token(&auth, &token, NOW + 30 + 60),
        invalid("the token has expired"),
        "expiry is checked at use, cached or not"
    );
    // A refused token is not remembered.
    assert!(check_token(&auth, &format!("{token}x"), NOW).is_err());
    assert_eq!(auth.verified.lock().unwrap().tokens.len(), 1);
}

#[test]
fn cached_tokens_are_matched_by_their_whole_text() {
    let a = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
    let mut b = *a;
    b[a.len() - 1] ^= 1;
    assert!(same_text(a, a));
    assert!(!same_text(a, &b), "a difference in the tail");
    b = *a;
    b[3] ^= 1;
    assert!(!same_text(a, &b), "a difference in a word");
    assert!(!same_text(a, &a[..a.len() - 1]));
    assert_ne!(token_hash(a), token_hash(&b));
    assert_ne!(
        token_hash(b"abc"),
        token_hash(b"abc\0"),
        "the length counts"
    );

    // Two tokens in one slot: the later is kept, the earlier is verified again.
    let auth = hs_plugin();
    let first = sign(&hmac_key(), "HS256", &good_claims());
    assert!(check_token(&auth, &first, NOW).is_ok());
    let slot = token_hash(first.as_bytes());
    let (_, verified) = auth.verified.lock().unwrap().tokens[&slot].clone();
    auth.verified
        .lock()
        .unwrap()
        .tokens
        .insert(slot, (Box::from(&b"another token"[..]), verified));
    assert!(check_token(&auth, &first, NOW).is_ok());
    assert!(same_text(
        &auth.verified.lock().unwrap().tokens[&slot].0,
        first.as_bytes()
    ));
}

#[test]
fn the_cache_is_bounded() {
    let auth = hs_plugin();
    for i in 0..(CACHE_ENTRIES + 10) {
        let mut claims = good_claims();
        claims["jti"] = json!(i);
        assert!(check_token(&auth, &sign(&hmac_key(), "HS256", &claims), NOW).is_ok());
    }
    assert_eq!(auth.verified.lock().unwrap().tokens.len(), CACHE_ENTRIES);
}

// --- configuration ---

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let jwks = json!({"keys": [p256_jwk("a")]});
    for (config, expected) in [
        (json!({}), "`secret`, `jwks` or `jwks_url`"),
        (
            json!({"secret": SECRET, "algorithms": ["HS257"]}),
            "`algorithms`: unknown algorithm \"HS257\"",
        ),
        (
            json!({"secret": SECRET, "algorithms": ["none"]}),
            "`algorithms`: \"none\"",
        ),
        (
            json!({"secret": SECRET, "algorithms": []}),
            "`algorithms`: must not be empty",
        ),
        (
            json!({"jwks": jwks, "algorithms": ["HS256"]}),
            "`secret`: required by HS256",
        ),
        (
            json!({"secret": SECRET, "algorithms": ["RS256"]}),
            "`jwks` or `jwks_url`: required by RS256",
        ),
        (
            json!({"secret": SECRET, "jwks": jwks, "algorithms": ["ES256"]}),
            "`secret`: set, but",
        ),
        (
            json!({"jwks": jwks, "algorithms": ["RS256"]}),
            "`algorithms`: no key in `jwks` verifies RS256",
        ),
        (
            json!({"secret": "short"}),
            "`secret`: HS256 needs a secret of at least 32 bytes",
        ),
        (
            json!({"secret": "a".repeat(40), "algorithms": ["HS384"]}),
            "`secret`: HS384 needs",
        ),
        (json!({"secret": ""}), "`secret`: must not be empty"),
        (
            json!({"secret": "@@@", "secret_base64": true}),
            "`secret`: not base64",
        ),
        (json!({"jwks": "{not json"}), "`jwks`: not JSON"),
        (json!({"jwks": 5}), "`jwks`: must be a JWK set"),
        (
            json!({"jwks": {"keys": []}}),
            "`jwks`: no usable signing key",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "oct", "k": "AAAA"}]}}),
            "`jwks`: no usable signing key",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}}),
            "`jwks`: key \"k\": not a usable RSA key",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_X}]}}),
            "`jwks`: key 0: the point is not on the curve",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": EC_X}]}}),
            "`jwks`: key 0: `y` is missing",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "RSA", "alg": "ES256", "n": RSA_N, "e": "AQAB"}]}}),
            "`alg` ES256 does not fit",
        ),
        (
            json!({"jwks": jwks, "jwks_url": "http://idp/jwks"}),
            "`jwks_url`: set either",
        ),
        (
            json!({"jwks_url": "https://idp/jwks"}),
            "`jwks_url`: \"https://idp/jwks\" is not an http:// URL",
        ),
        (
            json!({"jwks_url": "http:///jwks"}),
            "`jwks_url`: \"http:///jwks\" has no host",
        ),
        (
            json!({"jwks_url": "http://idp/jwks", "jwks_cache_seconds": 0}),
            "`jwks_cache_seconds`",
        ),
        (
            json!({"secret": SECRET, "header": "bad header"}),
            "`header`",
        ),
        (json!({"secret": SECRET, "scheme": "Bear er"}), "`scheme`"),
        (json!({"secret": SECRET, "realm": "a\"b"}), "`realm`"),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "bad header"}}),
            "`claims_to_headers`",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "Authorization"}}),
            "`claims_to_headers`",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "x-a", "email": "X-A"}}),
            "`claims_to_headers`",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "Host"}}),
            "`claims_to_headers`: \"host\" (for claim \"sub\") is a header only the gateway sets",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "content-length"}}),
            "only the gateway sets",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "Connection"}}),
            "only the gateway sets",
        ),
        (
            json!({"secret": SECRET, "claims_to_headers": {"sub": "proxy-user"}}),
            "only the gateway sets",
        ),
        (
            json!({"secret": SECRET, "header": "Host", "scheme": "", "forward_token": false}),
            "`header`: \"host\" cannot be removed",
        ),
        (
            json!({"secret": SECRET, "secret_b64": true}),
            "unknown field `secret_b64`",
        ),
        (
            json!({"secret": SECRET, "issuer": 5}),
            "a string or a list of strings",
        ),
    ] {
        let message = refused(config.clone());
        assert!(message.contains(expected), "{config}: {message}");
    }
}

#[test]
fn good_configs_and_their_default_algorithms() {
    assert_eq!(
        plugin(json!({"secret": "a".repeat(32)}))
            .algorithms
            .to_string(),
        "HS256"
    );
    assert_eq!(
        plugin(json!({"secret": "a".repeat(64)}))
            .algorithms
            .to_string(),
        "HS256, HS384, HS512"
    );
    assert_eq!(
        plugin(json!({"jwks": {"keys": [p256_jwk("a"), ed_jwk("b")]}}))
            .algorithms
            .to_string(),
        "ES256, EdDSA"
    );
    assert_eq!(
        plugin(json!({"jwks_url": "http://idp:8080/jwks"})).algorithms,
        AlgSet::asymmetric()
    );
    // JWKS as JSON text, a lone JWK, an encryption key and an unknown type skipped.
    let text = json!({"keys": [p256_jwk("a"), {"kty": "oct", "k": "AA"}, {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "use": "enc", "n": "AA", "e": "AQAB"}]})
    .to_string();
    assert_eq!(plugin(json!({"jwks": text})).keys.unwrap().len(), 1);
    assert_eq!(
        plugin(json!({"jwks": ed_jwk("solo")})).keys.unwrap().len(),
        1
    );
    // A hop-by-hop token header can still be removed (not forwarded).
    let proxy =
        plugin(json!({"secret": SECRET, "header": "Proxy-Authorization", "forward_token": false}));
    assert_eq!(proxy.header, "proxy-authorization");
    let token = sign(&hmac_key(), "HS256", &good_claims());
    let mut request =
        Request::new("GET", "/").with_header("proxy-authorization", format!("Bearer {token}"));
    assert_eq!(
        proxy.on_request_headers(&mut request, &mut ()).unwrap(),
        Action::Continue
    );
    assert_eq!(request.edits().removed, ["proxy-authorization"]);
    let lists = plugin(json!({"secret": SECRET, "issuer": ["a", "b"], "audience": "c"}));
    assert_eq!(lists.rules.issuers, ["a", "b"]);
    assert_eq!(lists.rules.audiences, ["c"]);
}

// --- jwks_url ---

const URL: &str = "http://idp.test:8080/jwks";

fn serve_jwks(keys: &[Value]) {
    testing::with(|fake| {
        fake.respond_to(
            URL,
            OutboundResponse {
                status: 200,
                headers: Vec::new(),
                body: json!({ "keys": keys }).to_string().into_bytes(),
            },
        )
    });
}

fn fetches() -> usize {
    testing::with(|fake| fake.http_calls.len())
}

fn remote_plugin() -> JwtAuth {
    plugin(
        json!({"jwks_url": URL, "jwks_cache_seconds": 300, "claims_to_headers": {"sub": "x-user-id"}}),
    )
}

fn es256(kid: &str, signer: &Signer) -> String {
    sign_with(signer, "ES256", json!({"kid": kid}), &good_claims())
}

#[test]
fn jwks_url_is_fetched_lazily_cached_and_refetched_for_unknown_keys() {
    testing::reset();
    let auth = remote_plugin();
    assert_eq!(fetches(), 0, "nothing is fetched in new");
    serve_jwks(&[p256_jwk("k1")]);
    assert!(check_token(&auth, &es256("k1", &p256_key()), NOW).is_ok());
    assert_eq!(fetches(), 1);
    testing::with(|fake| {
        let call = &fake.http_calls[0];
        assert_eq!((call.method.as_str(), call.url.as_str()), ("GET", URL));
    });
    // Another token: the set comes from the KV store (another instance would see it too).
    let mut claims = good_claims();
    claims["sub"] = json!("other");
    let token = sign_with(&p256_key(), "ES256", json!({"kid": "k1"}), &claims);
    assert_eq!(
        check_token(&auth, &token, NOW + 1),
        Ok(vec![Some("other".into())])
    );
    assert_eq!(fetches(), 1);

    // The issuer rotates in k2: a k2 token makes one refetch.
    let k2 = Signer::P256(p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap());
    let k2_point = match &k2 {
        Signer::P256(key) => key.verifying_key().to_sec1_point(false),
        _ => unreachable!(),
    };
    let (x, y) = k2_point.as_bytes()[1..].split_at(32);
    serve_jwks(&[
        p256_jwk("k1"),
        json!({"kty": "EC", "crv": "P-256", "kid": "k2", "x": B64.encode(x), "y": B64.encode(y)}),
    ]);
    assert!(check_token(&auth, &es256("k2", &k2), NOW + 2).is_ok());
    assert_eq!(fetches(), 2);
    // Unknown kids within jwks_min_refetch_seconds do not fetch again.
    assert_eq!(
        check_token(&auth, &es256("k3", &k2), NOW + 3),
        invalid("the token's signing key is unknown")
    );
    assert_eq!(fetches(), 2);
    // After the hold-off, they do (once).
    testing::with(|fake| fake.kv.remove(&format!("jwks-refetch:{URL}")));
    assert!(check_token(&auth, &es256("k3", &k2), NOW + 20).is_err());
    assert_eq!(fetches(), 3);
    // A known key is no reason to fetch.
    let mut claims = good_claims();
    claims["jti"] = json!("fresh");
    let token = sign_with(&k2, "ES256", json!({"kid": "k2"}), &claims);
    assert!(check_token(&auth, &token, NOW + 21).is_ok());
    assert_eq!(fetches(), 3);
}

#[test]
fn a_stale_jwks_is_refreshed_and_kept_when_refreshing_fails() {
    testing::reset();
    let auth = remote_plugin();
    serve_jwks(&[p256_jwk("k1")]);
    assert!(check_token(&auth, &es256("k1", &p256_key()), NOW).is_ok());
    assert_eq!(fetches(), 1);
    // 301 s later the set is stale: refreshed once.
    let mut claims = good_claims();
    claims["exp"] = json!(NOW + 10_000);
    let later = sign_with(&p256_key(), "ES256", json!({"kid": "k1"}), &claims);
    assert!(check_token(&auth, &later, NOW + 301).is_ok());
    assert_eq!(fetches(), 2);
    // The IdP goes down; the set goes stale again: the cached keys still verify.
    testing::with(|fake| {
        fake.http.clear();
        fake.kv.remove(&format!("jwks-refetch:{URL}"));
    });
    let mut claims = good_claims();
    claims["exp"] = json!(NOW + 10_000);
    claims["jti"] = json!("another");
    let token = sign_with(&p256_key(), "ES256", json!({"kid": "k1"}), &claims);
    assert!(check_token(&auth, &token, NOW + 700).is_ok());
    assert_eq!(fetches(), 3, "a refresh was tried");
    testing::with(|fake| {
        assert!(
            fake.logs
                .iter()
                .any(|(level, line)| *level == Level::Warn
                    && line.contains("keeping the cached keys"))
        );
    });
}

#[test]
fn an_unreachable_jwks_url_answers_503_and_backs_off() {
    testing::reset();
    let auth = remote_plugin();
    let token = es256("k1", &p256_key());
    let mut request = bearer(&token);
    let Ok(Action::Respond(response)) = auth.on_request_headers(&mut request, &mut ()) else {
        panic!("continued without keys")
    };
    assert_eq!(response.status, 503);
    assert_eq!(response.headers.get_str("retry-after"), Some("10"));
    assert!(!response.headers.contains("www-authenticate"));
    assert_eq!(fetches(), 1);
    // Within the back-off, no new fetch.
    assert_eq!(check_token(&auth, &token, NOW), Err(Refusal::Unavailable));
    assert_eq!(fetches(), 1);
    // A broken set is a failed fetch too.
    testing::with(|fake| fake.kv.clear());
    testing::with(|fake| {
        fake.respond_to(
            URL,
            OutboundResponse {
                status: 200,
                headers: Vec::new(),
                body: b"{\"keys\": []}".to_vec(),
            },
        )
    });
    assert_eq!(check_token(&auth, &token, NOW), Err(Refusal::Unavailable));
    testing::with(|fake| fake.kv.clear());
    testing::with(|fake| {
        fake.respond_to(
            URL,
            OutboundResponse {
                status: 500,
                headers: Vec::new(),
                body: Vec::new(),
            },
        )
    });
    assert_eq!(check_token(&auth, &token, NOW), Err(Refusal::Unavailable));
    testing::with(|fake| {
        assert!(
            fake.logs
                .iter()
                .any(|(_, line)| line.contains("status 500")),
            "{:?}",
            fake.logs
        );
    });
    // Recovered: the next request after the back-off fetches and passes.
    testing::with(|fake| fake.kv.clear());
    serve_jwks(&[p256_jwk("k1")]);
    assert!(check_token(&auth, &token, NOW).is_ok());
}

#[test]
fn a_fetched_set_skips_keys_it_cannot_use() {
    testing::reset();
    let auth = remote_plugin();
    serve_jwks(&[
        json!({"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
        p256_jwk("k1"),
    ]);
    assert!(check_token(&auth, &es256("k1", &p256_key()), NOW).is_ok());
}

#[test]
fn valid_public_key_signatures_are_remembered_across_instances_of_one_config() {
    testing::reset();
    serve_jwks(&[p256_jwk("k1")]);
    let token = es256("k1", &p256_key());
    assert!(check_token(&remote_plugin(), &token, NOW).is_ok());
    assert_eq!(fetches(), 1);
    // The keys are gone (cache dropped, the IdP down): a fresh instance of the same
    // config still accepts the token it verified, without fetching...
    testing::with(|fake| {
        fake.http.clear();
        fake.kv.retain(|key, _| key.starts_with("sig:"));
    });
    assert_eq!(
        check_token(&remote_plugin(), &token, NOW + 5),
        Ok(vec![Some("user-42".into())])
    );
    assert_eq!(fetches(), 1);
    // ...still checking its claims at use...
    assert_eq!(
        check_token(&remote_plugin(), &token, NOW + 600 + 60),
        invalid("the token has expired")
    );
    // ...while a route configured otherwise does not share the memo.
    let other = plugin(json!({"jwks_url": URL, "claims_to_headers": {"sub": "x-subject"}}));
    assert_eq!(check_token(&other, &token, NOW), Err(Refusal::Unavailable));
    // A tampered token is another token.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert!(check_token(&remote_plugin(), &tampered, NOW).is_err());
}

#[test]
fn hmac_signatures_are_not_remembered_in_the_kv_store() {
    testing::reset();
    assert!(
        check_token(
            &hs_plugin(),
            &sign(&hmac_key(), "HS256", &good_claims()),
            NOW
        )
        .is_ok()
    );
    testing::with(|fake| assert!(fake.kv.is_empty(), "{:?}", fake.kv.keys()));
}
