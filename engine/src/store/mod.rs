//! The journal: every message acknowledged in `commit` mode is stored here,
//! durably, before its AA goes out, and stays until the IIS has answered it.
//!
//! The engine talks to it through the [`Store`] trait, which says what the
//! engine needs and nothing of how a database does it: insert durably, claim
//! the next deliveries of a destination, record an attempt, read back. SQLite
//! ([`sqlite::SqliteStore`]) is the default. The trait is shaped so a shared
//! PostgreSQL store can serve several engine nodes from one queue: ids are
//! the store's, `claim` hands a destination's rows to one caller at a time
//! (per order key, so per-patient order holds across nodes), and `record` /
//! `flush` let a backend batch its writes.

pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use sqlite::SqliteStore;

/// In a cluster a node's message ids start at its number shifted this far,
/// so an id names the node whose log holds it.
pub const NODE_SHIFT: u32 = 40;
/// The highest node number: ids stay below 2^53, exact in a browser.
pub const MAX_NODE_NUMBER: i32 = (1 << (53 - NODE_SHIFT)) - 1;
pub use sqlite::private_files;

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
    /// Whether the same sender's MSH-10, sent again, is answered from the
    /// journal instead of journaled twice (a resend after a node died);
    /// false for messages reprocessed on purpose. The shared (PostgreSQL)
    /// store honours it; one SQLite engine has no other node to resend to.
    pub dedupe: bool,
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
    /// When it was received (ms since the epoch).
    pub received_at: i64,
    /// The route that took it.
    pub route: String,
    /// The sending facility (MSH-4.1) as received.
    pub sender: String,
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
    /// The status as stored and shown: `queued`, `delivered`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }
}

/// Why the journal failed. Each failure keeps the error it came from as
/// its source; its text ends with that error's whole chain (a PostgreSQL
/// failure's message and SQLSTATE, say).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("journal {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("journal write failed: {0}")]
    Write(#[source] Cause),
    #[error("journal read failed: {0}")]
    Read(#[source] Cause),
    #[error("the journal is shut down")]
    Closed,
    /// The claim on delivery `0` lapsed and another node holds it now: the
    /// outcome was not recorded (the other node's counts).
    #[error("delivery {0}: the claim lapsed and another node took it over; outcome not recorded")]
    Fenced(i64),
}

/// The error a store's failure came from (the database driver's, the
/// system's, or a text of ours), shared so one failed batch can answer
/// each of its callers. Its text is the error's whole chain.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// A cause that is only a text (a state of ours, not an error below).
    pub fn text(text: impl Into<String>) -> Cause {
        Cause(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            text.into(),
        )))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The outcome of one delivery attempt, to record.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub status: Status,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// When a queued delivery may be tried again (ms since the epoch).
    pub next_attempt_at: i64,
    pub error: Option<String>,
    /// The IIS answer and its class, when it answered.
    pub answer: Option<(Vec<u8>, String)>,
}

/// What a [`Store`] call returns: a boxed future, so stores can be used as
/// `dyn Store` and implemented with blocking or asynchronous drivers.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where the engine keeps journaled messages and their deliveries.
///
/// Contract, whatever the backend:
/// - [`Store::insert`] returns only once the rows are durable (the AA
///   depends on it); concurrent calls may share one commit.
/// - [`Store::claim`] returns queued deliveries of one destination, oldest
///   first, that the caller may attempt: a delivery is handed to one caller
///   at a time, and all queued deliveries of one order key go to the same
///   caller, so they are sent in order. A claim ends with [`Store::record`]
///   (or lapses, for a backend shared by nodes, when the node dies).
/// - [`Store::record`] may buffer; [`Store::flush`] returns once everything
///   recorded before it is committed: visible to `claim` and `select`, and
///   kept if the engine process dies. (A record lost to a power cut only
///   means a message is delivered twice: delivery is at least once.)
pub trait Store: Cluster + Send + Sync + 'static {
    /// Stores deliveries durably and returns their ids, in order.
    fn insert(&self, batch: Vec<NewDelivery>) -> StoreFuture<'_, Vec<i64>>;
    /// Claims up to `limit` queued deliveries of `destination` (due or not:
    /// the caller honours `next_attempt_at`), oldest first.
    fn claim<'a>(&'a self, destination: &'a str, limit: usize) -> StoreFuture<'a, Vec<Pending>>;
    /// Records an attempt's outcome for delivery `id` and ends its claim.
    fn record(&self, id: i64, outcome: Attempted) -> StoreFuture<'_, ()>;
    /// Waits until everything recorded before this call is committed.
    fn flush(&self) -> StoreFuture<'_, ()>;
    /// Counts deliveries by status.
    fn count(&self, status: Status) -> StoreFuture<'_, i64>;
    /// The status of the newest delivery of the message with this MSH-10.
    fn status_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>>;
    /// What each plugin did with the newest message with this MSH-10.
    fn stages_of<'a>(&'a self, control_id: &'a str) -> StoreFuture<'a, Option<String>>;
    /// Journaled messages matching a filter, oldest first, one per message
    /// even when it went to several destinations.
    fn select<'a>(&'a self, filter: &'a Filter) -> StoreFuture<'a, Vec<Journaled>>;
    /// Deletes finished (delivered or dead) deliveries last changed more than
    /// `max_age` ago, and beyond the newest `max_finished`; never queued ones.
    fn prune(&self, max_age: Duration, max_finished: Option<u64>) -> StoreFuture<'_, usize>;
    /// Makes a queued delivery due now; returns its destination, or `None`
    /// when it is not queued.
    fn retry_now(&self, id: i64) -> StoreFuture<'_, Option<String>>;
    /// Queues a dead delivery again, attempts reset; returns its
    /// destination, or `None` when it is not dead.
    fn requeue(&self, id: i64) -> StoreFuture<'_, Option<String>>;
    /// Per destination: queued deliveries and when the oldest was received
    /// (ms since the epoch). Read once at start; the console keeps the
    /// numbers up to date from then on.
    fn queued_by_destination(&self) -> StoreFuture<'_, Vec<(String, i64, i64)>>;
}

/// What a journal shared by several engines (nodes) adds: leases on claims
/// and bulk jobs, node numbers, the other nodes. A journal one engine owns
/// answers as the only node.
pub trait Cluster {
    /// Called just before delivery `id` is sent: whether this caller still
    /// holds its claim (a shared store also extends the lease, unless the
    /// claim is so recent that its lease outlasts [`Cluster::send_window`],
    /// and keeps it renewed until [`Store::record`]). A store with one
    /// engine always holds its claims.
    fn hold(&self, id: i64) -> StoreFuture<'_, bool>;
    /// How long after a successful [`Cluster::hold`] (timed from before it
    /// was asked) the delivery may still be written to the IIS: past it
    /// another node may have taken the delivery over, so it is not sent.
    /// `None` for a store one engine owns.
    fn send_window(&self) -> Option<Duration>;
    /// This node's number in a shared store (its console's message ids are
    /// numbered from it), `None` for a store one engine owns.
    fn node_number(&self) -> Option<i32>;
    /// Takes or renews this node's lease on bulk job `job` (renew it every
    /// third of [`Cluster::lease`]): false while another node holds it. A
    /// store one engine owns always gives it.
    fn job_lease<'a>(&'a self, job: &'a str) -> StoreFuture<'a, bool>;
    /// Gives up this node's lease on bulk job `job` (it ended here).
    fn job_release<'a>(&'a self, job: &'a str) -> StoreFuture<'a, ()>;
    /// How long a node's leases last without renewal (`None`: no leases).
    fn lease(&self) -> Option<Duration>;
    /// The other live nodes whose consoles this node's console asks.
    fn peers(&self) -> StoreFuture<'_, Vec<Peer>>;
    /// Gives back a claim that was held but not used (nothing was sent), so
    /// the delivery can be claimed again at once instead of after its lease.
    fn release(&self, id: i64) -> StoreFuture<'_, ()>;
    /// The nodes sharing this store, for `/healthz`; `None` for a store one
    /// engine owns.
    fn cluster(&self) -> StoreFuture<'_, Option<ClusterState>>;
}

/// Engine nodes sharing one store, as `/healthz` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterState {
    /// This node's id.
    pub node: String,
    pub lease_ms: i64,
    /// Outcomes this node could not record because its claim had lapsed.
    pub fenced: u64,
    pub nodes: Vec<NodeState>,
}

/// One node, from the `nodes` table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeState {
    pub id: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Deliveries it holds an unexpired lease on.
    pub leases: i64,
}

/// Another node of the cluster, as the console reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Its admin API, `http://host:port`.
    pub console_url: String,
    pub number: i32,
}

/// The journal the engine uses: any store, shared.
pub type Journal = Arc<dyn Store>;

/// Opens the default store (SQLite) at `path`, creating and migrating it.
pub fn open(path: &Path) -> Result<Journal, StoreError> {
    Ok(Arc::new(SqliteStore::open(path)?))
}

/// Opens the journal a configuration names: the shared PostgreSQL store
/// when `[store] url` is set, else the SQLite file; `None` when no route
/// journals.
pub async fn open_configured(
    config: &crate::config::Config,
) -> Result<Option<Journal>, StoreError> {
    if let Some(pg) = &config.postgres {
        let store = postgres::PgStore::open(pg).await?;
        return Ok(Some(Arc::new(store)));
    }
    match &config.journal {
        Some(path) => Ok(Some(open(path)?)),
        None => Ok(None),
    }
}
