//! HL7 v2 handling the engine itself needs: character sets, a tolerant MSH
//! reader, ACK writing and reading an IIS answer. Plugins do their own deep
//! parsing; the engine only reads what routing and answering require.

mod ack;
mod answer;
mod charset;
mod inbound;
mod msh;
mod text;

pub use ack::{AckCode, Issue, Severity, build_ack, err_segment, merge_issues_into_answer};
pub use answer::{
    AnswerClass, AnswerError, AnswerMatch, IisAnswer, MsaCode, Question, classify_answer,
    detection_id,
};
pub use charset::{Charset, CharsetError, decode, encode};
pub use inbound::{Inbound, InboundError};
pub use msh::{Msh, MshError, check_structure, first_value, layout, normalize_segments};
pub use text::{
    civil_from_days, days_from_civil, escape, has_control, hl7_timestamp, new_control_id,
    printable, rfc3339_now,
};

/// Sets MSA-2 of the first MSA segment of an answer to `control_id`
/// (escaped), keeping everything else as it was. Returns the answer
/// unchanged when it has no MSA segment.
pub fn set_msa_control_id(answer: &str, control_id: &str) -> String {
    let field_sep = answer
        .strip_prefix("MSH")
        .and_then(|r| r.chars().next())
        .unwrap_or('|');
    let mut out = String::with_capacity(answer.len() + control_id.len());
    let mut done = false;
    for (i, seg) in answer.split('\r').enumerate() {
        if i > 0 {
            out.push('\r');
        }
        let is_msa = seg
            .strip_prefix("MSA")
            .is_some_and(|r| r.starts_with(field_sep));
        if done || !is_msa {
            out.push_str(seg);
            continue;
        }
        done = true;
        for (n, field) in seg.split(field_sep).enumerate() {
            if n > 0 {
                out.push(field_sep);
            }
            if n == 2 {
                text::escape_into(&mut out, control_id);
            } else {
                out.push_str(field);
            }
        }
        let fields = seg.split(field_sep).count();
        if fields < 3 {
            for _ in fields..3 {
                out.push(field_sep);
            }
            text::escape_into(&mut out, control_id);
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msa_control_id_is_replaced_in_the_first_msa_only() {
        let answer = "MSH|^~\\&|IIS\rMSA|AA|NEW-1|ok\rERR||PID^1^7\rMSA|AE|NEW-1\r";
        assert_eq!(
            set_msa_control_id(answer, "ORIG|1"),
            "MSH|^~\\&|IIS\rMSA|AA|ORIG\\F\\1|ok\rERR||PID^1^7\rMSA|AE|NEW-1\r"
        );
        assert_eq!(
            set_msa_control_id("MSH|^~\\&\rMSA|AA", "X"),
            "MSH|^~\\&\rMSA|AA|X"
        );
        assert_eq!(
            set_msa_control_id("MSH|^~\\&\rQAK|1", "X"),
            "MSH|^~\\&\rQAK|1"
        );
    }
}
