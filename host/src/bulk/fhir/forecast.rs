//! The forecast groups of a Z42 answer (RXA-5 998) → one FHIR R4
//! ImmunizationRecommendation with a recommendation per vaccine type.

use serde_json::{Map, Value, json};

use super::immunization::{Group, dose_number, loinc, subgroups, vaccine_type};
use super::{Context, Notes, concept, res_id};
use crate::bulk::rsp;

/// The forecast dates, by LOINC code, with the display FHIR shows.
const DATE_CRITERIA: [(&str, &str); 4] = [
    ("30980-7", "Date vaccine due"),
    ("30981-5", "Earliest date to give"),
    ("59777-3", "Latest date next dose should be given"),
    ("59778-1", "Date when overdue for immunization"),
];

fn one(
    sub: &[rsp::Seg<'_>],
    ctx_notes: &mut Notes,
    schedule: &mut Option<String>,
) -> Option<Value> {
    let mut rec = Map::new();
    let vaccine = vaccine_type(sub).and_then(|o| concept(o.rep(5)));
    let mut criteria = Vec::new();
    for obx in sub {
        let code = loinc(obx);
        let Some((_, display)) = DATE_CRITERIA.iter().find(|(c, _)| *c == code) else {
            continue;
        };
        if let Some(d) = ctx_notes.date(&obx.text(5, 1), true, &format!("OBX {code}")) {
            criteria.push(json!({
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "value": d
            }));
        }
    }
    let status = sub
        .iter()
        .find(|o| loinc(o) == "59783-1")
        .and_then(|o| concept(o.rep(5)));
    // A row with only a status ("series complete") is still a forecast.
    if vaccine.is_none() && criteria.is_empty() && status.is_none() {
        return None;
    }
    rec.insert(
        "vaccineCode".into(),
        json!([vaccine.unwrap_or_else(|| json!({"text": "vaccine not stated"}))]),
    );
    rec.insert(
        "forecastStatus".into(),
        status.unwrap_or_else(|| json!({"text": "not stated by the IIS"})),
    );
    if !criteria.is_empty() {
        rec.insert("dateCriterion".into(), Value::Array(criteria));
    }
    if let Some(dose) = sub.iter().find(|o| loinc(o) == "30973-2") {
        dose_number(&mut rec, &dose.text(5, 1));
    }
    if schedule.is_none() {
        *schedule = sub
            .iter()
            .find(|o| loinc(o) == "59779-9")
            .map(|o| o.text(5, 2))
            .filter(|s| !s.is_empty());
    }
    Some(Value::Object(rec))
}

/// The recommendation resource for the forecast groups, or `None` when they
/// hold no forecast. Its date is the answer's (MSH-7), else the forecast
/// RXA-3, else today.
pub(super) fn recommendation(
    groups: &[&Group<'_>],
    ctx: &Context,
    msh_time: &str,
    notes: &mut Notes,
) -> Option<Value> {
    let mut schedule = None;
    let mut list = Vec::new();
    for group in groups {
        for sub in subgroups(&group.obx) {
            list.extend(one(&sub, notes, &mut schedule));
        }
    }
    if list.is_empty() {
        return None;
    }
    let date = [msh_time.to_string()]
        .into_iter()
        .chain(groups.iter().map(|g| g.rxa.text(3, 1)))
        .find_map(|d| rsp::to_datetime(&d).ok().flatten())
        .or_else(|| {
            rsp::to_date(
                &crate::hl7::hl7_timestamp()
                    .chars()
                    .take(8)
                    .collect::<String>(),
            )
            .ok()
            .flatten()
        })?;
    let mut rec = json!({
        "resourceType": "ImmunizationRecommendation",
        "id": res_id(ctx.tag, "rec-1"),
        "patient": {"reference": format!("Patient/{}", res_id(ctx.tag, "patient"))},
        "date": date,
        "recommendation": list,
    });
    if let Some(s) = schedule {
        rec["authority"] = json!({"display": s});
    }
    Some(rec)
}
