//! `izhub sim-iis`: a simulated state IIS for the demo and the tests. It
//! answers VXU with an IIS-style ACK, remembers each patient's immunizations
//! in memory, answers QBP^Q11 Z34 with RSP^K11 Z32/Z33 and Z44 with Z42 (an
//! evaluated history and forecast), and can be told to be slow, to refuse,
//! to drop connections, to answer candidate lists or "not found", and to
//! limit its query partners ([`query`]).

pub mod query;

mod answer;

pub use answer::answer;
use answer::*;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::hl7::{self, AckCode, Issue, Msh};
use crate::mllp::{MllpCodec, MllpFrame};

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The IIS's name in its answers (MSH-4 of answers), e.g. `WAIIS`.
    pub name: String,
    /// Wait this long before answering each message.
    pub delay: Duration,
    /// Answer every message AR ("not accepting submissions").
    pub refuse: bool,
    /// Close the connection instead of answering every Nth message (0: never).
    pub drop_every: u64,
    /// Misbehaviour on the wire: stray, foreign and late answers.
    pub wire: Wire,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Serve MLLP over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How queries are answered and limited.
    pub query: query::QueryOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            name: "SIMIIS".into(),
            delay: Duration::ZERO,
            refuse: false,
            drop_every: 0,
            wire: Wire::default(),
            max_frame: crate::mllp::DEFAULT_MAX_FRAME,
            tls: None,
            query: query::QueryOptions::default(),
        }
    }
}

/// How the simulator misbehaves on the wire, as real IIS connections
/// sometimes do, so operators can rehearse it. Counts are over every
/// message the simulator receives (0: never).
#[derive(Debug, Clone, Default)]
pub struct Wire {
    /// Send every Nth answer twice (a retry inside the IIS, a replayed frame).
    pub stray_every: u64,
    /// Answer every Nth message with the answer to another message (another
    /// MSA-2, another patient), and never with its own.
    pub wrong_id_every: u64,
    /// Answer late: after this long, while later messages on the same
    /// connection are answered meanwhile.
    pub late: Duration,
    /// Only every Nth answer is late (with `late`; 0 or 1: every one).
    pub late_every: u64,
}

impl Wire {
    fn hits(every: u64, n: u64) -> bool {
        every > 0 && n.is_multiple_of(every)
    }

    fn is_late(&self, n: u64) -> bool {
        !self.late.is_zero() && (self.late_every <= 1 || n.is_multiple_of(self.late_every))
    }
}

#[derive(Debug, Default, Clone)]
struct Patient {
    id: String,
    name: String,
    dob: String,
    sex: String,
    /// The doses on file, oldest first.
    history: Vec<Dose>,
}

/// One vaccination on file: its ORC, RXA, RXR and OBX segments as received,
/// and what identifies it (administration date and vaccine code), as an IIS
/// deduplicates: a dose sent again replaces the one on file.
#[derive(Debug, Clone)]
struct Dose {
    key: String,
    segments: Vec<String>,
}

impl Dose {
    fn rxa(&self) -> Option<&String> {
        self.segments.iter().find(|s| s.starts_with("RXA"))
    }
}

/// Messages whose text the simulator keeps (the most recent ones); it
/// counts every MSH-10 it sees, but a long run must not keep every text.
const KEEP_TEXTS: usize = 1_000;

/// Doses kept per patient (a child's full schedule is about 30); older ones
/// are dropped first.
const KEEP_HISTORY: usize = 100;

/// The texts of the most recent messages, by MSH-10.
#[derive(Debug, Default)]
struct Recent {
    texts: HashMap<String, String>,
    /// MSH-10s in the order their texts were kept.
    order: VecDeque<String>,
}

/// What the simulator has seen, shared with tests.
#[derive(Debug, Default)]
pub struct SimState {
    patients: Mutex<HashMap<String, Patient>>,
    /// Per MSH-10: how many times it arrived.
    counts: Mutex<HashMap<String, u64>>,
    /// The last copy of each of the most recent messages.
    recent: Mutex<Recent>,
    /// MSH-10 of every message, in the order they arrived.
    arrivals: Mutex<Vec<String>>,
    received: AtomicU64,
    /// Messages at once, and those over a limit.
    load: query::Load,
    /// Per query tag (QPD-2): how many times it was asked (at most
    /// [`KEEP_TAGS`] tags are counted).
    tags: Mutex<HashMap<String, u64>>,
    /// The last answer sent as it should be, with the MSH-10 it answers:
    /// what a wrong-id answer sends instead.
    last_answer: Mutex<Option<(String, String)>>,
}

/// Query tags counted at most.
const KEEP_TAGS: usize = 1_000_000;

impl SimState {
    /// What was measured of the load (messages at once, over a limit).
    pub fn load(&self) -> &query::Load {
        &self.load
    }

    /// How many times a query with this tag (QPD-2) was answered.
    pub fn queries_for(&self, tag: &str) -> u64 {
        self.tags
            .lock()
            .map(|t| t.get(tag).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Messages received in all.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How many distinct patients (PID-3.1) the simulator has records for.
    pub fn patients(&self) -> usize {
        self.patients.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// How many times a message with this MSH-10 arrived.
    pub fn count(&self, control_id: &str) -> u64 {
        self.counts
            .lock()
            .map(|m| m.get(control_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The MSH segment of the last message received with this MSH-10.
    pub fn header(&self, control_id: &str) -> Option<String> {
        self.message(control_id)
            .map(|m| m.split('\r').next().unwrap_or("").to_string())
    }

    /// The last message received with this MSH-10, as the IIS decoded it
    /// (among the most recent 1,000 messages).
    pub fn message(&self, control_id: &str) -> Option<String> {
        self.recent.lock().ok()?.texts.get(control_id).cloned()
    }

    /// MSH-10 of every message received, in arrival order.
    pub fn arrivals(&self) -> Vec<String> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The name (PID-5) on file for a patient id.
    pub fn patient_name(&self, patient_id: &str) -> Option<String> {
        self.patients
            .lock()
            .ok()?
            .get(patient_id)
            .map(|p| p.name.clone())
    }

    /// Immunizations (RXA segments) on file for a patient id, one per dose.
    pub fn immunizations(&self, patient_id: &str) -> Vec<String> {
        self.patients
            .lock()
            .map(|p| {
                p.get(patient_id)
                    .map(|p| p.history.iter().filter_map(Dose::rxa).cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

/// Serves the simulator on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    opts: SimOptions,
    state: Arc<SimState>,
    shutdown: CancellationToken,
) {
    let opts = Arc::new(opts);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let (opts, state, shutdown) = (opts.clone(), state.clone(), shutdown.clone());
                tokio::spawn(async move {
                    match opts.tls.clone() {
                        None => connection(stream, opts, state, shutdown).await,
                        Some(config) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            {
                                connection(stream, opts, state, shutdown).await;
                            }
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "sim-iis: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    opts: Arc<SimOptions>,
    state: Arc<SimState>,
    shutdown: CancellationToken,
) {
    let (mut sink, mut frames) = Framed::new(stream, MllpCodec::new(opts.max_frame, true)).split();
    // Late answers come back here after their delay, to be written between
    // the answers to later messages.
    let (late_tx, mut late_rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(late) = late_rx.recv() => {
                if sink.send(late).await.is_err() {
                    return;
                }
                continue;
            }
            f = frames.next() => f,
        };
        let bytes = match frame {
            Some(Ok(MllpFrame::Message(b))) => b,
            Some(Ok(MllpFrame::Oversized { .. })) | Some(Err(_)) | None => return,
        };
        let (text, charset) = hl7::decode(&bytes).unwrap_or_else(|_| {
            (
                String::from_utf8_lossy(&bytes).into_owned(),
                hl7::Charset::Utf8,
            )
        });
        let (n, text) = record(&state, &text);
        let flight = state.load.enter(&opts.query);
        if !opts.delay.is_zero() {
            tokio::time::sleep(opts.delay).await;
        }
        if opts.drop_every > 0 && n.is_multiple_of(opts.drop_every) {
            return;
        }
        let Some(answer) = answer_within(&text, &opts, &state, flight.over.as_deref()) else {
            return;
        };
        drop(flight);
        let answer = on_the_wire(&opts.wire, &state, n, &text, answer);
        let answer = Bytes::from(hl7::encode(&answer, charset));
        if opts.wire.is_late(n) {
            let (late_tx, late) = (late_tx.clone(), opts.wire.late);
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                let _ = late_tx.send(answer).await;
            });
            continue;
        }
        let copies = if Wire::hits(opts.wire.stray_every, n) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if sink.send(answer.clone()).await.is_err() {
                return;
            }
        }
    }
}

/// The answer as it goes on the wire: for a wrong-id message, the last
/// answer sent to another message (or this one's with another MSA-2) instead
/// of its own. With wrong-id answers on, every answer sent as it should be
/// is remembered for that.
fn on_the_wire(wire: &Wire, state: &SimState, n: u64, text: &str, answer: String) -> String {
    if wire.wrong_id_every == 0 {
        return answer;
    }
    let id = Msh::read(text)
        .map(|m| m.control_id().to_string())
        .unwrap_or_default();
    let Ok(mut last) = state.last_answer.lock() else {
        return answer;
    };
    if Wire::hits(wire.wrong_id_every, n) {
        return match &*last {
            Some((other, earlier)) if *other != id => earlier.clone(),
            _ => hl7::set_msa_control_id(&answer, &format!("NOT-{n}")),
        };
    }
    *last = Some((id, answer.clone()));
    answer
}

/// Counts a received message and remembers it by MSH-10; returns its
/// sequence number and its normalized text.
fn record(state: &SimState, text: &str) -> (u64, String) {
    let n = state.received.fetch_add(1, Ordering::Relaxed) + 1;
    let text = hl7::normalize_segments(text).into_owned();
    if let Ok(msh) = Msh::read(&text) {
        let id = msh.control_id();
        if let Ok(mut a) = state.arrivals.lock() {
            a.push(id.to_string());
        }
        if let Ok(mut counts) = state.counts.lock() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
        if let Ok(mut recent) = state.recent.lock() {
            let Recent { texts, order } = &mut *recent;
            if texts.insert(id.to_string(), text.clone()).is_none() {
                order.push_back(id.to_string());
            }
            while order.len() > KEEP_TEXTS {
                if let Some(old) = order.pop_front() {
                    texts.remove(&old);
                }
            }
        }
    }
    (n, text)
}

/// Serves the simulator's CDC WSDL SOAP endpoint (at `/`) until `shutdown`,
/// sharing `state` with its MLLP side. `users` empty accepts any credentials.
pub async fn run_soap(
    listener: TcpListener,
    opts: SimOptions,
    users: std::collections::BTreeMap<String, String>,
    state: Arc<SimState>,
    shutdown: CancellationToken,
) {
    use crate::soap::Fault;
    use crate::soap::server::{Limits, Serving, SoapUser, Submission};
    let tls = opts.tls.clone();
    let opts = Arc::new(opts);
    let max_body = opts.max_frame.saturating_mul(2);
    let handler: crate::soap::server::Handler = Arc::new(move |sub: Submission| {
        let (opts, state) = (opts.clone(), state.clone());
        Box::pin(async move {
            let (n, text) = record(&state, &sub.hl7);
            let flight = state.load.enter(&opts.query);
            if !opts.delay.is_zero() {
                tokio::time::sleep(opts.delay).await;
            }
            if opts.drop_every > 0 && n.is_multiple_of(opts.drop_every) {
                return Err(Fault::Unknown(
                    "the IIS failed to process the message".into(),
                ));
            }
            answer_within(&text, &opts, &state, flight.over.as_deref())
                .map(|answer| on_the_wire(&opts.wire, &state, n, &text, answer))
                .ok_or_else(|| Fault::Unknown("the message has no readable MSH".into()))
        })
    });
    let endpoint = crate::soap::server::Endpoint {
        users: users
            .into_iter()
            .map(|(u, p)| (u, SoapUser::any_facility(p)))
            .collect(),
        max_body,
        handler,
    };
    // A test double: generous limits, and nobody waits for its connections.
    let serving = Serving {
        name: "sim-iis".into(),
        tls,
        limits: Limits {
            max_connections: 4096,
            max_per_peer: 4096,
            ..Limits::default()
        },
        tracker: tokio_util::task::TaskTracker::new(),
        shutdown,
        connections: None,
        refused: None,
    };
    crate::soap::server::run(listener, "/".into(), endpoint, serving).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxu(control_id: &str) -> String {
        format!(
            "MSH|^~\\&|EHR|CLINIC|IIS|STATE|20240101||VXU^V04^VXU_V04|{control_id}|P|2.5.1\r\
             PID|1||P1^^^CLINIC^MR||DOE^JANE||20200101|F\r\
             ORC|RE||1\rRXA|0|1|20240101|20240101|08^HEPB^CVX|0.5|mL\r"
        )
    }

    #[test]
    fn a_long_run_keeps_recent_texts_and_every_count() {
        let (state, opts) = (SimState::default(), SimOptions::default());
        let total = KEEP_TEXTS + 5;
        for i in 0..total {
            let (_, text) = record(&state, &vxu(&format!("M{i}")));
            let ack = answer(&text, &opts, &state).unwrap_or_default();
            assert!(ack.contains("MSA|AA|"), "{ack}");
        }
        assert_eq!(state.received(), total as u64);
        assert_eq!(state.count("M0"), 1, "counts are kept for every message");
        assert_eq!(state.message("M0"), None, "the oldest texts are let go");
        assert!(state.message(&format!("M{}", total - 1)).is_some());
        assert_eq!(
            state.immunizations("P1").len(),
            1,
            "the same dose sent again replaces the one on file"
        );
    }

    #[test]
    fn doses_are_kept_per_date_and_vaccine_and_capped() {
        let (state, opts) = (SimState::default(), SimOptions::default());
        let header = "MSH|^~\\&|EHR|CLINIC|IIS|STATE|20240101||VXU^V04^VXU_V04";
        let pid = "PID|1||P1^^^CLINIC^MR||DOE^JANE||20200101|F\rOBX|1|CE|PATIENT-LEVEL";
        let first = format!(
            "{header}|A|P|2.5.1\r{pid}\r\
             ORC|RE||1\rRXA|0|1|20240101|20240101|08^HEPB^CVX|0.5|mL\rRXR|C28161\r\
             RXA|0|1|20240301|20240301|20^DTAP^CVX|0.5|mL\rOBX|1|CE|64994-7\r"
        );
        let again = format!(
            "{header}|B|P|2.5.1\r{pid}\r\
             ORC|RE||1\rRXA|0|1|20240101|20240101|08^HEPB^CVX|0.5|mL|||||LOT2\r"
        );
        for text in [&first, &again] {
            let ack = answer(text, &opts, &state).unwrap_or_default();
            assert!(ack.contains("MSA|AA|"), "{ack}");
        }
        let kept = state.immunizations("P1");
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(
            kept[0].ends_with("LOT2"),
            "the resent dose replaced the first: {kept:?}"
        );
        assert!(kept[1].contains("|20^DTAP^CVX|"), "{kept:?}");
        let query = "MSH|^~\\&|EHR|CLINIC|IIS|STATE|20240101||QBP^Q11^QBP_Q11|Q|P|2.5.1\r\
                     QPD|Z34^Request Immunization History^CDCPHINVS|T1|P1^^^CLINIC^MR\r";
        let rsp = answer(query, &opts, &state).unwrap_or_default();
        let segments: Vec<&str> = rsp.split('\r').map(|s| s.get(..3).unwrap_or(s)).collect();
        assert_eq!(
            segments.iter().filter(|s| **s == "OBX").count(),
            1,
            "the DTaP dose's OBX, not the patient-level one: {rsp}"
        );
        assert_eq!(segments.iter().filter(|s| **s == "RXA").count(), 2, "{rsp}");
        for day in 1..=KEEP_HISTORY + 3 {
            let text = format!(
                "{header}|D{day}|P|2.5.1\r{pid}\r\
                 RXA|0|1|2023{:02}{:02}|x|88^FLU^CVX|0.5|mL\r",
                day / 28 + 1,
                day % 28 + 1
            );
            answer(&text, &opts, &state);
        }
        assert_eq!(state.immunizations("P1").len(), KEEP_HISTORY);
    }
}
