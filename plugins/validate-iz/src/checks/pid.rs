//! Patient (PID, PD1) and next-of-kin (NK1) checks.

use std::fmt;

use super::Checker;
use crate::dates::{self, Date, Dtm};
use crate::geo;

const PLACEHOLDER_NAMES: [&str; 8] = [
    "BABY", "BOY", "GIRL", "INFANT", "NEWBORN", "NB", "BABYBOY", "BABYGIRL",
];

/// The location of part of one repetition of a field: `PID-3.5` for the
/// first repetition, `PID-3[2].5` for a later one; formatted only when a
/// detection fires.
struct RepLoc {
    /// The field, e.g. `PID-3`.
    field: &'static str,
    /// The repetition, from 1.
    rep: usize,
    /// What follows the repetition, e.g. `.5`, or nothing.
    part: &'static str,
}

impl fmt::Display for RepLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rep == 1 {
            write!(f, "{}{}", self.field, self.part)
        } else {
            write!(f, "{}[{}]{}", self.field, self.rep, self.part)
        }
    }
}

/// Checks the patient and next-of-kin segments.
pub fn check(c: &mut Checker) {
    match c.count("PID") {
        0 => {
            c.flag("patient-segment-missing", "PID");
            return;
        }
        1 => {}
        _ => c.flag("patient-segment-repeated", "PID[2]"),
    }
    let set_id = c.at("PID", 1, 1, 0);
    if !set_id.is_empty() && set_id != "1" {
        c.flag("patient-set-id-invalid", "PID-1");
    }
    identifiers(c);
    names(c);
    let birth = birth_date(c);
    let sex = c.at("PID", 1, 8, 0);
    if sex.is_empty() {
        c.flag("patient-sex-missing", "PID-8");
    } else {
        c.table_value("hl7-0001", sex, "PID-8", "patient-sex-unrecognized", None);
    }
    race_and_ethnicity(c);
    address(c);
    multiple_birth(c);
    death(c, birth);
    pd1(c);
    next_of_kin(c);
}

fn identifiers(c: &mut Checker) {
    let count = c.rep_count("PID", 1, 3);
    let mut any_id = false;
    let mut any_mr = false;
    for r in 1..=count {
        let at = |part: &'static str| RepLoc {
            field: "PID-3",
            rep: r,
            part,
        };
        if c.value_at("PID", 1, 3, r, 1, 0).is_empty() {
            continue;
        }
        any_id = true;
        let ty = c.value_at("PID", 1, 3, r, 5, 0);
        if ty.is_empty() {
            c.flag("patient-id-type-missing", at(".5").to_string());
        } else {
            any_mr |= ty == "MR";
            c.table_value(
                "hl7-0203",
                ty,
                at(".5"),
                "patient-id-type-unrecognized",
                None,
            );
        }
        if c.value_at("PID", 1, 3, r, 4, 0).is_empty() {
            c.flag("patient-id-authority-missing", at(".4").to_string());
        }
    }
    if !any_id {
        c.flag("patient-id-missing", "PID-3");
    } else if !any_mr {
        c.flag("patient-id-medical-record-missing", "PID-3");
    }
}

fn names(c: &mut Checker) {
    let count = c.rep_count("PID", 1, 5);
    if count == 0 || c.at("PID", 1, 5, 0).trim_matches('^').is_empty() {
        c.flag("patient-name-missing", "PID-5");
        return;
    }
    let family = c.value_at("PID", 1, 5, 1, 1, 1);
    let given = c.at("PID", 1, 5, 2);
    if family.is_empty() {
        c.flag("patient-name-family-missing", "PID-5.1");
    }
    if given.is_empty() {
        c.flag("patient-name-given-missing", "PID-5.2");
    }
    let has_digits = |s: &str| s.chars().any(|ch| ch.is_ascii_digit());
    if has_digits(family) || has_digits(given) || has_digits(c.at("PID", 1, 5, 3)) {
        c.flag("patient-name-has-digits", "PID-5");
    }
    let upper = given.to_ascii_uppercase().replace([' ', '-'], "");
    if PLACEHOLDER_NAMES.contains(&upper.as_str()) {
        c.flag("patient-name-placeholder", "PID-5.2");
    }
    let mut any_legal = false;
    let mut any_type = false;
    for r in 1..=count {
        let at = RepLoc {
            field: "PID-5",
            rep: r,
            part: ".7",
        };
        let ty = c.value_at("PID", 1, 5, r, 7, 0);
        if ty.is_empty() {
            if r == 1 {
                c.flag("patient-name-type-missing", at.to_string());
            }
            continue;
        }
        any_type = true;
        any_legal |= ty == "L";
        c.table_value("hl7-0200", ty, at, "patient-name-type-unrecognized", None);
    }
    if any_type && !any_legal {
        c.flag("patient-name-legal-missing", "PID-5.7");
    }
}

fn birth_date(c: &mut Checker) -> Option<Date> {
    let birth = c.date(
        c.at("PID", 1, 7, 0),
        "PID-7",
        Some("patient-birth-date-missing"),
        "patient-birth-date-invalid",
    )?;
    if c.in_future(birth) {
        c.flag("patient-birth-date-in-future", "PID-7");
    }
    let oldest = c
        .today
        .map(|t| t.years_before(120))
        .or(Date::new(1900, 1, 1));
    if oldest.is_some_and(|o| birth < o) {
        c.flag("patient-birth-date-too-old", "PID-7");
    }
    if dates::parse_dtm(c.at("MSH", 1, 7, 0))
        .is_some_and(|sent| Dtm::of_date(birth).is_after(&sent))
    {
        c.flag("patient-birth-date-after-message", "PID-7");
    }
    Some(birth)
}

fn race_and_ethnicity(c: &mut Checker) {
    for (field, name, table, missing, unrecognized, deprecated) in [
        (
            10,
            "PID-10",
            "cdcrec-race",
            "patient-race-missing",
            "patient-race-unrecognized",
            "patient-race-deprecated",
        ),
        (
            22,
            "PID-22",
            "cdcrec-ethnicity",
            "patient-ethnicity-missing",
            "patient-ethnicity-unrecognized",
            "patient-ethnicity-deprecated",
        ),
    ] {
        let count = c.rep_count("PID", 1, field);
        let mut any = false;
        for r in 1..=count {
            let code = c.value_at("PID", 1, field, r, 1, 0);
            if code.is_empty() {
                continue;
            }
            any = true;
            // Null flavours (unknown, asked but unknown) are accepted.
            if ["UNK", "ASKU", "NASK", "PHC1175"].contains(&code) {
                continue;
            }
            let at = RepLoc {
                field: name,
                rep: r,
                part: "",
            };
            c.table_value(table, code, at, unrecognized, Some(deprecated));
        }
        if !any {
            c.flag(missing, name);
        }
    }
}

/// Checks state, ZIP and county of an address in field `field` of the
/// `occurrence`-th `segment`; `base` is that field's location as reported
/// (`PID-11`, `RXA[2]-11`) and `(state, zip, county)` the component numbers.
pub fn place(
    c: &mut Checker,
    (segment, occurrence, field): (&str, usize, usize),
    base: &dyn fmt::Display,
    parts: (usize, usize, usize),
    ids: [&'static str; 6],
) {
    let [
        state_missing,
        state_invalid,
        zip_invalid,
        county_missing,
        county_invalid,
        county_mismatch,
    ] = ids;
    let (s, z, k) = parts;
    let state = c.at(segment, occurrence, field, s);
    let zip = c.at(segment, occurrence, field, z);
    let county = c.at(segment, occurrence, field, k);
    let country = c.at(segment, occurrence, field, 6);
    let us = segment == "RXA" || country.is_empty() || ["USA", "US", "840"].contains(&country);
    if state.is_empty() {
        if !zip.is_empty() || segment == "PID" {
            c.flag(state_missing, format!("{base}.{s}"));
        }
    } else if us && !geo::is_state(&state.to_ascii_uppercase()) {
        c.flag_code(state_invalid, format!("{base}.{s}"), state);
    }
    if !zip.is_empty() && us && !geo::is_zip(zip) {
        c.flag_code(zip_invalid, format!("{base}.{z}"), zip);
    }
    if county.is_empty() {
        if !zip.is_empty() {
            c.flag(county_missing, format!("{base}.{k}"));
        }
    } else if !geo::is_county(county) {
        c.flag_code(county_invalid, format!("{base}.{k}"), county);
    } else if let Some(fips) = geo::fips(&state.to_ascii_uppercase())
        && !county.starts_with(fips)
    {
        c.flag_code(county_mismatch, format!("{base}.{k}"), county);
    }
}

fn address(c: &mut Checker) {
    if c.at("PID", 1, 11, 0).trim_matches('^').is_empty() {
        c.flag("patient-address-missing", "PID-11");
        return;
    }
    if c.at("PID", 1, 11, 1).is_empty() {
        c.flag("patient-address-street-missing", "PID-11.1");
    }
    if c.at("PID", 1, 11, 3).is_empty() {
        c.flag("patient-address-city-missing", "PID-11.3");
    }
    if c.at("PID", 1, 11, 5).is_empty() {
        c.flag("patient-address-zip-missing", "PID-11.5");
    }
    place(
        c,
        ("PID", 1, 11),
        &"PID-11",
        (4, 5, 9),
        [
            "patient-address-state-missing",
            "patient-address-state-invalid",
            "patient-address-zip-invalid",
            "patient-address-county-missing",
            "patient-address-county-invalid",
            "patient-address-county-state-mismatch",
        ],
    );
    let ty = c.at("PID", 1, 11, 7);
    c.table_value(
        "hl7-0190",
        ty,
        "PID-11.7",
        "patient-address-type-unrecognized",
        None,
    );
}

fn multiple_birth(c: &mut Checker) {
    let indicator = c.at("PID", 1, 24, 0);
    if !indicator.is_empty() && !["Y", "N"].contains(&indicator) {
        c.flag_code(
            "patient-multiple-birth-indicator-invalid",
            "PID-24",
            indicator,
        );
    }
    let order = c.at("PID", 1, 25, 0);
    if order.is_empty() {
        if indicator == "Y" {
            c.flag("patient-birth-order-missing", "PID-25");
        }
        return;
    }
    match order.parse::<u32>() {
        Ok(n) if (1..=9).contains(&n) => {
            if indicator != "Y" && !(indicator == "N" && n == 1) {
                c.flag("patient-birth-order-without-multiple-birth", "PID-25");
            }
        }
        _ => c.flag_code("patient-birth-order-invalid", "PID-25", order),
    }
}

fn death(c: &mut Checker, birth: Option<Date>) {
    let indicator = c.at("PID", 1, 30, 0);
    if !indicator.is_empty() && !["Y", "N"].contains(&indicator) {
        c.flag_code("patient-death-indicator-invalid", "PID-30", indicator);
    }
    let raw = c.at("PID", 1, 29, 0);
    if raw.is_empty() {
        if indicator == "Y" {
            c.flag("patient-death-indicator-without-date", "PID-30");
        }
        return;
    }
    if indicator != "Y" {
        c.flag("patient-death-date-without-indicator", "PID-29");
    }
    let Some(died) = c.date(raw, "PID-29", None, "patient-death-date-invalid") else {
        return;
    };
    if birth.is_some_and(|b| died < b) {
        c.flag("patient-death-date-before-birth", "PID-29");
    }
    if c.in_future(died) {
        c.flag("patient-death-date-in-future", "PID-29");
    }
}

fn pd1(c: &mut Checker) {
    if c.count("PD1") == 0 {
        return;
    }
    let publicity = c.at("PD1", 1, 11, 1);
    c.table_value(
        "hl7-0215",
        publicity,
        "PD1-11",
        "patient-publicity-code-unrecognized",
        None,
    );
    let protection = c.at("PD1", 1, 12, 0);
    if !protection.is_empty() && !["Y", "N"].contains(&protection) {
        c.flag_code("patient-protection-indicator-invalid", "PD1-12", protection);
    }
    let status = c.at("PD1", 1, 16, 0);
    c.table_value(
        "hl7-0441",
        status,
        "PD1-16",
        "patient-registry-status-unrecognized",
        None,
    );
}

fn next_of_kin(c: &mut Checker) {
    for n in 1..=c.count("NK1") {
        let rel = c.at("NK1", n, 3, 1);
        if rel.is_empty() {
            c.flag("next-of-kin-relationship-missing", format!("NK1[{n}]-3"));
        } else if rel == "SEL" {
            c.flag("next-of-kin-relationship-self", format!("NK1[{n}]-3"));
        } else {
            c.table_value(
                "hl7-0063",
                rel,
                format_args!("NK1[{n}]-3"),
                "next-of-kin-relationship-unrecognized",
                None,
            );
        }
        if c.at("NK1", n, 2, 1).is_empty() {
            c.flag("next-of-kin-name-missing", format!("NK1[{n}]-2.1"));
        }
    }
}
