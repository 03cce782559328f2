//! Profiles: the default blocks only where registries block; `strict-ig`
//! blocks on every IG SHALL; a destination can have its own profile;
//! report-only delivers everything. And the three defects that blocked
//! certification messages: 4-4-2 NDCs, dates of different precision, and
//! expired lots on historical doses.

use crate::common::Mutation::{Drop, Set};
use crate::common::{NIST, NOW_NIST, Seen, host, mutate, read, run, run_texts, run_with};
use izhub_plugin::Severity;
use validate_iz::detections::{
    DETECTIONS, IIS_PRACTICE_DEPARTURES, IIS_PRACTICE_ERRORS, Level, Profile, find,
    iis_practice_reason, markdown,
};

/// A real Michigan MCIR VXU from AIRA's samples: RXA-2 = 999, no MSH-21.
const MCIR: &str = "../../samples/messages/vxu/vxu-mcir-dtap-hepb-ipv.hl7";
const NOW_MCIR: &str = "2014-03-17T16:00:00.000Z";

fn errors(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.severity == Severity::Error)
        .map(|s| format!("{}@{}", s.id, s.location))
        .collect()
}

#[test]
fn mcir_sample_is_delivered_with_a_warning_by_default_and_blocked_by_strict_ig() {
    let mcir = read(MCIR);
    let (rejected, seen) = run(&host(&[]), &mcir, NOW_MCIR);
    assert!(!rejected, "blocked by default: {:?}", errors(&seen));
    assert!(
        seen.iter().any(
            |s| s.id == "vaccination-sub-id-counter-invalid" && s.severity == Severity::Warning
        ),
        "RXA-2 = 999 is reported as a warning: {seen:?}"
    );
    let (rejected, seen) = run(&host(&[("profile", "strict-ig")]), &mcir, NOW_MCIR);
    assert!(rejected);
    assert!(errors(&seen).contains(&"vaccination-sub-id-counter-invalid@RXA[1]-2".to_string()));
    // `cdc`, the profile's name before there was a choice, still means strict.
    let (rejected, _) = run(&host(&[("profile", "cdc")]), &mcir, NOW_MCIR);
    assert!(rejected);
}

#[test]
fn what_ehrs_often_leave_out_warns_by_default_and_blocks_under_strict_ig() {
    let nist = read(NIST);
    for (what, mutations) in [
        ("lot number", &[Set("RXA-15", ""), Set("RXA-16", "")][..]),
        ("route", &[Set("RXR-1", "")][..]),
        ("units", &[Set("RXA-7", "")][..]),
        ("NK1 relationship", &[Set("NK1-3", "")][..]),
        ("ORC-3", &[Set("ORC-3", "")][..]),
        ("RXA-2 = 999", &[Set("RXA-2", "999")][..]),
        ("manufacturer", &[Set("RXA-17", "")][..]),
    ] {
        let msg = mutate(&nist, mutations);
        let (rejected, seen) = run(&host(&[]), &msg, NOW_NIST);
        assert!(!rejected, "{what}: blocked by default: {:?}", errors(&seen));
        assert!(
            seen.iter().any(|s| s.severity == Severity::Warning),
            "{what}: no warning"
        );
        let (rejected, _) = run(&host(&[("profile", "strict-ig")]), &msg, NOW_NIST);
        assert!(rejected, "{what}: not blocked under strict-ig");
    }
}

#[test]
fn what_registries_reject_still_blocks_by_default() {
    let nist = read(NIST);
    for (id, mutations) in [
        ("patient-birth-date-missing", &[Set("PID-7", "")][..]),
        ("patient-name-family-missing", &[Set("PID-5.1", "")][..]),
        ("patient-id-missing", &[Set("PID-3", "")][..]),
        ("message-date-missing", &[Set("MSH-7", "")][..]),
        (
            "vaccination-missing",
            &[Drop("RXA"), Drop("RXR"), Drop("OBX")][..],
        ),
    ] {
        let (rejected, seen) = run(&host(&[]), &mutate(&nist, mutations), NOW_NIST);
        assert!(rejected, "{id}: delivered");
        assert!(
            seen.iter()
                .any(|s| s.id == id && s.severity == Severity::Error),
            "{id}: {seen:?}"
        );
    }
}

/// A registry rejects one bad dose and keeps the patient and the other
/// doses: by default such an error is a warning that says so and the
/// message is delivered; `strict-ig` still blocks it.
#[test]
fn a_dose_level_error_is_delivered_with_a_warning_by_default_and_blocks_under_strict_ig() {
    let nist = read(NIST);
    for (id, mutations) in [
        (
            "vaccination-date-before-birth",
            &[Set("RXA-3", "20070705")][..],
        ),
        ("vaccination-code-missing", &[Set("RXA-5", "")][..]),
        (
            "vaccination-cvx-unrecognized",
            &[Set("RXA-5", "777^Nothing^CVX")][..],
        ),
        (
            "vaccination-action-code-unrecognized",
            &[Set("RXA-21", "X")][..],
        ),
    ] {
        let msg = mutate(&nist, mutations);
        let (rejected, seen, texts) = run_texts(&host(&[]), &msg, NOW_NIST, &[]);
        assert!(!rejected, "{id}: blocked by default: {:?}", errors(&seen));
        let at = seen
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id}: not reported: {seen:?}"));
        assert_eq!(seen[at].severity, Severity::Warning, "{id}");
        assert!(seen[at].location.starts_with("RXA[1]-"), "{id}: {seen:?}");
        assert!(
            texts[at].starts_with("The registry is expected to reject this dose: "),
            "{id}: {}",
            texts[at]
        );
        assert!(find(id).unwrap().rejects_dose(Profile::IisPractice));
        let (rejected, seen) = run(&host(&[("profile", "strict-ig")]), &msg, NOW_NIST);
        assert!(rejected, "{id}: delivered under strict-ig");
        assert!(errors(&seen).iter().any(|e| e.starts_with(id)), "{seen:?}");
        // A configured level still wins.
        let (rejected, _) = run(
            &host(&[(&format!("severity.{id}"), "error")]),
            &msg,
            NOW_NIST,
        );
        assert!(rejected, "{id}: severity.{id} = error");
    }
}

#[test]
fn a_4_4_2_ndc_is_an_ndc() {
    // Merck's MMR II as printed on the vial, 10 digits in the 4-4-2 form.
    let msg = mutate(
        &read(NIST),
        &[
            Set("RXA-5", "03^MMR^CVX^0006-4681-00^MMR II^NDC"),
            Set("RXA-17", "MSD^Merck and Co., Inc.^MVX"),
        ],
    );
    for profile in ["iis-practice", "strict-ig"] {
        let (rejected, seen) = run(&host(&[("profile", profile)]), &msg, NOW_NIST);
        assert!(!rejected, "{profile}: {:?}", errors(&seen));
        assert!(
            !seen.iter().any(|s| s.id.starts_with("vaccination-ndc")),
            "{profile}: {seen:?}"
        );
    }
    // The same NDC in the other forms the crosswalks use.
    for ndc in ["00006-4681-00", "00006468100"] {
        let msg = mutate(&read(NIST), &[Set("RXA-5", "03^MMR^CVX")]);
        let msg = mutate(&msg, &[Set("RXA-5.4", ndc), Set("RXA-5.6", "NDC")]);
        let (_, seen) = run(&host(&[]), &msg, NOW_NIST);
        assert!(
            !seen.iter().any(|s| s.id.starts_with("vaccination-ndc")),
            "{ndc}: {seen:?}"
        );
    }
    // Not an NDC in any form: still flagged.
    let msg = mutate(
        &read(NIST),
        &[Set("RXA-5", "03^MMR^CVX^0006468100^MMR II^NDC")],
    );
    let (_, seen) = run(&host(&[]), &msg, NOW_NIST);
    assert!(
        seen.iter()
            .any(|s| s.id == "vaccination-ndc-invalid-with-cvx"),
        "{seen:?}"
    );
    // Without a CVX code the NDC is the vaccine: the registry rejects a dose
    // whose NDC it does not know, so by default it is delivered with a
    // warning that says so.
    let only_ndc = mutate(&read(NIST), &[Set("RXA-5", "99999-9999-99^Mystery^NDC")]);
    let (rejected, seen) = run(&host(&[]), &only_ndc, NOW_NIST);
    assert!(
        !rejected
            && seen
                .iter()
                .any(|s| s.id == "vaccination-ndc-unrecognized" && s.severity == Severity::Warning),
        "{seen:?}"
    );
    // With one, the unknown NDC warns and the CVX code names the vaccine.
    let with_cvx = mutate(
        &read(NIST),
        &[Set("RXA-5", "140^Flu^CVX^99999-9999-99^Mystery^NDC")],
    );
    let (rejected, seen) = run(&host(&[]), &with_cvx, NOW_NIST);
    assert!(
        !rejected
            && seen
                .iter()
                .any(|s| s.id == "vaccination-ndc-unrecognized-with-cvx"),
        "{seen:?}"
    );
}

#[test]
fn a_birth_time_and_a_dose_that_day_are_the_same_day() {
    let msg = mutate(
        &read(NIST),
        &[
            Set("MSH-7", "20131101120000-0500"),
            Set("PID-7", "201311011105"),
            Set("RXA-3", "20131101"),
            Set("RXA-16", "20141101"),
        ],
    );
    for profile in ["iis-practice", "strict-ig"] {
        let (rejected, seen) = run(&host(&[("profile", profile)]), &msg, NOW_NIST);
        assert!(!rejected, "{profile}: {:?}", errors(&seen));
        assert!(
            !seen.iter().any(|s| s.id == "vaccination-date-before-birth"
                || s.id == "patient-birth-date-after-message"),
            "{seen:?}"
        );
    }
    // The day before birth is still before birth.
    let before = mutate(&msg, &[Set("RXA-3", "20131031")]);
    let (rejected, seen) = run(&host(&[("profile", "strict-ig")]), &before, NOW_NIST);
    assert!(rejected && seen.iter().any(|s| s.id == "vaccination-date-before-birth"));
    // A lot expiring in a month is good through that month.
    let month = mutate(&msg, &[Set("RXA-16", "201311")]);
    let (_, seen) = run(&host(&[("profile", "strict-ig")]), &month, NOW_NIST);
    assert!(
        !seen.iter().any(|s| s.id.starts_with("vaccination-expir")),
        "{seen:?}"
    );
    let expired = mutate(&msg, &[Set("RXA-16", "201310")]);
    let (_, seen) = run(&host(&[("profile", "strict-ig")]), &expired, NOW_NIST);
    assert!(
        seen.iter()
            .any(|s| s.id == "vaccination-expired-when-given"),
        "{seen:?}"
    );
}

#[test]
fn an_expired_lot_on_a_historical_dose_is_a_warning_in_every_profile() {
    let msg = mutate(
        &read(NIST),
        &[
            Set(
                "RXA-9",
                "01^Historical information - source unspecified^NIP001",
            ),
            Set("RXA-16", "20120101"),
        ],
    );
    for profile in ["iis-practice", "strict-ig", "cvrs"] {
        let (rejected, seen) = run(&host(&[("profile", profile)]), &msg, NOW_NIST);
        assert!(
            !seen
                .iter()
                .any(|s| s.id == "vaccination-expired-when-given"),
            "{profile}: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|s| s.id == "vaccination-expired-when-given-historical"
                    && s.severity == Severity::Warning),
            "{profile}: {seen:?}"
        );
        if profile != "cvrs" {
            assert!(!rejected, "{profile}: {:?}", errors(&seen));
        }
    }
}

#[test]
fn report_only_delivers_everything_and_says_what_would_block() {
    let msg = mutate(&read(NIST), &[Set("PID-7", ""), Set("RXA-15", "")]);
    for profile in ["iis-practice", "strict-ig"] {
        let h = host(&[("mode", "report-only"), ("profile", profile)]);
        let (rejected, seen, texts) = run_texts(&h, &msg, NOW_NIST, &[]);
        assert!(!rejected, "{profile}");
        assert!(seen.iter().all(|s| s.severity != Severity::Error));
        let birth = texts
            .iter()
            .find(|t| t.ends_with("[patient-birth-date-missing]"))
            .unwrap();
        assert!(birth.starts_with("Would be rejected: "), "{birth}");
        let lot = texts
            .iter()
            .find(|t| t.ends_with("[vaccination-lot-missing]"))
            .unwrap();
        assert_eq!(
            lot.starts_with("Would be rejected: "),
            profile == "strict-ig",
            "{lot}"
        );
    }
}

#[test]
fn a_destination_can_have_its_own_profile() {
    let mcir = read(MCIR);
    let h = host(&[
        ("destination_profiles.mi-iis", "strict-ig"),
        ("destination_profiles.ma-iis", "iis-practice"),
    ]);
    let (rejected, _) = run_with(&h, &mcir, NOW_MCIR, &[("destination", "mi-iis")]);
    assert!(rejected, "mi-iis is strict");
    let (rejected, _) = run_with(&h, &mcir, NOW_MCIR, &[("destination", "ma-iis")]);
    assert!(!rejected);
    let (rejected, _) = run_with(&h, &mcir, NOW_MCIR, &[("destination", "wa-iis")]);
    assert!(
        !rejected,
        "a destination without a profile gets the plugin's"
    );
    let strict = host(&[
        ("profile", "strict-ig"),
        ("destination_profiles.ma-iis", "iis-practice"),
    ]);
    let (rejected, _) = run_with(&strict, &mcir, NOW_MCIR, &[("destination", "ma-iis")]);
    assert!(
        !rejected,
        "the destination's profile wins over the plugin's"
    );
    let (rejected, _) = run_with(&strict, &mcir, NOW_MCIR, &[]);
    assert!(rejected);
    // A typo in a profile name falls back to the default, never blocks all.
    let typo = host(&[("profile", "stirct")]);
    let (rejected, _) = run(&typo, &mcir, NOW_MCIR);
    assert!(!rejected);
}

#[test]
fn the_default_profile_blocks_only_on_its_listed_detections() {
    for (id, why) in IIS_PRACTICE_ERRORS {
        assert!(find(id).is_some(), "{id} is not a detection");
        assert!(!why.is_empty());
    }
    for (id, why) in IIS_PRACTICE_DEPARTURES {
        assert!(find(id).is_some(), "{id} is not a detection");
        assert!(iis_practice_reason(id).is_none() && !why.is_empty(), "{id}");
    }
    let blocking: Vec<&str> = DETECTIONS
        .iter()
        .filter(|d| d.level(Profile::IisPractice) == Level::Error)
        .map(|d| d.id)
        .collect();
    let dose_level = IIS_PRACTICE_ERRORS
        .iter()
        .filter(|(id, _)| find(id).is_some_and(|d| d.rejects_dose(Profile::IisPractice)))
        .count();
    assert!(dose_level >= 10, "{dose_level}");
    assert_eq!(blocking.len() + dose_level, IIS_PRACTICE_ERRORS.len());
    assert!(blocking.iter().all(|id| iis_practice_reason(id).is_some()));
    // Everything strict-ig reports, the default reports too.
    for d in DETECTIONS {
        assert_eq!(
            d.level(Profile::IisPractice) == Level::Ignore,
            d.strict == Level::Ignore,
            "{}",
            d.id
        );
    }
    let strict = DETECTIONS
        .iter()
        .filter(|d| d.strict == Level::Error)
        .count();
    println!(
        "detections: {}; blocking: iis-practice {}, strict-ig {strict}",
        DETECTIONS.len(),
        blocking.len()
    );
    assert!(blocking.len() < strict);
}

/// `docs/detections.md` is generated from the table; this keeps them the
/// same. `IZHUB_BLESS=1` rewrites it.
#[test]
fn the_docs_table_matches_the_code() {
    let path = "../../docs/detections.md";
    let want = markdown();
    if std::env::var_os("IZHUB_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is out of date: run IZHUB_BLESS=1 cargo test -p validate-iz --test profiles"
    );
    for d in DETECTIONS {
        assert!(have.contains(&format!("| `{}` |", d.id)), "{}", d.id);
    }
}
