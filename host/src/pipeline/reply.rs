//! Answers to the sender: the engine's own ACK, or the IIS's answer relayed
//! with what must change in it.

use bytes::Bytes;

use super::Answer;
use crate::hl7::{self, AckCode, Charset, Issue, Msh, Severity};

/// The IIS's answer goes back as it came, unless it must change: plugin
/// warnings merged in, MSA-2 set back to the sender's own MSH-10 (a plugin
/// may renumber the message; the IIS answers the id it received), and MLLP
/// framing bytes taken out so the answer stays one frame.
pub(super) fn relay(answer: Bytes, original: &Msh, issues: &[Issue]) -> Answer {
    let extra: Vec<Issue> = issues
        .iter()
        .filter(|i| i.severity != Severity::Error)
        .cloned()
        .collect();
    let acked = hl7::read_msa(&String::from_utf8_lossy(&answer)).map(|(_, id)| id);
    let renumber = acked.as_deref() != Some(original.control_id());
    if let Some(acked) = acked.as_deref()
        && renumber
    {
        tracing::debug!(expected = ?original.control_id(), got = ?acked, "the IIS answer's MSA-2 is not the sender's MSH-10; answering with the sender's");
    }
    let framing = memchr::memchr2(0x0b, 0x1c, &answer).is_some();
    if extra.is_empty() && !renumber && !framing {
        return Answer::Reply(answer);
    }
    let (text, charset) = match hl7::decode(&answer) {
        Ok(ok) => ok,
        Err(_) => (String::from_utf8_lossy(&answer).into_owned(), Charset::Utf8),
    };
    let mut text = hl7::merge_issues_into_answer(&text, &extra);
    if renumber {
        text = hl7::set_msa_control_id(&text, original.control_id());
    }
    if framing {
        text = text.replace(['\u{0b}', '\u{1c}'], " ");
    }
    Answer::Reply(Bytes::from(hl7::encode(&text, charset)))
}

pub(super) fn ack(msh: &Msh, code: AckCode, issues: &[Issue], charset: Charset) -> Answer {
    let text = hl7::build_ack(msh, code, issues, &hl7::new_control_id("IZH"));
    Answer::Reply(Bytes::from(hl7::encode(&text, charset)))
}

/// MSA-1 as a metric label: the codes HL7 defines, anything else `other`
/// (the answer may come from an IIS).
pub(super) fn ack_code_label(code: &str) -> &'static str {
    match code {
        "AA" => "AA",
        "AE" => "AE",
        "AR" => "AR",
        "CA" => "CA",
        "CE" => "CE",
        "CR" => "CR",
        _ => "other",
    }
}
