//! The message flow, as the console sees it: every answered message becomes
//! a [`Record`]: its metadata counted on the [`board::Board`] and sent to live
//! watchers (metadata only, never PHI), and the whole of it written to the
//! [`log::MessageLog`] off the ACK path.

pub mod board;
pub mod bodies;
pub mod history;
pub mod log;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

pub use crate::pipeline::observe::{AttemptInfo, Handled, Outcome, Summary, outcome_of};

/// A delivery attempt of a journaled message, from its queue.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The journal row.
    pub journal_id: i64,
    pub at: i64,
    pub destination: String,
    pub result: String,
    pub class: String,
    pub answer: Option<Vec<u8>>,
    /// Set when this attempt ended the delivery.
    pub final_outcome: Option<Outcome>,
    /// MSA-1 of the IIS answer, when there was one.
    pub ack: String,
}

/// One answered message, whole, as the log keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: i64,
    /// ms since the epoch.
    pub received_at: i64,
    /// What the pipeline reported.
    pub message: Handled,
    /// Filled in by the log's writer from the answer when empty.
    pub detections: Vec<String>,
    /// Every issue (one JSON array).
    pub issues: String,
}

impl Record {
    /// A record of a message known by its metadata only: no texts, no
    /// delivery (what seeding and tests start from).
    pub fn of(id: i64, received_at: i64, summary: Summary, patient_id: String) -> Record {
        Record {
            id,
            received_at,
            message: Handled {
                summary,
                patient_id,
                took: std::time::Duration::ZERO,
                received: Vec::new(),
                stages: Vec::new(),
                answer: bytes::Bytes::new(),
                queued: 0,
                journal_ids: Vec::new(),
                attempt: None,
                completeness: String::new(),
                reprocess_of: None,
            },
            detections: Vec::new(),
            issues: String::new(),
        }
    }
}

/// What live watchers get: metadata only.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    pub id: i64,
    /// RFC 3339.
    pub time: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub latency_ms: f64,
}

/// A value from a message, fit for metadata: printable, bounded.
pub fn meta_value(text: &str) -> String {
    crate::pipeline::observe::field(text)
}

/// Detection ids at the end of ERR-8 texts (`… [patient-birth-date-missing]`).
/// Only the ERR segments are looked at, as bytes: an answer is mostly other
/// segments, and an id is ASCII whatever the answer's character set.
pub fn detections(answer: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for pos in memchr::memmem::find_iter(answer, b"ERR") {
        let starts_segment = match pos.checked_sub(1) {
            None => true,
            Some(before) => matches!(answer.get(before), Some(b'\r' | b'\n')),
        };
        let Some(rest) = answer.get(pos + 3..).filter(|_| starts_segment) else {
            continue;
        };
        let seg = rest
            .get(..memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len()))
            .unwrap_or_default();
        // The field separator follows the segment's name; ERR-8 lies
        // between the eighth and the ninth.
        let Some(&sep) = seg.first().filter(|b| b.is_ascii()) else {
            continue;
        };
        let mut seps = memchr::memchr_iter(sep, seg);
        let Some(start) = seps.nth(7).map(|at| at + 1) else {
            continue;
        };
        let text = seg
            .get(start..seps.next().unwrap_or(seg.len()))
            .unwrap_or_default();
        let tail = memchr::memrchr(b'[', text)
            .and_then(|open| text.get(open..))
            .and_then(|t| std::str::from_utf8(t).ok());
        if let Some(id) = tail.and_then(crate::hl7::detection_id)
            && !out.iter().any(|d| d == id)
            && out.len() < 64
        {
            out.push(id.to_string());
        }
    }
    out
}

/// Where records go.
pub struct Flow {
    pub board: board::Board,
    pub log: Option<Arc<log::MessageLog>>,
    live: broadcast::Sender<Arc<LiveEvent>>,
}

impl Flow {
    /// A flow with an optional log.
    pub fn new(log: Option<Arc<log::MessageLog>>) -> Arc<Self> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(Flow {
            board: board::Board::default(),
            log,
            live,
        })
    }

    /// A new message id.
    pub fn next_id(&self) -> i64 {
        self.log.as_ref().map_or(0, |l| l.next_id())
    }

    /// Watches messages as they are answered.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.live.subscribe()
    }

    /// Counts, announces and logs one answered message. Never waits.
    pub fn answered(&self, record: Record) {
        let m = &record.message;
        let latency_ms = m.took.as_secs_f64() * 1000.0;
        let now_ms = crate::store::now_ms();
        self.board.answered(
            Some(&m.summary.route)
                .filter(|r| !r.is_empty())
                .map(String::as_str),
            Some(&m.summary.destination)
                .filter(|d| !d.is_empty())
                .map(String::as_str),
            m.summary.outcome,
            latency_ms.ceil() as u32,
            (now_ms / 1000).max(0) as u64,
            m.queued,
        );
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(LiveEvent {
                id: record.id,
                time: crate::hl7::rfc3339_now(),
                summary: m.summary.clone(),
                latency_ms,
            }));
        }
        if let Some(log) = &self.log {
            log.record(record);
        }
    }
}

/// The console is told of every message the pipeline answered.
impl crate::pipeline::observe::Observer for Flow {
    fn keeps_texts(&self) -> bool {
        self.log.is_some()
    }

    fn handled(&self, event: Handled) {
        self.answered(Record {
            id: self.next_id(),
            received_at: crate::store::now_ms(),
            message: event,
            // Read from the answer by the log's writer, off the ACK path.
            detections: Vec::new(),
            issues: String::new(),
        });
    }
}

/// The console follows the delivery queue: its board counts each attempt
/// that ends a delivery and shows what waits; its log keeps every attempt.
impl crate::delivery::QueueWatch for Flow {
    fn queue_state(&self, destination: &str, state: crate::delivery::QueueState) {
        self.board.queue_state(
            destination,
            state.queued,
            state.oldest_ms,
            state.breaker,
            state.paused,
        );
    }

    fn attempted(&self, report: crate::delivery::AttemptReport<'_>) {
        use crate::delivery::AttemptOutcome;
        let (result, class, answer, final_outcome, ack) = match report.outcome {
            AttemptOutcome::Answered { answer, dead } => (
                if dead { "dead" } else { "delivered" },
                answer.class().as_str(),
                Some(answer.bytes().to_vec()),
                Some(outcome_of(answer.class())),
                answer
                    .ack()
                    .map(crate::hl7::MsaCode::as_str)
                    .unwrap_or_default(),
            ),
            AttemptOutcome::Failed { kind, dead } => (
                if dead { "dead" } else { "failed" },
                kind,
                None,
                dead.then_some(Outcome::Errored),
                "",
            ),
        };
        if let Some(outcome) = final_outcome {
            self.board
                .delivered(report.destination, outcome, Some(report.route));
        }
        if let Some(log) = &self.log {
            log.attempt(Attempt {
                journal_id: report.journal_id,
                at: crate::store::now_ms(),
                destination: report.destination.to_string(),
                result: result.into(),
                class: class.into(),
                answer,
                final_outcome,
                ack: ack.into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::detections;

    #[test]
    fn detection_ids_from_err_texts() {
        let ack = "MSH|^~\\&|A\rMSA|AE|1\rERR||PID^1^7|101^x^HL70357|E||||The birth date is empty. [patient-birth-date-missing]\rERR||RXA^1^15|101|W||||Lot. [vaccination-lot-missing]\rERR||||E||||plain text\r";
        assert_eq!(
            detections(ack.as_bytes()),
            vec!["patient-birth-date-missing", "vaccination-lot-missing"]
        );
        // ERR inside another segment is not a segment; one at the start is.
        assert!(detections(b"MSH|^~\\&|ERR||||E||||x [a-b]\r").is_empty());
        assert_eq!(detections(b"ERR||||E||||x [a-b]"), vec!["a-b"]);
        assert!(detections(b"").is_empty());
        // Another separator; ERR-9 after the text; a text that is not UTF-8
        // before its id; ERR-8 too short or not there at all.
        assert_eq!(
            detections(b"MSA#AA\rERR####W####Lot. [lot-missing]#more\r"),
            vec!["lot-missing"]
        );
        assert_eq!(
            detections(b"ERR||||W||||caf\xe9 [a-b]\rERR||||W||||x [c]   \r"),
            vec!["a-b", "c"]
        );
        assert!(detections(b"ERR||||W||||[a b]\rERR||||W|||\rERR\rERR|").is_empty());
    }
}
