//! An IIS's answer, read once when it arrives: its acknowledgment code, the
//! ids it answers (MSA-2, QAK-1), its class, its ERR segments and their
//! detection ids. Reading is tolerant of the way real IIS answer: AA with an
//! error in MSA-3, several MSA/ERR pairs, FHS/BHS batch wrappers, HL7
//! 2.3.1-style ERR-1, AE with no ERR at all, LF segment separators.
//!
//! [`Question`] is what was asked (the MSH-10 and QPD-2 of the message as
//! delivered); [`IisAnswer::answers`] decides whether an answer belongs to it.

use bytes::Bytes;

use super::ack::Severity;
use super::charset::{Charset, decode};

/// What an IIS did with a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    /// Taken in full.
    Accepted,
    /// Taken, with warnings or notes the sender should read.
    AcceptedWithWarnings,
    /// Part of it (a vaccination, an observation, a next of kin) was refused.
    RejectedPartly,
    /// Refused as a whole.
    Rejected,
    /// Not an acknowledgment we can read (no MSA).
    Unreadable,
}

impl AnswerClass {
    /// A label for metrics and files.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Accepted => "accepted",
            AnswerClass::AcceptedWithWarnings => "accepted-with-warnings",
            AnswerClass::RejectedPartly => "rejected-partly",
            AnswerClass::Rejected => "rejected",
            AnswerClass::Unreadable => "unreadable",
        }
    }
}

/// MSA-1 of an answer, as HL7 table 0008 defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsaCode {
    AA,
    AE,
    AR,
    CA,
    CE,
    CR,
    /// Anything else an IIS wrote there.
    Other,
}

impl MsaCode {
    /// Reads MSA-1 (case and surrounding spaces ignored).
    pub fn parse(code: &str) -> Self {
        match code.trim().to_ascii_uppercase().as_str() {
            "AA" => MsaCode::AA,
            "AE" => MsaCode::AE,
            "AR" => MsaCode::AR,
            "CA" => MsaCode::CA,
            "CE" => MsaCode::CE,
            "CR" => MsaCode::CR,
            _ => MsaCode::Other,
        }
    }

    /// The code as text, `other` for anything HL7 does not define: safe as
    /// a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MsaCode::AA => "AA",
            MsaCode::AE => "AE",
            MsaCode::AR => "AR",
            MsaCode::CA => "CA",
            MsaCode::CE => "CE",
            MsaCode::CR => "CR",
            MsaCode::Other => "other",
        }
    }

    /// Accepted (AA, CA).
    pub fn is_accept(self) -> bool {
        matches!(self, MsaCode::AA | MsaCode::CA)
    }

    /// Refused for good (AR, CR): sending the same message again cannot help.
    pub fn is_reject(self) -> bool {
        matches!(self, MsaCode::AR | MsaCode::CR)
    }

    /// Processed with errors (AE, CE).
    pub fn is_error(self) -> bool {
        matches!(self, MsaCode::AE | MsaCode::CE)
    }
}

/// One ERR segment of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError {
    /// ERR-2 (2.5.1) or the location part of ERR-1 (2.3.1), as written.
    pub location: String,
    /// ERR-3.1 (2.5.1) or the code in ERR-1.4 (2.3.1).
    pub code: String,
    /// ERR-4, when it is one of E, W, I.
    pub severity: Option<Severity>,
    /// ERR-8 (user message), as written.
    pub text: String,
}

impl AnswerError {
    /// The segment the location names (`RXA` of `RXA^1^5`).
    pub fn segment(&self) -> &str {
        self.location.split('^').next().unwrap_or("").trim()
    }
}

/// Most ERR segments kept of one answer; more are counted in the class but
/// not kept.
const MAX_ERRORS: usize = 1024;

/// Most detection ids kept of one answer.
const MAX_DETECTIONS: usize = 64;

/// How strictly a destination's answers must name the message they answer
/// (`answer_match` of a destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMatch {
    /// MSA-2 must equal the MSH-10 sent (an empty MSA-2 does not match);
    /// for a query, QAK-1 must equal QPD-2 when both are there.
    #[default]
    Strict,
    /// As `Strict`, but an answer without MSA-2 is taken: for an IIS that
    /// does not echo control ids. A stray answer without MSA-2 would be
    /// taken as well.
    ControlId,
    /// Any frame is the answer to the message last sent. A stray or
    /// duplicated frame from the IIS then answers the wrong message.
    Off,
}

impl AnswerMatch {
    /// Reads the configuration value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "strict" => Some(AnswerMatch::Strict),
            "control-id" => Some(AnswerMatch::ControlId),
            "off" => Some(AnswerMatch::Off),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerMatch::Strict => "strict",
            AnswerMatch::ControlId => "control-id",
            AnswerMatch::Off => "off",
        }
    }
}

/// What a delivered message asks to be answered: its MSH-10 and, for a
/// query, its query tag (QPD-2), as the IIS received them (after plugins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Question {
    control_id: String,
    query_tag: String,
}

impl Question {
    /// The question of a message's text: MSH-10 and QPD-2 (first
    /// component, empty when there is no QPD).
    pub fn of(text: &str) -> Self {
        let sep = text
            .strip_prefix("MSH")
            .and_then(|r| r.chars().next())
            .unwrap_or('|');
        let mut question = Question::default();
        // MSH-1 is the separator itself: MSH-10 is the 9th piece after it.
        let msh = text.find(['\r', '\n']).map_or(text, |end| &text[..end]);
        if let Some(rest) = msh.strip_prefix("MSH") {
            question.control_id = rest.split(sep).nth(9).unwrap_or("").trim().to_string();
        }
        // The first QPD segment, found without walking every segment (a VXU
        // has none, and is searched once, vectorised).
        let mut from = 0;
        while let Some(at) = text
            .get(from..)
            .and_then(|rest| memchr::memmem::find(rest.as_bytes(), b"QPD"))
        {
            let start = from + at;
            from = start + 3;
            let at_line_start = start
                .checked_sub(1)
                .and_then(|i| text.as_bytes().get(i))
                .is_some_and(|&b| b == b'\r' || b == b'\n');
            if !at_line_start {
                continue;
            }
            let line = &text[start..];
            let line = line.find(['\r', '\n']).map_or(line, |end| &line[..end]);
            if let Some(rest) = line.strip_prefix("QPD").and_then(|r| r.strip_prefix(sep)) {
                question.query_tag = first_component(rest.split(sep).nth(1).unwrap_or(""));
                break;
            }
        }
        question
    }

    /// The question of a message's bytes, decoded with its MSH-18.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        match decode(bytes) {
            Ok((text, _)) => Question::of(&text),
            Err(_) => Question::of(&String::from_utf8_lossy(bytes)),
        }
    }

    /// MSH-10 of the message sent.
    pub fn control_id(&self) -> &str {
        &self.control_id
    }

    /// QPD-2 of the query sent, or empty.
    pub fn query_tag(&self) -> &str {
        &self.query_tag
    }
}

fn first_component(field: &str) -> String {
    field
        .split('~')
        .next()
        .and_then(|r| r.split('^').next())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// An IIS's answer, read once.
#[derive(Debug, Clone)]
pub struct IisAnswer {
    bytes: Bytes,
    text: String,
    charset: Charset,
    ack: Option<MsaCode>,
    control_id: String,
    query_tag: String,
    query_status: String,
    class: AnswerClass,
    errors: Vec<AnswerError>,
    detections: Vec<String>,
}

/// What one MSA segment says.
struct Msa {
    code: String,
    text: String,
}

impl IisAnswer {
    /// Reads an answer as it came off the wire: decoded with its MSH-18
    /// (bytes that do not fit it are read as UTF-8, replacing what is not),
    /// then its MSA, QAK and ERR segments.
    pub fn parse(bytes: Bytes) -> Self {
        let (text, charset) = match decode(&bytes) {
            Ok(ok) => ok,
            Err(_) => (String::from_utf8_lossy(&bytes).into_owned(), Charset::Utf8),
        };
        Self::read(bytes, text, charset)
    }

    /// Reads an answer from text (tests, SOAP bodies): encoded as UTF-8.
    pub fn from_text(text: &str) -> Self {
        Self::parse(Bytes::from(text.as_bytes().to_vec()))
    }

    fn read(bytes: Bytes, text: String, charset: Charset) -> Self {
        let field_sep = text
            .split(['\r', '\n'])
            .find_map(|s| s.strip_prefix("MSH").and_then(|r| r.chars().next()))
            .unwrap_or('|');
        let mut msas: Vec<Msa> = Vec::new();
        let mut errors: Vec<AnswerError> = Vec::new();
        let mut detections: Vec<String> = Vec::new();
        let (mut ack, mut control_id) = (None, String::new());
        let (mut query_tag, mut query_status) = (String::new(), String::new());
        let mut seen_qak = false;
        for seg in text
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let mut fields = seg.split(field_sep);
            let name = fields.next().unwrap_or("").trim();
            if !matches!(name, "MSA" | "QAK" | "ERR") {
                continue;
            }
            let fields: Vec<&str> = fields.collect();
            // f(n) is SEG-n.
            let f = |n: usize| {
                n.checked_sub(1)
                    .and_then(|i| fields.get(i))
                    .copied()
                    .unwrap_or("")
                    .trim()
            };
            match name {
                "MSA" => {
                    if msas.is_empty() {
                        ack = Some(MsaCode::parse(f(1)));
                        control_id = f(2).to_string();
                    }
                    if msas.len() < MAX_ERRORS {
                        msas.push(Msa {
                            code: f(1).to_ascii_uppercase(),
                            text: f(3).to_string(),
                        });
                    }
                }
                "QAK" if !seen_qak => {
                    seen_qak = true;
                    query_tag = f(1).to_string();
                    query_status = f(2).to_string();
                }
                "ERR" if errors.len() < MAX_ERRORS => {
                    let error = read_err(&f);
                    if let Some(id) = detection_id(&error.text)
                        && detections.len() < MAX_DETECTIONS
                        && !detections.iter().any(|d| d == id)
                    {
                        detections.push(id.to_string());
                    }
                    errors.push(error);
                }
                _ => {}
            }
        }
        let class = classify(&msas, &errors);
        IisAnswer {
            bytes,
            text,
            charset,
            ack,
            control_id,
            query_tag,
            query_status,
            class,
            errors,
            detections,
        }
    }

    /// Whether this answer belongs to `question`, under `mode`.
    pub fn answers(&self, question: &Question, mode: AnswerMatch) -> bool {
        let tag_matches = question.query_tag.is_empty()
            || self.query_tag.is_empty()
            || self.query_tag == question.query_tag;
        match mode {
            AnswerMatch::Off => true,
            AnswerMatch::Strict => {
                !self.control_id.is_empty() && self.control_id == question.control_id && tag_matches
            }
            AnswerMatch::ControlId => {
                (self.control_id.is_empty() || self.control_id == question.control_id)
                    && tag_matches
            }
        }
    }

    /// The bytes as they came.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The answer decoded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The character set its bytes are in.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// MSA-1 of the first MSA segment; `None` without MSA.
    pub fn ack(&self) -> Option<MsaCode> {
        self.ack
    }

    /// MSA-1 as a metric label (`none` without MSA).
    pub fn ack_label(&self) -> &'static str {
        self.ack.map_or("none", MsaCode::as_str)
    }

    /// MSA-2 of the first MSA segment: the control id it answers.
    pub fn control_id(&self) -> &str {
        &self.control_id
    }

    /// QAK-1: the query tag a query's answer names (empty without QAK).
    pub fn query_tag(&self) -> &str {
        &self.query_tag
    }

    /// QAK-2: the query's status (OK, NF, AE, AR, TM, …), as written.
    pub fn query_status(&self) -> &str {
        &self.query_status
    }

    /// What the IIS did with the message.
    pub fn class(&self) -> AnswerClass {
        self.class
    }

    /// The ERR segments, in order.
    pub fn errors(&self) -> &[AnswerError] {
        &self.errors
    }

    /// Detection ids at the end of ERR-8 texts (`… [patient-birth-date-missing]`).
    pub fn detections(&self) -> &[String] {
        &self.detections
    }

    /// The IIS refused the message for good (MSA-1 AR or CR): sending it
    /// again cannot succeed.
    pub fn refused_for_good(&self) -> bool {
        self.ack.is_some_and(MsaCode::is_reject)
    }
}

/// One ERR segment: 2.5.1 (ERR-2 location, ERR-3 code, ERR-4 severity,
/// ERR-8 text) or 2.3.1 (ERR-1 "SEG^seq^field^code&text", no severity).
fn read_err<'a>(f: &impl Fn(usize) -> &'a str) -> AnswerError {
    let (location, code, text) = if f(2).is_empty() && f(3).is_empty() && f(4).is_empty() {
        let first = f(1).split('~').next().unwrap_or("");
        let mut coded = first.split('^').nth(3).unwrap_or("").split('&');
        let code = coded.next().unwrap_or("").to_string();
        let text = coded.next().unwrap_or("").to_string();
        (first.to_string(), code, text)
    } else {
        (
            f(2).to_string(),
            f(3).split('^').next().unwrap_or("").to_string(),
            f(8).to_string(),
        )
    };
    let severity = match f(4).chars().next().map(|c| c.to_ascii_uppercase()) {
        Some('E') => Some(Severity::Error),
        Some('W') => Some(Severity::Warning),
        Some('I') => Some(Severity::Info),
        _ => None,
    };
    AnswerError {
        location,
        code,
        severity,
        text,
    }
}

/// The detection id at the end of an issue or ERR-8 text
/// (`… [patient-birth-date-missing]`): lowercase letters, digits and `-`,
/// at most 64 characters.
pub fn detection_id(text: &str) -> Option<&str> {
    let inner = text.trim_end().strip_suffix(']')?;
    let (_, id) = inner.rsplit_once('[')?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(id)
}

/// Segments whose rejection leaves the rest of a submission standing.
const PART_SEGMENTS: [&str; 5] = ["RXA", "RXR", "OBX", "ORC", "NK1"];

fn lower_has(text: &str, words: &[&str]) -> bool {
    let t = text.to_ascii_lowercase();
    words.iter().any(|w| t.contains(w))
}

/// The class of an answer from its MSA segments and ERR segments, as a
/// person reading it would judge.
fn classify(msas: &[Msa], errs: &[AnswerError]) -> AnswerClass {
    if msas.is_empty() {
        return AnswerClass::Unreadable;
    }
    let worst = |codes: &[&str]| msas.iter().any(|m| codes.contains(&m.code.as_str()));
    if worst(&["AR", "CR"]) {
        return AnswerClass::Rejected;
    }
    // An IIS that says "rejected" in MSA-3 rejected it, whatever MSA-1 says.
    if msas.iter().any(|m| {
        lower_has(
            &m.text,
            &["reject", "not accepted", "all immunizations invalid"],
        )
    }) {
        return AnswerClass::Rejected;
    }
    let is_error = |e: &AnswerError, in_error_ack: bool| match e.severity {
        Some(Severity::Error) => true,
        Some(_) => false,
        // No severity: an error when the ACK says error and the code is not "0".
        None => in_error_ack && e.code != "0",
    };
    let errored = worst(&["AE", "CE"]);
    let errors: Vec<&AnswerError> = errs.iter().filter(|e| is_error(e, errored)).collect();
    if errored && (!errors.is_empty() || errs.is_empty()) {
        let partial =
            !errors.is_empty() && errors.iter().all(|e| PART_SEGMENTS.contains(&e.segment()));
        return if partial {
            AnswerClass::RejectedPartly
        } else {
            AnswerClass::Rejected
        };
    }
    if !errors.is_empty() {
        // AA with error-severity findings: the IIS kept the message but not all of it.
        return AnswerClass::RejectedPartly;
    }
    let warned = errs.iter().any(|e| {
        e.severity == Some(Severity::Warning)
            || (e.severity.is_none() && e.code != "0" && !e.code.is_empty())
    }) || errored
        || msas.iter().any(|m| {
            lower_has(
                &m.text,
                &[
                    "warn",
                    "informational",
                    "inaccurate",
                    "missing",
                    "invalid",
                    "not stored",
                    "no value stored",
                    "error",
                ],
            )
        });
    if warned {
        AnswerClass::AcceptedWithWarnings
    } else {
        AnswerClass::Accepted
    }
}

/// Classifies an IIS answer (ACK, or RSP for a query) given as text.
pub fn classify_answer(answer: &str) -> AnswerClass {
    IisAnswer::from_text(answer).class()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every real IIS ACK in the corpus copy has its expected class written
    /// next to it (`NAME.expected`), as a person reading it would judge.
    #[test]
    fn corpus_acks_are_classified_as_a_person_would() {
        let root = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
            .join("../samples/corpus");
        let mut checked = 0;
        for dir in ["aira-smm-tester-iis-acks", "izgateway-v2tofhir"] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for file in files
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            {
                let expected_file = file.with_extension("expected");
                let expected = std::fs::read_to_string(&expected_file)
                    .unwrap_or_else(|_| panic!("{} has no .expected file", file.display()));
                let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
                let got = classify_answer(&text);
                assert_eq!(
                    got.as_str(),
                    expected.lines().next().unwrap().trim(),
                    "{}",
                    file.display()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 16 + 8);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(classify_answer(""), AnswerClass::Unreadable);
        assert_eq!(
            classify_answer("MSH|^~\\&|X\rMSA|AE\r"),
            AnswerClass::Rejected
        );
        assert_eq!(
            classify_answer("MSH|^~\\&|X\rMSA|AA|1\rERR||RXA^1^5|103|E\r"),
            AnswerClass::RejectedPartly
        );
        assert_eq!(
            classify_answer("MSH|^~\\&|X\rMSA|CA|1\r"),
            AnswerClass::Accepted
        );
    }

    #[test]
    fn an_answer_is_read_once_with_its_ids_errors_and_detections() {
        let a = IisAnswer::from_text(
            "MSH|^~\\&|IIS\rMSA|AE|Q-1|bad\rQAK|tag-7|AE\rERR||RXA^1^5|103^Table value not found|E||||Wrong code [vaccination-code-invalid]\rERR|PID^1^7^101&Missing\r",
        );
        assert_eq!(a.ack(), Some(MsaCode::AE));
        assert_eq!(a.control_id(), "Q-1");
        assert_eq!(a.query_tag(), "tag-7");
        assert_eq!(a.query_status(), "AE");
        assert_eq!(a.errors().len(), 2);
        assert_eq!(a.errors()[0].segment(), "RXA");
        assert_eq!(a.errors()[0].severity, Some(Severity::Error));
        assert_eq!(a.errors()[1].code, "101");
        assert_eq!(a.errors()[1].text, "Missing");
        assert_eq!(a.detections(), ["vaccination-code-invalid"]);
        assert!(!a.refused_for_good());
        assert!(IisAnswer::from_text("MSH|^~\\&|X\rMSA|CR|1\r").refused_for_good());
        assert_eq!(IisAnswer::from_text("garbage").ack_label(), "none");
    }

    #[test]
    fn an_answer_matches_only_the_question_it_answers() {
        let vxu = Question::of("MSH|^~\\&|A|B|C|D|20250101||VXU^V04|VXU-1|P|2.5.1\rPID|1");
        assert_eq!(vxu.control_id(), "VXU-1");
        assert_eq!(vxu.query_tag(), "");
        let qbp = Question::of(
            "MSH|^~\\&|A|B|C|D|20250101||QBP^Q11|Q-1|P|2.5.1\nQPD|Z34^Request^CDCPHINVS|tag-7|MRN1",
        );
        assert_eq!((qbp.control_id(), qbp.query_tag()), ("Q-1", "tag-7"));
        let inside = Question::of(
            "MSH|^~\\&|A|B|C|D|20250101||QBP^Q11|Q-2|P|2.5.1\rNTE|QPD|x|QPD\rQPDX|a|b\rQPD|Z34|tag-9",
        );
        assert_eq!(inside.query_tag(), "tag-9", "QPD only at a segment's start");
        let answer = |msa: &str, qak: &str| {
            IisAnswer::from_text(&format!("MSH|^~\\&|IIS\rMSA|AA|{msa}\rQAK|{qak}|OK\r"))
        };
        let strict = AnswerMatch::Strict;
        assert!(answer("Q-1", "tag-7").answers(&qbp, strict));
        assert!(
            answer("Q-1", "").answers(&qbp, strict),
            "no QAK-1: MSA-2 decides"
        );
        assert!(!answer("Q-2", "tag-7").answers(&qbp, strict));
        assert!(
            !answer("Q-1", "tag-8").answers(&qbp, strict),
            "another query's tag"
        );
        assert!(!answer("", "tag-7").answers(&qbp, strict), "empty MSA-2");
        assert!(answer("", "tag-7").answers(&qbp, AnswerMatch::ControlId));
        assert!(!answer("Q-2", "tag-7").answers(&qbp, AnswerMatch::ControlId));
        assert!(!answer("Q-1", "tag-8").answers(&qbp, AnswerMatch::ControlId));
        assert!(answer("Q-2", "tag-8").answers(&qbp, AnswerMatch::Off));
        assert!(!IisAnswer::from_text("not hl7").answers(&vxu, strict));
        assert!(
            IisAnswer::from_text("MSH|^~\\&|IIS\rMSA|AA| VXU-1 \r").answers(&vxu, strict),
            "spaces around MSA-2"
        );
        for mode in ["strict", "control-id", "off"] {
            assert_eq!(
                AnswerMatch::parse(mode).map(AnswerMatch::as_str),
                Some(mode)
            );
        }
        assert_eq!(AnswerMatch::parse("loose"), None);
    }
}
