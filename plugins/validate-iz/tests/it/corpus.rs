//! The CDC IIS open-tools CVRS test messages: each `testerror` file carries
//! one seeded error, named by its ORC-3 tag; validate-iz must flag that field
//! (as an error or a warning). The matching `testgood` files should pass.

use crate::common::{NOW_CVRS, Seen, host, read, run};
use izhub_plugin::{Message, Severity};

const CORPUS: &str = "../../samples/corpus/cdc-iis-open-tools";
const GOOD: &str = "../../samples/messages/vxu";

/// What a tag names: fields (`SEG-n`, any component or occurrence) or, for
/// observations, the detection that reports them.
enum Want {
    Field(&'static [&'static str]),
    Detection(&'static str),
}

use Want::{Detection as D, Field as F};

#[rustfmt::skip]
const TAGS: &[(&str, Want)] = &[
    ("DATA001_recip_dob", F(&["PID-7"])),
    ("DATA009_admin_date_1", F(&["RXA-3"])),
    ("DATA001_admin_date_2", F(&["RXA-3"])),
    ("DATA006_recip_address_city", F(&["PID-11"])),
    ("DATA005_ext_type", F(&["MSH-8"])),
    ("DATA004_pprl_id", F(&["PID-3"])),
    ("DATA006_recip_first_name_not_redacted", F(&["PID-5"])),
    ("DATA005_recip_address_zip", F(&["PID-11"])),
    ("DATA006_recip_first_name", F(&["PID-5"])),
    ("DATA007_recip_sex", F(&["PID-8"])),
    ("DATA007_cvx", F(&["RXA-5"])),
    ("DATA008_mvx_maxLength", F(&["RXA-17"])),
    ("BUSR001_recip_address_county", F(&["PID-11"])),
    ("BUSR002_admin_address_county", F(&["RXA-11"])),
    ("BUSR003_recip_address_zip", F(&["PID-11"])),
    ("BUSR004_admin_address_zip", F(&["RXA-11"])),
    ("BUSR005_recip_dob_lt_admin_date", F(&["PID-7", "RXA-3"])),
    ("BUSR007_recip_address_zip_implies_state", F(&["PID-11"])),
    ("BUSR008_admin_address_zip_implies_state", F(&["RXA-11"])),
    ("BUSR009_recip_address_zip_implies_county", F(&["PID-11"])),
    ("BUSR010_admin_address_zip_implies_county", F(&["RXA-11"])),
    ("BUSR011_recip_dob_not_future", F(&["PID-7"])),
    ("BUSR012_admin_date_not_future", F(&["RXA-3"])),
    ("BUSR013_vax_event_id_nodups", F(&["ORC-3"])),
    ("DNTS002_ndc", F(&["RXA-5"])),
    ("DNTS002_mvx", F(&["RXA-17"])),
    ("DNTS002_lot_number", F(&["RXA-15"])),
    ("DNTS002_vax_expiration", F(&["RXA-16"])),
    ("DNTS002_vax_admin_site", F(&["RXR-2"])),
    ("DNTS002_vax_route", F(&["RXR-1"])),
    ("DNTS002_dose_num", D("refusal-with-dose-number")),
    ("DNTS002_vax_series_complete", D("refusal-with-series-status")),
    ("DATA006_recip_first_name_missing", F(&["PID-5"])),
    ("DATA006_recip_middle_name_missing", F(&["PID-5"])),
    ("DATA006_recip_last_name_missing", F(&["PID-5"])),
    ("REQD001_recip_dob_missing", F(&["PID-7"])),
    ("REQD001_recip_sex_missing", F(&["PID-8"])),
    ("DATA006_recip_address_street_missing", F(&["PID-11"])),
    ("DATA006_recip_address_street_2_missing", F(&["PID-11"])),
    ("DATA006_recip_address_city_missing", F(&["PID-11"])),
    ("REQD001_recip_race_1_missing", F(&["PID-10"])),
    ("REQD001_recip_ethnicity_missing", F(&["PID-22"])),
    ("REQD001_admin_date_missing", F(&["RXA-3"])),
    ("REQD001_cvx_missing", F(&["RXA-5"])),
    ("REQD001_dose_num_missing", D("cvrs-dose-number-missing")),
    ("REQD001_vax_series_complete_missing", D("cvrs-series-status-missing")),
    ("REQD001_admin_type_missing", F(&["RXA-11"])),
    ("REQD001_responsible_org_missing", F(&["MSH-22"])),
    ("REQD001_admin_name_missing", F(&["RXA-11"])),
    ("REQD001_vax_refusal_missing", F(&["RXA-20", "RXA-18"])),
    ("REQD001_cmorbid_status_missing", D("cvrs-risk-group-missing")),
    ("REQD001_serology_missing", D("cvrs-serology-missing")),
];

/// `RXA[2]-11.4` → `RXA-11`; `PID-3[2]` → `PID-3`.
fn field_of(location: &str) -> String {
    let Some((seg, rest)) = location.split_once('-') else {
        return location.to_string();
    };
    let seg = seg.split('[').next().unwrap_or(seg);
    let field: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    format!("{seg}-{field}")
}

fn hit(want: &Want, seen: &[Seen]) -> bool {
    seen.iter()
        .filter(|s| matches!(s.severity, Severity::Error | Severity::Warning))
        .any(|s| match want {
            Want::Field(fields) => fields.contains(&field_of(&s.location).as_str()),
            Want::Detection(id) => s.id == *id,
        })
}

fn files(dir: &str, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".hl7"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn testerror_files_are_flagged_on_the_named_field() {
    let h = host(&[("profile", "cvrs")]);
    let paths = files(CORPUS, "vxu-invalid-testerror-");
    assert_eq!(paths.len(), 52);
    let mut hits = 0;
    let mut misses = Vec::new();
    for path in &paths {
        let text = read(path.to_str().unwrap());
        let tag = Message::parse(&text).unwrap().get("ORC-3").to_string();
        let want = &TAGS
            .iter()
            .find(|(t, _)| *t == tag)
            .unwrap_or_else(|| panic!("no tag entry for {tag}"))
            .1;
        let (_, seen) = run(&h, &text, NOW_CVRS);
        if hit(want, &seen) {
            hits += 1;
        } else {
            let errors: Vec<String> = seen
                .iter()
                .filter(|s| s.severity == Severity::Error)
                .map(|s| format!("{}@{}", s.id, s.location))
                .collect();
            misses.push(format!(
                "{} [{tag}]: errors {errors:?}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    println!("corpus: {hits}/{} flagged on the named field", paths.len());
    for m in &misses {
        println!("  miss: {m}");
    }
    // The one seeded error a single message cannot show: an event id
    // (ORC-3) already used by another message, which needs the registry's
    // history.
    assert!(
        misses
            .iter()
            .all(|m| m.contains("[BUSR013_vax_event_id_nodups]")),
        "only {hits} of {} hit:\n{}",
        paths.len(),
        misses.join("\n")
    );
    assert_eq!(hits, paths.len() - 1);
}

#[test]
fn testgood_files_pass_under_cvrs() {
    let h = host(&[("profile", "cvrs")]);
    let paths = files(GOOD, "vxu-valid-testgood-");
    assert!(!paths.is_empty());
    let mut flagged = Vec::new();
    for path in &paths {
        let (rejected, seen) = run(&h, &read(path.to_str().unwrap()), NOW_CVRS);
        if rejected {
            let errors: Vec<String> = seen
                .iter()
                .filter(|s| s.severity == Severity::Error)
                .map(|s| format!("{}@{}", s.id, s.location))
                .collect();
            flagged.push(format!(
                "{}: {errors:?}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    println!(
        "testgood: {} of {} rejected under cvrs",
        flagged.len(),
        paths.len()
    );
    for f in &flagged {
        println!("  {f}");
    }
    assert!(flagged.is_empty(), "{}", flagged.join("\n"));
}
