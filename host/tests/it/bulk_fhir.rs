//! Every real RSP^K11 answer in `samples/corpus/rsp-k11/` converted to FHIR
//! R4: the outcome each profile must give, key mapped values, and every
//! output line (resources and OperationOutcomes) validated as R4 by the
//! PyPI `fhir.resources` models (`host/tests/fhir_validate.py`, pinned in
//! `host/tests/requirements-fhir.txt`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::root;
use izhub::bulk::cohort::{Cohort, Patient};
use izhub::bulk::fhir::{Context, Converted, Outcome, convert};
use izhub::bulk::reconcile::reconcile;
use serde_json::Value;

fn samples() -> Vec<(String, String)> {
    let dir = root().join("samples/corpus/rsp-k11");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (name, text)
        })
        .collect()
}

fn cohort_patient() -> Patient {
    Patient {
        row: 2,
        member_id: "M-1".into(),
        mrn: "234814".into(),
        mrn_authority: "MYEHR".into(),
        family: "FagenAIRA".into(),
        given: "TheodoricAIRA".into(),
        birth_date: "19631226".into(),
        sex: "M".into(),
        ..Patient::default()
    }
}

fn run(text: &str, tag: &str, since: Option<&str>) -> Converted {
    let p = cohort_patient();
    convert(
        text,
        &Context {
            patient: &p,
            tag,
            since,
            iis: "nd-iis",
        },
    )
}

fn of_type<'a>(c: &'a Converted, kind: &str) -> Vec<&'a Value> {
    c.resources
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, v)| v)
        .collect()
}

fn has_coding(v: &Value, system: &str, code: &str) -> bool {
    v["coding"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["system"] == system && c["code"] == code))
}

#[test]
fn every_sample_gives_its_profiles_outcome() {
    let all = samples();
    assert_eq!(all.len(), 8, "samples/corpus/rsp-k11 changed");
    for (name, text) in &all {
        let c = run(text, name, None);
        let expected = match name.as_str() {
            n if n.contains("-z31-") => Outcome::Ambiguous,
            n if n.contains("-z33-nf-") => Outcome::NotFound,
            n if n.contains("-z33-tm-") => Outcome::Refused {
                code: "TM".into(),
                text: String::new(),
                retry: false,
            },
            _ => Outcome::Found,
        };
        assert_eq!(c.outcome, expected, "{name}");
        match c.outcome {
            Outcome::Found => {
                assert_eq!(c.resources.first().unwrap().0, "Patient", "{name}");
                assert_eq!(of_type(&c, "Patient").len(), 1, "{name}");
            }
            _ => {
                assert!(c.resources.is_empty(), "{name}");
                assert_eq!(c.errors.len(), 1, "{name}");
            }
        }
        // Every reference points at a resource of the same answer.
        let ids: Vec<String> = c
            .resources
            .iter()
            .map(|(k, v)| format!("{k}/{}", v["id"].as_str().unwrap()))
            .collect();
        for (_, v) in &c.resources {
            for key in ["patient", "immunizationEvent"] {
                if let Some(r) = v[key]["reference"].as_str() {
                    assert!(ids.iter().any(|id| id == r), "{name}: {r} dangles");
                }
            }
        }
    }
}

#[test]
fn z32_history_maps_patient_and_immunizations() {
    let text =
        std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z32-01.hl7")).unwrap();
    let c = run(&text, "job-2", None);
    let patient = of_type(&c, "Patient")[0];
    assert_eq!(patient["id"], "job-2-patient");
    assert_eq!(patient["birthDate"], "1963-12-26");
    assert_eq!(patient["gender"], "male");
    assert_eq!(patient["name"][0]["family"], "FagenAIRA");
    assert_eq!(
        patient["name"][0]["given"],
        serde_json::json!(["TheodoricAIRA", "ElbertAIRA"])
    );
    assert_eq!(patient["name"][0]["use"], "official");
    assert_eq!(patient["address"][0]["city"], "Wyndmere");
    assert_eq!(patient["telecom"][0]["value"], "8005551212");
    let ids = patient["identifier"].as_array().unwrap();
    assert_eq!(ids[0]["value"], "234814");
    assert_eq!(ids[0]["assigner"]["display"], "MYEHR");
    assert_eq!(ids[0]["system"], "urn:izhub:iis:nd-iis:MYEHR");
    assert!(
        ids.iter()
            .any(|i| i["value"] == "M-1" && i["type"]["coding"][0]["code"] == "MB")
    );
    let ext = patient["extension"].as_array().unwrap();
    let find = |url: &str| {
        ext.iter()
            .find(|e| e["url"].as_str().unwrap().ends_with(url))
            .unwrap()
    };
    assert_eq!(
        find("patient-mothersMaidenName")["valueString"],
        "DifferentAIRA"
    );
    let race = &find("us-core-race")["extension"];
    assert_eq!(race[0]["url"], "ombCategory");
    assert_eq!(race[0]["valueCoding"]["code"], "2028-9");
    assert_eq!(race[1]["valueString"], "ASIAN");
    let eth = &find("us-core-ethnicity")["extension"];
    assert_eq!(eth[0]["valueCoding"]["code"], "2186-5");
    assert_eq!(eth[1]["valueString"], "not HISPANIC");

    let imms = of_type(&c, "Immunization");
    assert_eq!(imms.len(), 1);
    let imm = imms[0];
    assert_eq!(imm["id"], "job-2-imm-1");
    assert_eq!(imm["status"], "completed");
    assert_eq!(imm["patient"]["reference"], "Patient/job-2-patient");
    assert!(has_coding(
        &imm["vaccineCode"],
        "http://hl7.org/fhir/sid/cvx",
        "208"
    ));
    assert_eq!(imm["occurrenceDateTime"], "2021-05-16");
    assert_eq!(imm["doseQuantity"]["value"], 0.3);
    assert_eq!(imm["doseQuantity"]["code"], "mL");
    assert_eq!(imm["primarySource"], false);
    assert_eq!(imm["reportOrigin"]["coding"][0]["code"], "01");
    assert!(has_coding(
        &imm["route"],
        "http://ncit.nci.nih.gov",
        "C28161"
    ));
    assert!(has_coding(
        &imm["site"],
        "http://terminology.hl7.org/CodeSystem/v2-0163",
        "RT"
    ));
    assert!(has_coding(
        &imm["programEligibility"][0],
        "http://terminology.hl7.org/CodeSystem/v2-0064",
        "V02"
    ));
    assert_eq!(imm["education"][0]["documentType"], "Multivaccine VIS");
    assert_eq!(imm["education"][0]["presentationDate"], "2012-01-13");
    // The IIS's informational ERR (severity I) is not a warning.
    assert!(c.errors.is_empty(), "{:?}", c.errors);
}

#[test]
fn since_keeps_later_doses_only() {
    let text =
        std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z32-02.hl7")).unwrap();
    assert_eq!(of_type(&run(&text, "t", None), "Immunization").len(), 2);
    let later = run(&text, "t", Some("20210501"));
    let imms = of_type(&later, "Immunization");
    assert_eq!(imms.len(), 1);
    assert_eq!(imms[0]["occurrenceDateTime"], "2021-05-31");
    // The IIS's warning ERR reaches the error file in its own words.
    assert!(
        later.errors[0]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("patient multiple birth indicator is missing")
    );
}

#[test]
fn z42_forecast_gives_evaluations_and_recommendations() {
    let text =
        std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z42-01.hl7")).unwrap();
    let c = run(&text, "z42", None);
    let patient = of_type(&c, "Patient")[0];
    let ids = patient["identifier"].as_array().unwrap();
    assert_eq!(ids[1]["value"], "34500907");
    assert_eq!(ids[1]["type"]["coding"][0]["code"], "SR");
    let imms = of_type(&c, "Immunization");
    let cvx: Vec<&str> = imms
        .iter()
        .map(|i| i["vaccineCode"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(cvx, ["45", "48", "110", "08", "03"]);
    assert_eq!(imms[1]["performer"][0]["actor"]["display"], "Nurse Sticker");
    assert_eq!(
        imms[1]["performer"][0]["function"]["coding"][0]["code"],
        "AP"
    );
    assert_eq!(imms[1]["location"]["display"], "NIST-Clinic-1");
    assert!(
        imms.iter().all(|i| i.get("doseQuantity").is_none()),
        "999 is unknown"
    );
    let evals = of_type(&c, "ImmunizationEvaluation");
    assert_eq!(evals.len(), 7);
    let hib = evals
        .iter()
        .find(|e| e["immunizationEvent"]["reference"] == "Immunization/z42-imm-2")
        .unwrap();
    assert_eq!(hib["doseStatus"]["coding"][0]["code"], "notvalid");
    assert_eq!(hib["doseStatusReason"][0]["text"], "Too Young");
    assert_eq!(hib["authority"]["display"], "ACIP");
    let recs = of_type(&c, "ImmunizationRecommendation");
    assert_eq!(recs.len(), 1);
    let rec = recs[0];
    assert_eq!(rec["date"], "2015-10-31T14:52:33-05:00");
    let list = rec["recommendation"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(has_coding(
        &list[0]["vaccineCode"][0],
        "http://hl7.org/fhir/sid/cvx",
        "03"
    ));
    assert_eq!(
        list[0]["dateCriterion"][0]["code"]["coding"][0]["code"],
        "30980-7"
    );
    assert_eq!(list[0]["dateCriterion"][0]["value"], "2015-02-14");
    assert_eq!(list[0]["dateCriterion"][1]["value"], "2010-06-14");

    let adult = run(
        &std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z42-02.hl7")).unwrap(),
        "adult",
        None,
    );
    let flu = of_type(&adult, "Immunization")[0];
    assert_eq!(flu["primarySource"], true);
    assert_eq!(flu["manufacturer"]["identifier"]["value"], "CSL");
    assert_eq!(flu["manufacturer"]["display"], "bioCSL");
    assert_eq!(flu["doseQuantity"]["value"], 0.5);
    assert_eq!(flu["doseQuantity"]["system"], "http://unitsofmeasure.org");
    let recs = of_type(&adult, "ImmunizationRecommendation");
    assert_eq!(recs[0]["recommendation"].as_array().unwrap().len(), 8);
}

#[test]
fn the_candidates_of_an_ambiguous_answer_are_listed_not_picked() {
    let text =
        std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z31-01.hl7")).unwrap();
    let c = run(&text, "amb", None);
    let issues = c.errors[0]["issue"].as_array().unwrap();
    assert_eq!(issues[0]["code"], "multiple-matches");
    assert_eq!(issues.len(), 4);
    assert!(
        issues[3]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("KENNEDY, JOHN FITZGERALD, born 19900607, id 26 (SR)")
    );
    let tm = std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z33-tm-01.hl7"))
        .unwrap();
    let c = run(&tm, "tm", None);
    assert_eq!(c.errors[0]["issue"][0]["code"], "too-costly");
    let nf = std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z33-nf-01.hl7"))
        .unwrap();
    let c = run(&nf, "nf", None);
    assert_eq!(c.errors[0]["issue"][0]["severity"], "information");
    assert_eq!(c.errors[0]["issue"][0]["code"], "not-found");
}

fn write_ndjson(dir: &Path, files: &BTreeMap<String, Vec<Value>>) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(kind, lines)| {
            let path = dir.join(format!("{kind}.ndjson"));
            let mut f = std::fs::File::create(&path).unwrap();
            for line in lines {
                writeln!(f, "{}", serde_json::to_string(line).unwrap()).unwrap();
            }
            path
        })
        .collect()
}

/// Files a conversion's resources by type, its errors as OperationOutcomes.
fn add(files: &mut BTreeMap<String, Vec<Value>>, c: Converted) {
    for (kind, v) in c.resources {
        files.entry(kind.to_string()).or_default().push(v);
    }
    files
        .entry("OperationOutcome".into())
        .or_default()
        .extend(c.errors);
}

#[test]
fn every_output_line_is_valid_fhir_r4() {
    let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, text) in samples() {
        for since in [None, Some("20100101")] {
            add(&mut files, run(&text, &name, since));
        }
    }
    // Answers that are broken or refused, and bad cohort rows, give
    // OperationOutcomes that must be valid too.
    for text in [
        "",
        "garbage",
        "MSH|^~\\&|X\rMSA|AR|1|no such facility",
        "MSH|^~\\&|X|||||||||||||||||||Z32^CDCPHINVS\rMSA|AA|1\rQAK|1|PD|Z34\rERR|||207|E|||||protected",
        "MSH|^~\\&|X|||||||||||||||||||Z32^CDCPHINVS\rMSA|AA|1\rQAK|1|OK\rPID|1||1^^^A^MR||D^J||1999023\rORC|RE\rRXA|0|1|20201340||08^HepB^CVX|1|zz||02|||||||||||RE\rRXA|0|1|2020||54321-0001-01^Flu^NDC^88^flu^CVX||||||||||20991301|||||D",
    ] {
        add(&mut files, run(text, "edge", None));
    }
    let cohort = "family,given,birth_date,mrn\nDoe,Jane,2001-02-30,1\n,J,2001-01-01,2\n";
    for row in Cohort::from_reader(
        Box::new(std::io::Cursor::new(cohort.as_bytes().to_vec())),
        "c.csv",
    )
    .unwrap()
    {
        files
            .entry("OperationOutcome".into())
            .or_default()
            .push(row.unwrap_err().operation_outcome());
    }
    let kinds: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "Immunization",
            "ImmunizationEvaluation",
            "ImmunizationRecommendation",
            "OperationOutcome",
            "Patient"
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let paths = write_ndjson(dir.path(), &files);
    crate::common::assert_valid_fhir(&paths);
}

#[test]
fn reconciliation_of_a_real_history() {
    let text =
        std::fs::read_to_string(root().join("samples/corpus/rsp-k11/rsp-k11-z42-01.hl7")).unwrap();
    let c = run(&text, "r", None);
    let iis: Vec<Value> = of_type(&c, "Immunization").into_iter().cloned().collect();
    let ehr = vec![serde_json::json!({
        "resourceType": "Immunization", "status": "completed",
        "patient": {"identifier": {"value": "M-1"}},
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "03"}]},
        "occurrenceDateTime": "2010-04-17"
    })];
    let found = reconcile("M-1", &iis, &ehr, 7);
    assert!(found.iter().all(|d| d.vaccine_group != "MMR"), "{found:?}");
    assert!(
        found
            .iter()
            .any(|d| d.vaccine_group == "POLIO" && d.cvx == "110")
    );
    assert!(
        found
            .iter()
            .all(|d| d.side == izhub::bulk::reconcile::Side::OnlyInIis)
    );
}
