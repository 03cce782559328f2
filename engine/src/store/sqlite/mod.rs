//! The SQLite store, the default: one file (WAL, `synchronous=FULL`), created
//! and migrated on open. One writer thread owns the write connection and
//! commits concurrent requests together (group commit: one fsync for many
//! messages); readers use their own connection, so they never block it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Attempted, Cause, Cluster, ClusterState, Filter, Journaled, NewDelivery, Peer, Pending, Status,
    Store, StoreError, StoreFuture, now_ms,
};

/// Schema migrations, applied in order; the journal records which ran.
pub mod schema;
mod writer;

use writer::*;

const MIGRATIONS: [&str; 3] = [
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
    // The message texts move to their own table: written once, while the
    // small delivery rows are updated at every attempt.
    r#"
CREATE TABLE bodies (
    id INTEGER PRIMARY KEY,
    raw BLOB NOT NULL,
    payload BLOB NOT NULL,
    stages TEXT NOT NULL DEFAULT ''
);
INSERT INTO bodies (id, raw, payload, stages) SELECT id, raw, payload, stages FROM deliveries;
ALTER TABLE deliveries DROP COLUMN raw;
ALTER TABLE deliveries DROP COLUMN payload;
ALTER TABLE deliveries DROP COLUMN stages;
CREATE TRIGGER deliveries_pruned AFTER DELETE ON deliveries BEGIN
    DELETE FROM bodies WHERE id = old.id;
END;
"#,
];

enum Op {
    Insert(
        Vec<NewDelivery>,
        oneshot::Sender<Result<Vec<i64>, StoreError>>,
    ),
    /// Answers once everything sent before it is committed.
    Sync(oneshot::Sender<()>),
    Update {
        id: i64,
        outcome: Attempted,
    },
}

/// The SQLite store.
pub struct SqliteStore {
    tx: std_mpsc::Sender<Op>,
    reader: Arc<Mutex<Connection>>,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        source: Cause::new(e),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .map_err(err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    schema::migrate(conn, schema::VersionIn::Table, &MIGRATIONS).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: Cause::new(e),
    })
}

impl SqliteStore {
    /// Opens (creating and migrating) the journal at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        private_files(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: Cause::new(e),
        })?;
        let mut conn = open(path)?;
        migrate(&mut conn, path)?;
        let reader = open(path)?;
        let spawn_err = |e: std::io::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: Cause::new(e),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let checkpoints = open(path)?;
        let stop_checkpoints = stop.clone();
        std::thread::Builder::new()
            .name("izhub-checkpoint".into())
            .spawn(move || checkpointer(checkpoints, stop_checkpoints))
            .map_err(spawn_err)?;
        let (tx, rx) = std_mpsc::channel();
        let guard = StopOnDrop(stop);
        std::thread::Builder::new()
            .name("izhub-journal".into())
            .spawn(move || writer(conn, rx, guard))
            .map_err(spawn_err)?;
        Ok(SqliteStore {
            tx,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Runs `f` on the read connection (readers never block the writer:
    /// WAL) on tokio's blocking pool, so a long query, or a prune waiting for
    /// the write lock, never holds up an async worker.
    async fn on_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::Read(Cause::text("reader lock poisoned")))?;
            f(&conn)
        })
        .await
        .map_err(|e| {
            StoreError::Read(Cause::text(format!("the journal read did not finish: {e}")))
        })?
    }

    async fn insert_rows(&self, batch: Vec<NewDelivery>) -> Result<Vec<i64>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Insert(batch, reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Sync(reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// One engine owns an SQLite file, so every queued row is its to claim.
    fn pending(
        conn: &Connection,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.id, d.order_key, d.control_id,
                 CASE WHEN length(b.payload) = 0 THEN b.raw ELSE b.payload END,
                 d.attempts, d.next_attempt_at, d.received_at, d.route, d.sender FROM deliveries d JOIN bodies b ON b.id = d.id
                 WHERE d.destination = ?1 AND d.status = 'queued' ORDER BY d.id LIMIT ?2",
            )
            .map_err(|e| StoreError::Read(Cause::new(e)))?;
        let rows = stmt
            .query_map(params![destination, limit as i64], |r| {
                Ok(Pending {
                    id: r.get(0)?,
                    order_key: r.get(1)?,
                    control_id: r.get(2)?,
                    payload: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    next_attempt_at: r.get(5)?,
                    received_at: r.get(6)?,
                    route: r.get(7)?,
                    sender: r.get(8)?,
                })
            })
            .map_err(|e| StoreError::Read(Cause::new(e)))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Read(Cause::new(e)))
    }

    fn count_rows(conn: &Connection, status: Status) -> Result<i64, StoreError> {
        conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE status = ?1",
            params![status.as_str()],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::Read(Cause::new(e)))
    }

    /// One column of the newest delivery with this control id.
    fn newest(
        conn: &Connection,
        control_id: &str,
        column: &'static str,
    ) -> Result<Option<String>, StoreError> {
        let sql = format!(
            "SELECT {column} FROM deliveries d JOIN bodies b ON b.id = d.id
             WHERE d.control_id = ?1 ORDER BY d.id DESC LIMIT 1"
        );
        conn.query_row(&sql, params![control_id], |r| r.get(0))
            .optional()
            .map_err(|e| StoreError::Read(Cause::new(e)))
    }

    fn select_rows(conn: &Connection, filter: &Filter) -> Result<Vec<Journaled>, StoreError> {
        let mut sql = String::from(
            "SELECT MIN(d.id), d.listener, b.raw, d.control_id FROM deliveries d JOIN bodies b ON b.id = d.id WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !filter.ids.is_empty() {
            let marks = vec!["?"; filter.ids.len()].join(",");
            sql.push_str(&format!(" AND d.id IN ({marks})"));
            args.extend(
                filter
                    .ids
                    .iter()
                    .map(|i| rusqlite::types::Value::Integer(*i)),
            );
        }
        if let Some(s) = &filter.sender {
            sql.push_str(" AND d.sender = ?");
            args.push(rusqlite::types::Value::Text(s.clone()));
        }
        if let Some(s) = &filter.status {
            sql.push_str(" AND d.status = ?");
            args.push(rusqlite::types::Value::Text(s.clone()));
        }
        if let Some(t) = filter.since_ms {
            sql.push_str(" AND d.received_at >= ?");
            args.push(rusqlite::types::Value::Integer(t));
        }
        sql.push_str(
            " GROUP BY d.received_at, d.control_id, d.listener ORDER BY MIN(d.id) LIMIT 100000",
        );
        let mut stmt = conn
            .prepare(&sql)
            .map_err(|e| StoreError::Read(Cause::new(e)))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Journaled {
                    id: r.get(0)?,
                    listener: r.get(1)?,
                    raw: r.get(2)?,
                    control_id: r.get(3)?,
                })
            })
            .map_err(|e| StoreError::Read(Cause::new(e)))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Read(Cause::new(e)))
    }

    fn prune_rows(
        conn: &Connection,
        max_age: Duration,
        max_finished: Option<u64>,
    ) -> Result<usize, StoreError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let mut deleted = conn
            .execute(
                "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < ?1",
                params![cutoff],
            )
            .map_err(|e| StoreError::Write(Cause::new(e)))?;
        // Size: keep at most `max_finished` finished messages, newest first.
        // Queued messages are never pruned.
        if let Some(keep) = max_finished {
            deleted += conn
                .execute(
                    "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND id NOT IN
                     (SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') ORDER BY id DESC LIMIT ?1)",
                    params![keep as i64],
                )
                .map_err(|e| StoreError::Write(Cause::new(e)))?;
        }
        Ok(deleted)
    }
}

impl Store for SqliteStore {
    fn insert(&self, batch: Vec<NewDelivery>) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(self.insert_rows(batch))
    }

    fn claim<'a>(&'a self, destination: &'a str, limit: usize) -> StoreFuture<'a, Vec<Pending>> {
        let destination = destination.to_string();
        Box::pin(self.on_reader(move |c| Self::pending(c, &destination, limit)))
    }

    fn record(&self, id: i64, outcome: Attempted) -> StoreFuture<'_, ()> {
        // Queued behind earlier writes; `flush` waits for the commit.
        let sent = self
            .tx
            .send(Op::Update { id, outcome })
            .map_err(|_| StoreError::Closed);
        Box::pin(async move { sent })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.sync())
    }

    fn count(&self, status: Status) -> StoreFuture<'_, i64> {
        Box::pin(self.on_reader(move |c| Self::count_rows(c, status)))
    }

    fn status_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>> {
        let control_id = control_id.to_string();
        Box::pin(self.on_reader(move |c| Self::newest(c, &control_id, "d.status")))
    }

    fn stages_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>> {
        let control_id = control_id.to_string();
        Box::pin(self.on_reader(move |c| Self::newest(c, &control_id, "b.stages")))
    }

    fn select<'a>(&'a self, filter: &'a Filter) -> StoreFuture<'a, Vec<Journaled>> {
        let filter = filter.clone();
        Box::pin(self.on_reader(move |c| Self::select_rows(c, &filter)))
    }

    fn prune(&self, max_age: Duration, max_finished: Option<u64>) -> StoreFuture<'_, usize> {
        Box::pin(self.on_reader(move |c| Self::prune_rows(c, max_age, max_finished)))
    }

    fn retry_now(&self, id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.on_reader(move |c| {
            c.query_row(
                "UPDATE deliveries SET next_attempt_at = 0, updated_at = ?2 WHERE id = ?1 AND status = 'queued' RETURNING destination",
                params![id, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| StoreError::Write(Cause::new(e)))
        }))
    }

    fn requeue(&self, id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.on_reader(move |c| {
            c.query_row(
                "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = 0, last_error = NULL, updated_at = ?2 WHERE id = ?1 AND status = 'dead' RETURNING destination",
                params![id, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| StoreError::Write(Cause::new(e)))
        }))
    }

    fn queued_by_destination(&self) -> StoreFuture<'_, Vec<(String, i64, i64)>> {
        Box::pin(self.on_reader(move |c| {
            let mut stmt = c
                .prepare("SELECT destination, COUNT(*), MIN(received_at) FROM deliveries WHERE status = 'queued' GROUP BY destination")
                .map_err(|e| StoreError::Read(Cause::new(e)))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| StoreError::Read(Cause::new(e)))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Read(Cause::new(e)))
        }))
    }
}

/// One engine owns a SQLite journal: it is the only node, its claims and
/// bulk jobs are always its own, and there is no one to ask.
impl Cluster for SqliteStore {
    fn hold(&self, _id: i64) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(true) })
    }
    fn send_window(&self) -> Option<Duration> {
        None
    }
    fn node_number(&self) -> Option<i32> {
        None
    }
    fn job_lease<'a>(&'a self, _job: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }
    fn job_release<'a>(&'a self, _job: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn lease(&self) -> Option<Duration> {
        None
    }
    fn peers(&self) -> StoreFuture<'_, Vec<Peer>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn release(&self, _id: i64) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn cluster(&self) -> StoreFuture<'_, Option<ClusterState>> {
        Box::pin(async { Ok(None) })
    }
}

/// A file holding PHI (the journal, the message log, a bulk cohort or
/// job): its directory is created 0700 and the file 0600 before it is
/// written (SQLite gives the -wal and -shm files the database's mode). A
/// file left readable by others by an earlier version is made private; a
/// directory that others can enter is reported, not changed (it may be
/// shared, like /tmp).
#[cfg(unix)]
pub fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.is_dir() {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "a directory holding PHI (a journal, a message log, a bulk cohort or job) is open to other users; keep it 0700");
            }
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                let file = Path::new(&name);
                if let Ok(meta) = std::fs::metadata(file)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
pub fn private_files(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
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
            dedupe: true,
        }
    }

    fn attempted(status: Status, answer: Option<(Vec<u8>, String)>) -> Attempted {
        Attempted {
            status,
            attempts: 1,
            next_attempt_at: 0,
            error: None,
            answer,
        }
    }

    /// The journal holds PHI: its directory, the database and its -wal and
    /// -shm files are private to the engine's user from their creation, and
    /// a journal an earlier version left readable is made private.
    #[cfg(unix)]
    #[tokio::test]
    async fn journal_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let data = dir.path().join("data");
        let path = data.join("journal.db");
        let j = crate::store::open(&path).unwrap();
        j.insert(vec![delivery("P1")]).await.unwrap();
        j.flush().await.unwrap();
        assert_eq!(mode(&data), 0o700);
        for suffix in ["", "-wal", "-shm"] {
            let file = data.join(format!("journal.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(j);
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let j = crate::store::open(&old).unwrap();
        j.insert(vec![delivery("P2")]).await.unwrap();
        j.flush().await.unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&dir.path().join("old.db-wal")), 0o600);
    }

    /// The WAL is checkpointed beside the writer and still starts over: under
    /// a steady stream of writes it stays near the automatic checkpoint's
    /// 1000 pages instead of holding every message written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let j = crate::store::open(&path).unwrap();
        let body = vec![b'x'; 3200];
        let mut writers = Vec::new();
        for w in 0..8 {
            let (j, body) = (j.clone(), body.clone());
            writers.push(tokio::spawn(async move {
                for i in 0..600 {
                    let d = NewDelivery {
                        raw: body.clone(),
                        payload: body.clone(),
                        ..delivery(&format!("W{w}-{i}"))
                    };
                    j.insert(vec![d]).await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(j.count(Status::Queued).await.unwrap(), 4800);
        let size = |suffix: &str| {
            std::fs::metadata(dir.path().join(format!("journal.db{suffix}")))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        // 4800 messages of 3.2 KB (one copy each: the payload equals the
        // input) fill about 20 MB of pages; the WAL keeps a window of them.
        assert!(size("") > 15 << 20, "database {} bytes", size(""));
        assert!(size("-wal") < 10 << 20, "WAL {} bytes", size("-wal"));
    }

    #[tokio::test]
    async fn insert_claim_record_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/journal.db");
        let j = crate::store::open(&path).unwrap();
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
        let pending = j.claim("mi", 100).await.unwrap();
        assert_eq!(pending.len(), 50);
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
        assert!(j.claim("pa", 100).await.unwrap().is_empty());
        assert_eq!(pending[0].payload, b"MSH|payload");
        // A payload equal to the input is stored once and read back whole.
        let same = NewDelivery {
            destination: "pa".into(),
            payload: b"MSH|raw".to_vec(),
            ..delivery("SAME")
        };
        j.insert(vec![same]).await.unwrap();
        let pa = j.claim("pa", 100).await.unwrap();
        assert_eq!(pa.len(), 1);
        assert_eq!(pa[0].payload, b"MSH|raw");
        let answer = Some((b"MSA|AA".to_vec(), "accepted".to_string()));
        j.record(pending[0].id, attempted(Status::Delivered, answer))
            .await
            .unwrap();
        // Records go through the writer; flush waits for their commit.
        j.flush().await.unwrap();
        assert_eq!(j.count(Status::Delivered).await.unwrap(), 1);
        assert_eq!(j.claim("mi", 100).await.unwrap().len(), 49);
        drop(j);
        // Reopening migrates nothing twice and keeps everything.
        let j = crate::store::open(&path).unwrap();
        assert_eq!(j.count(Status::Queued).await.unwrap(), 50);
        assert_eq!(
            j.status_of("M0").await.unwrap().as_deref(),
            Some("delivered")
        );
        assert_eq!(j.status_of("nope").await.unwrap(), None);
        // Retention by size keeps queued messages whatever the limit.
        j.record(pending[1].id, attempted(Status::Dead, None))
            .await
            .unwrap();
        j.flush().await.unwrap();
        assert_eq!(
            j.prune(Duration::from_secs(3600), Some(1)).await.unwrap(),
            1
        );
        let finished =
            j.count(Status::Delivered).await.unwrap() + j.count(Status::Dead).await.unwrap();
        assert_eq!(finished, 1);
        assert_eq!(j.count(Status::Queued).await.unwrap(), 49);
        // Selecting for reprocessing: by status and by id.
        let dead = Filter {
            status: Some("dead".into()),
            ..Filter::default()
        };
        assert!(j.select(&dead).await.unwrap().len() <= 1);
        let one = Filter {
            ids: vec![pending[2].id],
            ..Filter::default()
        };
        let rows = j.select(&one).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].control_id, pending[2].control_id);
        assert_eq!(rows[0].raw, b"MSH|raw");
    }

    /// A journal whose schema is newer than this binary knows is refused,
    /// not altered.
    #[tokio::test]
    async fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(crate::store::open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![newer],
            )
            .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let Err(e) = crate::store::open(&path) else {
            panic!("a newer journal was opened");
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "schema is version {newer}, newer than this izhub knows"
            )),
            "{text}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file was changed"
        );
    }

    /// A journal written by an engine before the message texts had their own
    /// table is migrated on open, keeping every row, and pruning still
    /// removes a message's text with its delivery.
    #[tokio::test]
    async fn a_version_2_journal_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1), (2);",
            )
            .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute(
                "INSERT INTO deliveries (received_at, listener, route, sender, control_id, message_type,
                 order_key, destination, raw, payload, stages, status, updated_at)
                 VALUES (1, 'ehr', 'vxu', 'CLINIC', 'OLD-1', 'VXU^V04', 'CLINIC|P1', 'mi',
                 X'4D53487C726177', X'4D53487C6F7574', 'validate_iz', 'queued', 1)",
                [],
            )
            .unwrap();
        }
        let j = crate::store::open(&path).unwrap();
        let pending = j.claim("mi", 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].payload, b"MSH|out");
        assert_eq!(
            j.stages_of("OLD-1").await.unwrap().as_deref(),
            Some("validate_iz")
        );
        let rows = j.select(&Filter::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].raw, b"MSH|raw");
        j.record(pending[0].id, attempted(Status::Delivered, None))
            .await
            .unwrap();
        j.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(j.prune(Duration::ZERO, None).await.unwrap(), 1);
        drop(j);
        let conn = Connection::open(&path).unwrap();
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }
}
