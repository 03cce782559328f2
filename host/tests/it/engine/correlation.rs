//! Every IIS answer belongs to its question: over real sockets, an IIS that
//! sends a stray copy of an answer, answers with another message's answer,
//! or answers late never makes the engine hand one clinic another clinic's
//! patient. The property test drives a scripted IIS through random
//! sequences of those faults on one persistent connection with many clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use izhub::mllp::{MllpClient, MllpCodec, MllpFrame};
use izhub::sim::{SimOptions, Wire};
use proptest::prelude::*;

use crate::common::*;

/// A QBP^Q11 Z34 for one patient, with its own MSH-10 and query tag.
fn qbp(control_id: &str, tag: &str, family: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC-{family}|IIS|IIS|20260101120000||QBP^Q11^QBP_Q11|{control_id}|P|2.5.1|||ER|AL|||||Z34^CDCPHINVS\rQPD|Z34^Request Immunization History^CDCPHINVS|{tag}|MRN-{family}^^^EHR^MR|{family}^Child^^^^^L||20200115|F\rRCP|I|5^RD&records&HL70126\r"
    )
}

/// A field of the first segment named `seg` (`SEG-n`).
fn field(answer: &[u8], seg: &str, n: usize) -> String {
    segments(answer)
        .iter()
        .find(|s| s.starts_with(&format!("{seg}|")))
        .and_then(|s| s.split('|').nth(n).map(str::to_string))
        .unwrap_or_default()
}

/// What one clinic got back for its own query: nothing of another patient.
/// Returns true when the IIS's answer came through (false: the engine's AE).
fn assert_own(answer: &[u8], control_id: &str, tag: &str, family: &str) -> bool {
    let segs = segments(answer);
    assert_eq!(msa(answer).1, control_id, "MSA-2 names the query: {segs:?}");
    let text = String::from_utf8_lossy(answer);
    if msa(answer).0 == "AE" && text.contains("did not answer") {
        assert!(!text.contains("PID|"), "no patient with an AE: {segs:?}");
        return false;
    }
    assert_eq!(
        field(answer, "QAK", 1),
        tag,
        "QAK-1 names the query: {segs:?}"
    );
    let pid_family = field(answer, "PID", 5);
    assert_eq!(
        pid_family.split('^').next().unwrap_or(""),
        family,
        "another patient's answer reached this clinic: {segs:?}"
    );
    true
}

/// An engine relaying queries to one IIS over a single persistent connection.
async fn relay_to(
    iis: SocketAddr,
    answer_timeout_ms: u64,
) -> (izhub::serve::Running, tempfile::TempDir) {
    engine_from(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.iis]\nmllp = \"{iis}\"\nconnections = 1\nanswer_timeout_ms = {answer_timeout_ms}\nconnect_timeout_ms = 1000\n\n[[routes]]\nname = \"qbp\"\nmessage_types = [\"QBP^Q11\"]\ndestinations = [\"iis\"]\n"
    ))
    .await
}

/// `izhub_iis_answers_mismatched_total` for destination `iis`.
async fn mismatched(admin: SocketAddr) -> u64 {
    let text = http_get(admin, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with("izhub_iis_answers_mismatched_total{destination=\"iis\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn synthetic_sim(wire: Wire) -> SimOptions {
    SimOptions {
        wire,
        query: izhub::sim::query::QueryOptions {
            synthetic: true,
            ..Default::default()
        },
        ..sim_named("IIS")
    }
}

/// Three clinics ask in turn, each on its own connection.
async fn three_clinics_ask(engine: &izhub::serve::Running) -> Vec<bool> {
    let mut answered = Vec::new();
    for (i, family) in ["ALPHA", "BRAVO", "CHARLIE", "DELTA"].iter().enumerate() {
        let mut clinic = connect(engine, "ehr").await;
        let (id, tag) = (format!("Q-{i}"), format!("tag-{i}"));
        let answer = clinic
            .exchange(qbp(&id, &tag, family).as_bytes(), TIMEOUT)
            .await
            .unwrap();
        answered.push(assert_own(&answer, &id, &tag, family));
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_copy_of_an_answer_never_reaches_the_next_clinic() {
    // Every answer is sent twice on the one connection.
    let sim = start_sim(synthetic_sim(Wire {
        stray_every: 1,
        ..Wire::default()
    }))
    .await;
    let (engine, _dir) = relay_to(sim.addr, 1000).await;
    let answered = three_clinics_ask(&engine).await;
    assert_eq!(answered, [true; 4], "every clinic gets its own answer");
    // The copy of each answer meets the next query; after a mismatch the
    // connection is closed, so every other exchange meets one.
    assert!(mismatched(engine.admin.unwrap()).await >= 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_id_answer_is_discarded_and_the_clinic_told_the_iis_did_not_answer() {
    // The second query is answered with the first one's answer (ALPHA's).
    let sim = start_sim(synthetic_sim(Wire {
        wrong_id_every: 2,
        ..Wire::default()
    }))
    .await;
    let (engine, _dir) = relay_to(sim.addr, 500).await;
    let answered = three_clinics_ask(&engine).await;
    assert_eq!(answered, [true, false, true, false]);
    assert_eq!(mismatched(engine.admin.unwrap()).await, 2);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_never_answers_a_later_query() {
    // The second answer comes after the answer timeout.
    let sim = start_sim(synthetic_sim(Wire {
        late: Duration::from_millis(800),
        late_every: 2,
        ..Wire::default()
    }))
    .await;
    let (engine, _dir) = relay_to(sim.addr, 400).await;
    let answered = three_clinics_ask(&engine).await;
    assert_eq!(answered, [true, false, true, false]);
    // A late answer finds its connection closed: the next clinic's query
    // went on a new one.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let answered = three_clinics_ask(&engine).await;
    assert_eq!(answered, [true, false, true, false]);
    engine.stop().await;
}

/// What the scripted IIS does with one message.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Answers it.
    Answer,
    /// Answers it twice.
    Twice,
    /// Answers with the answer to the message before (another MSA-2, QAK-1
    /// and patient), never with its own.
    Foreign,
    /// Sends a copy of an older answer first, then its own.
    StrayFirst,
    /// Answers it after the engine's answer timeout.
    Late,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::Answer),
        1 => Just(Act::Twice),
        1 => Just(Act::Foreign),
        1 => Just(Act::StrayFirst),
        1 => Just(Act::Late),
    ]
}

/// The answer a faithful IIS gives a query: its MSA-2, QAK-1 and patient.
fn rsp_for(query: &str, n: usize) -> String {
    let question = izhub::hl7::Question::of(query);
    let family = query
        .split('\r')
        .find(|s| s.starts_with("QPD|"))
        .and_then(|s| s.split('|').nth(4))
        .and_then(|n| n.split('^').next())
        .unwrap_or("");
    format!(
        "MSH|^~\\&|SCRIPTIIS|SCRIPTIIS|EHR|CLINIC|20260101120000||RSP^K11^RSP_K11|R-{n}|P|2.5.1\rMSA|AA|{}\rQAK|{}|OK|Z34^Request Immunization History^CDCPHINVS\rPID|1||ID-{family}^^^IIS^SR||{family}^Child^^^^^L||20200115|F\r",
        question.control_id(),
        question.query_tag()
    )
}

/// An IIS that follows `script` (one act per message received, in turn,
/// across its connections).
async fn scripted_iis(script: Vec<Act>, late: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let answers: Arc<std::sync::Mutex<Vec<Bytes>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, seen, answers) = (script.clone(), seen.clone(), answers.clone());
            tokio::spawn(async move {
                let framed = tokio_util::codec::Framed::new(stream, MllpCodec::new(1 << 20, true));
                let (mut sink, mut frames) = framed.split();
                let (late_tx, mut late_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
                loop {
                    let frame = tokio::select! {
                        Some(b) = late_rx.recv() => {
                            if sink.send(b).await.is_err() { return; }
                            continue;
                        }
                        f = frames.next() => f,
                    };
                    let Some(Ok(MllpFrame::Message(query))) = frame else {
                        return;
                    };
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let own = Bytes::from(rsp_for(&String::from_utf8_lossy(&query), n));
                    let (older, previous) = {
                        let mut kept = answers.lock().unwrap();
                        let older = kept.first().cloned();
                        let previous = kept.last().cloned();
                        kept.push(own.clone());
                        (older, previous)
                    };
                    let out: Vec<Bytes> = match script[n % script.len()] {
                        Act::Answer => vec![own],
                        Act::Twice => vec![own.clone(), own],
                        Act::Foreign => previous.into_iter().collect(),
                        Act::StrayFirst => older.into_iter().chain([own]).collect(),
                        Act::Late => {
                            let tx = late_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(late).await;
                                let _ = tx.send(own).await;
                            });
                            Vec::new()
                        }
                    };
                    for b in out {
                        if sink.send(b).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random sequences of stray, duplicate, foreign and late answers on one
    /// persistent connection, with many clinics asking at once: no clinic
    /// ever receives an answer built for another clinic's message.
    #[test]
    fn no_clinic_ever_gets_another_clinics_answer(script in prop::collection::vec(act(), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let all_faithful = script.iter().all(|a| matches!(a, Act::Answer));
            let iis = scripted_iis(script, Duration::from_millis(300)).await;
            let (engine, _dir) = relay_to(iis, 150).await;
            let addr = engine.listeners["ehr"].to_string();
            let mut clinics = tokio::task::JoinSet::new();
            for c in 0..5 {
                let addr = addr.clone();
                clinics.spawn(async move {
                    let mut client = MllpClient::connect(&addr, TIMEOUT, 1 << 20).await.unwrap();
                    let mut answered = 0;
                    for q in 0..4 {
                        let family = format!("CLINIC{c}KID{q}");
                        let (id, tag) = (format!("C{c}-Q{q}"), format!("T{c}-{q}"));
                        let answer = client
                            .exchange(qbp(&id, &tag, &family).as_bytes(), TIMEOUT)
                            .await
                            .unwrap();
                        answered += usize::from(assert_own(&answer, &id, &tag, &family));
                    }
                    answered
                });
            }
            let mut answered = 0;
            while let Some(r) = clinics.join_next().await {
                answered += r.unwrap();
            }
            if all_faithful {
                assert_eq!(answered, 20, "a faithful IIS answers every query");
            }
            engine.stop().await;
        });
    }
}
