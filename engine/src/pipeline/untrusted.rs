//! What comes out of a plugin is untrusted input: HL7 text a plugin
//! returns is checked here before it goes anywhere.

use super::header_problem;
use crate::hl7::{self, Msh};

/// Checks HL7 text a plugin returned in place of `previous` before it goes
/// anywhere: it must start with a readable MSH carrying a type and a control
/// id, be well-formed segments, hold no MLLP framing byte (0x0B and 0x1C
/// would split or end the frame at the IIS) or NUL, and no other control
/// byte besides the segment separator that the message did not already hold
/// (a clinic's tab in a note is the clinic's; a plugin may not add one).
pub(super) fn checked_replacement(text: &str, previous: &str) -> Result<Msh, String> {
    let forbidden = |c: char| {
        c.is_control()
            && c != '\r'
            && (matches!(c, '\u{0b}' | '\u{1c}' | '\0') || !previous.contains(c))
    };
    if let Some((at, c)) = text.char_indices().find(|(_, c)| forbidden(*c)) {
        return Err(format!(
            "it holds the control character U+{:04X} at byte {at}",
            c as u32
        ));
    }
    if !text.starts_with("MSH") {
        return Err("it does not start with an MSH segment".into());
    }
    let msh = Msh::read(text).map_err(|e| format!("its MSH cannot be read: {e}"))?;
    if let Some(issue) = header_problem(&msh) {
        return Err(issue.text);
    }
    hl7::check_structure(text)?;
    Ok(msh)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "MSH|^~\\&|EHR|CLINIC|||20240101||VXU^V04^VXU_V04|M1|P|2.5.1\rPID|1||P1";

    #[test]
    fn replaced_text_may_not_add_control_bytes() {
        assert!(checked_replacement(MSG, MSG).is_ok());
        let framed = format!("{MSG}\u{1c}\r\u{0b}{MSG}");
        let why = checked_replacement(&framed, &framed).unwrap_err();
        assert!(why.contains("U+001C"), "{why}");
        let tabbed = format!("{MSG}\rNTE|1||a\tb");
        assert!(
            checked_replacement(&tabbed, MSG)
                .unwrap_err()
                .contains("U+0009")
        );
        // A tab the clinic sent stays acceptable.
        assert!(checked_replacement(&tabbed, &tabbed).is_ok());
        assert!(
            checked_replacement("PID|1", MSG)
                .unwrap_err()
                .contains("MSH")
        );
        let no_id = MSG.replace("|M1|", "||");
        assert!(
            checked_replacement(&no_id, MSG)
                .unwrap_err()
                .contains("MSH-10")
        );
    }
}
