//! A tolerant reader for the MSH segment: enough to route and to answer a
//! message even when the rest of it is broken.

/// Why a message's header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MshError {
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 (field separator and encoding characters) are missing or malformed")]
    BadEncodingCharacters,
}

/// The header fields of one message.
#[derive(Debug, Clone)]
pub struct Msh {
    field_sep: char,
    component_sep: char,
    /// Pieces of the MSH segment split on the field separator; piece k is MSH-(k+1).
    pieces: Vec<String>,
}

/// Turns LF and CRLF segment separators into CR, as HL7 requires (many
/// senders and files use newlines), and drops empty segments.
pub fn normalize_segments(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\n') && !text.contains("\r\r") && !text.starts_with('\r') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 1);
    for segment in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
        out.push_str(segment);
        out.push('\r');
    }
    if !text.ends_with(['\r', '\n']) {
        out.pop();
    }
    std::borrow::Cow::Owned(out)
}

/// Where a message's fields and segments are, for plugins that take it
/// instead of scanning the text themselves: the byte offset of every field
/// separator (MSH-1) and every carriage return, in order. `None` when the
/// text has no MSH, its field separator is not one ASCII byte, it has line
/// feeds, or it is too long for 32-bit offsets.
pub fn layout(text: &str) -> Option<Vec<u32>> {
    let bytes = text.as_bytes();
    let sep = *bytes.get(3)?;
    if !bytes.starts_with(b"MSH")
        || !sep.is_ascii()
        || sep == b'\r'
        || sep == b'\n'
        || u32::try_from(bytes.len()).is_err()
        || memchr::memchr(b'\n', bytes).is_some()
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 8);
    out.extend(memchr::memchr2_iter(sep, b'\r', bytes).filter_map(|at| u32::try_from(at).ok()));
    Some(out)
}

/// The first component of the first repetition of `SEG-n` in the first such
/// segment (standard delimiters), e.g. PID-3.1; empty when absent.
pub fn first_value<'a>(text: &'a str, seg: &str, n: usize) -> &'a str {
    text.split('\r')
        .find(|s| s.strip_prefix(seg).is_some_and(|r| r.starts_with('|')))
        .and_then(|s| s.split('|').nth(n))
        .and_then(|f| f.split('~').next())
        .and_then(|r| r.split('^').next())
        .unwrap_or("")
}

/// Checks that the whole message is well-formed HL7 v2: an MSH segment
/// `hl7-parser` accepts, then segments that each start with a
/// three-character name and the field separator. The error names the first
/// segment that does not. (One pass over the segment starts: the fields are
/// read later, by whoever needs them.)
pub fn check_structure(text: &str) -> Result<(), String> {
    let body = text.trim_end_matches('\r');
    let mut segments = body.split('\r');
    let msh = segments.next().unwrap_or("");
    // Whether `hl7-parser` accepts an MSH segment depends only on its first
    // eight bytes (name, delimiters): parse those, and the whole segment
    // only to word the error.
    let (separators, _) = msh
        .get(..8)
        .and_then(|head| hl7_parser::parser::parse_msh(head).ok())
        .map_or_else(|| hl7_parser::parser::parse_msh(msh), Ok)
        .map_err(|e| format!("the message is not well-formed HL7 v2: {e}"))?;
    for (i, segment) in segments.enumerate() {
        let mut chars = segment.chars();
        let named = chars
            .by_ref()
            .take(3)
            .filter(|c| c.is_alphanumeric())
            .count()
            == 3;
        if named && chars.next() == Some(separators.field) {
            continue;
        }
        let head: String = segment.chars().take(12).collect();
        return Err(format!(
            "segment {} ('{head}…') is not a well-formed HL7 segment: it must start with a \
             three-character segment name followed by the field separator",
            i + 2
        ));
    }
    Ok(())
}

impl Msh {
    /// Reads the MSH segment at the start of `message`.
    pub fn read(message: &str) -> Result<Self, MshError> {
        let rest = message.trim_start_matches(['\r', '\n', ' ']);
        let rest = rest.strip_prefix("MSH").ok_or(MshError::NoMsh)?;
        let mut chars = rest.chars();
        let field_sep = chars.next().ok_or(MshError::BadEncodingCharacters)?;
        let component_sep = chars.next().ok_or(MshError::BadEncodingCharacters)?;
        if field_sep.is_alphanumeric()
            || field_sep.is_whitespace()
            || component_sep == field_sep
            || component_sep.is_alphanumeric()
            || component_sep.is_whitespace()
        {
            return Err(MshError::BadEncodingCharacters);
        }
        let segment = rest.split(['\r', '\n']).next().unwrap_or("");
        let mut pieces = vec!["MSH".to_string()];
        // `segment` starts with the field separator, so the first split piece is empty.
        pieces.extend(segment.split(field_sep).skip(1).map(str::to_string));
        Ok(Msh {
            field_sep,
            component_sep,
            pieces,
        })
    }

    /// MSH-n as raw text (`""` when absent). MSH-1 is the field separator.
    pub fn field(&self, n: usize) -> &str {
        match n {
            0 => "",
            1 => "",
            n => self.pieces.get(n - 1).map(String::as_str).unwrap_or(""),
        }
    }

    /// Component `c` (1-based) of MSH-n.
    pub fn component(&self, n: usize, c: usize) -> &str {
        if c == 0 {
            return "";
        }
        self.field(n)
            .split(self.component_sep)
            .nth(c - 1)
            .unwrap_or("")
    }

    /// The field separator (MSH-1).
    pub fn field_separator(&self) -> char {
        self.field_sep
    }

    /// MSH-3 sending application (whole field).
    pub fn sending_application(&self) -> &str {
        self.field(3)
    }
    /// MSH-4 sending facility (whole field).
    pub fn sending_facility(&self) -> &str {
        self.field(4)
    }
    /// MSH-5 receiving application (whole field).
    pub fn receiving_application(&self) -> &str {
        self.field(5)
    }
    /// MSH-6 receiving facility (whole field).
    pub fn receiving_facility(&self) -> &str {
        self.field(6)
    }
    /// MSH-9.1 message code, e.g. `VXU`.
    pub fn message_code(&self) -> &str {
        self.component(9, 1)
    }
    /// MSH-9.2 trigger event, e.g. `V04`.
    pub fn trigger(&self) -> &str {
        self.component(9, 2)
    }
    /// MSH-10 message control id.
    pub fn control_id(&self) -> &str {
        self.field(10)
    }
    /// MSH-11.1 processing id (P, T, D).
    pub fn processing_id(&self) -> &str {
        self.component(11, 1)
    }
    /// MSH-12.1 version id.
    pub fn version(&self) -> &str {
        self.component(12, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VXU: &str =
        "MSH|^~\\&|EHR|CLINIC^1.2.3^ISO|IIS|WA|20240101||VXU^V04^VXU|ABC123|P|2.5.1|||ER|AL\rPID|1";

    #[test]
    fn reads_fields_and_components() {
        let msh = Msh::read(VXU).unwrap();
        assert_eq!(msh.field(2), "^~\\&");
        assert_eq!(msh.sending_application(), "EHR");
        assert_eq!(msh.component(4, 1), "CLINIC");
        assert_eq!(msh.component(4, 2), "1.2.3");
        assert_eq!(msh.message_code(), "VXU");
        assert_eq!(msh.trigger(), "V04");
        assert_eq!(msh.control_id(), "ABC123");
        assert_eq!(msh.version(), "2.5.1");
        assert_eq!(msh.field(40), "");
        assert_eq!(msh.component(9, 0), "");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Msh::read("PID|1").unwrap_err(), MshError::NoMsh);
        assert_eq!(Msh::read("").unwrap_err(), MshError::NoMsh);
        assert_eq!(
            Msh::read("MSH").unwrap_err(),
            MshError::BadEncodingCharacters
        );
        assert_eq!(
            Msh::read("MSHAB").unwrap_err(),
            MshError::BadEncodingCharacters
        );
    }

    #[test]
    fn normalizes_newlines() {
        assert_eq!(normalize_segments("A\r\nB\nC\r"), "A\rB\rC\r");
        assert_eq!(normalize_segments("A\r\rB"), "A\rB");
        assert_eq!(normalize_segments("A\rB\r"), "A\rB\r");
    }

    #[test]
    fn structure_check_names_the_bad_segment() {
        assert_eq!(check_structure(VXU), Ok(()));
        let bad = format!("{VXU}\r!!|oops\rRXA|1");
        let err = check_structure(&bad).unwrap_err();
        assert!(err.starts_with("segment 3 ('!!|oops"), "{err}");
        // A name without the field separator, an empty segment, a short one.
        for (bad, n) in [("PID", 2), ("PID|1\r\rRXA|1", 3), ("PID|1\rZ|", 3)] {
            let text = format!("MSH|^~\\&|A|B\r{bad}");
            let err = check_structure(&text).unwrap_err();
            assert!(err.starts_with(&format!("segment {n} ")), "{text:?}: {err}");
        }
        assert!(check_structure("MSH|^~\\&|A|B\rZX1|a|b\r").is_ok());
        assert!(check_structure("PID|1").is_err());
        // Names outside ASCII are read as characters; a bad MSH is named.
        assert!(check_structure("MSH|^~\\&|A\rZÉ1|a\r").is_ok());
        assert!(check_structure("MSH|^~\\&|A\rZÉ|a\r").is_err());
        assert!(
            check_structure("MSH")
                .unwrap_err()
                .contains("not well-formed")
        );
    }
}
