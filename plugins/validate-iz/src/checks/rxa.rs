//! Order (ORC), vaccination (RXA) and route (RXR) checks.

use super::{Checker, Code, Group, pid};
use crate::dates::{self, Date, Dtm};

const LOT_PLACEHOLDERS: [&str; 10] = [
    "NA", "N/A", "UNK", "UNKNOWN", "NONE", "?", "0", "00", "LOT", "NULL",
];

/// What RXA-9 and RXA-20 say about a dose.
#[derive(Debug, Clone, Copy)]
pub struct Dose {
    /// RXA-9.1 is 00: given by the sending clinic.
    pub administered: bool,
    /// RXA-9.1 is one of the historical codes.
    pub historical: bool,
    /// RXA-20 is empty, CP or PA.
    pub given: bool,
    /// RXA-20 is RE.
    pub refused: bool,
}

/// Reads how a dose was given.
pub fn dose(c: &Checker, n: usize) -> Dose {
    let source = c.at("RXA", n, 9, 1);
    let status = c.at("RXA", n, 20, 0);
    let given = ["", "CP", "PA"].contains(&status);
    Dose {
        administered: source == "00" && given,
        historical: source.len() == 2 && source != "00" && source.starts_with('0'),
        given,
        refused: status == "RE",
    }
}

/// Checks one vaccination group's ORC, RXA and RXR.
pub fn check(c: &mut Checker, g: &Group) {
    let n = g.rxa;
    let at = |f: &str| format!("RXA[{n}]-{f}");
    match g.orc {
        None => c.flag("order-segment-missing", format!("RXA[{n}]")),
        Some(o) => {
            if c.at("ORC", o, 3, 0).trim_matches('^').is_empty() {
                c.flag("order-filler-number-missing", format!("ORC[{o}]-3"));
            }
            let control = c.at("ORC", o, 1, 0);
            if control != "RE" {
                c.flag_code("order-control-invalid", format!("ORC[{o}]-1"), control);
            }
        }
    }
    if c.at("RXA", n, 1, 0) != "0" {
        c.flag("vaccination-sub-id-invalid", at("1"));
    }
    if c.at("RXA", n, 2, 0) != "1" {
        c.flag("vaccination-sub-id-counter-invalid", at("2"));
    }
    let d = dose(c, n);
    let given_on = admin_date(c, n);
    vaccine_codes(c, n, d, given_on);
    amount(c, n, d);
    information_source(c, n);
    if d.administered {
        if c.at("RXA", n, 10, 0).trim_matches('^').is_empty() {
            c.flag("vaccination-provider-missing", at("10"));
        }
        if c.at("RXA", n, 11, 4).trim_matches('&').is_empty() {
            c.flag("vaccination-location-missing", at("11.4"));
        }
        if c.at("RXA", n, 15, 0).is_empty() {
            c.flag("vaccination-lot-missing", at("15"));
        } else if c.at("RXA", n, 16, 0).is_empty() {
            c.flag("vaccination-expiration-missing", at("16"));
        }
        if c.at("RXA", n, 17, 0).trim_matches('^').is_empty() {
            c.flag("vaccination-manufacturer-missing", at("17"));
        }
        match g.rxr.first() {
            None => c.flag("vaccination-route-segment-missing", format!("RXA[{n}]")),
            Some(&r) => {
                if c.at("RXR", r, 2, 0).trim_matches('^').is_empty() {
                    c.flag("vaccination-site-missing", format!("RXR[{r}]-2"));
                }
            }
        }
    }
    administered_at(c, n);
    lot_and_expiry(c, n, d, given_on);
    manufacturer(c, n);
    refusal_and_status(c, n, d);
    routes(c, g, d);
}

fn admin_date(c: &mut Checker, n: usize) -> Option<Date> {
    let path = || format!("RXA[{n}]-3");
    let date = c.date(
        c.at("RXA", n, 3, 0),
        format_args!("RXA[{n}]-3"),
        Some("vaccination-date-missing"),
        "vaccination-date-invalid",
    )?;
    if c.in_future(date) {
        c.flag("vaccination-date-in-future", path());
    }
    // Every comparison at the precision both sides have: a birth date with
    // a time (`201311011105`) and a dose given that day are the same day.
    let given = Dtm::of_date(date);
    let other = |c: &Checker, seg: &str, field: usize| dates::parse_dtm(c.at(seg, 1, field, 0));
    if other(c, "PID", 7).is_some_and(|birth| given.is_before(&birth)) {
        c.flag("vaccination-date-before-birth", path());
    }
    if other(c, "PID", 29).is_some_and(|death| given.is_after(&death)) {
        c.flag("vaccination-date-after-death", path());
    }
    if other(c, "MSH", 7).is_some_and(|sent| given.is_after(&sent)) {
        c.flag("vaccination-date-after-message", path());
    }
    if dates::parse_dtm(c.at("RXA", n, 22, 0)).is_some_and(|entered| given.is_after(&entered)) {
        c.flag("vaccination-date-after-entry", path());
    }
    let end = c.at("RXA", n, 4, 0);
    if !end.is_empty() {
        let same = dates::parse_dtm(end).is_some_and(|e| e.compare(&given).is_eq());
        if !same {
            c.flag("vaccination-end-date-mismatch", format!("RXA[{n}]-4"));
        }
    }
    Some(date)
}

fn is_cvx(code: &str) -> bool {
    (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYYMMDD` or `YYYY-MM-DD` → date.
fn table_date(text: &str) -> Option<Date> {
    let compact = text.replace('-', "");
    dates::parse_dtm(&compact).and_then(|d| d.date)
}

fn vaccine_codes(c: &mut Checker, n: usize, d: Dose, given_on: Option<Date>) {
    let at = || format!("RXA[{n}]-5");
    if c.at("RXA", n, 5, 0).trim_matches('^').is_empty() {
        c.flag("vaccination-code-missing", at());
        return;
    }
    let mut cvx = "";
    let mut ndc = "";
    for (code_c, system_c) in [(1, 3), (4, 6)] {
        let code = c.at("RXA", n, 5, code_c);
        let system = c.at("RXA", n, 5, system_c);
        if system.eq_ignore_ascii_case("CVX") {
            cvx = code;
        } else if system.eq_ignore_ascii_case("NDC") {
            ndc = code;
        } else if system.is_empty() && code_c == 1 && !code.is_empty() {
            c.flag("vaccination-code-system-missing", format!("RXA[{n}]-5.3"));
            cvx = code;
        }
    }
    if d.refused && !ndc.is_empty() {
        c.flag("refusal-with-ndc", at());
    }
    if !cvx.is_empty() {
        cvx_status(c, n, cvx, d, given_on);
    }
    if !ndc.is_empty() {
        ndc_status(c, n, ndc, cvx, d, given_on);
    }
}

fn cvx_status(c: &mut Checker, n: usize, cvx: &str, d: Dose, given_on: Option<Date>) {
    let at = || format!("RXA[{n}]-5");
    if !is_cvx(cvx) {
        c.flag_code("vaccination-cvx-invalid", at(), cvx);
        return;
    }
    let status_rxa20 = c.at("RXA", n, 20, 0);
    if cvx == "998" {
        if status_rxa20 != "NA" {
            c.flag("vaccination-cvx-no-vaccine-not-na", at());
        }
        return;
    }
    let code = c.code("cvx", cvx);
    match code {
        Code::NoTable => return,
        Code::Unknown => {
            c.flag_code("vaccination-cvx-unrecognized", at(), cvx);
            return;
        }
        Code::Known(_) => {}
    }
    if !d.given {
        return;
    }
    match code.status() {
        "Never Active" => c.flag_code("vaccination-cvx-never-active", at(), cvx),
        "Non-US" if d.administered => c.flag_code("vaccination-cvx-non-us", at(), cvx),
        "Inactive" => {
            let changed = table_date(code.field(2));
            let was_active = matches!((given_on, changed), (Some(g), Some(ch)) if g < ch);
            if d.administered && !was_active {
                c.flag_code("vaccination-cvx-inactive", at(), cvx);
            } else if !d.administered && !was_active {
                c.flag_code("vaccination-cvx-inactive-historical", at(), cvx);
            }
        }
        _ => {}
    }
    if d.administered && code.field(1).to_ascii_lowercase().contains("unspecified") {
        c.flag_code("vaccination-cvx-unspecified", at(), cvx);
    }
}

fn ndc_status(c: &mut Checker, n: usize, ndc: &str, cvx: &str, d: Dose, given_on: Option<Date>) {
    let at = || format!("RXA[{n}]-5");
    // A CVX code sent with the NDC names the vaccine by itself: an NDC that
    // cannot be read then costs nothing but the NDC.
    let with_cvx = !cvx.is_empty();
    // Every form the FDA and the CDC crosswalks use, looked up as 5-4-2.
    let Some(normalized) = izhub_plugin::ndc::normalize(ndc) else {
        let id = if with_cvx {
            "vaccination-ndc-invalid-with-cvx"
        } else {
            "vaccination-ndc-invalid"
        };
        c.flag_code(id, at(), ndc);
        return;
    };
    let code = c.code("ndc", &normalized);
    match code {
        Code::NoTable => return,
        Code::Unknown => {
            let id = if with_cvx {
                "vaccination-ndc-unrecognized-with-cvx"
            } else {
                "vaccination-ndc-unrecognized"
            };
            c.flag_code(id, at(), ndc);
            return;
        }
        Code::Known(_) => {}
    }
    let ndc_cvx = code.field(0);
    if !cvx.is_empty() && !ndc_cvx.is_empty() && ndc_cvx != cvx {
        c.flag_code("vaccination-ndc-cvx-mismatch", at(), ndc);
    }
    let ndc_mvx = code.field(1);
    let mvx = c.at("RXA", n, 17, 1);
    if !ndc_mvx.is_empty() && !mvx.is_empty() && !ndc_mvx.eq_ignore_ascii_case(mvx) {
        c.flag_code("vaccination-mvx-ndc-mismatch", format!("RXA[{n}]-17"), mvx);
    }
    if let (true, Some(on)) = (d.administered, given_on) {
        let before = table_date(code.field(3)).is_some_and(|first| on < first);
        let after = table_date(code.field(4)).is_some_and(|last| on > last);
        if before || after {
            c.flag_code("vaccination-ndc-out-of-use", at(), ndc);
        }
    }
}

fn amount(c: &mut Checker, n: usize, d: Dose) {
    let at = || format!("RXA[{n}]-6");
    let raw = c.at("RXA", n, 6, 0);
    if raw.is_empty() {
        c.flag("vaccination-amount-missing", at());
        return;
    }
    let Ok(value) = raw.parse::<f64>() else {
        c.flag_code("vaccination-amount-invalid", at(), raw);
        return;
    };
    let not_given = value <= 0.0 || raw == "999";
    if d.administered && not_given {
        c.flag("vaccination-amount-not-given", at());
    }
    if !not_given && c.at("RXA", n, 7, 0).trim_matches('^').is_empty() {
        c.flag("vaccination-units-missing", format!("RXA[{n}]-7"));
    }
}

fn information_source(c: &mut Checker, n: usize) {
    let at = || format!("RXA[{n}]-9");
    let source = c.at("RXA", n, 9, 1);
    let status = c.at("RXA", n, 20, 0);
    let given = ["", "CP", "PA"].contains(&status);
    if source.is_empty() {
        if given {
            c.flag("vaccination-information-source-missing", at());
        }
        return;
    }
    if !given {
        c.flag("vaccination-information-source-not-allowed", at());
    }
    c.table_value(
        "nip001",
        source,
        format_args!("RXA[{n}]-9"),
        "vaccination-information-source-unrecognized",
        None,
    );
}

fn administered_at(c: &mut Checker, n: usize) {
    if c.at("RXA", n, 11, 0).trim_matches(['^', '&']).is_empty() {
        return;
    }
    if c.value_at("RXA", n, 11, 1, 4, 1).is_empty() {
        c.flag(
            "vaccination-location-name-missing",
            format!("RXA[{n}]-11.4"),
        );
    }
    if c.at("RXA", n, 11, 6).is_empty() {
        c.flag(
            "vaccination-location-type-missing",
            format!("RXA[{n}]-11.6"),
        );
    }
    pid::place(
        c,
        ("RXA", n, 11),
        &format_args!("RXA[{n}]-11"),
        (12, 13, 16),
        [
            "vaccination-location-state-missing",
            "vaccination-location-state-invalid",
            "vaccination-location-zip-invalid",
            "vaccination-location-county-missing",
            "vaccination-location-county-invalid",
            "vaccination-location-county-state-mismatch",
        ],
    );
}

fn lot_and_expiry(c: &mut Checker, n: usize, d: Dose, given_on: Option<Date>) {
    let lot = c.at("RXA", n, 15, 0);
    if !lot.is_empty() && LOT_PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(lot)) {
        c.flag_code("vaccination-lot-invalid", format!("RXA[{n}]-15"), lot);
    }
    let raw = c.at("RXA", n, 16, 0);
    if raw.is_empty() {
        return;
    }
    // Vials print a month (`201512`: good through December) as often as a day.
    let Some(expires) = dates::parse_dtm(raw).filter(|e| e.month.is_some()) else {
        c.flag("vaccination-expiration-invalid", format!("RXA[{n}]-16"));
        return;
    };
    let Some(given) = given_on.map(Dtm::of_date) else {
        return;
    };
    if expires.is_before(&given) {
        // A historical record tells what another provider gave; it is not
        // this clinic's stock, and registries record it as it was.
        let id = if d.historical {
            "vaccination-expired-when-given-historical"
        } else {
            "vaccination-expired-when-given"
        };
        c.flag(id, format!("RXA[{n}]-16"));
    }
}

fn manufacturer(c: &mut Checker, n: usize) {
    let at = || format!("RXA[{n}]-17");
    let mvx = c.at("RXA", n, 17, 1);
    if mvx.is_empty() {
        return;
    }
    let well_formed = (2..=3).contains(&mvx.len()) && mvx.bytes().all(|b| b.is_ascii_uppercase());
    if !well_formed {
        c.flag_code("vaccination-mvx-invalid", at(), mvx);
        return;
    }
    let code = c.code("mvx", mvx);
    match code {
        Code::NoTable => {}
        Code::Unknown => c.flag_code("vaccination-mvx-unrecognized", at(), mvx),
        Code::Known(_) => {
            if code.status() == "Inactive" {
                c.flag_code("vaccination-mvx-inactive", at(), mvx);
            }
        }
    }
}

fn refusal_and_status(c: &mut Checker, n: usize, d: Dose) {
    let status = c.at("RXA", n, 20, 0);
    let reason_at = || format!("RXA[{n}]-18");
    let reason = c.at("RXA", n, 18, 1);
    if reason.is_empty() {
        if d.refused {
            c.flag("vaccination-refusal-reason-missing", reason_at());
        }
    } else {
        if !d.refused {
            c.flag("vaccination-refusal-reason-without-refusal", reason_at());
        }
        c.table_value(
            "nip002",
            reason,
            format_args!("RXA[{n}]-18"),
            "vaccination-refusal-reason-unrecognized",
            None,
        );
    }
    if d.refused {
        for (field, id) in [
            (15, "refusal-with-lot-number"),
            (16, "refusal-with-expiration-date"),
            (17, "refusal-with-manufacturer"),
        ] {
            if !c.at("RXA", n, field, 0).trim_matches('^').is_empty() {
                c.flag(id, format!("RXA[{n}]-{field}"));
            }
        }
    }
    if status.is_empty() {
        c.flag(
            "vaccination-completion-status-missing",
            format!("RXA[{n}]-20"),
        );
    } else {
        c.table_value(
            "hl7-0322",
            status,
            format_args!("RXA[{n}]-20"),
            "vaccination-completion-status-unrecognized",
            None,
        );
    }
    let action = c.at("RXA", n, 21, 0);
    if action.is_empty() {
        c.flag("vaccination-action-code-missing", format!("RXA[{n}]-21"));
    } else {
        c.table_value(
            "hl7-0323",
            action,
            format_args!("RXA[{n}]-21"),
            "vaccination-action-code-unrecognized",
            None,
        );
    }
}

fn routes(c: &mut Checker, g: &Group, d: Dose) {
    if let Some(second) = g.rxr.get(1) {
        c.flag("vaccination-route-repeated", format!("RXR[{second}]"));
    }
    for &r in &g.rxr {
        let route_at = || format!("RXR[{r}]-1");
        let route = c.at("RXR", r, 1, 1);
        if d.refused && !c.at("RXR", r, 1, 0).trim_matches('^').is_empty() {
            c.flag("refusal-with-route", route_at());
        }
        if d.refused && !c.at("RXR", r, 2, 0).trim_matches('^').is_empty() {
            c.flag("refusal-with-site", format!("RXR[{r}]-2"));
        }
        if route.is_empty() {
            c.flag("vaccination-route-missing", route_at());
        } else {
            c.table_value(
                "hl7-0162",
                route,
                format_args!("RXR[{r}]-1"),
                "vaccination-route-unrecognized",
                None,
            );
            let system = c.at("RXR", r, 1, 3);
            let nci = route.starts_with('C')
                && route.len() > 1
                && route.bytes().skip(1).all(|b| b.is_ascii_digit());
            let expected = if nci { "NCIT" } else { "HL70162" };
            if !system.is_empty() && !system.eq_ignore_ascii_case(expected) {
                c.flag_code("vaccination-route-code-system-mismatch", route_at(), route);
            }
        }
        let site = c.at("RXR", r, 2, 1);
        c.table_value(
            "hl7-0163",
            site,
            format_args!("RXR[{r}]-2"),
            "vaccination-site-unrecognized",
            None,
        );
    }
}
