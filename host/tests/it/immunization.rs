//! The immunization plugins through the engine with the shipped code sets:
//! NDC → CVX, race and ethnicity to CDCREC, completeness and IIS-answer
//! metrics, and code sets updated while the engine runs.

use std::time::{Duration, Instant};

use crate::common::*;
use izhub::serve::{self, ServeOptions};

fn config(codesets: &std::path::Path, sim: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[listeners.ehr]
listen = "127.0.0.1:0"
# Named senders are counted under their own label (others as `other`).
allowed_senders = ["CLINIC-A"]

[destinations.mi-iis]
mllp = "{sim}"

[codesets]
dir = "{}"

[[routes]]
name = "vxu"
message_types = ["VXU^V04"]

[[routes.plugins]]
wasm = "{}"
grants = ["lookup:ndc", "lookup:cvx", "lookup:mvx"]

[[routes.plugins]]
wasm = "{}"
grants = ["config", "lookup:cdcrec-race", "lookup:cdcrec-ethnicity"]

[[routes.plugins]]
wasm = "{}"
[routes.plugins.config.states]
MI = "mi-iis"
"#,
        codesets.display(),
        plugin("ndc_to_cvx"),
        plugin("race_ethnicity"),
        plugin("route_by_jurisdiction")
    )
}

/// A Michigan VXU from a clinic that codes the vaccine as an NDC and race
/// and ethnicity with local letters.
fn clinic_vxu(id: &str, ndc: &str) -> String {
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let msg = with_msh(&with_msh(&base, 4, "CLINIC-A"), 10, id);
    let mut m = izhub_plugin::Message::parse(&msg).unwrap();
    m.set("RXA-5", &format!("{ndc}^Some vaccine^NDC")).unwrap();
    m.set("PID-10", "W^White^L").unwrap();
    m.set("PID-22", "N").unwrap();
    m.to_string()
}

fn rxa_of(message: &str) -> String {
    message
        .split('\r')
        .find(|s| s.starts_with("RXA"))
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndc_and_local_race_codes_arrive_at_the_iis_as_cvx_and_cdcrec() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        config(&root().join("samples/codesets"), &sim.addr.to_string()),
    )
    .unwrap();
    let engine = start_engine(&path).await;
    let admin = engine.admin.unwrap();
    let mut client = connect(&engine, "ehr").await;
    let answer = client
        .exchange(clinic_vxu("NDC-1", "00069-0344-01").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        msa(&answer),
        ("AA".into(), "NDC-1".into()),
        "{:?}",
        segments(&answer)
    );
    let delivered = sim.state.message("NDC-1").expect("the IIS got it");
    let rxa = rxa_of(&delivered);
    assert!(rxa.contains("|305^"), "CVX 305 from the crosswalk: {rxa}");
    assert!(
        rxa.contains("^CVX^00069-0344-01^Some vaccine^NDC|"),
        "{rxa}"
    );
    assert!(rxa.contains("|PFR^"), "MVX filled from the NDC: {rxa}");
    let pid = delivered
        .split('\r')
        .find(|s| s.starts_with("PID"))
        .unwrap();
    assert!(pid.contains("|2106-3^White^CDCREC|"), "{pid}");
    assert!(
        pid.ends_with("|2186-5^Not Hispanic or Latino^CDCREC"),
        "{pid}"
    );

    // An NDC nobody knows: delivered unchanged, and the sender is warned in the IIS's ACK.
    let answer = client
        .exchange(clinic_vxu("NDC-2", "99999-9999-99").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AA", "{segs:?}");
    assert!(
        segs.iter().any(
            |s| s.starts_with("ERR||RXA^1^5|103^Table value not found^HL70357|W|")
                && s.contains("99999-9999-99")
        ),
        "{segs:?}"
    );

    let metrics = http_get(admin, "/metrics").await;
    for line in [
        "izhub_completeness_total{sender=\"CLINIC-A\",field=\"race\",status=\"mapped\"} 2",
        "izhub_completeness_total{sender=\"CLINIC-A\",field=\"ethnicity\",status=\"mapped\"} 2",
        "izhub_iis_answers_total{destination=\"mi-iis\",sender=\"CLINIC-A\",class=\"accepted\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_sets_updated_while_running_take_effect_and_bad_ones_are_refused() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let codes = dir.path().join("codesets");
    for sub in ["cdc", "aira"] {
        std::fs::create_dir_all(codes.join(sub)).unwrap();
        for e in std::fs::read_dir(root().join("samples/codesets").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), codes.join(sub).join(e.file_name())).unwrap();
        }
    }
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, config(&codes, &sim.addr.to_string())).unwrap();
    let opts = ServeOptions {
        watch: Some(Duration::from_millis(50)),
        ..ServeOptions::default()
    };
    let engine = serve::start_with(&izhub::config::load(&path).unwrap(), opts)
        .await
        .unwrap();
    let admin = engine.admin.unwrap();
    let mut client = connect(&engine, "ehr").await;
    // A new season's NDC, not yet in the crosswalk.
    let answer = client
        .exchange(clinic_vxu("SEASON-1", "12345-6789-01").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert!(
        segments(&answer)
            .iter()
            .any(|s| s.contains("12345-6789-01 is not in the CDC NDC crosswalk"))
    );

    // A broken update is refused before anything is replaced.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("NDC_Unit_sale.txt"), "not|a|crosswalk\n").unwrap();
    assert!(izhub::tools::codes::update(&bad, &codes).is_err());

    // CDC publishes a new crosswalk with it: install it while the engine runs.
    let new = dir.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let mut sale = std::fs::read_to_string(codes.join("cdc/NDC_Unit_sale.txt")).unwrap();
    sale.push_str("9999|12345|6789|01|NEWFLU|Influenza, new season|Maker|20260701||SYRINGE|INTRAMUSCULAR|2026-07-01 00:00:00|208       |COVID-19, mRNA|12345-6789-01|\n");
    std::fs::write(new.join("NDC_Unit_sale.txt"), sale).unwrap();
    assert_eq!(izhub::tools::codes::update(&new, &codes).unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(admin, "/healthz")
        .await
        .contains("\"generation\":1")
    {
        assert!(Instant::now() < deadline, "code-set change not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = client
        .exchange(clinic_vxu("SEASON-2", "12345-6789-01").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    assert!(
        !segments(&answer).iter().any(|s| s.starts_with("ERR")),
        "{:?}",
        segments(&answer)
    );
    assert!(
        rxa_of(&sim.state.message("SEASON-2").unwrap()).contains("|208^"),
        "mapped with the new crosswalk"
    );
    engine.stop().await;
}

/// A route that picks the IIS by state, then validates with that IIS's
/// profile (none given: the default, iis-practice).
fn validating_config(codesets: &std::path::Path, sim: &str, mi_profile: Option<&str>) -> String {
    let profiles = mi_profile
        .map(|p| format!("[routes.plugins.config.destination_profiles]\nmi-iis = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[listeners.ehr]
listen = "127.0.0.1:0"

[destinations.mi-iis]
mllp = "{sim}"

[codesets]
dir = "{}"

[[routes]]
name = "vxu"
message_types = ["VXU^V04"]

[[routes.plugins]]
wasm = "{}"
[routes.plugins.config.states]
MI = "mi-iis"

[[routes.plugins]]
wasm = "{}"
grants = ["log", "config", "codesets"]
{profiles}"#,
        codesets.display(),
        plugin("route_by_jurisdiction"),
        plugin("validate_iz"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcir_sample_reaches_its_iis_with_a_warning_unless_that_iis_is_strict() {
    // A real Michigan MCIR VXU: RXA-2 = 999, as many EHRs still send.
    let mcir = sample_text("messages/vxu/vxu-mcir-dtap-hepb-ipv.hl7");
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let codesets = root().join("samples/codesets");
    for (profile, delivered) in [(None, true), (Some("strict-ig"), false)] {
        let path = dir.path().join("izhub.toml");
        std::fs::write(
            &path,
            validating_config(&codesets, &sim.addr.to_string(), profile),
        )
        .unwrap();
        let engine = start_engine(&path).await;
        let mut client = connect(&engine, "ehr").await;
        let before = sim.state.received();
        let answer = client.exchange(mcir.as_bytes(), TIMEOUT).await.unwrap();
        let segs = segments(&answer);
        let sub_id = segs.iter().find(|s| s.starts_with("ERR||RXA^1^2|"));
        if delivered {
            assert_eq!(msa(&answer).0, "AA", "{segs:?}");
            assert_eq!(sim.state.received(), before + 1, "the IIS got it");
            assert!(
                sub_id.is_some_and(
                    |e| e.contains("|W|") && e.contains("[vaccination-sub-id-counter-invalid]")
                ),
                "the warning comes back with the IIS's AA: {segs:?}"
            );
        } else {
            assert_eq!(msa(&answer).0, "AE", "{segs:?}");
            assert_eq!(
                sim.state.received(),
                before,
                "a strict IIS's profile blocks it"
            );
            assert!(sub_id.is_some_and(|e| e.contains("|E|")), "{segs:?}");
        }
        engine.stop().await;
    }
}

/// A dose dated before birth: by default the message reaches the IIS with a
/// warning naming the dose (the registry rejects that dose and keeps the
/// rest); under strict-ig it is refused. And a message from a state with no
/// IIS that also lacks a birth date is answered with both problems at once:
/// the router's and the validator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dose_is_delivered_with_a_warning_and_every_problem_is_answered_at_once() {
    let mcir = sample_text("messages/vxu/vxu-mcir-dtap-hepb-ipv.hl7");
    let before_birth = mcir.replace("|20140317|20140317|110^", "|19990101|19990101|110^");
    assert_ne!(before_birth, mcir);
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let codesets = root().join("samples/codesets");
    let path = dir.path().join("izhub.toml");
    for (profile, delivered) in [(None, true), (Some("strict-ig"), false)] {
        std::fs::write(
            &path,
            validating_config(&codesets, &sim.addr.to_string(), profile),
        )
        .unwrap();
        let engine = start_engine(&path).await;
        let mut client = connect(&engine, "ehr").await;
        let before = sim.state.received();
        let answer = client
            .exchange(before_birth.as_bytes(), TIMEOUT)
            .await
            .unwrap();
        let segs = segments(&answer);
        let dose = segs
            .iter()
            .find(|s| s.contains("[vaccination-date-before-birth]"))
            .unwrap_or_else(|| panic!("{profile:?}: the dose is not named: {segs:?}"));
        assert!(dose.starts_with("ERR||RXA^1^3|"), "{dose}");
        if delivered {
            assert_eq!(msa(&answer).0, "AA", "{segs:?}");
            assert_eq!(sim.state.received(), before + 1, "the IIS got it");
            assert!(
                dose.contains("|W|") && dose.contains("expected to reject this dose"),
                "{dose}"
            );
        } else {
            assert_eq!(msa(&answer).0, "AE", "{segs:?}");
            assert_eq!(sim.state.received(), before, "strict-ig blocks it");
            assert!(dose.contains("|E|"), "{dose}");
        }
        engine.stop().await;
    }

    // No IIS for the state, and no birth date either.
    let nowhere = mcir
        .replace("^DETROIT^MI^", "^DETROIT^ZZ^")
        .replace("|20000201|M|", "||M|");
    std::fs::write(
        &path,
        validating_config(&codesets, &sim.addr.to_string(), None),
    )
    .unwrap();
    let engine = start_engine(&path).await;
    let mut client = connect(&engine, "ehr").await;
    let before = sim.state.received();
    let answer = client.exchange(nowhere.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AE", "{segs:?}");
    assert_eq!(sim.state.received(), before, "nothing delivered");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||PID^1^11") && s.contains("|E|")),
        "the router's error: {segs:?}"
    );
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||PID^1^7|") && s.contains("[patient-birth-date-missing]")),
        "the validator's error: {segs:?}"
    );
    engine.stop().await;
}
