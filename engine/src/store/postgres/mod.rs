//! The shared store: several engine nodes over one PostgreSQL database.
//!
//! One queue for every node. A node claims the deliveries it will send with
//! `SELECT … FOR UPDATE SKIP LOCKED`, only the oldest queued delivery of each
//! order key (so per-patient order holds across nodes), and each claim takes
//! a lease: the node's id, an expiry by the database's clock, and a fencing
//! token drawn from a sequence. The lease is extended when the delivery is
//! about to be sent and renewed while it is in flight; the outcome is
//! recorded only while the token still matches, so a node that stalled past
//! its lease (and whose delivery another node took over) cannot overwrite
//! what the other one recorded. A dead node simply stops renewing: its
//! claims become claimable when their leases run out.
//!
//! Nodes write a heartbeat to `nodes`; `/healthz` shows them. The schema is
//! versioned in `schema_migrations` and migrated at start under an advisory
//! lock, so nodes starting together never race. An insert returns once
//! committed (the AA depends on it); the inserts that arrive together, from
//! many connections, share one transaction, as do delivery outcomes
//! (`group`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::{
    Attempted, Cause, Cluster, ClusterState, Filter, Journaled, NewDelivery, NodeState, Peer,
    Pending, Status, Store, StoreError, StoreFuture, now_ms,
};
use crate::config::PostgresSpec;

mod group;
mod queries;

/// The database's clock in milliseconds since the epoch: leases are timed
/// by one clock, whatever the nodes' clocks say.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The advisory lock migrations run under ("izhub-mg").
const MIGRATION_LOCK: i64 = 0x697a_6875_622d_6d67;

/// Schema migrations, applied in order under [`MIGRATION_LOCK`]; each is
/// recorded in `schema_migrations`.
pub const MIGRATIONS: [&str; 3] = [
    r#"
CREATE SEQUENCE fencing_tokens;
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    listener TEXT NOT NULL,
    route TEXT NOT NULL,
    sender TEXT NOT NULL,
    control_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    order_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    answer BYTEA,
    answer_class TEXT,
    updated_at BIGINT NOT NULL,
    dedupe_key TEXT,
    lease_node TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    lease_token BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX deliveries_queue ON deliveries (destination, order_key, id) WHERE status = 'queued';
CREATE INDEX deliveries_finished ON deliveries (status, updated_at);
CREATE INDEX deliveries_control ON deliveries (control_id);
CREATE INDEX deliveries_received ON deliveries (received_at);
CREATE TABLE bodies (
    id BIGINT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    raw BYTEA NOT NULL,
    payload BYTEA NOT NULL,
    stages TEXT NOT NULL DEFAULT ''
);
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE nodes ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN console_url TEXT NOT NULL DEFAULT '';
CREATE TABLE node_numbers (
    name TEXT PRIMARY KEY,
    number SERIAL NOT NULL UNIQUE
);
"#,
    r#"
CREATE TABLE bulk_jobs (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
"#,
];

/// Nodes silent this long are dropped from `nodes`.
const FORGET_NODES_MS: i64 = 86_400_000;

fn write_err(e: impl Into<PgError>) -> StoreError {
    StoreError::Write(Cause::new(e.into()))
}

fn read_err(e: impl Into<PgError>) -> StoreError {
    StoreError::Read(Cause::new(e.into()))
}

/// A PostgreSQL failure as the journal reports it: the driver's error with
/// the server's severity, message and SQLSTATE (the driver alone says
/// only "db error"), or the pool's.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{}", server_words(.0))]
    Db(#[source] tokio_postgres::Error),
    #[error("{}", describe_pool(.0))]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("{0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(e)
    }
}

impl From<String> for PgError {
    fn from(e: String) -> Self {
        PgError::Other(e)
    }
}

/// A pool's failure: the server's words when making a connection failed
/// there, else the pool's (a timeout, a closed pool).
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("cannot get a database connection: {}", server_words(e))
        }
        other => format!("cannot get a database connection: {other}"),
    }
}

/// The server's words for a database error: severity, message and
/// SQLSTATE; the driver's text for anything else (a broken connection).
fn server_words(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            // Not the DETAIL: for a constraint it quotes the row
            // ("Failing row contains …"), which may hold a message.
            format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            )
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

struct Inner {
    pool: Pool,
    node: String,
    /// The configured (or host) name, stable across restarts.
    name: String,
    /// The name's number, for the console's message ids.
    number: i32,
    /// Where other nodes reach this node's admin API ('' when unknown).
    console_url: String,
    lease_ms: i64,
    /// Deliveries this node claimed, by id.
    claims: Mutex<HashMap<i64, Claim>>,
    fenced: AtomicU64,
    /// Messages to journal, gathered from every connection.
    inserts: group::Group<Vec<NewDelivery>, group::Inserted>,
    /// Delivery outcomes, gathered from every delivery worker.
    records: group::Group<group::Outcome, group::Recorded>,
}

/// A delivery this node claimed.
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// The fencing token the claim wrote.
    token: i64,
    /// Being sent now: renewed until recorded.
    sending: bool,
    /// When the claim was asked for: its lease runs from no earlier.
    asked: tokio::time::Instant,
}

/// The PostgreSQL store.
pub struct PgStore {
    inner: Arc<Inner>,
}

/// Where the database is, for logs: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

fn tls(spec: &PostgresSpec) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let config = crate::tls::client_config_or_system(spec.ca.as_deref())?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        (*config).clone(),
    ))
}

/// The node's name: the configured one, or the host's.
fn node_name(spec: &PostgresSpec) -> String {
    spec.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into())
    })
}

/// A node id unique to this process: two processes never share claims.
fn node_id(name: &str) -> String {
    format!("{name}-{}-{:x}", std::process::id(), now_ms() & 0xffff_ffff)
}

/// The number of a node name, given once and kept.
async fn node_number(pool: &Pool, name: &str) -> Result<i32, PgError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO node_numbers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .await?;
    let row = client
        .query_one("SELECT number FROM node_numbers WHERE name = $1", &[&name])
        .await?;
    Ok(row.get(0))
}

impl PgStore {
    /// Connects, migrates (under the advisory lock) and starts this node's
    /// heartbeat and lease renewal.
    pub async fn open(spec: &PostgresSpec) -> Result<PgStore, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: "[store] url".into(),
            source: Cause::text(detail),
        };
        let mut config: tokio_postgres::Config =
            spec.url.parse().map_err(|e| open_err(format!("{e}")))?;
        if let Some(var) = &spec.password_env {
            let password = std::env::var(var)
                .map_err(|_| open_err(format!("password_env: {var} is not set")))?;
            config.password(password);
        }
        config.application_name("izhub");
        config.connect_timeout(Duration::from_secs(5));
        limit_waits(&mut config);
        let where_ = describe(&config);
        let tls = tls(spec).map_err(open_err)?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let name = node_name(spec);
        let node = node_id(&name);
        migrate(&pool, &node)
            .await
            .map_err(|e| open_err(format!("{where_}: {e}")))?;
        let number = node_number(&pool, &name)
            .await
            .map_err(|e| open_err(format!("{where_}: {e}")))?;
        if !(1..=super::MAX_NODE_NUMBER).contains(&number) {
            return Err(open_err(format!(
                "node '{name}' has number {number}; at most {} node names fit (delete unused rows from node_numbers)",
                super::MAX_NODE_NUMBER
            )));
        }
        let inner = Arc::new(Inner {
            node,
            name,
            number,
            console_url: spec.console_url.clone().unwrap_or_default(),
            lease_ms: spec.lease.as_millis() as i64,
            claims: Mutex::new(HashMap::new()),
            fenced: AtomicU64::new(0),
            inserts: group::inserts(&pool),
            records: group::records(&pool),
            pool,
        });
        inner
            .heartbeat(true)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        tokio::spawn(queries::keep_alive(Arc::downgrade(&inner)));
        tracing::info!(database = %where_, node = %inner.node, lease_ms = inner.lease_ms, "shared journal open (PostgreSQL)");
        Ok(PgStore { inner })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

/// How long a statement waits for a lock another session holds, and how
/// long this node's own session may sit in an open transaction.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(30);

/// No wait on another session is unbounded. A node that freezes or is cut
/// off between its INSERT and COMMIT keeps its locks until the server
/// notices: a resend of that message to any other node would wait on the
/// duplicate key, holding a pooled connection, for as long as that.
/// - `lock_timeout`: such a wait fails after 5 s (the sender gets AE and
///   sends again), so the pool is never used up by it;
/// - `idle_in_transaction_session_timeout`: the server ends a session of
///   ours left in an open transaction for 30 s, releasing what it held;
/// - TCP keepalives every 10 s, so a lost peer is noticed in seconds, not
///   after the kernel's two hours.
fn limit_waits(config: &mut tokio_postgres::Config) {
    let ms = |d: Duration| d.as_millis();
    let ours = format!(
        "-c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        ms(LOCK_TIMEOUT),
        ms(IDLE_IN_TRANSACTION)
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(&options);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
}

/// Applies the missing migrations, one transaction each, under the
/// advisory lock: a node that waits for it finds them applied (without the
/// lock timeout: another node's migration may take longer).
async fn migrate(pool: &Pool, node: &str) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    client.batch_execute("SET lock_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY,
                    applied_at BIGINT NOT NULL,
                    applied_by TEXT NOT NULL)",
            )
            .await?;
        let current: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        // A journal written by a newer release is never altered by an
        // older one.
        if i64::from(current) > MIGRATIONS.len() as i64 {
            return Ok(Some(current));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            if version > current {
                let tx = client.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES ($1, $2, $3)",
                    &[&version, &now_ms(), &node],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version, "journal schema migrated");
            }
        }
        Ok::<Option<i32>, tokio_postgres::Error>(None)
    }
    .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    // The pooled connection goes back with the node's lock timeout.
    let reset = client.batch_execute("RESET lock_timeout").await;
    let newer = result?;
    unlocked?;
    reset?;
    match newer {
        Some(found) => Err(PgError::Other(format!(
            "the journal's schema is version {found}, newer than this izhub knows ({}): it was written by a newer release; run that release, or restore a backup made by this one",
            MIGRATIONS.len()
        ))),
        None => Ok(()),
    }
}

impl Store for PgStore {
    fn insert(&self, batch: Vec<NewDelivery>) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(self.inner.insert(batch))
    }

    fn claim<'a>(&'a self, destination: &'a str, limit: usize) -> StoreFuture<'a, Vec<Pending>> {
        Box::pin(self.inner.claim(destination, limit))
    }

    fn record(&self, id: i64, outcome: Attempted) -> StoreFuture<'_, ()> {
        Box::pin(self.inner.record(id, outcome))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // Every record is committed before it returns.
        Box::pin(async { Ok(()) })
    }

    fn count(&self, status: Status) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let client = self.inner.pool.get().await.map_err(read_err)?;
            let row = client
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE status = $1",
                    &[&status.as_str()],
                )
                .await
                .map_err(read_err)?;
            Ok(row.get(0))
        })
    }

    fn status_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(self.inner.newest(control_id, "d.status"))
    }

    fn stages_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(self.inner.newest(control_id, "b.stages"))
    }

    fn select<'a>(&'a self, filter: &'a Filter) -> StoreFuture<'a, Vec<Journaled>> {
        Box::pin(self.inner.select(filter))
    }

    fn prune(&self, max_age: Duration, max_finished: Option<u64>) -> StoreFuture<'_, usize> {
        Box::pin(self.inner.prune(max_age, max_finished))
    }

    fn retry_now(&self, id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.inner.update_one(
            "UPDATE deliveries SET next_attempt_at = 0, updated_at = $2 WHERE id = $1 AND status = 'queued' RETURNING destination",
            id,
        ))
    }

    fn requeue(&self, id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.inner.update_one(
            "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = 0, last_error = NULL,
             updated_at = $2 WHERE id = $1 AND status = 'dead' RETURNING destination",
            id,
        ))
    }

    fn queued_by_destination(&self) -> StoreFuture<'_, Vec<(String, i64, i64)>> {
        Box::pin(async move {
            let client = self.inner.pool.get().await.map_err(read_err)?;
            let rows = client
                .query(
                    "SELECT destination, COUNT(*), MIN(received_at) FROM deliveries
                     WHERE status = 'queued' GROUP BY destination",
                    &[],
                )
                .await
                .map_err(read_err)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }
}

/// Nodes sharing the database: claims and bulk jobs under leases, with
/// fencing tokens.
impl Cluster for PgStore {
    fn hold(&self, id: i64) -> StoreFuture<'_, bool> {
        Box::pin(self.inner.hold(id))
    }

    fn cluster(&self) -> StoreFuture<'_, Option<ClusterState>> {
        Box::pin(async move { self.inner.cluster().await.map(Some) })
    }

    fn release(&self, id: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.inner.release(id))
    }

    fn node_number(&self) -> Option<i32> {
        Some(self.inner.number)
    }

    fn job_lease<'a>(&'a self, job: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.inner.job_lease(job))
    }

    fn job_release<'a>(&'a self, job: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.inner.job_release(job))
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.inner.lease_ms.max(0) as u64))
    }

    fn peers(&self) -> StoreFuture<'_, Vec<Peer>> {
        Box::pin(self.inner.peers())
    }

    fn send_window(&self) -> Option<Duration> {
        // The lease runs from the database's clock when the hold was
        // written, which is no earlier than when it was asked; a quarter is
        // kept back for the time between the check and the write.
        Some(Duration::from_millis(
            (self.inner.lease_ms.max(0) as u64) * 3 / 4,
        ))
    }
}
