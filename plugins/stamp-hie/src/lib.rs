//! `stamp-hie`: marks a message as passing through the HIE. When MSH-22
//! (responsible sending organization) is empty it is filled with the HIE's
//! organization from the config key `organization`; the original sending
//! facility (MSH-4) is recorded in the attribute `original-sender`.

use izhub_plugin::{Context, Message, Plugin, Verdict};

/// The plugin.
pub struct StampHie;

impl Plugin for StampHie {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        ctx.set_attribute("original-sender", msg.get("MSH-4"));
        let organization = ctx.config("organization").unwrap_or_default();
        if !organization.is_empty() && msg.get("MSH-22").is_empty() {
            msg.set("MSH-22", &organization)?;
        }
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(StampHie);

#[cfg(test)]
mod tests {
    use super::*;
    use izhub_plugin::testing::TestHost;

    #[test]
    fn fills_empty_msh22_and_keeps_the_rest() {
        let vxu = "MSH|^~\\&|EHR|CLINIC^1.2^ISO|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1\r";
        let out = TestHost::new()
            .config("organization", "Demo HIE^^^^^^^^^HIE01")
            .run::<StampHie>(vxu)
            .unwrap();
        assert_eq!(out.verdict, Verdict::Continue);
        assert_eq!(
            out.hl7.as_deref(),
            Some(
                "MSH|^~\\&|EHR|CLINIC^1.2^ISO|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1||||||||||Demo HIE^^^^^^^^^HIE01\rPID|1\r"
            )
        );
        assert_eq!(
            out.attributes,
            vec![("original-sender".to_string(), "CLINIC^1.2^ISO".to_string())]
        );
    }

    #[test]
    fn leaves_a_filled_msh22_alone() {
        let vxu =
            "MSH|^~\\&|EHR|CLINIC|IIS|WA|2024||VXU^V04^VXU|1|P|2.5.1||||||||||Other Org\rPID|1\r";
        let out = TestHost::new()
            .config("organization", "Demo HIE")
            .run::<StampHie>(vxu)
            .unwrap();
        assert_eq!(out.hl7, None);
    }
}
