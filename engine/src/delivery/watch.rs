//! What the delivery queue tells whoever watches it (the console), and the
//! operator's controls it obeys (held by `topology::Deliveries`). The queue
//! knows only this trait: the console implements it, so the data plane
//! never reaches up into the console.

use std::sync::atomic::AtomicBool;

use crate::hl7::IisAnswer;

/// What an operator asked of a destination's queue.
#[derive(Debug, Default)]
pub struct Control {
    /// Deliveries wait while set.
    pub paused: AtomicBool,
    /// The breaker closes at the next round.
    pub reset: AtomicBool,
}

/// What is waiting for a destination, as the queue read it this round.
#[derive(Debug, Clone, Copy)]
pub struct QueueState {
    /// Messages queued, when the round knows (`Some(0)` when none is).
    pub queued: Option<i64>,
    /// When the oldest queued message was received (ms since the epoch).
    pub oldest_ms: Option<i64>,
    /// `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    /// An operator paused the destination.
    pub paused: bool,
}

/// One delivery attempt from the queue.
#[derive(Debug)]
pub struct AttemptReport<'a> {
    /// The journal row.
    pub journal_id: i64,
    pub destination: &'a str,
    pub route: &'a str,
    pub outcome: AttemptOutcome<'a>,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum AttemptOutcome<'a> {
    /// The IIS answered the message (matched to it); `dead` when the answer
    /// refused it for good.
    Answered { answer: &'a IisAnswer, dead: bool },
    /// No answer (its kind, as in the metrics); `dead` when given up.
    Failed { kind: &'static str, dead: bool },
}

/// Whoever follows the queue's work.
pub trait QueueWatch: Send + Sync {
    /// What is waiting for `destination`.
    fn queue_state(&self, destination: &str, state: QueueState);
    /// One attempt's outcome.
    fn attempted(&self, report: AttemptReport<'_>);
}
