//! PID → FHIR R4 Patient, with US Core race and ethnicity.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::{Context, Notes, put, res_id, uri_piece};
use crate::bulk::rsp::{Rep, Seg};

const CDCREC: &str = "urn:oid:2.16.840.1.113883.6.238";
const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
const US_CORE_ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
const MAIDEN_NAME: &str = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// The OMB categories US Core allows in `ombCategory` (and the null flavors).
const OMB_RACE: [&str; 7] = [
    "1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "UNK", "ASKU",
];
const OMB_ETHNICITY: [&str; 4] = ["2135-2", "2186-5", "UNK", "ASKU"];

/// v2 code (upper case) → (FHIR code, display, system), from the IZ Gateway
/// concept maps shipped in `samples/codesets/aira/` (CDCREC codes and the
/// legacy words IIS still send, such as `ASIAN` or `not HISPANIC`).
type ConceptMap = HashMap<String, (String, String, String)>;

fn load_map(csv_text: &str) -> ConceptMap {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    reader
        .records()
        .filter_map(Result::ok)
        .skip(2)
        .filter_map(|r| {
            let v2 = r.get(0)?.trim().to_uppercase();
            let code = r.get(6)?.trim().to_string();
            (!v2.is_empty() && !code.is_empty()).then(|| {
                let display = r.get(8).unwrap_or("").trim().to_string();
                let system = r.get(9).unwrap_or("").trim().to_string();
                (v2, (code, display, system))
            })
        })
        .collect()
}

fn race_map() -> &'static ConceptMap {
    static MAP: OnceLock<ConceptMap> = OnceLock::new();
    MAP.get_or_init(|| {
        load_map(include_str!(
            "../../../../samples/codesets/aira/ConceptMap_USCoreRace.csv"
        ))
    })
}

fn ethnicity_map() -> &'static ConceptMap {
    static MAP: OnceLock<ConceptMap> = OnceLock::new();
    MAP.get_or_init(|| {
        load_map(include_str!(
            "../../../../samples/codesets/aira/ConceptMap_USCoreEthnicity.csv"
        ))
    })
}

/// A US Core race or ethnicity extension from the CE repetitions of PID-10
/// or PID-22: `ombCategory` for the OMB category each maps to, `detailed`
/// for a finer CDCREC code, `text` for what the IIS wrote.
fn race_like(url: &str, reps: &[Rep<'_>], map: &ConceptMap, omb: &[&str]) -> Option<Value> {
    let mut categories: Vec<Value> = Vec::new();
    let mut detailed: Vec<Value> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for rep in reps {
        let (code, text) = (rep.c(1), rep.c(2));
        let Some((mapped, display, system)) = map.get(&code.to_uppercase()) else {
            if let Some(t) = [text, code].into_iter().find(|t| !t.is_empty()) {
                texts.push(t);
            }
            continue;
        };
        let cat = json!({"system": system, "code": mapped, "display": display});
        if omb.contains(&mapped.as_str()) && !categories.contains(&cat) {
            categories.push(cat);
        }
        let is_cdcrec = code.len() == 6 && code.get(4..5) == Some("-");
        if is_cdcrec && !omb.contains(&code.as_str()) {
            let mut d = Map::new();
            d.insert("system".into(), json!(CDCREC));
            put(&mut d, "code", code.clone());
            put(&mut d, "display", text.clone());
            detailed.push(Value::Object(d));
        }
        texts.push(if text.is_empty() {
            if code.chars().any(|c| c.is_ascii_lowercase() || c == ' ') || !is_cdcrec {
                code
            } else {
                display.clone()
            }
        } else {
            text
        });
    }
    if categories.is_empty() && detailed.is_empty() && texts.is_empty() {
        return None;
    }
    let mut ext: Vec<Value> = categories
        .into_iter()
        .map(|c| json!({"url": "ombCategory", "valueCoding": c}))
        .collect();
    ext.extend(
        detailed
            .into_iter()
            .map(|c| json!({"url": "detailed", "valueCoding": c})),
    );
    texts.dedup();
    let text = texts.join(", ");
    ext.push(json!({"url": "text", "valueString": if text.is_empty() { "unknown".to_string() } else { text }}));
    Some(json!({"url": url, "extension": ext}))
}

/// An identifier system for an assigning authority: `urn:oid:` for an
/// ISO OID, else a name under the destination.
pub(super) fn authority_system(iis: &str, namespace: &str, oid: &str, oid_type: &str) -> String {
    if !oid.is_empty()
        && (oid_type.eq_ignore_ascii_case("ISO")
            || oid.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    {
        return format!("urn:oid:{oid}");
    }
    format!("urn:izhub:iis:{}:{}", uri_piece(iis), uri_piece(namespace))
}

fn identifier(value: &str, system: &str, type_code: &str, assigner: &str) -> Value {
    let mut id = Map::new();
    if !type_code.is_empty() {
        id.insert(
            "type".into(),
            json!({"coding": [{"system": V2_0203, "code": type_code}]}),
        );
    }
    put(&mut id, "system", system);
    put(&mut id, "value", value);
    if !assigner.is_empty() {
        id.insert("assigner".into(), json!({"display": assigner}));
    }
    Value::Object(id)
}

fn identifiers(pid: Seg<'_>, ctx: &Context) -> Vec<Value> {
    let mut out: Vec<Value> = pid
        .reps(3)
        .iter()
        .filter(|r| !r.c(1).is_empty())
        .map(|r| {
            let ns = r.s(4, 1);
            let system = authority_system(ctx.iis, &ns, &r.s(4, 2), &r.s(4, 3));
            identifier(&r.c(1), &system, &r.c(5), &ns)
        })
        .collect();
    let p = ctx.patient;
    if !p.mrn.is_empty() {
        let system = format!("urn:izhub:cohort:mrn:{}", uri_piece(&p.mrn_authority));
        out.push(identifier(&p.mrn, &system, "MR", &p.mrn_authority));
    }
    if !p.member_id.is_empty() {
        out.push(identifier(
            &p.member_id,
            "urn:izhub:cohort:member-id",
            "MB",
            "",
        ));
    }
    out
}

fn human_name(r: &Rep<'_>) -> Option<Value> {
    let mut name = Map::new();
    let given: Vec<String> = [r.c(2), r.c(3)]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    let use_ = match r.c(7).as_str() {
        "L" => "official",
        "A" => "nickname",
        "M" => "maiden",
        "C" | "D" => "usual",
        _ => "",
    };
    put(&mut name, "use", use_);
    put(&mut name, "family", r.c(1));
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if !r.c(4).is_empty() {
        name.insert("suffix".into(), json!([r.c(4)]));
    }
    if !r.c(5).is_empty() {
        name.insert("prefix".into(), json!([r.c(5)]));
    }
    (name.contains_key("family") || name.contains_key("given")).then_some(Value::Object(name))
}

fn address(r: &Rep<'_>) -> Option<Value> {
    let mut a = Map::new();
    let lines: Vec<String> = [r.c(1), r.c(2)]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    match r.c(7).as_str() {
        "H" | "P" => put(&mut a, "use", "home"),
        "B" | "O" => put(&mut a, "use", "work"),
        "C" => put(&mut a, "use", "temp"),
        "BA" => put(&mut a, "use", "old"),
        "M" => put(&mut a, "type", "postal"),
        _ => {}
    }
    if !lines.is_empty() {
        a.insert("line".into(), json!(lines));
    }
    put(&mut a, "city", r.c(3));
    put(&mut a, "state", r.c(4));
    put(&mut a, "postalCode", r.c(5));
    put(&mut a, "country", r.c(6));
    put(&mut a, "district", r.c(9));
    (a.len() > usize::from(a.contains_key("use") || a.contains_key("type")))
        .then_some(Value::Object(a))
}

fn telecom(r: &Rep<'_>, default_use: &str) -> Option<Value> {
    let (area, local, email) = (r.c(6), r.c(7), r.c(4));
    let equipment = r.c(3);
    let (system, value) = if !email.is_empty() || equipment.eq_ignore_ascii_case("Internet") {
        ("email", if email.is_empty() { r.c(1) } else { email })
    } else if !local.is_empty() {
        (
            if equipment == "FX" { "fax" } else { "phone" },
            format!("{area}{local}"),
        )
    } else {
        (if equipment == "FX" { "fax" } else { "phone" }, r.c(1))
    };
    if value.is_empty() {
        return None;
    }
    let use_ = match r.c(2).as_str() {
        "PRN" | "ORN" | "VHN" => "home",
        "WPN" => "work",
        "" => default_use,
        _ => "",
    };
    let use_ = if equipment == "CP" { "mobile" } else { use_ };
    let mut t = Map::new();
    put(&mut t, "system", system);
    put(&mut t, "value", value);
    put(&mut t, "use", use_);
    Some(Value::Object(t))
}

/// The FHIR Patient for the PID the IIS answered with.
pub(super) fn patient(pid: Seg<'_>, ctx: &Context, notes: &mut Notes) -> Value {
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Patient"));
    p.insert("id".into(), json!(res_id(ctx.tag, "patient")));
    let mut ext = Vec::new();
    let maiden = pid.text(6, 1);
    if !maiden.is_empty() {
        ext.push(json!({"url": MAIDEN_NAME, "valueString": maiden}));
    }
    ext.extend(race_like(
        US_CORE_RACE,
        &pid.reps(10),
        race_map(),
        &OMB_RACE,
    ));
    ext.extend(race_like(
        US_CORE_ETHNICITY,
        &pid.reps(22),
        ethnicity_map(),
        &OMB_ETHNICITY,
    ));
    if !ext.is_empty() {
        p.insert("extension".into(), Value::Array(ext));
    }
    let ids = identifiers(pid, ctx);
    if !ids.is_empty() {
        p.insert("identifier".into(), Value::Array(ids));
    }
    let names: Vec<Value> = pid.reps(5).iter().filter_map(human_name).collect();
    if !names.is_empty() {
        p.insert("name".into(), Value::Array(names));
    }
    let mut telecoms: Vec<Value> = pid
        .reps(13)
        .iter()
        .filter_map(|r| telecom(r, "home"))
        .collect();
    telecoms.extend(pid.reps(14).iter().filter_map(|r| telecom(r, "work")));
    if !telecoms.is_empty() {
        p.insert("telecom".into(), Value::Array(telecoms));
    }
    match pid.text(8, 1).to_uppercase().as_str() {
        "M" => put(&mut p, "gender", "male"),
        "F" => put(&mut p, "gender", "female"),
        "U" => put(&mut p, "gender", "unknown"),
        "O" | "A" | "N" | "X" => put(&mut p, "gender", "other"),
        _ => {}
    }
    if let Some(d) = notes.date(&pid.text(7, 1), false, "PID-7") {
        p.insert("birthDate".into(), json!(d));
    }
    match pid.text(30, 1).as_str() {
        "Y" => match notes.date(&pid.text(29, 1), true, "PID-29") {
            Some(d) => p.insert("deceasedDateTime".into(), json!(d)),
            None => p.insert("deceasedBoolean".into(), json!(true)),
        },
        "N" => p.insert("deceasedBoolean".into(), json!(false)),
        _ => None,
    };
    let addresses: Vec<Value> = pid.reps(11).iter().filter_map(address).collect();
    if !addresses.is_empty() {
        p.insert("address".into(), Value::Array(addresses));
    }
    match (pid.text(24, 1).as_str(), pid.text(25, 1).parse::<u32>()) {
        ("Y", Ok(order)) if order > 0 => p.insert("multipleBirthInteger".into(), json!(order)),
        ("Y", _) => p.insert("multipleBirthBoolean".into(), json!(true)),
        ("N", _) => p.insert("multipleBirthBoolean".into(), json!(false)),
        _ => None,
    };
    Value::Object(p)
}

/// One candidate of an ambiguous answer, as the IIS gave it: position,
/// name, birth date and identifiers.
pub(super) fn describe(pid: Seg<'_>) -> String {
    let name = pid.rep(5).map_or_else(String::new, |r| {
        [r.c(1), [r.c(2), r.c(3)].join(" ").trim().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let ids: Vec<String> = pid
        .reps(3)
        .iter()
        .map(|r| {
            let extra: Vec<String> = [r.s(4, 1), r.c(5)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            if extra.is_empty() {
                r.c(1)
            } else {
                format!("{} ({})", r.c(1), extra.join(" "))
            }
        })
        .collect();
    let mut out = format!(
        "PID {}: {}",
        pid.text(1, 1),
        if name.is_empty() { "(no name)" } else { &name }
    );
    let born = pid.text(7, 1);
    if !born.is_empty() {
        out.push_str(&format!(", born {born}"));
    }
    if !ids.is_empty() {
        out.push_str(&format!(", id {}", ids.join(", ")));
    }
    out.chars().take(500).collect()
}
