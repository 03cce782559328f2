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
//! - `profile` chooses the default levels (see `docs/detections.md`):
//!   - `iis-practice` (the default) blocks only where registries block: AIRA
//!     MQE's active Error detections and what makes a message unprocessable
//!     (no MSH-9, MSH-10 or MSH-12, no PID, no RXA). An error about one dose
//!     (RXA-n, such as a dose dated before birth) is a warning: registries
//!     reject that dose and keep the rest, so the message is delivered and
//!     the IIS answers for the dose. Everything else warns and the message
//!     is delivered.
//!   - `strict-ig` (also `cdc`) blocks on every SHALL of the CDC IG.
//!   - `cvrs` switches on the checks of the CDC COVID-19 Vaccination
//!     Reporting Specification (extract type in MSH-8, redacted names and
//!     addresses, county codes, required COVID observations, no product data
//!     on refusals) and relaxes IG checks that CVRS extracts do not follow.
//! - `destination_profiles.<destination>` = a profile for messages routed
//!   to that destination, since state registries differ. It applies when an
//!   earlier plugin set the `destination` attribute, as
//!   `route-by-jurisdiction` does: put this plugin after it.
//! - `severity.<detection-id>` = `error` | `warning` | `ignore` overrides one
//!   detection's level under every profile, e.g.
//!   `severity.message-profile-missing = "error"`.
//! - `mode = "report-only"` delivers every message and reports every finding
//!   as a warning, those that would block saying so: for onboarding a clinic.
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
pub use detections::Profile;
use izhub_plugin::{Context, Issue, LogLevel, Message, Plugin, Verdict};

/// The plugin.
pub struct ValidateIz;

/// What the configuration asks for, read once per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The profile in force for this message.
    pub profile: Profile,
    /// Deliver everything and report every finding.
    pub report_only: bool,
}

impl Settings {
    /// Reads `profile`, `destination_profiles.<destination>` (for the
    /// `destination` attribute an earlier plugin set) and `mode`. An unknown
    /// profile name is logged and the default used: a typo in the
    /// configuration must not block every message.
    pub fn read(ctx: &Context) -> Settings {
        let named = |key: &str| {
            let value = ctx.config(key)?;
            let profile = Profile::parse(&value);
            if profile.is_none() {
                ctx.log(
                    LogLevel::Warn,
                    &format!(
                        "{key} = {value:?} is not a profile (iis-practice, strict-ig, cvrs); using {}",
                        Profile::IisPractice.name()
                    ),
                );
            }
            profile
        };
        let for_destination = ctx
            .attribute("destination")
            .filter(|d| !d.is_empty() && !d.contains(','))
            .and_then(|d| named(&format!("destination_profiles.{d}")));
        let profile = for_destination
            .or_else(|| named("profile"))
            .unwrap_or(Profile::IisPractice);
        let report_only = ctx
            .config("mode")
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("report-only"));
        Settings {
            profile,
            report_only,
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
    det.map_or(Level::Ignore, |d| d.level(profile))
}

/// Turns a finding into the issue sent back, or `None` when it is ignored.
/// In report-only mode an error is sent as a warning that says it would
/// block.
fn issue_for(
    finding: checks::Finding,
    det: &detections::Detection,
    level: Level,
    settings: Settings,
) -> Option<Issue> {
    let (issue, prefix) = match level {
        Level::Error if settings.report_only => {
            (Issue::warning(det.hl7_code), "Would be rejected: ")
        }
        Level::Error => (Issue::error(det.hl7_code), ""),
        Level::Warning if det.rejects_dose(settings.profile) => (
            Issue::warning(det.hl7_code),
            "The registry is expected to reject this dose: ",
        ),
        Level::Warning => (Issue::warning(det.hl7_code), ""),
        Level::Ignore => return None,
    };
    let text = match finding.detail {
        Some(value) => format!("{prefix}{} Value sent: '{value}'. [{}]", det.text, det.id),
        None => format!("{prefix}{} [{}]", det.text, det.id),
    };
    Some(issue.at(finding.location).app_code(det.app_code).text(text))
}

impl Plugin for ValidateIz {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        let settings = Settings::read(ctx);
        let today = dates::rfc3339_date(&ctx.received_at);
        let findings = {
            let host: &Context = ctx;
            let lookup = |table: &str, key: &str| host.lookup(table, key);
            checks::run(msg, &lookup, today)
        };
        let mut issues = Vec::new();
        // Doses repeat their findings: each detection is looked up, and its
        // override asked of the host, once per message. Findings of one
        // check share the id's text, so the pointer usually decides.
        let mut levels: Vec<(&'static str, Option<&detections::Detection>, Level)> = Vec::new();
        for f in findings {
            let known = levels
                .iter()
                .find(|(id, _, _)| std::ptr::eq(*id, f.id) || *id == f.id);
            let (det, level) = match known {
                Some(&(_, det, level)) => (det, level),
                None => {
                    let det = detections::find(f.id);
                    let level = level_of_detection(f.id, det, settings.profile, ctx);
                    levels.push((f.id, det, level));
                    (det, level)
                }
            };
            if let Some(issue) = det.and_then(|det| issue_for(f, det, level, settings)) {
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
