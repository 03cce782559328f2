//! Reading an IIS's answer the way a person would, however messy it is:
//! AA with an error in MSA-3, several MSA/ERR pairs, FHS/BHS batch wrappers,
//! HL7 2.3.1-style ERR-1, AE with no ERR at all.

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

#[derive(Debug)]
struct Err2 {
    segment: String,
    severity: Option<char>,
    code: String,
}

/// Segments whose rejection leaves the rest of a submission standing.
const PART_SEGMENTS: [&str; 5] = ["RXA", "RXR", "OBX", "ORC", "NK1"];

fn lower_has(text: &str, words: &[&str]) -> bool {
    let t = text.to_ascii_lowercase();
    words.iter().any(|w| t.contains(w))
}

/// Classifies an IIS answer (ACK, or RSP for a query).
pub fn classify_answer(answer: &str) -> AnswerClass {
    let field_sep = answer
        .split(['\r', '\n'])
        .find_map(|s| s.strip_prefix("MSH").and_then(|r| r.chars().next()))
        .unwrap_or('|');
    let mut msas: Vec<(String, String)> = Vec::new();
    let mut errs: Vec<Err2> = Vec::new();
    for seg in answer
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let fields: Vec<&str> = seg.split(field_sep).collect();
        let f = |n: usize| fields.get(n).copied().unwrap_or("").trim();
        match f(0) {
            "MSA" => msas.push((f(1).to_ascii_uppercase(), f(3).to_string())),
            "ERR" => {
                // 2.5.1: ERR-2 location, ERR-3 code, ERR-4 severity.
                // 2.3.1: ERR-1 "SEG^seq^field^code&text", no severity.
                let (location, code) = if f(2).is_empty() && f(3).is_empty() && f(4).is_empty() {
                    let first = f(1).split('~').next().unwrap_or("");
                    let code = first
                        .split('^')
                        .nth(3)
                        .unwrap_or("")
                        .split('&')
                        .next()
                        .unwrap_or("");
                    (first.to_string(), code.to_string())
                } else {
                    (
                        f(2).to_string(),
                        f(3).split('^').next().unwrap_or("").to_string(),
                    )
                };
                let severity = f(4)
                    .chars()
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .filter(|c| "EWI".contains(*c));
                errs.push(Err2 {
                    segment: location.split('^').next().unwrap_or("").to_string(),
                    severity,
                    code,
                });
            }
            _ => {}
        }
    }
    if msas.is_empty() {
        return AnswerClass::Unreadable;
    }
    let worst = |codes: &[&str]| msas.iter().any(|(c, _)| codes.contains(&c.as_str()));
    if worst(&["AR", "CR"]) {
        return AnswerClass::Rejected;
    }
    // An IIS that says "rejected" in MSA-3 rejected it, whatever MSA-1 says.
    if msas.iter().any(|(_, text)| {
        lower_has(
            text,
            &["reject", "not accepted", "all immunizations invalid"],
        )
    }) {
        return AnswerClass::Rejected;
    }
    let is_error = |e: &Err2, in_error_ack: bool| match e.severity {
        Some('E') => true,
        Some(_) => false,
        // No severity: an error when the ACK says error and the code is not "0".
        None => in_error_ack && e.code != "0",
    };
    let errored = worst(&["AE", "CE"]);
    let errors: Vec<&Err2> = errs.iter().filter(|e| is_error(e, errored)).collect();
    if errored && (!errors.is_empty() || errs.is_empty()) {
        let partial = !errors.is_empty()
            && errors
                .iter()
                .all(|e| PART_SEGMENTS.contains(&e.segment.as_str()));
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
        e.severity == Some('W') || (e.severity.is_none() && e.code != "0" && !e.code.is_empty())
    }) || errored
        || msas.iter().any(|(_, text)| {
            lower_has(
                text,
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
}
