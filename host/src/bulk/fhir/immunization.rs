//! ORC/RXA/RXR/OBX groups → FHIR R4 Immunization, and the evaluation OBX
//! of a Z42 answer → ImmunizationEvaluation.

use serde_json::{Map, Number, Value, json};

use super::{Context, Notes, coding, concept, put, res_id};
use crate::bulk::rsp::Seg;

/// The most OBX kept under one RXA.
const MAX_OBX: usize = 500;

/// One administration group: an RXA and what follows it up to the next
/// ORC or RXA.
pub(super) struct Group<'a> {
    pub rxa: Seg<'a>,
    pub rxr: Option<Seg<'a>>,
    pub obx: Vec<Seg<'a>>,
}

impl Group<'_> {
    /// Whether this is a forecast group (RXA-5 998, "no vaccine administered").
    pub fn is_forecast(&self) -> bool {
        self.rxa.text(5, 1) == "998"
    }
}

/// Splits the segments after the PID into RXA groups. An OBX after an ORC
/// that has no RXA of its own belongs to no group and is not read.
pub(super) fn groups<'a>(segs: &[Seg<'a>], max: usize, notes: &mut Notes) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = Vec::new();
    let mut open = false;
    for seg in segs {
        match seg.name() {
            "ORC" | "PID" => open = false,
            "RXA" => {
                if out.len() >= max {
                    notes.add(
                        "warning",
                        "too-costly",
                        &format!(
                            "the answer has more than {max} RXA segments; the rest is not read"
                        ),
                        None,
                    );
                    break;
                }
                out.push(Group {
                    rxa: *seg,
                    rxr: None,
                    obx: Vec::new(),
                });
                open = true;
            }
            "RXR" if open => {
                if let Some(g) = out.last_mut().filter(|g| g.rxr.is_none()) {
                    g.rxr = Some(*seg);
                }
            }
            "OBX" if open => {
                if let Some(g) = out.last_mut().filter(|g| g.obx.len() < MAX_OBX) {
                    g.obx.push(*seg);
                }
            }
            _ => {}
        }
    }
    out
}

/// The LOINC code of an OBX (OBX-3.1, trimmed: some IIS pad it).
pub(super) fn loinc(obx: &Seg<'_>) -> String {
    obx.text(3, 1)
}

/// The OBX codes that name a vaccine type or group: 30956-7 (vaccine type),
/// 30979-9 (vaccines due next, which some registries use in forecasts) and
/// 38890-0 (component vaccine type, in evaluations).
const VACCINE_TYPE: [&str; 3] = ["30956-7", "30979-9", "38890-0"];

/// The first OBX of a sub-group that names its vaccine type.
pub(super) fn vaccine_type<'a, 'b>(group: &'b [Seg<'a>]) -> Option<&'b Seg<'a>> {
    group
        .iter()
        .find(|o| VACCINE_TYPE.contains(&loinc(o).as_str()))
}

/// OBX split by sub-id (OBX-4); without sub-ids, a new sub-group starts at
/// each vaccine type (see [`VACCINE_TYPE`]) or VIS document type (69764-9).
pub(super) fn subgroups<'a>(obx: &[Seg<'a>]) -> Vec<Vec<Seg<'a>>> {
    let mut keys: Vec<String> = Vec::new();
    let mut out: Vec<Vec<Seg<'a>>> = Vec::new();
    let mut counter = 0;
    for seg in obx {
        let mut key = seg.text(4, 1);
        if key.is_empty() {
            let code = loinc(seg);
            if VACCINE_TYPE.contains(&code.as_str()) || code == "69764-9" || counter == 0 {
                counter += 1;
            }
            key = format!("#{counter}");
        }
        match keys.iter().position(|k| *k == key) {
            Some(at) => {
                if let Some(list) = out.get_mut(at) {
                    list.push(*seg);
                }
            }
            None => {
                keys.push(key);
                out.push(vec![*seg]);
            }
        }
    }
    out
}

fn first_with<'a, 'b>(group: &'b [Seg<'a>], code: &str) -> Option<&'b Seg<'a>> {
    group.iter().find(|o| loinc(o) == code)
}

fn dose_quantity(rxa: &Seg<'_>) -> Option<Value> {
    let amount = rxa.text(6, 1);
    if amount.is_empty() || amount == "999" {
        return None;
    }
    let value = amount
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    let mut q = Map::new();
    q.insert("value".into(), Value::Number(Number::from_f64(value)?));
    let (code, text, system) = (rxa.text(7, 1), rxa.text(7, 2), rxa.text(7, 3));
    if code.eq_ignore_ascii_case("ml") {
        q.insert("unit".into(), json!("mL"));
        q.insert("system".into(), json!("http://unitsofmeasure.org"));
        q.insert("code".into(), json!("mL"));
    } else if system.eq_ignore_ascii_case("UCUM") && !code.is_empty() {
        put(
            &mut q,
            "unit",
            if text.is_empty() { code.clone() } else { text },
        );
        q.insert("system".into(), json!("http://unitsofmeasure.org"));
        put(&mut q, "code", code);
    } else {
        put(&mut q, "unit", if text.is_empty() { code } else { text });
    }
    Some(Value::Object(q))
}

fn performers(rxa: &Seg<'_>) -> Vec<Value> {
    rxa.reps(10)
        .iter()
        .filter_map(|r| {
            let name = [r.c(6), r.c(3), r.c(4), r.c(2)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let mut actor = Map::new();
            put(
                &mut actor,
                "display",
                if name.is_empty() { r.c(1) } else { name },
            );
            if !r.c(1).is_empty() {
                actor.insert("identifier".into(), json!({"value": r.c(1)}));
            }
            (!actor.is_empty()).then(|| {
                json!({
                    "function": {"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0443",
                        "code": "AP",
                        "display": "Administering Provider"
                    }]},
                    "actor": actor
                })
            })
        })
        .collect()
}

/// VIS OBX (69764-9 document type, 29768-9 published, 29769-7 presented)
/// → `education`, one entry per sub-group.
fn education(group: &Group<'_>, notes: &mut Notes) -> Vec<Value> {
    let mut out = Vec::new();
    for sub in subgroups(&group.obx) {
        let doc = first_with(&sub, "69764-9");
        let published = first_with(&sub, "29768-9");
        let presented = first_with(&sub, "29769-7");
        if doc.is_none() && published.is_none() && presented.is_none() {
            continue;
        }
        let mut e = Map::new();
        let doc_type = doc
            .map(|o| {
                [o.text(5, 2), o.text(5, 1)]
                    .into_iter()
                    .find(|t| !t.is_empty())
                    .unwrap_or_default()
            })
            .or_else(|| vaccine_type(&sub).map(|o| o.text(5, 2)))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Vaccine Information Statement".to_string());
        put(&mut e, "documentType", doc_type);
        for (obx, key, at) in [
            (published, "publicationDate", "OBX 29768-9"),
            (presented, "presentationDate", "OBX 29769-7"),
        ] {
            if let Some(d) = obx.and_then(|o| notes.date(&o.text(5, 1), true, at)) {
                e.insert(key.into(), json!(d));
            }
        }
        out.push(Value::Object(e));
    }
    out
}

fn push_unique(list: &mut Vec<Value>, v: Option<Value>) {
    if let Some(v) = v.filter(|v| !list.contains(v)) {
        list.push(v);
    }
}

/// The FHIR Immunization for one RXA group; `n` numbers it within the answer.
pub(super) fn immunization(group: &Group<'_>, ctx: &Context, n: usize, notes: &mut Notes) -> Value {
    let rxa = &group.rxa;
    let mut imm = Map::new();
    imm.insert("resourceType".into(), json!("Immunization"));
    imm.insert("id".into(), json!(res_id(ctx.tag, &format!("imm-{n}"))));
    let status = if rxa.text(21, 1).eq_ignore_ascii_case("D") {
        "entered-in-error"
    } else {
        match rxa.text(20, 1).to_uppercase().as_str() {
            "NA" | "RE" => "not-done",
            _ => "completed",
        }
    };
    imm.insert("status".into(), json!(status));
    if let Some(reason) = concept(rxa.rep(18)) {
        imm.insert("statusReason".into(), reason);
    }
    let vaccine = concept(rxa.rep(5)).unwrap_or_else(|| {
        notes.add(
            "warning",
            "required",
            &format!("RXA #{n} has no vaccine code (RXA-5)"),
            Some("RXA-5"),
        );
        json!({"text": "vaccine not stated"})
    });
    imm.insert("vaccineCode".into(), vaccine);
    imm.insert(
        "patient".into(),
        json!({"reference": format!("Patient/{}", res_id(ctx.tag, "patient"))}),
    );
    let when = rxa.text(3, 1);
    match notes.date(&when, true, "RXA-3") {
        Some(d) => imm.insert("occurrenceDateTime".into(), json!(d)),
        None => imm.insert(
            "occurrenceString".into(),
            json!(if when.is_empty() {
                "unknown".to_string()
            } else {
                when.chars().take(40).collect()
            }),
        ),
    };
    source(rxa, &mut imm);
    let facility = rxa.rep(11).map(|r| {
        [r.s(4, 1), r.c(1)]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default()
    });
    if let Some(f) = facility.filter(|f| !f.is_empty()) {
        imm.insert("location".into(), json!({"display": f}));
    }
    if let Some(m) = manufacturer(rxa) {
        imm.insert("manufacturer".into(), m);
    }
    put(&mut imm, "lotNumber", rxa.text(15, 1));
    if let Some(d) = notes.date(&rxa.text(16, 1), false, "RXA-16") {
        imm.insert("expirationDate".into(), json!(d));
    }
    if let Some(rxr) = &group.rxr {
        if let Some(site) = concept(rxr.rep(2)) {
            imm.insert("site".into(), site);
        }
        if let Some(route) = concept(rxr.rep(1)) {
            imm.insert("route".into(), route);
        }
    }
    if let Some(q) = dose_quantity(rxa) {
        imm.insert("doseQuantity".into(), q);
    }
    let performers = performers(rxa);
    if !performers.is_empty() {
        imm.insert("performer".into(), Value::Array(performers));
    }
    let education = education(group, notes);
    if !education.is_empty() {
        imm.insert("education".into(), Value::Array(education));
    }
    let mut eligibility = Vec::new();
    for obx in group.obx.iter().filter(|o| loinc(o) == "64994-7") {
        push_unique(&mut eligibility, concept(obx.rep(5)));
    }
    if !eligibility.is_empty() {
        imm.insert("programEligibility".into(), Value::Array(eligibility));
    }
    if let Some(funding) = first_with(&group.obx, "30963-3").and_then(|o| concept(o.rep(5))) {
        imm.insert("fundingSource".into(), funding);
    }
    Value::Object(imm)
}

/// RXA-9 as `primarySource`: true for a new dose given here ("00"), else
/// false with the record's origin.
fn source(rxa: &Seg<'_>, imm: &mut Map<String, Value>) {
    match rxa.text(9, 1).as_str() {
        "" => {}
        "00" => {
            imm.insert("primarySource".into(), json!(true));
        }
        _ => {
            imm.insert("primarySource".into(), json!(false));
            if let Some(origin) = concept(rxa.rep(9)) {
                imm.insert("reportOrigin".into(), origin);
            }
        }
    }
}

/// RXA-17 as the manufacturer: its name, and its MVX code as an identifier.
fn manufacturer(rxa: &Seg<'_>) -> Option<Value> {
    let (mvx, maker) = (rxa.text(17, 1), rxa.text(17, 2));
    if mvx.is_empty() && maker.is_empty() {
        return None;
    }
    let mut m = Map::new();
    put(
        &mut m,
        "display",
        if maker.is_empty() { mvx.clone() } else { maker },
    );
    if !mvx.is_empty() {
        m.insert(
            "identifier".into(),
            json!({"system": "http://terminology.hl7.org/CodeSystem/MVX", "value": mvx}),
        );
    }
    Some(Value::Object(m))
}

/// A dose number as FHIR's `doseNumberPositiveInt` or `doseNumberString`.
pub(super) fn dose_number(obj: &mut Map<String, Value>, text: &str) {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => {
            obj.insert("doseNumberPositiveInt".into(), json!(n));
        }
        _ => put(obj, "doseNumberString", text),
    }
}

/// The ImmunizationEvaluation resources of one RXA group (Z42): one per
/// sub-group that states a dose validity (59781-5).
pub(super) fn evaluations(group: &Group<'_>, ctx: &Context, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for sub in subgroups(&group.obx) {
        let Some(validity) = first_with(&sub, "59781-5") else {
            continue;
        };
        let mut e = Map::new();
        e.insert("resourceType".into(), json!("ImmunizationEvaluation"));
        e.insert(
            "id".into(),
            json!(res_id(ctx.tag, &format!("imm-{n}-eval-{}", out.len() + 1))),
        );
        e.insert("status".into(), json!("completed"));
        e.insert(
            "patient".into(),
            json!({"reference": format!("Patient/{}", res_id(ctx.tag, "patient"))}),
        );
        let target = vaccine_type(&sub)
            .and_then(|o| concept(o.rep(5)))
            .unwrap_or_else(|| json!({"text": "vaccine group not stated"}));
        e.insert("targetDisease".into(), target);
        e.insert(
            "immunizationEvent".into(),
            json!({"reference": format!("Immunization/{}", res_id(ctx.tag, &format!("imm-{n}")))}),
        );
        let said = validity.text(5, 1);
        let status = match said.to_uppercase().as_str() {
            "Y" => coding("valid", "Valid", ""),
            "N" => coding("notvalid", "Not valid", ""),
            _ => None,
        };
        let status = match status {
            Some(mut c) => {
                c["system"] = json!(
                    "http://terminology.hl7.org/CodeSystem/immunization-evaluation-dose-status"
                );
                json!({"coding": [c], "text": said})
            }
            None => json!({"text": if said.is_empty() { "not stated".to_string() } else { said }}),
        };
        e.insert("doseStatus".into(), status);
        if let Some(reason) = first_with(&sub, "30982-3")
            .map(|o| o.text(5, 1))
            .filter(|r| !r.is_empty())
        {
            e.insert("doseStatusReason".into(), json!([{"text": reason}]));
        }
        if let Some(schedule) = first_with(&sub, "59779-9")
            .map(|o| o.text(5, 2))
            .filter(|s| !s.is_empty())
        {
            e.insert("authority".into(), json!({"display": schedule}));
        }
        if let Some(dose) = first_with(&sub, "30973-2") {
            dose_number(&mut e, &dose.text(5, 1));
        }
        out.push(Value::Object(e));
    }
    out
}
