//! `require-core-fields`: rejects a VXU that lacks what no IIS can do
//! without: patient identifier (PID-3), name (PID-5), birth date (PID-7),
//! and for each vaccination its date (RXA-3) and vaccine code (RXA-5).
//! Other message types pass through.

use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};

/// The plugin.
pub struct RequireCoreFields;

fn missing(location: String, what: &str) -> Issue {
    let code = if location.contains('-') { "101" } else { "100" };
    Issue::error(code).at(&location).app_code("7").text(format!(
        "{location} is required: the message does not give {what}."
    ))
}

impl Plugin for RequireCoreFields {
    fn process(msg: &mut Message, _ctx: &mut Context) -> Result<Verdict, String> {
        if msg.get("MSH-9.1") != "VXU" {
            return Ok(Verdict::Continue);
        }
        let mut issues = Vec::new();
        if msg.count("PID") == 0 {
            issues.push(missing("PID".into(), "the patient (PID segment)"));
        } else {
            for (field, what) in [
                (3, "the patient identifier"),
                (5, "the patient's name"),
                (7, "the patient's birth date"),
            ] {
                if msg.get(&format!("PID-{field}")).is_empty() {
                    issues.push(missing(format!("PID-{field}"), what));
                }
            }
        }
        let rxas = msg.count("RXA");
        if rxas == 0 {
            issues.push(missing("RXA".into(), "the vaccination (RXA segment)"));
        }
        for n in 1..=rxas {
            for (field, what) in [
                (3, "the date the vaccine was given"),
                (5, "the vaccine code"),
            ] {
                let path = if n == 1 {
                    format!("RXA-{field}")
                } else {
                    format!("RXA[{n}]-{field}")
                };
                if msg.get(&path).is_empty() {
                    issues.push(missing(path, what));
                }
            }
        }
        Ok(if issues.is_empty() {
            Verdict::Continue
        } else {
            Verdict::Reject(issues)
        })
    }
}

izhub_plugin::plugin!(RequireCoreFields);

#[cfg(test)]
mod tests {
    use super::*;
    use izhub_plugin::testing::TestHost;

    fn locations(hl7: &str) -> Vec<String> {
        match TestHost::new()
            .run::<RequireCoreFields>(hl7)
            .unwrap()
            .verdict
        {
            Verdict::Reject(issues) => issues.into_iter().map(|i| i.location).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn complete_vxu_passes() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J||20200101\rRXA|0|1|20240101||08^HepB^CVX\r";
        assert!(locations(vxu).is_empty());
    }

    #[test]
    fn lists_each_missing_field() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J\rRXA|0|1|20240101||08\rRXA|0|1|||\r";
        assert_eq!(locations(vxu), vec!["PID-7", "RXA[2]-3", "RXA[2]-5"]);
    }

    #[test]
    fn other_types_pass() {
        let qbp = "MSH|^~\\&|A|B|C|D|2024||QBP^Q11^QBP_Q11|1|P|2.5.1\rQPD|Z34\r";
        assert!(locations(qbp).is_empty());
    }
}
