//! `race-ethnicity`: race (PID-10) and ethnicity (PID-22) in the CDC Race &
//! Ethnicity code set (CDCREC), which IIS need and EHRs often send as local
//! codes, free text or "unknown".
//!
//! For each value it:
//! - keeps a valid CDCREC code (checked against the `cdcrec-race` /
//!   `cdcrec-ethnicity` tables);
//! - maps local codes and text (`W`, `White`, `Hispanic`…) to CDCREC, from a
//!   built-in table plus the route's config (`race.<local>` / `ethnicity.<local>`
//!   = CDCREC code), rewriting the field as `code^text^CDCREC`;
//! - flags a missing, "unknown"/"refused" or unmappable value with a warning;
//! - where the message has none, optionally fills it from an HIE lookup table
//!   (config `enrich_table`, key = PID-3.1, value `RACE|ETHNICITY` CDCREC codes).
//!
//! It sets `completeness.race` and `completeness.ethnicity` to one of
//! `present`, `mapped`, `enriched`, `missing`, `unknown`, `invalid`, which the
//! engine counts per sender (`izhub_completeness_total`).
//!
//! Grants: `lookup:cdcrec-race`, `lookup:cdcrec-ethnicity`, and the enrichment table.

use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};

/// The plugin.
pub struct RaceEthnicity;

/// CDCREC race concepts the IIS want: code and display text.
const RACES: [(&str, &str); 6] = [
    ("1002-5", "American Indian or Alaska Native"),
    ("2028-9", "Asian"),
    ("2054-5", "Black or African American"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2106-3", "White"),
    ("2131-1", "Other Race"),
];
/// CDCREC ethnicity concepts.
const ETHNICITIES: [(&str, &str); 2] = [
    ("2135-2", "Hispanic or Latino"),
    ("2186-5", "Not Hispanic or Latino"),
];

/// Local codes and words commonly sent, lower case → CDCREC code.
const RACE_WORDS: [(&str, &str); 20] = [
    ("w", "2106-3"),
    ("white", "2106-3"),
    ("caucasian", "2106-3"),
    ("b", "2054-5"),
    ("black", "2054-5"),
    ("african american", "2054-5"),
    ("black or african american", "2054-5"),
    ("a", "2028-9"),
    ("asian", "2028-9"),
    ("i", "1002-5"),
    ("ai", "1002-5"),
    ("american indian", "1002-5"),
    ("american indian or alaska native", "1002-5"),
    ("alaska native", "1002-5"),
    ("p", "2076-8"),
    ("pacific islander", "2076-8"),
    ("native hawaiian", "2076-8"),
    ("native hawaiian or other pacific islander", "2076-8"),
    ("o", "2131-1"),
    ("other", "2131-1"),
];
const ETHNICITY_WORDS: [(&str, &str); 8] = [
    ("h", "2135-2"),
    ("hispanic", "2135-2"),
    ("hispanic or latino", "2135-2"),
    ("latino", "2135-2"),
    ("n", "2186-5"),
    ("nh", "2186-5"),
    ("not hispanic", "2186-5"),
    ("not hispanic or latino", "2186-5"),
];
/// Values that say "we do not know" or "declined".
const UNKNOWN: [&str; 9] = [
    "u", "unk", "unknown", "asku", "nask", "declined", "refused", "phc1175", "d",
];

/// What became of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Present,
    Mapped,
    Enriched,
    Missing,
    Unknown,
    Invalid,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Mapped => "mapped",
            Status::Enriched => "enriched",
            Status::Missing => "missing",
            Status::Unknown => "unknown",
            Status::Invalid => "invalid",
        }
    }
}

struct Kind {
    name: &'static str,
    path: &'static str,
    table: &'static str,
    concepts: &'static [(&'static str, &'static str)],
    words: &'static [(&'static str, &'static str)],
}

const RACE: Kind = Kind {
    name: "race",
    path: "PID-10",
    table: "cdcrec-race",
    concepts: &RACES,
    words: &RACE_WORDS,
};
const ETHNICITY: Kind = Kind {
    name: "ethnicity",
    path: "PID-22",
    table: "cdcrec-ethnicity",
    concepts: &ETHNICITIES,
    words: &ETHNICITY_WORDS,
};

fn display(kind: &Kind, code: &str) -> &'static str {
    kind.concepts
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, t)| *t)
        .unwrap_or("")
}

/// Maps one repetition (`code^text^system`) to a CDCREC code, if it can.
fn map_one(kind: &Kind, rep: &str, ctx: &Context) -> Option<String> {
    let mut parts = rep.split('^');
    let code = parts.next().unwrap_or("").trim();
    let text = parts.next().unwrap_or("").trim();
    for candidate in [code, text] {
        if candidate.is_empty() {
            continue;
        }
        if let Some(local) = ctx.config(&format!("{}.{candidate}", kind.name)) {
            return Some(local);
        }
        let lower = candidate.to_ascii_lowercase();
        if let Some((_, cdcrec)) = kind.words.iter().find(|(w, _)| *w == lower) {
            return Some((*cdcrec).to_string());
        }
    }
    None
}

fn is_valid_cdcrec(kind: &Kind, code: &str, ctx: &Context) -> bool {
    if kind.concepts.iter().any(|(c, _)| *c == code) {
        return true;
    }
    matches!(ctx.lookup(kind.table, code), Ok(Some(v)) if v.starts_with("Valid|"))
        && code.contains('-')
}

fn is_unknown(rep: &str) -> bool {
    let mut parts = rep.split('^');
    let code = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let text = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    UNKNOWN.contains(&code.as_str())
        || UNKNOWN.contains(&text.as_str())
        || code == "2131-1" && text.contains("unknown")
}

fn process_kind(
    kind: &Kind,
    msg: &mut Message,
    ctx: &mut Context,
    enriched: Option<&str>,
) -> Result<Status, String> {
    let reps: Vec<String> = msg
        .repetitions(kind.path)
        .into_iter()
        .map(str::to_string)
        .filter(|r| !r.trim_matches('^').is_empty())
        .collect();
    if reps.is_empty() {
        if let Some(code) = enriched.filter(|c| is_valid_cdcrec(kind, c, ctx)) {
            msg.set(kind.path, &format!("{code}^{}^CDCREC", display(kind, code)))?;
            return Ok(Status::Enriched);
        }
        ctx.report(
            Issue::warning("101")
                .at(kind.path)
                .app_code("7")
                .text(format!(
                    "The patient's {} ({}) is missing; IIS need it for equity reporting.",
                    kind.name, kind.path
                )),
        );
        return Ok(Status::Missing);
    }
    if reps.iter().all(|r| is_unknown(r)) {
        if let Some(code) = enriched.filter(|c| is_valid_cdcrec(kind, c, ctx)) {
            msg.set(kind.path, &format!("{code}^{}^CDCREC", display(kind, code)))?;
            return Ok(Status::Enriched);
        }
        ctx.report(Issue::warning("103").at(kind.path).app_code("4").text(format!(
            "The patient's {} is recorded as unknown or declined; ask the patient if you can.",
            kind.name
        )));
        return Ok(Status::Unknown);
    }
    let mut out = Vec::new();
    let mut status = Status::Present;
    for rep in &reps {
        let code = rep.split('^').next().unwrap_or("").trim();
        let system = rep.split('^').nth(2).unwrap_or("").trim();
        if is_valid_cdcrec(kind, code, ctx)
            && (system.is_empty()
                || system == "CDCREC"
                || system == "HL70005"
                || system == "HL70189")
        {
            out.push(rep.clone());
        } else if let Some(mapped) = map_one(kind, rep, ctx) {
            out.push(format!("{mapped}^{}^CDCREC", display(kind, &mapped)));
            status = Status::Mapped;
        } else if is_unknown(rep) {
            continue;
        } else {
            ctx.report(Issue::warning("103").at(kind.path).app_code("5").text(format!(
                "'{}' is not a CDC race and ethnicity (CDCREC) code for {}; send a CDCREC code.",
                code, kind.name
            )));
            return Ok(Status::Invalid);
        }
    }
    if status == Status::Mapped {
        msg.set(kind.path, &out.join("~"))?;
    }
    Ok(status)
}

impl Plugin for RaceEthnicity {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        if msg.count("PID") == 0 {
            return Ok(Verdict::Continue);
        }
        let enrichment = ctx
            .config("enrich_table")
            .and_then(|table| ctx.lookup(&table, msg.get("PID-3.1")).ok().flatten());
        let (race_hint, eth_hint) = match &enrichment {
            Some(v) => {
                let mut it = v.split('|');
                (
                    it.next().map(str::trim).filter(|s| !s.is_empty()),
                    it.next().map(str::trim).filter(|s| !s.is_empty()),
                )
            }
            None => (None, None),
        };
        let race = process_kind(&RACE, msg, ctx, race_hint)?;
        let ethnicity = process_kind(&ETHNICITY, msg, ctx, eth_hint)?;
        ctx.set_attribute("completeness.race", race.as_str());
        ctx.set_attribute("completeness.ethnicity", ethnicity.as_str());
        Ok(Verdict::Continue)
    }
}

izhub_plugin::plugin!(RaceEthnicity);

#[cfg(test)]
mod tests {
    use super::*;
    use izhub_plugin::testing::TestHost;

    fn vxu(pid10: &str, pid22: &str) -> String {
        format!(
            "MSH|^~\\&|A|B|C|D|2024||VXU^V04^VXU_V04|1|P|2.5.1\rPID|1||MRN1^^^X^MR||DOE^J||20200101|F||{pid10}|1 Main^^Lansing^MI|||||||||||{pid22}\rRXA|0|1|20240101||08^HepB^CVX\r"
        )
    }

    fn host() -> TestHost {
        TestHost::new()
            .table(
                "cdcrec-race",
                &[
                    ("2106-3", "Valid|White"),
                    ("2054-5", "Valid|Black"),
                    ("W", "Deprecated|White"),
                ],
            )
            .table(
                "cdcrec-ethnicity",
                &[
                    ("2135-2", "Valid|Hispanic"),
                    ("2186-5", "Valid|Not Hispanic"),
                ],
            )
    }

    fn attrs(out: &izhub_plugin::Outcome) -> (String, String) {
        let get = |k: &str| {
            out.attributes
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        (get("completeness.race"), get("completeness.ethnicity"))
    }

    #[test]
    fn valid_cdcrec_is_kept() {
        let out = host()
            .run::<RaceEthnicity>(&vxu("2106-3^White^CDCREC", "2186-5^Not Hispanic^CDCREC"))
            .unwrap();
        assert_eq!(out.hl7, None);
        assert!(out.issues.is_empty());
        assert_eq!(attrs(&out), ("present".into(), "present".into()));
    }

    #[test]
    fn local_codes_and_text_are_mapped() {
        let out = host()
            .run::<RaceEthnicity>(&vxu("W^^L~^Black", "H"))
            .unwrap();
        let text = out.hl7.clone().unwrap();
        assert!(
            text.contains("|2106-3^White^CDCREC~2054-5^Black or African American^CDCREC|"),
            "{text}"
        );
        assert!(
            text.ends_with("|2135-2^Hispanic or Latino^CDCREC\rRXA|0|1|20240101||08^HepB^CVX\r"),
            "{text}"
        );
        assert_eq!(attrs(&out), ("mapped".into(), "mapped".into()));
        let custom = host()
            .config("race.7", "2028-9")
            .run::<RaceEthnicity>(&vxu("7^Local Asian", "N"))
            .unwrap();
        assert!(custom.hl7.unwrap().contains("|2028-9^Asian^CDCREC|"));
    }

    #[test]
    fn missing_unknown_and_invalid_are_flagged() {
        let out = host()
            .run::<RaceEthnicity>(&vxu("", "UNK^Unknown"))
            .unwrap();
        assert_eq!(attrs(&out), ("missing".into(), "unknown".into()));
        assert_eq!(out.issues.len(), 2);
        assert_eq!(out.issues[0].location, "PID-10");
        let out = host()
            .run::<RaceEthnicity>(&vxu("XYZ^Martian", "2186-5"))
            .unwrap();
        assert_eq!(attrs(&out), ("invalid".into(), "present".into()));
        assert!(out.issues[0].text.contains("'XYZ'"));
    }

    #[test]
    fn enrichment_fills_what_is_missing() {
        let host = host()
            .config("enrich_table", "hie-demographics")
            .table("hie-demographics", &[("MRN1", "2054-5|2135-2")]);
        let out = host.run::<RaceEthnicity>(&vxu("", "U")).unwrap();
        let text = out.hl7.clone().unwrap();
        assert!(
            text.contains("|2054-5^Black or African American^CDCREC|"),
            "{text}"
        );
        assert!(
            text.contains("|2135-2^Hispanic or Latino^CDCREC\r"),
            "{text}"
        );
        assert_eq!(attrs(&out), ("enriched".into(), "enriched".into()));
        assert!(out.issues.is_empty());
    }
}
