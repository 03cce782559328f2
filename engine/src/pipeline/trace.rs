//! What observers are told of one message's way through the pipeline,
//! collected as it goes and turned into a [`Handled`] event once it is
//! answered.

use std::time::Duration;

use super::observe::{AttemptInfo, Handled, Observer, Outcome, Stage, Summary, field};
use super::{Answer, Pipeline};
use crate::config::ListenerSpec;
use crate::delivery::gate;
use crate::hl7;
use crate::metrics::{Metrics, l};

/// Collected along the way.
#[derive(Debug, Default)]
pub(super) struct Trace {
    /// Keep texts (stages): only when a log will store them.
    pub keep: bool,
    pub sender: String,
    pub message_type: String,
    pub control_id: String,
    pub patient_id: String,
    pub route: String,
    pub destinations: Vec<String>,
    pub stages: Vec<Stage>,
    /// The answer came from the IIS (relay mode).
    pub by_iis: bool,
    /// The engine failed to process or deliver it (not a refusal).
    pub errored: bool,
    /// Journaled for this many destinations (commit mode).
    pub queued: usize,
    pub journal_ids: Vec<i64>,
    pub attempt: Option<AttemptInfo>,
    /// `field=status` pairs from `completeness.*` attributes.
    pub completeness: String,
    /// The logged message this one reprocesses.
    pub reprocess_of: Option<i64>,
    /// A bulk query: it waits at its destination's gate.
    pub bulk: Option<gate::Gates>,
    /// A bulk query the gate turned back, and why.
    pub bulk_wait: Option<gate::NotNow>,
    /// How long the message took, from frame in to answer out.
    pub took: Duration,
    /// What the relayed IIS answer said, read once when it arrived (relay
    /// mode); `None` when the engine answered itself.
    pub relayed: Option<Relayed>,
}

/// The facts of a relayed answer the metrics and the console need.
#[derive(Debug, Clone, Copy)]
pub(super) struct Relayed {
    /// MSA-1 (the engine never changes it).
    pub code: Option<hl7::MsaCode>,
    /// The answer sent back has ERR segments (the IIS's or merged warnings).
    pub has_err: bool,
}

impl Trace {
    pub fn new(keep: bool) -> Self {
        Trace {
            keep,
            ..Trace::default()
        }
    }

    /// The header fields, once MSH is read.
    pub fn header(&mut self, msh: &hl7::Msh, text: &str) {
        self.sender = field(msh.component(4, 1));
        self.message_type = field(&format!("{}^{}", msh.message_code(), msh.trigger()));
        self.control_id = field(msh.control_id());
        let patient = match hl7::first_value(text, "PID", 3) {
            "" => hl7::first_value(text, "QPD", 3),
            p => p,
        };
        self.patient_id = field(patient);
    }
}

impl Pipeline {
    /// Tells `observer` of a finished message; `ack` is the answer's MSA-1
    /// (empty when it has none).
    pub(super) fn record(
        &self,
        observer: &dyn Observer,
        listener: &ListenerSpec,
        raw: &[u8],
        answer: &Answer,
        ack: &str,
        trace: Trace,
    ) {
        let answer_bytes: bytes::Bytes = match answer {
            Answer::Reply(b) => b.clone(),
            Answer::Close(_) => bytes::Bytes::new(),
        };
        let ack = field(ack);
        let has_err = match &trace.relayed {
            Some(relayed) => relayed.has_err,
            None => {
                answer_bytes.starts_with(b"ERR")
                    || memchr::memmem::find(&answer_bytes, b"\rERR").is_some()
            }
        };
        let outcome = match (ack.as_str(), answer) {
            (_, Answer::Close(_)) => Outcome::Errored,
            ("AA" | "CA", _) if trace.queued > 0 => Outcome::Queued,
            ("AA" | "CA", _) if has_err => Outcome::AcceptedWithWarnings,
            ("AA" | "CA", _) => Outcome::Accepted,
            _ if trace.by_iis => Outcome::RejectedByIis,
            _ if trace.errored => Outcome::Errored,
            _ => Outcome::RejectedByIzhub,
        };
        let keep = trace.keep;
        observer.handled(Handled {
            summary: Summary {
                listener: field(&listener.name),
                sender: trace.sender,
                message_type: trace.message_type,
                control_id: trace.control_id,
                route: trace.route,
                destination: field(&trace.destinations.join(",")),
                outcome,
                ack,
            },
            patient_id: trace.patient_id,
            took: trace.took,
            received: if keep { raw.to_vec() } else { Vec::new() },
            stages: trace.stages,
            answer: if keep {
                answer_bytes
            } else {
                bytes::Bytes::new()
            },
            queued: trace.queued,
            journal_ids: trace.journal_ids,
            attempt: trace.attempt,
            completeness: trace.completeness,
            reprocess_of: trace.reprocess_of,
        });
    }
}

/// Notes the plugins' `completeness.<field>` attributes on the trace.
pub(super) fn note_completeness(trace: &mut Trace, attributes: &[(String, String)]) {
    for (field, v) in attributes.iter().filter_map(completeness) {
        if trace.completeness.len() >= 256 {
            break;
        }
        if !trace.completeness.is_empty() {
            trace.completeness.push(' ');
        }
        trace.completeness.push_str(&format!("{field}={v}"));
    }
}

/// Values a plugin may report for `completeness.<field>` attributes; anything
/// else is ignored, so a plugin cannot flood the metrics or put data in them.
const COMPLETENESS: [&str; 6] = [
    "present", "mapped", "enriched", "missing", "unknown", "invalid",
];

/// A `completeness.<field>` attribute a plugin may report: a short field
/// name and one of the known values; anything else is ignored, so a plugin
/// cannot flood the metrics or put data in them.
fn completeness((key, value): &(String, String)) -> Option<(&str, &str)> {
    let field = key.strip_prefix("completeness.")?;
    (field.len() <= 32
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && COMPLETENESS.contains(&value.as_str()))
    .then_some((field, value.as_str()))
}

/// Counts `completeness.race`-style attributes per sending facility.
pub(super) fn count_completeness(metrics: &Metrics, sender: &str, attributes: &[(String, String)]) {
    for (field, value) in attributes.iter().filter_map(completeness) {
        metrics
            .completeness
            .get_or_create(&vec![
                l("sender", sender),
                l("field", field),
                l("status", value),
            ])
            .inc();
    }
}
