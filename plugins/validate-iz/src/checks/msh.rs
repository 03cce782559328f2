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
    if c.get("MSH-3").is_empty() {
        c.flag("message-sending-application-missing", "MSH-3");
    }
    if c.get("MSH-4").is_empty() {
        c.flag("message-sending-facility-missing", "MSH-4");
    }
    if c.get("MSH-6").is_empty() {
        c.flag("message-receiving-facility-missing", "MSH-6");
    }
    message_date(c);
    if c.get("MSH-10").is_empty() {
        c.flag("message-control-id-missing", "MSH-10");
    }
    for (n, id) in [
        (15, "message-accept-ack-type-invalid"),
        (16, "message-app-ack-type-invalid"),
    ] {
        let path = format!("MSH-{n}");
        let v = c.get(&path);
        if !v.is_empty() && !ACK_TYPES.contains(&v) {
            c.flag_code(id, path, v);
        }
    }
    if kind == Kind::Vxu && c.get("MSH-22").is_empty() {
        c.flag("message-responsible-org-missing", "MSH-22");
    }
    kind
}

fn message_type(c: &mut Checker) -> Kind {
    if c.get("MSH-9").is_empty() {
        c.flag("message-type-missing", "MSH-9");
        return Kind::Other;
    }
    let (ty, trigger, structure) = (c.get("MSH-9.1"), c.get("MSH-9.2"), c.get("MSH-9.3"));
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
    let processing = c.get("MSH-11.1");
    if processing.is_empty() {
        c.flag("message-processing-id-missing", "MSH-11");
    } else if !["P", "T", "D"].contains(&processing) {
        c.flag_code("message-processing-id-invalid", "MSH-11", processing);
    }
    let version = c.get("MSH-12.1");
    if version.is_empty() {
        c.flag("message-version-missing", "MSH-12");
    } else if version != "2.5.1" {
        c.flag_code("message-version-unsupported", "MSH-12", version);
    }
}

fn profile(c: &mut Checker, kind: Kind) {
    let profiles: Vec<&str> = c
        .reps("MSH-21")
        .into_iter()
        .map(|r| r.split('^').next().unwrap_or("").trim())
        .filter(|p| !p.is_empty())
        .collect();
    if profiles.is_empty() {
        c.flag("message-profile-missing", "MSH-21");
        return;
    }
    let allowed: &[&str] = match kind {
        Kind::Vxu => &["Z22"],
        Kind::Qbp => &["Z34", "Z44"],
        Kind::Other => return,
    };
    if !profiles.iter().any(|p| allowed.contains(p)) {
        let first = profiles.first().copied().unwrap_or("");
        c.flag_code("message-profile-invalid", "MSH-21", first);
    }
}

fn message_date(c: &mut Checker) {
    let raw = c.get("MSH-7");
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
