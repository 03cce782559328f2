//! `validate-iz`: checks VXU^V04 messages against the CDC HL7 2.5.1
//! Immunization Implementation Guide, Release 1.5, and against the rules
//! immunization information systems (IIS) commonly reject messages for.
//!
//! Every problem is a named *detection* (see [`detections::DETECTIONS`]): an
//! id such as `patient-birth-date-missing`, the field it concerns, a default
//! severity, the HL7 0357 code (ERR-3), the CDC 0533 code (ERR-5) and a
//! sentence clinic staff can act on (ERR-8, ending with the detection id in
//! brackets). It covers the message header (type, version, processing ID,
//! profile, dates), the patient (identifiers, name, birth date, sex, race,
//! ethnicity, address, death and multiple-birth fields), next of kin, the
//! order, each vaccination (dates, CVX/NDC/MVX codes and their status,
//! amount, administered versus historical requirements, lot and expiry,
//! refusal, completion and action codes, route and site) and its
//! observations (VFC eligibility, funding source, VIS pairs, value types).
//!
//! When any detection fires at error level the message is rejected with all
//! issues (errors and warnings); otherwise warnings are reported and the
//! message goes on.
//!
//! # Configuration
//!
//! - `profile` = `cdc` (default) or `cvrs`: `cvrs` switches on the checks of
//!   the CDC COVID-19 Vaccination Reporting Specification (extract type in
//!   MSH-8, redacted names and addresses, county codes, required COVID
//!   observations, no product data on refusals) and relaxes IG checks that
//!   CVRS extracts do not follow.
//! - `severity.<detection-id>` = `error` | `warning` | `ignore` overrides one
//!   detection's level, e.g. `severity.message-profile-missing = "error"`.
//!
//! # Lookups
//!
//! The route should grant `lookup:cvx`, `lookup:mvx`, `lookup:ndc`,
//! `lookup:hl7-0001`, `lookup:cdcrec-race`, `lookup:cdcrec-ethnicity`,
//! `lookup:hl7-0063`, `lookup:hl7-0064`, `lookup:hl7-0162`, `lookup:hl7-0163`,
//! `lookup:hl7-0322`, `lookup:hl7-0323`, `lookup:nip001`, `lookup:nip002`,
//! `lookup:funding-source`, `lookup:obx-loinc`, `lookup:hl7-0203`,
//! `lookup:hl7-0200`, `lookup:hl7-0103`, `lookup:hl7-0190`, `lookup:hl7-0215`,
//! `lookup:hl7-0441` and `lookup:vis-doc`, plus `config`. A table that is not
//! granted or not loaded only switches off the code checks that need it.
//!
//! "Today", for future-date checks, is the date of `received_at`; when it is
//! missing or unreadable those checks are skipped.

#![warn(missing_docs)]

pub mod checks;
pub mod dates;
pub mod detections;
mod geo;

use detections::Level;
use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};

/// The plugin.
pub struct ValidateIz;

/// Which set of default severities applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// CDC IG R1.5 (the default).
    Cdc,
    /// CDC COVID-19 Vaccination Reporting Specification.
    Cvrs,
}

impl Profile {
    /// Reads the `profile` config value; anything but `cvrs` means `cdc`.
    pub fn from_config(value: Option<&str>) -> Profile {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "cvrs" => Profile::Cvrs,
            _ => Profile::Cdc,
        }
    }
}

/// The level a detection has under a profile and the configuration.
pub fn level_of(id: &str, profile: Profile, ctx: &Context) -> Level {
    level_of_detection(id, detections::find(id), profile, ctx)
}

/// [`level_of`] with the detection already looked up.
fn level_of_detection(
    id: &str,
    det: Option<&detections::Detection>,
    profile: Profile,
    ctx: &Context,
) -> Level {
    if let Some(level) = ctx
        .config(&format!("severity.{id}"))
        .and_then(|v| Level::parse(&v))
    {
        return level;
    }
    match (det, profile) {
        (Some(d), Profile::Cdc) => d.cdc,
        (Some(d), Profile::Cvrs) => d.cvrs,
        (None, _) => Level::Ignore,
    }
}

/// Turns a finding into the issue sent back, or `None` when it is ignored.
fn issue_for(finding: checks::Finding, det: &detections::Detection, level: Level) -> Option<Issue> {
    let issue = match level {
        Level::Error => Issue::error(det.hl7_code),
        Level::Warning => Issue::warning(det.hl7_code),
        Level::Ignore => return None,
    };
    let text = match finding.detail {
        Some(value) => format!("{} Value sent: '{value}'. [{}]", det.text, det.id),
        None => format!("{} [{}]", det.text, det.id),
    };
    Some(issue.at(finding.location).app_code(det.app_code).text(text))
}

impl Plugin for ValidateIz {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        let profile = Profile::from_config(ctx.config("profile").as_deref());
        let today = dates::rfc3339_date(&ctx.received_at);
        let findings = {
            let host: &Context = ctx;
            let lookup = |table: &str, key: &str| host.lookup(table, key);
            checks::run(msg, &lookup, today)
        };
        let mut issues = Vec::new();
        for f in findings {
            let det = detections::find(f.id);
            let level = level_of_detection(f.id, det, profile, ctx);
            if let Some(issue) = det.and_then(|det| issue_for(f, det, level)) {
                issues.push(issue);
            }
        }
        if issues
            .iter()
            .any(|i| i.severity == izhub_plugin::Severity::Error)
        {
            return Ok(Verdict::Reject(issues));
        }
        for issue in issues {
            ctx.report(issue);
        }
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(ValidateIz);
