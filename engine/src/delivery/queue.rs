//! Store-and-forward: deliveries journaled in `commit` mode go to their IIS
//! from here. Per destination: oldest first, per sending facility and patient
//! in order, bounded concurrency, retries with exponential backoff and jitter,
//! a circuit breaker, and a dead letter after a permanent reject (AR) or too
//! many attempts. A delivery is marked done only when the IIS answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{
    AttemptOutcome, AttemptReport, Control, DeliveryError, Destination, QueueState, QueueWatch,
};
use crate::hl7;
use crate::metrics::{Metrics, l};
use crate::store::{Attempted, Journal, Pending, Status, now_ms};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::Ordering;

/// The breaker's state as the console shows it.
fn breaker_state(open_until: Option<i64>, now: i64) -> &'static str {
    match open_until {
        None => "closed",
        Some(until) if now < until => "open",
        Some(_) => "half-open",
    }
}

/// Messages read from the journal per round.
const BATCH: usize = 512;

/// Backoff before attempt `attempts + 1`: doubling from `initial`, capped,
/// with up to 25% jitter so retries from many messages spread out.
fn backoff(spec: &super::Target, attempts: u32, seed: i64) -> i64 {
    let base = spec.delivery.retry_initial.as_millis() as i64;
    let cap = spec.delivery.retry_max.as_millis() as i64;
    let exp = base
        .saturating_mul(1i64 << attempts.saturating_sub(1).min(20))
        .min(cap);
    let jitter = (seed.wrapping_mul(2_654_435_761) & 0xffff) * (exp / 4).max(1) / 0xffff;
    exp + jitter
}

/// The outcome of one delivery attempt.
enum Attempt {
    Delivered,
    Failed,
    /// Not sent: the claim lapsed (a shared journal gave it to another node).
    Lost,
}

/// What one destination name's queue consumer runs with.
pub struct Queue {
    pub name: String,
    /// The destination it delivers through (`None` once removed).
    pub current: watch::Receiver<Option<Arc<Destination>>>,
    pub journal: Journal,
    /// Rung when a message for it is journaled.
    pub wake: Arc<Notify>,
    /// The operator's pause and breaker reset.
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// Who follows its work (the console).
    pub watch: Option<Arc<dyn QueueWatch>>,
}

/// Runs the queue of the destination called `name` until `shutdown`: the one
/// consumer of that name's deliveries for the life of the engine. A
/// configuration reload hands it the new [`Destination`] through `current`;
/// the round in progress finishes on the old one, the next starts on the new
/// one, so no delivery is ever claimed twice. While `current` holds `None`
/// (the destination was removed) it waits.
pub async fn run(queue: Queue) {
    let Queue {
        name,
        mut current,
        journal,
        wake,
        control,
        metrics,
        shutdown,
        watch,
    } = queue;
    let mut breaker = Breaker::new(&metrics, &name);
    let oldest_gauge = metrics
        .queue_oldest
        .get_or_create(&vec![l("destination", &name)])
        .clone();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if control.reset.swap(false, Ordering::Relaxed) && breaker.close() {
            tracing::info!(destination = %name, "circuit breaker closed by an operator");
        }
        if control.paused.load(Ordering::Relaxed) {
            tell(watch.as_deref(), &name, breaker.state(None, None, true));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let dest = current.borrow_and_update().clone();
        let Some(dest) = dest else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = current.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let spec = dest.spec().clone();
        if let Some(until) = breaker.open_until
            && stopped_within(&shutdown, until - now_ms()).await
        {
            return;
        }
        let rows = match journal.claim(&name, BATCH).await {
            Ok(r) => r,
            Err(e) => {
                metrics
                    .journal_errors
                    .get_or_create(&vec![l("op", "claim")])
                    .inc();
                tracing::error!(destination = %name, error = %e, "cannot read the delivery queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (queued, oldest) = (
            rows.is_empty().then_some(0),
            rows.first().map(|r| r.received_at),
        );
        oldest_gauge.set(oldest.map_or(0, |ms| ms.div_euclid(1000)));
        tell(
            watch.as_deref(),
            &name,
            breaker.state(queued, oldest, false),
        );
        let now = now_ms();
        let (mut lanes, next_due) = lanes_of(rows, now);
        if lanes.is_empty() {
            let wait = next_due.map_or(1000, |d| (d - now).clamp(1, 1000)) as u64;
            drop(dest);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                changed = current.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
            continue;
        }
        // While half-open after the breaker tripped, one message tries the way.
        if breaker.open_until.is_some() {
            lanes.truncate(1);
            if let Some(l) = lanes.first_mut() {
                l.truncate(1);
            }
        }
        let (ok, failed) = deliver_round(lanes, dest, &journal, &metrics, &spec, &watch).await;
        // Make sure every outcome of this round is committed before re-reading.
        if let Err(e) = journal.flush().await {
            tracing::error!(destination = %name, error = %e, "journal flush failed");
        }
        breaker.after_round((ok, failed), &spec.delivery, &metrics, &name, now_ms());
    }
}

/// Waits `ms` milliseconds (none when not positive); `true` when the
/// engine began shutting down meanwhile.
async fn stopped_within(shutdown: &CancellationToken, ms: i64) -> bool {
    if ms <= 0 {
        return false;
    }
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_millis(ms as u64)) => false,
    }
}

/// Tells the watcher (the console's board), if any, a queue's state.
fn tell(watch: Option<&dyn QueueWatch>, name: &str, state: QueueState) {
    if let Some(w) = watch {
        w.queue_state(name, state);
    }
}

/// A destination's circuit breaker: open after `breaker_failures` failed
/// attempts in a row, half-open (one message tries the way) once
/// `breaker_open` has passed, closed by a delivery or by an operator.
struct Breaker {
    failures: u32,
    /// While set, open until then (ms since the epoch); half-open after.
    open_until: Option<i64>,
    gauge: Gauge,
}

impl Breaker {
    /// A closed breaker for the destination `name`.
    fn new(metrics: &Metrics, name: &str) -> Breaker {
        Breaker {
            failures: 0,
            open_until: None,
            gauge: metrics
                .breaker_open
                .get_or_create(&vec![l("destination", name)])
                .clone(),
        }
    }

    /// The queue's state to report, with this breaker's.
    fn state(&self, queued: Option<i64>, oldest_ms: Option<i64>, paused: bool) -> QueueState {
        QueueState {
            queued,
            oldest_ms,
            breaker: breaker_state(self.open_until, now_ms()),
            paused,
        }
    }

    /// Closes the breaker when it is open (and forgets the failures that
    /// opened it); whether it was open.
    fn close(&mut self) -> bool {
        let was_open = self.open_until.take().is_some();
        if was_open {
            self.failures = 0;
            self.gauge.set(0);
        }
        was_open
    }

    /// Counts a round's outcome at `now` (ms since the epoch): a delivery
    /// closes it, enough failures in a row open it (again) until `open_for`
    /// from now.
    fn after_round(
        &mut self,
        (ok, failed): (u32, u32),
        settings: &crate::config::DeliverySettings,
        metrics: &Metrics,
        name: &str,
        now: i64,
    ) {
        let (max_failures, open_for) = (settings.breaker_failures, settings.breaker_open);
        let transition = |state: &str| {
            metrics
                .breaker_transitions
                .get_or_create(&vec![l("destination", name), l("state", state)])
                .inc();
        };
        if ok > 0 {
            self.failures = 0;
            if self.close() {
                tracing::info!(destination = %name, "circuit breaker closed: the IIS answers again");
                transition("closed");
            }
        } else if failed > 0 {
            self.failures += failed;
            if self.failures >= max_failures {
                if self.open_until.is_none() {
                    tracing::warn!(destination = %name, failures = self.failures, "circuit breaker open: pausing deliveries");
                    transition("open");
                }
                self.gauge.set(1);
                self.open_until = Some(now + open_for.as_millis() as i64);
            }
        }
    }
}

/// One round: the lanes shared by the destination's connections, each
/// lane's messages in order, a lane stopping at its first failure. Returns
/// how many were delivered and how many failed.
async fn deliver_round(
    lanes: Vec<VecDeque<Pending>>,
    dest: Arc<Destination>,
    journal: &Journal,
    metrics: &Arc<Metrics>,
    spec: &super::Target,
    watch: &Option<Arc<dyn QueueWatch>>,
) -> (u32, u32) {
    let lanes = Arc::new(std::sync::Mutex::new(lanes));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..spec.delivery.connections.max(1) {
        let (lanes, dest, journal, metrics, spec, watch) = (
            lanes.clone(),
            dest.clone(),
            journal.clone(),
            metrics.clone(),
            spec.clone(),
            watch.clone(),
        );
        workers.spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            loop {
                let lane = lanes.lock().ok().and_then(|mut l| l.pop());
                let Some(mut lane) = lane else { break };
                while let Some(row) = lane.pop_front() {
                    match attempt(&dest, &journal, &metrics, &spec, row, watch.as_deref()).await {
                        Attempt::Delivered => ok += 1,
                        Attempt::Failed => {
                            // The rest of this lane waits for the failed one.
                            failed += 1;
                            break;
                        }
                        Attempt::Lost => break,
                    }
                }
            }
            (ok, failed)
        });
    }
    drop(dest);
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = workers.join_next().await {
        if let Ok((o, f)) = r {
            ok += o;
            failed += f;
        }
    }
    (ok, failed)
}

/// Per order key, only the oldest queued message may go, and only when due:
/// the lanes of messages that may go now (one per order key, in order), and
/// when the next one that may not is due.
fn lanes_of(rows: Vec<Pending>, now: i64) -> (Vec<VecDeque<Pending>>, Option<i64>) {
    let mut blocked = HashSet::new();
    let mut lanes: Vec<VecDeque<Pending>> = Vec::new();
    let mut lane_of: HashMap<String, usize> = HashMap::new();
    let mut next_due: Option<i64> = None;
    for row in rows {
        if blocked.contains(&row.order_key) {
            continue;
        }
        if row.next_attempt_at > now {
            next_due =
                Some(next_due.map_or(row.next_attempt_at, |d: i64| d.min(row.next_attempt_at)));
            blocked.insert(row.order_key.clone());
            continue;
        }
        let lane = *lane_of.entry(row.order_key.clone()).or_insert_with(|| {
            lanes.push(VecDeque::new());
            lanes.len() - 1
        });
        if let Some(l) = lanes.get_mut(lane) {
            l.push_back(row);
        }
    }
    (lanes, next_due)
}

/// Records an attempt's outcome. A shared journal refuses it when this
/// node's claim lapsed and another node took the delivery over (fencing):
/// counted and logged, the other node's outcome stands.
async fn record(
    journal: &Journal,
    metrics: &Metrics,
    destination: &str,
    id: i64,
    outcome: Attempted,
) {
    match journal.record(id, outcome).await {
        Ok(()) => {}
        Err(crate::store::StoreError::Fenced(_)) => {
            tracing::warn!(
                destination,
                message_id = id,
                "the claim on a delivery lapsed while it was sent; its outcome was not recorded (another node owns it)"
            );
            metrics
                .deliveries
                .get_or_create(&vec![l("destination", destination), l("result", "fenced")])
                .inc();
        }
        Err(e) => {
            metrics
                .journal_errors
                .get_or_create(&vec![l("op", "record")])
                .inc();
            tracing::error!(error = %e, "cannot record a delivery");
        }
    }
}

async fn attempt(
    dest: &Destination,
    journal: &Journal,
    metrics: &Metrics,
    spec: &super::Target,
    row: Pending,
    watch: Option<&dyn QueueWatch>,
) -> Attempt {
    let attempts = row.attempts + 1;
    let (row_id, route) = (row.id, row.route.clone());
    let asked = tokio::time::Instant::now();
    let send_by = journal.send_window().map(|w| asked + w);
    match journal.hold(row_id).await {
        Ok(true) => {}
        held => {
            if let Err(e) = held {
                tracing::warn!(destination = %spec.name, message_id = row_id, error = %e, "cannot confirm the claim on a delivery; not sending it now");
            } else {
                tracing::warn!(destination = %spec.name, message_id = row_id, "the claim on a delivery lapsed before it was sent; another node has it");
            }
            count(metrics, &spec.name, "lost_claim");
            return Attempt::Lost;
        }
    }
    // The answer must name the message as it was journaled for delivery.
    let question = hl7::Question::of_bytes(&row.payload);
    // The sender as journaled (MSH-4.1 as received), as relay mode labels it.
    let sender = metrics.sender_label(&row.sender);
    let result = dest
        .deliver_by(bytes::Bytes::from(row.payload), &question, send_by)
        .await;
    let (outcome, watched, attempt) = match &result {
        Err(DeliveryError::Lapsed { .. }) => {
            // Nothing was sent; whoever holds the claim now delivers it.
            tracing::warn!(destination = %spec.name, message_id = row_id, "the claim on a delivery lapsed before it could be written; another node has it");
            count(metrics, &spec.name, "lost_claim");
            if let Err(e) = journal.release(row_id).await {
                tracing::warn!(destination = %spec.name, message_id = row_id, error = %e, "cannot give back a lapsed claim; it frees itself when the lease ends");
            }
            return Attempt::Lost;
        }
        Ok(answer) => {
            // As relay mode counts the answers it passes on.
            metrics
                .iis_answers
                .get_or_create(&vec![
                    l("destination", &spec.name),
                    ("sender", sender),
                    l("class", answer.class().as_str()),
                ])
                .inc();
            let permanent = answer.refused_for_good();
            let (status, counted) = match permanent {
                true => (Status::Dead, "dead"),
                false => (Status::Delivered, "answered"),
            };
            count(metrics, &spec.name, counted);
            let outcome = Attempted {
                status,
                attempts,
                next_attempt_at: 0,
                error: permanent.then(|| "the IIS rejected the message (AR)".to_string()),
                answer: Some((answer.bytes().to_vec(), answer.class().as_str().into())),
            };
            let watched = AttemptOutcome::Answered {
                answer,
                dead: permanent,
            };
            (outcome, watched, Attempt::Delivered)
        }
        Err(e) => {
            let kind = e.kind();
            count(metrics, &spec.name, kind);
            let dead = attempts >= spec.delivery.max_attempts || e.is_permanent();
            let (status, next) = if dead {
                (Status::Dead, 0)
            } else {
                (Status::Queued, now_ms() + backoff(spec, attempts, row_id))
            };
            if dead {
                tracing::error!(destination = %spec.name, message_id = row_id, attempts, "giving up on a message; it is dead-lettered");
            }
            let outcome = Attempted {
                status,
                attempts,
                next_attempt_at: next,
                error: Some(e.to_string()),
                answer: None,
            };
            (
                outcome,
                AttemptOutcome::Failed { kind, dead },
                Attempt::Failed,
            )
        }
    };
    record(journal, metrics, &spec.name, row_id, outcome).await;
    report(watch, row_id, &spec.name, &route, watched);
    attempt
}

/// Counts one delivery attempt's result at a destination.
fn count(metrics: &Metrics, destination: &str, result: &str) {
    metrics
        .deliveries
        .get_or_create(&vec![l("destination", destination), l("result", result)])
        .inc();
}

/// Tells the watcher (the console), if any, how an attempt went.
fn report(
    watch: Option<&dyn QueueWatch>,
    journal_id: i64,
    destination: &str,
    route: &str,
    outcome: AttemptOutcome<'_>,
) {
    if let Some(w) = watch {
        w.attempted(AttemptReport {
            journal_id,
            destination,
            route,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The breaker opens after enough failures in a row, stays open for
    /// `breaker_open`, is half-open after, and closes on a delivery: on
    /// given times, with no waiting.
    #[test]
    fn the_breaker_opens_half_opens_and_closes_in_time() {
        let metrics = Metrics::new();
        let settings = crate::config::DeliverySettings {
            breaker_failures: 3,
            breaker_open: Duration::from_secs(30),
            ..settings()
        };
        let mut b = Breaker::new(&metrics, "mi");
        let t0 = 1_000_000;
        b.after_round((0, 2), &settings, &metrics, "mi", t0);
        assert_eq!(b.state(None, None, false).breaker, "closed");
        b.after_round((0, 1), &settings, &metrics, "mi", t0 + 10);
        assert_eq!(b.open_until, Some(t0 + 10 + 30_000));
        assert_eq!(breaker_state(b.open_until, t0 + 10 + 29_999), "open");
        assert_eq!(breaker_state(b.open_until, t0 + 10 + 30_000), "half-open");
        // The one try while half-open fails: open again from then.
        b.after_round((0, 1), &settings, &metrics, "mi", t0 + 40_000);
        assert_eq!(b.open_until, Some(t0 + 40_000 + 30_000));
        b.after_round((1, 0), &settings, &metrics, "mi", t0 + 70_000);
        assert_eq!(b.open_until, None);
        assert_eq!(b.failures, 0);
    }

    fn settings() -> crate::config::DeliverySettings {
        crate::config::DeliverySettings {
            connect_timeout: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(1),
            connections: 1,
            max_frame: 1024,
            max_attempts: 10,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(1),
            answer_match: crate::hl7::AnswerMatch::Strict,
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let spec = crate::delivery::Target {
            name: "x".into(),
            addr: "h:1".into(),
            soap: None,
            tls: None,
            delivery: settings(),
        };
        let b1 = backoff(&spec, 1, 7);
        let b2 = backoff(&spec, 2, 7);
        let b9 = backoff(&spec, 9, 7);
        assert!((100..=125).contains(&b1), "{b1}");
        assert!((200..=250).contains(&b2), "{b2}");
        assert!((1000..=1250).contains(&b9), "{b9}");
        assert_ne!(
            backoff(&spec, 3, 1),
            backoff(&spec, 3, 2),
            "jitter differs per message"
        );
    }
}
