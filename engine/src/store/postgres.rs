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
//! lock, so nodes starting together never race. Inserts are one transaction
//! each and return once committed: the AA depends on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::{
    Attempted, Cluster, Filter, Journaled, NewDelivery, NodeState, Peer, Pending, Status, Store,
    StoreError, StoreFuture, now_ms,
};
use crate::config::PostgresSpec;

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

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
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
    /// Deliveries this node claimed: id → fencing token, and whether it is
    /// being sent now (renewed until recorded).
    claims: Mutex<HashMap<i64, (i64, bool)>>,
    fenced: AtomicU64,
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
    let config = match &spec.ca {
        Some(ca) => (*crate::tls::client_config(ca, None)?).clone(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
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
async fn node_number(pool: &Pool, name: &str) -> Result<i32, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute(
            "INSERT INTO node_numbers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT number FROM node_numbers WHERE name = $1", &[&name])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

impl PgStore {
    /// Connects, migrates (under the advisory lock) and starts this node's
    /// heartbeat and lease renewal.
    pub async fn open(spec: &PostgresSpec) -> Result<PgStore, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: "[store] url".into(),
            detail,
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
            pool,
            node,
            name,
            number,
            console_url: spec.console_url.clone().unwrap_or_default(),
            lease_ms: spec.lease.as_millis() as i64,
            claims: Mutex::new(HashMap::new()),
            fenced: AtomicU64::new(0),
        });
        inner
            .heartbeat(true)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        tokio::spawn(keep_alive(Arc::downgrade(&inner)));
        tracing::info!(database = %where_, node = %inner.node, lease_ms = inner.lease_ms, "shared journal open (PostgreSQL)");
        Ok(PgStore { inner })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

/// Applies the missing migrations, one transaction each, under the
/// advisory lock: a node that waits for it finds them applied.
async fn migrate(pool: &Pool, node: &str) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| e.to_string())?;
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
        Ok::<(), tokio_postgres::Error>(())
    }
    .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result.map_err(|e| e.to_string())?;
    unlocked.map_err(|e| e.to_string())?;
    Ok(())
}

/// Heartbeat and lease renewal, a third of a lease apart, for as long as
/// the store lives.
async fn keep_alive(inner: Weak<Inner>) {
    let mut failing = false;
    loop {
        let every = match inner.upgrade() {
            Some(i) => Duration::from_millis((i.lease_ms / 3).max(200) as u64),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let result = async {
            inner.heartbeat(false).await?;
            inner.renew().await
        }
        .await;
        match result {
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster heartbeat failed; deliveries in flight may be taken over by another node");
                failing = true;
            }
            Err(_) => {}
            Ok(()) if failing => {
                tracing::info!("cluster heartbeat works again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
}

impl Inner {
    async fn heartbeat(&self, first: bool) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at, name, console_url)
             VALUES ($1, {DB_NOW}, {DB_NOW}, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = {DB_NOW}"
        );
        client
            .execute(sql.as_str(), &[&self.node, &self.name, &self.console_url])
            .await
            .map_err(write_err)?;
        if first {
            let forget = format!("DELETE FROM nodes WHERE heartbeat_at < {DB_NOW} - $1");
            client
                .execute(forget.as_str(), &[&FORGET_NODES_MS])
                .await
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// Extends the leases of the deliveries being sent now, as long as
    /// their tokens still match.
    async fn renew(&self) -> Result<(), StoreError> {
        let (ids, tokens): (Vec<i64>, Vec<i64>) = self
            .claims
            .lock()
            .map_err(|_| StoreError::Closed)?
            .iter()
            .filter(|(_, (_, sending))| *sending)
            .map(|(id, (token, _))| (*id, *token))
            .unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "UPDATE deliveries d SET lease_until = {DB_NOW} + $3
             FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
             WHERE d.id = h.id AND d.lease_token = h.token AND d.status = 'queued'"
        );
        client
            .execute(sql.as_str(), &[&ids, &tokens, &self.lease_ms])
            .await
            .map_err(write_err)?;
        Ok(())
    }

    fn token(&self, id: i64) -> Option<i64> {
        self.claims
            .lock()
            .ok()
            .and_then(|c| c.get(&id).map(|(t, _)| *t))
    }

    async fn insert(&self, batch: Vec<NewDelivery>) -> Result<Vec<i64>, StoreError> {
        let mut client = self.pool.get().await.map_err(write_err)?;
        let tx = client.transaction().await.map_err(write_err)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO deliveries (received_at, listener, route, sender, control_id, message_type,
                 order_key, destination, status, updated_at, dedupe_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $1, $9)
                 ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING RETURNING id",
            )
            .await
            .map_err(write_err)?;
        let body = tx
            .prepare_cached("INSERT INTO bodies (id, raw, payload, stages) VALUES ($1, $2, $3, $4)")
            .await
            .map_err(write_err)?;
        let now = now_ms();
        let mut ids = Vec::with_capacity(batch.len());
        for d in &batch {
            // Sender, MSH-10 and destination: a resend finds its first copy.
            let key = (d.dedupe && !d.sender.is_empty() && !d.control_id.is_empty())
                .then(|| format!("{}\u{1f}{}\u{1f}{}", d.sender, d.control_id, d.destination));
            let row = tx
                .query_opt(
                    &insert,
                    &[
                        &now,
                        &d.listener,
                        &d.route,
                        &d.sender,
                        &d.control_id,
                        &d.message_type,
                        &d.order_key,
                        &d.destination,
                        &key,
                    ],
                )
                .await
                .map_err(write_err)?;
            match row {
                Some(row) => {
                    let id: i64 = row.get(0);
                    let payload: &[u8] = if d.payload == d.raw { &[] } else { &d.payload };
                    tx.execute(&body, &[&id, &d.raw, &payload, &d.stages])
                        .await
                        .map_err(write_err)?;
                    ids.push(id);
                }
                None => {
                    let first = tx
                        .query_one("SELECT id FROM deliveries WHERE dedupe_key = $1", &[&key])
                        .await
                        .map_err(write_err)?;
                    tracing::info!(
                        id = first.get::<_, i64>(0),
                        "a message sent again was already journaled; answered without a second delivery"
                    );
                    ids.push(first.get(0));
                }
            }
        }
        tx.commit().await.map_err(write_err)?;
        Ok(ids)
    }

    async fn claim(&self, destination: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        // Heads only: the oldest queued delivery of each order key. The lock
        // re-checks status and lease on the current row, so a head recorded
        // meanwhile by another node is passed over.
        let sql = format!(
            "WITH heads AS (
                SELECT DISTINCT ON (order_key) id FROM deliveries
                WHERE destination = $1 AND status = 'queued'
                ORDER BY order_key, id
            ), picked AS (
                SELECT d.id FROM deliveries d JOIN heads h ON h.id = d.id
                WHERE d.status = 'queued' AND d.next_attempt_at <= $5
                  AND (d.lease_until < {DB_NOW} OR d.lease_node = $3)
                ORDER BY d.id LIMIT $2
                FOR UPDATE OF d SKIP LOCKED
            )
            UPDATE deliveries d SET lease_node = $3, lease_until = {DB_NOW} + $4,
                lease_token = nextval('fencing_tokens')
            FROM picked, bodies b
            WHERE d.id = picked.id AND b.id = d.id
            RETURNING d.id, d.order_key, d.control_id,
                CASE WHEN length(b.payload) = 0 THEN b.raw ELSE b.payload END,
                d.attempts, d.next_attempt_at, d.received_at, d.route, d.lease_token"
        );
        let rows = client
            .query(
                sql.as_str(),
                &[
                    &destination,
                    &(limit as i64),
                    &self.node,
                    &self.lease_ms,
                    &now_ms(),
                ],
            )
            .await
            .map_err(read_err)?;
        let mut pending = Vec::with_capacity(rows.len());
        let mut claims = self.claims.lock().map_err(|_| StoreError::Closed)?;
        for r in rows {
            let id: i64 = r.get(0);
            claims.insert(id, (r.get(8), false));
            pending.push(Pending {
                id,
                order_key: r.get(1),
                control_id: r.get(2),
                payload: r.get(3),
                attempts: r.get::<_, i32>(4).max(0) as u32,
                next_attempt_at: r.get(5),
                received_at: r.get(6),
                route: r.get(7),
            });
        }
        pending.sort_by_key(|p| p.id);
        Ok(pending)
    }

    async fn hold(&self, id: i64) -> Result<bool, StoreError> {
        let Some(token) = self.token(id) else {
            return Ok(false);
        };
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "UPDATE deliveries SET lease_until = {DB_NOW} + $3
             WHERE id = $1 AND lease_token = $2 AND status = 'queued'"
        );
        let held = client
            .execute(sql.as_str(), &[&id, &token, &self.lease_ms])
            .await
            .map_err(write_err)?
            == 1;
        if let Ok(mut claims) = self.claims.lock() {
            if held {
                claims.insert(id, (token, true));
            } else {
                claims.remove(&id);
            }
        }
        Ok(held)
    }

    async fn release(&self, id: i64) -> Result<(), StoreError> {
        let token = self.claims.lock().ok().and_then(|mut c| c.remove(&id));
        let Some((token, _)) = token else {
            return Ok(());
        };
        let client = self.pool.get().await.map_err(write_err)?;
        client
            .execute(
                "UPDATE deliveries SET lease_node = NULL, lease_until = 0
                 WHERE id = $1 AND lease_token = $2",
                &[&id, &token],
            )
            .await
            .map_err(write_err)?;
        Ok(())
    }

    async fn record(&self, id: i64, outcome: &Attempted) -> Result<(), StoreError> {
        let token = self.claims.lock().ok().and_then(|mut c| c.remove(&id));
        let Some((token, _)) = token else {
            self.fenced.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Fenced(id));
        };
        let (answer, class) = match &outcome.answer {
            Some((a, c)) => (Some(a.as_slice()), Some(c.as_str())),
            None => (None, None),
        };
        let attempts = outcome.attempts.min(i32::MAX as u32) as i32;
        // A database restarting is waited for, within the lease: past it the
        // delivery is another node's anyway.
        let give_up = tokio::time::Instant::now() + Duration::from_millis(self.lease_ms as u64);
        loop {
            let result = async {
                let client = self.pool.get().await.map_err(write_err)?;
                client
                    .execute(
                        "UPDATE deliveries SET status = $3, attempts = $4, next_attempt_at = $5,
                         last_error = $6, answer = COALESCE($7, answer),
                         answer_class = COALESCE($8, answer_class), updated_at = $9,
                         lease_node = NULL, lease_until = 0
                         WHERE id = $1 AND lease_token = $2",
                        &[
                            &id,
                            &token,
                            &outcome.status.as_str(),
                            &attempts,
                            &outcome.next_attempt_at,
                            &outcome.error,
                            &answer,
                            &class,
                            &now_ms(),
                        ],
                    )
                    .await
                    .map_err(write_err)
            }
            .await;
            match result {
                Ok(1) => return Ok(()),
                Ok(_) => {
                    self.fenced.fetch_add(1, Ordering::Relaxed);
                    return Err(StoreError::Fenced(id));
                }
                Err(e) if tokio::time::Instant::now() >= give_up => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Takes or renews this node's lease on bulk job `job`: false while
    /// another node's lease on it runs.
    async fn job_lease(&self, job: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "INSERT INTO bulk_jobs (id, node, lease_until) VALUES ($1, $2, {DB_NOW} + $3)
             ON CONFLICT (id) DO UPDATE SET node = $2, lease_until = {DB_NOW} + $3
             WHERE bulk_jobs.node = $2 OR bulk_jobs.lease_until < {DB_NOW}"
        );
        let n = client
            .execute(sql.as_str(), &[&job, &self.node, &self.lease_ms])
            .await
            .map_err(write_err)?;
        Ok(n == 1)
    }

    async fn job_release(&self, job: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        client
            .execute(
                "DELETE FROM bulk_jobs WHERE id = $1 AND node = $2",
                &[&job, &self.node],
            )
            .await
            .map_err(write_err)?;
        Ok(())
    }

    /// The other live nodes with a console address, one per name (the
    /// newest process of each), with their numbers.
    async fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT DISTINCT ON (n.name) n.name, n.console_url, k.number
             FROM nodes n JOIN node_numbers k ON k.name = n.name
             WHERE n.name <> $1 AND n.console_url <> ''
               AND n.heartbeat_at >= {DB_NOW} - $2
             ORDER BY n.name, n.heartbeat_at DESC"
        );
        let rows = client
            .query(sql.as_str(), &[&self.name, &(self.lease_ms * 3)])
            .await
            .map_err(read_err)?;
        Ok(rows
            .iter()
            .map(|r| Peer {
                name: r.get(0),
                console_url: r.get(1),
                number: r.get(2),
            })
            .collect())
    }

    async fn cluster(&self) -> Result<Cluster, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT n.node_id, n.started_at, n.heartbeat_at, {DB_NOW} - n.heartbeat_at,
                (SELECT COUNT(*) FROM deliveries d WHERE d.lease_node = n.node_id
                    AND d.status = 'queued' AND d.lease_until >= {DB_NOW})
             FROM nodes n ORDER BY n.node_id"
        );
        let rows = client.query(sql.as_str(), &[]).await.map_err(read_err)?;
        Ok(Cluster {
            node: self.node.clone(),
            lease_ms: self.lease_ms,
            fenced: self.fenced.load(Ordering::Relaxed),
            nodes: rows
                .iter()
                .map(|r| NodeState {
                    id: r.get(0),
                    started_at: r.get(1),
                    heartbeat_at: r.get(2),
                    heartbeat_age_ms: r.get(3),
                    leases: r.get(4),
                })
                .collect(),
        })
    }

    async fn select(&self, filter: &Filter) -> Result<Vec<Journaled>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let mut conditions = String::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |cond: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            conditions.push_str(&cond.replace('?', &format!("${}", args.len())));
        };
        if !filter.ids.is_empty() {
            add(" AND d.id = ANY(?)", Box::new(filter.ids.clone()));
        }
        if let Some(s) = &filter.sender {
            add(" AND d.sender = ?", Box::new(s.clone()));
        }
        if let Some(s) = &filter.status {
            add(" AND d.status = ?", Box::new(s.clone()));
        }
        if let Some(t) = filter.since_ms {
            add(" AND d.received_at >= ?", Box::new(t));
        }
        let sql = format!(
            "SELECT id, listener, raw, control_id FROM (
                SELECT DISTINCT ON (d.received_at, d.control_id, d.listener)
                    d.id, d.listener, b.raw, d.control_id
                FROM deliveries d JOIN bodies b ON b.id = d.id WHERE true{conditions}
                ORDER BY d.received_at, d.control_id, d.listener, d.id
             ) s ORDER BY id LIMIT 100000"
        );
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client
            .query(sql.as_str(), &params)
            .await
            .map_err(read_err)?;
        Ok(rows
            .iter()
            .map(|r| Journaled {
                id: r.get(0),
                listener: r.get(1),
                raw: r.get(2),
                control_id: r.get(3),
            })
            .collect())
    }

    async fn prune(
        &self,
        max_age: Duration,
        max_finished: Option<u64>,
    ) -> Result<usize, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let mut deleted = client
            .execute(
                "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < $1",
                &[&cutoff],
            )
            .await
            .map_err(write_err)?;
        if let Some(keep) = max_finished {
            deleted += client
                .execute(
                    "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND id NOT IN
                     (SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') ORDER BY id DESC LIMIT $1)",
                    &[&(keep.min(i64::MAX as u64) as i64)],
                )
                .await
                .map_err(write_err)?;
        }
        Ok(deleted as usize)
    }

    /// One text column of the newest delivery with this MSH-10.
    async fn newest(
        &self,
        control_id: &str,
        column: &'static str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT {column} FROM deliveries d JOIN bodies b ON b.id = d.id
             WHERE d.control_id = $1 ORDER BY d.id DESC LIMIT 1"
        );
        let row = client
            .query_opt(sql.as_str(), &[&control_id])
            .await
            .map_err(read_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// An update returning the destination of the row it changed.
    async fn update_one(&self, sql: &'static str, id: i64) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let row = client
            .query_opt(sql, &[&id, &now_ms()])
            .await
            .map_err(write_err)?;
        Ok(row.map(|r| r.get(0)))
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
        Box::pin(async move { self.inner.record(id, &outcome).await })
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

    fn hold(&self, id: i64) -> StoreFuture<'_, bool> {
        Box::pin(self.inner.hold(id))
    }

    fn cluster(&self) -> StoreFuture<'_, Option<Cluster>> {
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
