//! Finding separators and lines in a message's text, byte-wise where a
//! separator is ASCII.

use super::*;

/// Appends the byte offset of every `sep` in `text` to `out`.
pub(super) fn push_separators(text: &str, sep: char, out: &mut Vec<usize>) {
    if let Some(byte) = ascii_byte(sep) {
        out.extend(memchr::memchr_iter(byte, text.as_bytes()));
    } else {
        out.extend(text.match_indices(sep).map(|(i, _)| i));
    }
}

/// `text` split at every CR and every LF, as `text.split(['\r', '\n'])`.
pub(super) fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr2_iter(b'\r', b'\n', text.as_bytes())
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let line = text.get(start..end).unwrap_or("");
            start = end + 1;
            line
        })
}

/// Part `n` (0-based) of `text` split at `sep`, as `text.split(sep).nth(n)`
/// gives it; byte search when the separator is ASCII.
pub(super) fn nth_part(text: &str, sep: char, n: usize) -> Option<&str> {
    if let Some(byte) = ascii_byte(sep) {
        let bytes = text.as_bytes();
        let next = |from: usize| {
            bytes
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == byte))
                .map(|i| from + i)
        };
        let mut start = 0;
        for _ in 0..n {
            start = next(start)? + 1;
        }
        let end = next(start).unwrap_or(bytes.len());
        text.get(start..end)
    } else {
        text.split(sep).nth(n)
    }
}

/// The byte of an ASCII delimiter.
pub(super) fn ascii_byte(c: char) -> Option<u8> {
    u8::try_from(c).ok().filter(u8::is_ascii)
}

/// The offset of the first byte at or after `from` for which `stop` holds,
/// or the length of `bytes`.
pub(super) fn end_at(bytes: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| stop(b)))
        .map_or(bytes.len(), |i| from + i)
}

/// Repetition `rep` (0-based) of a field, then its component `comp` and
/// that component's subcomponent `sub` when given (0-based, `None` for the
/// whole): what splitting at each level in turn gives, found in one pass
/// when the delimiters are ASCII. `None` when the field has no such part.
pub(super) fn locate(
    field: &str,
    d: Delimiters,
    rep: usize,
    comp: Option<usize>,
    sub: Option<usize>,
) -> Option<&str> {
    let (Some(r), Some(c), Some(s)) = (
        ascii_byte(d.repetition),
        ascii_byte(d.component),
        ascii_byte(d.subcomponent),
    ) else {
        let mut part = nth_part(field, d.repetition, rep)?;
        if let Some(comp) = comp {
            part = nth_part(part, d.component, comp)?;
            if let Some(sub) = sub {
                part = nth_part(part, d.subcomponent, sub)?;
            }
        }
        return Some(part);
    };
    let bytes = field.as_bytes();
    let mut i = 0;
    let mut left = rep;
    while left > 0 {
        if *bytes.get(i)? == r {
            left -= 1;
        }
        i += 1;
    }
    let Some(comp) = comp else {
        return field.get(i..end_at(bytes, i, |b| b == r));
    };
    let mut left = comp;
    while left > 0 {
        let b = *bytes.get(i)?;
        if b == r {
            return None;
        }
        if b == c {
            left -= 1;
        }
        i += 1;
    }
    let Some(sub) = sub else {
        return field.get(i..end_at(bytes, i, |b| b == r || b == c));
    };
    let mut left = sub;
    while left > 0 {
        let b = *bytes.get(i)?;
        if b == r || b == c {
            return None;
        }
        if b == s {
            left -= 1;
        }
        i += 1;
    }
    field.get(i..end_at(bytes, i, |b| b == r || b == c || b == s))
}
