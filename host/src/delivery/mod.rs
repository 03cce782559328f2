//! Delivery to an IIS over MLLP. Each destination keeps a small pool of
//! persistent connections, reconnects when one breaks, and bounds both the
//! queue of waiting messages and the time to wait for an answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::config::DestinationSpec;
use crate::mllp::{MllpClient, MllpClientError};

pub mod queue;

/// Messages waiting for a connection, per destination.
const QUEUE: usize = 1024;

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
    #[error("IIS '{dest}' has too many messages waiting")]
    Busy { dest: String },
    #[error("IIS '{dest}' refused the message: {detail}")]
    Refused {
        dest: String,
        detail: String,
        permanent: bool,
    },
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
            DeliveryError::Refused {
                permanent: true, ..
            } => "refused",
            DeliveryError::Refused { .. } => "fault",
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

struct Job {
    message: Bytes,
    reply: oneshot::Sender<Result<Bytes, DeliveryError>>,
}

/// One IIS destination with its connection pool.
pub struct Destination {
    spec: DestinationSpec,
    tx: mpsc::Sender<Job>,
    wake: Arc<tokio::sync::Notify>,
    /// SOAP: bounds concurrent requests to `connections`.
    soap_slots: tokio::sync::Semaphore,
}

impl Destination {
    /// Starts the destination's connection workers on the current runtime.
    pub fn start(spec: DestinationSpec) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        if spec.soap.is_none() {
            for _ in 0..spec.connections {
                tokio::spawn(worker(spec.clone(), rx.clone()));
            }
        }
        let soap_slots = tokio::sync::Semaphore::new(spec.connections);
        Arc::new(Destination {
            spec,
            tx,
            wake: Arc::new(tokio::sync::Notify::new()),
            soap_slots,
        })
    }

    /// Wakes this destination's delivery queue (a message was journaled).
    pub fn wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    /// The settings it was started with.
    pub fn spec(&self) -> &DestinationSpec {
        &self.spec
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Sends one message and waits for the IIS's answer.
    pub async fn deliver(&self, message: Bytes) -> Result<Bytes, DeliveryError> {
        if let Some(target) = &self.spec.soap {
            return self.deliver_soap(target, &message).await;
        }
        let (reply, rx) = oneshot::channel();
        let dest = self.spec.name.clone();
        let wait = self.spec.connect_timeout + self.spec.answer_timeout;
        match tokio::time::timeout(wait, self.tx.send(Job { message, reply })).await {
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
    ) -> Result<Bytes, DeliveryError> {
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
        let timeout = self.spec.connect_timeout + self.spec.answer_timeout;
        match crate::soap::client::submit(target, &text, timeout).await {
            Ok(answer) => Ok(Bytes::from(answer.into_bytes())),
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

async fn worker(spec: DestinationSpec, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut conn: Option<MllpClient> = None;
    loop {
        let job = {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => job,
                None => return,
            }
        };
        if job.reply.is_closed() {
            continue;
        }
        let result = exchange(&spec, &mut conn, &job.message).await;
        let _ = job.reply.send(result);
    }
}

async fn exchange(
    spec: &DestinationSpec,
    conn: &mut Option<MllpClient>,
    message: &[u8],
) -> Result<Bytes, DeliveryError> {
    let dest = || spec.name.clone();
    // A kept-alive connection may have been closed by the IIS while idle; in
    // that case the send or read fails at once and one fresh attempt follows.
    // The message keeps its MSH-10, so an IIS that saw it can drop the copy.
    let mut reused = conn.is_some();
    loop {
        let client = match conn {
            Some(c) => c,
            None => {
                let c = match &spec.tls {
                    Some(tls) => {
                        MllpClient::connect_tls(
                            &spec.addr,
                            spec.connect_timeout,
                            spec.max_frame,
                            tls,
                        )
                        .await
                    }
                    None => {
                        MllpClient::connect(&spec.addr, spec.connect_timeout, spec.max_frame).await
                    }
                };
                let c = c.map_err(|e| DeliveryError::Unreachable {
                    dest: dest(),
                    detail: e.to_string(),
                })?;
                conn.insert(c)
            }
        };
        match client.exchange(message, spec.answer_timeout).await {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                *conn = None;
                let stale = matches!(e, MllpClientError::Closed | MllpClientError::Send(_));
                if reused && stale {
                    reused = false;
                    continue;
                }
                return Err(match e {
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
    }
}
