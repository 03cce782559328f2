//! A cohort file, read one patient at a time: CSV with a header row naming
//! the columns (any order, a few aliases), or FHIR Patient NDJSON. The
//! format is told by the first non-blank byte (`{` means NDJSON). A bad row
//! is an item of its own ([`RowError`]) and reading goes on; only a file that
//! cannot be read at all, or a header that names unknown columns, stops it.
//!
//! Memory is bounded: a physical line over [`MAX_LINE_BYTES`] is skipped
//! (an error for that row), and [`Limits`] caps the rows and bytes read.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::{Value, json};

use super::rsp::valid_ymd;

mod rows;

use rows::*;

/// The longest line (or CSV record) read: 64 KiB.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// The longest value kept in a column.
const MAX_VALUE_CHARS: usize = 200;

/// One patient of a cohort.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Patient {
    /// The row (CSV, header = 1) or line (NDJSON) the patient came from.
    pub row: u64,
    pub member_id: String,
    pub mrn: String,
    pub mrn_authority: String,
    pub family: String,
    pub given: String,
    pub middle: String,
    /// `YYYYMMDD`.
    pub birth_date: String,
    /// `M`, `F` or `U`.
    pub sex: String,
    pub mother_maiden: String,
    pub address: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    /// Digits only.
    pub phone: String,
}

/// A row that could not be read: which row, which column, why.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub row: u64,
    pub column: String,
    pub reason: String,
}

/// Why a cohort file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CohortError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: the file is empty")]
    Empty { file: String },
    #[error("{file}: row 1: unknown column(s) {columns:?}; the columns are {known}")]
    UnknownColumns {
        file: String,
        columns: Vec<String>,
        known: String,
    },
    #[error("{file}: row 1: column {column:?} is named twice")]
    DuplicateColumn { file: String, column: String },
    #[error("{file}: row 1: required column(s) missing: {columns}")]
    MissingColumns { file: String, columns: String },
    #[error("{file}: row 1: the header row is not readable CSV: {reason}")]
    BadHeader { file: String, reason: String },
}

/// Caps on what one cohort may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Patients (data rows or lines) read at most; the next is an error and the end.
    pub max_rows: u64,
    /// Bytes read at most; past it, an error and the end.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 5_000_000,
            max_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// The columns a CSV cohort may have, in documentation order.
pub const COLUMNS: [&str; 14] = [
    "member_id",
    "mrn",
    "mrn_authority",
    "family",
    "given",
    "middle",
    "birth_date",
    "sex",
    "mother_maiden",
    "address",
    "city",
    "state",
    "zip",
    "phone",
];

/// Other names accepted for a column (compared after lower-casing and
/// turning spaces and hyphens into underscores).
const ALIASES: [(&str, &str); 28] = [
    ("member", "member_id"),
    ("member_number", "member_id"),
    ("subscriber_id", "member_id"),
    ("medical_record_number", "mrn"),
    ("mrn_aa", "mrn_authority"),
    ("assigning_authority", "mrn_authority"),
    ("authority", "mrn_authority"),
    ("last_name", "family"),
    ("lastname", "family"),
    ("family_name", "family"),
    ("surname", "family"),
    ("first_name", "given"),
    ("firstname", "given"),
    ("given_name", "given"),
    ("middle_name", "middle"),
    ("dob", "birth_date"),
    ("birthdate", "birth_date"),
    ("date_of_birth", "birth_date"),
    ("gender", "sex"),
    ("mothers_maiden_name", "mother_maiden"),
    ("mother_maiden_name", "mother_maiden"),
    ("street", "address"),
    ("address1", "address"),
    ("zip_code", "zip"),
    ("postal_code", "zip"),
    ("zipcode", "zip"),
    ("phone_number", "phone"),
    ("telephone", "phone"),
];

enum Format {
    /// CSV: the column index of each known column.
    Csv(Vec<Option<&'static str>>),
    Ndjson,
}

/// A cohort being read: an iterator of patients and row errors.
pub struct Cohort {
    reader: Box<dyn BufRead + Send>,
    name: String,
    format: Format,
    limits: Limits,
    /// The row number of the last record read (header = 1 in CSV): the
    /// line it starts on.
    row: u64,
    /// Lines the last record took beyond its first (a quoted line break).
    continued: u64,
    rows_read: u64,
    bytes: u64,
    done: bool,
}

impl std::fmt::Debug for Cohort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cohort")
            .field("name", &self.name)
            .field("row", &self.row)
            .finish()
    }
}

/// One physical line (or several, for a CSV record with a quoted line
/// break), without its end; `too_long` when it was cut at the limit (the
/// rest of it is skipped).
struct Line {
    bytes: Vec<u8>,
    too_long: bool,
    read: u64,
}

/// Reads up to the next LF, keeping at most `max` bytes.
fn read_line(r: &mut dyn BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Line {
        bytes: Vec::new(),
        too_long: false,
        read: 0,
    };
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((line.read > 0).then_some(line));
        }
        let (chunk, found) = match memchr::memchr(b'\n', buf) {
            Some(at) => (buf.get(..at + 1).unwrap_or(buf), true),
            None => (buf, false),
        };
        let used = chunk.len();
        let keep = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        if line.bytes.len() + keep.len() > max {
            line.too_long = true;
        } else if !line.too_long {
            line.bytes.extend_from_slice(keep);
        }
        line.read += used as u64;
        r.consume(used);
        if found {
            if line.bytes.last() == Some(&b'\r') {
                line.bytes.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .replace([' ', '-'], "_")
}

fn column_for(name: &str) -> Option<&'static str> {
    let n = normalize_name(name);
    COLUMNS
        .iter()
        .find(|c| **c == n)
        .copied()
        .or_else(|| ALIASES.iter().find(|(a, _)| *a == n).map(|(_, c)| *c))
}

/// Splits one CSV record (RFC 4180) into its fields.
fn csv_fields(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_string).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a CSV line ends inside a quoted value, so the record goes on
/// on the next line (RFC 4180). A quote is special only at the start of a
/// value; one inside an unquoted value (`O"Brien`) is a character like any.
fn ends_in_quoted_field(bytes: &[u8]) -> bool {
    let (mut quoted, mut at_start) = (false, true);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
        } else if b == b',' {
            at_start = true;
            i += 1;
            continue;
        } else if b == b'"' && at_start {
            quoted = true;
        }
        at_start = false;
        i += 1;
    }
    quoted
}

impl Cohort {
    /// Opens a cohort file and reads its header (CSV) or notes it is NDJSON.
    pub fn open(path: &Path) -> Result<Cohort, CohortError> {
        let file = std::fs::File::open(path).map_err(|source| CohortError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Cohort::from_reader(
            Box::new(std::io::BufReader::with_capacity(64 * 1024, file)),
            &path.display().to_string(),
        )
    }

    /// Reads a cohort from any buffered reader; `name` names it in errors.
    pub fn from_reader(
        mut reader: Box<dyn BufRead + Send>,
        name: &str,
    ) -> Result<Cohort, CohortError> {
        let io = |source| CohortError::Io {
            file: name.to_string(),
            source,
        };
        let mut skipped_lines = 0;
        let first = loop {
            let buf = reader.fill_buf().map_err(io)?;
            let Some(&b) = buf.first() else {
                return Err(CohortError::Empty {
                    file: name.to_string(),
                });
            };
            if b.is_ascii_whitespace() {
                skipped_lines += u64::from(b == b'\n');
                reader.consume(1);
            } else if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                reader.consume(3);
            } else {
                break b;
            }
        };
        let mut cohort = Cohort {
            reader,
            name: name.to_string(),
            format: Format::Ndjson,
            limits: Limits::default(),
            row: skipped_lines,
            continued: 0,
            rows_read: 0,
            bytes: 0,
            done: false,
        };
        if first != b'{' {
            cohort.read_header()?;
        }
        Ok(cohort)
    }

    /// Sets the caps on rows and bytes.
    pub fn with_limits(mut self, limits: Limits) -> Cohort {
        self.limits = limits;
        self
    }

    /// The name given to the cohort (its path, for a file).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn read_header(&mut self) -> Result<(), CohortError> {
        let file = self.name.clone();
        let line = read_line(&mut self.reader, MAX_LINE_BYTES)
            .map_err(|source| CohortError::Io {
                file: file.clone(),
                source,
            })?
            .ok_or_else(|| CohortError::Empty { file: file.clone() })?;
        self.row += 1;
        self.bytes += line.read;
        if line.too_long {
            return Err(CohortError::BadHeader {
                file,
                reason: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        let names = csv_fields(&line.bytes).map_err(|reason| CohortError::BadHeader {
            file: file.clone(),
            reason,
        })?;
        let mut index = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in &names {
            match column_for(name) {
                Some(col) if index.contains(&Some(col)) => {
                    return Err(CohortError::DuplicateColumn {
                        file,
                        column: name.clone(),
                    });
                }
                Some(col) => index.push(Some(col)),
                None if name.trim().is_empty() => index.push(None),
                None => {
                    unknown.push(name.clone());
                    index.push(None);
                }
            }
        }
        if !unknown.is_empty() {
            return Err(CohortError::UnknownColumns {
                file,
                columns: unknown,
                known: COLUMNS.join(", "),
            });
        }
        let has = |c: &str| index.contains(&Some(c));
        let mut missing: Vec<&str> = ["family", "given", "birth_date"]
            .into_iter()
            .filter(|c| !has(c))
            .collect();
        if !has("mrn") && !has("member_id") {
            missing.push("mrn or member_id");
        }
        if !missing.is_empty() {
            return Err(CohortError::MissingColumns {
                file,
                columns: missing.join(", "),
            });
        }
        self.format = Format::Csv(index);
        Ok(())
    }

    fn row_error(&self, column: &str, reason: impl Into<String>) -> RowError {
        RowError {
            row: self.row,
            column: column.to_string(),
            reason: reason.into(),
        }
    }

    /// The next record: its bytes (several physical lines for a CSV record
    /// with quoted line breaks), or an error for an over-long one.
    fn next_record(&mut self) -> Option<Result<Vec<u8>, RowError>> {
        let csv = matches!(self.format, Format::Csv(_));
        loop {
            let line = match read_line(&mut self.reader, MAX_LINE_BYTES) {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.row_error("", format!("read failed: {e}"))));
                }
            };
            self.row += 1 + std::mem::take(&mut self.continued);
            self.bytes += line.read;
            let mut line = line;
            let mut unclosed = false;
            while csv && !line.too_long && ends_in_quoted_field(&line.bytes) {
                match read_line(&mut self.reader, MAX_LINE_BYTES) {
                    Ok(Some(more)) => {
                        self.bytes += more.read;
                        self.continued += 1;
                        if line.bytes.len() + more.bytes.len() + 1 > MAX_LINE_BYTES || more.too_long
                        {
                            line.too_long = true;
                        } else {
                            line.bytes.push(b'\n');
                            line.bytes.extend_from_slice(&more.bytes);
                        }
                    }
                    Ok(None) | Err(_) => {
                        unclosed = true;
                        break;
                    }
                }
            }
            if unclosed {
                // Never silently: the lines taken into it are named.
                return Some(Err(self.row_error(
                    "",
                    format!(
                        "a quoted value opened on this row is never closed; the {} rows after it were read into it",
                        self.continued
                    ),
                )));
            }
            if self.bytes > self.limits.max_bytes {
                self.done = true;
                return Some(Err(self.row_error(
                    "",
                    format!(
                        "the cohort is over its limit of {} bytes; the rest is not read",
                        self.limits.max_bytes
                    ),
                )));
            }
            if line.too_long {
                return Some(Err(self.row_error(
                    "",
                    format!("the row is longer than {MAX_LINE_BYTES} bytes"),
                )));
            }
            if line.bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok(line.bytes));
        }
    }

    fn csv_row(&self, index: &[Option<&'static str>], bytes: &[u8]) -> Result<Patient, RowError> {
        let fields =
            csv_fields(bytes).map_err(|e| self.row_error("", format!("not readable CSV: {e}")))?;
        if fields.len() > index.len() {
            return Err(self.row_error(
                "",
                format!(
                    "{} values but the header names {} columns",
                    fields.len(),
                    index.len()
                ),
            ));
        }
        let mut values = HashMap::new();
        for (col, value) in index.iter().zip(fields) {
            if let Some(col) = col {
                values.insert(*col, value);
            }
        }
        validate(self.row, &values, |c| c.to_string())
    }

    fn ndjson_row(&self, bytes: &[u8]) -> Result<Patient, RowError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| self.row_error("", format!("not JSON: {e}")))?;
        if value.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(self.row_error("resourceType", "each line must be a FHIR Patient resource"));
        }
        validate(self.row, &patient_values(&value), |c| {
            fhir_path(c).to_string()
        })
    }
}

impl Iterator for Cohort {
    type Item = Result<Patient, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let record = self.next_record()?;
        if self.rows_read >= self.limits.max_rows {
            self.done = true;
            return Some(Err(self.row_error(
                "",
                format!(
                    "the cohort is over its limit of {} patients; the rest is not read",
                    self.limits.max_rows
                ),
            )));
        }
        self.rows_read += 1;
        Some(record.and_then(|bytes| match &self.format {
            Format::Csv(index) => self.csv_row(index, &bytes),
            Format::Ndjson => self.ndjson_row(&bytes),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Result<Patient, RowError>>, CohortError> {
        let reader = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        Ok(Cohort::from_reader(reader, "t.csv")?.collect())
    }

    /// A lone quote inside an unquoted value is a character: no row after
    /// it is lost. A quoted value never closed is reported, naming its row.
    #[test]
    fn a_lone_quote_loses_no_row() {
        let rows = read(
            "family,given,birth_date,member_id,sex\n\
             O\"Brien,Pat,2001-01-01,1,F\n\
             Doe,Jane,2001-01-02,2,F\n\
             \"Multi\nLine\",Ann,2001-01-03,3,F\n\
             Roe,Rick,2001-01-04,4,M\n",
        )
        .unwrap();
        let seen: Vec<(u64, String)> = rows
            .iter()
            .map(|r| match r {
                Ok(p) => (p.row, p.family.clone()),
                Err(e) => (e.row, format!("error: {}", e.reason)),
            })
            .collect();
        assert_eq!(
            seen,
            [
                (2, "O\"Brien".to_string()),
                (3, "Doe".to_string()),
                // A line break inside a quoted name: read as one value, and
                // refused for it.
                (4, "error: holds a control character".to_string()),
                (6, "Roe".to_string())
            ]
        );
        let rows = read(
            "family,given,birth_date,member_id,sex\n\
             \"Open,Pat,2001-01-01,1,F\n\
             Doe,Jane,2001-01-02,2,F\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!(e.row, 2);
        assert!(
            e.reason.contains("never closed; the 1 rows after it"),
            "{e:?}"
        );
    }

    #[test]
    fn csv_columns_in_any_order_with_aliases() {
        let rows = read(
            "\u{feff}Last Name,first_name,DOB,Gender,MRN,mrn_authority,zip,phone,state\r\n\
             Doe,Jane,2001-02-03,female,123,CLINIC,12345-6789,(555) 555-1212,wa\r\n\
             \r\n\
             \"Smith, Jr\",John,20100101,M,9,,,,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        let jane = rows[0].as_ref().unwrap();
        assert_eq!(jane.row, 2);
        assert_eq!(
            (
                jane.family.as_str(),
                jane.birth_date.as_str(),
                jane.sex.as_str()
            ),
            ("Doe", "20010203", "F")
        );
        assert_eq!(
            (jane.zip.as_str(), jane.phone.as_str(), jane.state.as_str()),
            ("123456789", "5555551212", "WA")
        );
        let john = rows[1].as_ref().unwrap();
        assert_eq!((john.row, john.family.as_str()), (4, "Smith, Jr"));
    }

    #[test]
    fn bad_rows_name_row_column_and_reason_and_reading_goes_on() {
        let rows = read(
            "family,given,birth_date,member_id,sex,zip,state,phone\n\
             Doe,Jane,2001-02-30,1,F,,,\n\
             Doe,Jane,2999-01-01,1,F,,,\n\
             ,Jane,2001-01-01,1,F,,,\n\
             Doe,Jane,2001-01-01,,F,,,\n\
             Doe,Jane,2001-01-01,1,Q,,,\n\
             Doe,Jane,2001-01-01,1,F,1234,,\n\
             Doe,Jane,2001-01-01,1,F,,Wash,\n\
             Doe,Jane,2001-01-01,1,F,,,call me\n\
             Doe,Jane,2001-01-01,1,F,,,,extra\n\
             Doe,Jane,2001-01-01,1,F,,,\n",
        )
        .unwrap();
        let errors: Vec<(u64, String)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| (e.row, e.column.clone())))
            .collect();
        let cols = [
            "birth_date",
            "birth_date",
            "family",
            "member_id",
            "sex",
            "zip",
            "state",
            "phone",
            "",
        ];
        let expected: Vec<(u64, String)> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 2, c.to_string()))
            .collect();
        assert_eq!(errors, expected);
        assert!(rows[9].is_ok());
        let e = rows[1].as_ref().unwrap_err();
        assert!(e.reason.contains("future"), "{e:?}");
        let oo = rows[0].as_ref().unwrap_err().operation_outcome();
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["expression"][0], "birth_date");
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .starts_with("row 2, column birth_date:")
        );
    }

    #[test]
    fn header_errors_stop_the_file() {
        let err = read("family,given,birth_date,mrn,shoe_size,hat\n").unwrap_err();
        assert!(
            matches!(&err, CohortError::UnknownColumns { columns, .. } if columns == &["shoe_size", "hat"]),
            "{err}"
        );
        assert!(err.to_string().contains("t.csv: row 1"));
        assert!(matches!(
            read("family,given,dob\n"),
            Err(CohortError::MissingColumns { .. })
        ));
        assert!(matches!(
            read("family,surname,given,dob,mrn\n"),
            Err(CohortError::DuplicateColumn { .. })
        ));
        assert!(matches!(read("  \n "), Err(CohortError::Empty { .. })));
    }

    #[test]
    fn long_rows_and_limits_are_errors_not_panics() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!(
            "family,given,birth_date,mrn\nDoe,{long},2001-01-01,1\nDoe,Jo,2001-01-01,2\n\"open,Jo,2001-01-01,3\n"
        );
        let rows = read(&text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap_err().row, 2);
        assert_eq!(rows[1].as_ref().unwrap().mrn, "2");
        assert!(rows[2].is_err());
        let reader = Box::new(std::io::Cursor::new(
            b"family,given,birth_date,mrn\nA,B,2001-01-01,1\nA,B,2001-01-01,2\n".to_vec(),
        ));
        let capped: Vec<_> = Cohort::from_reader(reader, "t")
            .unwrap()
            .with_limits(Limits {
                max_rows: 1,
                max_bytes: 1 << 20,
            })
            .collect();
        assert_eq!(capped.len(), 2);
        assert!(
            capped[1]
                .as_ref()
                .unwrap_err()
                .reason
                .contains("limit of 1 patients")
        );
    }

    #[test]
    fn ndjson_patients() {
        let line = r#"{"resourceType":"Patient","identifier":[{"type":{"coding":[{"code":"MR"}]},"system":"urn:oid:1.2.3","value":"A1"},{"type":{"coding":[{"code":"MB"}]},"value":"M9"}],"name":[{"family":"Doe","given":["Jane","Q"]}],"birthDate":"2001-02-03","gender":"female","address":[{"line":["1 Main St"],"city":"Olympia","state":"WA","postalCode":"98501"}],"telecom":[{"system":"phone","value":"360-555-1212"}],"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName","valueString":"Roe"}]}"#;
        let rows = read(&format!("\n{line}\n{{\"resourceType\":\"Group\"}}\n{{\"resourceType\":\"Patient\",\"name\":[{{\"family\":\"X\",\"given\":[\"Y\"]}}],\"birthDate\":\"2001-13-01\",\"identifier\":[{{\"value\":\"1\"}}]}}\nnot json\n")).unwrap();
        let p = rows[0].as_ref().unwrap();
        assert_eq!(p.row, 2);
        assert_eq!(
            (
                p.mrn.as_str(),
                p.mrn_authority.as_str(),
                p.member_id.as_str()
            ),
            ("A1", "urn:oid:1.2.3", "M9")
        );
        assert_eq!(
            (
                p.given.as_str(),
                p.middle.as_str(),
                p.sex.as_str(),
                p.mother_maiden.as_str()
            ),
            ("Jane", "Q", "F", "Roe")
        );
        assert_eq!(
            (p.city.as_str(), p.zip.as_str(), p.phone.as_str()),
            ("Olympia", "98501", "3605551212")
        );
        assert_eq!(rows[1].as_ref().unwrap_err().column, "resourceType");
        assert_eq!(rows[2].as_ref().unwrap_err().column, "birthDate");
        assert_eq!(rows[3].as_ref().unwrap_err().row, 5);
    }
}
