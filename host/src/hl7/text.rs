//! Small text helpers: escaping, timestamps and control ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Escapes the standard HL7 delimiters (`|^~\&`) in free text, and turns line
/// breaks and every other control character (MLLP's 0x0B and 0x1C among
/// them) into spaces, so the text stays inside its segment and its frame.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// [`escape`], appending to `out`: runs without delimiters are copied whole.
pub fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        let (plain, tail) = rest.split_at(at);
        out.push_str(plain);
        let mut chars = tail.chars();
        out.push_str(match chars.next() {
            Some('|') => "\\F\\",
            Some('^') => "\\S\\",
            Some('~') => "\\R\\",
            Some('&') => "\\T\\",
            Some('\\') => "\\E\\",
            _ => " ",
        });
        rest = chars.as_str();
    }
    out.push_str(rest);
}

fn needs_escape(c: char) -> bool {
    matches!(c, '|' | '^' | '~' | '&' | '\\') || c.is_control()
}

/// Whether `text` holds a control character (anything below 0x20, DEL, or
/// the C1 controls): such text is never copied into a frame as it is.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (y, m, d) from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
    fn escapes_delimiters() {
        assert_eq!(
            escape("a|b^c~d&e\\f\rg"),
            "a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f g"
        );
        assert_eq!(escape("|é\r\nñ^"), "\\F\\é  ñ\\S\\");
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\u{1c}\r\u{0b}MSH\tb\u{7f}"), "a   MSH b ");
        assert!(has_control("x\u{0b}") && !has_control("é|^"));
        assert_eq!(escape(""), "");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn timestamp_shape() {
        let ts = hl7_timestamp();
        assert_eq!(ts.len(), 19);
        assert!(ts.ends_with("+0000"));
        assert_ne!(new_control_id("X"), new_control_id("X"));
    }
}
