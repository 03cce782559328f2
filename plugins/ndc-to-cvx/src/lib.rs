//! `ndc-to-cvx`: IIS expect a CVX code in RXA-5; EHRs often send the NDC
//! from the vial. For each RXA whose vaccine is coded only as an NDC (RXA-5.3
//! or RXA-5.6 = `NDC`), this plugin writes the CVX from CDC's NDC crosswalk as
//! the primary code and keeps the NDC as the alternate:
//! `RXA-5 = CVX^description^CVX^NDC^text^NDC`. Where RXA-17 (manufacturer) is
//! empty it fills the MVX the NDC belongs to. An NDC missing from the
//! crosswalk is reported as a warning, never passed silently.
//!
//! Grants: `lookup:ndc`, `lookup:cvx`, `lookup:mvx`.

use izhub_plugin::ndc::normalize as normalize_ndc;
use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};

/// The plugin.
pub struct NdcToCvx;

fn field(value: &str, n: usize) -> &str {
    value.split('|').nth(n).unwrap_or("").trim()
}

impl Plugin for NdcToCvx {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        for n in 1..=msg.count("RXA") {
            let at = |f: &str| format!("RXA[{n}]-{f}");
            let (primary_sys, alt_sys) = (
                msg.get(&at("5.3")).to_ascii_uppercase(),
                msg.get(&at("5.6")).to_ascii_uppercase(),
            );
            let (ndc_raw, ndc_text) = if primary_sys == "NDC" {
                (
                    msg.get(&at("5.1")).to_string(),
                    msg.get(&at("5.2")).to_string(),
                )
            } else if alt_sys == "NDC" {
                (
                    msg.get(&at("5.4")).to_string(),
                    msg.get(&at("5.5")).to_string(),
                )
            } else {
                continue;
            };
            let Some(ndc) = normalize_ndc(&ndc_raw) else {
                ctx.report(Issue::warning("102").at(at("5")).app_code("4").text(format!(
                    "'{ndc_raw}' is not an NDC (expected 5-4-2, 4-4-2, 5-3-2 or 5-4-1 with hyphens, or 11 digits); the vaccine could not be mapped to a CVX code."
                )));
                continue;
            };
            let Ok(Some(entry)) = ctx.lookup("ndc", &ndc) else {
                ctx.report(Issue::warning("103").at(at("5")).app_code("5").text(format!(
                    "NDC {ndc} is not in the CDC NDC crosswalk, so no CVX code could be added; the IIS may reject this vaccination."
                )));
                continue;
            };
            let (cvx, mvx) = (field(&entry, 0).to_string(), field(&entry, 1).to_string());
            if primary_sys == "NDC" && !cvx.is_empty() {
                let description = ctx
                    .lookup("cvx", &cvx)
                    .ok()
                    .flatten()
                    .map(|v| field(&v, 1).to_string())
                    .unwrap_or_default();
                let value = format!(
                    "{cvx}^{}^CVX^{ndc}^{}^NDC",
                    msg.escape(&description),
                    ndc_text
                );
                msg.set(&at("5"), &value)?;
            } else if primary_sys.is_empty() && msg.get(&at("5.1")).is_empty() && !cvx.is_empty() {
                msg.set(&at("5.1"), &cvx)?;
                msg.set(&at("5.3"), "CVX")?;
            }
            if msg.get(&at("17")).is_empty() && !mvx.is_empty() {
                let name = ctx
                    .lookup("mvx", &mvx)
                    .ok()
                    .flatten()
                    .map(|v| field(&v, 1).to_string())
                    .unwrap_or_default();
                msg.set(&at("17"), &format!("{mvx}^{}^MVX", msg.escape(&name)))?;
            }
        }
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(NdcToCvx);

#[cfg(test)]
mod tests {
    use super::*;
    use izhub_plugin::testing::TestHost;

    fn host() -> TestHost {
        TestHost::new()
            .table(
                "ndc",
                &[
                    ("49281-0425-50", "140||Active|20250701||FLUZONE"),
                    ("00069-0344-01", "305|PFR|Active|||Abrysvo"),
                ],
            )
            .table(
                "cvx",
                &[
                    ("140", "Active|Influenza, split virus, trivalent, PF|"),
                    ("305", "Active|RSV, bivalent|"),
                ],
            )
            .table("mvx", &[("PFR", "Active|Pfizer, Inc")])
    }

    fn vxu(rxa5: &str, rxa17: &str) -> String {
        format!(
            "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU_V04|1|P|2.5.1\rPID|1||1^^^X^MR||DOE^J||20200101\rRXA|0|1|20240101||{rxa5}|0.5|mL^^UCUM||00^^NIP001||||||LOT1||{rxa17}||CP|A\r"
        )
    }

    #[test]
    fn ndc_primary_becomes_cvx_with_ndc_alternate_and_mvx() {
        let out = host()
            .run::<NdcToCvx>(&vxu("00069-0344-01^Abrysvo^NDC", ""))
            .unwrap();
        let text = out.hl7.unwrap();
        let rxa = text.split('\r').find(|s| s.starts_with("RXA")).unwrap();
        assert!(
            rxa.contains("|305^RSV, bivalent^CVX^00069-0344-01^Abrysvo^NDC|"),
            "{rxa}"
        );
        assert!(rxa.contains("|PFR^Pfizer, Inc^MVX|"), "{rxa}");
        assert!(out.issues.is_empty());
    }

    #[test]
    fn ten_digit_and_bare_ndcs_are_normalized() {
        assert_eq!(
            normalize_ndc("0069-0344-01").as_deref(),
            Some("00069-0344-01")
        );
        assert_eq!(
            normalize_ndc("00069034401").as_deref(),
            Some("00069-0344-01")
        );
        assert_eq!(
            normalize_ndc("49281-425-50").as_deref(),
            Some("49281-0425-50")
        );
        assert_eq!(normalize_ndc("12-34"), None);
        assert_eq!(normalize_ndc("abc"), None);
        let out = host()
            .run::<NdcToCvx>(&vxu("49281042550^Fluzone^NDC", "PMC^Sanofi^MVX"))
            .unwrap();
        let text = out.hl7.unwrap();
        assert!(
            text.contains(
                "|140^Influenza, split virus, trivalent, PF^CVX^49281-0425-50^Fluzone^NDC|"
            ),
            "{text}"
        );
        assert!(
            text.contains("|PMC^Sanofi^MVX|"),
            "an existing RXA-17 is kept: {text}"
        );
    }

    #[test]
    fn unknown_ndc_is_a_warning_not_a_silent_pass() {
        let out = host()
            .run::<NdcToCvx>(&vxu("99999-9999-99^Mystery^NDC", ""))
            .unwrap();
        assert_eq!(out.verdict, Verdict::Continue);
        assert_eq!(out.hl7, None);
        assert_eq!(out.issues.len(), 1);
        assert_eq!(
            (out.issues[0].code.as_str(), out.issues[0].location.as_str()),
            ("103", "RXA[1]-5")
        );
    }

    #[test]
    fn cvx_coded_vaccinations_are_left_alone() {
        let out = host().run::<NdcToCvx>(&vxu("08^HepB^CVX", "")).unwrap();
        assert_eq!(out.hl7, None);
        assert!(out.issues.is_empty());
    }
}
