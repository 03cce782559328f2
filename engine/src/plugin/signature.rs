//! Publisher signatures on components (Ed25519, with ring).
//!
//! `izhub plugin sign` appends a custom section `izhub-signature` as the
//! component's last section. It signs the SHA-256 of every byte before that
//! section (domain-separated), so the signature travels inside the one file
//! that is deployed and hot-reloaded, and no other byte can change, be added
//! or be removed without the check failing. The signer's public key is in
//! the section; whether that key is trusted is the configuration's
//! `trusted_publishers`.
//!
//! Secret keys are PKCS#8 PEM files (`izhub plugin keygen` writes one, 0600;
//! `openssl genpkey -algorithm ed25519` makes one too). Their bytes are never
//! printed or logged; public keys are written `ed25519:<64 hex digits>`.

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{ComponentError, SIGNATURE_SECTION, rewrite, sections};
pub use crate::config::plugin_id::PublicKey;
use crate::config::plugin_id::{hex, unhex};

/// What is signed: this context, then the SHA-256 of the signed bytes.
const CONTEXT: &[u8] = b"izhub plugin signature v1\0";
/// Largest signature section.
const MAX_SIGNATURE_BYTES: usize = 4096;
/// Largest secret key file.
pub const MAX_KEY_FILE: u64 = 16 << 10;

/// Why a component's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("is not signed (sign it with `izhub plugin sign --key KEY FILE`)")]
    Unsigned,
    #[error("{0}")]
    Component(#[from] ComponentError),
    #[error("has an unreadable signature section: {0}")]
    Malformed(String),
    #[error(
        "has a signature that does not match its bytes: it was changed after it was signed (or signed for another file)"
    )]
    Mismatch,
    #[error("is signed by {key}, which is not among the trusted publishers ({trusted})")]
    Untrusted { key: PublicKey, trusted: String },
}

/// A signing key, read from a PKCS#8 PEM file. Its bytes never leave it.
pub struct SigningKey(Ed25519KeyPair);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// A new random key: (its PKCS#8 PEM text, the key).
    pub fn generate() -> Result<(String, SigningKey), String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "the system's random source failed".to_string())?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref()));
        let key = SigningKey::from_pem(&pem)?;
        Ok((pem, key))
    }

    /// Reads a PKCS#8 PEM Ed25519 key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let block = pem::parse(text).map_err(|e| format!("not a PEM file ({e})"))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(format!(
                "a PEM '{}' block, where a PKCS#8 'PRIVATE KEY' (Ed25519) was expected",
                block.tag().escape_debug()
            ));
        }
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents())
            .map(SigningKey)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key ({e})"))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        let pk = self.0.public_key().as_ref();
        if pk.len() == 32 {
            key.copy_from_slice(pk);
        }
        PublicKey::from_bytes(key)
    }
}

/// The signature section's JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureSection {
    /// `ed25519`.
    algorithm: String,
    /// `ed25519:<hex>`.
    key: String,
    /// The signature, hex.
    signature: String,
}

/// The message signed for `content`.
fn message(content: &[u8]) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(&Sha256::digest(content));
    m
}

/// `bytes` signed by `key`: any earlier signature is replaced.
pub fn sign(bytes: &[u8], key: &SigningKey) -> Result<Vec<u8>, ComponentError> {
    let content = rewrite(bytes, &[SIGNATURE_SECTION], &[])?;
    let sig = key.0.sign(&message(&content));
    let section = SignatureSection {
        algorithm: "ed25519".into(),
        key: key.public().to_string(),
        signature: hex(sig.as_ref()),
    };
    let json =
        serde_json::to_vec(&section).map_err(|e| ComponentError::Malformed(e.to_string()))?;
    rewrite(&content, &[], &[(SIGNATURE_SECTION, &json)])
}

/// Who signed `bytes`, checked: the key in the signature section, once the
/// signature is verified over every byte before it.
pub fn signer(bytes: &[u8]) -> Result<PublicKey, SignatureError> {
    let sections = sections(bytes)?;
    let signed: Vec<_> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.custom.is_some_and(|(n, _)| n == SIGNATURE_SECTION))
        .collect();
    let (index, section) = match signed.as_slice() {
        [] => return Err(SignatureError::Unsigned),
        [one] => *one,
        more => {
            return Err(ComponentError::Repeated {
                section: SIGNATURE_SECTION,
                count: more.len(),
            }
            .into());
        }
    };
    if index + 1 != sections.len() {
        return Err(ComponentError::SignatureNotLast.into());
    }
    let data = section.custom.map(|(_, d)| d).unwrap_or_default();
    if data.len() > MAX_SIGNATURE_BYTES {
        return Err(SignatureError::Malformed(format!(
            "{} bytes, more than {MAX_SIGNATURE_BYTES}",
            data.len()
        )));
    }
    let parsed: SignatureSection =
        serde_json::from_slice(data).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    if parsed.algorithm != "ed25519" {
        return Err(SignatureError::Malformed(format!(
            "algorithm '{}' is not supported (ed25519)",
            parsed.algorithm.escape_debug()
        )));
    }
    let key: PublicKey = parsed.key.parse().map_err(SignatureError::Malformed)?;
    let sig = unhex(&parsed.signature)
        .filter(|s| s.len() == 64)
        .ok_or_else(|| SignatureError::Malformed("the signature is not 64 bytes of hex".into()))?;
    let content = bytes.get(..section.range.start).unwrap_or_default();
    UnparsedPublicKey::new(&ED25519, key.bytes())
        .verify(&message(content), &sig)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(key)
}

/// Checks that `bytes` are signed by one of `trusted`; returns the signer.
pub fn verify(bytes: &[u8], trusted: &[PublicKey]) -> Result<PublicKey, SignatureError> {
    let key = signer(bytes)?;
    if trusted.contains(&key) {
        Ok(key)
    } else {
        Err(SignatureError::Untrusted {
            key,
            trusted: trusted
                .iter()
                .map(|k| format!("ed25519:{}…", k.short()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::plugin::manifest::Manifest;

    const EMPTY: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn a_signed_component_verifies_and_a_changed_byte_does_not() {
        let (pem, key) = SigningKey::generate().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.public(), key.public());
        assert!(!format!("{key:?}").contains(&pem));

        let component = Manifest::new("a", "1.0.0").write_into(&EMPTY).unwrap();
        assert_eq!(signer(&component), Err(SignatureError::Unsigned));
        let signed = sign(&component, &key).unwrap();
        assert_eq!(verify(&signed, &[key.public()]), Ok(key.public()));
        // Signing again replaces the signature.
        let resigned = sign(&signed, &key).unwrap();
        assert_eq!(resigned.len(), signed.len());
        assert_eq!(signer(&resigned), Ok(key.public()));
        // Another key is not trusted.
        let (_, other) = SigningKey::generate().unwrap();
        assert!(matches!(
            verify(&signed, &[other.public()]),
            Err(SignatureError::Untrusted { .. })
        ));
        // Every byte before the signature counts (the manifest's JSON here).
        let at = signed.windows(5).position(|w| w == b"1.0.0").unwrap();
        let mut tampered = signed.clone();
        tampered[at] = b'9';
        assert_eq!(signer(&tampered), Err(SignatureError::Mismatch));
        // Bytes after the signature are refused.
        let appended = rewrite(&signed, &[], &[("extra", b"x")]).unwrap();
        assert!(matches!(
            signer(&appended),
            Err(SignatureError::Component(ComponentError::SignatureNotLast))
        ));
    }

    #[test]
    fn public_keys_parse_strictly() {
        let (_, key) = SigningKey::generate().unwrap();
        let text = key.public().to_string();
        assert_eq!(text.parse::<PublicKey>(), Ok(key.public()));
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            &text[8..],
            &text[..text.len() - 2],
            &format!("{text}00"),
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
        assert!(SigningKey::from_pem("not a key").is_err());
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(
            SigningKey::from_pem(&cert)
                .unwrap_err()
                .contains("CERTIFICATE")
        );
    }
}
