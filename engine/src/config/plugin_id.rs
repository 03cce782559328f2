//! What names a plugin and its publisher in the configuration and in a
//! component's manifest: the plugin's name and version, and a publisher's
//! Ed25519 public key. The configuration checks them; the plugin runtime
//! (`plugin::manifest`, `plugin::signature`) takes them from here.

use std::fmt;
use std::str::FromStr;

/// A publisher's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Its 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for tables: the first 8 bytes in hex.
    pub fn short(&self) -> String {
        hex(self.0.get(..8).unwrap_or_default())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{}' is not a publisher key: write it as ed25519:<64 hex digits> (the .pub file of `izhub plugin keygen`)",
                s.chars().take(80).collect::<String>().escape_debug()
            )
        };
        let digits = s.trim().strip_prefix("ed25519:").ok_or_else(bad)?;
        let bytes = unhex(digits).ok_or_else(bad)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(PublicKey)
            .map_err(|_| bad())
    }
}

/// A plugin name: 1 to 64 lower-case letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a plugin name (1 to 64 lower-case letters, digits, '-' and '_')",
            name.escape_debug()
        ))
    }
}

/// A version: `MAJOR.MINOR.PATCH`, optionally with `-pre` and `+build`
/// made of letters, digits, `.` and `-`; at most 64 characters.
pub fn check_version(version: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "'{}' is not a version like 1.2.0 (MAJOR.MINOR.PATCH[-pre][+build], at most 64 characters)",
            version.escape_debug()
        )
    };
    if version.len() > 64 {
        return Err(bad());
    }
    let (core, rest) = version
        .find(['-', '+'])
        .map_or((version, ""), |i| version.split_at(i));
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
    {
        return Err(bad());
    }
    parse_core(core).map(|_| ()).ok_or_else(bad)
}

/// `MAJOR.MINOR.PATCH` as numbers.
pub(crate) fn parse_core(core: &str) -> Option<(u64, u64, u64)> {
    let mut parts = core.split('.');
    let mut next = || {
        parts
            .next()
            .filter(|p| !p.is_empty() && p.len() <= 18 && p.chars().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
    };
    let v = (next()?, next()?, next()?);
    parts.next().is_none().then_some(v)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect()
}
