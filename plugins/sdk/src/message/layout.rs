//! A message from the layout the engine found once for the whole route
//! (`process-split`): the offsets of its separators, taken without scanning
//! or copying the text.

use super::*;

impl Message {
    /// A message whose layout the engine found already: `layout` holds the
    /// byte offset in `text` of every field separator and every carriage
    /// return, in order. Nothing is scanned or copied; each offset is
    /// checked to be a separator, in order and in the text. When the layout
    /// does not fit the text (or the text has line feeds or empty
    /// segments), or is empty, the text is given back, to be parsed.
    pub fn with_layout(mut text: String, layout: &[u32]) -> Result<Message, String> {
        if layout.is_empty() {
            return Err(text);
        }
        let msh_end = layout
            .iter()
            .map(|&at| at as usize)
            .find(|&at| text.as_bytes().get(at) == Some(&b'\r'))
            .unwrap_or(text.len());
        let Some(delimiters) = text.get(..msh_end).and_then(|m| read_delimiters(m).ok()) else {
            return Err(text);
        };
        let Some(sep) = scan::ascii_byte(delimiters.field).filter(|&b| b != b'\r' && b != b'\n')
        else {
            return Err(text);
        };
        let bytes = text.as_bytes();
        let body_len = bytes
            .iter()
            .rposition(|&b| b != b'\r' && b != b'\n')
            .map_or(0, |last| last + 1);
        if bytes.len() > u32::MAX as usize || memchr::memchr(b'\n', bytes).is_some() {
            return Err(text);
        }
        let mut lines: Vec<Line> = Vec::with_capacity(layout.len() / 8 + 1);
        let mut separators = Vec::with_capacity(layout.len());
        let mut start = 0;
        let mut previous = None;
        let end_segment =
            |start: usize, end: usize, seps: &mut Vec<usize>, lines: &mut Vec<Line>| {
                let first = lines.last().map_or(0, |l: &Line| l.separators_end);
                let name = bytes.get(start..start + 3);
                let well_formed = end > start
                    && name.is_some_and(|n| n.iter().all(u8::is_ascii_alphanumeric))
                    && (end == start + 3 || bytes.get(start + 3) == Some(&sep));
                lines.push(Line {
                    name: name
                        .and_then(|n| std::str::from_utf8(n).ok())
                        .and_then(SegmentName::new),
                    start,
                    end,
                    separators_start: first,
                    separators_end: seps.len(),
                });
                well_formed
            };
        for &at in layout {
            let at = at as usize;
            if previous.is_some_and(|p| at <= p) || at >= bytes.len() {
                return Err(text);
            }
            previous = Some(at);
            match bytes.get(at) {
                Some(&b) if b == sep && at < body_len => separators.push(at - start),
                Some(b'\r') if at >= body_len => break,
                Some(b'\r') => {
                    if !end_segment(start, at, &mut separators, &mut lines) {
                        return Err(text);
                    }
                    start = at + 1;
                }
                _ => return Err(text),
            }
        }
        if !end_segment(start, body_len, &mut separators, &mut lines) {
            return Err(text);
        }
        let trailing_separator = body_len < text.len();
        text.truncate(body_len);
        let mut message = Message {
            text,
            lines,
            separators,
            index: Vec::new(),
            by_name: Vec::new(),
            delimiters,
            trailing_separator,
            modified: false,
            last: Cell::new(None),
        };
        message.build_index();
        Ok(message)
    }
}
