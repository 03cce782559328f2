//! Observation (OBX) checks: value types, VFC eligibility, funding source and
//! VIS pairs.

use std::collections::BTreeMap;

use super::{Checker, Code, Group, rxa};
use crate::dates;

/// LOINC codes of the observations this module knows.
pub mod loinc {
    /// VFC eligibility (funding program eligibility category).
    pub const VFC: &str = "64994-7";
    /// Vaccine funding source.
    pub const FUNDING: &str = "30963-3";
    /// VIS document type (barcode).
    pub const VIS_DOC: &str = "69764-9";
    /// VIS vaccine type (CVX).
    pub const VIS_VACCINE: &str = "30956-7";
    /// VIS edition (published) date.
    pub const VIS_PUBLISHED: &str = "29768-9";
    /// VIS presentation date.
    pub const VIS_PRESENTED: &str = "29769-7";
    /// Dose number in series.
    pub const DOSE_NUMBER: &str = "30973-2";
    /// Status in immunization series.
    pub const SERIES_STATUS: &str = "59783-1";
}

const VALUE_TYPES: [&str; 13] = [
    "CE", "CWE", "CNE", "TS", "DT", "DTM", "NM", "ST", "TX", "ID", "IS", "SN", "FT",
];
const DATE_TYPES: [&str; 3] = ["TS", "DT", "DTM"];
const CODED_TYPES: [&str; 3] = ["CE", "CWE", "CNE"];

/// Checks the OBX segments of one vaccination group.
pub fn check<'a>(c: &mut Checker<'a>, g: &Group) {
    let d = rxa::dose(c, g.rxa);
    let mut vfc_seen = false;
    let mut vis: BTreeMap<&'a str, Vis> = BTreeMap::new();
    for &k in &g.obx {
        let id = generic(c, k);
        let value = c.at("OBX", k, 5, 1);
        let value_at = || format!("OBX[{k}]-5");
        match id {
            loinc::VFC => {
                vfc_seen = true;
                vfc(c, k, value, d.historical);
            }
            loinc::FUNDING => {
                c.table_value(
                    "funding-source",
                    value,
                    format_args!("OBX[{k}]-5"),
                    "funding-source-unrecognized",
                    None,
                );
            }
            loinc::VIS_DOC | loinc::VIS_VACCINE | loinc::VIS_PUBLISHED | loinc::VIS_PRESENTED => {
                if id == loinc::VIS_DOC {
                    c.table_value(
                        "vis-doc",
                        value,
                        format_args!("OBX[{k}]-5"),
                        "vis-document-unrecognized",
                        None,
                    );
                }
                if id == loinc::VIS_VACCINE
                    && !value.is_empty()
                    && let Code::Unknown = c.code("cvx", value)
                {
                    c.flag_code("vis-vaccine-type-unrecognized", value_at(), value);
                }
                let sub = c.at("OBX", k, 4, 0);
                let entry = vis.entry(sub).or_default();
                match id {
                    loinc::VIS_DOC => entry.doc.push(k),
                    loinc::VIS_VACCINE => entry.vaccine.push(k),
                    loinc::VIS_PUBLISHED => entry.published.push(k),
                    _ => entry.presented.push(k),
                }
            }
            loinc::DOSE_NUMBER if d.refused => c.flag("refusal-with-dose-number", value_at()),
            loinc::SERIES_STATUS if d.refused => c.flag("refusal-with-series-status", value_at()),
            _ => {}
        }
    }
    if d.administered && !vfc_seen {
        c.flag("vfc-eligibility-missing", format!("RXA[{}]", g.rxa));
    }
    vis_pairs(c, g, &vis, d.administered);
}

/// Checks the OBX segments that come before any RXA.
pub fn check_patient_level(c: &mut Checker, occurrences: &[usize]) {
    for &k in occurrences {
        generic(c, k);
    }
}

/// The checks every OBX gets; returns its identifier (OBX-3.1).
fn generic<'a>(c: &mut Checker<'a>, k: usize) -> &'a str {
    let id = c.at("OBX", k, 3, 1);
    if id.is_empty() {
        c.flag("observation-identifier-missing", format!("OBX[{k}]-3"));
    } else {
        c.table_value(
            "obx-loinc",
            id,
            format_args!("OBX[{k}]-3"),
            "observation-identifier-unrecognized",
            None,
        );
    }
    let ty = c.at("OBX", k, 2, 0);
    let value = c.at("OBX", k, 5, 0);
    if value.trim_matches('^').is_empty() {
        c.flag("observation-value-missing", format!("OBX[{k}]-5"));
    }
    if ty.is_empty() {
        c.flag("observation-value-type-missing", format!("OBX[{k}]-2"));
    } else if !VALUE_TYPES.contains(&ty) {
        c.flag_code(
            "observation-value-type-unrecognized",
            format!("OBX[{k}]-2"),
            ty,
        );
    } else if !value.is_empty() {
        let fits = if DATE_TYPES.contains(&ty) {
            dates::parse_dtm(value).is_some()
        } else if ty == "NM" {
            value.parse::<f64>().is_ok()
        } else {
            true
        };
        if !fits {
            c.flag_code("observation-value-type-mismatch", format!("OBX[{k}]-5"), ty);
        }
        let coded = [
            loinc::VFC,
            loinc::FUNDING,
            loinc::VIS_DOC,
            loinc::VIS_VACCINE,
        ];
        let dated = [loinc::VIS_PUBLISHED, loinc::VIS_PRESENTED];
        let wrong = (coded.contains(&id) && !CODED_TYPES.contains(&ty))
            || (dated.contains(&id) && !DATE_TYPES.contains(&ty));
        if wrong {
            c.flag_code("observation-value-type-wrong", format!("OBX[{k}]-2"), ty);
        }
    }
    if c.at("OBX", k, 11, 0).is_empty() {
        c.flag("observation-result-status-missing", format!("OBX[{k}]-11"));
    }
    if c.at("OBX", k, 4, 0).is_empty() {
        c.flag("observation-sub-id-missing", format!("OBX[{k}]-4"));
    }
    id
}

fn vfc(c: &mut Checker, k: usize, value: &str, historical: bool) {
    let at = || format!("OBX[{k}]-5");
    if historical {
        c.flag("vfc-eligibility-on-historical", at());
    }
    if !value.is_empty() {
        if ["V06", "V08"].contains(&value) {
            c.flag_code("vfc-eligibility-deprecated", at(), value);
        } else {
            let code = c.code("hl7-0064", value);
            match (&code, code.status()) {
                (Code::Unknown, _) => c.flag_code("vfc-eligibility-unrecognized", at(), value),
                (Code::Known(_), "Invalid") => c.flag_code("vfc-eligibility-invalid", at(), value),
                (Code::Known(_), "Deprecated") => {
                    c.flag_code("vfc-eligibility-deprecated", at(), value)
                }
                _ => {}
            }
        }
    }
    let date_at = || format!("OBX[{k}]-14");
    let date = c.at("OBX", k, 14, 0);
    if date.is_empty() {
        c.flag("vfc-observation-date-missing", date_at());
    } else if dates::parse_dtm(date).and_then(|d| d.date).is_none() {
        c.flag("vfc-observation-date-invalid", date_at());
    }
    let method_at = || format!("OBX[{k}]-17");
    let method = c.at("OBX", k, 17, 1);
    if method.is_empty() {
        c.flag("vfc-observation-method-missing", method_at());
    } else if !["VXC40", "VXC41"].contains(&method) {
        c.flag_code("vfc-observation-method-invalid", method_at(), method);
    }
}

/// The VIS observations sharing one OBX-4 sub-ID.
#[derive(Debug, Default)]
struct Vis {
    doc: Vec<usize>,
    vaccine: Vec<usize>,
    published: Vec<usize>,
    presented: Vec<usize>,
}

fn vis_pairs(c: &mut Checker, g: &Group, vis: &BTreeMap<&str, Vis>, administered: bool) {
    let mut any_vis = false;
    for v in vis.values() {
        let subjects: Vec<usize> = v.doc.iter().chain(v.vaccine.iter()).copied().collect();
        if subjects.is_empty() {
            for &k in v.published.iter().chain(v.presented.iter()) {
                c.flag("vis-date-unpaired", format!("OBX[{k}]-3"));
            }
            continue;
        }
        any_vis = true;
        if v.presented.is_empty() {
            for &k in &subjects {
                c.flag("vis-presented-date-missing", format!("OBX[{k}]-3"));
            }
        }
        if v.published.is_empty() {
            for &k in &v.vaccine {
                c.flag("vis-published-date-missing", format!("OBX[{k}]-3"));
            }
        }
        let date_of = |c: &Checker, k: usize| dates::parse_dtm(c.at("OBX", k, 5, 0));
        let published = v.published.first().and_then(|&k| date_of(c, k));
        for &k in &v.presented {
            if let (Some(p), Some(given)) = (published, date_of(c, k))
                && given.is_before(&p)
            {
                c.flag("vis-presented-before-published", format!("OBX[{k}]-5"));
            }
        }
    }
    if administered && !any_vis {
        c.flag("vis-missing", format!("RXA[{}]", g.rxa));
    }
}
