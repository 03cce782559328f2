//! HL7 v2 handling the engine itself needs: character sets, a tolerant MSH
//! reader, ACK writing and reading an IIS answer. Plugins do their own deep
//! parsing; the engine only reads what routing and answering require.

mod ack;
mod answer;
mod charset;
mod msh;
mod text;

pub use ack::{AckCode, Issue, Severity, build_ack, err_segment, merge_issues_into_answer};
pub use answer::{AnswerClass, classify_answer};
pub use charset::{Charset, CharsetError, decode, encode};
pub use msh::{Msh, MshError, check_structure, first_value, normalize_segments};
pub use text::{escape, hl7_timestamp, new_control_id, rfc3339_now};

/// Reads the MSA segment of an answer: (MSA-1 code, MSA-2 control id).
///
/// Tolerant of LF separators and of answers with several MSA segments (the
/// first one is taken).
pub fn read_msa(answer: &str) -> Option<(String, String)> {
    let field_sep = answer
        .strip_prefix("MSH")
        .and_then(|r| r.chars().next())
        .unwrap_or('|');
    answer
        .split(['\r', '\n'])
        .find_map(|seg| {
            seg.strip_prefix("MSA")
                .and_then(|r| r.strip_prefix(field_sep))
        })
        .map(|rest| {
            let mut fields = rest.split(field_sep);
            let code = fields.next().unwrap_or("").to_string();
            let id = fields.next().unwrap_or("").to_string();
            (code, id)
        })
}
