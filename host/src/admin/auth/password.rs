//! Passwords (Argon2id) and tokens (SHA-256 of 32 random bytes).

use super::*;

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash checked when the user name is unknown, so that an unknown name
/// takes as long to refuse as a wrong password.
pub(super) fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        let _ = SystemRandom::new().fill(&mut secret);
        hash_password(&hex(&secret)).unwrap_or_default()
    })
}

/// Hashes a password with argon2id (default parameters) and a random salt
/// from the operating system; returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the operating system gave no random bytes".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `phc` (compared by the
/// argon2 crate in constant time).
pub fn verify_password(phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A new random bearer token (32 bytes, hex) and its SHA-256 in hex, as
/// `token_sha256` and `metrics_token_sha256` take it.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the operating system gave no random bytes".to_string())?;
    let token = hex(&bytes);
    let digest = hex(&sha256(token.as_bytes()));
    Ok((token, digest))
}
