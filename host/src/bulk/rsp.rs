//! Reading an RSP^K11 answer: its segments, fields, repetitions and
//! components with the HL7 escapes undone, and HL7 dates turned into FHIR
//! ones. The structure is parsed by `hl7-parser`; this module only narrows it
//! to what the FHIR mapping asks, and never indexes past what is there.

use hl7_parser::Message;
use hl7_parser::message::{Field, Repeat, Segment, Separators};

/// The largest answer read (16 MiB): a larger one is refused, not parsed.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Parses an answer whose segment separators are already CR (see
/// [`crate::hl7::normalize_segments`]).
pub fn parse(text: &str) -> Result<Message<'_>, String> {
    if text.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "the answer is {} bytes, over the {MAX_ANSWER_BYTES}-byte limit",
            text.len()
        ));
    }
    Message::parse(text.trim_end_matches('\r'))
        .map_err(|e| format!("the answer is not well-formed HL7 v2: {e}"))
}

/// The first message of an answer wrapped in a batch (FHS/BHS … BTS/FTS),
/// as some registries send even one answer; any other text as it is.
pub fn unwrap_batch(text: &str) -> std::borrow::Cow<'_, str> {
    let is = |seg: &str, name: &str| seg.get(..3) == Some(name);
    let first = text
        .split('\r')
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    if !is(first, "FHS") && !is(first, "BHS") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::new();
    for seg in text.split('\r') {
        if is(seg, "MSH") && !out.is_empty() {
            break;
        }
        if is(seg, "MSH") || !out.is_empty() {
            if ["FHS", "BHS", "BTS", "FTS"].iter().any(|n| is(seg, n)) {
                break;
            }
            out.push(seg);
        }
    }
    std::borrow::Cow::Owned(out.join("\r"))
}

/// One segment and the separators to decode its values with.
#[derive(Clone, Copy)]
pub struct Seg<'a> {
    seg: &'a Segment<'a>,
    sep: &'a Separators,
}

/// One repetition of a field.
#[derive(Clone, Copy)]
pub struct Rep<'a> {
    rep: &'a Repeat<'a>,
    sep: &'a Separators,
}

/// Every segment of a message, in order.
pub fn segments<'a>(msg: &'a Message<'a>) -> impl Iterator<Item = Seg<'a>> + 'a {
    msg.segments.iter().map(move |seg| Seg {
        seg,
        sep: &msg.separators,
    })
}

/// Turns decoded text into a value for FHIR: control characters (a decoded
/// `\X0D\` among them) become spaces, and the ends are trimmed.
fn clean(decoded: String) -> String {
    let cleaned = if decoded.chars().any(char::is_control) {
        decoded
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        decoded
    };
    cleaned.trim().to_string()
}

impl<'a> Seg<'a> {
    /// The segment name (`PID`, `RXA` …).
    pub fn name(&self) -> &'a str {
        self.seg.name
    }

    fn field(&self, n: usize) -> Option<&'a Field<'a>> {
        if n == 0 {
            return None;
        }
        self.seg.field(n)
    }

    /// Field `n` as sent, escapes and all (`""` when absent).
    pub fn raw(&self, n: usize) -> &'a str {
        self.field(n).map_or("", |f| f.raw_value())
    }

    /// Component `c` of the first repetition of field `n`, decoded and trimmed.
    pub fn text(&self, n: usize, c: usize) -> String {
        self.rep(n).map_or_else(String::new, |r| r.c(c))
    }

    /// The first repetition of field `n`.
    pub fn rep(&self, n: usize) -> Option<Rep<'a>> {
        self.field(n)
            .and_then(|f| f.repeats.first())
            .map(|rep| Rep { rep, sep: self.sep })
    }

    /// Every non-empty repetition of field `n`.
    pub fn reps(&self, n: usize) -> Vec<Rep<'a>> {
        self.field(n).map_or_else(Vec::new, |f| {
            f.repeats
                .iter()
                .filter(|r| !r.raw_value().trim().is_empty())
                .map(|rep| Rep { rep, sep: self.sep })
                .collect()
        })
    }
}

impl Rep<'_> {
    /// Component `c` (1-based), decoded and trimmed; `""` when absent.
    pub fn c(&self, c: usize) -> String {
        if c == 0 {
            return String::new();
        }
        self.rep.component(c).map_or_else(String::new, |comp| {
            clean(comp.display(self.sep).to_string())
        })
    }

    /// Subcomponent `s` of component `c`, decoded and trimmed.
    pub fn s(&self, c: usize, s: usize) -> String {
        if c == 0 || s == 0 {
            return String::new();
        }
        self.rep
            .component(c)
            .and_then(|comp| comp.subcomponent(s))
            .map_or_else(String::new, |sub| clean(sub.display(self.sep).to_string()))
    }
}

/// An HL7 date that is not a valid DT/DTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidDate;

/// Whether `y-m-d` is a day of the Gregorian calendar.
pub fn valid_ymd(y: u32, m: u32, d: u32) -> bool {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d) && y >= 1
}

fn num(digits: &str, from: usize, len: usize) -> Option<u32> {
    digits.get(from..from + len).and_then(|s| s.parse().ok())
}

/// An HL7 DTM/DT read into its parts, or `None` when it is not one.
struct Dtm {
    digits: String,
    fraction: String,
    offset: Option<(char, u32, u32)>,
}

fn read_dtm(text: &str) -> Option<Dtm> {
    let text = text.trim();
    let (body, offset) = match text
        .char_indices()
        .find(|&(i, c)| i > 0 && (c == '+' || c == '-'))
    {
        Some((at, sign)) => {
            let off = text.get(at + 1..)?;
            if off.len() != 4 || !off.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (h, m) = (num(off, 0, 2)?, num(off, 2, 2)?);
            if h > 14 || m > 59 {
                return None;
            }
            (text.get(..at)?, Some((sign, h, m)))
        }
        None => (text, None),
    };
    let (digits, fraction) = body.split_once('.').unwrap_or((body, ""));
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
        || (!fraction.is_empty() && digits.len() != 14)
        || ![4, 6, 8, 10, 12, 14].contains(&digits.len())
    {
        return None;
    }
    let month = num(digits, 4, 2).unwrap_or(1);
    let day = num(digits, 6, 2).unwrap_or(1);
    if !valid_ymd(num(digits, 0, 4)?, month, day)
        || num(digits, 8, 2).unwrap_or(0) > 23
        || num(digits, 10, 2).unwrap_or(0) > 59
        || num(digits, 12, 2).unwrap_or(0) > 59
    {
        return None;
    }
    Some(Dtm {
        digits: digits.to_string(),
        fraction: fraction.to_string(),
        offset,
    })
}

fn date_part(d: &str) -> String {
    let mut out = d.get(..4).unwrap_or("").to_string();
    for at in [4, 6] {
        if let Some(two) = d.get(at..at + 2) {
            out.push('-');
            out.push_str(two);
        }
    }
    out
}

/// An HL7 DT/DTM as a FHIR `date` at the precision given (`YYYY`,
/// `YYYY-MM`, `YYYY-MM-DD`): `Ok(None)` when empty, `Err` when invalid.
pub fn to_date(text: &str) -> Result<Option<String>, InvalidDate> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let dtm = read_dtm(text).ok_or(InvalidDate)?;
    Ok(Some(date_part(dtm.digits.get(..8).unwrap_or(&dtm.digits))))
}

/// An HL7 DTM as a FHIR `dateTime` at the precision given. FHIR wants a
/// time zone with any time, so a time without an offset is given as its
/// date only. `Ok(None)` when empty, `Err` when invalid.
pub fn to_datetime(text: &str) -> Result<Option<String>, InvalidDate> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let dtm = read_dtm(text).ok_or(InvalidDate)?;
    let d = &dtm.digits;
    let Some((sign, oh, om)) = dtm.offset.filter(|_| d.len() >= 10) else {
        return Ok(Some(date_part(d.get(..8).unwrap_or(d))));
    };
    let mut out = date_part(d);
    let two = |at: usize| d.get(at..at + 2).unwrap_or("00").to_string();
    out.push_str(&format!("T{}:{}:{}", two(8), two(10), two(12)));
    if !dtm.fraction.is_empty() {
        out.push('.');
        out.push_str(&dtm.fraction);
    }
    out.push_str(&format!("{sign}{oh:02}:{om:02}"));
    Ok(Some(out))
}

/// The first eight digits of an HL7 date (`YYYYMMDD`), for comparing dates.
pub fn day_key(text: &str) -> Option<&str> {
    text.trim()
        .get(..8)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_their_precision() {
        assert_eq!(to_date("2009"), Ok(Some("2009".into())));
        assert_eq!(to_date("200902"), Ok(Some("2009-02".into())));
        assert_eq!(to_date("20090214"), Ok(Some("2009-02-14".into())));
        assert_eq!(
            to_date("20090214101500-0500"),
            Ok(Some("2009-02-14".into()))
        );
        assert_eq!(to_date(""), Ok(None));
        assert_eq!(to_date("20090230"), Err(InvalidDate));
        assert_eq!(to_date("2009021"), Err(InvalidDate));
        assert_eq!(to_date("abcd"), Err(InvalidDate));
        assert_eq!(
            to_datetime("20240618083101-0400"),
            Ok(Some("2024-06-18T08:31:01-04:00".into()))
        );
        assert_eq!(
            to_datetime("202406180831+0000"),
            Ok(Some("2024-06-18T08:31:00+00:00".into()))
        );
        assert_eq!(
            to_datetime("20240618083101.123-0500"),
            Ok(Some("2024-06-18T08:31:01.123-05:00".into()))
        );
        assert_eq!(to_datetime("20120727112142"), Ok(Some("2012-07-27".into())));
        assert_eq!(to_datetime("20240618083101-9900"), Err(InvalidDate));
        assert_eq!(to_datetime("20241318"), Err(InvalidDate));
        assert_eq!(to_datetime("20240618250000+0000"), Err(InvalidDate));
        assert!(valid_ymd(2024, 2, 29) && !valid_ymd(2023, 2, 29) && !valid_ymd(1900, 2, 29));
        assert_eq!(day_key("20240618083101"), Some("20240618"));
        assert_eq!(day_key("2024"), None);
    }

    #[test]
    fn values_are_decoded_and_bounded() {
        let text = "MSH|^~\\&|A\rPID|1||1^^^AA&1.2.3&ISO^MR~2^^^B^SR||Doe\\T\\Roe^J\\X0D\\ohn";
        let msg = parse(text).unwrap();
        let pid = segments(&msg).find(|s| s.name() == "PID").unwrap();
        assert_eq!(pid.text(5, 1), "Doe&Roe");
        assert_eq!(pid.text(5, 2), "J ohn");
        let ids = pid.reps(3);
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].s(4, 2), "1.2.3");
        assert_eq!(ids[1].c(5), "SR");
        assert_eq!(pid.text(99, 1), "");
        assert_eq!(pid.text(0, 0), "");
        assert_eq!(pid.raw(3), "1^^^AA&1.2.3&ISO^MR~2^^^B^SR");
    }
}
