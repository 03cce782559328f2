//! `izhub send FILE… --to ADDR`: sends each file as one message and prints the answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hl7;
use crate::mllp::{DEFAULT_MAX_FRAME, MllpClient};

/// Reads a message file, turning LF/CRLF line ends into HL7's CR.
pub fn read_message_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 1;
            }
            b'\n' => out.push(b'\r'),
            b => out.push(b),
        }
        i += 1;
    }
    while out.last() == Some(&b'\r') {
        out.pop();
    }
    out.push(b'\r');
    if !out.starts_with(b"MSH") {
        anyhow::bail!("{}: does not start with an MSH segment", path.display());
    }
    Ok(out)
}

/// Sends each file over one connection and prints each answer. Returns the
/// number of files that got no answer.
pub async fn send_files(
    files: &[PathBuf],
    to: &str,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<usize> {
    let mut client = MllpClient::connect(to, timeout, DEFAULT_MAX_FRAME).await?;
    let mut failed = 0;
    for file in files {
        let message = match read_message_file(file) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        let sent_id = hl7::Msh::read(&String::from_utf8_lossy(&message))
            .map(|m| m.control_id().to_string())
            .unwrap_or_default();
        let answer = match client.exchange(&message, timeout).await {
            Ok(a) => a,
            Err(e) => {
                println!("== {}: no answer: {e}", file.display());
                failed += 1;
                client = MllpClient::connect(to, timeout, DEFAULT_MAX_FRAME).await?;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&answer);
        let (code, acked) = hl7::read_msa(&text).unwrap_or_default();
        let check = if acked == sent_id {
            "MSA-2 matches"
        } else {
            "MSA-2 does NOT match MSH-10"
        };
        println!("== {}: {code} ({check})", file.display());
        if !quiet {
            for seg in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
                println!("   {seg}");
            }
        }
    }
    Ok(failed)
}
