//! Small text helpers: escaping, timestamps and control ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use izhub_hl7::{civil_from_days, days_from_civil, escape, escape_into, has_control};

/// A value from outside made fit for metadata and log lines: control
/// characters become spaces, at most `max` characters are kept.
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn utc_parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = dur.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (
        y,
        mo,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        dur.subsec_millis(),
    )
}

/// The current time as an HL7 DTM in UTC: `YYYYMMDDHHMMSS+0000`.
pub fn hl7_timestamp() -> String {
    let (y, mo, d, h, mi, s, _) = utc_parts(SystemTime::now());
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}+0000")
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let (y, mo, d, h, mi, s, ms) = utc_parts(SystemTime::now());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new control id, unique within this process and very likely across
/// restarts: a prefix, the start-up second and a counter.
pub fn new_control_id(prefix: &str) -> String {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{start:x}.{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let ts = hl7_timestamp();
        assert_eq!(ts.len(), 19);
        assert!(ts.ends_with("+0000"));
        assert_ne!(new_control_id("X"), new_control_id("X"));
    }
}
