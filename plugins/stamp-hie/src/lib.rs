//! `stamp-hie`: marks a message as passing through the HIE. When MSH-22
//! (responsible sending organization) is empty it is filled with the HIE's
//! organization from the config key `organization`; the original sending
//! facility (MSH-4) is recorded in the attribute `original-sender`.

use izhub_plugin as hl7;

/// Generated bindings for the `izhub:plugin` world.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });
}

use bindings::izhub::plugin::host;
use bindings::izhub::plugin::types::Verdict;

/// The stamped message (None when nothing changed) and the original sender.
pub fn stamp(text: &str, organization: &str) -> Result<(Option<String>, String), String> {
    let msg = hl7::parse(text)?;
    let sender = hl7::value(&msg, "MSH", 1, 4, 0).to_string();
    if organization.is_empty() || !hl7::value(&msg, "MSH", 1, 22, 0).is_empty() {
        return Ok((None, sender));
    }
    let stamped =
        hl7::set_msh_field(text, 22, organization).ok_or("the message has no MSH segment")?;
    Ok((Some(stamped), sender))
}

struct Plugin;

impl bindings::Guest for Plugin {
    fn process(msg: bindings::Envelope) -> Result<bindings::Outcome, String> {
        let organization = host::config("organization").unwrap_or_default();
        let (text, sender) = stamp(&msg.hl7, &organization)?;
        Ok(bindings::Outcome {
            verdict: Verdict::Continue(text),
            issues: Vec::new(),
            attributes: vec![("original-sender".to_string(), sender)],
        })
    }
}

bindings::export!(Plugin with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_empty_msh22_and_keeps_the_rest() {
        let vxu = "MSH|^~\\&|EHR|CLINIC^1.2^ISO|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1\r";
        let (text, sender) = stamp(vxu, "Demo HIE^^^^^^^^^HIE01").unwrap();
        let text = text.unwrap();
        assert_eq!(sender, "CLINIC^1.2^ISO");
        assert!(text.starts_with("MSH|^~\\&|EHR|CLINIC^1.2^ISO|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1||||||||||Demo HIE^^^^^^^^^HIE01\r"));
        assert!(text.ends_with("\rPID|1\r"));
    }

    #[test]
    fn leaves_a_filled_msh22_alone() {
        let vxu =
            "MSH|^~\\&|EHR|CLINIC|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1||||||||||Other Org\rPID|1\r";
        assert_eq!(
            stamp(vxu, "Demo HIE").unwrap(),
            (None, "CLINIC".to_string())
        );
    }
}
