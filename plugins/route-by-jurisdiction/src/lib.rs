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
//! When the address has no state, the sending facility decides: the lookup
//! table named by `facility_table` maps MSH-4.1 (then MSH-22.10 and MSH-22.1,
//! the responsible organization) to a state. A `default` key routes patients
//! from states with no IIS configured; without it they are rejected.
//!
//! It sets the attributes `jurisdiction` (the state) and `destination` for
//! the plugins after it, so that, for example, validate-iz can apply the
//! profile of that state's registry.

use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};

/// The plugin.
pub struct RouteByJurisdiction;

/// The patient's state from the address (PID-11.4, or QPD-8.4 on a query).
fn address_state(msg: &Message) -> (Option<String>, String) {
    let field = if msg.get("MSH-9.1") == "QBP" {
        "QPD-8"
    } else {
        "PID-11"
    };
    let repetitions = msg.repetitions(field).len();
    let state = (1..=repetitions)
        .map(|n| {
            msg.get(&format!("{field}[{n}].4"))
                .trim()
                .to_ascii_uppercase()
        })
        .find(|s| !s.is_empty());
    (state, format!("{field}.4"))
}

/// The state of the sending facility or responsible organization, from the
/// facility table.
fn facility_state(msg: &Message, ctx: &Context) -> Option<String> {
    let table = ctx.config("facility_table")?;
    ["MSH-4.1", "MSH-22.10", "MSH-22.1"]
        .iter()
        .map(|p| msg.get(p).trim())
        .filter(|k| !k.is_empty())
        .find_map(|key| ctx.lookup(&table, key).ok().flatten())
        .map(|s| s.trim().to_ascii_uppercase())
}

impl Plugin for RouteByJurisdiction {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        let (from_address, location) = address_state(msg);
        let Some(state) = from_address.or_else(|| facility_state(msg, ctx)) else {
            return Ok(Verdict::reject(Issue::error("101").at(&location).app_code("7").text(format!(
                "The patient's address has no state ({location}) and the sending facility is not known, so the receiving IIS cannot be chosen."
            ))));
        };
        match ctx
            .config(&format!("states.{state}"))
            .or_else(|| ctx.config("default"))
        {
            Some(destination) => {
                ctx.set_attribute("jurisdiction", state);
                // Later plugins may act per destination (validate-iz's
                // `destination_profiles`).
                ctx.set_attribute("destination", destination.as_str());
                Ok(Verdict::route_to(destination))
            }
            None => Ok(Verdict::reject(
                Issue::error("103").at(location).app_code("5").text(format!(
                    "No immunization registry is configured for the patient's state '{state}'."
                )),
            )),
        }
    }
}

izhub_plugin::plugin!(RouteByJurisdiction);

#[cfg(test)]
mod tests {
    use super::*;
    use izhub_plugin::testing::TestHost;

    fn host() -> TestHost {
        TestHost::new()
            .config("states.WA", "wa-iis")
            .config("states.OR", "or-iis")
    }

    #[test]
    fn routes_vxu_by_pid11_state() {
        let vxu = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J||2020|F|||~1 Main^^Salem^or^97301\r";
        let out = host().run::<RouteByJurisdiction>(vxu).unwrap();
        assert_eq!(out.verdict, Verdict::route_to("or-iis"));
        assert_eq!(
            out.attributes,
            vec![
                ("jurisdiction".to_string(), "OR".to_string()),
                ("destination".to_string(), "or-iis".to_string())
            ]
        );
        assert_eq!(out.hl7, None);
    }

    #[test]
    fn routes_qbp_by_qpd8_state() {
        let qbp = "MSH|^~\\&|A|B|C|D|2024||QBP^Q11^QBP_Q11|1|P|2.5.1\rQPD|Z34^Request Immunization History^CDCPHINVS|q1|1^^^X^MR|DOE^J||2020|F|1 Main^^Olympia^WA^98501\r";
        assert_eq!(
            host().run::<RouteByJurisdiction>(qbp).unwrap().verdict,
            Verdict::route_to("wa-iis")
        );
    }

    #[test]
    fn unknown_and_missing_states() {
        let tx = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1||DOE^J||2020|F|||1 Main^^Austin^TX\r";
        let Verdict::Reject(issues) = host().run::<RouteByJurisdiction>(tx).unwrap().verdict else {
            panic!()
        };
        assert_eq!(
            (issues[0].code.as_str(), issues[0].location.as_str()),
            ("103", "PID-11.4")
        );
        assert!(issues[0].text.contains("'TX'"));
        let none = "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU|1|P|2.5.1\rPID|1||1||DOE^J||2020|F\r";
        let Verdict::Reject(issues) = host().run::<RouteByJurisdiction>(none).unwrap().verdict
        else {
            panic!()
        };
        assert_eq!(
            (issues[0].code.as_str(), issues[0].location.as_str()),
            ("101", "PID-11.4")
        );
        let with_default = host().config("default", "central");
        // No state in the address: the facility table decides.
        let by_facility = host()
            .config("facility_table", "facilities")
            .table("facilities", &[("B", "wa")]);
        assert_eq!(
            by_facility
                .run::<RouteByJurisdiction>(none)
                .unwrap()
                .verdict,
            Verdict::route_to("wa-iis")
        );
        let by_org = host()
            .config("facility_table", "facilities")
            .table("facilities", &[("ORG9", "OR")]);
        let org = none.replacen("|2.5.1\r", "|2.5.1||||||||||HIE^^^^^^^^^ORG9\r", 1);
        assert_eq!(
            by_org.run::<RouteByJurisdiction>(&org).unwrap().verdict,
            Verdict::route_to("or-iis")
        );
        assert_eq!(
            with_default.run::<RouteByJurisdiction>(tx).unwrap().verdict,
            Verdict::route_to("central")
        );
    }
}
