//! The journal's writer thread: it gathers inserts and attempts into
//! group commits, and a checkpointer folds the WAL back while it works.

use super::*;

/// Most requests committed in one transaction.
pub(super) const GROUP: usize = 512;

/// How long a commit may wait for more messages when several arrive at
/// once: fewer, larger commits (one fsync each) under load.
pub(super) const GATHER: Duration = Duration::from_micros(400);

/// Messages in the previous commit from which the next one waits for
/// company; a lone sender is never kept waiting.
pub(super) const BUSY: usize = 3;

/// How often the checkpointer copies committed WAL frames into the database
/// file.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Copies committed WAL frames into the database file from its own
/// connection, beside the writer: a passive checkpoint never blocks it. The
/// writer's own automatic checkpoint (every 1000 WAL pages) stays on, but
/// finds the frames already copied, so it costs the commit that runs it
/// almost nothing, and it still lets the WAL start over from its beginning
/// (a passive checkpoint alone never catches up with a busy writer, and the
/// WAL would grow without end). Measured: p99 to AA at 8 connections 4.3–4.8
/// → 3.2–3.4 ms. Stops when `stop` is set. A failure is logged once until
/// a checkpoint succeeds again (the writer's own checkpoints go on meanwhile).
pub(super) fn checkpointer(conn: Connection, stop: Arc<AtomicBool>) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Err(e) if !failing => {
                tracing::warn!(error = %e, "journal checkpoint failed; retrying");
                failing = true;
            }
            Err(e) => tracing::debug!(error = %e, "journal checkpoint failed again"),
            Ok(()) if failing => {
                tracing::info!("journal checkpoints work again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
}

/// Sets its flag when dropped. The writer holds it, so the checkpointer
/// stops when the writer ends, or when its thread could not be started.
pub(super) struct StopOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(super) fn writer(mut conn: Connection, rx: std_mpsc::Receiver<Op>, _checkpointer: StopOnDrop) {
    let mut last_inserts = 0;
    // `open` sets synchronous=FULL; `apply` switches only when needed.
    let mut full_sync = true;
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        let gather_until = std::time::Instant::now() + GATHER;
        let mut inserts = usize::from(matches!(ops.first(), Some(Op::Insert(..))));
        while ops.len() < GROUP {
            let op = match rx.try_recv() {
                Ok(op) => op,
                Err(std_mpsc::TryRecvError::Disconnected) => break,
                Err(std_mpsc::TryRecvError::Empty) => {
                    let left = gather_until.saturating_duration_since(std::time::Instant::now());
                    if last_inserts < BUSY || inserts == 0 || left.is_zero() {
                        break;
                    }
                    // Sleep through the rest of the window rather than
                    // waking for every request: senders then find the
                    // writer awake and need not wake it either.
                    std::thread::sleep(left);
                    continue;
                }
            };
            inserts += usize::from(matches!(op, Op::Insert(..)));
            ops.push(op);
        }
        last_inserts = inserts;
        let result = apply(&mut conn, &ops, &mut full_sync).map_err(Cause::new);
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
                        Err(e) => Err(StoreError::Write(e.clone())),
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
///
/// Only groups with new messages are fsynced (`synchronous=FULL`) before
/// anyone is answered: their AA depends on it. Groups of delivery outcomes
/// and flushes commit with `synchronous=NORMAL`: that survives a killed
/// process, and the next full commit makes the WAL frames durable; losing one
/// to a power cut only means a message is delivered again.
pub(super) fn apply(
    conn: &mut Connection,
    ops: &[Op],
    full_sync: &mut bool,
) -> Result<Vec<i64>, rusqlite::Error> {
    let must_sync = ops.iter().any(|op| matches!(op, Op::Insert(..)));
    if must_sync != *full_sync {
        let level = if must_sync { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", level)?;
        *full_sync = must_sync;
    }
    let tx = conn.transaction()?;
    let mut ids = Vec::new();
    {
        let now = now_ms();
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO deliveries (received_at, listener, route, sender, control_id, message_type, order_key,
                 destination, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?1)",
            )?;
        let mut body = tx.prepare_cached(
            "INSERT INTO bodies (id, raw, payload, stages) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut update = tx
            .prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                 answer = COALESCE(?6, answer), answer_class = COALESCE(?7, answer_class), updated_at = ?8 WHERE id = ?1",
            )?;
        for op in ops {
            match op {
                Op::Insert(batch, _) => {
                    for d in batch {
                        insert.execute(params![
                            now,
                            d.listener,
                            d.route,
                            d.sender,
                            d.control_id,
                            d.message_type,
                            d.order_key,
                            d.destination,
                        ])?;
                        let id = tx.last_insert_rowid();
                        // Most messages go out as they came: keep one copy.
                        let payload: &[u8] = if d.payload == d.raw { &[] } else { &d.payload };
                        body.execute(params![id, d.raw, payload, d.stages])?;
                        ids.push(id);
                    }
                }
                Op::Sync(_) => {}
                Op::Update {
                    id,
                    outcome:
                        Attempted {
                            status,
                            attempts,
                            next_attempt_at,
                            error,
                            answer,
                        },
                } => {
                    let (answer, class) = match answer {
                        Some((a, c)) => (Some(a.as_slice()), Some(c.as_str())),
                        None => (None, None),
                    };
                    update.execute(params![
                        id,
                        status.as_str(),
                        attempts,
                        next_attempt_at,
                        error,
                        answer,
                        class,
                        now
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(ids)
}
