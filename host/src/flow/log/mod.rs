//! The message log: every message the engine answered (relay mode too), with
//! what each plugin did, the answer and every delivery attempt, in its own
//! SQLite file. Written off the ACK path by one thread that batches many
//! messages per transaction; a full queue drops the record (counted) rather
//! than slow an answer down. Read through its own connection. Pruned by age
//! and count.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use super::bodies::{self, Body, BodyRef};
use super::{Attempt, Record, Summary};
use crate::store::Cause;

mod read;
mod write;

use write::*;

pub use crate::store::{MAX_NODE_NUMBER, NODE_SHIFT};

/// The node number of a logged message's id (0 outside a cluster).
pub fn node_of(id: i64) -> i32 {
    i32::try_from(id >> NODE_SHIFT).unwrap_or(-1)
}

/// Records waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 32_768;
/// Records per transaction at most.
const BATCH: usize = 1_024;
/// The writer's nice value while it is raised to catch up.
const RAISED_NICE: i32 = 5;
/// How long the writer gathers records before a transaction.
const GATHER: Duration = Duration::from_millis(250);

/// An attempt's answer that is the answer sent back, kept once: in the
/// message's body. Earlier versions wrote relay-mode attempts into the
/// attempts table with this marker; they are still read. HL7 never starts
/// with NUL.
const SAME_AS_ANSWER: &[u8] = b"\0same";

/// Detections inserted by one statement.
const DETECTIONS_PER_INSERT: usize = 8;

/// The insert of `n` detections (1 to [`DETECTIONS_PER_INSERT`]), each
/// shape built once.
fn detections_insert(n: usize) -> &'static str {
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (1..=DETECTIONS_PER_INSERT)
            .map(|n| {
                let rows = vec!["(?,?)"; n].join(",");
                format!("INSERT OR IGNORE INTO message_detections (detection, id) VALUES {rows}")
            })
            .collect()
    });
    SQL.get(n.saturating_sub(1)).map_or("", String::as_str)
}

/// The relay-mode delivery attempt, kept in its message's body rather than
/// as a row of `attempts`: one row and one index entry fewer per message.
#[derive(Debug, Serialize, serde::Deserialize)]
struct BodyAttempt {
    at: i64,
    destination: String,
    result: String,
    class: String,
    answer: AttemptAnswer,
}

/// Where a body's attempt has its answer.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum AttemptAnswer {
    /// The answer sent back.
    Same,
    /// The body's IIS answer part.
    Own,
    /// The IIS did not answer.
    None,
}

enum Op {
    Record(Box<Record>),
    Attempt(Attempt),
    Resolve(Vec<i64>),
    Prune,
    Sync(std::sync::mpsc::SyncSender<()>),
}

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// ms since the epoch (the console writes it as RFC 3339 itself).
    #[serde(skip_serializing)]
    pub time: i64,
    pub user: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

/// Why the log could not be read or opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("message log {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Cause,
    },
    #[error("message log read failed: {0}")]
    Read(#[source] Cause),
    #[error("message log: the audit entry could not be written: {0}")]
    Audit(#[source] rusqlite::Error),
    #[error("message log: the audit writer stopped: {0}")]
    AuditStopped(#[source] tokio::task::JoinError),
}

/// The message log.
pub struct MessageLog {
    tx: std_mpsc::SyncSender<Op>,
    reader: Arc<Mutex<Connection>>,
    /// Audit entries are written here, one by one, synced, by the caller:
    /// an entry is on disk before the action it records goes on, and none
    /// waits in (or is dropped from) the writer's queue.
    auditor: Mutex<Connection>,
    /// Where the bodies are ([`bodies`]).
    bodies: std::path::PathBuf,
    next_id: AtomicI64,
    dropped: AtomicU64,
    pace: Arc<Pace>,
}

/// How far behind the writer is, and whether it runs as a normal thread to
/// catch up. It idles (SCHED_IDLE) while it keeps up, so the answers to
/// clinics never wait for it; once half the queue is waiting it is raised
/// to SCHED_OTHER (at nice [`RAISED_NICE`]), since a dropped record is worse than a slower
/// answer, and it goes back to idling once it has caught up.
#[derive(Default)]
struct Pace {
    waiting: AtomicUsize,
    /// The writer idles and may be raised.
    can_raise: AtomicBool,
    raised: AtomicBool,
    /// The writer thread's id (0 until it has started).
    tid: AtomicI32,
}

impl Pace {
    fn sent(&self) {
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        if waiting >= QUEUE / 2
            && self.can_raise.load(Ordering::Relaxed)
            && !self.raised.swap(true, Ordering::Relaxed)
        {
            let tid = self.tid.load(Ordering::Relaxed);
            if tid != 0 {
                writer_priority(Some(tid), false);
                tracing::debug!(
                    waiting,
                    "the message log writer is behind; raised to SCHED_OTHER"
                );
            }
        }
    }

    fn taken(&self) {
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(1))
            });
    }

    /// Called by the writer after each batch.
    fn settle(&self) {
        if self.raised.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed) < QUEUE / 32
        {
            let _ = writer_priority(Some(current_tid()), true);
            self.raised.store(false, Ordering::Relaxed);
        }
    }
}

/// Conditions on a message's own values; every given one must hold. The
/// console's search parameters carry the same, by the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Matching {
    pub sender: Option<String>,
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub patient_id: Option<String>,
    pub status: Option<String>,
    pub route: Option<String>,
    pub destination: Option<String>,
    pub detection: Option<String>,
    /// Text inside the received message (needs a bounded time range).
    pub contains: Option<String>,
}

impl Matching {
    /// The same conditions with each value trimmed, and dropped when empty
    /// or longer than 200 characters.
    pub fn trimmed(&self) -> Matching {
        let t = nonempty;
        Matching {
            sender: t(&self.sender),
            message_type: t(&self.message_type),
            control_id: t(&self.control_id),
            patient_id: t(&self.patient_id),
            status: t(&self.status),
            route: t(&self.route),
            destination: t(&self.destination),
            detection: t(&self.detection),
            contains: t(&self.contains),
        }
    }
}

/// A value as a condition: trimmed; none when empty or longer than 200
/// characters.
pub fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .map(str::to_string)
}

/// A search over the log; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub matching: Matching,
    /// Only messages with unresolved errors.
    pub unresolved: bool,
    /// Keyset: only ids below this.
    pub before: Option<i64>,
    pub limit: usize,
    /// Routes and destinations the asker may see (`None`: all).
    pub routes_allowed: Option<Vec<String>>,
    pub destinations_allowed: Option<Vec<String>>,
}

/// One message's metadata. What it serializes leaves out the time and the
/// patient id: the console writes the time as RFC 3339 and the patient id
/// masked unless an operator unmasks it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Meta {
    pub id: i64,
    /// ms since the epoch.
    #[serde(skip_serializing)]
    pub time: i64,
    pub listener: String,
    pub sender: String,
    #[serde(rename = "type")]
    pub message_type: String,
    pub control_id: String,
    #[serde(skip_serializing)]
    pub patient_id: String,
    pub route: String,
    pub destination: String,
    pub status: String,
    pub ack: String,
    pub detections: Vec<String>,
    pub latency_ms: f64,
    pub resolved: bool,
}

/// Per sender and day: messages, rejections, and how many reported race
/// and ethnicity and how many had them complete.
const QUALITY_COLUMNS: &str = "sender, date(received_at / 1000, 'unixepoch') AS day, COUNT(*),
    SUM(status IN ('rejected_by_izhub','rejected_by_iis')),
    SUM(instr(completeness, 'race=') > 0),
    SUM(instr(completeness, 'race=present') + instr(completeness, 'race=mapped') + instr(completeness, 'race=enriched') > 0),
    SUM(instr(completeness, 'ethnicity=') > 0),
    SUM(instr(completeness, 'ethnicity=present') + instr(completeness, 'ethnicity=mapped') + instr(completeness, 'ethnicity=enriched') > 0)";

/// A detection, the messages it was found in, and the newest of them.
pub type DetectionCount = (String, i64, i64);

/// One message in full.
#[derive(Debug, Clone)]
pub struct Full {
    pub meta: Meta,
    pub received: Vec<u8>,
    pub stages: String,
    pub issues: String,
    pub answer: Vec<u8>,
    pub attempts: Vec<AttemptRow>,
    /// The logged message this one reprocessed.
    pub reprocess_of: Option<i64>,
    /// Messages made by reprocessing this one.
    pub reprocessed_as: Vec<i64>,
}

/// One delivery attempt as logged.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub time: i64,
    pub destination: String,
    pub result: String,
    pub class: String,
    #[serde(skip)]
    pub answer: Option<Vec<u8>>,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Meta>,
    pub next: Option<i64>,
    /// A content search stopped before it had looked at the whole range.
    pub partial: bool,
}

fn open_conn(path: &Path) -> Result<Connection, LogError> {
    let err = |e: rusqlite::Error| LogError::Open {
        path: path.display().to_string(),
        source: Cause::new(e),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    // The log is not what makes an answer true (the journal is): NORMAL
    // keeps it consistent and spares an fsync per batch.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .map_err(err)?;
    Ok(conn)
}

impl MessageLog {
    /// Opens (creating) the log at `path`; prunes what is older than `keep`
    /// or beyond the newest `keep_messages`.
    ///
    /// `node` is the node's number in a cluster: its ids are numbered from
    /// it (see [`NODE_SHIFT`]).
    pub fn open(
        path: &Path,
        keep: Duration,
        keep_messages: u64,
        node: Option<i32>,
    ) -> Result<Arc<Self>, LogError> {
        // Messages hold PHI: the file is the engine user's alone, as the journal is.
        crate::store::private_files(path).map_err(|e| LogError::Open {
            path: path.display().to_string(),
            source: Cause::new(e),
        })?;
        // The schema first, before the switch to WAL rewrites the file's
        // header: a newer release's log is left exactly as it was.
        {
            let mut plain = Connection::open(path).map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
            let _ = plain.busy_timeout(Duration::from_secs(5));
            migrate(&mut plain).map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
        }
        let writer = open_conn(path)?;
        // A batch fits in the writer's page cache (no spilling mid-batch),
        // and the WAL is folded into the file every 32 MB rather than every
        // 4 MB, so index pages changed by every batch are written back once
        // per checkpoint instead of once per batch.
        writer
            .execute_batch("PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=8192;")
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
        // Room for every statement the writer prepares (the detection
        // inserts come in up to DETECTIONS_PER_INSERT shapes).
        writer.set_prepared_statement_cache_capacity(32);
        let base = i64::from(node.unwrap_or(0).clamp(0, MAX_NODE_NUMBER)) << NODE_SHIFT;
        let max: i64 = writer
            .query_row(
                "SELECT COALESCE(MAX(id), ?1) FROM messages WHERE id >= ?1 AND id < ?2",
                params![base, base + (1 << NODE_SHIFT)],
                |r| r.get(0),
            )
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
        let body_dir = bodies::dir_of(path);
        let body_writer = open_bodies(&writer, &body_dir).map_err(|detail| LogError::Open {
            path: body_dir.display().to_string(),
            source: Cause::text(detail),
        })?;
        let reader = open_conn(path)?;
        let auditor = open_conn(path)?;
        auditor
            .execute_batch("PRAGMA synchronous=FULL;")
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
        let (tx, rx) = std_mpsc::sync_channel(QUEUE);
        let pace = Arc::new(Pace::default());
        let writer_pace = pace.clone();
        std::thread::Builder::new()
            .name("izhub-message-log".into())
            .spawn(move || {
                writer_pace.tid.store(current_tid(), Ordering::Relaxed);
                let can_raise = writer_priority(None, true);
                writer_pace.can_raise.store(can_raise, Ordering::Relaxed);
                write_loop(writer, body_writer, rx, keep, keep_messages, &writer_pace)
            })
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                source: Cause::new(e),
            })?;
        Ok(Arc::new(MessageLog {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            auditor: Mutex::new(auditor),
            bodies: body_dir,
            next_id: AtomicI64::new(max + 1),
            dropped: AtomicU64::new(0),
            pace,
        }))
    }

    /// A new message id (time-ordered).
    pub fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, op: Op) {
        if self.tx.try_send(op).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.pace.sent();
        }
    }

    /// Logs a message (never waits).
    pub fn record(&self, record: Record) {
        self.send(Op::Record(Box::new(record)));
    }

    /// Logs a delivery attempt of a journaled message.
    pub fn attempt(&self, attempt: Attempt) {
        self.send(Op::Attempt(attempt));
    }

    /// Marks messages' errors resolved.
    pub fn resolve(&self, ids: Vec<i64>) {
        self.send(Op::Resolve(ids));
    }

    /// Writes an audit entry now, synced to disk. Blocking: call it off the
    /// async threads (the admin API's `audit` does).
    pub fn audit(
        &self,
        user: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> Result<(), LogError> {
        let conn = self.auditor.lock().unwrap_or_else(|p| p.into_inner());
        conn.prepare_cached(
            "INSERT INTO audit (at, user, action, target, result) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                crate::store::now_ms(),
                user,
                action,
                target,
                result
            ])
        })
        .map(|_| ())
        .map_err(LogError::Audit)
    }

    /// Prunes now (also done every minute).
    pub fn prune(&self) {
        self.send(Op::Prune);
    }

    /// Waits until everything sent before is written.
    pub fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Op::Sync(tx)).is_ok() {
            self.pace.sent();
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::*;

    /// The first page of `search` on `log`, never cancelled.
    fn first_page(log: &MessageLog, search: Search) -> Page {
        log.search(&search, &|| false).unwrap()
    }

    /// A search on the conditions `set` sets.
    fn matching(limit: usize, set: impl FnOnce(&mut Matching)) -> Search {
        let mut m = Matching::default();
        set(&mut m);
        Search {
            matching: m,
            limit,
            ..Search::default()
        }
    }

    /// Logs a relayed message of patient PX: its summary, the answer sent
    /// back and its delivery attempt; its id.
    fn relayed_record(
        log: &MessageLog,
        summary: Summary,
        answer: Vec<u8>,
        attempt: super::super::AttemptInfo,
    ) -> i64 {
        let id = log.next_id();
        let mut r = Record::of(id, crate::store::now_ms(), summary, "PX".into());
        r.message.took = Duration::from_micros(1);
        r.message.received = b"MSH|^~\\&|EHR\r".to_vec();
        r.message.answer = answer.into();
        r.message.attempt = Some(attempt);
        log.record(r);
        id
    }

    /// Thirty messages from senders A and B (every tenth refused, every
    /// fifth with a detection) and a delivery attempt of C5.
    fn seed_thirty(log: &MessageLog) {
        for n in 0..30 {
            let outcome = if n % 10 == 0 {
                Outcome::RejectedByIzhub
            } else {
                Outcome::Accepted
            };
            let det: &[&str] = if n % 5 == 0 {
                &["vaccination-lot-missing"]
            } else {
                &[]
            };
            record(log, n, if n % 2 == 0 { "A" } else { "B" }, outcome, det);
        }
        log.attempt(Attempt {
            journal_id: 1005,
            at: 1,
            destination: "mi".into(),
            result: "delivered".into(),
            class: "accepted".into(),
            answer: None,
            final_outcome: Some(Outcome::Accepted),
            ack: "AA".into(),
        });
        log.sync();
    }

    fn summary(sender: &str, control_id: &str, outcome: Outcome, ack: &str) -> Summary {
        Summary {
            listener: "ehr".into(),
            sender: sender.into(),
            message_type: "VXU^V04".into(),
            control_id: control_id.into(),
            route: "vxu".into(),
            destination: "mi".into(),
            outcome,
            ack: ack.into(),
        }
    }

    fn record(
        log: &MessageLog,
        n: i64,
        sender: &str,
        outcome: Outcome,
        detections: &[&str],
    ) -> i64 {
        let id = log.next_id();
        let mut r = Record::of(
            id,
            crate::store::now_ms() - 1000 + n,
            summary(sender, &format!("C{n}"), outcome, "AA"),
            format!("P{}", n % 3),
        );
        r.detections = detections.iter().map(|d| d.to_string()).collect();
        r.message.took = Duration::from_micros(2000);
        r.message.received = format!("MSH|^~\\&|A|{sender}\rPID|1||P{}\r", n % 3).into_bytes();
        r.message.answer = bytes::Bytes::from_static(b"MSH|^~\\&\rMSA|AA|C1\r");
        r.message.journal_ids = vec![1000 + n];
        log.record(r);
        id
    }

    #[test]
    fn a_relayed_answer_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let log = MessageLog::open(&path, Duration::from_secs(86_400), 1_000, None).unwrap();
        let relayed = b"MSH|^~\\&|IIS\rMSA|AA|C1\r".to_vec();
        let mut ids = Vec::new();
        // The IIS's answer relayed as it came, then one the engine changed.
        for (n, sent) in [relayed.clone(), b"MSH|^~\\&|IZHUB\rMSA|AE|C2\r".to_vec()]
            .into_iter()
            .enumerate()
        {
            let attempt = super::super::AttemptInfo {
                at: 1,
                destination: "mi".into(),
                result: "delivered".into(),
                class: "accepted".into(),
                answer: Some(relayed.clone().into()),
            };
            let sent_back = summary("CLINIC", &format!("C{n}"), Outcome::Accepted, "AA");
            ids.push(relayed_record(&log, sent_back, sent, attempt));
        }
        // A delivery that failed: no answer from the IIS.
        let attempt = super::super::AttemptInfo {
            at: 2,
            destination: "mi".into(),
            result: "failed".into(),
            class: "timeout".into(),
            answer: None,
        };
        let sent_back = summary("CLINIC", "C3", Outcome::Errored, "AE");
        let answer = b"MSH|^~\\&|IZHUB\rMSA|AE|C3\r".to_vec();
        let failed = relayed_record(&log, sent_back, answer, attempt);
        log.sync();
        for id in &ids {
            let full = log.get(*id).unwrap().unwrap();
            assert_eq!(full.attempts[0].answer.as_deref(), Some(relayed.as_slice()));
        }
        let f = log.get(failed).unwrap().unwrap();
        assert_eq!(
            (
                f.attempts.len(),
                f.attempts[0].result.as_str(),
                f.attempts[0].class.as_str(),
                f.attempts[0].answer.is_none()
            ),
            (1, "failed", "timeout", true)
        );
        let c = Connection::open(&path).unwrap();
        let stored: Vec<Vec<u8>> = c
            .prepare("SELECT answer FROM attempts ORDER BY message_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Both are in their message's body, not in the attempts table.
        assert!(stored.is_empty());
        let second = log.get(ids[1]).unwrap().unwrap();
        assert_eq!(second.answer, b"MSH|^~\\&|IZHUB\rMSA|AE|C2\r");
        assert_eq!(
            (
                second.attempts.len(),
                second.attempts[0].destination.as_str(),
                second.attempts[0].result.as_str(),
                second.attempts[0].class.as_str(),
                second.attempts[0].time
            ),
            (1, "mi", "delivered", "accepted", 1)
        );
        // An attempt an earlier version wrote with the marker still reads
        // as the answer sent back, in time order after the body's.
        c.execute(
            "INSERT INTO attempts (message_id, at, destination, result, class, answer) VALUES (?1, 5, 'mi', 'delivered', 'accepted', ?2)",
            params![ids[1], SAME_AS_ANSWER],
        )
        .unwrap();
        let again = log.get(ids[1]).unwrap().unwrap();
        assert_eq!(again.attempts.len(), 2);
        assert_eq!(again.attempts[1].time, 5);
        assert_eq!(
            again.attempts[1].answer.as_deref(),
            Some(b"MSH|^~\\&|IZHUB\rMSA|AE|C2\r".as_slice())
        );
        assert_eq!(
            again.attempts[0].answer.as_deref(),
            Some(relayed.as_slice())
        );
    }

    #[test]
    fn search_pages_and_details() {
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(
            &dir.path().join("m.db"),
            Duration::from_secs(86_400),
            1_000,
            None,
        )
        .unwrap();
        seed_thirty(&log);
        let first = first_page(&log, matching(10, |m| m.sender = Some("A".into())));
        assert_eq!(first.items.len(), 10);
        assert!(
            first.items.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        let rest = first_page(
            &log,
            Search {
                before: first.next,
                ..matching(10, |m| m.sender = Some("A".into()))
            },
        );
        assert_eq!(rest.items.len(), 5);
        assert_eq!(rest.next, None);
        let found = first_page(&log, matching(5, |m| m.control_id = Some("C7".into())));
        assert_eq!(found.items.len(), 1);
        let det = first_page(
            &log,
            matching(50, |m| m.detection = Some("vaccination-lot-missing".into())),
        );
        assert_eq!(det.items.len(), 6);
        let unresolved = || {
            first_page(
                &log,
                Search {
                    unresolved: true,
                    limit: 50,
                    ..Search::default()
                },
            )
        };
        let bad = unresolved();
        assert_eq!(bad.items.len(), 3);
        log.resolve(bad.items.iter().map(|m| m.id).collect());
        log.sync();
        let bad = unresolved();
        assert!(bad.items.is_empty());
        let limited = first_page(
            &log,
            Search {
                routes_allowed: Some(vec!["other".into()]),
                limit: 50,
                ..Search::default()
            },
        );
        assert!(
            limited.items.is_empty(),
            "a user limited to other routes sees nothing"
        );
        let text = first_page(
            &log,
            matching(50, |m| m.contains = Some("PID|1||P2".into())),
        );
        assert_eq!(text.items.len(), 10);
        let full = log.get(found.items[0].id).unwrap().unwrap();
        assert!(full.received.starts_with(b"MSH|"));
        let with_attempt = first_page(&log, matching(5, |m| m.control_id = Some("C5".into())));
        let full = log.get(with_attempt.items[0].id).unwrap().unwrap();
        assert_eq!(full.attempts.len(), 1);
        assert_eq!(full.meta.status, "accepted");
        log.audit("olivia", "reprocess", "message 5", "ok").unwrap();
        log.sync();
        assert_eq!(log.audit_entries(None, 10).unwrap()[0].action, "reprocess");
    }

    #[test]
    fn an_audit_entry_is_on_disk_when_audit_returns_even_with_the_queue_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let log = MessageLog::open(&path, Duration::from_secs(3600), 1_000_000, None).unwrap();
        // More records than the writer's queue holds: some are dropped.
        for i in 0..(QUEUE as i64 + 1_000) {
            record(&log, i, "C-SENDER", Outcome::Accepted, &[]);
        }
        log.audit("olivia", "unmask", "message 7", "shown").unwrap();
        // Read by another connection, without waiting for the writer.
        let other = Connection::open(&path).unwrap();
        let n: i64 = other
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE user = 'olivia' AND action = 'unmask'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn bodies_outlive_a_restart_and_go_with_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let segments = || {
            let mut s: Vec<String> = std::fs::read_dir(dir.path().join("m.db-bodies"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            s.sort();
            s
        };
        let open = || MessageLog::open(&path, Duration::from_secs(86_400), 10, None).unwrap();
        let log = open();
        let first: Vec<i64> = (0..25)
            .map(|n| record(&log, n, "A", Outcome::Accepted, &[]))
            .collect();
        log.sync();
        drop(log);
        let log = open();
        let full = log.get(first[24]).unwrap().unwrap();
        assert_eq!(full.received, b"MSH|^~\\&|A|A\rPID|1||P0\r");
        assert_eq!(full.answer, b"MSH|^~\\&\rMSA|AA|C1\r");
        let second: Vec<i64> = (25..40)
            .map(|n| record(&log, n, "A", Outcome::Accepted, &[]))
            .collect();
        log.sync();
        assert_eq!(segments(), ["0000000001.body", "0000000002.body"]);
        // Keeping the newest 10: every message of the first segment goes,
        // and the segment with them.
        log.prune();
        log.sync();
        assert_eq!(segments(), ["0000000002.body"]);
        assert!(log.get(first[24]).unwrap().is_none());
        assert_eq!(
            log.get(second[14]).unwrap().unwrap().received,
            b"MSH|^~\\&|A|A\rPID|1||P0\r"
        );
        // A message logged before bodies had their own files.
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("INSERT INTO messages (id, received_at, listener, sender, type, control_id, patient_id, route, destination, status, ack, detections, latency_us) VALUES (5000, 1, 'l', 's', 'VXU^V04', 'C', 'P', 'r', 'd', 'accepted', 'AA', '', 1); INSERT INTO message_bodies (id, received, stages, issues, answer) VALUES (5000, X'4D5348', '[]', '', X'4D5341');").unwrap();
        let old = log.get(5000).unwrap().unwrap();
        assert_eq!(
            (old.received.as_slice(), old.answer.as_slice()),
            (&b"MSH"[..], &b"MSA"[..])
        );
    }

    #[test]
    fn pruned_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(
            &dir.path().join("m.db"),
            Duration::from_secs(86_400),
            10,
            None,
        )
        .unwrap();
        for n in 0..25 {
            record(&log, n, "A", Outcome::Accepted, &["x"]);
        }
        log.prune();
        log.sync();
        let page = log
            .search(
                &Search {
                    limit: 200,
                    ..Search::default()
                },
                &|| false,
            )
            .unwrap();
        assert_eq!(page.items.len(), 10);
        let det = log
            .search(
                &Search {
                    matching: Matching {
                        detection: Some("x".into()),
                        ..Matching::default()
                    },
                    limit: 200,
                    ..Search::default()
                },
                &|| false,
            )
            .unwrap();
        assert_eq!(det.items.len(), 10);
    }
}
