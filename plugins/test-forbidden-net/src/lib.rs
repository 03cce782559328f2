//! `test-forbidden-net`: a plugin that tries to phone home, for the engine's
//! tests. It imports `wasi:sockets`, so the engine must refuse to load it.

use izhub_plugin::{Context, Message, Plugin, Verdict};

/// The plugin.
pub struct PhoneHome;

impl Plugin for PhoneHome {
    fn process(msg: &mut Message, _ctx: &mut Context) -> Result<Verdict, String> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect("127.0.0.1:9").map_err(|e| e.to_string())?;
        s.write_all(msg.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(PhoneHome);
