//! Writing ACKs the engine itself sends, in HL7 2.5.1 and the CDC IG's shape,
//! and merging plugin issues into an IIS's answer.

use super::msh::Msh;
use izhub_hl7::{escape, escape_into, has_control};

pub use izhub_hl7::{Issue, Severity};

/// MSA-1 acknowledgment code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the message had errors and was not (fully) processed.
    AE,
    /// Application reject: the message could not be processed at all.
    AR,
}

impl AckCode {
    /// The MSA-1 text.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

/// Text for an HL7 table 0357 code.
fn code_0357_text(code: &str) -> &'static str {
    match code {
        "0" => "Message accepted",
        "100" => "Segment sequence error",
        "101" => "Required field missing",
        "102" => "Data type error",
        "103" => "Table value not found",
        "104" => "Value too long",
        "200" => "Unsupported message type",
        "201" => "Unsupported event code",
        "202" => "Unsupported processing id",
        "203" => "Unsupported version id",
        "204" => "Unknown key identifier",
        "205" => "Duplicate key identifier",
        "206" => "Application record locked",
        "207" => "Application internal error",
        _ => "",
    }
}

/// Text for a CDC table 0533 code.
fn code_0533_text(code: &str) -> &'static str {
    match code {
        "1" => "Illogical Date error",
        "2" => "Invalid Date",
        "3" => "Illogical Value error",
        "4" => "Invalid value",
        "5" => "Table value not found",
        "6" => "Required observation missing",
        "7" => "Required data missing",
        "8" => "Data was ignored",
        _ => "",
    }
}

/// Turns a location (`PID-7`, `RXA[2]-5.1`, `PID-3[2].5`, `PID.3.4.1`) into
/// ERR-2, an HL7 ERL: `SEG^occurrence^field^repetition^component^subcomponent`.
/// A location that is not a segment address (free text) is kept, escaped,
/// in ERR-2.1 so that it still reads.
pub(crate) fn location_to_erl(location: &str) -> String {
    let loc = location.trim();
    if loc.is_empty() {
        return String::new();
    }
    match parse_location(loc) {
        Some(erl) => erl,
        None => escape(loc),
    }
}

/// A number in a location: ASCII digits, at most 5 of them, not zero.
fn location_number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| *n > 0)
}

/// `NAME[n]` or `NAME`: the name and n (default 1).
fn bracketed(text: &str) -> Option<(&str, u32)> {
    match text.split_once('[') {
        Some((name, rest)) => Some((name, location_number(rest.strip_suffix(']')?)?)),
        None => Some((text, 1)),
    }
}

fn parse_location(loc: &str) -> Option<String> {
    // The segment ends at the first '-' (SDK form) or '.' (dotted form).
    let split = loc.find(['-', '.']);
    let (seg_part, rest) = match split {
        Some(i) => (loc.get(..i)?, loc.get(i + 1..)?),
        None => (loc, ""),
    };
    let (seg, occurrence) = bracketed(seg_part)?;
    if seg.len() != 3 || !seg.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if rest.is_empty() {
        return Some(if occurrence == 1 {
            seg.to_string()
        } else {
            format!("{seg}^{occurrence}")
        });
    }
    let mut parts = rest.split('.');
    let (field, repetition) = bracketed(parts.next()?)?;
    let field = location_number(field)?;
    let numbers: Vec<u32> = parts.map(location_number).collect::<Option<_>>()?;
    let mut out = format!("{seg}^{occurrence}^{field}");
    match numbers.as_slice() {
        [] if repetition == 1 => {}
        [] => out.push_str(&format!("^{repetition}")),
        [c] => out.push_str(&format!("^{repetition}^{c}")),
        [c, s] => out.push_str(&format!("^{repetition}^{c}^{s}")),
        _ => return None,
    }
    Some(out)
}

/// One ERR segment for an issue (ERR-2, 3, 4, 5 and 8).
pub fn err_segment(issue: &Issue) -> String {
    let mut out = String::with_capacity(64 + issue.text.len());
    push_err_segment(&mut out, issue);
    out
}

/// [`err_segment`], appended to `out`.
fn push_err_segment(out: &mut String, issue: &Issue) {
    out.push_str("ERR||");
    out.push_str(&location_to_erl(&issue.location));
    out.push('|');
    push_coded(out, &issue.code, code_0357_text(&issue.code), "HL70357");
    out.push('|');
    out.push_str(issue.severity.code());
    out.push('|');
    push_coded(
        out,
        &issue.app_code,
        code_0533_text(&issue.app_code),
        "HL70533",
    );
    out.push_str("|||");
    escape_into(out, &issue.text);
}

/// A coded value as `code^text^table`, or nothing when the code is empty.
fn push_coded(out: &mut String, code: &str, text: &str, table: &str) {
    if !code.is_empty() {
        escape_into(out, code);
        out.push('^');
        out.push_str(text);
        out.push('^');
        out.push_str(table);
    }
}

/// Builds an ACK to `original` with the given code and issues. `control_id`
/// becomes the ACK's own MSH-10; MSA-2 echoes the original MSH-10.
pub fn build_ack(original: &Msh, code: AckCode, issues: &[Issue], control_id: &str) -> String {
    let trigger = original.trigger();
    let trigger = if trigger.is_empty() { "V04" } else { trigger };
    let processing = original.field(11);
    let processing = if processing.is_empty() {
        "P"
    } else {
        processing
    };
    let text_len: usize = issues.iter().map(|i| i.text.len() + 96).sum();
    let mut out = String::with_capacity(256 + text_len);
    out.push_str("MSH|^~\\&|");
    for value in [
        original.receiving_application(),
        original.receiving_facility(),
        original.sending_application(),
        original.sending_facility(),
    ] {
        reencode_into(&mut out, original, value);
        out.push('|');
    }
    out.push_str(&super::text::hl7_timestamp());
    out.push_str("||ACK^");
    escape_into(&mut out, trigger);
    out.push_str("^ACK|");
    escape_into(&mut out, control_id);
    out.push('|');
    reencode_into(&mut out, original, processing);
    out.push_str("|2.5.1|||NE|NE|||||Z23^CDCPHINVS\rMSA|");
    out.push_str(code.as_str());
    out.push('|');
    escape_into(&mut out, original.control_id());
    out.push('\r');
    for issue in issues {
        push_err_segment(&mut out, issue);
        out.push('\r');
    }
    out
}

/// Copies a field of the original into our ACK, which always uses `|^~\&`:
/// when the original used other delimiters, escape ours inside the value and
/// map its component separator to ours.
fn reencode_into(out: &mut String, original: &Msh, value: &str) {
    let enc = original.field(2);
    if original.field_separator() == '|' && enc.starts_with("^~\\&") && !has_control(value) {
        // Same delimiters: the value is already valid in our ACK.
        out.push_str(value);
        return;
    }
    let comp = enc.chars().next().unwrap_or('^');
    for (i, part) in value.split(comp).enumerate() {
        if i > 0 {
            out.push('^');
        }
        escape_into(out, part);
    }
}

/// Adds plugin issues to an IIS answer: ERR segments go after the first MSA
/// (and after any ERR segments already following it). Returns the answer
/// unchanged when there is nothing to add or no MSA to anchor on.
pub fn merge_issues_into_answer(answer: &str, issues: &[Issue]) -> String {
    if issues.is_empty() {
        return answer.to_string();
    }
    let segments: Vec<&str> = answer.split('\r').collect();
    let Some(msa) = segments.iter().position(|s| s.starts_with("MSA")) else {
        return answer.to_string();
    };
    let mut insert_at = msa + 1;
    while segments
        .get(insert_at)
        .is_some_and(|s| s.starts_with("ERR"))
    {
        insert_at += 1;
    }
    let mut out: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    for (i, issue) in issues.iter().enumerate() {
        out.insert(insert_at + i, err_segment(issue));
    }
    out.join("\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erl_locations() {
        assert_eq!(location_to_erl("PID-7"), "PID^1^7");
        assert_eq!(location_to_erl("RXA[2]-5.1"), "RXA^2^5^1^1");
        assert_eq!(location_to_erl("PID.3.4.1"), "PID^1^3^1^4^1");
        assert_eq!(location_to_erl("PID-3[2].5"), "PID^1^3^2^5");
        assert_eq!(location_to_erl("PID-3[2]"), "PID^1^3^2");
        assert_eq!(location_to_erl("RXA[2]-9[3].1.2"), "RXA^2^9^3^1^2");
        assert_eq!(location_to_erl("OBX[4]"), "OBX^4");
        assert_eq!(location_to_erl("PID"), "PID");
        assert_eq!(location_to_erl("PID-3[0]"), "PID-3[0]");
        assert_eq!(location_to_erl("PID-3[x]"), "PID-3[x]");
        assert_eq!(location_to_erl("PID-3.1.2.3"), "PID-3.1.2.3");
        assert_eq!(location_to_erl(""), "");
        assert_eq!(location_to_erl("the birth date"), "the birth date");
        assert_eq!(location_to_erl("PID-x|y"), "PID-x\\F\\y");
    }

    #[test]
    fn ack_has_cdc_shape() {
        let msh = Msh::read("MSH|^~\\&|EHR|CLINIC|IIS|WAIIS|20240101||VXU^V04^VXU|MSG1|P|2.5.1\r")
            .unwrap();
        let issue = Issue {
            severity: Severity::Error,
            code: "101".into(),
            app_code: "6".into(),
            location: "PID-7".into(),
            text: "Birth date is required".into(),
        };
        let ack = build_ack(&msh, AckCode::AE, &[issue], "ACK1");
        let segs: Vec<&str> = ack.split('\r').collect();
        assert!(segs[0].starts_with("MSH|^~\\&|IIS|WAIIS|EHR|CLINIC|"));
        assert!(segs[0].contains("||ACK^V04^ACK|ACK1|P|2.5.1|||NE|NE|||||Z23^CDCPHINVS"));
        assert_eq!(segs[1], "MSA|AE|MSG1");
        assert_eq!(
            segs[2],
            "ERR||PID^1^7|101^Required field missing^HL70357|E|6^Required observation missing^HL70533|||Birth date is required"
        );
    }

    #[test]
    fn foreign_delimiters_are_escaped() {
        let msh = Msh::read("MSH#@~\\&#EHR#CL|NIC@X#IIS#WA#2024##VXU@V04#M1#P#2.5.1\r").unwrap();
        let ack = build_ack(&msh, AckCode::AA, &[], "A");
        assert!(ack.contains("|IIS|WA|EHR|CL\\F\\NIC^X|"), "{ack}");
        assert!(ack.contains("MSA|AA|M1"));
    }

    #[test]
    fn merge_after_existing_errs() {
        let answer = "MSH|^~\\&|X\rMSA|AA|1\rERR||PID^1^5||W\rQAK|1|OK\r";
        let w = Issue {
            severity: Severity::Warning,
            ..Issue::error("103").text("local code")
        };
        let merged = merge_issues_into_answer(answer, &[w]);
        let segs: Vec<&str> = merged.split('\r').collect();
        assert_eq!(
            segs[3],
            "ERR|||103^Table value not found^HL70357|W||||local code"
        );
        assert_eq!(segs[4], "QAK|1|OK");
    }
}
