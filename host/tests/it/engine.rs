//! End-to-end tests: real sockets, real simulators, real wasm plugins.
mod correlation;

use std::time::{Duration, Instant};

use crate::common::*;

fn state_of(message: &str) -> String {
    let msg = izhub_plugin::Message::parse(message).unwrap();
    let reps = msg.repetitions("PID-11").len();
    (1..=reps)
        .map(|n| msg.get(&format!("PID-11[{n}].4")).to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_vxu_reaches_the_iis_of_its_state_and_its_ack_comes_back() {
    let h = harness("").await;
    let mut client = h.client().await;
    let mut files: Vec<_> = std::fs::read_dir(root().join("samples/messages/vxu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 39, "sample set shrank: {}", files.len());
    for file in files {
        let rel = format!(
            "messages/vxu/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let text = sample_text(&rel);
        let control_id = izhub::hl7::Msh::read(&text)
            .unwrap()
            .control_id()
            .to_string();
        let state = state_of(&text);
        assert!(STATES.contains(&state.as_str()), "{rel}: state {state}");
        let before: Vec<u64> = STATES.iter().map(|s| h.sim(s).count(&control_id)).collect();
        let answer = client.exchange(text.as_bytes(), TIMEOUT).await.unwrap();
        let (code, acked) = msa(&answer);
        assert_eq!(code, "AA", "{rel}: {:?}", segments(&answer));
        assert_eq!(acked, control_id, "{rel}: MSA-2 must echo MSH-10");
        // The answer is the IIS's own: its MSH-4 names the IIS of the patient's state.
        assert_eq!(
            segments(&answer)[0].split('|').nth(3),
            Some(format!("{state}IIS").as_str()),
            "{rel}"
        );
        for (i, s) in STATES.iter().enumerate() {
            let expected = before[i] + u64::from(*s == state);
            assert_eq!(h.sim(s).count(&control_id), expected, "{rel}: IIS {s}");
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_birth_date_gets_ae_on_pid7_and_never_reaches_the_iis() {
    let h = harness("").await;
    let mut client = h.client().await;
    let text = sample_text("messages/rejected/vxu-missing-birth-date-testerror-36.hl7");
    let answer = client.exchange(text.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    let (code, acked) = msa(&answer);
    assert_eq!(code, "AE", "{segs:?}");
    assert_eq!(acked, izhub::hl7::Msh::read(&text).unwrap().control_id());
    assert!(segs[0].starts_with("MSH|^~\\&|"), "{segs:?}");
    assert!(segs[0].contains("|ACK^V04^ACK|"), "{segs:?}");
    assert!(segs[0].ends_with("|Z23^CDCPHINVS"), "{segs:?}");
    let err = segs
        .iter()
        .find(|s| s.starts_with("ERR|"))
        .expect("an ERR segment");
    assert!(
        err.starts_with("ERR||PID^1^7|101^Required field missing^HL70357|E|"),
        "{err}"
    );
    assert!(err.contains("birth date"), "{err}");
    for s in STATES {
        assert_eq!(
            h.sim(s).received(),
            0,
            "IIS {s} must not see a rejected message"
        );
    }
    // The other rejected samples name their field too.
    for (file, location) in [
        (
            "messages/rejected/vxu-missing-admin-date-testerror-43.hl7",
            "ERR||RXA^1^3|101",
        ),
        (
            "messages/rejected/vxu-missing-cvx-testerror-44.hl7",
            "ERR||RXA^1^5|101",
        ),
        (
            "messages/rejected/vxu-no-address-state-testgood-17.hl7",
            "ERR||PID^1^11^1^4|101",
        ),
    ] {
        let answer = client.exchange(&sample(file), TIMEOUT).await.unwrap();
        let segs = segments(&answer);
        assert_eq!(msa(&answer).0, "AE", "{file}: {segs:?}");
        assert!(
            segs.iter().any(|s| s.starts_with(location)),
            "{file}: {segs:?}"
        );
    }
    // A segment that is not a segment: the message cannot be processed at all.
    let answer = client
        .exchange(
            &sample("messages/rejected/vxu-bad-segment-name-testencoding-01.hl7"),
            TIMEOUT,
        )
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR|||102^Data type error^HL70357|E||||segment 5 ('WHOOPS")),
        "{segs:?}"
    );
    for s in STATES {
        assert_eq!(h.sim(s).received(), 0);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_a_submission_returns_the_history() {
    let h = harness("").await;
    let mut client = h.client().await;
    let vxu = sample_text("messages/vxu/vxu-adult-z22-new-covid-vaccine.hl7");
    assert_eq!(
        msa(&client.exchange(vxu.as_bytes(), TIMEOUT).await.unwrap()).0,
        "AA"
    );
    let qbp = sample_text("demo/qbp-history-pa-patient.hl7");
    let answer = client.exchange(qbp.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert!(
        segs[0].contains("|RSP^K11^RSP_K11|") && segs[0].ends_with("Z32^CDCPHINVS"),
        "{segs:?}"
    );
    assert_eq!(msa(&answer), ("AA".to_string(), "DEMO-QBP-1".to_string()));
    assert!(
        segs.iter().any(|s| s.starts_with("QAK|DEMO-Q1|OK|")),
        "{segs:?}"
    );
    assert!(
        segs.iter().any(|s| s.starts_with("PID|1||123456^")),
        "{segs:?}"
    );
    let rxa = segs
        .iter()
        .find(|s| s.starts_with("RXA|"))
        .expect("history has the RXA");
    assert!(rxa.contains("|24^COVID-19-Substitute^CVX"), "{rxa}");
    // Someone the IIS has never seen: Z33, not found.
    let unknown = with_msh(
        &qbp.replace(
            "123456^^^MYEHR^MR|Winchester^Dorothy",
            "999^^^MYEHR^MR|Nobody^Known",
        ),
        10,
        "Q-NF",
    );
    let answer = client.exchange(unknown.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert!(segs[0].ends_with("Z33^CDCPHINVS"), "{segs:?}");
    assert!(
        segs.iter().any(|s| s.starts_with("QAK|DEMO-Q1|NF|")),
        "{segs:?}"
    );
    assert!(!segs.iter().any(|s| s.starts_with("PID")), "{segs:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iis_that_is_down_or_silent_gives_ae_207() {
    let h = harness("").await;
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let mut client = h.client().await;
    let slow = with_msh(&base, 4, "SLOW");
    let t = Instant::now();
    let answer = client.exchange(slow.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AE", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR|||207^") && s.contains("IIS did not answer")),
        "{segs:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let down = with_msh(&base, 4, "DOWN");
    let answer = client.exchange(down.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AE", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR|||207^") && s.contains("could not reach IIS 'down-iis'")),
        "{segs:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_reports_health_and_metrics() {
    let h = harness("").await;
    let mut client = h.client().await;
    let answer = client
        .exchange(&sample("messages/vxu/vxu-valid-testgood-02.hl7"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    let health = http_get(h.admin, "/healthz").await;
    assert!(
        health.contains("\"status\":\"ok\"") && health.contains("\"name\":\"ehr\""),
        "{health}"
    );
    let metrics = http_get(h.admin, "/metrics").await;
    for needle in [
        "izhub_messages_in_total{listener=\"ehr\"} 1",
        "izhub_answers_out_total{route=\"vxu\",code=\"AA\"} 1",
        "izhub_plugin_verdicts_total{plugin=\"route_by_jurisdiction\",verdict=\"route_to\"} 1",
        "izhub_deliveries_total{destination=\"mi-iis\",result=\"answered\"} 1",
        "izhub_plugin_call_seconds_count{plugin=\"stamp_hie\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamp_hie_fills_msh22_before_delivery() {
    let h = harness("").await;
    let mut client = h.client().await;
    // MSH-22 is empty in this sample: the IIS must receive the HIE's organization.
    let text = sample_text("messages/vxu/vxu-mcir-dtap-hepb-ipv.hl7");
    let msh = izhub::hl7::Msh::read(&text).unwrap();
    assert!(msh.field(22).is_empty());
    let answer = client.exchange(text.as_bytes(), TIMEOUT).await.unwrap();
    assert_eq!(msa(&answer).0, "AA");
    let delivered = h
        .sim("MI")
        .header(msh.control_id())
        .expect("the IIS got it");
    assert_eq!(
        delivered.split('|').nth(21),
        Some("Test HIE^^^^^^^^^HIE01"),
        "{delivered}"
    );
    // Everything before MSH-22 arrived unchanged.
    let original = text.split('\r').next().unwrap();
    assert!(delivered.starts_with(original), "{delivered}");
    // A message that already names its organization keeps it.
    let text = sample_text("messages/vxu/vxu-valid-testgood-03.hl7");
    let msh = izhub::hl7::Msh::read(&text).unwrap();
    assert_eq!(
        msa(&client.exchange(text.as_bytes(), TIMEOUT).await.unwrap()).0,
        "AA"
    );
    assert_eq!(
        h.sim("MI").header(msh.control_id()).unwrap(),
        text.split('\r').next().unwrap()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_outside_the_allow_list_get_ar() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let (engine, _dir) = engine_from(&simple_config(
        sim.addr,
        "allowed_senders = [\"GOOD-CLINIC\"]",
    ))
    .await;
    let mut client = connect(&engine, "ehr").await;
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let answer = client
        .exchange(with_msh(&base, 4, "STRANGER").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||MSH^1^4|207^") && s.contains("'STRANGER' is not allowed")),
        "{segs:?}"
    );
    assert_eq!(sim.state.received(), 0);
    let answer = client
        .exchange(with_msh(&base, 4, "GOOD-CLINIC").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    assert_eq!(sim.state.received(), 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_messages_finish() {
    let h = harness("").await;
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    // The slow IIS answers after 3 s but the destination gives up after 1 s:
    // the in-flight message must still get its (AE) answer during shutdown.
    let mut client = h.client().await;
    client
        .send(with_msh(&base, 4, "SLOW").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.addr;
    let stopping = tokio::spawn(h.stop());
    let answer = client.receive(TIMEOUT).await.unwrap();
    assert_eq!(msa(&answer).0, "AE");
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
