//! `require-core-fields`: rejects a VXU that lacks what no IIS can do
//! without: patient identifier (PID-3), name (PID-5), birth date (PID-7),
//! and for each vaccination its date (RXA-3) and vaccine code (RXA-5).
//! Other message types pass through.

use izhub_plugin as hl7;

/// Generated bindings for the `izhub:plugin` world.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });
}

use bindings::izhub::plugin::types::{Issue, Severity, Verdict};

/// One missing field: (location, what it is).
pub type Missing = (String, &'static str);

/// Lists the missing core fields of a VXU (empty for other message types).
pub fn missing_fields(text: &str) -> Result<Vec<Missing>, String> {
    let msg = hl7::parse(text)?;
    if hl7::value(&msg, "MSH", 1, 9, 1) != "VXU" {
        return Ok(Vec::new());
    }
    let mut missing = Vec::new();
    if hl7::count(&msg, "PID") == 0 {
        missing.push(("PID".to_string(), "the patient (PID segment)"));
    } else {
        for (field, what) in [
            (3, "the patient identifier"),
            (5, "the patient's name"),
            (7, "the patient's birth date"),
        ] {
            if hl7::value(&msg, "PID", 1, field, 0).is_empty() {
                missing.push((hl7::location("PID", 1, field), what));
            }
        }
    }
    let rxas = hl7::count(&msg, "RXA");
    if rxas == 0 {
        missing.push(("RXA".to_string(), "the vaccination (RXA segment)"));
    }
    for n in 1..=rxas {
        for (field, what) in [
            (3, "the date the vaccine was given"),
            (5, "the vaccine code"),
        ] {
            if hl7::value(&msg, "RXA", n, field, 0).is_empty() {
                missing.push((hl7::location("RXA", n, field), what));
            }
        }
    }
    Ok(missing)
}

struct Plugin;

impl bindings::Guest for Plugin {
    fn process(msg: bindings::Envelope) -> Result<bindings::Outcome, String> {
        let missing = missing_fields(&msg.hl7)?;
        let verdict = if missing.is_empty() {
            Verdict::Continue(None)
        } else {
            Verdict::Reject(
                missing
                    .into_iter()
                    .map(|(location, what)| Issue {
                        severity: Severity::Error,
                        code: if location.contains('-') {
                            "101".into()
                        } else {
                            "100".into()
                        },
                        app_code: "7".into(),
                        text: format!("{location} is required: the message does not give {what}."),
                        location,
                    })
                    .collect(),
            )
        };
        Ok(bindings::Outcome {
            verdict,
            issues: Vec::new(),
            attributes: Vec::new(),
        })
    }
}

bindings::export!(Plugin with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_vxu_passes() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J||20200101\rRXA|0|1|20240101||08^HepB^CVX\r";
        assert!(missing_fields(vxu).unwrap().is_empty());
    }

    #[test]
    fn lists_each_missing_field() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J\rRXA|0|1|20240101||08\rRXA|0|1|||\r";
        let got: Vec<String> = missing_fields(vxu)
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(got, vec!["PID-7", "RXA[2]-3", "RXA[2]-5"]);
    }

    #[test]
    fn other_types_pass() {
        let qbp = "MSH|^~\\&|A|B|C|D|2024||QBP^Q11^QBP_Q11|1|P|2.5.1\rQPD|Z34\r";
        assert!(missing_fields(qbp).unwrap().is_empty());
    }
}
