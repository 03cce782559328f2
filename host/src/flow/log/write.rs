//! Writing the log: the writer thread's loop, one batch per transaction,
//! pruning, the schema's migrations, and the writer's scheduling.

use super::*;
use crate::store::sqlite::schema;

impl MessageLog {
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
                        0 => crate::flow::Outcome::RejectedByIzhub,
                        1 => crate::flow::Outcome::RejectedByIis,
                        2..=5 => crate::flow::Outcome::AcceptedWithWarnings,
                        _ => crate::flow::Outcome::Accepted,
                    };
                    let summary = Summary {
                        listener: "ehr".into(),
                        sender: format!("CLINIC-{}", i % 200),
                        message_type: "VXU^V04".into(),
                        control_id: format!("SEED-{i}"),
                        route: format!("route-{}", i % 200),
                        destination: format!("iis-{}", i % 5),
                        outcome: status,
                        ack: match status {
                            crate::flow::Outcome::RejectedByIzhub => "AE",
                            _ => "AA",
                        }
                        .into(),
                    };
                    let at = now - span + (span / n.max(1) as i64) * i as i64;
                    let mut r = Record::of(id, at, summary, format!("P{}", i % 250_000));
                    if i % 7 == 0 {
                        r.detections = vec!["vaccination-lot-missing".into()];
                    }
                    r.message.took = Duration::from_micros(1_500);
                    r.message.received = sample.to_vec();
                    r.message.completeness = match i % 3 {
                        0 => "race=missing ethnicity=present",
                        _ => "race=present ethnicity=present",
                    }
                    .into();
                    r
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
                            return Err(LogError::Read(Cause::text("the log writer stopped")));
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

/// Opens the bodies' folder: segments no row points into are deleted, and
/// writing starts in a new segment.
pub(super) fn open_bodies(conn: &Connection, dir: &Path) -> Result<bodies::Writer, String> {
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

/// The message log's schema versions (`PRAGMA user_version`). Version 1
/// adopts a log written before the schema was versioned: the tables as
/// `schema.sql` makes them, and the columns earlier releases added one by one.
const MIGRATIONS: [&str; 1] = [concat!(
    include_str!("schema.sql"),
    "
CREATE INDEX IF NOT EXISTS messages_reprocess_of ON messages(reprocess_of) WHERE reprocess_of IS NOT NULL;
"
)];

/// Brings a log up to this release's schema; a log of a newer release is
/// refused untouched.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), schema::SchemaError> {
    if schema::version(conn, schema::VersionIn::Header)? == 0 {
        add_missing_columns(conn)?;
    }
    schema::migrate(conn, schema::VersionIn::Header, &MIGRATIONS)
}

/// Columns that logs of releases before versioning may lack (their
/// `CREATE TABLE IF NOT EXISTS` kept their older table).
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_messages: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'")?
        .exists([])?;
    if !has_messages {
        return Ok(());
    }
    let has = |column: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = ?1")?
            .exists([column])
    };
    if !has("reprocess_of")? {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN reprocess_of INTEGER")?;
    }
    // Bodies moved to segment files; rows written before keep theirs in
    // message_bodies (body_ref NULL).
    if !has("body_ref")? {
        conn.execute_batch(
            "ALTER TABLE messages ADD COLUMN body_ref INTEGER; ALTER TABLE messages ADD COLUMN body_len INTEGER;",
        )?;
    }
    Ok(())
}

/// Sets the writer's priority. Idle is SCHED_IDLE where the engine may
/// leave it again (root, CAP_SYS_NICE, or an RLIMIT_NICE of 20, systemd's
/// `LimitNICE=20`): the writer then runs only on a core nothing else wants
/// and gives way at once when a connection's task wakes, and is raised to
/// SCHED_OTHER at nice [`RAISED_NICE`] when it falls behind. Elsewhere it runs at nice 19 all
/// the time and is never raised. Returns whether it can be raised. `tid`
/// names the writer when another thread changes it (`None`: the caller).
pub(super) fn writer_priority(tid: Option<i32>, idle: bool) -> bool {
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
pub(super) fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::gettid().as_raw_nonzero().get()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(super) mod sched {
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

pub(super) fn write_loop(
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
pub(super) enum BatchError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("message bodies: {0}")]
    Bodies(#[from] std::io::Error),
}

pub(super) fn write_batch(
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
                Op::Record(r) => write_record(&tx, body_writer, &r, &mut msg, &mut link)?,
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

pub(super) fn prune_log(
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

/// One message's row, body, journal links and detection index.
fn write_record(
    tx: &rusqlite::Transaction<'_>,
    body_writer: &mut bodies::Writer,
    record: &Record,
    msg: &mut rusqlite::CachedStatement<'_>,
    link: &mut rusqlite::CachedStatement<'_>,
) -> Result<(), BatchError> {
    let (r, summary) = (&record.message, &record.message.summary);
    let stages = match r.stages.is_empty() {
        true => String::new(),
        false => serde_json::to_string(&r.stages).unwrap_or_default(),
    };
    let detections = if record.detections.is_empty() {
        crate::flow::detections(&r.answer)
    } else {
        record.detections.clone()
    };
    // The relayed delivery goes with the body, its answer kept once when it
    // is the answer sent back.
    let (iis_answer, attempt): (&[u8], Vec<u8>) = match &r.attempt {
        Some(a) => {
            let (kind, own) = match a.answer.as_deref() {
                Some(x) if !x.is_empty() && x == &r.answer[..] => (AttemptAnswer::Same, &[][..]),
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
        record.id,
        &bodies::Parts {
            received: &r.received,
            stages: &stages,
            issues: &record.issues,
            answer: &r.answer,
            iis_answer,
            attempt: &attempt,
        },
    )?;
    msg.execute(params![
        record.id,
        record.received_at,
        summary.listener,
        summary.sender,
        summary.message_type,
        summary.control_id,
        r.patient_id,
        summary.route,
        summary.destination,
        summary.outcome.as_str(),
        summary.ack,
        detections.join(" "),
        r.took.as_micros().min(i64::MAX as u128) as i64,
        r.completeness,
        r.reprocess_of,
        body.at,
        body.len,
    ])?;
    for j in &r.journal_ids {
        link.execute(params![j, record.id])?;
    }
    // A few rows per statement: most of an insert's cost is the statement's,
    // not the row's.
    for chunk in detections.chunks(DETECTIONS_PER_INSERT) {
        let mut stmt = tx.prepare_cached(detections_insert(chunk.len()))?;
        for (k, d) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(2 * k + 1, d)?;
            stmt.raw_bind_parameter(2 * k + 2, record.id)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}
