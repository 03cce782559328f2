//! Client tools: `izhub send` (send files, print answers) and `izhub bench`
//! (a load generator that checks every answer's MSA-2).

mod bench;
pub mod codes;
pub mod plugin_dev;
mod send;

pub use bench::{BenchOptions, BenchResult, run_bench};
pub use send::{read_message_file, send_files};

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

#[cfg(test)]
mod tests {
    use super::*;

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
