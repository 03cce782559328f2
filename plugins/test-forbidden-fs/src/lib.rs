//! `test-forbidden-fs`: a plugin that tries to read a file, for the engine's
//! tests. It imports `wasi:filesystem`, so the engine must refuse to load it.

use izhub_plugin::{Context, Message, Plugin, Verdict};

/// The plugin.
pub struct ReadsFiles;

impl Plugin for ReadsFiles {
    fn process(msg: &mut Message, _ctx: &mut Context) -> Result<Verdict, String> {
        let secret = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        msg.set("NTE-3", &secret)?;
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(ReadsFiles);
