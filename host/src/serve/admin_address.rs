//! The admin address: /healthz, /metrics, the console's API and pages, and
//! FHIR bulk exports, with the export jobs resumed (and, in a cluster,
//! taken over from stopped nodes).

use super::*;

/// What the admin address serves from.
pub(super) struct AdminParts<'a> {
    pub(super) config: &'a Config,
    pub(super) plan: &'a crate::topology::Plan,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    pub(super) listeners: Vec<(String, SocketAddr)>,
    pub(super) slot: Arc<PipelineSlot>,
    pub(super) reload: Arc<Mutex<ReloadStatus>>,
    pub(super) flow: Option<Arc<crate::flow::Flow>>,
    pub(super) journal: Option<crate::store::Journal>,
    pub(super) deliveries: Arc<Deliveries>,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
}

/// Binds `addr` and serves the admin API on it until shutdown.
pub(super) async fn start_admin(
    addr: SocketAddr,
    parts: AdminParts<'_>,
) -> anyhow::Result<(SocketAddr, Arc<AdminState>)> {
    let AdminParts {
        config,
        plan,
        metrics,
        listeners,
        slot,
        reload,
        flow,
        journal,
        deliveries,
        shutdown,
        tracker,
    } = parts;
    let socket = TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin: cannot bind {addr}"))?;
    let local = socket.local_addr()?;
    let tls = plan.admin_tls.clone().map(|t| Arc::new(AdminTls::new(t)));
    let peers_tls = match config.postgres.as_ref().and_then(|p| p.console_ca.as_ref()) {
        Some(ca) => Some(
            crate::tls::client_config(ca, None)
                .map_err(|e| anyhow::anyhow!("store.console_ca: {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(AdminState {
        metrics,
        listeners,
        slot,
        reload,
        flow,
        journal: journal.clone(),
        deliveries,
        auth: Auth::new(&config.admin_access, tls.is_some()),
        tls,
        shutdown: shutdown.clone(),
        bulk: Some(crate::admin::fhir::Exports::new(config, journal.clone())),
        peers: crate::admin::peers::Peers::new(
            crate::admin::auth::peer_token(&config.admin_access),
            journal.as_ref(),
            peers_tls,
        ),
    });
    if let Some(exports) = &state.bulk {
        exports.resume_all(&state);
        // In a cluster, jobs whose node stopped are taken over.
        if let Some(every) = exports.scan_every() {
            let (exports, state, stop) = (exports.clone(), state.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => exports.resume_all(&state),
                    }
                }
            });
        }
    }
    tracing::info!(
        addr = %local,
        https = state.tls.is_some(),
        users = config.admin_access.users.len(),
        "admin endpoint on /healthz, /metrics and /api"
    );
    tracker.spawn(admin::run(socket, state.clone(), shutdown.clone()));
    Ok((local, state))
}
