//! The checks, grouped by segment. Each check records [`Finding`]s by
//! detection id; the plugin turns them into issues by profile and config.

mod cvrs;
mod msh;
mod obx;
mod pid;
mod rxa;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use izhub_plugin::{LookupError, Message, Path, SegmentName};

use crate::dates::{self, Date, DateValue};

/// One detection that fired, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detection id.
    pub id: &'static str,
    /// Where: `PID-7`, `RXA[2]-5`, `OBX[3]-5`.
    pub location: String,
    /// The offending code, when showing it helps (never names or dates).
    pub detail: Option<String>,
}

/// A lookup function: table, key → value (or why there is none).
pub type Lookup<'a> = dyn Fn(&str, &str) -> Result<Option<String>, LookupError> + 'a;

/// What a code lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// The table is not available: skip the check.
    NoTable,
    /// The table has no such code.
    Unknown,
    /// The code's value as the table holds it: `|`-separated fields
    /// (`STATUS|label|…`), read with [`Code::status`] and [`Code::field`].
    /// Shared, since a code looked up once is asked for again.
    Known(Rc<str>),
}

impl Code {
    /// The first value field (the status), or "" when not known.
    pub fn status(&self) -> &str {
        self.field(0)
    }
    /// Value field `i` (0-based), or "".
    pub fn field(&self, i: usize) -> &str {
        match self {
            Code::Known(v) => v.split('|').nth(i).unwrap_or(""),
            _ => "",
        }
    }
}

/// One vaccination group: an RXA with its ORC, RXR and OBX segments.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Occurrence of the RXA (1-based).
    pub rxa: usize,
    /// Occurrence of the ORC just before it, if any.
    pub orc: Option<usize>,
    /// Occurrences of the RXR segments after it.
    pub rxr: Vec<usize>,
    /// Occurrences of the OBX segments after it.
    pub obx: Vec<usize>,
}

/// A code looked up for a message: table, key and what was found.
type LookedUp = (Box<str>, Box<str>, Code);

/// State shared by the checks of one message.
pub struct Checker<'a> {
    msg: &'a Message,
    lookup: &'a Lookup<'a>,
    /// Every code looked up so far for this message. Doses repeat their
    /// codes (the same CVX, the same observation LOINCs in every dose's
    /// OBX group), and each lookup is a call out of the sandbox.
    looked_up: RefCell<Vec<LookedUp>>,
    /// Today's date, when the engine gave one.
    pub today: Option<Date>,
    /// What fired so far.
    pub findings: Vec<Finding>,
}

impl<'a> Checker<'a> {
    /// A checker for one message.
    pub fn new(msg: &'a Message, lookup: &'a Lookup<'a>, today: Option<Date>) -> Checker<'a> {
        Checker {
            msg,
            lookup,
            looked_up: RefCell::new(Vec::new()),
            today,
            findings: Vec::new(),
        }
    }

    /// The raw value at a path ("" when absent), trimmed.
    pub fn get(&self, path: &str) -> &'a str {
        self.msg.get(path).trim()
    }

    /// The raw value at a path ("" when absent), trimmed; nothing is parsed
    /// or allocated.
    pub fn value(&self, path: &Path) -> &'a str {
        self.msg.get_path(path).trim()
    }

    /// The trimmed value of `segment[occurrence]-field[repetition].component.subcomponent`
    /// ("" when absent), where a component or subcomponent of 0 means the
    /// whole. Locations are numbered from 1, as in a path.
    pub fn value_at(
        &self,
        segment: &str,
        occurrence: usize,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
    ) -> &'a str {
        match SegmentName::new(segment) {
            Some(name) => self.value(
                &Path::new(name, occurrence, field)
                    .rep(repetition)
                    .comp(component)
                    .sub(subcomponent),
            ),
            None => "",
        }
    }

    /// The trimmed value of component `component` (0: all of it) of the
    /// first repetition of `segment[occurrence]-field`; `at("RXA", 2, 5, 1)`
    /// reads what `get("RXA[2]-5.1")` does.
    pub fn at(&self, segment: &str, occurrence: usize, field: usize, component: usize) -> &'a str {
        self.value_at(segment, occurrence, field, 1, component, 0)
    }

    /// Every repetition of a field.
    pub fn reps(&self, path: &str) -> Vec<&'a str> {
        self.msg.repetitions(path)
    }

    /// The repetitions of `segment[occurrence]-field`, as [`Checker::reps`]
    /// gives them (none when the field is empty).
    pub fn reps_of(
        &self,
        segment: &str,
        occurrence: usize,
        field: usize,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        let msg: &'a Message = self.msg;
        let raw = SegmentName::new(segment)
            .and_then(|name| msg.segment(name, occurrence))
            .map_or("", |s| s.field(field));
        raw.split(msg.delimiters().repetition)
            .filter(move |_| !raw.is_empty())
    }

    /// How many repetitions `segment[occurrence]-field` has (0 when empty).
    pub fn rep_count(&self, segment: &str, occurrence: usize, field: usize) -> usize {
        self.reps_of(segment, occurrence, field).count()
    }

    /// How many segments have this name.
    pub fn count(&self, name: &str) -> usize {
        self.msg.count(name)
    }

    /// Records a detection.
    pub fn flag(&mut self, id: &'static str, location: impl Into<String>) {
        self.findings.push(Finding {
            id,
            location: location.into(),
            detail: None,
        });
    }

    /// Records a detection, showing the offending code.
    pub fn flag_code(&mut self, id: &'static str, location: impl Into<String>, code: &str) {
        let shown: String = code.chars().take(40).collect();
        self.findings.push(Finding {
            id,
            location: location.into(),
            detail: Some(shown),
        });
    }

    /// Looks a code up.
    pub fn code(&self, table: &str, key: &str) -> Code {
        if let Some((_, _, code)) = self
            .looked_up
            .borrow()
            .iter()
            .find(|(t, k, _)| **k == *key && **t == *table)
        {
            return code.clone();
        }
        let code = match (self.lookup)(table, key) {
            Err(_) => Code::NoTable,
            Ok(None) => Code::Unknown,
            Ok(Some(v)) => Code::Known(v.into()),
        };
        self.looked_up
            .borrow_mut()
            .push((table.into(), key.into(), code.clone()));
        code
    }

    /// Checks a coded value against a `STATUS|label` table: unknown codes
    /// fire `unrecognized`, codes marked Deprecated fire `deprecated` (or
    /// `unrecognized` when none is given), codes marked Invalid fire
    /// `unrecognized`. Empty values and missing tables are skipped.
    ///
    /// The location is written out only when a detection fires.
    pub fn table_value(
        &mut self,
        table: &str,
        value: &str,
        location: impl fmt::Display,
        unrecognized: &'static str,
        deprecated: Option<&'static str>,
    ) {
        if value.is_empty() {
            return;
        }
        let code = self.code(table, value);
        let id = match code {
            Code::NoTable => return,
            Code::Unknown => unrecognized,
            Code::Known(_) => match code.status() {
                "Deprecated" => deprecated.unwrap_or(unrecognized),
                "Invalid" | "Unrecognized" => unrecognized,
                _ => return,
            },
        };
        self.flag_code(id, location.to_string(), value);
    }

    /// Checks a field that must hold a full date. Returns the date when valid.
    pub fn date_field(
        &mut self,
        path: &str,
        missing: Option<&'static str>,
        invalid: &'static str,
    ) -> Option<Date> {
        self.date(self.get(path), path, missing, invalid)
    }

    /// Checks a value read from `location` that must hold a full date.
    /// Returns the date when valid; the location is written out only when
    /// a detection fires.
    pub fn date(
        &mut self,
        value: &str,
        location: impl fmt::Display,
        missing: Option<&'static str>,
        invalid: &'static str,
    ) -> Option<Date> {
        match dates::full_date(value) {
            DateValue::Empty => {
                if let Some(id) = missing {
                    self.flag(id, location.to_string());
                }
                None
            }
            DateValue::Invalid => {
                self.flag(invalid, location.to_string());
                None
            }
            DateValue::Valid(d) => Some(d),
        }
    }

    /// True when `date` is after today (no clock: never).
    pub fn in_future(&self, date: Date) -> bool {
        self.today.is_some_and(|t| date > t)
    }

    /// The vaccination groups, in order, and the OBX occurrences that come
    /// before the first RXA (patient-level observations).
    pub fn groups(&self) -> (Vec<Group>, Vec<usize>) {
        let mut groups: Vec<Group> = Vec::new();
        let mut patient_obx = Vec::new();
        let (mut orc, mut rxa, mut rxr, mut obx) = (0, 0, 0, 0);
        let mut pending_orc = None;
        for seg in self.msg.segments() {
            match seg.name() {
                "ORC" => {
                    orc += 1;
                    pending_orc = Some(orc);
                }
                "RXA" => {
                    rxa += 1;
                    groups.push(Group {
                        rxa,
                        orc: pending_orc.take(),
                        ..Group::default()
                    });
                }
                "RXR" => {
                    rxr += 1;
                    if let Some(g) = groups.last_mut() {
                        g.rxr.push(rxr);
                    }
                }
                "OBX" => {
                    obx += 1;
                    match groups.last_mut() {
                        Some(g) => g.obx.push(obx),
                        None => patient_obx.push(obx),
                    }
                }
                _ => {}
            }
        }
        (groups, patient_obx)
    }
}

/// Runs every check on a message.
pub fn run(msg: &Message, lookup: &Lookup, today: Option<Date>) -> Vec<Finding> {
    let mut c = Checker::new(msg, lookup, today);
    let kind = msh::check(&mut c);
    if kind == msh::Kind::Vxu {
        pid::check(&mut c);
        let (groups, patient_obx) = c.groups();
        obx::check_patient_level(&mut c, &patient_obx);
        if groups.is_empty() {
            c.flag("vaccination-missing", "RXA");
        }
        for g in &groups {
            rxa::check(&mut c, g);
            obx::check(&mut c, g);
        }
        cvrs::check(&mut c, &groups);
    }
    c.findings
}
