//! Immunization code sets, loaded from the files CDC and AIRA publish, into
//! the key → value lookup tables plugins reach through `lookup(table, key)`.
//!
//! | table | key | value (`|`-separated) | source |
//! |---|---|---|---|
//! | `cvx` | CVX code (`08`) | status (Active, Inactive, Non-US, Never Active, Pending), short description, last updated | `cdc/cvx.xml` |
//! | `mvx` | MVX code (`PMC`) | status (Active, Inactive), manufacturer name | `cdc/mvx.xml` |
//! | `ndc` | NDC, hyphenated (`49281-0425-50`) or 11 digits | CVX, MVX, status, first use (YYYYMMDD), last use, product | `cdc/NDC_Unit_sale.txt`, `cdc/NDC_Unit_use.txt` (CVX, dates), `aira/Vaccination_NDC_Code_Unit-of-*.xml` (MVX, status) |
//! | `hl7-NNNN` (0005 and 0189 are the CDCREC sets), `cdcrec-race`, `cdcrec-ethnicity`, `nip001`, `nip002`, `funding-source`, `obx-loinc`, `vis-doc` | the code | status (Valid, Deprecated, Invalid, Unrecognized), label | `aira/*.xml` |
//!
//! A set that fails to load is an error naming its file and why: callers keep
//! the code sets they had.
//!
//! Each set has the date of its data: the newest "last updated" of CVX, MVX
//! and the NDC crosswalks, else the date `released.txt` in the code-set
//! directory gives for the file (or its directory), else none. A file's
//! modification time is never taken for it: a fresh copy would make an old
//! set look new.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One loaded table and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Files it was read from, relative to the code-set directory.
    pub sources: Vec<String>,
    /// The set's own date, `YYYY-MM-DD`: the newest found in its data, else
    /// the one `released.txt` gives; empty when neither says.
    pub date: String,
    pub entries: HashMap<String, String>,
}

/// Every table, by name.
#[derive(Debug, Clone, Default)]
pub struct CodeSets {
    pub tables: BTreeMap<String, Table>,
}

/// The AIRA codebase sets this project ships, and the table each becomes.
pub const AIRA_SETS: [(&str, &str); 27] = [
    ("Patient_Sex", "hl7-0001"),
    ("Patient_Race", "cdcrec-race"),
    ("Patient_Ethnicity", "cdcrec-ethnicity"),
    ("Person_Relationship", "hl7-0063"),
    ("Financial_Status_Code", "hl7-0064"),
    ("Body_Route", "hl7-0162"),
    ("Body_Site", "hl7-0163"),
    ("Vaccination_Completion", "hl7-0322"),
    ("Vaccination_Action_Code", "hl7-0323"),
    ("HL7_Coding_System", "hl7-0396"),
    ("Vaccination_Information_Source", "nip001"),
    ("Vaccination_Refusal", "nip002"),
    ("Vaccination_Funding_Source", "funding-source"),
    ("Observation_Identifier", "obx-loinc"),
    ("Id_Type_Code", "hl7-0203"),
    ("Registry_Status", "hl7-0441"),
    ("Patient_Publicity", "hl7-0215"),
    ("Person_Name_Type", "hl7-0200"),
    ("Message_Processing_Id", "hl7-0103"),
    ("Acknowledgement_Type", "hl7-0155"),
    ("Vaccination_Order_Control_Code", "hl7-0119"),
    ("Address_Type", "hl7-0190"),
    ("Telecommunication_Use", "hl7-0201"),
    ("Telecommunication_Equipment", "hl7-0202"),
    ("Vaccination_VIS_Doc_Type", "vis-doc"),
    ("Evidence_of_Immunity", "evidence-of-immunity"),
    ("Contraindication_or_Precaution", "contraindication"),
];

/// Text between `<tag>` and `</tag>` starting at `from`: (text, index after the close tag).
fn element<'a>(xml: &'a str, tag: &str, from: usize) -> Option<(&'a str, usize)> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.get(from..)?.find(&open)? + from + open.len();
    let end = xml.get(start..)?.find(&close)? + start;
    Some((xml.get(start..end)?, end + close.len()))
}

/// Every `<tag>…</tag>` block in order.
fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((body, next)) = element(xml, tag, at) {
        out.push(body);
        at = next;
    }
    out
}

fn unescape(s: &str) -> String {
    s.trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
        .replace('|', "/")
}

/// Reads a file as text: UTF-8, or ISO-8859-1 when it is not (CDC's cvx.xml).
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}

/// `M/D/YYYY` → `YYYY-MM-DD` (empty when it does not parse).
fn us_date(s: &str) -> String {
    let parts: Vec<&str> = s.trim().split('/').collect();
    match parts.as_slice() {
        [m, d, y] if m.len() <= 2 && d.len() <= 2 && y.len() == 4 => {
            format!("{y}-{:0>2}-{:0>2}", m, d)
        }
        _ => String::new(),
    }
}

fn check_nonempty(t: &Table, path: &Path) -> Result<(), String> {
    if t.entries.is_empty() {
        Err(format!(
            "{}: no codes found; is this the right file?",
            path.display()
        ))
    } else {
        Ok(())
    }
}

/// CDC `cvx.xml`.
pub fn load_cvx(path: &Path) -> Result<Table, String> {
    let xml = read_text(path)?;
    let mut t = Table {
        sources: vec![rel(path)],
        ..Table::default()
    };
    for info in blocks(&xml, "CVXInfo") {
        let get = |tag| {
            element(info, tag, 0)
                .map(|(v, _)| unescape(v))
                .unwrap_or_default()
        };
        let code = get("CVXCode");
        if code.is_empty() {
            continue;
        }
        let updated = us_date(&get("LastUpdated"));
        if updated > t.date {
            t.date = updated.clone();
        }
        t.entries.insert(
            code,
            format!("{}|{}|{updated}", get("Status"), get("ShortDescription")),
        );
    }
    check_nonempty(&t, path)?;
    Ok(t)
}

/// CDC `mvx.xml` (Name/Value pairs).
pub fn load_mvx(path: &Path) -> Result<Table, String> {
    let xml = read_text(path)?;
    let mut t = Table {
        sources: vec![rel(path)],
        ..Table::default()
    };
    for info in blocks(&xml, "MVXInfo") {
        let names = blocks(info, "Name");
        let values = blocks(info, "Value");
        let field = |name: &str| {
            names
                .iter()
                .position(|n| n.trim() == name)
                .and_then(|i| values.get(i))
                .map(|v| unescape(v))
                .unwrap_or_default()
        };
        let code = field("MVX_CODE");
        if code.is_empty() {
            continue;
        }
        let updated = us_date(&field("Last Updated"));
        if updated > t.date {
            t.date = updated;
        }
        t.entries.insert(
            code,
            format!("{}|{}", field("Status"), field("Manufacturer Name")),
        );
    }
    check_nonempty(&t, path)?;
    Ok(t)
}

fn is_ndc(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && s.len() == 13
}

/// CDC `NDC_Unit_sale.txt` / `NDC_Unit_use.txt`: pipe-delimited, no header.
/// Fields 1–3 are labeler, product, package; 4 the proprietary name; 7 and 8
/// the first and last use dates; the CVX code is the first short number after
/// field 9; the hyphenated 11-digit NDC is its own field.
pub fn load_ndc_txt(path: &Path, into: &mut Table) -> Result<usize, String> {
    let text = read_text(path)?;
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() < 14 {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "{}:{}: expected at least 14 '|' fields, found {}",
                path.display(),
                i + 1,
                f.len()
            ));
        }
        let Some(ndc) = f.iter().find(|v| is_ndc(v)).map(|s| s.to_string()) else {
            continue;
        };
        let cvx = f
            .iter()
            .skip(10)
            .find(|v| !v.is_empty() && v.len() <= 3 && v.chars().all(|c| c.is_ascii_digit()))
            .copied()
            .unwrap_or("");
        let (start, end) = (
            f.get(7).copied().unwrap_or(""),
            f.get(8).copied().unwrap_or(""),
        );
        // Field 12 is when CDC last updated the row: `2025-07-16 00:00:00`.
        if let Some(updated) = f.get(11).and_then(|v| iso_date(v))
            && updated.as_str() > into.date.as_str()
        {
            into.date = updated;
        }
        let product = unescape(f.get(4).copied().unwrap_or(""));
        let value = format!("{cvx}||Active|{start}|{end}|{product}");
        into.entries.insert(ndc.replace('-', ""), value.clone());
        into.entries.insert(ndc, value);
        n += 1;
    }
    into.sources.push(rel(path));
    Ok(n)
}

/// An AIRA codebase set: `<code><value/><label/><code-status><status/>`.
pub fn load_aira(path: &Path) -> Result<Table, String> {
    let xml = read_text(path)?;
    let mut t = Table {
        sources: vec![rel(path)],
        ..Table::default()
    };
    for code in blocks(&xml, "code") {
        let value = element(code, "value", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        let label = element(code, "label", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        let status = element(code, "status", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        t.entries.insert(value, format!("{status}|{label}"));
    }
    check_nonempty(&t, path)?;
    Ok(t)
}

/// MVX and status for NDCs from the AIRA NDC sets, merged into the `ndc` table.
fn merge_aira_ndc(path: &Path, ndc: &mut Table) -> Result<(), String> {
    let xml = read_text(path)?;
    for code in blocks(&xml, "code") {
        let value = element(code, "value", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        if !is_ndc(&value) {
            continue;
        }
        let status = element(code, "status", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        let mvx = code
            .split("<link-to codeset=\"VACCINATION_MANUFACTURER_CODE\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(str::trim)
            .unwrap_or("")
            .to_string();
        let cvx = code
            .split("<link-to codeset=\"VACCINATION_CVX_CODE\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(str::trim)
            .unwrap_or("")
            .to_string();
        let label = element(code, "label", 0)
            .map(|(v, _)| unescape(v))
            .unwrap_or_default();
        let status = if status == "Valid" {
            "Active".to_string()
        } else {
            status
        };
        for key in [value.clone(), value.replace('-', "")] {
            let entry = ndc
                .entries
                .entry(key)
                .or_insert_with(|| format!("{cvx}|{mvx}|{status}|||{label}"));
            let mut fields: Vec<String> = entry.split('|').map(str::to_string).collect();
            fields.resize(6, String::new());
            if fields[1].is_empty() {
                fields[1] = mvx.clone();
            }
            if fields[0].is_empty() {
                fields[0] = cvx.clone();
            }
            fields[2] = status.clone();
            *entry = fields.join("|");
        }
    }
    ndc.sources.push(rel(path));
    Ok(())
}

fn rel(path: &Path) -> String {
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|p| p.to_string_lossy().into_owned());
    let name = path
        .file_name()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    match parent {
        Some(p) => format!("{p}/{name}"),
        None => name,
    }
}

/// `YYYY-MM-DD` at the start of `text` (a date or a date and time), if it
/// is one.
fn iso_date(text: &str) -> Option<String> {
    let d = text.get(..10)?;
    let b = d.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    (digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10))
    .then(|| d.to_string())
}

/// The file that dates sets whose data carry no date: lines of `PATH DATE`,
/// `PATH` relative to the code-set directory (a directory ending in `/`
/// dates every file in it), `#` comments.
pub const RELEASED: &str = "released.txt";

/// The dates `released.txt` gives, by path; an absent file gives none, an
/// unreadable line is an error naming it.
fn released(dir: &Path) -> Result<HashMap<String, String>, String> {
    let path = dir.join(RELEASED);
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let text = read_text(&path)?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(file), Some(date), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "{}:{}: expected `PATH YYYY-MM-DD`",
                path.display(),
                i + 1
            ));
        };
        let Some(date) = iso_date(date).filter(|d| d.len() == date.len()) else {
            return Err(format!(
                "{}:{}: {date:?} is not a date (YYYY-MM-DD)",
                path.display(),
                i + 1
            ));
        };
        out.insert(file.to_string(), date);
    }
    Ok(out)
}

/// The date `released` gives a file (`aira/Patient_Sex.xml`): its own line,
/// else its directory's (`aira/`), else none.
fn released_date(released: &HashMap<String, String>, file: &str) -> String {
    released
        .get(file)
        .or_else(|| {
            let (parent, _) = file.rsplit_once('/')?;
            released.get(&format!("{parent}/"))
        })
        .cloned()
        .unwrap_or_default()
}

/// The name of every table a code-set directory can provide.
pub fn table_names() -> Vec<&'static str> {
    let mut names = vec!["cvx", "mvx", "ndc"];
    names.extend(AIRA_SETS.iter().map(|(_, table)| *table));
    names
}

/// Loads every code set from a directory laid out like `samples/codesets`
/// (`cdc/` and `aira/`). Sets whose files are absent are skipped; a file that
/// is present but unreadable or empty is an error.
pub fn load_dir(dir: &Path) -> Result<CodeSets, String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such code-set directory", dir.display()));
    }
    let mut sets = CodeSets::default();
    let released = released(dir)?;
    let cdc = dir.join("cdc");
    let cvx = cdc.join("cvx.xml");
    if cvx.is_file() {
        sets.tables.insert("cvx".into(), load_cvx(&cvx)?);
    }
    let mvx = cdc.join("mvx.xml");
    if mvx.is_file() {
        sets.tables.insert("mvx".into(), load_mvx(&mvx)?);
    }
    let mut ndc = Table::default();
    for f in ["NDC_Unit_sale.txt", "NDC_Unit_use.txt"] {
        let p = cdc.join(f);
        if p.is_file() {
            load_ndc_txt(&p, &mut ndc)?;
        }
    }
    let aira = dir.join("aira");
    for f in [
        "Vaccination_NDC_Code_Unit-of-Sale.xml",
        "Vaccination_NDC_Code_Unit-of-Use.xml",
    ] {
        let p = aira.join(f);
        if p.is_file() {
            merge_aira_ndc(&p, &mut ndc)?;
        }
    }
    if ndc.date.is_empty() {
        ndc.date = ndc
            .sources
            .iter()
            .map(|f| released_date(&released, f))
            .max()
            .unwrap_or_default();
    }
    if !ndc.entries.is_empty() {
        sets.tables.insert("ndc".into(), ndc);
    }
    for (file, table) in AIRA_SETS {
        let p = aira.join(format!("{file}.xml"));
        if p.is_file() {
            let mut t = load_aira(&p)?;
            t.date = released_date(&released, &format!("aira/{file}.xml"));
            sets.tables.insert(table.to_string(), t);
        }
    }
    if sets.tables.is_empty() {
        return Err(format!(
            "{}: no code-set files found (expected cdc/cvx.xml, aira/*.xml …)",
            dir.display()
        ));
    }
    Ok(sets)
}

/// `samples/codesets` of a source checkout, for tests of crates two levels
/// below the root (`host/codesets`, `plugins/NAME`). The manifest directory is
/// read at run time, so a build reused from another checkout still finds it.
pub fn default_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../../samples/codesets")
}

/// Splits a table value into its `|`-separated fields.
pub fn fields(value: &str) -> Vec<&str> {
    value.split('|').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_shipped_sets() {
        let sets = load_dir(&default_dir()).unwrap();
        let cvx = &sets.tables["cvx"];
        assert!(cvx.entries.len() > 200, "{}", cvx.entries.len());
        assert!(
            cvx.entries["08"].starts_with("Active|Hep B, adolescent or pediatric|"),
            "{}",
            cvx.entries["08"]
        );
        assert!(cvx.entries["54"].starts_with("Inactive|"));
        assert!(
            sets.tables["mvx"].entries["PMC"].starts_with("Active|Sanofi Pasteur"),
            "{}",
            sets.tables["mvx"].entries["PMC"]
        );
        let ndc = &sets.tables["ndc"];
        let flu = fields(&ndc.entries["49281-0425-50"]);
        assert_eq!(flu.first(), Some(&"140"));
        assert_eq!(fields(&ndc.entries["49281042550"]).first(), Some(&"140"));
        assert_eq!(
            fields(&ndc.entries["00069-0344-01"])[..3],
            ["305", "PFR", "Active"]
        );
        assert!(sets.tables["hl7-0001"].entries["F"].starts_with("Valid|Female"));
        assert!(sets.tables["cdcrec-race"].entries["2106-3"].starts_with("Valid|"));
        assert!(sets.tables["cdcrec-race"].entries["W"].starts_with("Deprecated|"));
        assert!(sets.tables["hl7-0162"].entries.contains_key("C28161"));
    }

    /// A fresh copy (every file modified now) keeps each set's own date:
    /// from its data, or from `released.txt`; never the copy's time.
    #[test]
    fn a_fresh_copy_keeps_each_sets_own_date() {
        let dir = std::env::temp_dir().join(format!("izhub-codesets-copy-{}", std::process::id()));
        let from = default_dir();
        for sub in ["", "cdc", "aira"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            for entry in std::fs::read_dir(from.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::copy(&path, dir.join(sub).join(path.file_name().unwrap())).unwrap();
                }
            }
        }
        let sets = load_dir(&dir).unwrap();
        let today = {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let (y, m, d) = izhub_hl7::ymd_from_unix_secs(secs);
            format!("{y:04}-{m:02}-{d:02}")
        };
        for (name, table) in &sets.tables {
            assert!(iso_date(&table.date).is_some(), "{name}: {:?}", table.date);
            assert!(table.date < today, "{name}: {}", table.date);
        }
        assert!(sets.tables["ndc"].date.starts_with("2025-"));
        assert_eq!(sets.tables["hl7-0001"].date, "2025-12-09");
        // Without released.txt the AIRA sets have no date rather than today's.
        std::fs::remove_file(dir.join(RELEASED)).unwrap();
        let sets = load_dir(&dir).unwrap();
        assert_eq!(sets.tables["hl7-0001"].date, "");
        assert!(!sets.tables["cvx"].date.is_empty());
        // A line that is not `PATH DATE` is named.
        std::fs::write(dir.join(RELEASED), "# dates\naira/ 2025-13\n").unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(
            err.contains("released.txt:2: \"2025-13\" is not a date"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("izhub-codesets-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cdc")).unwrap();
        std::fs::write(dir.join("cdc/cvx.xml"), "<not-cvx/>").unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(err.contains("cvx.xml: no codes found"), "{err}");
        std::fs::write(dir.join("cdc/cvx.xml"), "<CVXCodes><CVXInfo><CVXCode>08</CVXCode><Status>Active</Status><ShortDescription>x</ShortDescription></CVXInfo></CVXCodes>").unwrap();
        std::fs::write(dir.join("cdc/NDC_Unit_sale.txt"), "only|three|fields\n").unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(
            err.contains("NDC_Unit_sale.txt:1: expected at least 14"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
