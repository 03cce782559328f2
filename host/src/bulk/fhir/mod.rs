//! An IIS's RSP^K11 answer turned into FHIR R4 resources (JSON values).
//!
//! QAK-2 decides what the answer means, not MSA-1: `OK` with one patient is
//! found (Z32/Z42), several patients or a Z31 profile is ambiguous (never
//! picked: an OperationOutcome lists the candidates), `NF` or an empty Z33
//! is not found, and `TM`, `PD`, `AE`, `AR` are refusals carried in the
//! IIS's own words. The mapping is documented in `docs/bulk.md`.
//!
//! Every resource gets a stable id from the query tag (`{tag}-imm-1`) so the
//! lines of an export link to each other. Nothing here panics on any input:
//! what cannot be read becomes an OperationOutcome.

mod forecast;
mod immunization;
mod patient;

use serde_json::{Map, Value, json};

use super::cohort::Patient;
use super::rsp::{self, Rep, Seg};
use crate::hl7::normalize_segments;

/// What an answer says about the patient asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// One patient, with a history (possibly empty).
    Found,
    /// The IIS holds no such patient.
    NotFound,
    /// Several candidates (Z31): none is picked.
    Ambiguous,
    /// The IIS would not answer: QAK-2 (`TM`, `PD`, `AE`, `AR` or another
    /// code), or `unreadable` when the answer is not a readable RSP, and the
    /// IIS's own words. `retry` when asking again may bring another answer:
    /// the answer could not be read, or an AE names no error or an
    /// application internal error (ERR-3 207: the IIS's own trouble, such as
    /// being busy, or the engine's "IIS did not answer"). Any other refusal
    /// is the IIS's considered answer and would only be sent again.
    Refused {
        code: String,
        text: String,
        retry: bool,
    },
}

/// The resources made from one answer.
#[derive(Debug, Clone)]
pub struct Converted {
    pub outcome: Outcome,
    /// (resource type, resource) in output order.
    pub resources: Vec<(&'static str, Value)>,
    /// OperationOutcome resources for the error file.
    pub errors: Vec<Value>,
}

/// What the conversion needs beside the answer.
pub struct Context<'a> {
    /// The cohort patient the query was for.
    pub patient: &'a Patient,
    /// The query tag (QPD-2), the stem of every resource id.
    pub tag: &'a str,
    /// `YYYYMMDD`: only Immunizations on or after this day are kept.
    pub since: Option<&'a str>,
    /// The destination's name, for the system of the IIS's identifiers.
    pub iis: &'a str,
}

/// The most RXA groups read from one answer (an IIS answering with more is
/// cut, with a warning).
const MAX_GROUPS: usize = 5_000;

/// One FHIR R4 OperationOutcome with a single issue.
pub fn operation_outcome(
    severity: &str,
    code: &str,
    text: &str,
    expression: Option<&str>,
) -> Value {
    let mut issue = json!({
        "severity": severity,
        "code": code,
        "diagnostics": non_empty(text, "(no text)"),
    });
    if let Some(e) = expression.filter(|e| !e.is_empty()) {
        issue["expression"] = json!([e]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

fn non_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.trim().is_empty() {
        fallback
    } else {
        text
    }
}

/// Collects the warnings met while mapping, as OperationOutcome resources.
struct Notes<'a> {
    tag: &'a str,
    list: Vec<Value>,
}

impl Notes<'_> {
    fn add(&mut self, severity: &str, code: &str, text: &str, expression: Option<&str>) {
        let mut oo =
            operation_outcome(severity, code, &format!("{}: {text}", self.tag), expression);
        oo["id"] = json!(res_id(self.tag, &format!("oo-{}", self.list.len() + 1)));
        self.list.push(oo);
    }

    /// A date in FHIR form, or a warning and nothing when it is invalid.
    fn date(&mut self, value: &str, dt: bool, at: &str) -> Option<String> {
        let conv = if dt {
            rsp::to_datetime(value)
        } else {
            rsp::to_date(value)
        };
        match conv {
            Ok(v) => v,
            Err(rsp::InvalidDate) => {
                let shown: String = value.chars().take(40).collect();
                self.add(
                    "warning",
                    "value",
                    &format!("{at} {shown:?} is not a valid date; left out"),
                    Some(at),
                );
                None
            }
        }
    }
}

/// Inserts `key: value` only when the value is a non-empty string.
fn put(obj: &mut Map<String, Value>, key: &str, value: impl Into<String>) {
    let value = value.into();
    if !value.is_empty() {
        obj.insert(key.to_string(), Value::String(value));
    }
}

/// A FHIR code system URI for an HL7 v2 coding-system name, where one is known.
fn system_uri(name: &str) -> Option<String> {
    let upper = name.trim().to_uppercase();
    let known = match upper.as_str() {
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "MVX" => "http://terminology.hl7.org/CodeSystem/MVX",
        "LN" | "LOINC" => "http://loinc.org",
        "NCIT" => "http://ncit.nci.nih.gov",
        "UCUM" => "http://unitsofmeasure.org",
        "CDCREC" => "urn:oid:2.16.840.1.113883.6.238",
        "CDCPHINVS" => "urn:oid:2.16.840.1.114222.4.5.274",
        "SCT" | "SNOMEDCT" => "http://snomed.info/sct",
        _ => {
            let table = upper.strip_prefix("HL7")?;
            if table.len() == 4 && table.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("http://terminology.hl7.org/CodeSystem/v2-{table}"));
            }
            return None;
        }
    };
    Some(known.to_string())
}

/// A Coding from code, display and v2 system name (`None` when no code).
fn coding(code: &str, display: &str, system: &str) -> Option<Value> {
    if code.is_empty() {
        return None;
    }
    let mut c = Map::new();
    if let Some(uri) = system_uri(system) {
        c.insert("system".into(), Value::String(uri));
    }
    put(&mut c, "code", code);
    put(&mut c, "display", display);
    Some(Value::Object(c))
}

/// A CodeableConcept from a CE/CWE repetition: the primary and alternate
/// codings, and the first text as `text`. `None` when it holds nothing.
fn concept(rep: Option<Rep<'_>>) -> Option<Value> {
    let rep = rep?;
    let codings: Vec<Value> = [(1, 2, 3), (4, 5, 6)]
        .iter()
        .filter_map(|&(c, t, s)| coding(&rep.c(c), &rep.c(t), &rep.c(s)))
        .collect();
    let text = [rep.c(2), rep.c(5)]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    if codings.is_empty() && text.is_empty() {
        return None;
    }
    let mut cc = Map::new();
    if !codings.is_empty() {
        cc.insert("coding".into(), Value::Array(codings));
    }
    put(&mut cc, "text", text);
    Some(Value::Object(cc))
}

/// A URI-safe piece of an identifier system (letters, digits, `.-_`).
fn uri_piece(text: &str) -> String {
    let piece: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    non_empty(&piece, "unnamed").to_string()
}

/// A FHIR resource id from the query tag and a suffix: characters FHIR
/// ids do not allow become `-`, and the tag is cut so the id stays within
/// FHIR's 64 characters.
fn res_id(tag: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len());
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let tag = if tag.is_empty() { "q".to_string() } else { tag };
    format!("{tag}-{suffix}")
}

/// The answer read into the parts the outcome depends on.
struct Header {
    profile: String,
    qak_status: String,
    msa_code: String,
    msa_text: String,
    /// ERR: severity (ERR-4), code (ERR-3.1) and words.
    errors: Vec<(String, String, String)>,
}

fn header(segs: &[Seg<'_>]) -> Header {
    let first = |name: &str| segs.iter().find(|s| s.name() == name);
    let msh = first("MSH");
    let qak = first("QAK");
    let msa = first("MSA");
    let mut profile = msh.map(|m| m.text(21, 1)).unwrap_or_default();
    if profile.is_empty() {
        profile = qak.map(|q| q.text(3, 1)).unwrap_or_default();
    }
    let errors = segs
        .iter()
        .filter(|s| s.name() == "ERR")
        .map(|e| {
            let words = [
                e.text(8, 1),
                e.text(5, 5),
                e.text(5, 2),
                e.text(3, 2),
                e.text(1, 4),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or_default();
            (e.text(4, 1).to_uppercase(), e.text(3, 1), words)
        })
        .collect();
    Header {
        profile: profile.to_uppercase(),
        qak_status: qak.map(|q| q.text(2, 1)).unwrap_or_default().to_uppercase(),
        msa_code: msa.map(|m| m.text(1, 1)).unwrap_or_default().to_uppercase(),
        msa_text: msa.map(|m| m.text(3, 1)).unwrap_or_default(),
        errors,
    }
}

/// Whether every ERR of the answer is a warning or a note (ERR-4 `W` or
/// `I`), and there is at least one.
fn warnings_only(h: &Header) -> bool {
    !h.errors.is_empty()
        && h.errors
            .iter()
            .all(|(severity, _, _)| matches!(severity.as_str(), "W" | "I"))
}

/// The IIS's own words for a refusal: ERR-8 (or the ERR codes' text), MSA-3.
fn iis_words(h: &Header) -> String {
    let mut words: Vec<String> = h
        .errors
        .iter()
        .map(|(_, _, w)| w.clone())
        .filter(|w| !w.is_empty())
        .collect();
    if !h.msa_text.is_empty() {
        words.push(h.msa_text.clone());
    }
    words.dedup();
    words.join("; ")
}

fn refusal_issue_code(code: &str) -> &'static str {
    match code {
        "TM" => "too-costly",
        "PD" => "security",
        "AR" => "business-rule",
        _ => "processing",
    }
}

fn refusal_text(code: &str) -> &'static str {
    match code {
        "TM" => "the IIS found too many matching patients",
        "PD" => "the IIS holds this patient's data as protected and will not release it",
        "AE" => "the IIS reported an application error",
        "AR" => "the IIS rejected the query",
        "unreadable" => "the answer could not be read",
        _ => "the IIS did not answer the query",
    }
}

/// Converts one RSP^K11 answer for the patient and tag in `ctx`.
pub fn convert(rsp_text: &str, ctx: &Context) -> Converted {
    let mut notes = Notes {
        tag: ctx.tag,
        list: Vec::new(),
    };
    let text = normalize_segments(rsp_text);
    let text = rsp::unwrap_batch(&text);
    let msg = match rsp::parse(&text) {
        Ok(m) => m,
        Err(e) => return refused(&mut notes, "unreadable", &e, true),
    };
    let segs: Vec<Seg<'_>> = rsp::segments(&msg).collect();
    let h = header(&segs);
    let pids: Vec<Seg<'_>> = segs.iter().copied().filter(|s| s.name() == "PID").collect();
    let status = query_status(&h);
    match status.as_str() {
        "NF" => return not_found(&mut notes, &h),
        "" | "OK" => {}
        // An AE whose errors are all warnings, with the patient: the IIS
        // answered, and said what it thought of the query.
        "AE" if !pids.is_empty() && warnings_only(&h) => {}
        // TM, PD, AE, AR and anything else an IIS may say.
        other => {
            let words = iis_words(&h);
            let retry = other == "AE"
                && (h.errors.is_empty() || h.errors.iter().any(|(_, code, _)| code == "207"));
            return refused(&mut notes, other, &words, retry);
        }
    }
    if h.profile == "Z31" || pids.len() > 1 {
        return ambiguous(ctx, &mut notes, &pids);
    }
    let Some(pid) = pids.first().copied() else {
        if h.profile == "Z33" || status == "OK" || h.profile.is_empty() {
            return not_found(&mut notes, &h);
        }
        let words = iis_words(&h);
        return refused(
            &mut notes,
            "AE",
            non_empty(&words, "no PID segment in the answer"),
            false,
        );
    };
    for (severity, _, words) in &h.errors {
        if matches!(severity.as_str(), "E" | "W") && !words.is_empty() {
            notes.add(
                "warning",
                "informational",
                &format!("the IIS reported: {words}"),
                None,
            );
        }
    }
    let mut resources = vec![("Patient", patient::patient(pid, ctx, &mut notes))];
    let forecast = h.profile == "Z42";
    let groups = immunization::groups(&segs, MAX_GROUPS, &mut notes);
    let mut recommendations = Vec::new();
    let mut n = 0;
    for group in &groups {
        if group.is_forecast() {
            if forecast {
                recommendations.push(group);
            }
            continue;
        }
        let given = group.rxa.text(3, 1);
        let day = rsp::day_key(&given);
        if ctx
            .since
            .is_some_and(|since| day.is_some_and(|d| d < since))
        {
            continue;
        }
        n += 1;
        let imm = immunization::immunization(group, ctx, n, &mut notes);
        resources.push(("Immunization", imm));
        if forecast {
            for eval in immunization::evaluations(group, ctx, n) {
                resources.push(("ImmunizationEvaluation", eval));
            }
        }
    }
    if !recommendations.is_empty() {
        let msh_time = segs.first().map(|m| m.text(7, 1)).unwrap_or_default();
        if let Some(rec) = forecast::recommendation(&recommendations, ctx, &msh_time, &mut notes) {
            resources.push(("ImmunizationRecommendation", rec));
        }
    }
    Converted {
        outcome: Outcome::Found,
        resources,
        errors: notes.list,
    }
}

/// The query's status: QAK-2 decides; MSA-1 only when there is no QAK-2 at
/// all.
fn query_status(h: &Header) -> String {
    if h.qak_status.is_empty() {
        match h.msa_code.as_str() {
            "AE" | "CE" => "AE",
            "AR" | "CR" => "AR",
            _ => "",
        }
        .to_string()
    } else {
        h.qak_status.clone()
    }
}

fn not_found(notes: &mut Notes, h: &Header) -> Converted {
    let words = iis_words(h);
    let text = if words.is_empty() {
        "the IIS holds no patient matching the query".to_string()
    } else {
        format!("the IIS holds no patient matching the query: {words}")
    };
    notes.add("information", "not-found", &text, None);
    Converted {
        outcome: Outcome::NotFound,
        resources: Vec::new(),
        errors: std::mem::take(&mut notes.list),
    }
}

fn refused(notes: &mut Notes, code: &str, words: &str, retry: bool) -> Converted {
    let what = refusal_text(code);
    let text = if words.is_empty() {
        format!("{what} ({code})")
    } else {
        format!("{what} ({code}): {words}")
    };
    notes.add("error", refusal_issue_code(code), &text, None);
    Converted {
        outcome: Outcome::Refused {
            code: code.to_string(),
            text: words.to_string(),
            retry,
        },
        resources: Vec::new(),
        errors: std::mem::take(&mut notes.list),
    }
}

fn ambiguous(ctx: &Context, notes: &mut Notes, pids: &[Seg<'_>]) -> Converted {
    let candidates: Vec<String> = pids
        .iter()
        .take(100)
        .map(|pid| patient::describe(*pid))
        .collect();
    let text = format!(
        "the IIS returned {} candidate patients and none was picked: {}",
        pids.len(),
        candidates.join("; ")
    );
    let mut oo = operation_outcome(
        "error",
        "multiple-matches",
        &format!("{}: {text}", ctx.tag),
        None,
    );
    if let Some(issues) = oo.get_mut("issue").and_then(Value::as_array_mut) {
        for c in &candidates {
            issues.push(json!({"severity": "information", "code": "multiple-matches", "diagnostics": format!("candidate {c}")}));
        }
    }
    oo["id"] = json!(res_id(ctx.tag, &format!("oo-{}", notes.list.len() + 1)));
    notes.list.push(oo);
    Converted {
        outcome: Outcome::Ambiguous,
        resources: Vec::new(),
        errors: std::mem::take(&mut notes.list),
    }
}

#[cfg(test)]
mod tests;
