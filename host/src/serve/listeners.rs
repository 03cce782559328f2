//! The listeners the process runs, MLLP and SOAP side by side: each
//! started from its spec, stopped on its own when a reload changes it.

use super::*;

/// One running listener: its settings, bound address, and the token that
/// stops it (its accept loop and its connections) without touching others.
pub(super) struct ListenerHandle {
    pub(super) spec: Arc<ListenerSpec>,
    /// Its TLS as loaded (compared with the files' contents on reload).
    pub(super) tls: Option<ListenerTls>,
    pub(super) addr: SocketAddr,
    pub(super) stop: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// The listeners in force, by name.
pub(super) type Listeners = BTreeMap<String, ListenerHandle>;

/// Binds one listener and starts its accept loop on `tracker`.
pub(super) async fn start_listener(
    spec: &ListenerSpec,
    tls: Option<ListenerTls>,
    slot: &Arc<PipelineSlot>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<ListenerHandle> {
    let socket = TcpListener::bind(spec.addr)
        .await
        .with_context(|| format!("listener '{}': cannot bind {}", spec.name, spec.addr))?;
    let addr = socket.local_addr()?;
    let spec = Arc::new(spec.clone());
    let stop = shutdown.child_token();
    let task = match spec.soap.clone() {
        Some(soap) => {
            tracing::info!(listener = %spec.name, %addr, path = %soap.path, "listening for CDC WSDL SOAP");
            tracker.spawn(soap_listener(
                socket,
                spec.clone(),
                tls.clone(),
                soap,
                slot.clone(),
                stop.clone(),
                tracker.clone(),
            ))
        }
        None => {
            tracing::info!(listener = %spec.name, %addr, "listening for MLLP");
            tracker.spawn(listener::run(
                socket,
                spec.clone(),
                tls.clone(),
                slot.clone(),
                stop.clone(),
                tracker.clone(),
            ))
        }
    };
    Ok(ListenerHandle {
        spec,
        tls,
        addr,
        stop,
        task,
    })
}

/// A CDC WSDL SOAP listener: each `submitSingleMessage` goes through the
/// pipeline like an MLLP frame, and its answer is the SOAP return value.
/// Connection tasks run on `tracker`, as for MLLP.
pub(super) async fn soap_listener(
    socket: TcpListener,
    spec: Arc<crate::config::ListenerSpec>,
    tls: Option<ListenerTls>,
    soap: crate::config::SoapListener,
    slot: Arc<PipelineSlot>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    use crate::pipeline::Answer;
    use crate::soap::Fault;
    use crate::soap::server::{Limits, Serving, Submission};
    let max_frame = spec.max_frame;
    let labels = vec![l("listener", &spec.name)];
    let metrics = slot.metrics().clone();
    let serving = Serving {
        name: spec.name.clone(),
        tls: tls.map(|t| t.config),
        limits: Limits {
            max_connections: spec.max_connections,
            max_per_peer: spec.max_per_peer,
            idle_timeout: spec.idle_timeout,
            request_timeout: spec.request_timeout,
        },
        tracker: tracker.clone(),
        shutdown,
        connections: Some(metrics.connections.get_or_create(&labels).clone()),
        refused: Some(metrics.refused_connections.get_or_create(&labels).clone()),
    };
    let handler: crate::soap::server::Handler = Arc::new(move |sub: Submission| {
        let (slot, spec, tracker) = (slot.clone(), spec.clone(), tracker.clone());
        Box::pin(async move {
            if sub.hl7.len() > max_frame {
                return Err(Fault::MessageTooLarge {
                    size: sub.hl7.len(),
                    max: max_frame,
                });
            }
            // A message taken in is handled to the end, like an MLLP frame,
            // even if its request is cut or its client goes away meanwhile.
            let handled = tracker.spawn(async move {
                let identity = sub.peer.map(crate::identity::Identity::Proven);
                slot.current()
                    .handle_from(&spec, sub.hl7.as_bytes(), identity.as_ref())
                    .await
            });
            match handled.await {
                Ok(Answer::Reply(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Ok(Answer::Close(why)) => Err(Fault::Unknown(why)),
                Err(e) => {
                    tracing::error!(error = %e, "SOAP submission: handling the message failed");
                    Err(Fault::Unknown("the message could not be handled".into()))
                }
            }
        })
    });
    let endpoint = crate::soap::server::Endpoint {
        users: soap.users,
        max_body: max_frame * 2 + (16 << 10),
        handler,
    };
    crate::soap::server::run(socket, soap.path, endpoint, serving).await;
}
