//! Free text made safe for a field with the standard delimiters.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_and_controls_are_escaped() {
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
}
