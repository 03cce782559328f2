//! Answers to the sender: the engine's own ACK, or the IIS's answer relayed
//! with what must change in it.

use bytes::Bytes;

use super::Answer;
use crate::hl7::{self, AckCode, Charset, IisAnswer, Issue, Msh, Severity};

/// The IIS's answer goes back as it came, unless it must change: plugin
/// warnings merged in, MSA-2 set back to the sender's own MSH-10 (a plugin
/// may renumber the message; the IIS answers the id it received), and MLLP
/// framing bytes taken out so the answer stays one frame.
///
/// Only an answer already matched to the message it answers comes here
/// (delivery correlates MSA-2 and QAK-1 first).
pub(super) fn relay(answer: &IisAnswer, original: &Msh, issues: &[Issue]) -> Answer {
    let extra: Vec<Issue> = issues
        .iter()
        .filter(|i| i.severity != Severity::Error)
        .cloned()
        .collect();
    let renumber = answer.ack().is_some() && answer.control_id() != original.control_id();
    if renumber {
        tracing::debug!(expected = ?original.control_id(), got = ?answer.control_id(), "the IIS answer's MSA-2 is not the sender's MSH-10; answering with the sender's");
    }
    let framing = memchr::memchr2(0x0b, 0x1c, answer.bytes()).is_some();
    if extra.is_empty() && !renumber && !framing {
        return Answer::Reply(answer.bytes().clone());
    }
    let charset = answer.charset();
    let mut text = hl7::merge_issues_into_answer(answer.text(), &extra);
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
