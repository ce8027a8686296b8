//! A compact JWS (RFC 7515 §7.1) taken apart, and the registered claims checked
//! (RFC 7519 §4.1). Nothing here trusts the token: the caller verifies the signature
//! over [`Token::signing_input`] before reading [`Token::claims`].

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::keys::b64;

/// The longest token looked at, in bytes: a bound on the work one request can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A token split into its parts, its header decoded.
#[derive(Debug)]
pub struct Token<'t> {
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'t str,
    payload: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The decoded header.
    pub header: Header,
}

/// The JOSE header members used here.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// The algorithm, as written (checked against the accepted set by the caller).
    pub alg: String,
    /// The key id, if any.
    #[serde(default)]
    pub kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): none is understood, so any is refused.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

impl<'t> Token<'t> {
    /// Splits and decodes `text`, or says what is wrong with it.
    pub fn parse(text: &'t str) -> Result<Token<'t>, &'static str> {
        if text.len() > MAX_TOKEN_LEN {
            return Err("the token is too long");
        }
        let (signing_input, signature) = text
            .rsplit_once('.')
            .ok_or("the token is not a compact JWS (three base64url parts)")?;
        let (header, payload) = signing_input
            .split_once('.')
            .ok_or("the token is not a compact JWS (three base64url parts)")?;
        if payload.contains('.') {
            return Err("the token is not a compact JWS (three base64url parts)");
        }
        let header = b64(header).ok_or("the token header is not base64url")?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| "the token header is not a JOSE header")?;
        if header.crit.is_some() {
            return Err("the token has critical header parameters that are not supported");
        }
        let signature = b64(signature).ok_or("the token signature is not base64url")?;
        Ok(Token {
            signing_input,
            payload,
            signature,
            header,
        })
    }

    /// The payload's claims. Read them only after the signature was verified.
    pub fn claims(&self) -> Result<Map<String, Value>, &'static str> {
        let payload = b64(self.payload).ok_or("the token payload is not base64url")?;
        serde_json::from_slice(&payload).map_err(|_| "the token payload is not a JSON object")
    }
}

/// What the registered claims must satisfy.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Accepted `iss` values; empty accepts any (and none).
    pub issuers: Vec<String>,
    /// Accepted audiences; empty accepts any. Otherwise `aud` must hold one of them.
    pub audiences: Vec<String>,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
}

/// The validity window of a token: `exp` and `nbf` as given (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// `exp`.
    pub exp: Option<f64>,
    /// `nbf`.
    pub nbf: Option<f64>,
}

impl Window {
    /// Whether the token is usable at `now` with `leeway` seconds of skew, or why not.
    pub fn check(&self, now: u64, leeway: u64) -> Result<(), &'static str> {
        let (now, leeway) = (now as f64, leeway as f64);
        if self.exp.is_some_and(|exp| now >= exp + leeway) {
            return Err("the token has expired");
        }
        if self.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err("the token is not valid yet");
        }
        Ok(())
    }
}

/// A NumericDate claim: absent, or a number (RFC 7519 §2).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or("a time claim is not a number"),
        Some(_) => Err(match name {
            "exp" => "the token's exp claim is not a number",
            _ => "the token's nbf claim is not a number",
        }),
    }
}

impl Rules {
    /// Checks the registered claims at `now`: the window, then issuer and audience.
    pub fn check(&self, claims: &Map<String, Value>, now: u64) -> Result<Window, &'static str> {
        let window = Window {
            exp: numeric_date(claims, "exp")?,
            nbf: numeric_date(claims, "nbf")?,
        };
        if self.require_exp && window.exp.is_none() {
            return Err("the token has no exp claim");
        }
        window.check(now, self.leeway)?;
        if !self.issuers.is_empty() {
            let ok =
                matches!(claims.get("iss"), Some(Value::String(iss)) if self.issuers.contains(iss));
            if !ok {
                return Err("the token's issuer is not accepted");
            }
        }
        if !self.audiences.is_empty() {
            let accepted =
                |aud: &Value| matches!(aud, Value::String(a) if self.audiences.contains(a));
            let ok = match claims.get("aud") {
                Some(aud @ Value::String(_)) => accepted(aud),
                Some(Value::Array(auds)) => auds.iter().any(accepted),
                _ => false,
            };
            if !ok {
                return Err("the token's audience is not accepted");
            }
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn splits_a_compact_jws() {
        // RFC 7515 appendix A.1.
        let token = Token::parse(
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
             .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
             .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        )
        .unwrap();
        assert_eq!(token.header.alg, "HS256");
        assert_eq!(token.header.kid, None);
        assert_eq!(token.signature.len(), 32);
        let claims = token.claims().unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["exp"], 1_300_819_380);
    }

    #[test]
    fn malformed_tokens_are_named() {
        let header = "eyJhbGciOiJIUzI1NiJ9"; // {"alg":"HS256"}
        for (text, why) in [
            ("abc", "compact JWS"),
            ("a.b", "compact JWS"),
            ("a.b.c.d", "compact JWS"),
            ("!!.e30.AA", "header is not base64url"),
            ("e30.e30.AA", "not a JOSE header"), // {} has no alg
            (&format!("{header}.e30.A*A"), "signature is not base64url"),
            (&format!("{header}=.e30.AA"), "header is not base64url"), // padding
            (
                // {"alg":"HS256","crit":["exp"]}
                "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.e30.AA",
                "critical",
            ),
        ] {
            let error = Token::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(Token::parse(&long).unwrap_err(), "the token is too long");
        let text = format!("{header}.WzFd.AA"); // [1]
        let not_object = Token::parse(&text).unwrap();
        assert!(not_object.claims().is_err());
    }

    #[test]
    fn the_window_respects_leeway() {
        let rules = Rules {
            leeway: 10,
            require_exp: true,
            ..Rules::default()
        };
        let c = claims(r#"{"exp": 1000, "nbf": 900}"#);
        assert!(rules.check(&c, 989).is_ok());
        assert!(rules.check(&c, 1009).is_ok());
        assert_eq!(rules.check(&c, 1010).unwrap_err(), "the token has expired");
        assert!(rules.check(&c, 890).is_ok());
        assert_eq!(
            rules.check(&c, 889).unwrap_err(),
            "the token is not valid yet"
        );
        let strict = Rules {
            leeway: 0,
            ..rules.clone()
        };
        assert_eq!(strict.check(&c, 1000).unwrap_err(), "the token has expired");
        assert!(strict.check(&c, 999).is_ok());
        assert!(strict.check(&claims(r#"{"exp": 1000.5}"#), 1000).is_ok());
        assert_eq!(
            rules.check(&claims("{}"), 0).unwrap_err(),
            "the token has no exp claim"
        );
        let lax = Rules {
            require_exp: false,
            ..rules.clone()
        };
        assert!(lax.check(&claims("{}"), 0).is_ok());
        for bad in [r#"{"exp": "1000"}"#, r#"{"exp": 1, "nbf": null}"#] {
            assert!(
                lax.check(&claims(bad), 0)
                    .unwrap_err()
                    .contains("not a number")
            );
        }
    }

    #[test]
    fn issuer_and_audience() {
        let rules = Rules {
            issuers: vec!["https://idp".into()],
            audiences: vec!["api".into(), "web".into()],
            ..Rules::default()
        };
        let ok = |json: &str| rules.check(&claims(json), 0);
        assert!(ok(r#"{"iss": "https://idp", "aud": "api"}"#).is_ok());
        assert!(ok(r#"{"iss": "https://idp", "aud": ["other", "web"]}"#).is_ok());
        for (json, why) in [
            (r#"{"aud": "api"}"#, "issuer"),
            (r#"{"iss": "https://evil", "aud": "api"}"#, "issuer"),
            (r#"{"iss": ["https://idp"], "aud": "api"}"#, "issuer"),
            (r#"{"iss": "https://idp"}"#, "audience"),
            (r#"{"iss": "https://idp", "aud": "other"}"#, "audience"),
            (r#"{"iss": "https://idp", "aud": ["x", 1]}"#, "audience"),
            (r#"{"iss": "https://idp", "aud": []}"#, "audience"),
        ] {
            assert!(ok(json).unwrap_err().contains(why), "{json}");
        }
        assert!(Rules::default().check(&claims("{}"), 0).is_ok());
    }
}
