//! `route-by-jurisdiction`: sends each message to the IIS of the patient's
//! state. The state comes from the patient address (PID-11.4 on a VXU, QPD-8.4
//! on a QBP^Q11); the plugin's config maps states to destinations:
//!
//! ```toml
//! [routes.plugins.config.states]
//! WA = "wa-iis"
//! OR = "or-iis"
//! ```
//!
//! A `default` key routes patients from other states; without it they are rejected.

use izhub_plugin as hl7;

/// Generated bindings for the `izhub:plugin` world.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });
}

use bindings::izhub::plugin::host;
use bindings::izhub::plugin::types::{Issue, Severity, Verdict};

/// Where a message should go.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// To this destination, for this state.
    Route { destination: String, state: String },
    /// No state in the address.
    NoState { location: String },
    /// A state with no IIS configured.
    UnknownState { state: String, location: String },
}

/// Decides the destination; `table` maps a state (upper case) to a destination.
pub fn decide(text: &str, table: impl Fn(&str) -> Option<String>) -> Result<Decision, String> {
    let msg = hl7::parse(text)?;
    let (seg, field) = if hl7::value(&msg, "MSH", 1, 9, 1) == "QBP" {
        ("QPD", 8)
    } else {
        ("PID", 11)
    };
    let location = format!("{seg}-{field}.4");
    let state = hl7::repetitions(&msg, seg, 1, field)
        .into_iter()
        .map(|address| {
            address
                .split('^')
                .nth(3)
                .unwrap_or("")
                .trim()
                .to_ascii_uppercase()
        })
        .find(|s| !s.is_empty());
    let Some(state) = state else {
        return Ok(Decision::NoState { location });
    };
    match table(&state).or_else(|| table("default")) {
        Some(destination) => Ok(Decision::Route { destination, state }),
        None => Ok(Decision::UnknownState { state, location }),
    }
}

fn issue(code: &str, location: String, text: String) -> Issue {
    Issue {
        severity: Severity::Error,
        code: code.into(),
        app_code: "5".into(),
        location,
        text,
    }
}

struct Plugin;

impl bindings::Guest for Plugin {
    fn process(msg: bindings::Envelope) -> Result<bindings::Outcome, String> {
        let decision = decide(&msg.hl7, |state| {
            if state == "default" {
                host::config("default")
            } else {
                host::config(&format!("states.{state}"))
            }
        })?;
        let (verdict, attributes) = match decision {
            Decision::Route { destination, state } => (
                Verdict::RouteTo(vec![destination]),
                vec![("jurisdiction".to_string(), state)],
            ),
            Decision::NoState { location } => (
                Verdict::Reject(vec![issue(
                    "101",
                    location.clone(),
                    format!(
                        "The patient's address has no state ({location}), so the receiving IIS cannot be chosen."
                    ),
                )]),
                Vec::new(),
            ),
            Decision::UnknownState { state, location } => (
                Verdict::Reject(vec![issue(
                    "103",
                    location,
                    format!(
                        "No immunization registry is configured for the patient's state '{state}'."
                    ),
                )]),
                Vec::new(),
            ),
        };
        Ok(bindings::Outcome {
            verdict,
            issues: Vec::new(),
            attributes,
        })
    }
}

bindings::export!(Plugin with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    fn table(state: &str) -> Option<String> {
        match state {
            "WA" => Some("wa-iis".into()),
            "OR" => Some("or-iis".into()),
            _ => None,
        }
    }

    #[test]
    fn routes_vxu_by_pid11_state() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J||2020|F|||~1 Main^^Salem^or^97301\r";
        assert_eq!(
            decide(vxu, table).unwrap(),
            Decision::Route {
                destination: "or-iis".into(),
                state: "OR".into()
            }
        );
    }

    #[test]
    fn routes_qbp_by_qpd8_state() {
        let qbp = "MSH|^~\\&|A|B|C|D|2024||QBP^Q11^QBP_Q11|1|P|2.5.1\rQPD|Z34^Request Immunization History^CDCPHINVS|q1|1^^^X^MR|DOE^J||2020|F|1 Main^^Olympia^WA^98501\r";
        assert_eq!(
            decide(qbp, table).unwrap(),
            Decision::Route {
                destination: "wa-iis".into(),
                state: "WA".into()
            }
        );
    }

    #[test]
    fn unknown_and_missing_states() {
        let tx = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1||DOE^J||2020|F|||1 Main^^Austin^TX\r";
        assert_eq!(
            decide(tx, table).unwrap(),
            Decision::UnknownState {
                state: "TX".into(),
                location: "PID-11.4".into()
            }
        );
        let none = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1||DOE^J||2020|F\r";
        assert_eq!(
            decide(none, table).unwrap(),
            Decision::NoState {
                location: "PID-11.4".into()
            }
        );
        let with_default = |s: &str| {
            if s == "default" {
                Some("central".to_string())
            } else {
                table(s)
            }
        };
        assert_eq!(
            decide(tx, with_default).unwrap(),
            Decision::Route {
                destination: "central".into(),
                state: "TX".into()
            }
        );
    }
}
