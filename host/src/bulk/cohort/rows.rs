//! A cohort row's values: from CSV columns or a FHIR Patient, checked
//! (names, dates, identifiers) before a query is made of them.

use super::*;

/// Where a cohort column sits in a FHIR Patient (for NDJSON row errors).
pub(super) fn fhir_path(column: &str) -> &'static str {
    match column {
        "member_id" | "mrn" | "mrn_authority" => "identifier",
        "family" => "name.family",
        "given" | "middle" => "name.given",
        "birth_date" => "birthDate",
        "sex" => "gender",
        "mother_maiden" => "extension(patient-mothersMaidenName)",
        "address" => "address.line",
        "city" => "address.city",
        "state" => "address.state",
        "zip" => "address.postalCode",
        "phone" => "telecom",
        _ => "",
    }
}

pub(super) fn str_at<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    let mut at = v;
    for key in path {
        at = match at.get(key) {
            Some(next) => next,
            None => return "",
        };
    }
    at.as_str().unwrap_or("")
}

/// Reads the cohort columns out of a FHIR Patient resource.
pub(super) fn patient_values(p: &Value) -> HashMap<&'static str, String> {
    let mut out: HashMap<&'static str, String> = HashMap::new();
    let empty = Vec::new();
    let list = |key: &str| p.get(key).and_then(Value::as_array).unwrap_or(&empty);
    for id in list("identifier") {
        let types: Vec<&str> = id
            .pointer("/type/coding")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|c| c.get("code").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let value = str_at(id, &["value"]).to_string();
        let system = str_at(id, &["system"]);
        if types.contains(&"MB") || system.to_lowercase().contains("member") {
            out.entry("member_id").or_insert(value);
        } else if !out.contains_key("mrn") {
            out.insert("mrn", value);
            let assigner = str_at(id, &["assigner", "display"]);
            let authority = if assigner.is_empty() {
                system
            } else {
                assigner
            };
            out.insert("mrn_authority", authority.to_string());
        }
    }
    let names = list("name");
    let name = names
        .iter()
        .find(|n| str_at(n, &["use"]) == "official")
        .or_else(|| names.first());
    if let Some(name) = name {
        out.insert("family", str_at(name, &["family"]).to_string());
        let given: Vec<&str> = name
            .get("given")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.insert("given", given.first().copied().unwrap_or("").to_string());
        out.insert("middle", given.get(1..).unwrap_or(&[]).join(" "));
    }
    out.insert("birth_date", str_at(p, &["birthDate"]).to_string());
    out.insert("sex", str_at(p, &["gender"]).to_string());
    if let Some(addr) = list("address").first() {
        let line = addr
            .get("line")
            .and_then(Value::as_array)
            .and_then(|l| l.first());
        out.insert(
            "address",
            line.and_then(Value::as_str).unwrap_or("").to_string(),
        );
        for (col, key) in [("city", "city"), ("state", "state"), ("zip", "postalCode")] {
            out.insert(col, str_at(addr, &[key]).to_string());
        }
    }
    if let Some(phone) = list("telecom")
        .iter()
        .find(|t| str_at(t, &["system"]) == "phone")
    {
        out.insert("phone", str_at(phone, &["value"]).to_string());
    }
    if let Some(ext) = list("extension").iter().find(|e| {
        str_at(e, &["url"]) == "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
    }) {
        out.insert("mother_maiden", str_at(ext, &["valueString"]).to_string());
    }
    out
}

/// Today as `YYYYMMDD` (UTC).
pub(super) fn today() -> String {
    crate::hl7::hl7_timestamp().chars().take(8).collect()
}

/// Checks and normalizes one row's values; `name` says how to name a column
/// in an error (its CSV name, or its place in a FHIR Patient).
pub(super) fn validate(
    row: u64,
    values: &HashMap<&'static str, String>,
    name: impl Fn(&str) -> String,
) -> Result<Patient, RowError> {
    let err = |col: &str, reason: String| RowError {
        row,
        column: name(col),
        reason,
    };
    let get = |col: &'static str| -> Result<String, RowError> {
        let v = values.get(col).map(|s| s.trim()).unwrap_or("");
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(err(
                col,
                format!("longer than {MAX_VALUE_CHARS} characters"),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(err(col, "holds a control character".into()));
        }
        Ok(v.to_string())
    };
    let mut p = Patient {
        row,
        member_id: get("member_id")?,
        mrn: get("mrn")?,
        mrn_authority: get("mrn_authority")?,
        family: get("family")?,
        given: get("given")?,
        middle: get("middle")?,
        mother_maiden: get("mother_maiden")?,
        address: get("address")?,
        city: get("city")?,
        ..Patient::default()
    };
    for (col, v) in [("family", &p.family), ("given", &p.given)] {
        if v.is_empty() {
            return Err(err(col, "is required".into()));
        }
    }
    if p.mrn.is_empty() && p.member_id.is_empty() {
        let col = if values.contains_key("mrn") {
            "mrn"
        } else {
            "member_id"
        };
        return Err(err(col, "an MRN or a member id is required".into()));
    }
    p.birth_date = birth_date(&get("birth_date")?).map_err(|r| err("birth_date", r))?;
    p.sex = match get("sex")?.to_uppercase().as_str() {
        "M" | "MALE" => "M".into(),
        "F" | "FEMALE" => "F".into(),
        "" | "U" | "UNKNOWN" | "O" | "OTHER" | "X" => "U".into(),
        other => return Err(err("sex", format!("{other:?} is not M, F or U"))),
    };
    let state = get("state")?.to_uppercase();
    let two_letters = state.len() == 2 && state.bytes().all(|b| b.is_ascii_alphabetic());
    if !state.is_empty() && !two_letters {
        return Err(err(
            "state",
            format!("{state:?} is not a two-letter state code"),
        ));
    }
    p.state = state;
    let zip: String = get("zip")?
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .collect();
    if !zip.is_empty()
        && !((zip.len() == 5 || zip.len() == 9) && zip.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(err("zip", format!("{zip:?} is not 5 or 9 digits")));
    }
    p.zip = zip;
    let raw_phone = get("phone")?;
    let phone: String = raw_phone
        .chars()
        .filter(|c| !matches!(c, '(' | ')' | '-' | '.' | ' ' | '+'))
        .collect();
    let phone_like = phone.bytes().all(|b| b.is_ascii_digit()) && (7..=15).contains(&phone.len());
    if !phone.is_empty() && !phone_like {
        return Err(err(
            "phone",
            format!("{raw_phone:?} is not a phone number (7 to 15 digits)"),
        ));
    }
    p.phone = match phone.strip_prefix('1') {
        Some(rest) if phone.len() == 11 => rest.to_string(),
        _ => phone,
    };
    Ok(p)
}

/// A birth date as `YYYYMMDD`, from `YYYY-MM-DD` or `YYYYMMDD`.
pub(super) fn birth_date(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is required".into());
    }
    let digits: String =
        if text.len() == 10 && text.get(4..5) == Some("-") && text.get(7..8) == Some("-") {
            text.chars().filter(|c| *c != '-').collect()
        } else {
            text.to_string()
        };
    let ok = digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit());
    let part = |a: usize, b: usize| {
        digits
            .get(a..b)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    if !ok {
        return Err(format!("{text:?} is not a date (YYYY-MM-DD or YYYYMMDD)"));
    }
    if !valid_ymd(part(0, 4), part(4, 6), part(6, 8)) || part(0, 4) < 1850 {
        return Err(format!("{text:?} is not a real date"));
    }
    if digits > today() {
        return Err(format!("{text:?} is in the future"));
    }
    Ok(digits)
}

impl RowError {
    /// The error as a FHIR R4 OperationOutcome naming row, column and reason.
    pub fn operation_outcome(&self) -> Value {
        let place = if self.column.is_empty() {
            format!("row {}", self.row)
        } else {
            format!("row {}, column {}", self.row, self.column)
        };
        let mut issue = json!({
            "severity": "error",
            "code": "invalid",
            "details": {"text": self.reason},
            "diagnostics": format!("{place}: {}", self.reason),
        });
        if !self.column.is_empty() {
            issue["expression"] = json!([self.column]);
        }
        json!({
            "resourceType": "OperationOutcome",
            "id": format!("cohort-row-{}", self.row),
            "issue": [issue],
        })
    }
}
