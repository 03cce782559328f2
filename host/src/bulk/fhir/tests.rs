use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn run(text: &str) -> Converted {
    let p = Patient {
        mrn: "1".into(),
        ..Patient::default()
    };
    convert(
        text,
        &Context {
            patient: &p,
            tag: "t/1 x",
            since: None,
            iis: "iis",
        },
    )
}

const HEAD: &str = "MSH|^~\\&|IIS|F|EHR|C|20240101120000-0500||RSP^K11^RSP_K11|1|P|2.5.1|||NE|NE|||||Z32^CDCPHINVS\rMSA|AA|Q1\r";

fn diagnostics(c: &Converted) -> String {
    c.errors
        .iter()
        .flat_map(|e| e["issue"].as_array().cloned().unwrap_or_default())
        .map(|i| i["diagnostics"].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Only an answer that may change is worth asking for again: an unreadable
/// one, or an AE for the IIS's own trouble (ERR-3 207) or naming no error.
#[test]
fn only_what_can_change_is_retried() {
    let retry = |text: &str| match run(text).outcome {
        Outcome::Refused { retry, .. } => retry,
        other => panic!("{other:?}"),
    };
    assert!(retry(&format!(
        "{HEAD}QAK|Q1|AE|Z34\rERR||QPD^1|207^Application internal error^HL70357|E||||The IIS is busy"
    )));
    assert!(retry("MSH|^~\\&|I\rMSA|AE|Q1"));
    assert!(retry("hello"));
    assert!(!retry(&format!(
        "{HEAD}QAK|Q1|AE|Z34\rERR||QPD^1^3|101^Required field missing^HL70357|E||||Patient id is required"
    )));
    assert!(!retry(&format!("{HEAD}QAK|Q1|AR|Z34")));
    assert!(!retry(&format!("{HEAD}QAK|Q1|TM|Z34")));
}

/// An AE whose errors are only warnings still carries the patient and the
/// doses: they are exported, the warnings with them.
#[test]
fn an_ae_with_only_warnings_keeps_its_data() {
    let c = run(&format!(
        "{HEAD}QAK|Q1|AE|Z34\rERR||PID^1^11|103^Table value not found^HL70357|W||||County code not recognized\r\
         PID|1||9^^^IIS^SR||Doe^Jo||20200101|F\r\
         ORC|RE\rRXA|0|1|20200301||08^HepB^CVX|0.5|mL"
    ));
    assert_eq!(c.outcome, Outcome::Found);
    let kinds: Vec<&str> = c.resources.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["Patient", "Immunization"]);
    assert!(diagnostics(&c).contains("County code not recognized"));
    assert!(
        c.errors
            .iter()
            .all(|e| e["issue"][0]["severity"] == "warning")
    );
    // One error among the warnings: refused as before.
    let refused = run(&format!(
        "{HEAD}QAK|Q1|AE|Z34\rERR||PID^1^7|101^Required field missing^HL70357|E||||Birth date required\r\
         PID|1||9^^^IIS^SR||Doe^Jo||20200101|F"
    ));
    assert!(matches!(refused.outcome, Outcome::Refused { ref code, .. } if code == "AE"));
}

/// An answer wrapped in a batch (FHS/BHS … BTS/FTS) is read as the message
/// inside it.
#[test]
fn a_batch_wrapped_answer_is_unwrapped() {
    let c = run(&format!(
        "FHS|^~\\&|IIS\rBHS|^~\\&|IIS\r{HEAD}QAK|Q1|OK|Z34\rPID|1||9^^^IIS^SR||Doe^Jo||20200101|F\r\
         ORC|RE\rRXA|0|1|20200301||08^HepB^CVX|0.5|mL\rBTS|1\rFTS|1"
    ));
    assert_eq!(c.outcome, Outcome::Found, "{:?}", c.errors);
    assert_eq!(c.resources.len(), 2);
}

#[test]
fn qak_decides_not_msa() {
    let ae = run(&format!(
        "{HEAD}QAK|Q1|AE|Z34\rERR||QPD^1^3|101^Required field missing^HL70357|E||||Patient id is required"
    ));
    assert_eq!(
        ae.outcome,
        Outcome::Refused {
            code: "AE".into(),
            text: "Patient id is required".into(),
            retry: false,
        }
    );
    assert!(diagnostics(&ae).contains("Patient id is required"));
    let pd = run(&format!("{HEAD}QAK|Q1|PD|Z34"));
    assert!(matches!(pd.outcome, Outcome::Refused { ref code, .. } if code == "PD"));
    assert_eq!(pd.errors[0]["issue"][0]["code"], "security");
    // MSA-1 AE but QAK-2 OK with a patient: found.
    let ok = run(
        "MSH|^~\\&|I||||||||||||||||||||Z32^CDCPHINVS\rMSA|AE|Q1|warning\rQAK|Q1|OK|Z34\rPID|1||9^^^IIS^SR||Doe^Jo",
    );
    assert_eq!(ok.outcome, Outcome::Found);
    // No QAK: MSA decides, with its own words.
    let ar = run("MSH|^~\\&|I\rMSA|AR|Q1|facility unknown");
    assert_eq!(
        ar.outcome,
        Outcome::Refused {
            code: "AR".into(),
            text: "facility unknown".into(),
            retry: false,
        }
    );
    let nf = run(&format!("{HEAD}QAK|Q1|NF|Z34"));
    assert_eq!(nf.outcome, Outcome::NotFound);
    let two = run(&format!(
        "{HEAD}QAK|Q1|OK|Z34\rPID|1||1^^^A^SR||A^B||2000\rPID|2||2^^^A^SR||C^D||2001"
    ));
    assert_eq!(two.outcome, Outcome::Ambiguous);
    assert!(two.resources.is_empty());
    let unreadable = run("hello");
    assert!(
        matches!(unreadable.outcome, Outcome::Refused { ref code, .. } if code == "unreadable")
    );
}

#[test]
fn statuses_codings_and_bad_dates() {
    let c = run(&format!(
        "{HEAD}QAK|Q1|OK|Z34\rPID|1||1^^^A&1.2.3&ISO^MR||D^J||19990231|F||||||||||||||||Y|2\r\
         ORC|RE\rRXA|0|1|20201340||08^HepB^CVX|999|||00|||||||||00^Parental decision^NIP002||RE\r\
         ORC|RE\rRXA|0|1|2020||54321-0001-01^Flu^NDC^88^flu^CVX|0.5|mL^^UCUM||||||||L1|20991301|||||D\r\
         ORC|RE\rRXA|0|1|20200101|||abc|ml"
    ));
    assert_eq!(c.outcome, Outcome::Found);
    let patient = &c.resources[0].1;
    assert_eq!(patient["id"], "t-1-x-patient");
    assert!(patient.get("birthDate").is_none());
    assert_eq!(patient["multipleBirthInteger"], 2);
    assert_eq!(patient["identifier"][0]["system"], "urn:oid:1.2.3");
    let imms: Vec<&Value> = c
        .resources
        .iter()
        .filter(|(k, _)| *k == "Immunization")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(imms.len(), 3);
    assert_eq!(imms[0]["status"], "not-done");
    assert_eq!(imms[0]["statusReason"]["coding"][0]["code"], "00");
    assert_eq!(imms[0]["occurrenceString"], "20201340");
    assert_eq!(imms[0]["primarySource"], true);
    assert_eq!(imms[1]["status"], "entered-in-error");
    assert_eq!(imms[1]["occurrenceDateTime"], "2020");
    assert_eq!(
        imms[1]["vaccineCode"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/ndc"
    );
    assert_eq!(
        imms[1]["vaccineCode"]["coding"][1]["system"],
        "http://hl7.org/fhir/sid/cvx"
    );
    assert_eq!(imms[1]["lotNumber"], "L1");
    assert!(imms[1].get("expirationDate").is_none());
    assert_eq!(imms[2]["vaccineCode"]["text"], "vaccine not stated");
    assert!(imms[2].get("doseQuantity").is_none());
    let notes = diagnostics(&c);
    for at in ["PID-7", "RXA-3", "RXA-16", "RXA-5"] {
        assert!(notes.contains(at), "{at} not in {notes}");
    }
    assert!(
        c.errors
            .iter()
            .all(|e| e["issue"][0]["severity"] == "warning")
    );
}

fn segment() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "MSH", "MSA", "QAK", "ERR", "PID", "ORC", "RXA", "RXR", "OBX", "QPD", "ZZZ",
    ]);
    let value = prop::sample::select(vec![
        "",
        "OK",
        "NF",
        "TM",
        "AE",
        "PD",
        "Z31",
        "Z32",
        "Z42",
        "998",
        "08^HepB^CVX",
        "30956-7",
        "59781-5",
        "30980-7",
        "20240229",
        "2024023",
        "20240101120000-0500",
        "Y",
        "N",
        "D",
        "RE",
        "999",
        ".5",
        "\\X0D\\",
        "^~\\&",
        "&&&",
        "\u{0}",
        "é",
        "1^^^A&1.2&ISO^MR~2",
        "-1e309",
    ]);
    (names, prop::collection::vec(value, 0..25)).prop_map(|(n, f)| format!("{n}|{}", f.join("|")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let c = run(&String::from_utf8_lossy(&bytes));
        prop_assert!(!c.resources.is_empty() || !c.errors.is_empty());
    }

    #[test]
    fn arbitrary_segments_never_panic(segs in prop::collection::vec(segment(), 0..30), sep in prop::sample::select(vec!["\r", "\n", "\r\n"])) {
        let text = format!("MSH|^~\\&|A|B|C|D|2024||RSP^K11|1|P|2.5.1{sep}{}", segs.join(sep));
        let c = run(&text);
        prop_assert!(!c.resources.is_empty() || !c.errors.is_empty());
        if c.outcome == Outcome::Found {
            prop_assert_eq!(c.resources[0].0, "Patient");
        } else {
            prop_assert!(c.resources.is_empty());
        }
    }
}
