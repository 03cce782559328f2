//! One message as the engine received it, read once: its bytes, its text
//! decoded with its MSH-18, its header, and when it arrived. Everything
//! after the listener reads this one value.

use super::charset::{Charset, CharsetError, decode};
use super::msh::{Msh, MshError, normalize_segments};

/// A received message.
#[derive(Debug)]
pub struct Inbound<'a> {
    /// The bytes as they came (inside the MLLP frame or SOAP body).
    pub raw: &'a [u8],
    /// The text, decoded and with CR segment separators.
    pub text: String,
    /// Its header.
    pub msh: Msh,
    /// The character set its bytes are in (and its answer goes back in).
    pub charset: Charset,
    /// When it arrived (RFC 3339, for plugins).
    pub received_at: String,
}

/// Why a frame cannot be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The bytes do not fit the character set MSH-18 names.
    #[error(transparent)]
    Charset(#[from] CharsetError),
    /// There is no readable MSH.
    #[error(transparent)]
    Msh(#[from] MshError),
}

impl<'a> Inbound<'a> {
    /// Reads a frame: decodes it, normalizes its segment separators and
    /// reads its MSH.
    pub fn read(raw: &'a [u8]) -> Result<Self, InboundError> {
        let (text, charset) = decode(raw)?;
        let text = match normalize_segments(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(t) => t,
        };
        let msh = Msh::read(&text)?;
        Ok(Inbound {
            raw,
            text,
            msh,
            charset,
            received_at: super::rfc3339_now(),
        })
    }
}
