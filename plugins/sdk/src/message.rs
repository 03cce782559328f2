//! Typed access to an HL7 v2 message: read and write fields by path
//! (`PID-7`, `RXA[2]-5.1`, `PID-3[2].4`), iterate segments, and write the
//! message back with every untouched segment byte for byte as it came.

use std::fmt;

/// A field address: `SEG[occurrence]-field[repetition].component.subcomponent`.
/// Occurrence and repetition default to 1; component and subcomponent to the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub segment: SegmentName,
    pub occurrence: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
    /// Whether the repetition was written (`PID-3[1]`): setting `PID-3`
    /// replaces the whole field with all its repetitions.
    pub repetition_given: bool,
}

fn bracketed(s: &str) -> Result<(&str, usize), String> {
    match s.split_once('[') {
        None => Ok((s, 1)),
        Some((head, rest)) => {
            let n = rest
                .strip_suffix(']')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("'{s}': the number in brackets must be 1 or more"))?;
            Ok((head, n))
        }
    }
}

/// A three-character segment name (`PID`), stored without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName([u8; 3]);

impl SegmentName {
    /// The name, when `s` is three ASCII letters or digits.
    pub fn new(s: &str) -> Option<SegmentName> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphanumeric()) => {
                Some(SegmentName([*a, *b, *c]))
            }
            _ => None,
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl PartialEq<&str> for SegmentName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Path {
    /// Parses `PID-7`, `PID.7`, `RXA[2]-5.1`, `PID-3[2].4.1`.
    pub fn parse(text: &str) -> Result<Path, String> {
        let bad =
            |why: &str| format!("'{text}' is not a field path like PID-7 or RXA[2]-5.1: {why}");
        let split = text
            .find(['-', '.'])
            .ok_or_else(|| bad("no field number"))?;
        let (seg_part, rest) = (
            text.get(..split).unwrap_or(""),
            text.get(split + 1..).unwrap_or(""),
        );
        let (segment, occurrence) = bracketed(seg_part).map_err(|e| bad(&e))?;
        let Some(segment) = SegmentName::new(segment) else {
            return Err(bad("the segment name must be three letters or digits"));
        };
        let mut parts = rest.split('.');
        let field_part = parts.next().unwrap_or("");
        let repetition_given = field_part.contains('[');
        let (field, repetition) = bracketed(field_part).map_err(|e| bad(&e))?;
        let number = |s: Option<&str>| -> Result<usize, String> {
            match s {
                None => Ok(0),
                Some(s) => s
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("numbers start at 1")),
            }
        };
        let field = number(Some(field))?;
        let component = number(parts.next())?;
        let subcomponent = number(parts.next())?;
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
            repetition_given,
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment.as_str())?;
        if self.occurrence > 1 {
            write!(f, "[{}]", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if self.repetition > 1 {
            write!(f, "[{}]", self.repetition)?;
        }
        if self.component > 0 {
            write!(f, ".{}", self.component)?;
        }
        if self.subcomponent > 0 {
            write!(f, ".{}", self.subcomponent)?;
        }
        Ok(())
    }
}

/// The delimiters of one message (MSH-1 and MSH-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

/// One segment, read-only.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    text: &'a str,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// The segment's name, e.g. `PID`.
    pub fn name(&self) -> &'a str {
        self.text.get(..3).unwrap_or(self.text)
    }

    /// The whole segment as it is in the message.
    pub fn raw(&self) -> &'a str {
        self.text
    }

    /// Field `n` as raw text (all repetitions); empty when absent.
    pub fn field(&self, n: usize) -> &'a str {
        field_of(self.text, n, self.delimiters)
    }
}

fn field_of(segment: &str, n: usize, d: Delimiters) -> &str {
    let is_msh = segment.starts_with("MSH");
    match (is_msh, n) {
        (_, 0) => "",
        (true, 1) => segment.get(3..3 + d.field.len_utf8()).unwrap_or(""),
        (true, n) => segment.split(d.field).nth(n - 1).unwrap_or(""),
        (false, n) => segment.split(d.field).nth(n).unwrap_or(""),
    }
}

/// An HL7 v2 message that plugins read and change.
#[derive(Debug, Clone)]
pub struct Message {
    segments: Vec<String>,
    /// Positions of each segment name, in order (names never change).
    index: std::collections::BTreeMap<SegmentName, Vec<usize>>,
    delimiters: Delimiters,
    trailing_separator: bool,
    modified: bool,
}

impl Message {
    /// Parses a message (CR segment separators; LF and CRLF are accepted too).
    /// The MSH segment and the delimiters are read with `hl7-parser`; every
    /// other segment must start with a three-character name and the field
    /// separator. Fields are split only when asked for.
    pub fn parse(text: &str) -> Result<Message, String> {
        let body = text.trim_end_matches(['\r', '\n']);
        let mut lines = body.split(['\r', '\n']).filter(|s| !s.is_empty());
        let msh = lines.next().unwrap_or("");
        let (seps, _) = hl7_parser::parser::parse_msh(msh)
            .map_err(|e| format!("the MSH segment could not be parsed: {e}"))?;
        let delimiters = Delimiters {
            field: seps.field,
            component: seps.component,
            repetition: seps.repetition,
            escape: seps.escape,
            subcomponent: seps.subcomponent,
        };
        let mut segments = vec![msh.to_string()];
        for (i, seg) in lines.enumerate() {
            let name_ok = seg
                .get(..3)
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric()));
            let next = seg.get(3..).and_then(|r| r.chars().next());
            if !name_ok || !(next.is_none() || next == Some(delimiters.field)) {
                return Err(format!(
                    "segment {} of the message is not a well-formed HL7 segment",
                    i + 2
                ));
            }
            segments.push(seg.to_string());
        }
        let mut index: std::collections::BTreeMap<SegmentName, Vec<usize>> = Default::default();
        for (i, seg) in segments.iter().enumerate() {
            if let Some(name) = seg.get(..3).and_then(SegmentName::new) {
                index.entry(name).or_default().push(i);
            }
        }
        Ok(Message {
            segments,
            index,
            delimiters,
            trailing_separator: text.ends_with(['\r', '\n']),
            modified: false,
        })
    }

    /// The message's delimiters.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// True once anything was changed with [`Message::set`].
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.segments.iter().map(|s| Segment {
            text: s,
            delimiters: self.delimiters,
        })
    }

    /// The segments named `name`, in order.
    pub fn segments_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Segment<'a>> + 'a {
        self.segments().filter(move |s| s.name() == name)
    }

    /// How many segments are named `name`.
    pub fn count(&self, name: &str) -> usize {
        SegmentName::new(name)
            .and_then(|n| self.index.get(&n))
            .map_or(0, Vec::len)
    }

    fn find(&self, path: &Path) -> Option<usize> {
        self.index
            .get(&path.segment)?
            .get(path.occurrence.checked_sub(1)?)
            .copied()
    }

    /// The raw value at `path` (e.g. `PID-5.1`); empty when absent or when the
    /// path does not parse. Escape sequences are left as they are.
    pub fn get(&self, path: &str) -> &str {
        let Ok(p) = Path::parse(path) else { return "" };
        self.get_path(&p)
    }

    /// [`Message::get`] with an already parsed path.
    pub fn get_path(&self, p: &Path) -> &str {
        let d = self.delimiters;
        let Some(seg) = self.find(p).and_then(|i| self.segments.get(i)) else {
            return "";
        };
        let field = field_of(seg, p.field, d);
        if p.segment == "MSH" && p.field <= 2 {
            return field;
        }
        let Some(rep) = field.split(d.repetition).nth(p.repetition - 1) else {
            return "";
        };
        if p.component == 0 {
            return rep;
        }
        let Some(comp) = rep.split(d.component).nth(p.component - 1) else {
            return "";
        };
        if p.subcomponent == 0 {
            return comp;
        }
        comp.split(d.subcomponent)
            .nth(p.subcomponent - 1)
            .unwrap_or("")
    }

    /// Every repetition of a field (the path's repetition is ignored).
    pub fn repetitions(&self, path: &str) -> Vec<&str> {
        let Ok(p) = Path::parse(path) else {
            return Vec::new();
        };
        let Some(seg) = self.find(&p).and_then(|i| self.segments.get(i)) else {
            return Vec::new();
        };
        let field = field_of(seg, p.field, self.delimiters);
        if field.is_empty() {
            Vec::new()
        } else {
            field.split(self.delimiters.repetition).collect()
        }
    }

    /// Sets the raw value at `path`, adding empty fields, repetitions and
    /// components as needed. `PID-10` replaces the whole field (all
    /// repetitions); `PID-10[2]` or `PID-10.1` address one repetition. The value is written as given: use
    /// [`Message::escape`] for free text. Only the segment touched changes.
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), String> {
        let p = Path::parse(path)?;
        let d = self.delimiters;
        if p.segment == "MSH" && p.field <= 2 {
            return Err("MSH-1 and MSH-2 (the delimiters) cannot be changed".to_string());
        }
        let index = self
            .find(&p)
            .ok_or_else(|| format!("the message has no {} segment", p.segment))?;
        let seg = self.segments.get(index).ok_or("segment vanished")?;
        let offset = usize::from(p.segment == "MSH");
        let mut fields: Vec<String> = seg.split(d.field).map(str::to_string).collect();
        let fi = p.field - offset;
        if fields.len() <= fi {
            fields.resize(fi + 1, String::new());
        }
        let field = fields.get_mut(fi).ok_or("field index")?;
        let whole_field = !p.repetition_given && p.component == 0;
        *field = if whole_field {
            value.to_string()
        } else {
            let levels = [
                (d.repetition, p.repetition),
                (d.component, p.component),
                (d.subcomponent, p.subcomponent),
            ];
            replace_nested(field, &levels, value)
        };
        let rebuilt = fields.join(&d.field.to_string());
        if let Some(slot) = self.segments.get_mut(index)
            && *slot != rebuilt
        {
            *slot = rebuilt;
            self.modified = true;
        }
        Ok(())
    }

    /// Escapes the delimiters in free text so it can be [`Message::set`].
    pub fn escape(&self, text: &str) -> String {
        let d = self.delimiters;
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let code = if c == d.escape {
                Some('E')
            } else if c == d.field {
                Some('F')
            } else if c == d.component {
                Some('S')
            } else if c == d.repetition {
                Some('R')
            } else if c == d.subcomponent {
                Some('T')
            } else {
                None
            };
            match code {
                Some(code) => {
                    out.push(d.escape);
                    out.push(code);
                    out.push(d.escape);
                }
                None if c == '\r' || c == '\n' => out.push(' '),
                None => out.push(c),
            }
        }
        out
    }
}

/// Replaces one part of a nested value: each level is (separator, 1-based
/// index, 0 = the whole level).
fn replace_nested(current: &str, levels: &[(char, usize)], value: &str) -> String {
    let Some(((sep, index), deeper)) = levels.split_first() else {
        return value.to_string();
    };
    if *index == 0 {
        return value.to_string();
    }
    let mut parts: Vec<String> = current.split(*sep).map(str::to_string).collect();
    if parts.len() < *index {
        parts.resize(*index, String::new());
    }
    if let Some(part) = parts.get_mut(index - 1) {
        // Only descend when the next level is addressed.
        let next_is_whole = deeper.first().is_none_or(|(_, i)| *i == 0);
        *part = if next_is_whole {
            value.to_string()
        } else {
            replace_nested(part, deeper, value)
        };
    }
    parts.join(&sep.to_string())
}

impl fmt::Display for Message {
    /// The message with CR separators; untouched segments as they came.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("\r")?;
            }
            f.write_str(s)?;
        }
        if self.trailing_separator {
            f.write_str("\r")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VXU: &str = "MSH|^~\\&|EHR|CLINIC|IIS|WA|20240101||VXU^V04^VXU|1|P|2.5.1\rPID|1||123^^^A^MR~456^^^B^SS||DOE^JANE||20200101|F|||1 Main^^Olympia^WA^98501\rRXA|0|1|20240101||08^HepB^CVX\rRXA|0|1|20240101||\r";

    #[test]
    fn paths() {
        let p = Path::parse("RXA[2]-5.1").unwrap();
        assert_eq!(
            (p.segment.as_str(), p.occurrence, p.field, p.component),
            ("RXA", 2, 5, 1)
        );
        assert_eq!(
            Path::parse("PID-3[2].4.1").unwrap().to_string(),
            "PID-3[2].4.1"
        );
        assert_eq!(Path::parse("PID.7").unwrap().to_string(), "PID-7");
        for bad in ["PID", "PIDX-1", "PID-0", "PID-x", "PID[0]-1", "PID-1.2.3.4"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_values() {
        let m = Message::parse(VXU).unwrap();
        assert_eq!(m.get("PID-3.1"), "123");
        assert_eq!(m.get("PID-3[2].1"), "456");
        assert_eq!(m.get("PID-11.4"), "WA");
        assert_eq!(m.get("PID-7"), "20200101");
        assert_eq!(m.get("RXA[2]-5"), "");
        assert_eq!(m.get("RXA[3]-5"), "");
        assert_eq!(m.get("MSH-1"), "|");
        assert_eq!(m.get("MSH-2"), "^~\\&");
        assert_eq!(m.get("MSH-4"), "CLINIC");
        assert_eq!(m.get("MSH-9.2"), "V04");
        assert_eq!(m.count("RXA"), 2);
        assert_eq!(m.repetitions("PID-3"), vec!["123^^^A^MR", "456^^^B^SS"]);
        assert_eq!(
            m.segments().map(|s| s.name()).collect::<Vec<_>>(),
            ["MSH", "PID", "RXA", "RXA"]
        );
        assert_eq!(m.segments_named("PID").next().unwrap().field(5), "DOE^JANE");
    }

    #[test]
    fn unchanged_message_is_byte_identical() {
        let m = Message::parse(VXU).unwrap();
        assert!(!m.is_modified());
        assert_eq!(m.to_string(), VXU);
    }

    #[test]
    fn sets_values_touching_only_their_segment() {
        let mut m = Message::parse(VXU).unwrap();
        m.set("MSH-22", "HIE^^^^^^^^^1234").unwrap();
        m.set("RXA[2]-5.1", "08").unwrap();
        m.set("RXA[2]-5.3", "CVX").unwrap();
        m.set("PID-3[2].4.2", "1.2.3").unwrap();
        assert!(m.is_modified());
        let out = m.to_string();
        let segs: Vec<&str> = out.split('\r').collect();
        assert_eq!(
            segs[0],
            "MSH|^~\\&|EHR|CLINIC|IIS|WA|20240101||VXU^V04^VXU|1|P|2.5.1||||||||||HIE^^^^^^^^^1234"
        );
        assert_eq!(
            segs[1],
            "PID|1||123^^^A^MR~456^^^B&1.2.3^SS||DOE^JANE||20200101|F|||1 Main^^Olympia^WA^98501"
        );
        assert_eq!(segs[2], "RXA|0|1|20240101||08^HepB^CVX");
        assert_eq!(segs[3], "RXA|0|1|20240101||08^^CVX");
        assert!(m.set("MSH-2", "x").is_err());
        assert!(m.set("OBX-5", "x").is_err());
    }

    #[test]
    fn escapes_free_text() {
        let m = Message::parse(VXU).unwrap();
        assert_eq!(m.escape("a|b^c&d~e\\f"), "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f");
    }

    #[test]
    fn reports_broken_messages() {
        assert!(Message::parse("hello").is_err());
        let err = Message::parse("MSH|^~\\&|A\rPID|1\r!!bad").unwrap_err();
        assert!(err.contains("segment 3"), "{err}");
    }
}
