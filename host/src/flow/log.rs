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
use super::{Attempt, Record};

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

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    listener TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    control_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    ack TEXT NOT NULL,
    detections TEXT NOT NULL,
    latency_us INTEGER NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    completeness TEXT NOT NULL DEFAULT '',
    reprocess_of INTEGER,
    body_ref INTEGER,
    body_len INTEGER
);
CREATE INDEX IF NOT EXISTS messages_time ON messages(received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender, id);
CREATE INDEX IF NOT EXISTS messages_control ON messages(control_id, id);
CREATE INDEX IF NOT EXISTS messages_patient ON messages(patient_id, id);
CREATE INDEX IF NOT EXISTS messages_status ON messages(status, id);
CREATE INDEX IF NOT EXISTS messages_destination ON messages(destination, id);
CREATE INDEX IF NOT EXISTS messages_route ON messages(route, id);
CREATE TABLE IF NOT EXISTS journal_links (
    journal_id INTEGER PRIMARY KEY,
    id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_links_message ON journal_links(id);
CREATE TABLE IF NOT EXISTS message_detections (
    detection TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (detection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS body_segments (
    seg INTEGER PRIMARY KEY,
    max_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS message_bodies (
    id INTEGER PRIMARY KEY,
    received BLOB NOT NULL,
    stages TEXT NOT NULL,
    issues TEXT NOT NULL,
    answer BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    message_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    destination TEXT NOT NULL,
    result TEXT NOT NULL,
    class TEXT NOT NULL,
    answer BLOB
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts(message_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
"#;

enum Op {
    Record(Box<Record>),
    Attempt(Attempt),
    Resolve(Vec<i64>),
    Audit(AuditEntry),
    Prune,
    Sync(std::sync::mpsc::SyncSender<()>),
}

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// ms since the epoch.
    pub time: i64,
    pub user: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

/// Why the log could not be read or opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("message log {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("message log read failed: {0}")]
    Read(String),
}

/// The message log.
pub struct MessageLog {
    tx: std_mpsc::SyncSender<Op>,
    reader: Arc<Mutex<Connection>>,
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

/// A search over the log; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub sender: Option<String>,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub patient_id: Option<String>,
    pub status: Option<String>,
    pub route: Option<String>,
    pub destination: Option<String>,
    pub detection: Option<String>,
    /// Only messages with unresolved errors.
    pub unresolved: bool,
    /// Text inside the received message (needs a bounded time range).
    pub contains: Option<String>,
    /// Keyset: only ids below this.
    pub before: Option<i64>,
    pub limit: usize,
    /// Routes and destinations the asker may see (`None`: all).
    pub routes_allowed: Option<Vec<String>>,
    pub destinations_allowed: Option<Vec<String>>,
}

/// One message's metadata.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Meta {
    pub id: i64,
    /// ms since the epoch.
    pub time: i64,
    pub listener: String,
    pub sender: String,
    #[serde(rename = "type")]
    pub message_type: String,
    pub control_id: String,
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
        detail: e.to_string(),
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
            detail: e.to_string(),
        })?;
        let writer = open_conn(path)?;
        // A batch fits in the writer's page cache (no spilling mid-batch),
        // and the WAL is folded into the file every 32 MB rather than every
        // 4 MB, so index pages changed by every batch are written back once
        // per checkpoint instead of once per batch.
        writer
            .execute_batch("PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=8192;")
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        // Room for every statement the writer prepares (the detection
        // inserts come in up to DETECTIONS_PER_INSERT shapes).
        writer.set_prepared_statement_cache_capacity(32);
        writer.execute_batch(SCHEMA).map_err(|e| LogError::Open {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        migrate(&writer).map_err(|e| LogError::Open {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let base = i64::from(node.unwrap_or(0).clamp(0, MAX_NODE_NUMBER)) << NODE_SHIFT;
        let max: i64 = writer
            .query_row(
                "SELECT COALESCE(MAX(id), ?1) FROM messages WHERE id >= ?1 AND id < ?2",
                params![base, base + (1 << NODE_SHIFT)],
                |r| r.get(0),
            )
            .map_err(|e| LogError::Open {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        let body_dir = bodies::dir_of(path);
        let body_writer = open_bodies(&writer, &body_dir).map_err(|detail| LogError::Open {
            path: body_dir.display().to_string(),
            detail,
        })?;
        let reader = open_conn(path)?;
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
                detail: e.to_string(),
            })?;
        Ok(Arc::new(MessageLog {
            tx,
            reader: Arc::new(Mutex::new(reader)),
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

    /// Writes an audit entry.
    pub fn audit(&self, user: &str, action: &str, target: &str, result: &str) {
        self.send(Op::Audit(AuditEntry {
            id: 0,
            time: crate::store::now_ms(),
            user: user.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: result.to_string(),
        }));
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

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, LogError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| LogError::Read(e.to_string()))
    }

    /// Messages matching `search`, newest first.
    pub fn search(&self, search: &Search, cancel: &dyn Fn() -> bool) -> Result<Page, LogError> {
        let limit = search.limit.clamp(1, 200);
        let (mut sql, mut args) = (String::new(), Vec::<rusqlite::types::Value>::new());
        use rusqlite::types::Value as V;
        sql.push_str("SELECT m.id, m.received_at, m.listener, m.sender, m.type, m.control_id, m.patient_id, m.route, m.destination, m.status, m.ack, m.detections, m.latency_us, m.resolved FROM messages m");
        // With a detection, walk its index (detection, id) newest first and
        // look each message up; else walk the messages newest first.
        let key = if search.detection.is_some() {
            "md.id"
        } else {
            "m.id"
        };
        if let Some(d) = &search.detection {
            sql.push_str(" JOIN message_detections md ON md.id = m.id AND md.detection = ?");
            args.push(V::Text(d.clone()));
        }
        sql.push_str(" WHERE 1=1");
        let mut eq = |col: &str, v: &Option<String>| {
            if let Some(v) = v {
                sql.push_str(&format!(" AND m.{col} = ?"));
                args.push(V::Text(v.clone()));
            }
        };
        eq("sender", &search.sender);
        eq("type", &search.message_type);
        eq("control_id", &search.control_id);
        eq("patient_id", &search.patient_id);
        eq("status", &search.status);
        eq("route", &search.route);
        eq("destination", &search.destination);
        if let Some(from) = search.from_ms {
            sql.push_str(" AND m.received_at >= ?");
            args.push(V::Integer(from));
        }
        if let Some(to) = search.to_ms {
            sql.push_str(" AND m.received_at <= ?");
            args.push(V::Integer(to));
        }
        if search.unresolved {
            sql.push_str(" AND m.resolved = 0 AND m.status IN ('rejected_by_izhub','rejected_by_iis','errored')");
        }
        for (col, allowed) in [
            ("route", &search.routes_allowed),
            ("destination", &search.destinations_allowed),
        ] {
            if let Some(allowed) = allowed {
                sql.push_str(&format!(" AND m.{col} IN ("));
                for (i, a) in allowed.iter().enumerate() {
                    sql.push_str(if i == 0 { "?" } else { ",?" });
                    args.push(V::Text(a.clone()));
                }
                if allowed.is_empty() {
                    sql.push_str("NULL");
                }
                sql.push(')');
            }
        }
        let Some(needle) = &search.contains else {
            if let Some(before) = search.before {
                sql.push_str(&format!(" AND {key} < ?"));
                args.push(V::Integer(before));
            }
            sql.push_str(&format!(" ORDER BY {key} DESC LIMIT ?"));
            args.push(V::Integer(limit as i64 + 1));
            let mut items = self.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), meta_of)?;
                rows.collect::<rusqlite::Result<Vec<Meta>>>()
            })?;
            let next = (items.len() > limit).then(|| {
                items.truncate(limit);
                items.last().map(|m| m.id)
            });
            return Ok(Page {
                items,
                next: next.flatten(),
                partial: false,
            });
        };
        // Content search: batches of ids walked newest first, each body
        // looked at, until the page is full, the time is up or the asker
        // went away.
        let started = Instant::now();
        let needle = needle.as_bytes().to_vec();
        let mut items = Vec::new();
        let mut cursor = search.before;
        let mut partial = false;
        loop {
            let mut batch_sql = sql.clone();
            let mut batch_args = args.clone();
            if let Some(c) = cursor {
                batch_sql.push_str(&format!(" AND {key} < ?"));
                batch_args.push(V::Integer(c));
            }
            batch_sql.push_str(&format!(" ORDER BY {key} DESC LIMIT 500"));
            let batch = self.read(|c| {
                let mut stmt = c.prepare_cached(&batch_sql)?;
                let rows = stmt.query_map(params_from_iter(batch_args.iter()), meta_of)?;
                rows.collect::<rusqlite::Result<Vec<Meta>>>()
            })?;
            let Some(last) = batch.last().map(|m| m.id) else {
                break;
            };
            for m in batch {
                let body = self.body(m.id)?;
                if body.is_some_and(|b| memchr::memmem::find(&b.received, &needle).is_some()) {
                    items.push(m);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if items.len() > limit {
                break;
            }
            cursor = Some(last);
            if started.elapsed() > Duration::from_secs(2) || cancel() {
                partial = true;
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.id)
        } else if partial {
            cursor
        } else {
            None
        };
        Ok(Page {
            items,
            next,
            partial,
        })
    }

    /// Every message a search finds, newest first, at most `cap`, walked
    /// page by page (for actions on a filtered set and for reports).
    pub fn search_all(&self, search: &Search, cap: usize) -> Result<Vec<Meta>, LogError> {
        let mut search = search.clone();
        search.limit = 500;
        let mut all = Vec::new();
        loop {
            let page = self.search(&search, &|| false)?;
            all.extend(page.items);
            match page.next {
                Some(n) if all.len() < cap => search.before = Some(n),
                _ => break,
            }
        }
        all.truncate(cap);
        Ok(all)
    }

    /// One message in full.
    pub fn get(&self, id: i64) -> Result<Option<Full>, LogError> {
        let found = self.read(|c| {
            let meta = c
                .prepare_cached("SELECT id, received_at, listener, sender, type, control_id, patient_id, route, destination, status, ack, detections, latency_us, resolved FROM messages WHERE id = ?")?
                .query_row(params![id], meta_of)
                .optional()?;
            let Some(meta) = meta else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT at, destination, result, class, answer FROM attempts WHERE message_id = ? ORDER BY at, rowid",
            )?;
            let attempts = stmt
                .query_map(params![id], |r| {
                    Ok(AttemptRow {
                        time: r.get(0)?,
                        destination: r.get(1)?,
                        result: r.get(2)?,
                        class: r.get(3)?,
                        answer: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let reprocess_of: Option<i64> = c
                .prepare_cached("SELECT reprocess_of FROM messages WHERE id = ?")?
                .query_row(params![id], |r| r.get(0))
                .optional()?
                .flatten();
            let reprocessed_as = c
                .prepare_cached("SELECT id FROM messages WHERE reprocess_of = ? ORDER BY id LIMIT 100")?
                .query_map(params![id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            let place = body_place(c, id)?;
            Ok(Some((meta, reprocess_of, reprocessed_as, attempts, place)))
        })?;
        let Some((meta, reprocess_of, reprocessed_as, attempts, place)) = found else {
            return Ok(None);
        };
        let body = self.read_body(id, place)?.unwrap_or_default();
        let mut attempts: Vec<AttemptRow> = attempts
            .into_iter()
            .map(|mut a| {
                if a.answer.as_deref() == Some(SAME_AS_ANSWER) {
                    a.answer = Some(body.answer.clone());
                }
                a
            })
            .collect();
        // The relay-mode delivery, kept in the body.
        if let Ok(a) = serde_json::from_slice::<BodyAttempt>(&body.attempt) {
            attempts.push(AttemptRow {
                time: a.at,
                destination: a.destination,
                result: a.result,
                class: a.class,
                answer: match a.answer {
                    AttemptAnswer::Same => Some(body.answer.clone()),
                    AttemptAnswer::Own => Some(body.iis_answer.clone()),
                    AttemptAnswer::None => None,
                },
            });
            attempts.sort_by_key(|a| a.time);
        }
        Ok(Some(Full {
            meta,
            reprocess_of,
            reprocessed_as,
            received: body.received,
            stages: body.stages,
            issues: body.issues,
            answer: body.answer,
            attempts,
        }))
    }

    /// A message's body: from its segment, or from `message_bodies` for a
    /// message logged before bodies moved out of the file.
    fn body(&self, id: i64) -> Result<Option<Body>, LogError> {
        let place = self.read(|c| body_place(c, id))?;
        self.read_body(id, place)
    }

    fn read_body(&self, id: i64, place: Option<BodyPlace>) -> Result<Option<Body>, LogError> {
        match place {
            None => Ok(None),
            Some(BodyPlace::Segment(at)) => bodies::read(&self.bodies, at, id)
                .map_err(|e| LogError::Read(format!("message {id}'s body: {e}"))),
            Some(BodyPlace::Row(old)) => Ok(old),
        }
    }

    /// The newest audit entries.
    pub fn audit_entries(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at, user, action, target, result FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            )?;
            stmt.query_map(params![before.unwrap_or(i64::MAX), limit.clamp(1, 500) as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    user: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: r.get(5)?,
                })
            })?
            .collect()
        })
    }

    /// Per sender and day since `since_ms`: messages, rejections, and how
    /// complete race and ethnicity were (as the race-ethnicity plugin
    /// reported them).
    #[allow(clippy::type_complexity)]
    pub fn quality(
        &self,
        since_ms: i64,
        sender: Option<&str>,
    ) -> Result<Vec<(String, String, i64, i64, serde_json::Value)>, LogError> {
        self.read(|c| {
            // One sender: its index, not every message of the period.
            let sql = match sender {
                Some(_) => format!(
                    "SELECT {QUALITY_COLUMNS} FROM messages INDEXED BY messages_sender
                     WHERE sender = ?2 AND received_at >= ?1 GROUP BY day ORDER BY day"
                ),
                None => format!(
                    "SELECT {QUALITY_COLUMNS} FROM messages WHERE received_at >= ?1 AND ?2 IS NULL
                     GROUP BY sender, day ORDER BY sender, day"
                ),
            };
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params![since_ms, sender], |r| {
                let n = |i: usize| -> rusqlite::Result<i64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0))
                };
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    n(2)?,
                    n(3)?,
                    serde_json::json!({
                        "race_reported": n(4)?, "race_complete": n(5)?,
                        "ethnicity_reported": n(6)?, "ethnicity_complete": n(7)?,
                    }),
                ))
            })?
            .collect()
        })
    }

    /// The journal rows of a logged message (commit mode).
    pub fn journal_ids(&self, id: i64) -> Result<Vec<i64>, LogError> {
        self.read(|c| {
            c.prepare_cached("SELECT journal_id FROM journal_links WHERE id = ?1")?
                .query_map(params![id], |r| r.get(0))?
                .collect()
        })
    }

    /// The detections of a sender's messages since `since_ms`: id → messages.
    /// Per sender, the detections found since `since_ms`, most messages
    /// first (at most `limit` each), with the newest message that had it.
    /// One walk over the detections, not one per sender.
    pub fn detections_by_sender(
        &self,
        since_ms: i64,
        sender: Option<&str>,
        limit: usize,
    ) -> Result<HashMap<String, Vec<DetectionCount>>, LogError> {
        let rows: Vec<(String, String, i64, i64)> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.sender, md.detection, COUNT(*), MAX(m.id) FROM message_detections md JOIN messages m ON m.id = md.id
                 WHERE m.received_at >= ?1 AND (?2 IS NULL OR m.sender = ?2)
                 GROUP BY m.sender, md.detection",
            )?;
            stmt.query_map(params![since_ms, sender], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })?;
        let mut out: HashMap<String, Vec<DetectionCount>> = HashMap::new();
        for (s, d, n, example) in rows {
            out.entry(s).or_default().push((d, n, example));
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(limit);
        }
        Ok(out)
    }

    /// Writes `n` synthetic messages (for benchmarks): realistic metadata
    /// over `senders` senders and `days` days, bodies from `sample`.
    pub fn seed(&self, n: u64, sample: &[u8], progress: &dyn Fn(u64)) -> Result<(), LogError> {
        let now = crate::store::now_ms();
        let span = 30 * 86_400_000i64;
        let mut done = 0;
        while done < n {
            let chunk = (n - done).min(10_000);
            let records: Vec<Record> = (0..chunk)
                .map(|k| {
                    let i = done + k;
                    let id = self.next_id();
                    let status = match i % 20 {
                        0 => super::Outcome::RejectedByIzhub,
                        1 => super::Outcome::RejectedByIis,
                        2..=5 => super::Outcome::AcceptedWithWarnings,
                        _ => super::Outcome::Accepted,
                    };
                    Record {
                        id,
                        received_at: now - span + (span / n.max(1) as i64) * i as i64,
                        listener: "ehr".into(),
                        sender: format!("CLINIC-{}", i % 200),
                        message_type: "VXU^V04".into(),
                        control_id: format!("SEED-{i}"),
                        patient_id: format!("P{}", i % 250_000),
                        route: format!("route-{}", i % 200),
                        destination: format!("iis-{}", i % 5),
                        outcome: status,
                        ack: if matches!(status, super::Outcome::RejectedByIzhub) {
                            "AE"
                        } else {
                            "AA"
                        }
                        .into(),
                        detections: if i % 7 == 0 {
                            vec!["vaccination-lot-missing".into()]
                        } else {
                            Vec::new()
                        },
                        latency_us: 1_500,
                        received: sample.to_vec(),
                        stages: String::new(),
                        issues: String::new(),
                        answer: bytes::Bytes::new(),
                        journal_ids: Vec::new(),
                        attempt: None,
                        completeness: if i % 3 == 0 {
                            "race=missing ethnicity=present".into()
                        } else {
                            "race=present ethnicity=present".into()
                        },
                        reprocess_of: None,
                    }
                })
                .collect();
            for r in records {
                // Seeding may wait for the writer: nothing is answered here.
                let mut op = Op::Record(Box::new(r));
                loop {
                    match self.tx.try_send(op) {
                        Ok(()) => break,
                        Err(std_mpsc::TrySendError::Full(back)) => {
                            op = back;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(std_mpsc::TrySendError::Disconnected(_)) => {
                            return Err(LogError::Read("the log writer stopped".into()));
                        }
                    }
                }
            }
            done += chunk;
            progress(done);
        }
        self.sync();
        Ok(())
    }
}

fn meta_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Meta> {
    let detections: String = r.get(11)?;
    Ok(Meta {
        id: r.get(0)?,
        time: r.get(1)?,
        listener: r.get(2)?,
        sender: r.get(3)?,
        message_type: r.get(4)?,
        control_id: r.get(5)?,
        patient_id: r.get(6)?,
        route: r.get(7)?,
        destination: r.get(8)?,
        status: r.get(9)?,
        ack: r.get(10)?,
        detections: detections
            .split(' ')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        latency_ms: r.get::<_, i64>(12)? as f64 / 1000.0,
        resolved: r.get::<_, i64>(13)? != 0,
    })
}

/// Where a logged message's body is.
enum BodyPlace {
    /// In a segment file.
    Segment(BodyRef),
    /// Logged before bodies had files of their own: in `message_bodies`.
    Row(Option<Body>),
}

/// Where message `id`'s body is (`None`: no such message).
fn body_place(c: &Connection, id: i64) -> rusqlite::Result<Option<BodyPlace>> {
    let at = c
        .prepare_cached("SELECT body_ref, body_len FROM messages WHERE id = ?")?
        .query_row(params![id], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    Ok(match at {
        None => None,
        Some((Some(at), Some(len))) => Some(BodyPlace::Segment(BodyRef { at, len })),
        Some(_) => Some(BodyPlace::Row(
            c.prepare_cached(
                "SELECT received, stages, issues, answer FROM message_bodies WHERE id = ?",
            )?
            .query_row(params![id], |r| {
                Ok(Body {
                    received: r.get(0)?,
                    stages: r.get(1)?,
                    issues: r.get(2)?,
                    answer: r.get(3)?,
                    iis_answer: Vec::new(),
                    attempt: Vec::new(),
                })
            })
            .optional()?,
        )),
    })
}

/// Opens the bodies' folder: segments no row points into are deleted, and
/// writing starts in a new segment.
fn open_bodies(conn: &Connection, dir: &Path) -> Result<bodies::Writer, String> {
    bodies::make_dir(dir).map_err(|e| e.to_string())?;
    let known = conn
        .prepare("SELECT seg FROM body_segments")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(|n| u64::try_from(n).unwrap_or(0)))
                .collect::<rusqlite::Result<std::collections::BTreeSet<u64>>>()
        })
        .map_err(|e| e.to_string())?;
    let last = bodies::tidy(dir, &known).map_err(|e| e.to_string())?;
    Ok(bodies::Writer::new(dir.to_path_buf(), last))
}

/// Brings a log written by an earlier version up to this schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_reprocess_of: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'reprocess_of'")?
        .exists([])?;
    if !has_reprocess_of {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN reprocess_of INTEGER")?;
    }
    // Bodies moved to segment files; rows written before keep theirs in
    // message_bodies (body_ref NULL).
    let has_body_ref: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'body_ref'")?
        .exists([])?;
    if !has_body_ref {
        conn.execute_batch(
            "ALTER TABLE messages ADD COLUMN body_ref INTEGER; ALTER TABLE messages ADD COLUMN body_len INTEGER;",
        )?;
    }
    // Only reprocessed messages are in this index.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_reprocess_of ON messages(reprocess_of) WHERE reprocess_of IS NOT NULL",
    )
}

/// Sets the writer's priority. Idle is SCHED_IDLE where the engine may
/// leave it again (root, CAP_SYS_NICE, or an RLIMIT_NICE of 20, systemd's
/// `LimitNICE=20`): the writer then runs only on a core nothing else wants
/// and gives way at once when a connection's task wakes, and is raised to
/// SCHED_OTHER at nice [`RAISED_NICE`] when it falls behind. Elsewhere it runs at nice 19 all
/// the time and is never raised. Returns whether it can be raised. `tid`
/// names the writer when another thread changes it (`None`: the caller).
fn writer_priority(tid: Option<i32>, idle: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        if tid.is_none() && idle && !sched::may_leave_idle() {
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
                tracing::debug!(error = %e, "the message log writer keeps its priority");
            }
            return false;
        }
        if tid.is_none() && idle {
            // Raised, it runs at this nice value: it needs a tenth of a core
            // to keep pace with a saturated engine, and at nice 0 it would
            // take a third of the machine in bursts while it catches up.
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), RAISED_NICE) {
                tracing::debug!(error = %e, "the message log writer keeps its nice value");
            }
        }
        if let Err(e) = sched::set(tid.unwrap_or(0), idle) {
            tracing::debug!(error = %e, idle, "the message log writer keeps its scheduling policy");
            return false;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, idle);
        false
    }
}

/// The calling thread's id, for [`writer_priority`].
fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::gettid().as_raw_nonzero().get()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sched {
    /// Whether a thread put under SCHED_IDLE may go back to SCHED_OTHER
    /// (tried on a thread of its own, which then ends).
    pub fn may_leave_idle() -> bool {
        std::thread::Builder::new()
            .name("izhub-sched-probe".into())
            .spawn(|| set(0, true).is_ok() && set(0, false).is_ok())
            .ok()
            .and_then(|t| t.join().ok())
            .unwrap_or(false)
    }

    /// Puts thread `tid` (0: the caller) under SCHED_IDLE, or back under
    /// SCHED_OTHER.
    pub fn set(tid: i32, idle: bool) -> std::io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        // SAFETY: `sched_setscheduler` reads `param`, a valid, initialized
        // sched_param that outlives the call, and changes only the policy of
        // thread `tid` (one of this process's, or the caller); both policies
        // take priority 0.
        let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn write_loop(
    mut conn: Connection,
    mut body_writer: bodies::Writer,
    rx: std_mpsc::Receiver<Op>,
    keep: Duration,
    keep_messages: u64,
    pace: &Pace,
) {
    let mut last_prune = Instant::now();
    let prune_every = Duration::from_secs(60);
    // The last batch was full: more is waiting, so no gathering pause.
    let mut behind = false;
    loop {
        let first = match rx.recv_timeout(prune_every) {
            Ok(op) => Some(op),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Let records gather before writing: one transaction per many
        // messages dirties each index page once, not once per message. The
        // writer sleeps meanwhile rather than wait on the queue, since a
        // record sent to a waiting receiver wakes it (a syscall on the ACK
        // path, and a wakeup per message); a sleeping one it does not.
        // A sync (an operator waiting for the log) is written at once.
        let mut ops: Vec<Op> = first.into_iter().collect();
        if !behind && matches!(ops.last(), Some(op) if !matches!(op, Op::Sync(_))) {
            std::thread::sleep(GATHER);
        }
        while ops.len() < BATCH && !matches!(ops.last(), None | Some(Op::Sync(_))) {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        behind = ops.len() >= BATCH;
        for _ in &ops {
            pace.taken();
        }
        let mut waiters = Vec::new();
        let mut prune = last_prune.elapsed() >= prune_every;
        if let Err(e) = write_batch(&mut conn, &mut body_writer, ops, &mut waiters, &mut prune) {
            body_writer.discard();
            tracing::warn!(error = %e, "the message log could not write a batch");
        }
        pace.settle();
        if prune {
            last_prune = Instant::now();
            match prune_log(&conn, &body_writer, keep, keep_messages) {
                Ok(0) => {}
                Ok(n) => tracing::info!(messages = n, "message log: pruned old messages"),
                Err(e) => tracing::warn!(error = %e, "message log pruning failed"),
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("message bodies: {0}")]
    Bodies(#[from] std::io::Error),
}

fn write_batch(
    conn: &mut Connection,
    body_writer: &mut bodies::Writer,
    ops: Vec<Op>,
    waiters: &mut Vec<std::sync::mpsc::SyncSender<()>>,
    prune: &mut bool,
) -> Result<(), BatchError> {
    if ops.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut msg = tx.prepare_cached("INSERT OR IGNORE INTO messages (id, received_at, listener, sender, type, control_id, patient_id, route, destination, status, ack, detections, latency_us, completeness, reprocess_of, body_ref, body_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)")?;
        let mut link = tx.prepare_cached(
            "INSERT OR REPLACE INTO journal_links (journal_id, id) VALUES (?1, ?2)",
        )?;
        let mut att = tx.prepare_cached("INSERT OR IGNORE INTO attempts (message_id, at, destination, result, class, answer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for op in ops {
            match op {
                Op::Record(r) => {
                    let detections = if r.detections.is_empty() {
                        super::detections(&r.answer)
                    } else {
                        r.detections.clone()
                    };
                    // The relayed delivery goes with the body, its answer kept
                    // once when it is the answer sent back.
                    let (iis_answer, attempt): (&[u8], Vec<u8>) = match &r.attempt {
                        Some(a) => {
                            let (kind, own) = match a.answer.as_deref() {
                                Some(x) if !x.is_empty() && x == &r.answer[..] => {
                                    (AttemptAnswer::Same, &[][..])
                                }
                                Some(x) if !x.is_empty() => (AttemptAnswer::Own, x),
                                _ => (AttemptAnswer::None, &[][..]),
                            };
                            let meta = BodyAttempt {
                                at: a.at,
                                destination: a.destination.clone(),
                                result: a.result.clone(),
                                class: a.class.clone(),
                                answer: kind,
                            };
                            (own, serde_json::to_vec(&meta).unwrap_or_default())
                        }
                        None => (&[], Vec::new()),
                    };
                    let body = body_writer.append(
                        r.id,
                        &bodies::Parts {
                            received: &r.received,
                            stages: &r.stages,
                            issues: &r.issues,
                            answer: &r.answer,
                            iis_answer,
                            attempt: &attempt,
                        },
                    )?;
                    msg.execute(params![
                        r.id,
                        r.received_at,
                        r.listener,
                        r.sender,
                        r.message_type,
                        r.control_id,
                        r.patient_id,
                        r.route,
                        r.destination,
                        r.outcome.as_str(),
                        r.ack,
                        detections.join(" "),
                        r.latency_us,
                        r.completeness,
                        r.reprocess_of,
                        body.at,
                        body.len,
                    ])?;
                    for j in &r.journal_ids {
                        link.execute(params![j, r.id])?;
                    }
                    // A few rows per statement: most of an insert's cost is
                    // the statement's, not the row's.
                    for chunk in detections.chunks(DETECTIONS_PER_INSERT) {
                        let mut stmt = tx.prepare_cached(detections_insert(chunk.len()))?;
                        for (k, d) in chunk.iter().enumerate() {
                            stmt.raw_bind_parameter(2 * k + 1, d)?;
                            stmt.raw_bind_parameter(2 * k + 2, r.id)?;
                        }
                        stmt.raw_execute()?;
                    }
                }
                Op::Attempt(a) => {
                    let id: Option<i64> = tx
                        .prepare_cached("SELECT id FROM journal_links WHERE journal_id = ?1")?
                        .query_row(params![a.journal_id], |r| r.get(0))
                        .optional()?;
                    if let Some(id) = id {
                        att.execute(params![
                            id,
                            a.at,
                            a.destination,
                            a.result,
                            a.class,
                            a.answer
                        ])?;
                        if let Some(status) = a.final_outcome {
                            tx.execute(
                                "UPDATE messages SET status = ?2, ack = ?3 WHERE id = ?1",
                                params![id, status.as_str(), a.ack],
                            )?;
                        }
                    }
                }
                Op::Resolve(ids) => {
                    let mut stmt =
                        tx.prepare_cached("UPDATE messages SET resolved = 1 WHERE id = ?1")?;
                    for id in ids {
                        stmt.execute(params![id])?;
                    }
                }
                Op::Audit(a) => {
                    tx.execute(
                        "INSERT INTO audit (at, user, action, target, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![a.time, a.user, a.action, a.target, a.result],
                    )?;
                }
                Op::Prune => *prune = true,
                Op::Sync(w) => waiters.push(w),
            }
        }
        // The bodies are on file before the rows that point at them.
        body_writer.flush()?;
        let mut seg = tx.prepare_cached("INSERT INTO body_segments (seg, max_id) VALUES (?1, ?2) ON CONFLICT(seg) DO UPDATE SET max_id = MAX(max_id, excluded.max_id)")?;
        for (n, max_id) in body_writer.take_touched() {
            seg.execute(params![i64::try_from(n).unwrap_or(i64::MAX), max_id])?;
        }
    }
    Ok(tx.commit()?)
}

fn prune_log(
    conn: &Connection,
    body_writer: &bodies::Writer,
    keep: Duration,
    keep_messages: u64,
) -> Result<usize, BatchError> {
    let cutoff_time = crate::store::now_ms() - keep.as_millis() as i64;
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
        r.get(0)
    })?;
    let by_count = max - keep_messages as i64;
    // The newest id received before the cutoff bounds what age removes.
    let by_age: i64 = conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM messages WHERE received_at < ?1",
        params![cutoff_time],
        |r| r.get(0),
    )?;
    let below = by_count.max(by_age);
    if below <= 0 {
        return Ok(0);
    }
    let mut removed = 0;
    // In slices, so the writer never holds the file for long.
    loop {
        let lowest: Option<i64> =
            conn.query_row("SELECT MIN(id) FROM messages", [], |r| r.get(0))?;
        let Some(lowest) = lowest.filter(|l| *l <= below) else {
            break;
        };
        let upto = (lowest + 10_000).min(below);
        let n = conn.execute("DELETE FROM messages WHERE id <= ?1", params![upto])?;
        conn.execute("DELETE FROM message_bodies WHERE id <= ?1", params![upto])?;
        conn.execute(
            "DELETE FROM message_detections WHERE id <= ?1",
            params![upto],
        )?;
        conn.execute("DELETE FROM attempts WHERE message_id <= ?1", params![upto])?;
        conn.execute("DELETE FROM journal_links WHERE id <= ?1", params![upto])?;
        removed += n;
        if upto >= below {
            break;
        }
    }
    // A segment goes once every row pointing into it has gone.
    let current = i64::try_from(body_writer.current()).unwrap_or(i64::MAX);
    let done: Vec<i64> = conn
        .prepare("SELECT seg FROM body_segments WHERE max_id <= ?1 AND seg <> ?2")?
        .query_map(params![below, current], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for seg in done {
        bodies::remove(body_writer.dir(), u64::try_from(seg).unwrap_or(0))?;
        conn.execute("DELETE FROM body_segments WHERE seg = ?1", params![seg])?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::*;

    fn record(
        log: &MessageLog,
        n: i64,
        sender: &str,
        outcome: Outcome,
        detections: &[&str],
    ) -> i64 {
        let id = log.next_id();
        log.record(Record {
            id,
            received_at: crate::store::now_ms() - 1000 + n,
            listener: "ehr".into(),
            sender: sender.into(),
            message_type: "VXU^V04".into(),
            control_id: format!("C{n}"),
            patient_id: format!("P{}", n % 3),
            route: "vxu".into(),
            destination: "mi".into(),
            outcome,
            ack: "AA".into(),
            detections: detections.iter().map(|d| d.to_string()).collect(),
            latency_us: 2000,
            received: format!("MSH|^~\\&|A|{sender}\rPID|1||P{}\r", n % 3).into_bytes(),
            stages: String::new(),
            issues: String::new(),
            answer: bytes::Bytes::from_static(b"MSH|^~\\&\rMSA|AA|C1\r"),
            journal_ids: vec![1000 + n],
            attempt: None,
            completeness: String::new(),
            reprocess_of: None,
        });
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
            let id = log.next_id();
            ids.push(id);
            log.record(Record {
                id,
                received_at: crate::store::now_ms(),
                listener: "ehr".into(),
                sender: "CLINIC".into(),
                message_type: "VXU^V04".into(),
                control_id: format!("C{n}"),
                patient_id: "PX".into(),
                route: "vxu".into(),
                destination: "mi".into(),
                outcome: Outcome::Accepted,
                ack: "AA".into(),
                detections: Vec::new(),
                latency_us: 1,
                received: b"MSH|^~\\&|EHR\r".to_vec(),
                stages: String::new(),
                issues: String::new(),
                answer: sent.into(),
                journal_ids: Vec::new(),
                attempt: Some(super::super::AttemptInfo {
                    at: 1,
                    destination: "mi".into(),
                    result: "delivered".into(),
                    class: "accepted".into(),
                    answer: Some(relayed.clone().into()),
                }),
                completeness: String::new(),
                reprocess_of: None,
            });
        }
        // A delivery that failed: no answer from the IIS.
        let failed = log.next_id();
        log.record(Record {
            id: failed,
            received_at: crate::store::now_ms(),
            listener: "ehr".into(),
            sender: "CLINIC".into(),
            message_type: "VXU^V04".into(),
            control_id: "C3".into(),
            patient_id: "PX".into(),
            route: "vxu".into(),
            destination: "mi".into(),
            outcome: Outcome::Errored,
            ack: "AE".into(),
            detections: Vec::new(),
            latency_us: 1,
            received: b"MSH|^~\\&|EHR\r".to_vec(),
            stages: String::new(),
            issues: String::new(),
            answer: bytes::Bytes::from_static(b"MSH|^~\\&|IZHUB\rMSA|AE|C3\r"),
            journal_ids: Vec::new(),
            attempt: Some(super::super::AttemptInfo {
                at: 2,
                destination: "mi".into(),
                result: "failed".into(),
                class: "timeout".into(),
                answer: None,
            }),
            completeness: String::new(),
            reprocess_of: None,
        });
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
            record(&log, n, if n % 2 == 0 { "A" } else { "B" }, outcome, det);
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
        let never = || false;
        let page = log
            .search(
                &Search {
                    sender: Some("A".into()),
                    limit: 10,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(page.items.len(), 10);
        assert!(
            page.items.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        let rest = log
            .search(
                &Search {
                    sender: Some("A".into()),
                    limit: 10,
                    before: page.next,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(rest.items.len(), 5);
        assert_eq!(rest.next, None);
        let found = log
            .search(
                &Search {
                    control_id: Some("C7".into()),
                    limit: 5,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(found.items.len(), 1);
        let det = log
            .search(
                &Search {
                    detection: Some("vaccination-lot-missing".into()),
                    limit: 50,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(det.items.len(), 6);
        let bad = log
            .search(
                &Search {
                    unresolved: true,
                    limit: 50,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(bad.items.len(), 3);
        log.resolve(bad.items.iter().map(|m| m.id).collect());
        log.sync();
        let bad = log
            .search(
                &Search {
                    unresolved: true,
                    limit: 50,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert!(bad.items.is_empty());
        let limited = log
            .search(
                &Search {
                    routes_allowed: Some(vec!["other".into()]),
                    limit: 50,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert!(
            limited.items.is_empty(),
            "a user limited to other routes sees nothing"
        );
        let text = log
            .search(
                &Search {
                    contains: Some("PID|1||P2".into()),
                    limit: 50,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        assert_eq!(text.items.len(), 10);
        let full = log.get(found.items[0].id).unwrap().unwrap();
        assert!(full.received.starts_with(b"MSH|"));
        let with_attempt = log
            .search(
                &Search {
                    control_id: Some("C5".into()),
                    limit: 5,
                    ..Search::default()
                },
                &never,
            )
            .unwrap();
        let full = log.get(with_attempt.items[0].id).unwrap().unwrap();
        assert_eq!(full.attempts.len(), 1);
        assert_eq!(full.meta.status, "accepted");
        log.audit("olivia", "reprocess", "message 5", "ok");
        log.sync();
        assert_eq!(log.audit_entries(None, 10).unwrap()[0].action, "reprocess");
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
                    detection: Some("x".into()),
                    limit: 200,
                    ..Search::default()
                },
                &|| false,
            )
            .unwrap();
        assert_eq!(det.items.len(), 10);
    }
}
