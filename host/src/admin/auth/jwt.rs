//! ID tokens: JWS compact serializations signed with a key from the
//! provider's JSON Web Key Set (RS256, PS256 or ES256; `none` and shared
//! secrets are refused), and the checks on their claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest ID token looked at.
const MAX_TOKEN: usize = 64 << 10;
/// Most keys kept from a key set.
const MAX_KEYS: usize = 64;
/// Clock difference allowed between the provider and this machine, in seconds.
pub(super) const SKEW_SECS: i64 = 60;

/// The provider's signing keys.
#[derive(Debug, Default)]
pub(super) struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

#[derive(Debug)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed P-256 point: 0x04, x, y.
    P256(Vec<u8>),
}

#[derive(Deserialize)]
struct JwkFile {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<Value>,
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| "a part is not base64url".to_string())
}

impl Jwks {
    /// The signature keys of a JWKS document; keys of other kinds or uses
    /// are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let file: JwksFile = serde_json::from_slice(bytes)
            .map_err(|e| format!("the key set is not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for value in file.keys.into_iter().take(MAX_KEYS) {
            let Ok(k) = serde_json::from_value::<JwkFile>(value) else {
                continue;
            };
            if k.usage.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => match (&k.n, &k.e) {
                    (Some(n), Some(e)) => {
                        let mut n = b64(n)?;
                        let lead = n.iter().take_while(|b| **b == 0).count();
                        n.drain(..lead);
                        Key::Rsa { n, e: b64(e)? }
                    }
                    _ => continue,
                },
                ("EC", Some("P-256")) => match (&k.x, &k.y) {
                    (Some(x), Some(y)) => {
                        let (x, y) = (b64(x)?, b64(y)?);
                        if x.len() != 32 || y.len() != 32 {
                            continue;
                        }
                        let mut point = vec![4u8];
                        point.extend(x);
                        point.extend(y);
                        Key::P256(point)
                    }
                    _ => continue,
                },
                _ => continue,
            };
            keys.push(Jwk { kid: k.kid, key });
        }
        Ok(Jwks { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Why a token is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenError {
    /// No key of the set has the token's key ID: the set may have rotated.
    UnknownKey,
    /// The token is malformed, or its signature is wrong.
    Invalid(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// The claims of `token` once its signature checks out with a key of `jwks`.
pub(super) fn verify(token: &str, jwks: &Jwks) -> Result<Map<String, Value>, TokenError> {
    let invalid = |why: &str| TokenError::Invalid(why.to_string());
    if token.len() > MAX_TOKEN {
        return Err(invalid("the ID token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the ID token is not a signed JWT (three parts)"));
    };
    let header: Header = serde_json::from_slice(&b64(head).map_err(|e| invalid(&e))?)
        .map_err(|_| invalid("the ID token's header is not JSON with an alg"))?;
    let signature = b64(sig).map_err(|e| invalid(&e))?;
    let signed = token
        .get(..head.len() + 1 + body.len())
        .ok_or_else(|| invalid("the ID token is cut short"))?
        .as_bytes();
    let rsa: Option<&'static signature::RsaParameters> = match header.alg.as_str() {
        "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
        "ES256" => None,
        other => {
            return Err(TokenError::Invalid(format!(
                "the ID token is signed with {other}; RS256, PS256 or ES256 are taken"
            )));
        }
    };
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .filter(|k| {
            matches!(
                (&k.key, rsa),
                (Key::Rsa { .. }, Some(_)) | (Key::P256(_), None)
            )
        })
        .collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let good = candidates.iter().any(|k| match (&k.key, rsa) {
        (Key::Rsa { n, e }, Some(params)) => RsaPublicKeyComponents { n, e }
            .verify(params, signed, &signature)
            .is_ok(),
        (Key::P256(point), None) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, &signature)
                .is_ok()
        }
        _ => false,
    });
    if !good {
        return Err(invalid("the ID token's signature is wrong"));
    }
    match serde_json::from_slice(&b64(body).map_err(|e| invalid(&e))?) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(invalid("the ID token's claims are not a JSON object")),
    }
}

/// Why the claims of a well-signed token are not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClaimError {
    /// `exp` has passed (or the token was issued in the future).
    Expired,
    /// `nonce` is not the one this login sent.
    Nonce,
    /// Another issuer or audience, or a claim missing.
    Other(String),
}

/// What the claims must say.
pub(super) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Now, in seconds since 1970.
    pub now: i64,
}

/// Checks issuer, audience, authorized party, times and nonce.
pub(super) fn check_claims(
    claims: &Map<String, Value>,
    want: &Expected<'_>,
) -> Result<(), ClaimError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    if text("iss") != Some(want.issuer) {
        return Err(ClaimError::Other(
            "the ID token is from another issuer".into(),
        ));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&want.client_id) {
        return Err(ClaimError::Other(
            "the ID token is for another client".into(),
        ));
    }
    if (audiences.len() > 1 || claims.contains_key("azp")) && text("azp") != Some(want.client_id) {
        return Err(ClaimError::Other(
            "the ID token is for another party (azp)".into(),
        ));
    }
    let exp = number("exp").ok_or_else(|| ClaimError::Other("the ID token has no exp".into()))?;
    if exp + SKEW_SECS <= want.now {
        return Err(ClaimError::Expired);
    }
    if number("iat").is_some_and(|iat| iat - SKEW_SECS > want.now)
        || number("nbf").is_some_and(|nbf| nbf - SKEW_SECS > want.now)
    {
        return Err(ClaimError::Expired);
    }
    let nonce_ok = text("nonce").is_some_and(|n| {
        use subtle::ConstantTimeEq;
        bool::from(n.as_bytes().ct_eq(want.nonce.as_bytes()))
    });
    if !nonce_ok {
        return Err(ClaimError::Nonce);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn key() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}
        ]});
        (pair, jwks.to_string())
    }

    fn sign(pair: &EcdsaKeyPair, header: Value, claims: Value) -> String {
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{head}.{body}");
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://idp", "aud": "izhub", "sub": "u1", "nonce": "n-1",
               "iat": now, "exp": now + 300, "groups": ["ops"]})
    }

    #[test]
    fn signatures_keys_and_algorithms() {
        let (pair, jwks) = key();
        let jwks = Jwks::parse(jwks.as_bytes()).unwrap();
        assert_eq!(jwks.len(), 1, "the encryption key is skipped");
        let now = 1_800_000_000;
        let good = sign(&pair, json!({"alg": "ES256", "kid": "k1"}), claims(now));
        let got = verify(&good, &jwks).unwrap();
        assert_eq!(got.get("sub"), Some(&json!("u1")));
        // One changed claim breaks the signature.
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut forged = claims(now);
        forged["groups"] = json!(["admins"]);
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(matches!(
            verify(&parts.join("."), &jwks),
            Err(TokenError::Invalid(_))
        ));
        // A key the set does not have; unsigned and HMAC tokens.
        let other = sign(&pair, json!({"alg": "ES256", "kid": "k2"}), claims(now));
        assert_eq!(verify(&other, &jwks), Err(TokenError::UnknownKey));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(verify(&none, &jwks), Err(TokenError::Invalid(_))));
        let hs = sign(&pair, json!({"alg": "HS256", "kid": "k1"}), claims(now));
        assert!(matches!(verify(&hs, &jwks), Err(TokenError::Invalid(_))));
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(MAX_TOKEN + 1)] {
            assert!(verify(junk, &jwks).is_err(), "{junk:.20}");
        }
        assert!(Jwks::parse(b"{\"keys\": 3}").is_err());
        assert!(Jwks::parse(b"not json").is_err());
    }

    #[test]
    fn claims_issuer_audience_times_and_nonce() {
        let now = 1_800_000_000;
        let want = Expected {
            issuer: "https://idp",
            client_id: "izhub",
            nonce: "n-1",
            now,
        };
        let map = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(check_claims(&map(claims(now)), &want), Ok(()));
        let with = |k: &str, v: Value| {
            let mut c = claims(now);
            c[k] = v;
            check_claims(&map(c), &want)
        };
        assert_eq!(with("nonce", json!("n-2")), Err(ClaimError::Nonce));
        assert_eq!(
            with("exp", json!(now - SKEW_SECS - 1)),
            Err(ClaimError::Expired)
        );
        assert_eq!(
            with("exp", json!(now - 10)),
            Ok(()),
            "within the allowed skew"
        );
        assert_eq!(with("iat", json!(now + 3600)), Err(ClaimError::Expired));
        assert!(matches!(
            with("iss", json!("https://other")),
            Err(ClaimError::Other(_))
        ));
        assert!(matches!(
            with("aud", json!("someone-else")),
            Err(ClaimError::Other(_))
        ));
        assert_eq!(
            with("aud", json!(["x", "izhub"])),
            Err(ClaimError::Other(
                "the ID token is for another party (azp)".into()
            ))
        );
        let mut both = claims(now);
        both["aud"] = json!(["x", "izhub"]);
        both["azp"] = json!("izhub");
        assert_eq!(check_claims(&map(both), &want), Ok(()));
        let mut no_nonce = claims(now);
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check_claims(&map(no_nonce), &want), Err(ClaimError::Nonce));
    }
}
