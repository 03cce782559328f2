//! Client tools: `izhub send` (send files, print answers), `izhub bench`
//! (a load generator that checks every answer's MSA-2), and reading batches
//! of message files ([`batch`]).

pub mod batch;
mod bench;
pub mod codes;
pub mod plugin_dev;
pub mod plugin_kit;
mod send;

pub use bench::{
    BenchOptions, BenchResult, answered_deliveries, engine_cpu_seconds, percentile, run_bench,
};
pub use send::{read_message_file, send_files};

/// `GET path` over plain HTTP/1.1 (the engine's admin endpoint): the body of
/// a 200 answer, read within 5 s and at most 16 MiB.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(5);
    let mut stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 5 s"))??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(limit, stream.take(16 << 20).read_to_end(&mut answer))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}{path} did not finish within 5 s"))??;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{addr}{path}: {}", text.lines().next().unwrap_or(""));
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Replaces MSH-10 in a message, keeping everything else byte for byte.
/// Returns None when the message has no readable MSH-10.
pub fn with_control_id(message: &str, control_id: &str) -> Option<String> {
    let (prefix, suffix) = split_at_control_id(message)?;
    Some(format!("{prefix}{control_id}{suffix}"))
}

/// Splits a message around its MSH-10 value: (text before, text after).
pub fn split_at_control_id(message: &str) -> Option<(&str, &str)> {
    let sep = message.strip_prefix("MSH")?.chars().next()?;
    let header_end = message.find(['\r', '\n']).unwrap_or(message.len());
    let header = message.get(..header_end)?;
    // MSH-10 starts after the 9th separator.
    let start = header
        .match_indices(sep)
        .nth(8)
        .map(|(i, _)| i + sep.len_utf8())?;
    let end = header
        .get(start..)?
        .find(sep)
        .map(|i| start + i)
        .unwrap_or(header_end);
    Some((message.get(..start)?, message.get(end..)?))
}

/// Splits text around the first patient identifier (PID-3.1): (text before,
/// the identifier, text after). None when there is no PID-3.1 to vary.
pub fn split_at_patient_id(text: &str) -> Option<(&str, &str, &str)> {
    let sep = text.strip_prefix("MSH")?.chars().next()?;
    let component = text.get(3 + sep.len_utf8()..)?.chars().next()?;
    let pid = text
        .match_indices(['\r', '\n'])
        .map(|(i, _)| i + 1)
        .find(|&i| text.get(i..).is_some_and(|r| r.starts_with("PID")))?;
    let line_end = text
        .get(pid..)?
        .find(['\r', '\n'])
        .map_or(text.len(), |e| pid + e);
    let segment = text.get(pid..line_end)?;
    // PID-3 starts after the third field separator.
    let start = pid
        + segment
            .match_indices(sep)
            .nth(2)
            .map(|(i, _)| i + sep.len_utf8())?;
    let end = text
        .get(start..line_end)?
        .find([sep, component, '~'])
        .map_or(line_end, |e| start + e);
    let id = text.get(start..end)?;
    (!id.is_empty()).then_some((text.get(..start)?, id, text.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_patient_id() {
        let m = "MSH|^~\\&|A|B\rPID|1||123^^^MR~9^^^SS||DOE\rRXA|0";
        assert_eq!(
            split_at_patient_id(m),
            Some(("MSH|^~\\&|A|B\rPID|1||", "123", "^^^MR~9^^^SS||DOE\rRXA|0"))
        );
        assert_eq!(split_at_patient_id("MSH|^~\\&|A\rPID|1||^^^MR"), None);
        assert_eq!(split_at_patient_id("MSH|^~\\&|A\rPID|1"), None);
        assert_eq!(split_at_patient_id("MSH|^~\\&|A\rXPID|1||7"), None);
    }

    #[test]
    fn rewrites_control_id() {
        let m = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|OLD|P|2.5.1\rPID|1";
        assert_eq!(
            with_control_id(m, "NEW").unwrap(),
            "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|NEW|P|2.5.1\rPID|1"
        );
        assert_eq!(with_control_id("MSH|^~\\&|A\rPID", "X"), None);
        assert_eq!(
            with_control_id("MSH|^~\\&|A|B|C|D|2024||VXU|OLD", "X").unwrap(),
            "MSH|^~\\&|A|B|C|D|2024||VXU|X"
        );
    }
}
