//! What the pipeline tells the world about each message it handled. The
//! core defines the event and the [`Observer`] trait; the console's message
//! log and dashboard (and anything else) implement it. Nothing here knows
//! who listens.

use std::time::Duration;

use serde::Serialize;

use crate::hl7;

/// Most text kept of one metadata value (sender, MSH-10, …): they come
/// from clients.
pub const MAX_FIELD: usize = 200;

/// A value from a message, fit for metadata: printable, bounded.
pub fn field(text: &str) -> String {
    hl7::printable(text, MAX_FIELD)
}

/// Told of every message the pipeline answered.
pub trait Observer: Send + Sync {
    /// Whether the observer keeps message texts (the message as received,
    /// each plugin's output, the answer); the pipeline only collects them
    /// when it does.
    fn keeps_texts(&self) -> bool;

    /// One message handled, called once on the message's own task after its
    /// answer is made. It must not block: the sender is waiting.
    fn handled(&self, event: Handled);
}

/// What happened to a message, as the dashboard counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The IIS accepted it and nobody had anything to say.
    Accepted,
    /// Accepted, with warnings from a plugin or the IIS.
    AcceptedWithWarnings,
    /// izhub answered AE/AR itself: a plugin or the engine refused it.
    RejectedByIzhub,
    /// The IIS answered AE or AR.
    RejectedByIis,
    /// It could not be delivered or processed (a plugin failed, the IIS did
    /// not answer, the journal could not store it).
    Errored,
    /// Journaled, waiting for delivery (commit mode).
    Queued,
}

impl Outcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::AcceptedWithWarnings => "accepted_with_warnings",
            Outcome::RejectedByIzhub => "rejected_by_izhub",
            Outcome::RejectedByIis => "rejected_by_iis",
            Outcome::Errored => "errored",
            Outcome::Queued => "queued",
        }
    }

    /// Whether the dashboard counts it as an error to resolve.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::RejectedByIzhub | Outcome::RejectedByIis | Outcome::Errored
        )
    }
}

/// One delivery attempt.
#[derive(Debug, Clone)]
pub struct AttemptInfo {
    /// ms since the epoch.
    pub at: i64,
    pub destination: String,
    /// `delivered`, `failed`, `dead`.
    pub result: String,
    /// How the IIS answer was classified (`accepted`, `rejected`, …), or
    /// the error kind.
    pub class: String,
    /// The IIS's answer (shares the bytes relayed back).
    pub answer: Option<bytes::Bytes>,
}

/// The outcome an IIS answer class stands for.
pub fn outcome_of(class: hl7::AnswerClass) -> Outcome {
    use hl7::AnswerClass as C;
    match class {
        C::Accepted => Outcome::Accepted,
        C::AcceptedWithWarnings => Outcome::AcceptedWithWarnings,
        C::RejectedPartly | C::Rejected => Outcome::RejectedByIis,
        C::Unreadable => Outcome::Errored,
    }
}

/// One plugin's part.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub plugin: String,
    pub verdict: &'static str,
    /// Issues the plugin reported.
    pub issues: usize,
    pub changed: bool,
    /// The message as the plugin left it, when it changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A handled message as lists and live views show it: where it came from,
/// where it went and how it ended. Metadata only: values are already
/// [`field`]s and none is PHI.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub listener: String,
    pub sender: String,
    /// `VXU^V04`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    pub route: String,
    /// Comma-separated.
    pub destination: String,
    pub outcome: Outcome,
    /// MSA-1 of the answer sent back.
    pub ack: String,
}

/// One message handled: its [`Summary`], what the route did with it, and
/// the answer that went back. The texts are empty unless the observer
/// [keeps them](Observer::keeps_texts).
#[derive(Debug, Clone)]
pub struct Handled {
    pub summary: Summary,
    /// PID-3 (or QPD-3 of a query).
    pub patient_id: String,
    /// From frame in to answer out.
    pub took: Duration,
    /// The message as received.
    pub received: Vec<u8>,
    /// What each plugin did.
    pub stages: Vec<Stage>,
    /// The answer sent back.
    pub answer: bytes::Bytes,
    /// Journaled for this many destinations (commit mode).
    pub queued: usize,
    /// The journal rows (one per destination) in commit mode.
    pub journal_ids: Vec<i64>,
    /// The relay-mode delivery, when there was one.
    pub attempt: Option<AttemptInfo>,
    /// `race=mapped ethnicity=missing`: what plugins reported of
    /// completeness (`completeness.*` attributes).
    pub completeness: String,
    /// The logged message an operator reprocessed to make this one.
    pub reprocess_of: Option<i64>,
}
