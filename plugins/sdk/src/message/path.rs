//! Field addresses (`RXA[2]-9.1`) and segment names, parsed and built.

use super::*;

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

pub(super) fn bracketed(s: &str) -> Result<(&str, usize), String> {
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
///
/// Names order as their text does (`MSH` < `PID`).
#[derive(Debug, Clone, Copy, Eq)]
pub struct SegmentName(pub(super) [u8; 3]);

/// `MSH`, whose first two fields are the delimiters themselves.
pub(super) const MSH: SegmentName = SegmentName(*b"MSH");

impl PartialEq for SegmentName {
    /// Compared as one number: a name comparison happens on every field
    /// read, and a three-byte slice comparison is a library call in
    /// WebAssembly.
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl std::hash::Hash for SegmentName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl SegmentName {
    /// The name, when `s` is three ASCII letters or digits.
    ///
    /// This is a `const fn`, so plugins can keep names in constants.
    pub const fn new(s: &str) -> Option<SegmentName> {
        match s.as_bytes() {
            [a, b, c]
                if a.is_ascii_alphanumeric()
                    && b.is_ascii_alphanumeric()
                    && c.is_ascii_alphanumeric() =>
            {
                Some(SegmentName([*a, *b, *c]))
            }
            _ => None,
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The name's three bytes.
    pub const fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }

    /// The three bytes as one number that orders like the text.
    const fn key(&self) -> u32 {
        let [a, b, c] = self.0;
        u32::from_be_bytes([a, b, c, 0])
    }
}

impl Ord for SegmentName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for SegmentName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for SegmentName {
    fn eq(&self, other: &str) -> bool {
        match other.as_bytes() {
            &[a, b, c] => *self == SegmentName([a, b, c]),
            _ => false,
        }
    }
}

impl PartialEq<&str> for SegmentName {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Path {
    /// Field `field` of the `occurrence`-th (1-based) segment named
    /// `segment`: its first repetition, whole. Refine it with
    /// [`Path::rep`], [`Path::comp`] and [`Path::sub`]; nothing is allocated.
    ///
    /// `Path::new(rxa, 2, 5).comp(1)` is the path `RXA[2]-5.1`.
    pub const fn new(segment: SegmentName, occurrence: usize, field: usize) -> Path {
        Path {
            segment,
            occurrence,
            field,
            repetition: 1,
            component: 0,
            subcomponent: 0,
            repetition_given: false,
        }
    }

    /// The same path at repetition `n` (1-based), as if written `[n]`:
    /// [`Message::set_path`] then replaces that repetition only.
    pub const fn rep(mut self, n: usize) -> Path {
        self.repetition = n;
        self.repetition_given = true;
        self
    }

    /// The same path at component `n` (1-based; 0 is the whole repetition).
    pub const fn comp(mut self, n: usize) -> Path {
        self.component = n;
        self
    }

    /// The same path at subcomponent `n` (1-based; 0 is the whole component).
    pub const fn sub(mut self, n: usize) -> Path {
        self.subcomponent = n;
        self
    }

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
