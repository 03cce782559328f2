//! The detection table: one row per named problem, with its default severity
//! under the `strict-ig` and `cvrs` profiles, its HL7 0357 and CDC 0533
//! codes, and the sentence the sender's staff read. The checks in
//! [`crate::checks`] refer to rows by id.
//!
//! The default profile, `iis-practice`, blocks only where registries block:
//! the detections in [`IIS_PRACTICE_ERRORS`], each with its reason. Every
//! other detection that `strict-ig` would block is a warning there, and the
//! message is delivered. `docs/detections.md` is generated from this file
//! ([`markdown`]) and a test keeps the two the same.

/// What a detection does to a message when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Rejects the message.
    Error,
    /// Lets the message go on and tells the sender.
    Warning,
    /// Not reported.
    Ignore,
}

impl Level {
    /// Reads `error`, `warning` or `ignore` (any case).
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" | "e" => Some(Level::Error),
            "warning" | "warn" | "w" => Some(Level::Warning),
            "ignore" | "off" | "none" | "accept" => Some(Level::Ignore),
            _ => None,
        }
    }
}

/// One named detection.
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    /// Kebab-case id, used in `severity.<id>` config keys.
    pub id: &'static str,
    /// The field it is about (`PID-7`, `RXA-5`, `OBX-5`).
    pub field: &'static str,
    /// Default level under the `strict-ig` profile: every SHALL of the
    /// CDC IG blocks.
    pub strict: Level,
    /// Default level under the `cvrs` profile.
    pub cvrs: Level,
    /// HL7 table 0357 code (ERR-3).
    pub hl7_code: &'static str,
    /// CDC table 0533 code (ERR-5).
    pub app_code: &'static str,
    /// What the sender should fix.
    pub text: &'static str,
}

use Level::{Error as E, Ignore as I, Warning as W};

const fn d(
    id: &'static str,
    field: &'static str,
    strict: Level,
    cvrs: Level,
    hl7_code: &'static str,
    app_code: &'static str,
    text: &'static str,
) -> Detection {
    Detection {
        id,
        field,
        strict,
        cvrs,
        hl7_code,
        app_code,
        text,
    }
}

/// Which set of default levels applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The default: block only where immunization registries block (AIRA
    /// MQE's active Error detections, and what makes a message
    /// unprocessable); everything else is a warning and the message goes on.
    IisPractice,
    /// Every SHALL of the CDC IG Release 1.5 blocks.
    StrictIg,
    /// CDC COVID-19 Vaccination Reporting Specification.
    Cvrs,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: [Profile; 3] = [Profile::IisPractice, Profile::StrictIg, Profile::Cvrs];

    /// Reads a profile name: `iis-practice` (or `default`), `strict-ig` (or
    /// `cdc`, the name it had before there was a choice), `cvrs`.
    pub fn parse(text: &str) -> Option<Profile> {
        match text.trim().to_ascii_lowercase().as_str() {
            "iis-practice" | "default" | "iis" => Some(Profile::IisPractice),
            "strict-ig" | "strict" | "cdc" => Some(Profile::StrictIg),
            "cvrs" => Some(Profile::Cvrs),
            _ => None,
        }
    }

    /// The name config files use.
    pub fn name(self) -> &'static str {
        match self {
            Profile::IisPractice => "iis-practice",
            Profile::StrictIg => "strict-ig",
            Profile::Cvrs => "cvrs",
        }
    }
}

impl Detection {
    /// A detection about one vaccination's own fields (RXA-n): a registry
    /// rejects that dose and keeps the patient and the other doses.
    pub fn dose_level(&self) -> bool {
        self.field.starts_with("RXA-")
    }

    /// Under `profile`, a registry is expected to reject the one dose this
    /// detection concerns: `iis-practice` then delivers the message with a
    /// warning, and the IIS answers for that dose.
    pub fn rejects_dose(&self, profile: Profile) -> bool {
        profile == Profile::IisPractice
            && self.dose_level()
            && iis_practice_reason(self.id).is_some()
    }

    /// This detection's default level under `profile`.
    pub fn level(&self, profile: Profile) -> Level {
        match profile {
            Profile::StrictIg => self.strict,
            Profile::Cvrs => self.cvrs,
            Profile::IisPractice if self.rejects_dose(profile) => Level::Warning,
            Profile::IisPractice if iis_practice_reason(self.id).is_some() => Level::Error,
            Profile::IisPractice => match self.strict {
                Level::Error => Level::Warning,
                other => other,
            },
        }
    }
}

/// Why the `iis-practice` profile blocks on a detection, or `None` when it
/// does not.
pub fn iis_practice_reason(id: &str) -> Option<&'static str> {
    IIS_PRACTICE_ERRORS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, why)| *why)
}

/// The detections registries reject for, with the reason: AIRA MQE's
/// active Error detections (MQE codes given), which registries run, and
/// what leaves a message impossible to process. The default `iis-practice`
/// profile blocks on each, except those about one dose (see
/// [`Detection::rejects_dose`]): the registry rejects that dose and keeps
/// the rest, so the message is delivered with a warning.
#[rustfmt::skip]
pub static IIS_PRACTICE_ERRORS: &[(&str, &str)] = &[
    ("message-type-missing", "Unprocessable: without MSH-9 nobody can tell what the message is."),
    ("message-type-unsupported", "Unprocessable: only a VXU records vaccinations and only a QBP asks for them."),
    ("message-control-id-missing", "Unprocessable: without MSH-10 the answer cannot be matched to the message."),
    ("message-version-missing", "Unprocessable: without MSH-12 the message cannot be read as any HL7 version."),
    ("message-date-missing", "IIS practice (MQE0017): a record needs the date it was sent."),
    ("message-date-invalid", "IIS practice (MQE0531): a message date that cannot be read."),
    ("message-date-in-future", "IIS practice (MQE0015): the sending clock is wrong, so every date in the message is suspect."),
    ("patient-segment-missing", "Unprocessable: a vaccination cannot be recorded without its patient."),
    ("patient-segment-repeated", "Unprocessable: the doses cannot be given to one patient."),
    ("patient-id-missing", "IIS practice (MQE0220): without the clinic's patient id later updates cannot find the patient."),
    ("patient-id-type-missing", "IIS practice (MQE0394): a patient id without its type cannot be matched."),
    ("patient-name-missing", "IIS practice (MQE0141, MQE0166): a patient cannot be matched without a name."),
    ("patient-name-family-missing", "IIS practice (MQE0166): a patient cannot be matched without a last name."),
    ("patient-name-given-missing", "IIS practice (MQE0141): a patient cannot be matched without a first name."),
    ("patient-birth-date-missing", "IIS practice (MQE0118): a patient cannot be matched or a schedule evaluated without a birth date."),
    ("patient-birth-date-invalid", "IIS practice (MQE0117): a birth date that cannot be read."),
    ("patient-birth-date-in-future", "IIS practice (MQE0115): a birth date after the message was sent."),
    ("patient-birth-date-after-message", "IIS practice (MQE0115): a birth date after the message was sent."),
    ("patient-birth-date-too-old", "IIS practice (MQE0120): a birth date very long ago is a data-entry error."),
    ("vaccination-missing", "Unprocessable: a vaccination update without a vaccination (RXA)."),
    ("vaccination-date-missing", "IIS practice (MQE0261): a dose without a date cannot be recorded or evaluated."),
    ("vaccination-date-invalid", "IIS practice (MQE0260): a dose date that cannot be read."),
    ("vaccination-date-in-future", "IIS practice (MQE0252): a dose dated after the message arrived has not been given."),
    ("vaccination-date-after-entry", "IIS practice (MQE0254): a dose recorded before it was given."),
    ("vaccination-date-before-birth", "IIS practice (MQE0255): a dose before birth belongs to another patient or date."),
    ("vaccination-date-after-death", "IIS practice (MQE0253): a dose after death belongs to another patient or date."),
    ("vaccination-code-missing", "IIS practice (MQE0244): a dose without a vaccine code cannot be recorded."),
    ("vaccination-cvx-invalid", "IIS practice (MQE0247): a vaccine code that is no CVX code."),
    ("vaccination-cvx-unrecognized", "IIS practice (MQE0247): a vaccine code the registry does not know."),
    ("vaccination-cvx-never-active", "IIS practice (MQE0561): a vaccine code that cannot be used for any dose."),
    ("vaccination-ndc-invalid", "IIS practice (MQE0559): an NDC in no FDA form, and no CVX code, leaves the vaccine unnamed."),
    ("vaccination-ndc-unrecognized", "IIS practice (MQE0559): an NDC the registry cannot map, and no CVX code, leaves the vaccine unnamed."),
    ("vaccination-action-code-unrecognized", "IIS practice (MQE0234): an action code that is not add, update or delete."),
];

/// Where the default profile departs from MQE's active Error set, and why:
/// each of these warns although MQE blocks on it by default.
#[rustfmt::skip]
pub static IIS_PRACTICE_DEPARTURES: &[(&str, &str)] = &[
    ("vaccination-action-code-missing", "MQE0235 blocks, but IG 1.4 made RXA-21 optional, registries read an empty action code as A (add), and NIST's 2012 certification messages (NIST-IZ-007 to -020) leave it empty."),
    ("patient-name-has-digits", "MQE0140/MQE0165 block names MQE finds invalid; a name with digits is more often a data-entry slip in an otherwise good record, so it warns."),
];

/// The detection table as Markdown: every detection with its level under
/// each profile and, for each the default profile blocks on, the reason.
/// `docs/detections.md` is this text.
pub fn markdown() -> String {
    let level = |l: Level| match l {
        Level::Error => "**Error**",
        Level::Warning => "Warning",
        Level::Ignore => "—",
    };
    let default_level = |d: &Detection| {
        if d.rejects_dose(Profile::IisPractice) {
            "Warning (dose rejected)"
        } else {
            level(d.level(Profile::IisPractice))
        }
    };
    let blocked = |p: Profile| {
        DETECTIONS
            .iter()
            .filter(|d| d.level(p) == Level::Error)
            .count()
    };
    let mut out = String::new();
    out.push_str("<!-- Generated from plugins/validate-iz/src/detections.rs; do not edit.\n");
    out.push_str(
        "     Regenerate: IZHUB_BLESS=1 cargo test -p validate-iz --test it profiles -->\n\n",
    );
    out.push_str("# validate-iz detections\n\n");
    out.push_str(&format!(
        "{} detections. A detection at **Error** blocks the message (AE, nothing delivered); \
         at Warning the message is delivered and the sender is told; — is not reported. \
         Set `profile` (or `destination_profiles.<destination>`) to choose the levels and \
         `severity.<id>` to change one; `mode = \"report-only\"` delivers everything and reports every finding.\n\n",
        DETECTIONS.len()
    ));
    out.push_str("| profile | blocks on |\n|---|---|\n");
    for p in Profile::ALL {
        out.push_str(&format!("| `{}` | {} detections |\n", p.name(), blocked(p)));
    }
    out.push_str("\nWhere `iis-practice` departs from MQE's active Error set:\n\n");
    for (id, why) in IIS_PRACTICE_DEPARTURES {
        out.push_str(&format!("- `{id}` warns: {why}\n"));
    }
    out.push_str(&format!(
        "\nDose-level detections concern one vaccination's own fields (RXA-n). A registry rejects \
         that dose and keeps the patient and the other doses, answering AE for its RXA. Under \
         `iis-practice` the {} dose-level detections registries reject for are therefore warnings \
         (\"Warning (dose rejected)\" below): the message is delivered, the sender reads that the \
         registry is expected to reject the dose, and the IIS's answer names it. `strict-ig` and \
         `cvrs` block on them.\n",
        DETECTIONS
            .iter()
            .filter(|d| d.rejects_dose(Profile::IisPractice))
            .count()
    ));
    out.push_str("\nMQE0257 and MQE0259 (a dose outside the vaccine's licensed dates or the patient's valid ages) have no detection here: the code sets izhub ships carry no licensed age or date ranges.\n");
    out.push_str("\n| detection | field | iis-practice (default) | strict-ig | cvrs | ERR-3 / ERR-5 | why registries reject it | what the sender reads |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for d in DETECTIONS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            d.id,
            d.field,
            default_level(d),
            level(d.strict),
            level(d.cvrs),
            d.hl7_code,
            d.app_code,
            iis_practice_reason(d.id).unwrap_or(""),
            d.text.replace('|', "\\|"),
        ));
    }
    out
}

/// Looks a detection up by id.
pub fn find(id: &str) -> Option<&'static Detection> {
    DETECTIONS.iter().find(|d| d.id == id)
}

/// Every detection this plugin knows.
#[rustfmt::skip]
pub static DETECTIONS: &[Detection] = &[
    // ---- Message header (MSH) ----
    d("message-type-missing", "MSH-9", E, E, "101", "7", "The message type (MSH-9) is empty; send VXU^V04^VXU_V04."),
    d("message-type-unsupported", "MSH-9", E, E, "200", "4", "This interface accepts only VXU (vaccination update) and QBP (history query) messages in MSH-9."),
    d("message-trigger-unsupported", "MSH-9", E, E, "201", "4", "The trigger event in MSH-9.2 must be V04 for a VXU or Q11 for a QBP."),
    d("message-structure-missing", "MSH-9", W, W, "101", "7", "The message structure (MSH-9.3) is empty; it should be VXU_V04."),
    d("message-structure-invalid", "MSH-9", E, E, "102", "4", "The message structure in MSH-9.3 does not match the message type; it should be VXU_V04 (or QBP_Q11 for a query)."),
    d("message-processing-id-missing", "MSH-11", E, E, "101", "7", "The processing ID (MSH-11) is empty; send P for production, T for training or D for debugging."),
    d("message-processing-id-invalid", "MSH-11", E, E, "202", "5", "The processing ID (MSH-11) must be P, T or D."),
    d("message-version-missing", "MSH-12", E, E, "101", "7", "The HL7 version (MSH-12) is empty; it must be 2.5.1."),
    d("message-version-unsupported", "MSH-12", E, E, "203", "4", "Only HL7 version 2.5.1 is accepted (MSH-12); ask your EHR vendor to send 2.5.1 messages."),
    d("message-profile-missing", "MSH-21", W, W, "101", "7", "The message profile (MSH-21) is empty; a vaccination update should carry Z22^CDCPHINVS."),
    d("message-profile-invalid", "MSH-21", E, E, "102", "4", "The message profile in MSH-21 does not match the message: use Z22 for VXU, Z34 or Z44 for QBP."),
    d("message-sending-facility-missing", "MSH-4", E, W, "101", "7", "The sending facility (MSH-4) is empty; the registry needs it to know which clinic sent the record."),
    d("message-sending-application-missing", "MSH-3", W, I, "101", "7", "The sending application (MSH-3) is empty."),
    d("message-receiving-facility-missing", "MSH-6", W, I, "101", "7", "The receiving facility (MSH-6) is empty."),
    d("message-date-missing", "MSH-7", E, E, "101", "7", "The message date/time (MSH-7) is empty."),
    d("message-date-invalid", "MSH-7", E, E, "102", "2", "The message date/time (MSH-7) is not a valid date; use YYYYMMDDHHMMSS+ZZZZ."),
    d("message-date-in-future", "MSH-7", E, E, "102", "1", "The message date/time (MSH-7) is in the future; check the sending computer's clock."),
    d("message-date-imprecise", "MSH-7", W, I, "102", "2", "The message date/time (MSH-7) should give seconds and a time zone (YYYYMMDDHHMMSS+ZZZZ)."),
    d("message-control-id-missing", "MSH-10", E, E, "101", "7", "The message control ID (MSH-10) is empty; every message needs its own ID."),
    d("message-accept-ack-type-invalid", "MSH-15", W, W, "103", "5", "The accept acknowledgment type (MSH-15) must be AL, ER, NE or SU."),
    d("message-app-ack-type-invalid", "MSH-16", W, W, "103", "5", "The application acknowledgment type (MSH-16) must be AL, ER, NE or SU."),
    d("message-responsible-org-missing", "MSH-22", W, E, "101", "7", "The responsible sending organization (MSH-22) is empty."),
    // ---- Patient (PID, PD1) ----
    d("patient-segment-missing", "PID", E, E, "100", "7", "The message has no patient (PID) segment; a vaccination cannot be recorded without the patient."),
    d("patient-segment-repeated", "PID", E, E, "100", "3", "The message has more than one patient (PID) segment; send one patient per message."),
    d("patient-set-id-invalid", "PID-1", W, I, "102", "4", "PID-1 (set ID) should be 1."),
    d("patient-id-missing", "PID-3", E, E, "101", "7", "No patient identifier (PID-3) was sent; send the patient's medical record number."),
    d("patient-id-type-missing", "PID-3", E, W, "101", "7", "A patient identifier (PID-3) has no identifier type (PID-3.5), such as MR for medical record number."),
    d("patient-id-type-unrecognized", "PID-3", W, W, "103", "5", "A patient identifier type (PID-3.5) is not a known HL7 identifier type."),
    d("patient-id-authority-missing", "PID-3", W, I, "101", "7", "A patient identifier (PID-3) has no assigning authority (PID-3.4) naming who issued it."),
    d("patient-id-medical-record-missing", "PID-3", W, I, "101", "7", "None of the patient identifiers (PID-3) is a medical record number (type MR)."),
    d("patient-name-missing", "PID-5", E, E, "101", "7", "The patient's name (PID-5) is empty."),
    d("patient-name-family-missing", "PID-5", E, E, "101", "7", "The patient's last name (PID-5.1) is empty."),
    d("patient-name-given-missing", "PID-5", E, E, "101", "7", "The patient's first name (PID-5.2) is empty."),
    d("patient-name-type-missing", "PID-5", W, I, "101", "7", "The patient's name has no name type (PID-5.7); send L for the legal name."),
    d("patient-name-type-unrecognized", "PID-5", W, W, "103", "5", "The patient's name type (PID-5.7) is not a known HL7 name type."),
    d("patient-name-legal-missing", "PID-5", W, I, "101", "7", "None of the patient's names (PID-5) is marked as the legal name (type L)."),
    d("patient-name-has-digits", "PID-5", W, W, "102", "4", "The patient's name (PID-5) contains digits; check the name as registered."),
    d("patient-name-placeholder", "PID-5", W, I, "102", "3", "The patient's first name looks like a placeholder (such as BABY or BOY); send the real name when it is known."),
    d("patient-birth-date-missing", "PID-7", E, E, "101", "7", "The patient's date of birth (PID-7) is empty."),
    d("patient-birth-date-invalid", "PID-7", E, E, "102", "2", "The patient's date of birth (PID-7) is not a valid date; use YYYYMMDD."),
    d("patient-birth-date-in-future", "PID-7", E, E, "102", "1", "The patient's date of birth (PID-7) is in the future."),
    d("patient-birth-date-too-old", "PID-7", W, W, "102", "1", "The patient's date of birth (PID-7) is more than 120 years ago; check the year."),
    d("patient-birth-date-after-message", "PID-7", W, W, "102", "1", "The patient's date of birth (PID-7) is after the message date (MSH-7)."),
    d("patient-sex-missing", "PID-8", W, E, "101", "7", "The patient's sex (PID-8) is empty; send F, M, O or U."),
    d("patient-sex-unrecognized", "PID-8", E, E, "103", "5", "The patient's sex (PID-8) must be F, M, O or U."),
    d("patient-race-missing", "PID-10", W, E, "101", "7", "The patient's race (PID-10) is empty."),
    d("patient-race-unrecognized", "PID-10", W, W, "103", "5", "The patient's race (PID-10) is not a CDC race code (CDCREC)."),
    d("patient-race-deprecated", "PID-10", W, W, "103", "5", "The patient's race (PID-10) uses an old code; send the CDC race code (CDCREC), such as 2106-3 for White."),
    d("patient-ethnicity-missing", "PID-22", W, E, "101", "7", "The patient's ethnicity (PID-22) is empty."),
    d("patient-ethnicity-unrecognized", "PID-22", W, W, "103", "5", "The patient's ethnicity (PID-22) is not a CDC ethnicity code (CDCREC)."),
    d("patient-ethnicity-deprecated", "PID-22", W, W, "103", "5", "The patient's ethnicity (PID-22) uses an old code; send 2135-2 (Hispanic or Latino) or 2186-5 (not Hispanic or Latino)."),
    d("patient-address-missing", "PID-11", W, W, "101", "7", "The patient's address (PID-11) is empty."),
    d("patient-address-street-missing", "PID-11", W, I, "101", "7", "The patient's street address (PID-11.1) is empty."),
    d("patient-address-city-missing", "PID-11", W, I, "101", "7", "The patient's city (PID-11.3) is empty."),
    d("patient-address-state-missing", "PID-11", W, E, "101", "7", "The patient's state (PID-11.4) is empty."),
    d("patient-address-state-invalid", "PID-11", W, E, "103", "5", "The patient's state (PID-11.4) is not a two-letter US postal code."),
    d("patient-address-zip-missing", "PID-11", W, I, "101", "7", "The patient's ZIP code (PID-11.5) is empty."),
    d("patient-address-zip-invalid", "PID-11", W, E, "102", "4", "The patient's ZIP code (PID-11.5) must be 5 digits or ZIP+4 (12345-6789)."),
    d("patient-address-type-unrecognized", "PID-11", W, W, "103", "5", "The patient's address type (PID-11.7) is not a known HL7 address type."),
    d("patient-address-county-invalid", "PID-11", W, E, "102", "4", "The patient's county (PID-11.9) must be a 5-digit FIPS county code."),
    d("patient-address-county-state-mismatch", "PID-11", W, E, "102", "3", "The patient's county code (PID-11.9) is not a county of the state in PID-11.4."),
    d("patient-address-county-missing", "PID-11", I, E, "101", "7", "The patient's county (PID-11.9) is empty although a ZIP code is given."),
    d("patient-multiple-birth-indicator-invalid", "PID-24", W, W, "103", "5", "The multiple birth indicator (PID-24) must be Y or N."),
    d("patient-birth-order-invalid", "PID-25", W, W, "102", "4", "The birth order (PID-25) must be a number such as 1 or 2."),
    d("patient-birth-order-without-multiple-birth", "PID-25", W, W, "102", "3", "A birth order (PID-25) was sent but the multiple birth indicator (PID-24) is not Y."),
    d("patient-birth-order-missing", "PID-25", W, W, "101", "7", "The patient is marked as a multiple birth (PID-24 = Y) but no birth order (PID-25) was sent."),
    d("patient-death-indicator-invalid", "PID-30", W, W, "103", "5", "The death indicator (PID-30) must be Y or N."),
    d("patient-death-date-invalid", "PID-29", E, E, "102", "2", "The patient's date of death (PID-29) is not a valid date."),
    d("patient-death-date-without-indicator", "PID-29", W, W, "102", "3", "A date of death (PID-29) was sent but the death indicator (PID-30) is not Y."),
    d("patient-death-indicator-without-date", "PID-30", W, W, "101", "7", "The patient is marked as deceased (PID-30 = Y) but no date of death (PID-29) was sent."),
    d("patient-death-date-before-birth", "PID-29", E, E, "102", "1", "The patient's date of death (PID-29) is before the date of birth."),
    d("patient-death-date-in-future", "PID-29", E, E, "102", "1", "The patient's date of death (PID-29) is in the future."),
    d("patient-publicity-code-unrecognized", "PD1-11", W, W, "103", "5", "The reminder/recall code (PD1-11) is not a known HL7 publicity code."),
    d("patient-protection-indicator-invalid", "PD1-12", W, W, "103", "5", "The protection indicator (PD1-12) must be Y or N."),
    d("patient-registry-status-unrecognized", "PD1-16", W, W, "103", "5", "The registry status (PD1-16) is not a known status code."),
    // ---- Next of kin (NK1) ----
    d("next-of-kin-relationship-missing", "NK1-3", E, E, "101", "7", "A responsible person (NK1) was sent without a relationship (NK1-3), such as MTH for mother."),
    d("next-of-kin-relationship-unrecognized", "NK1-3", W, W, "103", "5", "The responsible person's relationship (NK1-3) is not a known HL7 relationship code."),
    d("next-of-kin-relationship-self", "NK1-3", W, W, "102", "3", "The responsible person (NK1-3) is marked as the patient (SEL); send the parent or guardian instead."),
    d("next-of-kin-name-missing", "NK1-2", W, W, "101", "7", "The responsible person's last name (NK1-2.1) is empty."),
    // ---- Order (ORC) ----
    d("order-segment-missing", "ORC", E, E, "100", "7", "A vaccination (RXA) was sent without an order (ORC) segment before it."),
    d("order-filler-number-missing", "ORC-3", E, E, "101", "7", "The vaccination has no unique ID (ORC-3, filler order number); the registry needs it to update or delete the record later."),
    d("order-control-invalid", "ORC-1", W, I, "103", "5", "The order control code (ORC-1) should be RE for a vaccination record."),
    // ---- Vaccination (RXA, RXR) ----
    d("vaccination-missing", "RXA", W, W, "101", "7", "The message has no vaccination (RXA) segment; only patient data will be recorded."),
    d("vaccination-sub-id-invalid", "RXA-1", E, W, "102", "4", "RXA-1 (give sub-ID counter) must be 0."),
    d("vaccination-sub-id-counter-invalid", "RXA-2", E, W, "102", "4", "RXA-2 (administration sub-ID counter) must be 1."),
    d("vaccination-date-missing", "RXA-3", E, E, "101", "7", "The vaccination date (RXA-3) is empty."),
    d("vaccination-date-invalid", "RXA-3", E, E, "102", "2", "The vaccination date (RXA-3) is not a valid date; use YYYYMMDD."),
    d("vaccination-date-in-future", "RXA-3", E, E, "102", "1", "The vaccination date (RXA-3) is in the future."),
    d("vaccination-date-before-birth", "RXA-3", E, E, "102", "1", "The vaccination date (RXA-3) is before the patient's date of birth (PID-7)."),
    d("vaccination-date-after-death", "RXA-3", E, E, "102", "1", "The vaccination date (RXA-3) is after the patient's date of death (PID-29)."),
    d("vaccination-date-after-message", "RXA-3", W, W, "102", "1", "The vaccination date (RXA-3) is after the date the message says it was created (MSH-7); check both dates."),
    d("vaccination-date-after-entry", "RXA-3", E, E, "102", "1", "The vaccination date (RXA-3) is after the date it was entered in your system (RXA-22)."),
    d("vaccination-end-date-mismatch", "RXA-4", W, W, "102", "3", "The vaccination end date (RXA-4) should be empty or the same as RXA-3."),
    d("vaccination-code-missing", "RXA-5", E, E, "101", "7", "The vaccine code (RXA-5) is empty; send the CVX code of the vaccine."),
    d("vaccination-code-system-missing", "RXA-5", W, W, "101", "7", "The vaccine code (RXA-5) does not say which code system it uses (RXA-5.3 should be CVX)."),
    d("vaccination-cvx-invalid", "RXA-5", E, E, "102", "4", "The vaccine code (RXA-5) is not a CVX code; CVX codes are 1 to 3 digits."),
    d("vaccination-cvx-unrecognized", "RXA-5", E, W, "103", "5", "The vaccine code (RXA-5) is not a known CVX code."),
    d("vaccination-cvx-inactive", "RXA-5", E, W, "102", "3", "The vaccine code (RXA-5) is inactive in the CDC CVX list and cannot be reported as given by your clinic; check the vaccine selected."),
    d("vaccination-cvx-inactive-historical", "RXA-5", W, W, "102", "3", "The vaccine code (RXA-5) of this historical dose is inactive in the CDC CVX list."),
    d("vaccination-cvx-never-active", "RXA-5", E, E, "103", "4", "The vaccine code (RXA-5) was never an active CVX code; choose the vaccine's current code."),
    d("vaccination-cvx-non-us", "RXA-5", E, W, "102", "3", "The vaccine code (RXA-5) is for a vaccine not licensed in the US; it can only be reported as a historical dose."),
    d("vaccination-cvx-unspecified", "RXA-5", W, W, "102", "3", "A dose given by your clinic is coded with an 'unspecified formulation' CVX (RXA-5); send the specific vaccine given."),
    d("vaccination-cvx-no-vaccine-not-na", "RXA-5", E, E, "102", "3", "CVX 998 (no vaccine administered) is only allowed when the completion status (RXA-20) is NA."),
    d("vaccination-ndc-invalid", "RXA-5", E, E, "102", "4", "The NDC in RXA-5 is not in any FDA form: 5-4-2, 4-4-2, 5-3-2 or 5-4-1 with hyphens (such as 49281-0425-50), or 11 digits."),
    d("vaccination-ndc-invalid-with-cvx", "RXA-5", E, E, "102", "4", "The NDC sent with the CVX code in RXA-5 is not in any FDA form (5-4-2, 4-4-2, 5-3-2 or 5-4-1 with hyphens, or 11 digits); the CVX code names the vaccine."),
    d("vaccination-ndc-unrecognized", "RXA-5", W, W, "103", "5", "The NDC in RXA-5 is not a known vaccine NDC, and no CVX code was sent with it."),
    d("vaccination-ndc-unrecognized-with-cvx", "RXA-5", W, W, "103", "5", "The NDC sent with the CVX code in RXA-5 is not a known vaccine NDC; the CVX code names the vaccine."),
    d("vaccination-ndc-cvx-mismatch", "RXA-5", W, W, "102", "3", "The NDC in RXA-5 is for a different vaccine than the CVX code sent."),
    d("vaccination-ndc-out-of-use", "RXA-5", W, W, "102", "1", "The NDC in RXA-5 was not in use on the vaccination date."),
    d("vaccination-amount-missing", "RXA-6", E, W, "101", "7", "The dose amount (RXA-6) is empty; send the amount given, or 999 when unknown or not given."),
    d("vaccination-amount-invalid", "RXA-6", E, W, "102", "4", "The dose amount (RXA-6) must be a number."),
    d("vaccination-amount-not-given", "RXA-6", W, W, "102", "3", "A dose given by your clinic has an amount (RXA-6) of 0 or 999; send the amount given."),
    d("vaccination-units-missing", "RXA-7", E, I, "101", "7", "The dose units (RXA-7) are empty; send mL^MilliLiter^UCUM."),
    d("vaccination-information-source-missing", "RXA-9", E, I, "101", "7", "RXA-9 does not say whether the dose was given by your clinic (00) or is a historical record (01)."),
    d("vaccination-information-source-unrecognized", "RXA-9", E, W, "103", "5", "The information source (RXA-9) must be 00 (new administration) or 01 to 08 (historical)."),
    d("vaccination-information-source-not-allowed", "RXA-9", W, W, "102", "3", "The information source (RXA-9) should be empty when the vaccine was not given (RXA-20 is RE or NA)."),
    d("vaccination-provider-missing", "RXA-10", W, I, "101", "7", "The administering provider (RXA-10) is empty for a dose given by your clinic."),
    d("vaccination-location-missing", "RXA-11", W, I, "101", "7", "The administered-at location (RXA-11.4) is empty for a dose given by your clinic."),
    d("vaccination-location-name-missing", "RXA-11", I, E, "101", "7", "The administering site name (RXA-11.4.1) is empty."),
    d("vaccination-location-type-missing", "RXA-11", I, E, "101", "7", "The administering site type (RXA-11.6) is empty."),
    d("vaccination-location-state-missing", "RXA-11", I, E, "101", "7", "The administering site's state (RXA-11.12) is empty although a ZIP code is given."),
    d("vaccination-location-state-invalid", "RXA-11", W, E, "103", "5", "The administering site's state (RXA-11.12) is not a two-letter US postal code."),
    d("vaccination-location-zip-invalid", "RXA-11", W, E, "102", "4", "The administering site's ZIP code (RXA-11.13) must be 5 digits or ZIP+4."),
    d("vaccination-location-county-missing", "RXA-11", I, E, "101", "7", "The administering site's county (RXA-11.16) is empty although a ZIP code is given."),
    d("vaccination-location-county-invalid", "RXA-11", W, E, "102", "4", "The administering site's county (RXA-11.16) must be a 5-digit FIPS county code."),
    d("vaccination-location-county-state-mismatch", "RXA-11", W, E, "102", "3", "The administering site's county (RXA-11.16) is not a county of its state (RXA-11.12)."),
    d("vaccination-lot-missing", "RXA-15", E, E, "101", "7", "The lot number (RXA-15) is empty for a dose given by your clinic; copy it from the vial."),
    d("vaccination-lot-invalid", "RXA-15", W, W, "102", "4", "The lot number (RXA-15) looks like a placeholder (such as N/A or UNK); send the lot printed on the vial."),
    d("vaccination-expiration-missing", "RXA-16", W, I, "101", "7", "The expiration date (RXA-16) of the lot is empty for a dose given by your clinic."),
    d("vaccination-expiration-invalid", "RXA-16", W, W, "102", "2", "The expiration date (RXA-16) is not a valid date; use YYYYMMDD."),
    d("vaccination-expired-when-given", "RXA-16", E, E, "102", "1", "The lot's expiration date (RXA-16) is before the vaccination date: an expired dose may need to be repeated; check both dates."),
    d("vaccination-expired-when-given-historical", "RXA-16", W, W, "102", "1", "The lot's expiration date (RXA-16) is before the date of this historical dose; check both dates as recorded."),
    d("vaccination-manufacturer-missing", "RXA-17", E, I, "101", "7", "The manufacturer (RXA-17) is empty for a dose given by your clinic; send its MVX code, such as PMC."),
    d("vaccination-mvx-invalid", "RXA-17", E, E, "102", "4", "The manufacturer code (RXA-17) is not an MVX code; MVX codes are 2 or 3 letters."),
    d("vaccination-mvx-unrecognized", "RXA-17", W, W, "103", "5", "The manufacturer code (RXA-17) is not a known MVX code."),
    d("vaccination-mvx-inactive", "RXA-17", W, W, "102", "3", "The manufacturer code (RXA-17) is inactive in the CDC MVX list."),
    d("vaccination-mvx-ndc-mismatch", "RXA-17", W, W, "102", "3", "The manufacturer (RXA-17) is not the maker of the product with the NDC sent in RXA-5."),
    d("vaccination-refusal-reason-without-refusal", "RXA-18", E, E, "102", "3", "A refusal reason (RXA-18) was sent, but the completion status (RXA-20) is not RE (refused)."),
    d("vaccination-refusal-reason-missing", "RXA-18", E, W, "101", "7", "The vaccine was refused (RXA-20 = RE) but no refusal reason (RXA-18) was sent."),
    d("vaccination-refusal-reason-unrecognized", "RXA-18", W, W, "103", "5", "The refusal reason (RXA-18) is not a known refusal reason code."),
    d("vaccination-completion-status-missing", "RXA-20", W, W, "101", "7", "The completion status (RXA-20) is empty; send CP, PA, RE or NA."),
    d("vaccination-completion-status-unrecognized", "RXA-20", E, E, "103", "5", "The completion status (RXA-20) must be CP, PA, RE or NA."),
    d("vaccination-action-code-missing", "RXA-21", W, I, "101", "7", "The action code (RXA-21) is empty; send A to add, U to update or D to delete."),
    d("vaccination-action-code-unrecognized", "RXA-21", E, E, "103", "5", "The action code (RXA-21) must be A, U or D."),
    d("vaccination-route-segment-missing", "RXR", W, I, "101", "7", "No route (RXR segment) was sent for a dose given by your clinic."),
    d("vaccination-route-repeated", "RXR", W, W, "100", "3", "More than one route (RXR) segment follows one vaccination; send one."),
    d("vaccination-route-missing", "RXR-1", E, W, "101", "7", "The route segment (RXR) has no route (RXR-1), such as C28161 for intramuscular."),
    d("vaccination-route-unrecognized", "RXR-1", W, W, "103", "5", "The route (RXR-1) is not a known route code."),
    d("vaccination-route-code-system-mismatch", "RXR-1", W, W, "102", "4", "The route (RXR-1) names the wrong code system: NCI codes (C28161) use NCIT, HL7 codes (IM) use HL70162."),
    d("vaccination-site-missing", "RXR-2", W, I, "101", "7", "The body site (RXR-2) is empty for a dose given by your clinic."),
    d("vaccination-site-unrecognized", "RXR-2", W, W, "103", "5", "The body site (RXR-2) is not a known HL7 site code."),
    // ---- Observations (OBX) ----
    d("observation-identifier-missing", "OBX-3", E, E, "101", "7", "An observation (OBX) has no observation identifier (OBX-3)."),
    d("observation-identifier-unrecognized", "OBX-3", W, I, "103", "5", "An observation identifier (OBX-3) is not one the registry uses; that observation will be ignored."),
    d("observation-value-missing", "OBX-5", E, E, "101", "7", "An observation (OBX) has no value (OBX-5)."),
    d("observation-value-type-missing", "OBX-2", E, E, "101", "7", "An observation (OBX) has no value type (OBX-2), such as CE or TS."),
    d("observation-value-type-unrecognized", "OBX-2", E, E, "103", "5", "The observation value type (OBX-2) is not a known HL7 data type."),
    d("observation-value-type-mismatch", "OBX-5", E, E, "102", "4", "The observation value (OBX-5) does not match its value type (OBX-2): dates for TS/DT, numbers for NM."),
    d("observation-value-type-wrong", "OBX-2", W, W, "102", "4", "The value type (OBX-2) is not the one this observation uses (CE for codes, TS or DT for dates)."),
    d("observation-result-status-missing", "OBX-11", W, I, "101", "7", "The observation result status (OBX-11) is empty; send F."),
    d("observation-sub-id-missing", "OBX-4", W, I, "101", "7", "The observation sub-ID (OBX-4) is empty; it groups related observations such as a VIS and its dates."),
    d("vfc-eligibility-missing", "OBX-5", W, I, "101", "6", "A dose given by your clinic has no VFC eligibility observation (OBX 64994-7)."),
    d("vfc-eligibility-unrecognized", "OBX-5", W, W, "103", "5", "The VFC eligibility code (OBX-5) is not a known eligibility code."),
    d("vfc-eligibility-invalid", "OBX-5", E, W, "102", "4", "The VFC eligibility code (OBX-5) is not valid for reporting; send V01 to V05 or a state code."),
    d("vfc-eligibility-deprecated", "OBX-5", W, W, "103", "4", "The VFC eligibility code (OBX-5) V06 or V08 is retired; choose a current eligibility code."),
    d("vfc-eligibility-on-historical", "OBX-5", W, W, "102", "8", "VFC eligibility was sent for a historical dose; it will be ignored."),
    d("vfc-observation-date-missing", "OBX-14", W, W, "101", "7", "The VFC eligibility observation has no date (OBX-14) saying when eligibility was checked."),
    d("vfc-observation-date-invalid", "OBX-14", E, E, "102", "2", "The observation date (OBX-14) is not a valid date."),
    d("vfc-observation-method-missing", "OBX-17", W, W, "101", "7", "The VFC eligibility observation has no method (OBX-17); send VXC40 (per immunization) or VXC41 (per visit)."),
    d("vfc-observation-method-invalid", "OBX-17", W, W, "103", "5", "The VFC eligibility method (OBX-17) must be VXC40 or VXC41."),
    d("funding-source-unrecognized", "OBX-5", W, W, "103", "5", "The vaccine funding source (OBX-5) is not a known funding code, such as VXC1 (federal) or PHC70 (private)."),
    d("vis-document-unrecognized", "OBX-5", W, W, "103", "5", "The VIS document (OBX-5) is not a known VIS barcode."),
    d("vis-vaccine-type-unrecognized", "OBX-5", W, W, "103", "5", "The VIS vaccine type (OBX-5) is not a known CVX code."),
    d("vis-presented-date-missing", "OBX-3", W, W, "101", "6", "A VIS was reported without the date it was given to the patient (OBX 29769-7 with the same OBX-4)."),
    d("vis-published-date-missing", "OBX-3", W, W, "101", "6", "A VIS vaccine type was reported without the VIS edition date (OBX 29768-9 with the same OBX-4)."),
    d("vis-date-unpaired", "OBX-3", W, W, "102", "3", "A VIS date was reported without the VIS it belongs to (OBX 69764-9 or 30956-7 with the same OBX-4)."),
    d("vis-presented-before-published", "OBX-5", W, W, "102", "1", "The VIS presentation date is before the VIS edition date."),
    d("vis-missing", "OBX", W, I, "101", "6", "A dose given by your clinic has no VIS (vaccine information statement) observation."),
    // ---- CDC COVID-19 Vaccination Reporting Specification (profile = cvrs) ----
    d("cvrs-extract-type-missing", "MSH-8", I, E, "101", "7", "The CVRS extract type (MSH-8) is empty; send I, D or P."),
    d("cvrs-extract-type-invalid", "MSH-8", I, E, "103", "5", "The CVRS extract type (MSH-8) must be I (identified), D (de-identified) or P (PPRL)."),
    d("cvrs-pprl-id-not-allowed", "PID-3", I, E, "102", "3", "A de-identified extract (MSH-8 = D) must not carry a PPRL identifier in PID-3."),
    d("cvrs-name-not-redacted", "PID-5", I, E, "102", "3", "In a redacted extract (MSH-8 = D or P) each part of the patient's name (PID-5) must be 'Redacted'."),
    d("cvrs-address-not-redacted", "PID-11", I, E, "102", "3", "In a redacted extract (MSH-8 = D or P) the patient's street and city (PID-11) must be 'Redacted'."),
    d("cvrs-dose-number-missing", "OBX-5", I, E, "101", "6", "The dose number in series (OBX 30973-2) is missing for this vaccination."),
    d("cvrs-series-status-missing", "OBX-5", I, E, "101", "6", "The series completion status (OBX 59783-1) is missing for this vaccination."),
    d("cvrs-risk-group-missing", "OBX-5", I, E, "101", "6", "The comorbidity / special risk group observation (OBX VXC8) is missing."),
    d("cvrs-serology-missing", "OBX-5", I, E, "101", "6", "The serological evidence of immunity observation (OBX 75505-8) is missing."),
    d("cvrs-date-precision", "PID-7", I, W, "102", "2", "CVRS dates should be sent as YYYYMMDD without a time."),
    d("refusal-with-ndc", "RXA-5", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but an NDC was sent in RXA-5; leave it empty."),
    d("refusal-with-manufacturer", "RXA-17", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a manufacturer (RXA-17) was sent; leave it empty."),
    d("refusal-with-lot-number", "RXA-15", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a lot number (RXA-15) was sent; leave it empty."),
    d("refusal-with-expiration-date", "RXA-16", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but an expiration date (RXA-16) was sent; leave it empty."),
    d("refusal-with-route", "RXR-1", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a route (RXR-1) was sent; leave it out."),
    d("refusal-with-site", "RXR-2", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a body site (RXR-2) was sent; leave it out."),
    d("refusal-with-dose-number", "OBX-5", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a dose number (OBX 30973-2) was sent; leave it out."),
    d("refusal-with-series-status", "OBX-5", W, E, "102", "8", "The vaccine was refused (RXA-20 = RE) but a series status (OBX 59783-1) was sent; leave it out."),
];
