//! The journal: every message acknowledged in `commit` mode is written here,
//! durably, before its AA goes out, and stays until the IIS has answered it.
//!
//! One writer thread owns the write connection and commits concurrent
//! requests together (group commit: one fsync for many messages); readers use
//! their own connection (SQLite WAL). The [`Journal`] API says what the engine
//! needs, not how SQLite does it, so a PostgreSQL backend can implement the
//! same calls with `FOR UPDATE SKIP LOCKED` claims for several nodes.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

/// Schema migrations, applied in order; the journal records which ran.
const MIGRATIONS: [&str; 2] = [
    r#"
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    listener TEXT NOT NULL,
    route TEXT NOT NULL,
    sender TEXT NOT NULL,
    control_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    order_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    raw BLOB NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    answer BLOB,
    answer_class TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_queue ON deliveries(destination, status, id);
CREATE INDEX deliveries_received ON deliveries(received_at);
"#,
    r#"
ALTER TABLE deliveries ADD COLUMN stages TEXT NOT NULL DEFAULT '';
"#,
];

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message to journal for one destination.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub listener: String,
    pub route: String,
    pub sender: String,
    pub control_id: String,
    pub message_type: String,
    /// Messages with the same key are delivered in the order received.
    pub order_key: String,
    pub destination: String,
    /// The message as received.
    pub raw: Vec<u8>,
    /// The message as it goes to the IIS (after plugins, encoded).
    pub payload: Vec<u8>,
    /// What each plugin did: `plugin<TAB>verdict<TAB>issues=N<TAB>changed`,
    /// followed by the message it produced when it changed it.
    pub stages: String,
}

/// A journaled message waiting for delivery.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub order_key: String,
    pub control_id: String,
    pub payload: Vec<u8>,
    pub attempts: u32,
    pub next_attempt_at: i64,
}

/// A journaled message as received, for reprocessing.
#[derive(Debug, Clone)]
pub struct Journaled {
    pub id: i64,
    pub listener: String,
    pub raw: Vec<u8>,
    pub control_id: String,
}

/// Which journaled messages to select (all given conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ids: Vec<i64>,
    pub sender: Option<String>,
    /// `queued`, `delivered` or `dead`.
    pub status: Option<String>,
    /// Received at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Delivered,
    Dead,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("journal write failed: {0}")]
    Write(String),
    #[error("journal read failed: {0}")]
    Read(String),
    #[error("the journal is shut down")]
    Closed,
}

enum Op {
    Insert(
        Vec<NewDelivery>,
        oneshot::Sender<Result<Vec<i64>, JournalError>>,
    ),
    /// Answers once everything sent before it is committed.
    Sync(oneshot::Sender<()>),
    Update {
        id: i64,
        status: Status,
        attempts: u32,
        next_attempt_at: i64,
        error: Option<String>,
        answer: Option<(Vec<u8>, String)>,
    },
}

/// The journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: std_mpsc::Sender<Op>,
    reader: Arc<Mutex<Connection>>,
}

fn open(path: &Path) -> Result<Connection, JournalError> {
    let err = |e: rusqlite::Error| JournalError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .map_err(err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let err = |e: rusqlite::Error| JournalError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(err)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![version],
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
        }
    }
    Ok(())
}

/// Most requests committed in one transaction.
const GROUP: usize = 512;

fn writer(mut conn: Connection, rx: std_mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = apply(&mut conn, &ops);
        let mut ids = result
            .as_ref()
            .ok()
            .cloned()
            .unwrap_or_default()
            .into_iter();
        for op in ops {
            match op {
                Op::Insert(batch, reply) => {
                    let answer = match &result {
                        Ok(_) => Ok(ids.by_ref().take(batch.len()).collect()),
                        Err(e) => Err(JournalError::Write(e.clone())),
                    };
                    let _ = reply.send(answer);
                }
                Op::Sync(reply) => {
                    let _ = reply.send(());
                }
                Op::Update { .. } => {}
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "journal write failed; messages in that batch were not acknowledged");
        }
    }
}

/// Applies a group of operations in one transaction; returns inserted ids in order.
fn apply(conn: &mut Connection, ops: &[Op]) -> Result<Vec<i64>, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    {
        let now = now_ms();
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO deliveries (received_at, listener, route, sender, control_id, message_type, order_key,
                 destination, raw, payload, stages, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'queued', ?1)",
            )
            .map_err(|e| e.to_string())?;
        let mut update = tx
            .prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                 answer = COALESCE(?6, answer), answer_class = COALESCE(?7, answer_class), updated_at = ?8 WHERE id = ?1",
            )
            .map_err(|e| e.to_string())?;
        for op in ops {
            match op {
                Op::Insert(batch, _) => {
                    for d in batch {
                        insert
                            .execute(params![
                                now,
                                d.listener,
                                d.route,
                                d.sender,
                                d.control_id,
                                d.message_type,
                                d.order_key,
                                d.destination,
                                d.raw,
                                d.payload,
                                d.stages
                            ])
                            .map_err(|e| e.to_string())?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
                Op::Sync(_) => {}
                Op::Update {
                    id,
                    status,
                    attempts,
                    next_attempt_at,
                    error,
                    answer,
                } => {
                    let (answer, class) = match answer {
                        Some((a, c)) => (Some(a.as_slice()), Some(c.as_str())),
                        None => (None, None),
                    };
                    update
                        .execute(params![
                            id,
                            status.as_str(),
                            attempts,
                            next_attempt_at,
                            error,
                            answer,
                            class,
                            now
                        ])
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(ids)
}

impl Journal {
    /// Opens (creating and migrating) the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        }
        let mut conn = open(path)?;
        migrate(&mut conn, path)?;
        let reader = open(path)?;
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("izhub-journal".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| JournalError::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        Ok(Journal {
            tx,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The read connection (readers never block the writer: WAL).
    fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>, JournalError> {
        self.reader
            .lock()
            .map_err(|_| JournalError::Read("reader lock poisoned".into()))
    }

    /// Writes deliveries durably (fsync) and returns their ids. Concurrent
    /// calls share one commit.
    pub async fn insert(&self, batch: Vec<NewDelivery>) -> Result<Vec<i64>, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Insert(batch, reply))
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Waits until every write sent before this call is committed.
    pub async fn sync(&self) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Sync(reply))
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)
    }

    /// Records the outcome of a delivery attempt.
    pub fn update(
        &self,
        id: i64,
        status: Status,
        attempts: u32,
        next_attempt_at: i64,
        error: Option<String>,
        answer: Option<(Vec<u8>, String)>,
    ) -> Result<(), JournalError> {
        self.tx
            .send(Op::Update {
                id,
                status,
                attempts,
                next_attempt_at,
                error,
                answer,
            })
            .map_err(|_| JournalError::Closed)
    }

    /// Queued deliveries for a destination, oldest first, after `after_id`.
    pub fn pending(
        &self,
        destination: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, JournalError> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, order_key, control_id, payload, attempts, next_attempt_at FROM deliveries
                 WHERE destination = ?1 AND status = 'queued' AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| JournalError::Read(e.to_string()))?;
        let rows = stmt
            .query_map(params![destination, after_id, limit as i64], |r| {
                Ok(Pending {
                    id: r.get(0)?,
                    order_key: r.get(1)?,
                    control_id: r.get(2)?,
                    payload: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    next_attempt_at: r.get(5)?,
                })
            })
            .map_err(|e| JournalError::Read(e.to_string()))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| JournalError::Read(e.to_string()))
    }

    /// Counts deliveries by status (for metrics and tests).
    pub fn count(&self, status: Status) -> Result<i64, JournalError> {
        let conn = self.reader()?;
        conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE status = ?1",
            params![status.as_str()],
            |r| r.get(0),
        )
        .map_err(|e| JournalError::Read(e.to_string()))
    }

    /// One column of the newest delivery with this control id.
    fn newest(
        &self,
        control_id: &str,
        column: &'static str,
    ) -> Result<Option<String>, JournalError> {
        let conn = self.reader()?;
        let sql = format!(
            "SELECT {column} FROM deliveries WHERE control_id = ?1 ORDER BY id DESC LIMIT 1"
        );
        conn.query_row(&sql, params![control_id], |r| r.get(0))
            .optional()
            .map_err(|e| JournalError::Read(e.to_string()))
    }

    /// What each plugin did with the newest message with this control id.
    pub fn stages_of(&self, control_id: &str) -> Result<Option<String>, JournalError> {
        self.newest(control_id, "stages")
    }

    /// The status of the newest delivery with this control id.
    pub fn status_of(&self, control_id: &str) -> Result<Option<String>, JournalError> {
        self.newest(control_id, "status")
    }

    /// Journaled messages matching a filter, oldest first: (id, listener,
    /// raw input, MSH-10). One row per message even when it went to several
    /// destinations.
    pub fn select(&self, filter: &Filter) -> Result<Vec<Journaled>, JournalError> {
        let conn = self.reader()?;
        let mut sql =
            String::from("SELECT MIN(id), listener, raw, control_id FROM deliveries WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !filter.ids.is_empty() {
            let marks = vec!["?"; filter.ids.len()].join(",");
            sql.push_str(&format!(" AND id IN ({marks})"));
            args.extend(
                filter
                    .ids
                    .iter()
                    .map(|i| rusqlite::types::Value::Integer(*i)),
            );
        }
        if let Some(s) = &filter.sender {
            sql.push_str(" AND sender = ?");
            args.push(rusqlite::types::Value::Text(s.clone()));
        }
        if let Some(s) = &filter.status {
            sql.push_str(" AND status = ?");
            args.push(rusqlite::types::Value::Text(s.clone()));
        }
        if let Some(t) = filter.since_ms {
            sql.push_str(" AND received_at >= ?");
            args.push(rusqlite::types::Value::Integer(t));
        }
        sql.push_str(" GROUP BY received_at, control_id, listener ORDER BY MIN(id) LIMIT 100000");
        let mut stmt = conn
            .prepare(&sql)
            .map_err(|e| JournalError::Read(e.to_string()))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Journaled {
                    id: r.get(0)?,
                    listener: r.get(1)?,
                    raw: r.get(2)?,
                    control_id: r.get(3)?,
                })
            })
            .map_err(|e| JournalError::Read(e.to_string()))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| JournalError::Read(e.to_string()))
    }

    /// Deletes finished deliveries older than `max_age` (retention).
    pub fn prune(
        &self,
        max_age: Duration,
        max_finished: Option<u64>,
    ) -> Result<usize, JournalError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let conn = self.reader()?;
        let mut deleted = conn
            .execute(
                "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < ?1",
                params![cutoff],
            )
            .map_err(|e| JournalError::Write(e.to_string()))?;
        // Size: keep at most `max_finished` finished messages, newest first.
        // Queued messages are never pruned.
        if let Some(keep) = max_finished {
            deleted += conn
                .execute(
                    "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND id NOT IN
                     (SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') ORDER BY id DESC LIMIT ?1)",
                    params![keep as i64],
                )
                .map_err(|e| JournalError::Write(e.to_string()))?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery {
            listener: "ehr".into(),
            route: "vxu".into(),
            sender: "CLINIC".into(),
            control_id: id.into(),
            message_type: "VXU^V04".into(),
            order_key: "CLINIC|P1".into(),
            destination: "mi".into(),
            raw: b"MSH|raw".to_vec(),
            payload: b"MSH|payload".to_vec(),
            stages: String::new(),
        }
    }

    #[tokio::test]
    async fn insert_read_update_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/journal.db");
        let j = Journal::open(&path).unwrap();
        let mut handles = Vec::new();
        for i in 0..50 {
            let j = j.clone();
            handles.push(tokio::spawn(async move {
                j.insert(vec![delivery(&format!("M{i}"))]).await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap().len(), 1);
        }
        let pending = j.pending("mi", 0, 100).unwrap();
        assert_eq!(pending.len(), 50);
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
        j.update(
            pending[0].id,
            Status::Delivered,
            1,
            0,
            None,
            Some((b"MSA|AA".to_vec(), "accepted".into())),
        )
        .unwrap();
        // Updates go through the writer; the next insert waits behind it.
        j.insert(vec![delivery("LAST")]).await.unwrap();
        assert_eq!(j.count(Status::Delivered).unwrap(), 1);
        drop(j);
        // Reopening migrates nothing twice and keeps everything.
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.count(Status::Queued).unwrap(), 50);
        assert_eq!(j.status_of("M0").unwrap().as_deref(), Some("delivered"));
        // Retention by size keeps queued messages whatever the limit.
        j.update(pending[1].id, Status::Dead, 1, 0, None, None)
            .unwrap();
        j.sync().await.unwrap();
        assert_eq!(j.prune(Duration::from_secs(3600), Some(1)).unwrap(), 1);
        assert_eq!(
            j.count(Status::Delivered).unwrap() + j.count(Status::Dead).unwrap(),
            1
        );
        assert_eq!(j.count(Status::Queued).unwrap(), 49);
    }
}
