//! Character sets: MSH-18 says how the bytes of a message are encoded.

use encoding_rs::Encoding;

/// The character set of one message, from its MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8: the default when MSH-18 is empty, and `UNICODE UTF-8`/`ASCII`.
    Utf8,
    /// A single-byte set decoded with encoding_rs (`8859/1` and friends).
    Legacy(&'static Encoding),
}

/// A message whose bytes do not fit its declared character set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    #[error("MSH-18 names the character set '{0}', which this engine does not support")]
    Unsupported(String),
    #[error(
        "the message is not valid UTF-8 at byte {offset} (MSH-18 is empty or declares UTF-8); \
         declare the character set actually used in MSH-18, e.g. 8859/1"
    )]
    InvalidUtf8 { offset: usize },
}

impl Charset {
    /// Maps an MSH-18 value (HL7 table 0211) to a character set.
    pub fn from_msh18(value: &str) -> Result<Self, CharsetError> {
        let v = value.trim();
        let label = match v.to_ascii_uppercase().as_str() {
            "" | "ASCII" | "UNICODE UTF-8" | "UTF-8" | "UNICODE" => return Ok(Charset::Utf8),
            "8859/1" | "ISO-8859-1" | "ISO IR100" => "iso-8859-1",
            "8859/2" => "iso-8859-2",
            "8859/3" => "iso-8859-3",
            "8859/4" => "iso-8859-4",
            "8859/5" => "iso-8859-5",
            "8859/6" => "iso-8859-6",
            "8859/7" => "iso-8859-7",
            "8859/8" => "iso-8859-8",
            "8859/15" => "iso-8859-15",
            _ => return Err(CharsetError::Unsupported(v.to_string())),
        };
        Encoding::for_label(label.as_bytes())
            .map(Charset::Legacy)
            .ok_or_else(|| CharsetError::Unsupported(v.to_string()))
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Legacy(e) => e.name(),
        }
    }
}

/// Finds MSH-18 in raw bytes without decoding them: the MSH segment is ASCII
/// up to that field in every message we can answer.
pub(crate) fn raw_msh18(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(b"MSH")?;
    let sep = *rest.first()?;
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let segment = bytes.get(..end)?;
    // MSH-1 is the separator itself, so MSH-n is the (n-1)th piece after "MSH".
    segment.split(|&b| b == sep).nth(17)
}

/// Decodes a message's bytes according to its MSH-18.
pub fn decode(bytes: &[u8]) -> Result<(String, Charset), CharsetError> {
    let declared = raw_msh18(bytes).map(|f| String::from_utf8_lossy(f).into_owned());
    // MSH-18 may repeat; the first repetition is the default character set.
    let first = declared
        .as_deref()
        .unwrap_or("")
        .split('~')
        .next()
        .unwrap_or("");
    let charset = Charset::from_msh18(first)?;
    match charset {
        Charset::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => Ok((s.to_string(), charset)),
            Err(e) => Err(CharsetError::InvalidUtf8 {
                offset: e.valid_up_to(),
            }),
        },
        Charset::Legacy(enc) => {
            let (text, _) = enc.decode_without_bom_handling(bytes);
            Ok((text.into_owned(), charset))
        }
    }
}

/// Encodes text for the wire in the given character set; characters the set
/// cannot hold become HL7 numeric references from encoding_rs.
pub fn encode(text: &str, charset: Charset) -> Vec<u8> {
    match charset {
        Charset::Utf8 => text.as_bytes().to_vec(),
        Charset::Legacy(enc) => enc.encode(text).0.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_round_trip() {
        let mut raw =
            b"MSH|^~\\&|A|B|C|D|20240101||VXU^V04^VXU|1|P|2.5.1|||ER|AL||8859/1\rPID|||1||M"
                .to_vec();
        raw.push(0xDC); // U with diaeresis
        raw.extend_from_slice(b"LLER^ANA");
        let (text, cs) = decode(&raw).unwrap();
        assert!(text.contains("MÜLLER"));
        assert_eq!(cs.name(), "windows-1252");
        assert_eq!(encode(&text, cs), raw);
    }

    #[test]
    fn invalid_utf8_is_reported_with_offset() {
        let raw = b"MSH|^~\\&|A\rPID|\xff";
        assert_eq!(decode(raw), Err(CharsetError::InvalidUtf8 { offset: 15 }));
    }

    #[test]
    fn unknown_charset() {
        let raw = b"MSH|^~\\&|A|B|C|D|20240101||VXU^V04^VXU|1|P|2.5.1|||ER|AL||KLINGON\r";
        assert!(matches!(decode(raw), Err(CharsetError::Unsupported(_))));
    }
}
