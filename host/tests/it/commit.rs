//! `commit` ACK mode: AA only once the message is journaled, delivery from
//! the queue with retries, a circuit breaker through an IIS outage, order per
//! patient, and nothing acknowledged lost when the engine is killed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

fn commit_config(dir: &std::path::Path, iis: &str, extra_dest: &str) -> std::path::PathBuf {
    let path = dir.join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"data/journal.db\"\n\n[destinations.mi]\nmllp = \"{iis}\"\nconnect_timeout_ms = 200\nanswer_timeout_ms = 2000\nretry_initial_ms = 50\nretry_max_ms = 400\nbreaker_failures = 3\nbreaker_open_ms = 300\n{extra_dest}\n[[routes]]\nname = \"vxu\"\nack_mode = \"commit\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n",
            plugin("require_core_fields")
        ),
    )
    .unwrap();
    path
}

fn vxu(id: &str, patient: &str) -> String {
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let mut m = izhub_plugin::Message::parse(&with_msh(&base, 10, id)).unwrap();
    m.set("PID-3.1", patient).unwrap();
    m.to_string()
}

/// A simulated IIS and an engine in commit mode delivering to it, with its
/// directory (config and journal).
async fn commit_engine() -> (Sim, tempfile::TempDir, izhub::serve::Running) {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = commit_config(dir.path(), &sim.addr.to_string(), "");
    let engine = start_engine(&path).await;
    (sim, dir, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_after_journal_then_delivery_from_the_queue() {
    let (sim, dir, engine) = commit_engine().await;
    let mut client = connect(&engine, "ehr").await;
    let answer = client
        .exchange(vxu("C-1", "P1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    // The engine's own AA: it names the engine's ACK, not the IIS's.
    assert_eq!(msa(&answer), ("AA".into(), "C-1".into()), "{segs:?}");
    assert!(segs[0].contains("|ACK^V04^ACK|IZH"), "{segs:?}");
    wait_until("delivery", 10, || sim.state.count("C-1") == 1).await;
    // A rejected message is never journaled.
    let bad = vxu("C-2", "P2").replace("|20150826|", "||");
    assert_eq!(
        msa(&client.exchange(bad.as_bytes(), TIMEOUT).await.unwrap()).0,
        "AE"
    );
    engine.stop().await;
    let journal = izhub::store::open(&dir.path().join("data/journal.db")).unwrap();
    assert_eq!(
        journal.status_of("C-1").await.unwrap().as_deref(),
        Some("delivered")
    );
    assert_eq!(journal.status_of("C-2").await.unwrap(), None);
    // What the plugin did is kept with the message.
    let stages = journal.stages_of("C-1").await.unwrap().unwrap_or_default();
    assert!(
        stages.starts_with("require_core_fields\t") && stages.contains("\tunchanged"),
        "{stages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iis_outage_is_ridden_out_in_order_with_the_breaker() {
    // The IIS is down when the messages arrive.
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let path = commit_config(dir.path(), &format!("127.0.0.1:{port}"), "");
    let engine = start_engine(&path).await;
    let admin = engine.admin.unwrap();
    let addr = engine.listeners["ehr"].to_string();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut client = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    for i in 0..60 {
        let patient = format!("P{}", i % 5);
        let id = format!("O-{i}");
        let answer = client
            .exchange(vxu(&id, &patient).as_bytes(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(msa(&answer).0, "AA", "acknowledged while the IIS is down");
        sent.entry(patient).or_default().push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(admin, "/metrics").await;
        if m.contains("izhub_breaker_open{destination=\"mi\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "breaker never opened:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The IIS comes back on its address.
    let iis = start_sim_at(port, sim_named("MIIIS")).await;
    let state = iis.state.clone();
    wait_until("every message delivered", 20, || {
        sent.values().flatten().all(|id| state.count(id) >= 1)
    })
    .await;
    // In order per patient.
    let arrivals = state.arrivals();
    for ids in sent.values() {
        let order: Vec<&String> = arrivals.iter().filter(|a| ids.contains(a)).collect();
        let mut deduped: Vec<&String> = Vec::new();
        for id in order {
            if deduped.last() != Some(&id) {
                deduped.push(id);
            }
        }
        assert_eq!(
            deduped,
            ids.iter().collect::<Vec<_>>(),
            "order kept per patient"
        );
    }
    let m = http_get(admin, "/metrics").await;
    assert!(
        m.contains("izhub_breaker_transitions_total{destination=\"mi\",state=\"open\"}"),
        "{m}"
    );
    assert!(
        m.contains("izhub_breaker_transitions_total{destination=\"mi\",state=\"closed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("izhub_breaker_open{destination=\"mi\"} 0"),
        "{m}"
    );
    engine.stop().await;
}

/// Kills `izhub serve` with SIGKILL under load, several times: every message
/// that got AA reaches the IIS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let path = commit_config(dir.path(), &sim.addr.to_string(), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(
            "[listeners.ehr]\nlisten = \"127.0.0.1:0\"",
            &format!("[listeners.ehr]\nlisten = \"127.0.0.1:{port}\""),
            1,
        )
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "");
    std::fs::write(&path, text).unwrap();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
            .args(["serve", "--no-reload", "--log", "warn", "--config"])
            .arg(&path)
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for c in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let addr = format!("127.0.0.1:{port}");
            let mut n = 0;
            let mut client = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.is_none() {
                    client = izhub::mllp::MllpClient::connect(
                        &addr,
                        Duration::from_millis(200),
                        1 << 20,
                    )
                    .await
                    .ok();
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let id = format!("K{c}-{n}");
                let Some(cl) = client.as_mut() else { continue };
                match cl
                    .exchange(
                        vxu(&id, &format!("P{c}")).as_bytes(),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(a) if msa(&a) == ("AA".to_string(), id.clone()) => {
                        acked.lock().unwrap().insert(id);
                        n += 1;
                    }
                    // No AA: like an EHR, send the same message again.
                    _ => client = None,
                }
            }
        }));
    }
    let kills = 3;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(700)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        child = start();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() > 100,
        "only {} messages acknowledged",
        acked.len()
    );
    wait_until("every acknowledged message at the IIS", 30, || {
        acked.iter().all(|id| sim.state.count(id) >= 1)
    })
    .await;
    let duplicates = acked.iter().filter(|id| sim.state.count(id) > 1).count();
    println!(
        "crash test: {} acknowledged, {} kills, 0 lost, {duplicates} delivered twice",
        acked.len(),
        kills
    );
    // At most the messages in flight at each kill: 4 senders + 4 delivery connections.
    assert!(duplicates <= kills * 8, "{duplicates} duplicates");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_reprocessed_while_the_engine_runs() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let path = commit_config(dir.path(), &format!("127.0.0.1:{port}"), "");
    // One attempt only: the message is dead-lettered at once.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "retry_initial_ms = 50",
        "retry_initial_ms = 50\nmax_attempts = 1",
    );
    std::fs::write(&path, text).unwrap();
    let engine = start_engine(&path).await;
    let mut client = connect(&engine, "ehr").await;
    assert_eq!(
        msa(&client
            .exchange(vxu("R-1", "P1").as_bytes(), TIMEOUT)
            .await
            .unwrap())
        .0,
        "AA"
    );
    let journal = izhub::store::open(&dir.path().join("data/journal.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.status_of("R-1").await.unwrap().as_deref() != Some("dead") {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The IIS is back; an operator reprocesses the dead letters.
    let iis = start_sim_at(port, sim_named("MIIIS")).await;
    let state = iis.state.clone();
    let config_arg = path.display().to_string();
    let stdout = izhub_ok(["reprocess", "--status", "dead", "--config", &config_arg]).await;
    assert!(stdout.contains("R-1\tAA"), "{stdout}");
    // The running engine delivers what was journaled again.
    wait_until("redelivery", 10, || state.count("R-1") == 1).await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let (engine, _dir) =
        engine_from(&simple_config(sim.addr, "max_connections_per_peer = 2")).await;
    let addr = engine.listeners["ehr"].to_string();
    let mut a = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    let mut b = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(
            msa(&c
                .exchange(vxu("PEER-1", "P1").as_bytes(), TIMEOUT)
                .await
                .unwrap())
            .0,
            "AA"
        );
    }
    // A third from the same address is closed without a word.
    let mut c = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    assert!(
        c.exchange(vxu("PEER-3", "P1").as_bytes(), Duration::from_secs(2))
            .await
            .is_err()
    );
    // Once one closes, a new one is served.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        msa(&d
            .exchange(vxu("PEER-4", "P1").as_bytes(), TIMEOUT)
            .await
            .unwrap())
        .0,
        "AA"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_spreads_patients_and_waits_for_commit_mode_deliveries() {
    let (sim, dir, engine) = commit_engine().await;
    let file = dir.path().join("vxu.hl7");
    std::fs::write(&file, vxu("B-0", "PAT")).unwrap();
    let admin = engine.admin.expect("admin address").to_string();
    let (to, file) = (
        engine.listeners["ehr"].to_string(),
        file.display().to_string(),
    );
    let text = izhub_ok([
        "bench",
        "--connections",
        "4",
        "--messages",
        "200",
        "--warmup",
        "10",
        "--patients",
        "7",
        "--delivered-from",
        &admin,
        "--to",
        &to,
        "--file",
        &file,
    ])
    .await;
    assert!(text.contains("AA=200"), "{text}");
    assert!(
        text.contains("the IIS answered 200 of the run's messages"),
        "{text}"
    );
    // Everything was delivered before the bench reported, over 7 patients.
    assert_eq!(sim.state.received(), 210);
    assert_eq!(sim.state.patients(), 7);
    engine.stop().await;
}

/// Reloads that change a destination's settings while its queue is being
/// delivered: each destination keeps exactly one queue consumer, handed the
/// new settings, so every message reaches the IIS once, in order per patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_delivery_deliver_each_message_once() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |connections: usize| {
        let tmp = dir.path().join("next.toml");
        let written = commit_config(
            dir.path(),
            &sim.addr.to_string(),
            &format!("connections = {connections}\n"),
        );
        // Write then rename, so the watcher never reads half a file.
        std::fs::rename(&written, &tmp).unwrap();
        std::fs::rename(&tmp, &written).unwrap();
        written
    };
    let path = write(4);
    let config = izhub::config::load(&path).unwrap();
    let opts = izhub::serve::ServeOptions {
        watch: Some(Duration::from_millis(20)),
        ..Default::default()
    };
    let engine = izhub::serve::start_with(&config, opts).await.unwrap();
    let admin = engine.admin.unwrap();
    let addr = engine.listeners["ehr"].to_string();

    // 3,000 messages for 20 patients from four connections.
    let mut senders = Vec::new();
    for c in 0..4 {
        let addr = addr.clone();
        senders.push(tokio::spawn(async move {
            let mut client = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
                .await
                .unwrap();
            let mut sent = Vec::new();
            for i in 0..750 {
                let patient = format!("P{}", (c * 5) + i % 5);
                let id = format!("R{c}-{i}");
                let answer = client
                    .exchange(vxu(&id, &patient).as_bytes(), TIMEOUT)
                    .await
                    .unwrap();
                assert_eq!(msa(&answer).0, "AA");
                sent.push((patient, id));
            }
            sent
        }));
    }
    // Meanwhile the destination's connections change six times.
    for (n, connections) in [1, 6, 2, 5, 3, 8].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(60)).await;
        write(connections);
        let generation = format!("\"generation\":{}", n + 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = http_get(admin, "/healthz").await;
            if health.contains(&generation) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reload {} not applied: {health}",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut by_patient: HashMap<String, Vec<String>> = HashMap::new();
    for s in senders {
        for (patient, id) in s.await.unwrap() {
            by_patient.entry(patient).or_default().push(id);
        }
    }
    let state = sim.state.clone();
    wait_until("every message delivered", 60, || {
        by_patient.values().flatten().all(|id| state.count(id) >= 1)
    })
    .await;
    // Let any late duplicate arrive before counting.
    engine.stop().await;
    let twice: Vec<&String> = by_patient
        .values()
        .flatten()
        .filter(|id| state.count(id) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} of 3000 messages reached the IIS more than once, e.g. {:?}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    let arrivals = state.arrivals();
    for ids in by_patient.values() {
        let order: Vec<&String> = arrivals.iter().filter(|a| ids.contains(a)).collect();
        assert_eq!(
            order,
            ids.iter().collect::<Vec<_>>(),
            "order kept per patient"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_id_answer_is_never_taken_as_the_delivery_acknowledgement() {
    // The IIS answers every second message with the answer to the one before.
    let sim = start_sim(izhub::sim::SimOptions {
        wire: izhub::sim::Wire {
            wrong_id_every: 2,
            ..Default::default()
        },
        ..sim_named("MIIIS")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = commit_config(dir.path(), &sim.addr.to_string(), "connections = 1");
    let engine = start_engine(&path).await;
    let mut client = connect(&engine, "ehr").await;
    for (id, patient) in [("W-1", "P1"), ("W-2", "P2")] {
        let answer = client
            .exchange(vxu(id, patient).as_bytes(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(msa(&answer).0, "AA");
        // One after the other: W-2 is the IIS's second message.
        wait_until("an attempt", 10, || sim.state.count(id) >= 1).await;
    }
    // W-2's first answer named W-1: discarded; W-2 was sent again and its
    // own answer taken.
    wait_until("W-2 sent again", 10, || sim.state.count("W-2") == 2).await;
    let admin = engine.admin.unwrap();
    let metrics = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("izhub_iis_answers_mismatched_total{destination=\"mi\"} 1"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.stop().await;
    assert_eq!(sim.state.count("W-1"), 1);
    assert_eq!(sim.state.count("W-2"), 2, "delivered once, after one retry");
    let journal = izhub::store::open(&dir.path().join("data/journal.db")).unwrap();
    for id in ["W-1", "W-2"] {
        assert_eq!(
            journal.status_of(id).await.unwrap().as_deref(),
            Some("delivered"),
            "{id}"
        );
    }
}
