//! `validate-iz`: CDC IG conformance checks (being written).

use izhub_plugin::{Context, Message, Plugin, Verdict};

/// The plugin.
pub struct ValidateIz;

impl Plugin for ValidateIz {
    fn process(_msg: &mut Message, _ctx: &mut Context) -> Result<Verdict, String> {
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(ValidateIz);
