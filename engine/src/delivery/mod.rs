//! Delivery to an IIS over MLLP. Each destination keeps a small pool of
//! persistent connections, reconnects when one breaks, and bounds both the
//! queue of waiting messages and the time to wait for an answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hl7::{IisAnswer, Question};
use crate::mllp::{MllpClient, MllpClientError};

pub mod gate;
pub mod queue;
mod watch;

pub use watch::{AttemptOutcome, AttemptReport, Control, QueueState, QueueWatch};

/// Messages waiting for a connection, per destination.
const QUEUE: usize = 1024;

/// Frames naming other messages read in one exchange at most; an IIS that
/// sends more is flooding the connection, which is then given up.
const MAX_DISCARDED: usize = 64;

/// Why a message could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("could not reach IIS '{dest}': {detail}")]
    Unreachable { dest: String, detail: String },
    #[error("IIS did not answer: no answer from '{dest}' within {after:?}")]
    NoAnswer { dest: String, after: Duration },
    #[error("IIS '{dest}' closed the connection without answering")]
    Closed { dest: String },
    #[error("IIS '{dest}' failed: {detail}")]
    Failed { dest: String, detail: String },
    /// SOAP: the answer names another message (MSA-2 or QAK-1).
    #[error("IIS '{dest}' answered another message, not this one")]
    Mismatched { dest: String },
    #[error("IIS '{dest}' has too many messages waiting")]
    Busy { dest: String },
    #[error("IIS '{dest}' refused the message: {detail}")]
    Refused {
        dest: String,
        detail: String,
        permanent: bool,
    },
    /// Not sent: the claim on it may have passed to another node before it
    /// could be written.
    #[error("not sent to '{dest}': the claim on it lapsed before it could be written")]
    Lapsed { dest: String },
}

impl DeliveryError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Unreachable { .. } => "unreachable",
            DeliveryError::NoAnswer { .. } => "timeout",
            DeliveryError::Closed { .. } => "closed",
            DeliveryError::Failed { .. } => "failed",
            DeliveryError::Busy { .. } => "busy",
            DeliveryError::Mismatched { .. } => "mismatched",
            DeliveryError::Refused {
                permanent: true, ..
            } => "refused",
            DeliveryError::Refused { .. } => "fault",
            DeliveryError::Lapsed { .. } => "lost_claim",
        }
    }

    /// True when sending the same message again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DeliveryError::Refused {
                permanent: true,
                ..
            }
        )
    }
}

/// A destination as delivery reaches it: its settings with their TLS
/// loaded and its password resolved (planned from a `Target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// MLLP `host:port` (empty for SOAP).
    pub addr: String,
    /// The SOAP endpoint and credentials, for a SOAP destination.
    pub soap: Option<crate::soap::client::SoapTarget>,
    /// MLLP over TLS.
    pub tls: Option<crate::tls::DestinationTls>,
    /// Timeouts, connections, retries and the breaker, as configured.
    pub delivery: crate::config::DeliverySettings,
}

/// Where a job's answer goes: back to the caller, or (a copy for an extra
/// destination in relay mode) only into the metrics.
enum Reply {
    Caller(oneshot::Sender<Result<IisAnswer, DeliveryError>>),
    Copy(Arc<crate::metrics::Metrics>),
}

struct Job {
    message: Bytes,
    /// What the answer must name.
    question: Question,
    reply: Reply,
    /// Not written to the IIS after this instant (a lapsed claim).
    send_by: Option<tokio::time::Instant>,
}

/// Where a destination's background work runs: connection workers are
/// spawned on `tracker`, and end when the destination is dropped or, once
/// their queue is empty, when `drain` is cancelled at shutdown.
#[derive(Clone)]
pub struct Workers {
    pub tracker: TaskTracker,
    pub drain: CancellationToken,
}

impl Default for Workers {
    /// Workers of their own, for tools that run no engine beside them.
    fn default() -> Self {
        Workers {
            tracker: TaskTracker::new(),
            drain: CancellationToken::new(),
        }
    }
}

/// One IIS destination with its connection pool.
pub struct Destination {
    spec: Target,
    tx: mpsc::Sender<Job>,
    wake: Arc<Notify>,
    /// SOAP: bounds concurrent requests to `connections`.
    soap_slots: Arc<tokio::sync::Semaphore>,
    workers: Workers,
    /// Answers that named another message (`iis_answers_mismatched`).
    mismatched: Counter,
}

impl Destination {
    /// Starts the destination's connection workers. `wake` is its delivery
    /// queue's doorbell, shared by every destination of the same name across
    /// configuration reloads.
    /// `mismatched` counts answers that name another message.
    pub fn start(
        spec: Target,
        wake: Arc<Notify>,
        workers: Workers,
        mismatched: Counter,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        if spec.soap.is_none() {
            for _ in 0..spec.delivery.connections {
                workers.tracker.spawn(worker(
                    spec.clone(),
                    rx.clone(),
                    workers.drain.clone(),
                    mismatched.clone(),
                ));
            }
        }
        let soap_slots = Arc::new(tokio::sync::Semaphore::new(spec.delivery.connections));
        Arc::new(Destination {
            spec,
            tx,
            wake,
            soap_slots,
            workers,
            mismatched,
        })
    }

    /// Wakes this destination's delivery queue (a message was journaled).
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Sends a copy of a message without waiting for the answer (relay mode's
    /// extra destinations); the outcome is counted in `deliveries`. A copy
    /// that finds the queue full is dropped and counted as `busy`.
    pub fn send_copy(
        self: &Arc<Self>,
        message: Bytes,
        question: Question,
        metrics: Arc<crate::metrics::Metrics>,
    ) {
        if self.spec.soap.is_some() {
            let dest = self.clone();
            self.workers.tracker.spawn(async move {
                let result = dest.deliver(message, &question).await;
                record(&metrics, dest.name(), &result);
            });
            return;
        }
        let job = Job {
            message,
            question,
            reply: Reply::Copy(metrics),
            send_by: None,
        };
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.tx.try_send(job)
            && let Reply::Copy(metrics) = job.reply
        {
            record(
                &metrics,
                self.name(),
                &Err(DeliveryError::Busy {
                    dest: self.spec.name.clone(),
                }),
            );
        }
    }

    /// The settings it was started with.
    pub fn spec(&self) -> &Target {
        &self.spec
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Sends one message and waits for the IIS's answer to it: an answer
    /// that names another message is never returned (see [`exchange`]).
    pub async fn deliver(
        &self,
        message: Bytes,
        question: &Question,
    ) -> Result<IisAnswer, DeliveryError> {
        self.deliver_by(message, question, None).await
    }

    /// Sends one message and waits for the IIS's answer, unless it cannot
    /// be written before `send_by` (a queued delivery whose claim would have
    /// lapsed by then): that gives [`DeliveryError::Lapsed`] and nothing is
    /// sent. The check is made just before the bytes are written.
    pub async fn deliver_by(
        &self,
        message: Bytes,
        question: &Question,
        send_by: Option<tokio::time::Instant>,
    ) -> Result<IisAnswer, DeliveryError> {
        if let Some(target) = &self.spec.soap {
            if lapsed(send_by) {
                return Err(DeliveryError::Lapsed {
                    dest: self.spec.name.clone(),
                });
            }
            return self.deliver_soap(target, &message, question).await;
        }
        let (reply, rx) = oneshot::channel();
        let dest = self.spec.name.clone();
        let wait = self.spec.delivery.connect_timeout + self.spec.delivery.answer_timeout;
        let job = Job {
            message,
            question: question.clone(),
            reply: Reply::Caller(reply),
            send_by,
        };
        match tokio::time::timeout(wait, self.tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(DeliveryError::Failed {
                    dest,
                    detail: "shutting down".into(),
                });
            }
            Err(_) => return Err(DeliveryError::Busy { dest }),
        }
        rx.await.unwrap_or_else(|_| {
            Err(DeliveryError::Failed {
                dest,
                detail: "worker stopped".into(),
            })
        })
    }
}

impl Destination {
    async fn deliver_soap(
        &self,
        target: &crate::soap::client::SoapTarget,
        message: &[u8],
        question: &Question,
    ) -> Result<IisAnswer, DeliveryError> {
        let dest = self.spec.name.clone();
        let _slot = self
            .soap_slots
            .acquire()
            .await
            .map_err(|_| DeliveryError::Busy { dest: dest.clone() })?;
        // SOAP carries text: the XML is UTF-8 whatever MSH-18 says.
        let text = match crate::hl7::decode(message) {
            Ok((t, _)) => t,
            Err(_) => String::from_utf8_lossy(message).into_owned(),
        };
        let timeout = self.spec.delivery.connect_timeout + self.spec.delivery.answer_timeout;
        match crate::soap::client::submit(target, &text, timeout).await {
            Ok(answer) => {
                let answer = IisAnswer::parse(Bytes::from(answer.into_bytes()));
                if answer.answers(question, self.spec.delivery.answer_match) {
                    Ok(answer)
                } else {
                    mismatch(&self.spec.name, &self.mismatched, question, &answer);
                    Err(DeliveryError::Mismatched { dest })
                }
            }
            Err(crate::soap::client::SoapError::Timeout(after)) => {
                Err(DeliveryError::NoAnswer { dest, after })
            }
            Err(crate::soap::client::SoapError::Connect { detail, .. }) => {
                Err(DeliveryError::Unreachable { dest, detail })
            }
            Err(e) => Err(DeliveryError::Refused {
                dest,
                permanent: !e.is_transient(),
                detail: e.to_string(),
            }),
        }
    }
}

/// Counts one delivery's outcome in `deliveries`.
pub fn record(
    metrics: &crate::metrics::Metrics,
    dest: &str,
    result: &Result<IisAnswer, DeliveryError>,
) {
    let outcome = match result {
        Ok(_) => "answered",
        Err(e) => e.kind(),
    };
    metrics
        .deliveries
        .get_or_create(&vec![
            crate::metrics::l("destination", dest),
            crate::metrics::l("result", outcome),
        ])
        .inc();
}

async fn worker(
    spec: Target,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    drain: CancellationToken,
    mismatched: Counter,
) {
    let mut conn: Option<MllpClient> = None;
    loop {
        let job = {
            let mut rx = rx.lock().await;
            // Jobs already queued go first, also while draining at shutdown.
            tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                _ = drain.cancelled() => return,
            }
        };
        let result = match &job.reply {
            Reply::Caller(reply) if reply.is_closed() => continue,
            _ => exchange(&spec, &mut conn, &job, &mismatched).await,
        };
        match job.reply {
            Reply::Caller(reply) => {
                let _ = reply.send(result);
            }
            Reply::Copy(metrics) => record(&metrics, &spec.name, &result),
        }
    }
}

/// Whether a job's time to be written has passed.
fn lapsed(send_by: Option<tokio::time::Instant>) -> bool {
    send_by.is_some_and(|by| tokio::time::Instant::now() >= by)
}

/// A control id fit for a log line: printable, at most 64 characters.
fn shown(id: &str) -> String {
    crate::hl7::printable(id, 64)
}

/// Counts and logs an answer that names another message than the one
/// asked (control ids only: no PHI).
fn mismatch(dest: &str, counter: &Counter, question: &Question, answer: &IisAnswer) {
    counter.inc();
    tracing::warn!(
        destination = %dest,
        sent_control_id = %shown(question.control_id()),
        answer_control_id = %shown(answer.control_id()),
        sent_query_tag = %shown(question.query_tag()),
        answer_query_tag = %shown(answer.query_tag()),
        "the IIS answered another message than the one sent; the answer is discarded"
    );
}

/// One message over the destination's connection: connect if needed, send,
/// then read frames until one answers it or the answer timeout passes.
///
/// A frame that names another message (a duplicate, a stray, a late or
/// foreign answer) is discarded, counted and logged, and reading goes on.
/// After such a frame the connection is closed once the exchange ends: its
/// stream can no longer be trusted. With no matching answer in time the
/// connection is closed too, so a late answer cannot reach the next message.
async fn exchange(
    spec: &Target,
    conn: &mut Option<MllpClient>,
    job: &Job,
    mismatched: &Counter,
) -> Result<IisAnswer, DeliveryError> {
    let dest = || spec.name.clone();
    let mode = spec.delivery.answer_match;
    // A kept-alive connection may have been closed by the IIS while idle; in
    // that case the send or read fails at once and one fresh attempt follows.
    // The message keeps its MSH-10, so an IIS that saw it can drop the copy.
    let mut reused = conn.is_some();
    loop {
        let client = match conn {
            Some(c) => c,
            None => conn.insert(connect(spec).await?),
        };
        // Checked after connecting, as close to the write as it can be.
        if lapsed(job.send_by) {
            return Err(DeliveryError::Lapsed { dest: dest() });
        }
        let deadline = tokio::time::Instant::now() + spec.delivery.answer_timeout;
        let mut discarded = 0usize;
        let sent = client.send(&job.message).await;
        let failure = match sent {
            Err(e) => e,
            Ok(()) => loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match client.receive(left).await {
                    Ok(frame) => {
                        let answer = IisAnswer::parse(frame);
                        if answer.answers(&job.question, mode) {
                            if discarded > 0 {
                                *conn = None;
                            }
                            return Ok(answer);
                        }
                        mismatch(&spec.name, mismatched, &job.question, &answer);
                        discarded += 1;
                        if discarded >= MAX_DISCARDED {
                            *conn = None;
                            return Err(DeliveryError::Failed {
                                dest: dest(),
                                detail: format!(
                                    "{discarded} answers to other messages and none to this one"
                                ),
                            });
                        }
                    }
                    Err(MllpClientError::AnswerTimeout(_)) => {
                        break MllpClientError::AnswerTimeout(spec.delivery.answer_timeout);
                    }
                    Err(e) => break e,
                }
            },
        };
        *conn = None;
        let stale = matches!(failure, MllpClientError::Closed | MllpClientError::Send(_));
        if reused && stale && discarded == 0 {
            reused = false;
            continue;
        }
        return Err(match failure {
            MllpClientError::AnswerTimeout(after) => DeliveryError::NoAnswer {
                dest: dest(),
                after,
            },
            MllpClientError::Closed => DeliveryError::Closed { dest: dest() },
            other => DeliveryError::Failed {
                dest: dest(),
                detail: other.to_string(),
            },
        });
    }
}

/// A new connection to the destination, over TLS when configured.
async fn connect(spec: &Target) -> Result<MllpClient, DeliveryError> {
    let d = &spec.delivery;
    let c = match &spec.tls {
        Some(tls) => MllpClient::connect_tls(&spec.addr, d.connect_timeout, d.max_frame, tls).await,
        None => MllpClient::connect(&spec.addr, d.connect_timeout, d.max_frame).await,
    };
    c.map_err(|e| DeliveryError::Unreachable {
        dest: spec.name.clone(),
        detail: e.to_string(),
    })
}
