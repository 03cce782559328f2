//! What comes out of a plugin is untrusted input: HL7 text a plugin
//! returns is checked here before it goes anywhere.

use super::header_problem;
use crate::hl7::{self, Msh};

/// Checks HL7 text a plugin returned before it goes anywhere: it must start
/// with a readable MSH carrying a type and a control id, be well-formed
/// segments, and hold no control bytes besides the segment separator (MLLP's
/// 0x0B and 0x1C would split or end the frame at the IIS).
pub(super) fn checked_replacement(text: &str) -> Result<Msh, String> {
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && *c != '\r')
    {
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
