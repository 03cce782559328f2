//! Reconciliation: per patient, the doses the IIS has that the EHR lacks and
//! the reverse. Doses match by vaccine group (CDC's CVX → vaccine group
//! crosswalk, so a combination vaccine counts for each of its groups; a CVX
//! not in it is its own group) and by date within a tolerance in days. Only
//! completed Immunizations are compared.
//!
//! The EHR side is FHIR R4 Immunization resources; each names its patient by
//! `patient.identifier.value` or by `patient.reference` (`Patient/{key}`),
//! and only those whose key is the patient's are compared.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Which side has a dose the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    OnlyInIis,
    OnlyInEhr,
}

impl Side {
    /// `only-in-iis` or `only-in-ehr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::OnlyInIis => "only-in-iis",
            Side::OnlyInEhr => "only-in-ehr",
        }
    }
}

/// One dose one side has and the other does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// The patient key reconciled.
    pub patient: String,
    pub side: Side,
    /// The vaccine group (`DTAP`, `HepB` …), or the CVX when it has none.
    pub vaccine_group: String,
    /// The dose's CVX code (or the text of its vaccine code when it has none).
    pub cvx: String,
    /// `YYYY-MM-DD`.
    pub date: String,
}

/// The CSV header row for [`Discrepancy::to_csv_line`].
pub const CSV_HEADER: &str = "patient,side,vaccine_group,cvx,date\r\n";

impl Discrepancy {
    /// The discrepancy as a JSON object (one NDJSON line).
    pub fn to_json(&self) -> Value {
        json!({
            "patient": self.patient,
            "side": self.side.as_str(),
            "vaccineGroup": self.vaccine_group,
            "cvx": self.cvx,
            "date": self.date,
        })
    }

    /// One CSV row (RFC 4180, CRLF-terminated). A cell a spreadsheet would
    /// run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
    pub fn to_csv_line(&self) -> String {
        let cells = [
            self.patient.as_str(),
            self.side.as_str(),
            self.vaccine_group.as_str(),
            self.cvx.as_str(),
            self.date.as_str(),
        ]
        .map(|c| {
            if c.starts_with(['=', '+', '-', '@']) {
                format!("'{c}")
            } else {
                c.to_string()
            }
        });
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        if writer.write_record(&cells).is_err() {
            return String::new();
        }
        writer
            .into_inner()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// CVX → the vaccine groups it counts for, from CDC's `vac2vg.xml`.
fn vaccine_groups() -> &'static HashMap<String, Vec<String>> {
    static MAP: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    MAP.get_or_init(|| parse_vac2vg(include_str!("../../../samples/codesets/cdc/vac2vg.xml")))
}

/// The texts of every `<tag>…</tag>` in `block`, in order.
fn texts<'a>(block: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    block
        .split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split(close.as_str()).next())
        .map(str::trim)
        .collect()
}

fn parse_vac2vg(xml: &str) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for block in xml.split("<CVXVGInfo>").skip(1) {
        let pairs: HashMap<&str, &str> = texts(block, "Name")
            .into_iter()
            .zip(texts(block, "Value"))
            .collect();
        let (Some(cvx), Some(group)) = (pairs.get("CVXCode"), pairs.get("Vaccine Group Name"))
        else {
            continue;
        };
        let group = group.replace("&amp;", "&");
        let list = map
            .entry(cvx.trim_start_matches('0').to_string())
            .or_default();
        if !group.is_empty() && !list.contains(&group) {
            list.push(group);
        }
    }
    map
}

/// The vaccine groups of a CVX code (itself when the crosswalk has none).
pub fn groups_of(cvx: &str) -> Vec<String> {
    let key = cvx.trim().trim_start_matches('0');
    vaccine_groups()
        .get(key)
        .filter(|g| !g.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![cvx.trim().to_string()])
}

/// The patient key an EHR Immunization names: `patient.identifier.value`,
/// else `patient.reference` without its `Patient/` prefix.
pub fn ehr_patient_key(imm: &Value) -> Option<&str> {
    imm.pointer("/patient/identifier/value")
        .and_then(Value::as_str)
        .or_else(|| {
            imm.pointer("/patient/reference")
                .and_then(Value::as_str)
                .map(|r| r.strip_prefix("Patient/").unwrap_or(r))
        })
}

/// A completed dose: (CVX or vaccine text, `YYYY-MM-DD`, day number).
fn dose(imm: &Value) -> Option<Dose> {
    if imm.get("resourceType").and_then(Value::as_str) != Some("Immunization") {
        return None;
    }
    if imm
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "completed")
    {
        return None;
    }
    let date = imm
        .get("occurrenceDateTime")
        .and_then(Value::as_str)?
        .get(..10)?;
    let part = |a: usize, b: usize| date.get(a..b).and_then(|s| s.parse::<u8>().ok());
    let year = date.get(..4).and_then(|y| y.parse::<i32>().ok())?;
    let month = time::Month::try_from(part(5, 7)?).ok()?;
    let day = time::Date::from_calendar_date(year, month, part(8, 10)?).ok()?;
    let codings = imm.pointer("/vaccineCode/coding").and_then(Value::as_array);
    let cvx = codings
        .and_then(|c| {
            c.iter()
                .find(|c| {
                    c.get("system").and_then(Value::as_str) == Some("http://hl7.org/fhir/sid/cvx")
                })
                .and_then(|c| c.get("code").and_then(Value::as_str))
        })
        .or_else(|| {
            codings
                .and_then(|c| c.first())
                .and_then(|c| c.get("code").and_then(Value::as_str))
        })
        .or_else(|| imm.pointer("/vaccineCode/text").and_then(Value::as_str))?;
    Some((
        cvx.to_string(),
        date.to_string(),
        i64::from(day.to_julian_day()),
    ))
}

/// A dose: (CVX or vaccine text, `YYYY-MM-DD`, day number).
type Dose = (String, String, i64);

/// The most doses compared per side for one patient.
const MAX_DOSES: usize = 10_000;

/// Compares one patient's IIS Immunizations with the EHR's (those of the
/// EHR list that name `patient_key`): every dose of a vaccine group on one
/// side without a dose of the same group within `tolerance_days` on the
/// other is a discrepancy. Sorted by group, date and side.
pub fn reconcile(
    patient_key: &str,
    iis: &[Value],
    ehr: &[Value],
    tolerance_days: u32,
) -> Vec<Discrepancy> {
    // group → (side 0 = IIS / 1 = EHR) → doses
    let mut by_group: BTreeMap<String, [Vec<Dose>; 2]> = BTreeMap::new();
    let ehr_mine = ehr
        .iter()
        .filter(|e| ehr_patient_key(e) == Some(patient_key));
    for (side, list) in [
        (0usize, iis.iter().collect::<Vec<_>>()),
        (1, ehr_mine.collect()),
    ] {
        for d in list.into_iter().take(MAX_DOSES).filter_map(dose) {
            for group in groups_of(&d.0) {
                if let Some(slot) = by_group.entry(group).or_default().get_mut(side) {
                    slot.push(d.clone());
                }
            }
        }
    }
    let tolerance = i64::from(tolerance_days);
    let mut out = Vec::new();
    for (group, [mut iis_doses, mut ehr_doses]) in by_group {
        iis_doses.sort_by_key(|d| d.2);
        ehr_doses.sort_by_key(|d| d.2);
        let mut taken = vec![false; ehr_doses.len()];
        let mut unmatched_iis = Vec::new();
        for d in &iis_doses {
            let best = ehr_doses
                .iter()
                .enumerate()
                .filter(|(i, e)| {
                    !taken.get(*i).copied().unwrap_or(true) && (e.2 - d.2).abs() <= tolerance
                })
                .min_by_key(|(_, e)| (e.2 - d.2).abs())
                .map(|(i, _)| i);
            match best.and_then(|i| taken.get_mut(i)) {
                Some(t) => *t = true,
                None => unmatched_iis.push(d),
            }
        }
        let mk = |side, d: &Dose| Discrepancy {
            patient: patient_key.to_string(),
            side,
            vaccine_group: group.clone(),
            cvx: d.0.clone(),
            date: d.1.clone(),
        };
        let mut found: Vec<Discrepancy> = unmatched_iis
            .into_iter()
            .map(|d| mk(Side::OnlyInIis, d))
            .collect();
        found.extend(
            ehr_doses
                .iter()
                .zip(&taken)
                .filter(|(_, t)| !**t)
                .map(|(d, _)| mk(Side::OnlyInEhr, d)),
        );
        found.sort_by(|a, b| (&a.date, a.side.as_str()).cmp(&(&b.date, b.side.as_str())));
        out.extend(found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imm(cvx: &str, date: &str, patient: Value) -> Value {
        json!({
            "resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]},
            "occurrenceDateTime": date, "patient": patient
        })
    }

    #[test]
    fn groups_come_from_the_cdc_crosswalk() {
        assert_eq!(groups_of("03"), vec!["MMR"]);
        let mut combo = groups_of("110");
        combo.sort();
        assert_eq!(combo, vec!["DTAP", "HepB", "POLIO"]);
        assert_eq!(groups_of("99999"), vec!["99999"]);
    }

    #[test]
    fn doses_match_by_group_and_date_within_tolerance() {
        let p = json!({"reference": "Patient/x"});
        let iis = vec![
            imm("110", "2009-10-11T00:00:00-05:00", p.clone()),
            imm("03", "2010-04-15", p.clone()),
            imm("08", "2010-04-11", p.clone()),
        ];
        let ehr = vec![
            imm("20", "2009-10-13", json!({"identifier": {"value": "M1"}})),
            imm("10", "2009-10-11", json!({"reference": "Patient/M1"})),
            imm("45", "2009-10-11", json!({"reference": "Patient/M1"})),
            imm("08", "2010-05-30", json!({"reference": "Patient/M1"})),
            imm(
                "03",
                "2010-04-15",
                json!({"reference": "Patient/someone-else"}),
            ),
        ];
        let found = reconcile("M1", &iis, &ehr, 3);
        let brief: Vec<(Side, &str, &str, &str)> = found
            .iter()
            .map(|d| {
                (
                    d.side,
                    d.vaccine_group.as_str(),
                    d.cvx.as_str(),
                    d.date.as_str(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (Side::OnlyInIis, "HepB", "08", "2010-04-11"),
                (Side::OnlyInEhr, "HepB", "08", "2010-05-30"),
                (Side::OnlyInIis, "MMR", "03", "2010-04-15"),
            ]
        );
        assert!(
            reconcile("M1", &iis, &ehr, 0)
                .iter()
                .any(|d| d.vaccine_group == "DTAP")
        );
        assert_eq!(found[0].to_json()["side"], "only-in-iis");
    }

    #[test]
    fn csv_lines_are_quoted_and_formula_guarded() {
        let d = Discrepancy {
            patient: "=HYPERLINK(\"x\")".into(),
            side: Side::OnlyInEhr,
            vaccine_group: "Flu, seasonal".into(),
            cvx: "-1".into(),
            date: "2020-01-01".into(),
        };
        assert_eq!(
            d.to_csv_line(),
            "\"'=HYPERLINK(\"\"x\"\")\",only-in-ehr,\"Flu, seasonal\",'-1,2020-01-01\r\n"
        );
        assert!(CSV_HEADER.ends_with("\r\n"));
    }
}
