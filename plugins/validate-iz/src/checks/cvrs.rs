//! Checks of the CDC COVID-19 Vaccination Reporting Specification (CVRS).
//! They always run; under the default profile their detections are ignored.

use super::{Checker, Group, obx::loinc, rxa};

const REDACTED: &str = "Redacted";
/// CVRS comorbidity / special risk group observation.
const RISK_GROUP: &str = "VXC8";
/// Serological evidence of immunity.
const SEROLOGY: &str = "75505-8";

/// Runs the CVRS checks.
pub fn check(c: &mut Checker, groups: &[Group]) {
    let extract = c.at("MSH", 1, 8, 0).to_ascii_uppercase();
    if extract.is_empty() {
        c.flag("cvrs-extract-type-missing", "MSH-8");
    } else if !["I", "D", "P"].contains(&extract.as_str()) {
        c.flag_code("cvrs-extract-type-invalid", "MSH-8", &extract);
    }
    if extract == "D" && c.rep_count("PID", 1, 3) > 1 {
        c.flag("cvrs-pprl-id-not-allowed", "PID-3[2]");
    }
    if extract == "D" || extract == "P" {
        for comp in 1..=3 {
            if c.at("PID", 1, 5, comp) != REDACTED {
                c.flag("cvrs-name-not-redacted", format!("PID-5.{comp}"));
            }
        }
        for comp in 1..=3 {
            if c.at("PID", 1, 11, comp) != REDACTED {
                c.flag("cvrs-address-not-redacted", format!("PID-11.{comp}"));
            }
        }
    }
    for (path, segment, field) in [("PID-7", "PID", 7), ("RXA-3", "RXA", 3)] {
        if c.at(segment, 1, field, 0).len() > 8 {
            c.flag("cvrs-date-precision", path);
        }
    }
    let mut risk_group = false;
    let mut serology = false;
    for k in 1..=c.count("OBX") {
        match c.at("OBX", k, 3, 1) {
            RISK_GROUP => risk_group = true,
            SEROLOGY => serology = true,
            _ => {}
        }
    }
    if !risk_group {
        c.flag("cvrs-risk-group-missing", "OBX-3");
    }
    if !serology {
        c.flag("cvrs-serology-missing", "OBX-3");
    }
    for g in groups {
        let d = rxa::dose(c, g.rxa);
        if d.refused || !d.given || c.at("RXA", g.rxa, 5, 0).is_empty() {
            continue;
        }
        let has = |c: &Checker, code: &str| g.obx.iter().any(|&k| c.at("OBX", k, 3, 1) == code);
        if !has(c, loinc::DOSE_NUMBER) {
            c.flag("cvrs-dose-number-missing", format!("RXA[{}]", g.rxa));
        }
        if !has(c, loinc::SERIES_STATUS) {
            c.flag("cvrs-series-status-missing", format!("RXA[{}]", g.rxa));
        }
    }
}
