//! Order (ORC), vaccination (RXA) and route (RXR) checks.

use super::{Checker, Code, Group, pid};
use crate::dates::{self, Date, DateValue};

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
    let source = c.get(&format!("RXA[{n}]-9.1"));
    let status = c.get(&format!("RXA[{n}]-20"));
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
            if c.get(&format!("ORC[{o}]-3")).trim_matches('^').is_empty() {
                c.flag("order-filler-number-missing", format!("ORC[{o}]-3"));
            }
            let control = c.get(&format!("ORC[{o}]-1"));
            if control != "RE" {
                c.flag_code("order-control-invalid", format!("ORC[{o}]-1"), control);
            }
        }
    }
    if c.get(&at("1")) != "0" {
        c.flag("vaccination-sub-id-invalid", at("1"));
    }
    if c.get(&at("2")) != "1" {
        c.flag("vaccination-sub-id-counter-invalid", at("2"));
    }
    let d = dose(c, n);
    let given_on = admin_date(c, n);
    vaccine_codes(c, n, d, given_on);
    amount(c, n, d);
    information_source(c, n);
    if d.administered {
        if c.get(&at("10")).trim_matches('^').is_empty() {
            c.flag("vaccination-provider-missing", at("10"));
        }
        if c.get(&at("11.4")).trim_matches('&').is_empty() {
            c.flag("vaccination-location-missing", at("11.4"));
        }
        if c.get(&at("15")).is_empty() {
            c.flag("vaccination-lot-missing", at("15"));
        } else if c.get(&at("16")).is_empty() {
            c.flag("vaccination-expiration-missing", at("16"));
        }
        if c.get(&at("17")).trim_matches('^').is_empty() {
            c.flag("vaccination-manufacturer-missing", at("17"));
        }
        match g.rxr.first() {
            None => c.flag("vaccination-route-segment-missing", format!("RXA[{n}]")),
            Some(r) => {
                if c.get(&format!("RXR[{r}]-2")).trim_matches('^').is_empty() {
                    c.flag("vaccination-site-missing", format!("RXR[{r}]-2"));
                }
            }
        }
    }
    administered_at(c, n);
    lot_and_expiry(c, n, given_on);
    manufacturer(c, n);
    refusal_and_status(c, n, d);
    routes(c, g, d);
}

fn admin_date(c: &mut Checker, n: usize) -> Option<Date> {
    let path = format!("RXA[{n}]-3");
    let date = c.date_field(
        &path,
        Some("vaccination-date-missing"),
        "vaccination-date-invalid",
    )?;
    if c.in_future(date) {
        c.flag("vaccination-date-in-future", path.as_str());
    }
    if let DateValue::Valid(birth) = dates::full_date(c.get("PID-7"))
        && date < birth
    {
        c.flag("vaccination-date-before-birth", path.as_str());
    }
    if let DateValue::Valid(death) = dates::full_date(c.get("PID-29"))
        && date > death
    {
        c.flag("vaccination-date-after-death", path.as_str());
    }
    let end = c.get(&format!("RXA[{n}]-4"));
    if !end.is_empty() {
        let same = matches!(dates::full_date(end), DateValue::Valid(e) if e == date);
        if !same {
            c.flag("vaccination-end-date-mismatch", format!("RXA[{n}]-4"));
        }
    }
    Some(date)
}

fn is_cvx(code: &str) -> bool {
    (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

fn is_ndc(code: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = code.split('-').collect();
    match parts.as_slice() {
        [a, b, c] => digits(a, 5) && digits(b, 4) && digits(c, 2),
        [one] => digits(one, 11),
        _ => false,
    }
}

/// `YYYYMMDD` or `YYYY-MM-DD` → date.
fn table_date(text: &str) -> Option<Date> {
    let compact = text.replace('-', "");
    dates::parse_dtm(&compact).and_then(|d| d.date)
}

fn vaccine_codes(c: &mut Checker, n: usize, d: Dose, given_on: Option<Date>) {
    let at = format!("RXA[{n}]-5");
    if c.get(&at).trim_matches('^').is_empty() {
        c.flag("vaccination-code-missing", at);
        return;
    }
    let mut cvx = "";
    let mut ndc = "";
    for (code_c, system_c) in [(1, 3), (4, 6)] {
        let code = c.get(&format!("{at}.{code_c}"));
        let system = c.get(&format!("{at}.{system_c}")).to_ascii_uppercase();
        match system.as_str() {
            "CVX" => cvx = code,
            "NDC" => ndc = code,
            "" if code_c == 1 && !code.is_empty() => {
                c.flag("vaccination-code-system-missing", format!("{at}.3"));
                cvx = code;
            }
            _ => {}
        }
    }
    if d.refused && !ndc.is_empty() {
        c.flag("refusal-with-ndc", at.as_str());
    }
    if !cvx.is_empty() {
        cvx_status(c, n, cvx, d, given_on);
    }
    if !ndc.is_empty() {
        ndc_status(c, n, ndc, cvx, d, given_on);
    }
}

fn cvx_status(c: &mut Checker, n: usize, cvx: &str, d: Dose, given_on: Option<Date>) {
    let at = format!("RXA[{n}]-5");
    if !is_cvx(cvx) {
        c.flag_code("vaccination-cvx-invalid", at, cvx);
        return;
    }
    let status_rxa20 = c.get(&format!("RXA[{n}]-20"));
    if cvx == "998" {
        if status_rxa20 != "NA" {
            c.flag("vaccination-cvx-no-vaccine-not-na", at);
        }
        return;
    }
    let code = c.code("cvx", cvx);
    match code {
        Code::NoTable => return,
        Code::Unknown => {
            c.flag_code("vaccination-cvx-unrecognized", at, cvx);
            return;
        }
        Code::Known(_) => {}
    }
    if !d.given {
        return;
    }
    match code.status() {
        "Never Active" => c.flag_code("vaccination-cvx-never-active", at.as_str(), cvx),
        "Non-US" if d.administered => c.flag_code("vaccination-cvx-non-us", at.as_str(), cvx),
        "Inactive" => {
            let changed = table_date(code.field(2));
            let was_active = matches!((given_on, changed), (Some(g), Some(ch)) if g < ch);
            if d.administered && !was_active {
                c.flag_code("vaccination-cvx-inactive", at.as_str(), cvx);
            } else if !d.administered && !was_active {
                c.flag_code("vaccination-cvx-inactive-historical", at.as_str(), cvx);
            }
        }
        _ => {}
    }
    if d.administered && code.field(1).to_ascii_lowercase().contains("unspecified") {
        c.flag_code("vaccination-cvx-unspecified", at.as_str(), cvx);
    }
}

fn ndc_status(c: &mut Checker, n: usize, ndc: &str, cvx: &str, d: Dose, given_on: Option<Date>) {
    let at = format!("RXA[{n}]-5");
    if !is_ndc(ndc) {
        c.flag_code("vaccination-ndc-invalid", at, ndc);
        return;
    }
    let code = c.code("ndc", ndc);
    match code {
        Code::NoTable => return,
        Code::Unknown => {
            c.flag_code("vaccination-ndc-unrecognized", at, ndc);
            return;
        }
        Code::Known(_) => {}
    }
    let ndc_cvx = code.field(0);
    if !cvx.is_empty() && !ndc_cvx.is_empty() && ndc_cvx != cvx {
        c.flag_code("vaccination-ndc-cvx-mismatch", at.as_str(), ndc);
    }
    let ndc_mvx = code.field(1);
    let mvx = c.get(&format!("RXA[{n}]-17.1"));
    if !ndc_mvx.is_empty() && !mvx.is_empty() && !ndc_mvx.eq_ignore_ascii_case(mvx) {
        c.flag_code("vaccination-mvx-ndc-mismatch", format!("RXA[{n}]-17"), mvx);
    }
    if let (true, Some(on)) = (d.administered, given_on) {
        let before = table_date(code.field(3)).is_some_and(|first| on < first);
        let after = table_date(code.field(4)).is_some_and(|last| on > last);
        if before || after {
            c.flag_code("vaccination-ndc-out-of-use", at.as_str(), ndc);
        }
    }
}

fn amount(c: &mut Checker, n: usize, d: Dose) {
    let at = format!("RXA[{n}]-6");
    let raw = c.get(&at);
    if raw.is_empty() {
        c.flag("vaccination-amount-missing", at);
        return;
    }
    let Ok(value) = raw.parse::<f64>() else {
        c.flag_code("vaccination-amount-invalid", at, raw);
        return;
    };
    let not_given = value <= 0.0 || raw == "999";
    if d.administered && not_given {
        c.flag("vaccination-amount-not-given", at.as_str());
    }
    if !not_given && c.get(&format!("RXA[{n}]-7")).trim_matches('^').is_empty() {
        c.flag("vaccination-units-missing", format!("RXA[{n}]-7"));
    }
}

fn information_source(c: &mut Checker, n: usize) {
    let at = format!("RXA[{n}]-9");
    let source = c.get(&format!("{at}.1"));
    let status = c.get(&format!("RXA[{n}]-20"));
    let given = ["", "CP", "PA"].contains(&status);
    if source.is_empty() {
        if given {
            c.flag("vaccination-information-source-missing", at);
        }
        return;
    }
    if !given {
        c.flag("vaccination-information-source-not-allowed", at.as_str());
    }
    c.table_value(
        "nip001",
        source,
        &at,
        "vaccination-information-source-unrecognized",
        None,
    );
}

fn administered_at(c: &mut Checker, n: usize) {
    let base = format!("RXA[{n}]-11");
    if c.get(&base).trim_matches(['^', '&']).is_empty() {
        return;
    }
    if c.get(&format!("{base}.4.1")).is_empty() {
        c.flag("vaccination-location-name-missing", format!("{base}.4"));
    }
    if c.get(&format!("{base}.6")).is_empty() {
        c.flag("vaccination-location-type-missing", format!("{base}.6"));
    }
    pid::place(
        c,
        &base,
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

fn lot_and_expiry(c: &mut Checker, n: usize, given_on: Option<Date>) {
    let lot = c.get(&format!("RXA[{n}]-15"));
    if !lot.is_empty() && LOT_PLACEHOLDERS.contains(&lot.to_ascii_uppercase().as_str()) {
        c.flag_code("vaccination-lot-invalid", format!("RXA[{n}]-15"), lot);
    }
    let path = format!("RXA[{n}]-16");
    if let Some(expires) = c.date_field(&path, None, "vaccination-expiration-invalid")
        && given_on.is_some_and(|g| expires < g)
    {
        c.flag("vaccination-expired-when-given", path);
    }
}

fn manufacturer(c: &mut Checker, n: usize) {
    let at = format!("RXA[{n}]-17");
    let mvx = c.get(&format!("{at}.1"));
    if mvx.is_empty() {
        return;
    }
    let well_formed = (2..=3).contains(&mvx.len()) && mvx.bytes().all(|b| b.is_ascii_uppercase());
    if !well_formed {
        c.flag_code("vaccination-mvx-invalid", at, mvx);
        return;
    }
    let code = c.code("mvx", mvx);
    match code {
        Code::NoTable => {}
        Code::Unknown => c.flag_code("vaccination-mvx-unrecognized", at, mvx),
        Code::Known(_) => {
            if code.status() == "Inactive" {
                c.flag_code("vaccination-mvx-inactive", at, mvx);
            }
        }
    }
}

fn refusal_and_status(c: &mut Checker, n: usize, d: Dose) {
    let status = c.get(&format!("RXA[{n}]-20"));
    let reason_at = format!("RXA[{n}]-18");
    let reason = c.get(&format!("{reason_at}.1"));
    if reason.is_empty() {
        if d.refused {
            c.flag("vaccination-refusal-reason-missing", reason_at.as_str());
        }
    } else {
        if !d.refused {
            c.flag(
                "vaccination-refusal-reason-without-refusal",
                reason_at.as_str(),
            );
        }
        c.table_value(
            "nip002",
            reason,
            &reason_at,
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
            let path = format!("RXA[{n}]-{field}");
            if !c.get(&path).trim_matches('^').is_empty() {
                c.flag(id, path);
            }
        }
    }
    let status_at = format!("RXA[{n}]-20");
    if status.is_empty() {
        c.flag("vaccination-completion-status-missing", status_at);
    } else {
        c.table_value(
            "hl7-0322",
            status,
            &status_at,
            "vaccination-completion-status-unrecognized",
            None,
        );
    }
    let action_at = format!("RXA[{n}]-21");
    let action = c.get(&action_at);
    if action.is_empty() {
        c.flag("vaccination-action-code-missing", action_at);
    } else {
        c.table_value(
            "hl7-0323",
            action,
            &action_at,
            "vaccination-action-code-unrecognized",
            None,
        );
    }
}

fn routes(c: &mut Checker, g: &Group, d: Dose) {
    if let Some(second) = g.rxr.get(1) {
        c.flag("vaccination-route-repeated", format!("RXR[{second}]"));
    }
    for r in &g.rxr {
        let route_at = format!("RXR[{r}]-1");
        let route = c.get(&format!("{route_at}.1"));
        if d.refused && !c.get(&route_at).trim_matches('^').is_empty() {
            c.flag("refusal-with-route", route_at.as_str());
        }
        let site_at = format!("RXR[{r}]-2");
        if d.refused && !c.get(&site_at).trim_matches('^').is_empty() {
            c.flag("refusal-with-site", site_at.as_str());
        }
        if route.is_empty() {
            c.flag("vaccination-route-missing", route_at.as_str());
        } else {
            c.table_value(
                "hl7-0162",
                route,
                &route_at,
                "vaccination-route-unrecognized",
                None,
            );
            let system = c.get(&format!("{route_at}.3")).to_ascii_uppercase();
            let nci = route.starts_with('C')
                && route.len() > 1
                && route.bytes().skip(1).all(|b| b.is_ascii_digit());
            let expected = if nci { "NCIT" } else { "HL70162" };
            if !system.is_empty() && system != expected {
                c.flag_code(
                    "vaccination-route-code-system-mismatch",
                    route_at.as_str(),
                    route,
                );
            }
        }
        let site = c.get(&format!("{site_at}.1"));
        c.table_value(
            "hl7-0163",
            site,
            &site_at,
            "vaccination-site-unrecognized",
            None,
        );
    }
}
