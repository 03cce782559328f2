//! Typed access to an HL7 v2 message: read and write fields by path
//! (`PID-7`, `RXA[2]-5.1`, `PID-3[2].4`), iterate segments, and write the
//! message back with every untouched segment byte for byte as it came.
//!
//! Parsing records where every field of every segment starts, so reading a
//! field by number does not rescan its segment. Paths can be written as text
//! (`msg.get("RXA[2]-9.1")`) or built without allocating
//! (`Path::new(name, 2, 9).comp(1)` with [`Message::get_path`]).

use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;

mod layout;
mod path;
mod scan;

use path::MSH;
pub use path::{Path, SegmentName};
use scan::*;

/// The delimiters of one message (MSH-1 and MSH-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Delimiters {
    /// `|^~\&`: what nearly every message uses.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: '^',
        repetition: '~',
        escape: '\\',
        subcomponent: '&',
    };
}

/// One segment, read-only.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    text: &'a str,
    /// Byte offsets in `text` of every field separator, in order.
    separators: &'a [usize],
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
    ///
    /// In an MSH segment field 1 is the field separator itself and field 2
    /// the encoding characters, as HL7 numbers them.
    pub fn field(&self, n: usize) -> &'a str {
        let is_msh = matches!(self.text.as_bytes(), [b'M', b'S', b'H', ..]);
        match (is_msh, n) {
            (_, 0) => "",
            (true, 1) => self
                .text
                .get(3..3 + self.delimiters.field.len_utf8())
                .unwrap_or(""),
            (true, n) => self.piece(n - 1),
            (false, n) => self.piece(n),
        }
    }

    /// The `i`-th (0-based) text between field separators, the name being
    /// piece 0; empty when the segment has fewer pieces.
    fn piece(&self, i: usize) -> &'a str {
        let start = match i.checked_sub(1) {
            None => 0,
            Some(before) => match self.separators.get(before) {
                Some(at) => at + self.delimiters.field.len_utf8(),
                None => return "",
            },
        };
        let end = self.separators.get(i).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or("")
    }
}

/// Where one segment is: its bytes in [`Message`]'s text and its field
/// separators in [`Message`]'s separator list.
#[derive(Debug, Clone, Copy)]
struct Line {
    name: Option<SegmentName>,
    start: usize,
    end: usize,
    separators_start: usize,
    separators_end: usize,
}

/// The segments with one name: `count` positions from `start` in
/// [`Message`]'s position list.
#[derive(Debug, Clone, Copy)]
struct Named {
    name: SegmentName,
    start: usize,
    count: usize,
}

/// An HL7 v2 message that plugins read and change.
#[derive(Debug, Clone)]
pub struct Message {
    /// Every segment, in order, separated by CR.
    text: String,
    /// Where each segment is.
    lines: Vec<Line>,
    /// For every segment in turn, the byte offsets (from the segment's
    /// start) of its field separators.
    separators: Vec<usize>,
    /// Each segment name, in order of first appearance, with where its
    /// segments' positions are in `by_name` (names never change). Messages
    /// have a dozen names or so, so a list is searched faster than a map.
    index: Vec<Named>,
    /// The positions of the segments, grouped by name, in order within each.
    by_name: Vec<usize>,
    delimiters: Delimiters,
    trailing_separator: bool,
    modified: bool,
    /// The segment read last, as (name, occurrence, position): checks read
    /// one segment's fields in a row. Positions never change once parsed.
    last: Cell<Option<(SegmentName, usize, usize)>>,
}

impl Message {
    /// Parses a message (CR segment separators; LF and CRLF are accepted too).
    /// The MSH segment and the delimiters are read with `hl7-parser`; every
    /// other segment must start with a three-character name and the field
    /// separator. The field separators of every segment are located once,
    /// here; repetitions and components are split only when asked for.
    pub fn parse(text: &str) -> Result<Message, String> {
        let body = text.trim_end_matches(['\r', '\n']);
        let mut lines = split_lines(body).filter(|s| !s.is_empty());
        let msh = lines.next().unwrap_or("");
        let delimiters = read_delimiters(msh)?;
        let mut message = Message {
            text: String::with_capacity(body.len()),
            lines: Vec::with_capacity(body.len() / 64 + 1),
            separators: Vec::with_capacity(body.len() / 8),
            index: Vec::new(),
            by_name: Vec::new(),
            delimiters,
            trailing_separator: text.ends_with(['\r', '\n']),
            modified: false,
            last: Cell::new(None),
        };
        message.push_segment(msh);
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
            message.push_segment(seg);
        }
        message.build_index();
        Ok(message)
    }

    /// Adds a segment at the end while parsing: its text and field separators.
    fn push_segment(&mut self, seg: &str) {
        if !self.lines.is_empty() {
            self.text.push('\r');
        }
        let start = self.text.len();
        self.text.push_str(seg);
        let separators_start = self.separators.len();
        push_separators(seg, self.delimiters.field, &mut self.separators);
        self.lines.push(Line {
            name: seg.get(..3).and_then(SegmentName::new),
            start,
            end: self.text.len(),
            separators_start,
            separators_end: self.separators.len(),
        });
    }

    /// Groups the segments' positions by name, once all are parsed.
    fn build_index(&mut self) {
        let mut index: Vec<Named> = Vec::new();
        for name in self.lines.iter().filter_map(|l| l.name) {
            match index.iter_mut().find(|n| n.name == name) {
                Some(n) => n.count += 1,
                None => index.push(Named {
                    name,
                    start: 0,
                    count: 1,
                }),
            }
        }
        let mut start = 0;
        for n in &mut index {
            n.start = start;
            start += n.count;
            n.count = 0;
        }
        let mut by_name = vec![0; start];
        for (position, name) in self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.name?)))
        {
            if let Some(n) = index.iter_mut().find(|n| n.name == name) {
                if let Some(slot) = by_name.get_mut(n.start + n.count) {
                    *slot = position;
                }
                n.count += 1;
            }
        }
        self.index = index;
        self.by_name = by_name;
    }

    /// The positions of the segments named `name`, in order.
    fn positions(&self, name: SegmentName) -> &[usize] {
        self.index
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| self.by_name.get(n.start..n.start + n.count))
            .unwrap_or(&[])
    }

    /// The segment at `position` (0-based, among all segments).
    fn segment_at(&self, position: usize) -> Option<Segment<'_>> {
        let line = self.lines.get(position)?;
        Some(Segment {
            text: self.text.get(line.start..line.end)?,
            separators: self
                .separators
                .get(line.separators_start..line.separators_end)?,
            delimiters: self.delimiters,
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
        (0..self.lines.len()).filter_map(|i| self.segment_at(i))
    }

    /// The segments named `name`, in order.
    pub fn segments_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Segment<'a>> + 'a {
        let positions = SegmentName::new(name).map_or(&[][..], |n| self.positions(n));
        positions.iter().filter_map(|&i| self.segment_at(i))
    }

    /// The `occurrence`-th (1-based) segment named `name`.
    pub fn segment(&self, name: SegmentName, occurrence: usize) -> Option<Segment<'_>> {
        let position = match self.last.get() {
            Some((n, o, position)) if n == name && o == occurrence => position,
            _ => {
                let position = self
                    .positions(name)
                    .get(occurrence.checked_sub(1)?)
                    .copied()?;
                self.last.set(Some((name, occurrence, position)));
                position
            }
        };
        self.segment_at(position)
    }

    /// How many segments are named `name`.
    pub fn count(&self, name: &str) -> usize {
        SegmentName::new(name).map_or(0, |n| self.positions(n).len())
    }

    /// The position (among all segments) of the segment a path addresses.
    fn find(&self, path: &Path) -> Option<usize> {
        self.positions(path.segment)
            .get(path.occurrence.checked_sub(1)?)
            .copied()
    }

    /// The raw value at `path` (e.g. `PID-5.1`); empty when absent or when the
    /// path does not parse. Escape sequences are left as they are.
    pub fn get(&self, path: &str) -> &str {
        let Ok(p) = Path::parse(path) else { return "" };
        self.get_path(&p)
    }

    /// [`Message::get`] with an already parsed or built path; no allocation.
    pub fn get_path(&self, p: &Path) -> &str {
        let d = self.delimiters;
        let Some(seg) = self.segment(p.segment, p.occurrence) else {
            return "";
        };
        let field = seg.field(p.field);
        if p.segment == MSH && p.field <= 2 {
            return field;
        }
        let Some(rep) = p.repetition.checked_sub(1) else {
            return "";
        };
        let comp = p.component.checked_sub(1);
        let sub = comp.and(p.subcomponent.checked_sub(1));
        locate(field, d, rep, comp, sub).unwrap_or("")
    }

    /// Every repetition of a field (the path's repetition is ignored).
    pub fn repetitions(&self, path: &str) -> Vec<&str> {
        match Path::parse(path) {
            Ok(p) => self.repetitions_path(&p),
            Err(_) => Vec::new(),
        }
    }

    /// [`Message::repetitions`] with an already parsed or built path.
    pub fn repetitions_path(&self, p: &Path) -> Vec<&str> {
        let Some(seg) = self.segment(p.segment, p.occurrence) else {
            return Vec::new();
        };
        let field = seg.field(p.field);
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
        self.set_path(&p, value)
    }

    /// [`Message::set`] with an already parsed or built path. A path built
    /// with [`Path::new`] replaces the whole field unless
    /// [`Path::rep`] or [`Path::comp`] narrows it.
    pub fn set_path(&mut self, p: &Path, value: &str) -> Result<(), String> {
        let d = self.delimiters;
        if p.segment == MSH && p.field <= 2 {
            return Err("MSH-1 and MSH-2 (the delimiters) cannot be changed".to_string());
        }
        if p.field == 0 {
            return Err(format!("'{p}': field numbers start at 1"));
        }
        let position = self
            .find(p)
            .ok_or_else(|| format!("the message has no {} segment", p.segment))?;
        let seg = self.segment_at(position).ok_or("segment vanished")?.raw();
        let offset = usize::from(p.segment == MSH);
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
        if rebuilt != seg {
            self.replace_segment(position, &rebuilt)?;
            self.modified = true;
        }
        Ok(())
    }

    /// Replaces the text of the segment at `position` and locates its field
    /// separators again; the segments after it only move.
    fn replace_segment(&mut self, position: usize, new: &str) -> Result<(), String> {
        let line = *self.lines.get(position).ok_or("segment vanished")?;
        let text_range = line.start..line.end;
        let separators_range = line.separators_start..line.separators_end;
        if self.text.get(text_range.clone()).is_none()
            || self.separators.get(separators_range.clone()).is_none()
        {
            return Err("segment vanished".to_string());
        }
        let mut found = Vec::new();
        push_separators(new, self.delimiters.field, &mut found);
        let (old_len, new_len) = (line.end - line.start, new.len());
        let (old_count, new_count) = (line.separators_end - line.separators_start, found.len());
        self.text.replace_range(text_range, new);
        self.separators.splice(separators_range, found);
        for (i, l) in self.lines.iter_mut().enumerate().skip(position) {
            if i == position {
                l.end = l.start + new_len;
                l.separators_end = l.separators_start + new_count;
            } else {
                l.start = l.start - old_len + new_len;
                l.end = l.end - old_len + new_len;
                l.separators_start = l.separators_start - old_count + new_count;
                l.separators_end = l.separators_end - old_count + new_count;
            }
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

/// The delimiters of an MSH segment. The delimiters are the five characters
/// after `MSH`, and whether `hl7-parser` accepts an MSH segment depends on
/// those eight bytes only (the fields after them always parse). So only they
/// are parsed; the whole segment is parsed again only to report an error
/// about it. Nearly every message uses the standard delimiters, which
/// `hl7-parser` reads as such: those are taken without parsing.
fn read_delimiters(msh: &str) -> Result<Delimiters, String> {
    if msh.as_bytes().starts_with(b"MSH|^~\\&|") {
        return Ok(Delimiters::STANDARD);
    }
    let head = msh.get(..8).unwrap_or(msh);
    let (seps, _) = hl7_parser::parser::parse_msh(head)
        .or_else(|_| hl7_parser::parser::parse_msh(msh))
        .map_err(|e| format!("the MSH segment could not be parsed: {e}"))?;
    Ok(Delimiters {
        field: seps.field,
        component: seps.component,
        repetition: seps.repetition,
        escape: seps.escape,
        subcomponent: seps.subcomponent,
    })
}

impl fmt::Display for Message {
    /// The message with CR separators; untouched segments as they came.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
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

    /// `Message::get` as a plain split of the segment text, to compare with.
    fn get_by_splitting(text: &str, p: &Path) -> String {
        let m = Message::parse(text).unwrap();
        let d = m.delimiters();
        let Some(seg) = m
            .segments()
            .filter(|s| s.name() == p.segment.as_str())
            .nth(p.occurrence - 1)
        else {
            return String::new();
        };
        let raw = seg.raw();
        let is_msh = raw.starts_with("MSH");
        let field = match (is_msh, p.field) {
            (true, 1) => raw.get(3..3 + d.field.len_utf8()).unwrap_or(""),
            (true, n) => raw.split(d.field).nth(n - 1).unwrap_or(""),
            (false, n) => raw.split(d.field).nth(n).unwrap_or(""),
        };
        if is_msh && p.field <= 2 {
            return field.to_string();
        }
        let Some(rep) = field.split(d.repetition).nth(p.repetition - 1) else {
            return String::new();
        };
        if p.component == 0 {
            return rep.to_string();
        }
        let Some(comp) = rep.split(d.component).nth(p.component - 1) else {
            return String::new();
        };
        if p.subcomponent == 0 {
            return comp.to_string();
        }
        comp.split(d.subcomponent)
            .nth(p.subcomponent - 1)
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn indexed_reads_match_splitting() {
        let other_delimiters = "MSH#*@\\%#A#B\rPID#1##1***X%Y*MR@2###\rPID\rOBX##x*y#\r";
        let odd = "MSH|^~\\&|A||||||||||||||||||||Z\rNK1|||||^^^^\rNK1|1|a^b&c&d~e^f|\r";
        for text in [VXU, other_delimiters, odd] {
            let m = Message::parse(text).unwrap();
            for name in ["MSH", "PID", "RXA", "NK1", "OBX", "ZZZ"] {
                let seg = SegmentName::new(name).unwrap();
                for occ in 1..=3 {
                    for field in 1..=24 {
                        for rep in 1..=3 {
                            for comp in 0..=6 {
                                for sub in 0..=3 {
                                    let p = Path::new(seg, occ, field).rep(rep).comp(comp).sub(sub);
                                    assert_eq!(
                                        m.get_path(&p),
                                        get_by_splitting(text, &p),
                                        "{p} in {text:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn built_paths_match_parsed_paths() {
        let rxa = SegmentName::new("RXA").unwrap();
        let pid = SegmentName::new("PID").unwrap();
        assert_eq!(
            Path::new(rxa, 2, 5).comp(1),
            Path::parse("RXA[2]-5.1").unwrap()
        );
        assert_eq!(
            Path::new(pid, 1, 3).rep(2).comp(4).sub(2),
            Path::parse("PID-3[2].4.2").unwrap()
        );
        assert_eq!(Path::new(pid, 1, 7), Path::parse("PID-7").unwrap());
        assert_eq!(
            Path::new(pid, 1, 3).rep(1),
            Path::parse("PID-3[1]").unwrap()
        );
        let m = Message::parse(VXU).unwrap();
        assert_eq!(m.get_path(&Path::new(pid, 1, 3).rep(2).comp(1)), "456");
        assert_eq!(m.get_path(&Path::new(rxa, 1, 5).comp(2)), "HepB");
        assert_eq!(m.get_path(&Path::new(rxa, 0, 5)), "");
        assert_eq!(m.get_path(&Path::new(rxa, 1, 0)), "");
        assert_eq!(m.get_path(&Path::new(rxa, 1, 5).rep(0)), "");
        assert_eq!(
            m.repetitions_path(&Path::new(pid, 1, 3)),
            vec!["123^^^A^MR", "456^^^B^SS"]
        );
        assert_eq!(m.segment(rxa, 2).map(|s| s.field(3)), Some("20240101"));
        assert!(m.segment(rxa, 3).is_none());
    }

    #[test]
    fn segment_names_compare_as_bytes() {
        let pid = SegmentName::new("PID").unwrap();
        assert!(pid == "PID");
        assert!(pid != "PI");
        assert!(pid != "PIDX");
        assert!(pid != "pid");
        assert!(SegmentName::new("MSH").unwrap() < pid);
        assert!(SegmentName::new("PI").is_none());
        assert!(SegmentName::new("P-D").is_none());
        const RXA: Option<SegmentName> = SegmentName::new("RXA");
        assert_eq!(RXA.map(|n| n.to_string()).as_deref(), Some("RXA"));
    }

    #[test]
    fn reads_after_sets_see_the_new_fields() {
        let mut m = Message::parse(VXU).unwrap();
        m.set("PID-3", "A^^^X^MR~B^^^Y^PI~C").unwrap();
        m.set("MSH-4", "").unwrap();
        m.set("RXA-5.2", "Hepatitis B").unwrap();
        m.set("RXA[2]-9.1", "00").unwrap();
        assert_eq!(m.get("PID-3[3]"), "C");
        assert_eq!(m.get("PID-3[2].5"), "PI");
        assert_eq!(m.get("PID-5.2"), "JANE");
        assert_eq!(m.get("PID-11.4"), "WA");
        assert_eq!(m.get("MSH-4"), "");
        assert_eq!(m.get("MSH-5"), "IIS");
        assert_eq!(m.get("RXA-5"), "08^Hepatitis B^CVX");
        assert_eq!(m.get("RXA[2]-9"), "00");
        assert_eq!(m.get("RXA[2]-3"), "20240101");
        let rxa = SegmentName::new("RXA").unwrap();
        m.set_path(&Path::new(rxa, 2, 5).comp(3), "CVX").unwrap();
        assert_eq!(m.get("RXA[2]-5"), "^^CVX");
        assert!(m.set_path(&Path::new(rxa, 1, 0), "x").is_err());
        let again = Message::parse(&m.to_string()).unwrap();
        for p in ["PID-3[2].5", "RXA-5.2", "RXA[2]-9", "MSH-5", "RXA[2]-5.3"] {
            assert_eq!(again.get(p), m.get(p), "{p}");
        }
        assert_eq!(
            m.to_string(),
            "MSH|^~\\&|EHR||IIS|WA|20240101||VXU^V04^VXU|1|P|2.5.1\rPID|1||A^^^X^MR~B^^^Y^PI~C||DOE^JANE||20200101|F|||1 Main^^Olympia^WA^98501\rRXA|0|1|20240101||08^Hepatitis B^CVX\rRXA|0|1|20240101||^^CVX||||00\r"
        );
    }

    #[test]
    fn reads_delimiters_as_hl7_parser_does() {
        for msh in [
            "MSH|^~\\&|A|B|C",
            "MSH#*@\\%#A",
            "MSH|^~\\&",
            "MSH|^~\\&|",
            "MSH|^~",
            "MSH|^~\\",
            "MSH|^~é&|A",
            "MSX|^~\\&|A",
            "MSH",
            "",
        ] {
            let ours = Message::parse(msh).map(|m| m.delimiters());
            let theirs = hl7_parser::parser::parse_msh(msh)
                .map(|(s, _)| Delimiters {
                    field: s.field,
                    component: s.component,
                    repetition: s.repetition,
                    escape: s.escape,
                    subcomponent: s.subcomponent,
                })
                .map_err(|e| format!("the MSH segment could not be parsed: {e}"));
            assert_eq!(ours, theirs, "{msh:?}");
        }
    }

    #[test]
    fn accepts_lf_and_crlf_between_segments() {
        let m = Message::parse("MSH|^~\\&|A\r\nPID|1\n\nRXA|0\r\r\nRXA|1\n").unwrap();
        assert_eq!(
            m.segments().map(|s| s.raw()).collect::<Vec<_>>(),
            ["MSH|^~\\&|A", "PID|1", "RXA|0", "RXA|1"]
        );
        assert_eq!(m.get("RXA[2]-1"), "1");
        assert_eq!(m.to_string(), "MSH|^~\\&|A\rPID|1\rRXA|0\rRXA|1\r");
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

    mod any_input {
        use super::*;
        use proptest::prelude::*;

        /// Message-like text: an MSH segment and up to six more, their
        /// fields full of delimiters and multi-byte characters, separated by
        /// CR, LF or CRLF.
        fn messageish() -> impl Strategy<Value = String> {
            let piece =
                prop::sample::select(vec!["|", "^", "~", "&", "\\", "a", "12", "é", "€", ""]);
            let fields = prop::collection::vec(piece.clone(), 0..16).prop_map(|p| p.concat());
            let name = prop::sample::select(vec!["PID", "RXA", "OBX", "RXA", "ZX1"]);
            let end = prop::sample::select(vec!["\r", "\n", "\r\n"]);
            let segment = (end, name, fields).prop_map(|(e, n, f)| format!("{e}{n}|{f}"));
            let header = prop::collection::vec(piece, 0..12).prop_map(|p| p.concat());
            (header, prop::collection::vec(segment, 0..7))
                .prop_map(|(h, segs)| format!("MSH|^~\\&|{h}{}", segs.concat()))
        }

        fn any_path() -> impl Strategy<Value = Path> {
            let name = prop::sample::select(vec!["MSH", "PID", "RXA", "OBX"]);
            (name, 1usize..4, 1usize..14, 1usize..4, 0usize..4, 0usize..3).prop_map(
                |(n, occ, field, rep, comp, sub)| {
                    let seg = SegmentName::new(n).unwrap_or(SegmentName([b'Z'; 3]));
                    Path::new(seg, occ, field).rep(rep).comp(comp).sub(sub)
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            /// Whatever arrives: parsing, reading and writing never panic,
            /// reads agree with plain splitting, and a write reads back.
            #[test]
            fn reads_and_writes_hold_on_any_text(
                text in messageish(),
                paths in prop::collection::vec(any_path(), 1..8),
                value in "[a-z0-9]{0,6}",
            ) {
                let parsed = Message::parse(&text);
                prop_assert!(parsed.is_ok(), "{:?}: {:?}", text, parsed.err());
                let Ok(mut m) = parsed else { return Ok(()) };
                let normalized = m.to_string();
                for p in &paths {
                    let expected = get_by_splitting(&normalized, p);
                    prop_assert_eq!(m.get_path(p), expected.as_str());
                }
                for p in &paths {
                    let _ = m.repetitions_path(p);
                    let path = p.to_string();
                    if m.set(&path, &value).is_ok() && p.occurrence >= 1 && p.field >= 1 {
                        let whole = p.component == 0 && p.subcomponent == 0;
                        if !whole || p.repetition <= 1 {
                            prop_assert_eq!(m.get(&path), value.as_str(), "{} in {:?}", path, m.to_string());
                        }
                    }
                }
                let again = Message::parse(&m.to_string());
                prop_assert!(again.is_ok());
            }

            /// A message built from the engine's layout reads and writes
            /// exactly as the same text parsed; a layout that does not fit
            /// the text (shifted, cut short, out of order) never panics and
            /// gives the text back, or still reads the text it has.
            #[test]
            fn a_layout_gives_the_message_parsing_gives(
                text in messageish(),
                paths in prop::collection::vec(any_path(), 1..8),
                value in "[a-z0-9]{0,6}",
                shift in 0u32..3,
                cut in 0usize..40,
            ) {
                let Ok(parsed) = Message::parse(&text) else { return Ok(()) };
                let layout = layout_of(&text);
                match Message::with_layout(text.clone(), &layout) {
                    Ok(mut m) => {
                        prop_assert!(!text.contains('\n'));
                        prop_assert_eq!(m.to_string(), parsed.to_string());
                        for p in &paths {
                            prop_assert_eq!(m.get_path(p), parsed.get_path(p), "{}", p);
                        }
                        let mut parsed = parsed;
                        for p in &paths {
                            let path = p.to_string();
                            prop_assert_eq!(m.set(&path, &value).is_ok(), parsed.set(&path, &value).is_ok());
                        }
                        prop_assert_eq!(m.to_string(), parsed.to_string());
                    }
                    Err(back) => {
                        prop_assert_eq!(&back, &text);
                        prop_assert!(text.contains('\n') || text.contains("\r\r"), "{:?}", text);
                    }
                }
                let shifted: Vec<u32> = layout.iter().map(|at| at + shift).collect();
                let _ = Message::with_layout(text.clone(), &shifted).map(|m| m.to_string());
                let short = &layout[..layout.len().min(cut)];
                let _ = Message::with_layout(text.clone(), short).map(|m| m.to_string());
                let mut reversed = layout.clone();
                reversed.reverse();
                prop_assert!(reversed.len() < 2 || Message::with_layout(text.clone(), &reversed).is_err());
            }
        }
    }

    /// The engine's layout, as the engine computes it: every field
    /// separator and carriage return.
    fn layout_of(text: &str) -> Vec<u32> {
        let sep = text.as_bytes().get(3).copied().unwrap_or(b'|');
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == sep || b == b'\r')
            .map(|(i, _)| i as u32)
            .collect()
    }

    #[test]
    fn a_layout_is_taken_as_given_and_refused_when_it_does_not_fit() {
        let m = Message::with_layout(VXU.to_string(), &layout_of(VXU)).unwrap();
        assert_eq!(m.to_string(), Message::parse(VXU).unwrap().to_string());
        assert_eq!(m.get("PID-3[2].1"), "456");
        assert_eq!(m.get("RXA[2]-3"), "20240101");
        assert_eq!(m.count("RXA"), 2);
        for broken in [
            "MSH|^~\\&|A\rPID|1\r\rRXA|0\r",
            "MSH|^~\\&|A\nPID|1",
            "\rMSH|^~\\&|A",
            "MSH|^~\\&|A\rP|1",
            "MSH|^~\\&|A\rPIDX|1",
            "XSH|^~\\&|A",
        ] {
            assert!(
                Message::with_layout(broken.to_string(), &layout_of(broken)).is_err(),
                "{broken:?}"
            );
        }
        // An offset that is not a separator, or past the end.
        assert!(Message::with_layout(VXU.to_string(), &[1]).is_err());
        assert!(Message::with_layout(VXU.to_string(), &[u32::MAX]).is_err());
        // No layout at all: the text is parsed instead.
        assert!(Message::with_layout(VXU.to_string(), &[]).is_err());
    }
}
