//! Writes from many tasks gathered into one transaction: the messages taken
//! in on every connection, the outcomes of every delivery worker.
//!
//! Each kind of write has a few workers. A worker waits for one request,
//! takes every other request already waiting (up to a cap), writes them all
//! in one transaction with the statements pipelined on one connection, and
//! answers each request once the transaction is committed. Under no load a
//! request is written alone at once, as before; under load one commit (one
//! WAL flush, one round trip) serves many requests. What a request is
//! answered is what it would have been answered alone: when the database
//! refuses the transaction (an error of its own, so nothing of it was
//! written; or a lock held elsewhere for longer than a group waits) the
//! requests are written again each in its own transaction, side by side,
//! so one bad or stalled request fails or waits alone; when the connection
//! fails, the outcome is unknown and every request of the group fails, as
//! a lone write would have.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::*;

/// Requests waiting for a worker, per kind of write.
const QUEUE: usize = 1024;
/// Workers journaling messages, each one transaction at a time (of the
/// pool's 16 connections).
const INSERT_WORKERS: usize = 4;
/// Workers recording delivery outcomes.
const RECORD_WORKERS: usize = 2;
/// Requests written in one transaction at most.
const GROUP_MAX: usize = 64;

/// One request and where its answer goes.
type Waiting<Q, A> = (Q, oneshot::Sender<A>);

/// The workers of one kind of write.
pub(super) struct Group<Q, A> {
    queue: mpsc::Sender<Waiting<Q, A>>,
}

impl<Q: Send + 'static, A: Send + 'static> Group<Q, A> {
    /// Starts `workers` workers, each writing up to `max` requests at once
    /// with `write`, which answers them in order. They stop when the group
    /// is dropped, once what was asked is written.
    pub(super) fn start<F, Fut>(workers: usize, max: usize, write: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let write = Arc::new(write);
        for _ in 0..workers.max(1) {
            tokio::spawn(work(waiting.clone(), write.clone(), max.max(1)));
        }
        Group { queue }
    }

    /// Asks for one write and waits for its answer; `None` when the workers
    /// are gone (the store is closing).
    pub(super) async fn ask(&self, request: Q) -> Option<A> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn work<Q, A, F, Fut>(
    waiting: Arc<Mutex<mpsc::Receiver<Waiting<Q, A>>>>,
    write: Arc<F>,
    max: usize,
) where
    F: Fn(Vec<Q>) -> Fut,
    Fut: Future<Output = Vec<A>>,
{
    loop {
        let taken = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut taken = vec![first];
            while taken.len() < max {
                match waiting.try_recv() {
                    Ok(next) => taken.push(next),
                    Err(_) => break,
                }
            }
            taken
        };
        let (requests, replies): (Vec<Q>, Vec<oneshot::Sender<A>>) = taken.into_iter().unzip();
        let answers = write(requests).await;
        // A request left without an answer is told the store is closing.
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = reply.send(answer);
        }
    }
}

/// A group waits this long for a lock another session holds. Nothing of
/// ours holds one for long (another group journaling the same message, a
/// claim), so a longer wait is a session stalled on a key of the group,
/// such as a frozen node's unfinished insert of the same message: the group
/// gives up at once and its requests are written each in its own
/// transaction, side by side, so only the one on the held key waits (up to
/// the session's `lock_timeout`) and the others go through.
const GROUP_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = 200";

/// Whether an error is the database's own refusal, after which nothing of
/// the transaction was written (as opposed to a lost connection, after
/// which a commit may or may not have happened).
fn refused(e: &PgError) -> bool {
    matches!(e, PgError::Db(e) if e.as_db_error().is_some())
}

/// The answers to a group of `n` requests written together, or `None` when
/// they are to be written each by itself: a group of one, or one the database
/// refused. When the connection failed, every request is answered with
/// that failure.
async fn together<A>(
    n: usize,
    write: impl Future<Output = Result<Vec<A>, PgError>>,
) -> Option<Vec<Result<A, StoreError>>> {
    if n < 2 {
        return None;
    }
    match write.await {
        Ok(answers) => Some(answers.into_iter().map(Ok).collect()),
        Err(e) if refused(&e) => None,
        Err(e) => {
            let cause = Cause::new(e);
            Some(
                (0..n)
                    .map(|_| Err(StoreError::Write(cause.clone())))
                    .collect(),
            )
        }
    }
}

/// One message's deliveries (one per destination) and their new ids.
pub(super) type Inserted = Result<Vec<i64>, StoreError>;

/// A delivery and its body in one statement: one round trip.
const INSERT: &str = "WITH d AS (
        INSERT INTO deliveries (received_at, listener, route, sender, control_id,
            message_type, order_key, destination, status, updated_at, dedupe_key)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $1, $9)
        ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING RETURNING id
     ), b AS (
        INSERT INTO bodies (id, raw, payload, stages) SELECT id, $10, $11, $12 FROM d
     )
     SELECT id FROM d";

/// The workers journaling messages.
pub(super) fn inserts(pool: &Pool) -> Group<Vec<NewDelivery>, Inserted> {
    let pool = pool.clone();
    Group::start(INSERT_WORKERS, GROUP_MAX, move |messages| {
        write(pool.clone(), messages)
    })
}

/// The workers recording delivery outcomes.
pub(super) fn records(pool: &Pool) -> Group<Outcome, Recorded> {
    let pool = pool.clone();
    Group::start(RECORD_WORKERS, GROUP_MAX, move |outcomes| {
        write(pool.clone(), outcomes)
    })
}

/// A kind of request the workers gather: its statement and how one
/// request is written with it.
trait Write: Send + Sync {
    type Answer: Send;
    /// The statement, prepared once per connection.
    const SQL: &'static str;
    /// Writes the request with the statement on `conn`.
    fn write<'a>(
        &'a self,
        conn: &'a tokio_postgres::Client,
        statement: &'a tokio_postgres::Statement,
    ) -> impl Future<Output = Result<Self::Answer, PgError>> + Send + 'a;
    /// Statements the request takes: more than one need a transaction when
    /// it is written alone.
    fn statements(&self) -> usize;
}

/// Writes requests: all in one transaction, or each in its own.
async fn write<W: Write>(pool: Pool, requests: Vec<W>) -> Vec<Result<W::Answer, StoreError>> {
    if let Some(answers) = together(requests.len(), all_in_one(&pool, &requests)).await {
        return answers;
    }
    futures::future::join_all(requests.iter().map(|r| alone(&pool, r))).await
}

async fn all_in_one<W: Write>(pool: &Pool, requests: &[W]) -> Result<Vec<W::Answer>, PgError> {
    let mut client = pool.get().await?;
    let statement = client.prepare_cached(W::SQL).await?;
    let tx = client.transaction().await?;
    tx.batch_execute(GROUP_LOCK_TIMEOUT).await?;
    let answers =
        futures::future::try_join_all(requests.iter().map(|r| r.write(tx.client(), &statement)))
            .await?;
    tx.commit().await?;
    Ok(answers)
}

async fn alone<W: Write>(pool: &Pool, request: &W) -> Result<W::Answer, StoreError> {
    let mut client = pool.get().await.map_err(write_err)?;
    let statement = client.prepare_cached(W::SQL).await.map_err(write_err)?;
    if request.statements() < 2 {
        return request.write(&client, &statement).await.map_err(write_err);
    }
    let tx = client.transaction().await.map_err(write_err)?;
    let answer = request
        .write(tx.client(), &statement)
        .await
        .map_err(write_err)?;
    tx.commit().await.map_err(write_err)?;
    Ok(answer)
}

/// One message: a statement per destination, pipelined.
impl Write for Vec<NewDelivery> {
    type Answer = Vec<i64>;
    const SQL: &'static str = INSERT;

    fn write<'a>(
        &'a self,
        conn: &'a tokio_postgres::Client,
        statement: &'a tokio_postgres::Statement,
    ) -> impl Future<Output = Result<Vec<i64>, PgError>> + Send + 'a {
        insert_all(conn, statement, self)
    }

    fn statements(&self) -> usize {
        self.len()
    }
}

/// Inserts one message's deliveries, the statements sent together (pipelined
/// on the one connection): the server runs them in order, as if one by one.
/// A delivery whose dedupe key is already journaled gets its first copy's id.
async fn insert_all(
    conn: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    message: &[NewDelivery],
) -> Result<Vec<i64>, PgError> {
    let now = &now_ms();
    // Sender, MSH-10 and destination: a resend finds its first copy.
    let keys: Vec<Option<String>> = message
        .iter()
        .map(|d| {
            (d.dedupe && !d.sender.is_empty() && !d.control_id.is_empty())
                .then(|| format!("{}\u{1f}{}\u{1f}{}", d.sender, d.control_id, d.destination))
        })
        .collect();
    let rows =
        futures::future::try_join_all(message.iter().zip(&keys).map(|(d, key)| async move {
            let payload: &[u8] = if d.payload == d.raw { &[] } else { &d.payload };
            conn.query_opt(
                insert,
                &[
                    now,
                    &d.listener,
                    &d.route,
                    &d.sender,
                    &d.control_id,
                    &d.message_type,
                    &d.order_key,
                    &d.destination,
                    key,
                    &d.raw,
                    &payload,
                    &d.stages,
                ],
            )
            .await
        }))
        .await?;
    let mut ids = Vec::with_capacity(message.len());
    for (row, key) in rows.into_iter().zip(&keys) {
        let id = match row {
            Some(row) => row.try_get(0)?,
            None => {
                let first: i64 = conn
                    .query_one("SELECT id FROM deliveries WHERE dedupe_key = $1", &[key])
                    .await?
                    .try_get(0)?;
                tracing::info!(
                    id = first,
                    "a message sent again was already journaled; answered without a second delivery"
                );
                first
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// One delivery attempt's outcome, under the fencing token of its claim.
pub(super) struct Outcome {
    pub id: i64,
    pub token: i64,
    pub attempted: Arc<Attempted>,
}

/// How many rows an outcome changed: 0 when the token no longer matches.
pub(super) type Recorded = Result<u64, StoreError>;

const RECORD: &str = "UPDATE deliveries SET status = $3, attempts = $4, next_attempt_at = $5,
     last_error = $6, answer = COALESCE($7, answer),
     answer_class = COALESCE($8, answer_class), updated_at = $9,
     lease_node = NULL, lease_until = 0
     WHERE id = $1 AND lease_token = $2";

impl Write for Outcome {
    type Answer = u64;
    const SQL: &'static str = RECORD;

    fn write<'a>(
        &'a self,
        conn: &'a tokio_postgres::Client,
        statement: &'a tokio_postgres::Statement,
    ) -> impl Future<Output = Result<u64, PgError>> + Send + 'a {
        record_one(conn, statement, self)
    }

    fn statements(&self) -> usize {
        1
    }
}

async fn record_one(
    conn: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    outcome: &Outcome,
) -> Result<u64, PgError> {
    let a = &outcome.attempted;
    let (answer, class) = match &a.answer {
        Some((bytes, class)) => (Some(bytes.as_slice()), Some(class.as_str())),
        None => (None, None),
    };
    let attempts = a.attempts.min(i32::MAX as u32) as i32;
    let changed = conn
        .execute(
            statement,
            &[
                &outcome.id,
                &outcome.token,
                &a.status.as_str(),
                &attempts,
                &a.next_attempt_at,
                &a.error,
                &answer,
                &class,
                &now_ms(),
            ],
        )
        .await?;
    Ok(changed)
}
