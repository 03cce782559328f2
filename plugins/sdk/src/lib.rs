//! Helpers for izhub plugins: read HL7 v2 fields by segment, occurrence,
//! field and component, and edit MSH without disturbing the rest of the text.
//! Everything here is plain Rust, so plugin logic built on it is unit-tested
//! natively.

pub use hl7_parser::Message;

/// Parses a message as the engine hands it over (CR separators; a trailing
/// separator and LF line ends are tolerated).
pub fn parse(text: &str) -> Result<Message<'_>, String> {
    Message::parse_with_lenient_newlines(text.trim_end_matches(['\r', '\n']), true)
        .map_err(|e| format!("the message could not be parsed as HL7 v2: {e}"))
}

/// The raw value of `SEG[occurrence]-field.component` (1-based; component 0
/// means the whole first repetition of the field). Empty when absent.
pub fn value<'a>(
    msg: &'a Message<'_>,
    seg: &str,
    occurrence: usize,
    field: usize,
    component: usize,
) -> &'a str {
    let Some(segment) = msg
        .segments()
        .filter(|s| s.name == seg)
        .nth(occurrence.saturating_sub(1))
    else {
        return "";
    };
    let Some(repeat) = segment.field(field).and_then(|f| f.repeat(1)) else {
        return "";
    };
    if component == 0 {
        return repeat.raw_value();
    }
    repeat
        .component(component)
        .map(|c| c.raw_value())
        .unwrap_or("")
}

/// How many segments of a kind the message has.
pub fn count(msg: &Message<'_>, seg: &str) -> usize {
    msg.segments().filter(|s| s.name == seg).count()
}

/// Every repetition of `SEG[occurrence]-field` as raw text.
pub fn repetitions<'a>(
    msg: &'a Message<'_>,
    seg: &str,
    occurrence: usize,
    field: usize,
) -> Vec<&'a str> {
    msg.segments()
        .filter(|s| s.name == seg)
        .nth(occurrence.saturating_sub(1))
        .and_then(|s| s.field(field))
        .map(|f| f.repeats().map(|r| r.raw_value()).collect())
        .unwrap_or_default()
}

/// A location string for an issue: `PID-7`, or `RXA[2]-5` past the first occurrence.
pub fn location(seg: &str, occurrence: usize, field: usize) -> String {
    if occurrence <= 1 {
        format!("{seg}-{field}")
    } else {
        format!("{seg}[{occurrence}]-{field}")
    }
}

/// Sets MSH-n (n ≥ 3) to `value`, adding empty fields as needed; every other
/// byte of the message stays as it was.
pub fn set_msh_field(text: &str, n: usize, value: &str) -> Option<String> {
    let sep = text.strip_prefix("MSH")?.chars().next()?;
    if n < 3 {
        return None;
    }
    let end = text.find(['\r', '\n']).unwrap_or(text.len());
    let (header, rest) = text.split_at(end);
    let mut pieces: Vec<&str> = header.split(sep).collect();
    // pieces[0] is "MSH", pieces[k] is MSH-(k+1).
    while pieces.len() < n {
        pieces.push("");
    }
    *pieces.get_mut(n - 1)? = value;
    Some(format!("{}{rest}", pieces.join(&sep.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VXU: &str = "MSH|^~\\&|EHR|CLINIC|IIS|WA|20240101||VXU^V04^VXU|1|P|2.5.1\rPID|1||123^^^A^MR~456^^^B^SS||DOE^JANE||20200101|F|||1 Main^^Olympia^WA^98501\rRXA|0|1|20240101||08^HepB^CVX\rRXA|0|1|20240101||\r";

    #[test]
    fn reads_values() {
        let msg = parse(VXU).unwrap();
        assert_eq!(value(&msg, "PID", 1, 3, 1), "123");
        assert_eq!(value(&msg, "PID", 1, 11, 4), "WA");
        assert_eq!(value(&msg, "PID", 1, 7, 0), "20200101");
        assert_eq!(value(&msg, "RXA", 2, 5, 0), "");
        assert_eq!(value(&msg, "RXA", 3, 5, 0), "");
        assert_eq!(value(&msg, "MSH", 1, 4, 0), "CLINIC");
        assert_eq!(count(&msg, "RXA"), 2);
        assert_eq!(
            repetitions(&msg, "PID", 1, 3),
            vec!["123^^^A^MR", "456^^^B^SS"]
        );
        assert_eq!(location("RXA", 2, 5), "RXA[2]-5");
        assert_eq!(location("PID", 1, 7), "PID-7");
    }

    #[test]
    fn sets_msh_fields() {
        let out = set_msh_field(VXU, 22, "HIE^^^^^^^^^1234").unwrap();
        let header = out.split('\r').next().unwrap();
        assert_eq!(
            header,
            "MSH|^~\\&|EHR|CLINIC|IIS|WA|20240101||VXU^V04^VXU|1|P|2.5.1||||||||||HIE^^^^^^^^^1234"
        );
        assert!(out.ends_with(&VXU[VXU.find('\r').unwrap()..]));
        assert_eq!(
            set_msh_field(&out, 4, "X").unwrap().split('|').nth(3),
            Some("X")
        );
        assert_eq!(set_msh_field("PID|1", 4, "X"), None);
    }
}
