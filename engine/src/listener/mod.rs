//! MLLP listeners: accept connections (bounded), read frames, hand each to the
//! pipeline and write its answer back, in order, on the same connection.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Gate, TLS_HANDSHAKE};
use crate::config::ListenerSpec;
use crate::hl7::{self, AckCode, Issue, Msh};
use crate::identity::{Identity, Refusal};
use crate::metrics::l;
use crate::mllp::{MllpCodec, MllpFrame};
use crate::pipeline::{Answer, PipelineSlot};

/// Accepts connections until `shutdown` is cancelled; connection tasks are
/// spawned on `tracker` so the caller can wait for in-flight messages.
pub async fn run(
    listener: TcpListener,
    spec: Arc<ListenerSpec>,
    tls: Option<crate::tls::ListenerTls>,
    pipeline: Arc<PipelineSlot>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let refused = pipeline
        .metrics()
        .refused_connections
        .get_or_create(&vec![l("listener", &spec.name)])
        .clone();
    let gate = Gate::new(
        &spec.name,
        spec.max_connections,
        spec.max_per_peer,
        Some(refused),
    );
    while let Some((stream, peer, admitted)) = gate.accept(&listener, &shutdown).await {
        let (spec, tls, pipeline, shutdown) = (
            spec.clone(),
            tls.clone(),
            pipeline.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            tracing::debug!(listener = %spec.name, %peer, "connection opened");
            let gauge = pipeline
                .metrics()
                .connections
                .get_or_create(&vec![l("listener", &spec.name)])
                .clone();
            gauge.inc();
            match &tls {
                None => serve_connection(stream, &spec, &pipeline, shutdown, None).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let identity = tls.mutual.then(|| {
                                certificate_identity(
                                    tls,
                                    stream.get_ref().1.peer_certificates(),
                                    &spec.name,
                                    peer,
                                )
                            });
                            serve_connection(stream, &spec, &pipeline, shutdown, identity).await
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(listener = %spec.name, %peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::warn!(listener = %spec.name, %peer, "TLS handshake timed out"),
                    }
                }
            }
            gauge.dec();
            tracing::debug!(listener = %spec.name, %peer, "connection closed");
            drop(admitted);
        });
    }
}

/// With mutual TLS the client certificate names the sender; one that cannot
/// gets every message on its connection refused, with the reason.
fn certificate_identity(
    tls: &crate::tls::ListenerTls,
    chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    listener: &str,
    peer: std::net::SocketAddr,
) -> Identity {
    let Some(cert) = chain.and_then(<[_]>::first) else {
        // The verifier requires a certificate; this is a safety net.
        tracing::warn!(listener, %peer, "no client certificate on a mutual TLS connection; its messages are refused");
        return Identity::Refused(Refusal::NoCertificate);
    };
    match tls.identify(cert) {
        Ok(sender) => Identity::Proven(sender),
        Err(e) => {
            tracing::warn!(listener, %peer, reason = %e, "the client certificate cannot identify a sender; every message on this connection is refused");
            Identity::Refused(Refusal::Certificate(e))
        }
    }
}

async fn serve_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    spec: &ListenerSpec,
    pipeline: &PipelineSlot,
    shutdown: CancellationToken,
    identity: Option<Identity>,
) {
    let mut framed = Framed::new(stream, MllpCodec::new(spec.max_frame, spec.lenient_framing));
    let metrics = pipeline.metrics().clone();
    let labels = vec![l("listener", &spec.name)];
    let mut junk_seen = 0;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = tokio::time::timeout(spec.idle_timeout, framed.next()) => n,
        };
        let junk = framed.codec().skipped_bytes();
        if junk > junk_seen {
            metrics
                .junk_bytes
                .get_or_create(&labels)
                .inc_by(junk - junk_seen);
            tracing::debug!(listener = %spec.name, bytes = junk - junk_seen, "skipped bytes outside MLLP frames");
            junk_seen = junk;
        }
        let frame = match next {
            Err(_) => {
                tracing::debug!(listener = %spec.name, "idle timeout, closing connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::debug!(listener = %spec.name, error = %e, "read failed");
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // The message is handled to the end even if shutdown starts meanwhile:
        // every accepted frame gets its answer.
        let answer = match frame {
            MllpFrame::Message(bytes) => {
                pipeline
                    .current()
                    .handle_from(spec, &bytes, identity.as_ref())
                    .await
            }
            MllpFrame::Oversized { head, len } => {
                metrics.oversized_frames.get_or_create(&labels).inc();
                oversized_answer(&head, len, spec.max_frame)
            }
        };
        match answer {
            Answer::Reply(bytes) => {
                if let Err(e) = framed.send(bytes).await {
                    tracing::debug!(listener = %spec.name, error = %e, "could not send the answer");
                    return;
                }
            }
            Answer::Close(why) => {
                metrics.unanswerable.get_or_create(&labels).inc();
                tracing::warn!(listener = %spec.name, reason = %why, "closing connection: frame cannot be answered");
                return;
            }
        }
    }
}

/// An oversized frame is answered AR when its MSH can be read from its head.
fn oversized_answer(head: &[u8], len: usize, limit: usize) -> Answer {
    let lossy = String::from_utf8_lossy(head);
    let text = hl7::normalize_segments(&lossy);
    // The head may end mid-segment; only the MSH line is needed.
    match Msh::read(&text) {
        Ok(msh) if text.contains('\r') => {
            let issue = Issue::error("207").text(format!(
                "the message is {len} bytes; this interface accepts at most {limit} bytes"
            ));
            let ack = hl7::build_ack(&msh, AckCode::AR, &[issue], &hl7::new_control_id("IZH"));
            Answer::Reply(bytes::Bytes::from(ack.into_bytes()))
        }
        Ok(_) | Err(_) => Answer::Close(format!(
            "frame of {len} bytes exceeds the {limit}-byte limit and its MSH cannot be read"
        )),
    }
}
