//! Message header (MSH) checks.

use super::Checker;
use crate::dates;

/// What kind of message this is, as far as the checks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A vaccination update: every check applies.
    Vxu,
    /// A history query: header checks only.
    Qbp,
    /// Anything else: header checks only.
    Other,
}

const ACK_TYPES: [&str; 4] = ["AL", "ER", "NE", "SU"];

/// Checks MSH and says what kind of message it is.
pub fn check(c: &mut Checker) -> Kind {
    let kind = message_type(c);
    processing_and_version(c);
    profile(c, kind);
    if c.at("MSH", 1, 3, 0).is_empty() {
        c.flag("message-sending-application-missing", "MSH-3");
    }
    if c.at("MSH", 1, 4, 0).is_empty() {
        c.flag("message-sending-facility-missing", "MSH-4");
    }
    if c.at("MSH", 1, 6, 0).is_empty() {
        c.flag("message-receiving-facility-missing", "MSH-6");
    }
    message_date(c);
    if c.at("MSH", 1, 10, 0).is_empty() {
        c.flag("message-control-id-missing", "MSH-10");
    }
    for (n, id) in [
        (15, "message-accept-ack-type-invalid"),
        (16, "message-app-ack-type-invalid"),
    ] {
        let v = c.at("MSH", 1, n, 0);
        if !v.is_empty() && !ACK_TYPES.contains(&v) {
            c.flag_code(id, format!("MSH-{n}"), v);
        }
    }
    if kind == Kind::Vxu && c.at("MSH", 1, 22, 0).is_empty() {
        c.flag("message-responsible-org-missing", "MSH-22");
    }
    kind
}

fn message_type(c: &mut Checker) -> Kind {
    if c.at("MSH", 1, 9, 0).is_empty() {
        c.flag("message-type-missing", "MSH-9");
        return Kind::Other;
    }
    let (ty, trigger, structure) = (
        c.at("MSH", 1, 9, 1),
        c.at("MSH", 1, 9, 2),
        c.at("MSH", 1, 9, 3),
    );
    let (kind, want_trigger, want_structure) = match ty {
        "VXU" => (Kind::Vxu, "V04", "VXU_V04"),
        "QBP" => (Kind::Qbp, "Q11", "QBP_Q11"),
        _ => {
            c.flag_code("message-type-unsupported", "MSH-9.1", ty);
            return Kind::Other;
        }
    };
    if trigger != want_trigger {
        c.flag_code("message-trigger-unsupported", "MSH-9.2", trigger);
    }
    if structure.is_empty() {
        c.flag("message-structure-missing", "MSH-9.3");
    } else if structure != want_structure {
        c.flag_code("message-structure-invalid", "MSH-9.3", structure);
    }
    kind
}

fn processing_and_version(c: &mut Checker) {
    let processing = c.at("MSH", 1, 11, 1);
    if processing.is_empty() {
        c.flag("message-processing-id-missing", "MSH-11");
    } else if !["P", "T", "D"].contains(&processing) {
        c.flag_code("message-processing-id-invalid", "MSH-11", processing);
    }
    let version = c.at("MSH", 1, 12, 1);
    if version.is_empty() {
        c.flag("message-version-missing", "MSH-12");
    } else if version != "2.5.1" {
        c.flag_code("message-version-unsupported", "MSH-12", version);
    }
}

fn profile(c: &mut Checker, kind: Kind) {
    let mut profiles = c
        .reps_of("MSH", 1, 21)
        .map(|r| r.split('^').next().unwrap_or("").trim())
        .filter(|p| !p.is_empty())
        .peekable();
    let Some(&first) = profiles.peek() else {
        c.flag("message-profile-missing", "MSH-21");
        return;
    };
    let allowed: &[&str] = match kind {
        Kind::Vxu => &["Z22"],
        Kind::Qbp => &["Z34", "Z44"],
        Kind::Other => return,
    };
    if !profiles.any(|p| allowed.contains(&p)) {
        c.flag_code("message-profile-invalid", "MSH-21", first);
    }
}

fn message_date(c: &mut Checker) {
    let raw = c.at("MSH", 1, 7, 0);
    if raw.is_empty() {
        c.flag("message-date-missing", "MSH-7");
        return;
    }
    let Some(dtm) = dates::parse_dtm(raw) else {
        c.flag("message-date-invalid", "MSH-7");
        return;
    };
    let Some(date) = dtm.date else {
        c.flag("message-date-invalid", "MSH-7");
        return;
    };
    // One day of slack: the sender's local date may be ahead of UTC.
    if c.today.is_some_and(|t| date > t.next_day()) {
        c.flag("message-date-in-future", "MSH-7");
    }
    if dtm.digits < 14 || !dtm.has_zone {
        c.flag("message-date-imprecise", "MSH-7");
    }
}
