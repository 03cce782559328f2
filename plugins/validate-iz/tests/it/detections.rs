//! One positive and one negative test per detection: a mutation of a
//! conformant base message makes the detection fire; the base does not.

use std::collections::BTreeSet;

use crate::common::Mutation::{Append, Drop, Dup, Set};
use crate::common::{CVRS_GOOD, Mutation, NIST, NOW_CVRS, NOW_NIST, host, mutate, read, run};
use izhub_plugin::Severity;
use validate_iz::detections::DETECTIONS;

/// Which base message (and profile) a case starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// The NIST VXU, default profile.
    Nist,
    /// A CVRS test message, `profile = cvrs`.
    Cvrs,
}

use Base::{Cvrs as C, Nist as N};

const REFUSED: &[Mutation] = &[Set("RXA-20", "RE")];

/// Detections that fire on the NIST message as published (warnings only);
/// their negative case uses the NIST message with those points repaired.
const FIRES_ON_NIST: &[&str] = &[
    "message-profile-missing",
    "message-responsible-org-missing",
    "message-date-imprecise",
    "vaccination-mvx-inactive",
    "vaccination-date-after-message",
];

const REPAIRS: &[Mutation] = &[
    Set("MSH-21", "Z22^CDCPHINVS"),
    Set("MSH-22", "X68^^^^^NIST-AA-1^XX^^^X68"),
    Set("MSH-7", "20120814082200-0500"),
    Set("RXA-17", "PMC^Sanofi Pasteur^MVX"),
];

#[rustfmt::skip]
const CASES: &[(&str, Base, &[Mutation])] = &[
    ("message-type-missing", N, &[Set("MSH-9", "")]),
    ("message-type-unsupported", N, &[Set("MSH-9", "ADT^A04^ADT_A01")]),
    ("message-trigger-unsupported", N, &[Set("MSH-9", "VXU^A04^VXU_V04")]),
    ("message-structure-missing", N, &[Set("MSH-9", "VXU^V04")]),
    ("message-structure-invalid", N, &[Set("MSH-9", "VXU^V04^VXU_V05")]),
    ("message-processing-id-missing", N, &[Set("MSH-11", "")]),
    ("message-processing-id-invalid", N, &[Set("MSH-11", "X")]),
    ("message-version-missing", N, &[Set("MSH-12", "")]),
    ("message-version-unsupported", N, &[Set("MSH-12", "2.3.1")]),
    ("message-profile-missing", N, &[Set("MSH-21", "")]),
    ("message-profile-invalid", N, &[Set("MSH-21", "Z34^CDCPHINVS")]),
    ("message-sending-facility-missing", N, &[Set("MSH-4", "")]),
    ("message-sending-application-missing", N, &[Set("MSH-3", "")]),
    ("message-receiving-facility-missing", N, &[Set("MSH-6", "")]),
    ("message-date-missing", N, &[Set("MSH-7", "")]),
    ("message-date-invalid", N, &[Set("MSH-7", "20121301")]),
    ("message-date-in-future", N, &[Set("MSH-7", "20300101120000-0500")]),
    ("message-date-imprecise", N, &[Set("MSH-7", "201207010822")]),
    ("message-control-id-missing", N, &[Set("MSH-10", "")]),
    ("message-accept-ack-type-invalid", N, &[Set("MSH-15", "XX")]),
    ("message-app-ack-type-invalid", N, &[Set("MSH-16", "XX")]),
    ("message-responsible-org-missing", N, &[Set("MSH-22", "")]),
    ("patient-segment-missing", N, &[Drop("PID")]),
    ("patient-segment-repeated", N, &[Dup("PID")]),
    ("patient-set-id-invalid", N, &[Set("PID-1", "2")]),
    ("patient-id-missing", N, &[Set("PID-3", "")]),
    ("patient-id-type-missing", N, &[Set("PID-3", "D26376273^^^NIST MPI")]),
    ("patient-id-type-unrecognized", N, &[Set("PID-3.5", "ZZ")]),
    ("patient-id-authority-missing", N, &[Set("PID-3.4", "")]),
    ("patient-id-medical-record-missing", N, &[Set("PID-3.5", "PI")]),
    ("patient-name-missing", N, &[Set("PID-5", "")]),
    ("patient-name-family-missing", N, &[Set("PID-5.1", "")]),
    ("patient-name-given-missing", N, &[Set("PID-5.2", "")]),
    ("patient-name-type-missing", N, &[Set("PID-5.7", "")]),
    ("patient-name-type-unrecognized", N, &[Set("PID-5.7", "Q")]),
    ("patient-name-legal-missing", N, &[Set("PID-5.7", "A")]),
    ("patient-name-has-digits", N, &[Set("PID-5.2", "Madelynn2")]),
    ("patient-name-placeholder", N, &[Set("PID-5.2", "Baby")]),
    ("patient-birth-date-missing", N, &[Set("PID-7", "")]),
    ("patient-birth-date-invalid", N, &[Set("PID-7", "200707")]),
    ("patient-birth-date-in-future", N, &[Set("PID-7", "20300101")]),
    ("patient-birth-date-too-old", N, &[Set("PID-7", "18800101")]),
    ("patient-birth-date-after-message", N, &[Set("PID-7", "20120702")]),
    ("patient-sex-missing", N, &[Set("PID-8", "")]),
    ("patient-sex-unrecognized", N, &[Set("PID-8", "X")]),
    ("patient-race-missing", N, &[Set("PID-10", "")]),
    ("patient-race-unrecognized", N, &[Set("PID-10", "9999-9^Bogus^CDCREC")]),
    ("patient-race-deprecated", N, &[Set("PID-10", "W^White^HL70005")]),
    ("patient-ethnicity-missing", N, &[Set("PID-22", "")]),
    ("patient-ethnicity-unrecognized", N, &[Set("PID-22", "9999-9^Bogus^CDCREC")]),
    ("patient-ethnicity-deprecated", N, &[Set("PID-22", "H^Hispanic^HL70189")]),
    ("patient-address-missing", N, &[Set("PID-11", "")]),
    ("patient-address-street-missing", N, &[Set("PID-11.1", "")]),
    ("patient-address-city-missing", N, &[Set("PID-11.3", "")]),
    ("patient-address-state-missing", N, &[Set("PID-11.4", "")]),
    ("patient-address-state-invalid", N, &[Set("PID-11.4", "XX")]),
    ("patient-address-zip-missing", N, &[Set("PID-11.5", "")]),
    ("patient-address-zip-invalid", N, &[Set("PID-11.5", "0245")]),
    ("patient-address-type-unrecognized", N, &[Set("PID-11.7", "ZZ")]),
    ("patient-address-county-invalid", N, &[Set("PID-11.9", "ABC")]),
    ("patient-address-county-state-mismatch", N, &[Set("PID-11.9", "26001")]),
    ("patient-address-county-missing", C, &[Set("PID-11.9", "")]),
    ("patient-multiple-birth-indicator-invalid", N, &[Set("PID-24", "X")]),
    ("patient-birth-order-invalid", N, &[Set("PID-24", "Y"), Set("PID-25", "A")]),
    ("patient-birth-order-without-multiple-birth", N, &[Set("PID-25", "2")]),
    ("patient-birth-order-missing", N, &[Set("PID-24", "Y")]),
    ("patient-death-indicator-invalid", N, &[Set("PID-30", "X")]),
    ("patient-death-date-invalid", N, &[Set("PID-29", "2013"), Set("PID-30", "Y")]),
    ("patient-death-date-without-indicator", N, &[Set("PID-29", "20130101")]),
    ("patient-death-indicator-without-date", N, &[Set("PID-30", "Y")]),
    ("patient-death-date-before-birth", N, &[Set("PID-29", "20060101"), Set("PID-30", "Y")]),
    ("patient-death-date-in-future", N, &[Set("PID-29", "20300101"), Set("PID-30", "Y")]),
    ("patient-publicity-code-unrecognized", N, &[Set("PD1-11", "99^Bogus^HL70215")]),
    ("patient-protection-indicator-invalid", N, &[Set("PD1-12", "X")]),
    ("patient-registry-status-unrecognized", N, &[Set("PD1-16", "Z")]),
    ("next-of-kin-relationship-missing", N, &[Set("NK1-3", "")]),
    ("next-of-kin-relationship-unrecognized", N, &[Set("NK1-3", "ZZZ^Bogus^HL70063")]),
    ("next-of-kin-relationship-self", N, &[Set("NK1-3", "SEL^Self^HL70063")]),
    ("next-of-kin-name-missing", N, &[Set("NK1-2", "")]),
    ("order-segment-missing", N, &[Drop("ORC")]),
    ("order-filler-number-missing", N, &[Set("ORC-3", "")]),
    ("order-control-invalid", N, &[Set("ORC-1", "OK")]),
    ("vaccination-missing", N, &[Drop("ORC"), Drop("RXA"), Drop("RXR"), Drop("OBX")]),
    ("vaccination-sub-id-invalid", N, &[Set("RXA-1", "1")]),
    ("vaccination-sub-id-counter-invalid", N, &[Set("RXA-2", "999")]),
    ("vaccination-date-missing", N, &[Set("RXA-3", "")]),
    ("vaccination-date-invalid", N, &[Set("RXA-3", "201208")]),
    ("vaccination-date-in-future", N, &[Set("RXA-3", "20300101")]),
    ("vaccination-date-before-birth", N, &[Set("RXA-3", "20060101")]),
    ("vaccination-date-after-death", N, &[Set("PID-29", "20120101"), Set("PID-30", "Y")]),
    ("vaccination-date-after-message", N, &[Set("RXA-3", "20120901")]),
    ("vaccination-date-after-entry", N, &[Set("RXA-22", "20120801")]),
    ("vaccination-end-date-mismatch", N, &[Set("RXA-4", "20120815")]),
    ("vaccination-code-missing", N, &[Set("RXA-5", "")]),
    ("vaccination-code-system-missing", N, &[Set("RXA-5", "140^Influenza")]),
    ("vaccination-cvx-invalid", N, &[Set("RXA-5", "XXX^Bogus^CVX")]),
    ("vaccination-cvx-unrecognized", N, &[Set("RXA-5", "777^Bogus^CVX")]),
    ("vaccination-cvx-inactive", N, &[Set("RXA-5", "88^Influenza, unspecified^CVX")]),
    ("vaccination-cvx-inactive-historical", N, &[Set("RXA-5", "88^Influenza, unspecified^CVX"), Set("RXA-9", "01^Historical^NIP001")]),
    ("vaccination-cvx-never-active", N, &[Set("RXA-5", "117^VZIG (IND)^CVX")]),
    ("vaccination-cvx-non-us", N, &[Set("RXA-5", "170^DTAP/IPV/HIB - non-US^CVX")]),
    ("vaccination-cvx-unspecified", N, &[Set("RXA-5", "88^Influenza, unspecified^CVX")]),
    ("vaccination-cvx-no-vaccine-not-na", N, &[Set("RXA-5", "998^No vaccine administered^CVX")]),
    ("vaccination-ndc-invalid", N, &[Set("RXA-5", "4928-042-50^Flu^NDC")]),
    ("vaccination-ndc-invalid-with-cvx", N, &[Set("RXA-5", "140^Influenza^CVX^4928-042-50^Flu^NDC")]),
    ("vaccination-ndc-unrecognized", N, &[Set("RXA-5", "99999-9999-99^Flu^NDC")]),
    ("vaccination-ndc-unrecognized-with-cvx", N, &[Set("RXA-5", "140^Influenza^CVX^99999-9999-99^Flu^NDC")]),
    ("vaccination-ndc-cvx-mismatch", N, &[Set("RXA-5", "140^Influenza^CVX^00005-0100-01^Trumenba^NDC")]),
    ("vaccination-ndc-out-of-use", N, &[Set("RXA-5", "100^PCV7^CVX^00005-1970-49^Prevnar^NDC")]),
    ("vaccination-amount-missing", N, &[Set("RXA-6", "")]),
    ("vaccination-amount-invalid", N, &[Set("RXA-6", "half")]),
    ("vaccination-amount-not-given", N, &[Set("RXA-6", "999")]),
    ("vaccination-units-missing", N, &[Set("RXA-7", "")]),
    ("vaccination-information-source-missing", N, &[Set("RXA-9", "")]),
    ("vaccination-information-source-unrecognized", N, &[Set("RXA-9", "09^Bogus^NIP001")]),
    ("vaccination-information-source-not-allowed", N, &[Set("RXA-20", "NA")]),
    ("vaccination-provider-missing", N, &[Set("RXA-10", "")]),
    ("vaccination-location-missing", N, &[Set("RXA-11", "")]),
    ("vaccination-location-name-missing", C, &[Set("RXA-11.4", "&999999")]),
    ("vaccination-location-type-missing", C, &[Set("RXA-11.6", "")]),
    ("vaccination-location-state-missing", C, &[Set("RXA-11.12", "")]),
    ("vaccination-location-state-invalid", C, &[Set("RXA-11.12", "ZZ")]),
    ("vaccination-location-zip-invalid", C, &[Set("RXA-11.13", "1529")]),
    ("vaccination-location-county-missing", C, &[Set("RXA-11.16", "")]),
    ("vaccination-location-county-invalid", C, &[Set("RXA-11.16", "ABCDE")]),
    ("vaccination-location-county-state-mismatch", C, &[Set("RXA-11.16", "49053")]),
    ("vaccination-lot-missing", N, &[Set("RXA-15", "")]),
    ("vaccination-lot-invalid", N, &[Set("RXA-15", "N/A")]),
    ("vaccination-expiration-missing", N, &[Set("RXA-16", "")]),
    ("vaccination-expiration-invalid", N, &[Set("RXA-16", "2012")]),
    ("vaccination-expired-when-given", N, &[Set("RXA-16", "20120801")]),
    ("vaccination-expired-when-given-historical", N, &[Set("RXA-9", "01^Historical information^NIP001"), Set("RXA-16", "20120801")]),
    ("vaccination-manufacturer-missing", N, &[Set("RXA-17", "")]),
    ("vaccination-mvx-invalid", N, &[Set("RXA-17", "AAAA^Bogus^MVX")]),
    ("vaccination-mvx-unrecognized", N, &[Set("RXA-17", "ZZZ^Bogus^MVX")]),
    ("vaccination-mvx-inactive", N, &[Set("RXA-17", "CSL^CSL Behring^MVX")]),
    ("vaccination-mvx-ndc-mismatch", N, &[Set("RXA-5", "162^MenB^CVX^00005-0100-01^Trumenba^NDC")]),
    ("vaccination-refusal-reason-without-refusal", N, &[Set("RXA-18", "00^Parental decision^NIP002")]),
    ("vaccination-refusal-reason-missing", N, &[Set("RXA-20", "RE")]),
    ("vaccination-refusal-reason-unrecognized", N, &[Set("RXA-18", "99^Bogus^NIP002")]),
    ("vaccination-completion-status-missing", N, &[Set("RXA-20", "")]),
    ("vaccination-completion-status-unrecognized", N, &[Set("RXA-20", "XX")]),
    ("vaccination-action-code-missing", N, &[Set("RXA-21", "")]),
    ("vaccination-action-code-unrecognized", N, &[Set("RXA-21", "Z")]),
    ("vaccination-route-segment-missing", N, &[Drop("RXR")]),
    ("vaccination-route-repeated", N, &[Dup("RXR")]),
    ("vaccination-route-missing", N, &[Set("RXR-1", "")]),
    ("vaccination-route-unrecognized", N, &[Set("RXR-1", "C99999^Bogus^NCIT")]),
    ("vaccination-route-code-system-mismatch", N, &[Set("RXR-1", "IM^Intramuscular^NCIT")]),
    ("vaccination-site-missing", N, &[Set("RXR-2", "")]),
    ("vaccination-site-unrecognized", N, &[Set("RXR-2", "ZZ^Bogus^HL70163")]),
    ("observation-identifier-missing", N, &[Set("OBX[2]-3", "")]),
    ("observation-identifier-unrecognized", N, &[Append("OBX|5|CE|12345-6^Other^LN|3|X^Y^Z||||||F")]),
    ("observation-value-missing", N, &[Set("OBX[1]-5", "")]),
    ("observation-value-type-missing", N, &[Set("OBX[2]-2", "")]),
    ("observation-value-type-unrecognized", N, &[Set("OBX[2]-2", "XX")]),
    ("observation-value-type-mismatch", N, &[Set("OBX[3]-5", "notadate")]),
    ("observation-value-type-wrong", N, &[Set("OBX[3]-2", "CE")]),
    ("observation-result-status-missing", N, &[Set("OBX[1]-11", "")]),
    ("observation-sub-id-missing", N, &[Set("OBX[1]-4", "")]),
    ("vfc-eligibility-missing", N, &[Set("OBX[1]-3", "30963-3^Vaccine funding source^LN"), Set("OBX[1]-5", "VXC1^Federal funds^CDCPHINVS")]),
    ("vfc-eligibility-unrecognized", N, &[Set("OBX[1]-5", "V99^Bogus^HL70064")]),
    ("vfc-eligibility-invalid", N, &[Set("OBX[1]-5", "V00^Unknown^HL70064")]),
    ("vfc-eligibility-deprecated", N, &[Set("OBX[1]-5", "V06^State^HL70064")]),
    ("vfc-eligibility-on-historical", N, &[Set("RXA-9", "01^Historical^NIP001")]),
    ("vfc-observation-date-missing", N, &[Set("OBX[1]-14", "")]),
    ("vfc-observation-date-invalid", N, &[Set("OBX[1]-14", "2012AB")]),
    ("vfc-observation-method-missing", N, &[Set("OBX[1]-17", "")]),
    ("vfc-observation-method-invalid", N, &[Set("OBX[1]-17", "VXC99^Bogus^CDCPHINVS")]),
    ("funding-source-unrecognized", N, &[Set("OBX[1]-3", "30963-3^Vaccine funding source^LN"), Set("OBX[1]-5", "XYZ^Bogus^CDCPHINVS")]),
    ("vis-document-unrecognized", N, &[Set("OBX[2]-3", "69764-9^Document type^LN"), Set("OBX[2]-5", "123^Bogus^cdcgs1vis")]),
    ("vis-vaccine-type-unrecognized", N, &[Set("OBX[2]-5", "777^Bogus^CVX")]),
    ("vis-presented-date-missing", N, &[Set("OBX[4]-4", "3")]),
    ("vis-published-date-missing", N, &[Set("OBX[3]-4", "3")]),
    ("vis-date-unpaired", N, &[Set("OBX[2]-4", "5")]),
    ("vis-presented-before-published", N, &[Set("OBX[4]-5", "20120601")]),
    ("vis-missing", N, &[Set("OBX[2]-3", "30963-3^Vaccine funding source^LN"), Set("OBX[2]-5", "VXC1^Federal funds^CDCPHINVS")]),
    ("cvrs-extract-type-missing", C, &[Set("MSH-8", "")]),
    ("cvrs-extract-type-invalid", C, &[Set("MSH-8", "Q")]),
    ("cvrs-pprl-id-not-allowed", C, &[Set("PID-3", "9~pprl")]),
    ("cvrs-name-not-redacted", C, &[Set("PID-5.1", "Smith")]),
    ("cvrs-address-not-redacted", C, &[Set("PID-11.3", "Lansing")]),
    ("cvrs-dose-number-missing", C, &[Set("OBX[3]-3", "99999-9^Other^LN")]),
    ("cvrs-series-status-missing", C, &[Set("OBX[2]-3", "99999-9^Other^LN")]),
    ("cvrs-risk-group-missing", C, &[Set("OBX[1]-3", "99999-9^Other^LN")]),
    ("cvrs-serology-missing", C, &[Set("OBX[4]-3", "99999-9^Other^LN")]),
    ("cvrs-date-precision", C, &[Set("PID-7", "201508260000")]),
    ("refusal-with-ndc", C, REFUSED),
    ("refusal-with-manufacturer", C, REFUSED),
    ("refusal-with-lot-number", C, REFUSED),
    ("refusal-with-expiration-date", C, REFUSED),
    ("refusal-with-route", C, REFUSED),
    ("refusal-with-site", C, REFUSED),
    ("refusal-with-dose-number", C, REFUSED),
    ("refusal-with-series-status", C, REFUSED),
];

/// Runs a message with the detection forced to error level; true when it fired.
fn fires(id: &str, base: Base, hl7: &str) -> bool {
    let key = format!("severity.{id}");
    let (profile, now) = match base {
        Base::Nist => ("cdc", NOW_NIST),
        Base::Cvrs => ("cvrs", NOW_CVRS),
    };
    let h = host(&[("profile", profile), (key.as_str(), "error")]);
    let (_, seen) = run(&h, hl7, now);
    seen.iter().any(|s| s.id == id)
}

#[test]
fn every_detection_has_a_case() {
    let ids: BTreeSet<&str> = DETECTIONS.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), DETECTIONS.len(), "duplicate detection ids");
    for d in DETECTIONS {
        assert!(
            !d.id.contains('.')
                && d.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{} is not kebab-case",
            d.id
        );
    }
    let cased: BTreeSet<&str> = CASES.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(cased.len(), CASES.len(), "a detection has two cases");
    let untested: Vec<&&str> = ids.difference(&cased).collect();
    assert!(
        untested.is_empty(),
        "detections without a case: {untested:?}"
    );
    let unknown: Vec<&&str> = cased.difference(&ids).collect();
    assert!(
        unknown.is_empty(),
        "cases for unknown detections: {unknown:?}"
    );
    assert!(DETECTIONS.len() >= 120);
}

#[test]
fn positive_and_negative_cases() {
    let nist = read(NIST);
    let repaired = mutate(&nist, REPAIRS);
    let cvrs = read(CVRS_GOOD);
    let mut failures = Vec::new();
    for (id, base, mutations) in CASES {
        let start = match base {
            Base::Nist => &nist,
            Base::Cvrs => &cvrs,
        };
        let negative = if FIRES_ON_NIST.contains(id) {
            &repaired
        } else {
            start
        };
        let mutated = mutate(start, mutations);
        if !fires(id, *base, &mutated) {
            failures.push(format!("{id}: did not fire on its mutation"));
        }
        if fires(id, *base, negative) {
            failures.push(format!("{id}: fired on the base message"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nist_message_has_no_errors() {
    let h = host(&[]);
    let (rejected, seen) = run(&h, &read(NIST), NOW_NIST);
    let errors: Vec<_> = seen
        .iter()
        .filter(|s| s.severity == Severity::Error)
        .collect();
    assert!(!rejected && errors.is_empty(), "errors: {errors:?}");
    let fired: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let expected: BTreeSet<&str> = FIRES_ON_NIST.iter().copied().collect();
    assert_eq!(fired, expected);
    let (rejected, seen) = run(&h, &mutate(&read(NIST), REPAIRS), NOW_NIST);
    assert!(!rejected && seen.is_empty(), "{seen:?}");
}

#[test]
fn nist_message_without_clock_or_tables() {
    let (rejected, _) = run(&crate::common::host(&[]), &read(NIST), "");
    assert!(!rejected);
    let bare = izhub_plugin::testing::TestHost::new();
    let (rejected, seen) = run(&bare, &read(NIST), "not a date");
    assert!(!rejected, "{seen:?}");
}

#[test]
fn severity_override_and_verdict() {
    let nist = read(NIST);
    let h = host(&[("severity.message-profile-missing", "error")]);
    let (rejected, seen) = run(&h, &nist, NOW_NIST);
    assert!(rejected);
    // A rejection carries the warnings too.
    assert!(seen.iter().any(|s| s.severity == Severity::Warning));
    let h = host(&[("severity.patient-birth-date-missing", "ignore")]);
    let (rejected, _) = run(&h, &mutate(&nist, &[Set("PID-7", "")]), NOW_NIST);
    assert!(!rejected);
    let h = host(&[("severity.message-profile-missing", "ignore")]);
    let (_, seen) = run(&h, &nist, NOW_NIST);
    assert!(!seen.iter().any(|s| s.id == "message-profile-missing"));
}

#[test]
fn locations_and_codes() {
    let h = host(&[]);
    let nist = read(NIST);
    let (rejected, seen) = run(&h, &mutate(&nist, &[Set("PID-7", "")]), NOW_NIST);
    assert!(rejected);
    let s = seen
        .iter()
        .find(|s| s.id == "patient-birth-date-missing")
        .unwrap();
    assert_eq!(s.location, "PID-7");
    let two = mutate(
        &nist,
        &[
            Append("ORC|RE||IZ-2^NDA"),
            Append("RXA|0|1|20120814||XXX^Bogus^CVX|999||||||||||||||NA|A"),
        ],
    );
    let (_, seen) = run(&h, &two, NOW_NIST);
    let s = seen
        .iter()
        .find(|s| s.id == "vaccination-cvx-invalid")
        .unwrap();
    assert_eq!(s.location, "RXA[2]-5");
}

#[test]
fn never_panics_on_odd_input() {
    let h = host(&[("profile", "cvrs")]);
    let nist = read(NIST);
    let odd = [
        "MSH|^~\\&|\r",
        "MSH|^~\\&|||||||VXU^V04^VXU_V04\rPID\rRXA\rRXR\rOBX\rORC",
        "MSH|^~\\&|||||99999999999999999999|||||\rPID|||~~~||^^^^^^^^^|||||||||||||||||||||||||\rOBX|||||||||||||||||||",
        "MSH|^~\\&|||||2012|||||\rPID|1||x^^^^^||a^b||20200230|\rRXA|0|1|2020023012|||||||||||||20201301|\u{e9}\u{e9}\u{e9}\u{e9}",
        "MSH|^~\\&|||||20121301+99|||||\rPID|1||x||a^b||00000000|\rRXR|\rOBX|1|TS|29769-7||-\rRXA|||||998^^CVX^abc^^NDC",
    ];
    for text in odd {
        for now in [NOW_NIST, "", "9999-99-99"] {
            let _ = run(&h, text, now);
        }
    }
    for cut in (0..nist.len()).step_by(7) {
        if let Some(prefix) = nist.get(..cut)
            && prefix.starts_with("MSH|^~\\&|")
        {
            let _ = izhub_plugin::run::<validate_iz::ValidateIz>(
                izhub_plugin::Input {
                    hl7: prefix.to_string(),
                    ..Default::default()
                },
                &h,
            );
        }
    }
}
