//! The admin HTTP endpoint: `/healthz` for probes, `/metrics` for
//! Prometheus (both behind a bearer token when `metrics_token_sha256` is
//! set), and the console's authentication API ([`auth`]); over HTTPS when
//! `[admin.tls]` is configured ([`https`]). [`mask`] hides PHI in what the
//! console shows.

pub mod auth;
pub mod console;
pub mod fhir;
pub mod https;
pub mod mask;
pub mod peers;

use std::sync::Arc;
use std::sync::Mutex;

use axum::Router;
use axum::extract::FromRef;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::PipelineSlot;
use auth::{Auth, ClientAddr};
use https::{AdminTls, TlsListener};

/// What the admin endpoint reports on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub listeners: Vec<(String, std::net::SocketAddr)>,
    pub slot: Arc<PipelineSlot>,
    pub reload: Arc<Mutex<ReloadStatus>>,
    /// The console's view of the flow (dashboard, live events, message log).
    pub flow: Option<Arc<crate::flow::Flow>>,
    /// The commit-mode journal, for retry and resend.
    pub journal: Option<crate::store::Journal>,
    /// The destinations' queues: an operator pauses, resumes and resets
    /// their breakers.
    pub deliveries: Arc<crate::topology::Deliveries>,
    /// Console users and sessions.
    pub auth: Auth,
    /// The certificate when the address serves HTTPS.
    pub tls: Option<Arc<AdminTls>>,
    /// Cancelled at shutdown: live-event streams end with it, so the
    /// server's graceful shutdown does not wait for browsers.
    pub shutdown: CancellationToken,
    /// FHIR Bulk Data exports.
    pub bulk: Option<Arc<fhir::Exports>>,
    /// The cluster's other nodes, when the journal is shared and the nodes
    /// share a secret: the console shows every node's messages.
    pub peers: Option<Arc<peers::Peers>>,
}

impl AdminState {
    /// Writes an audit entry for an action of `user`'s: durably, before the
    /// caller goes on (it is the caller's to refuse the action, or report
    /// it, when the entry cannot be written). Without a message log there
    /// is nowhere to keep it, and the log line is the record.
    pub async fn audit(
        &self,
        user: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> Result<(), crate::flow::log::LogError> {
        // Quoted: a target can carry a route or destination name from the request.
        tracing::info!(user = %user, action, target = ?target, result = ?result, "console action");
        let Some(log) = self.flow.as_ref().and_then(|f| f.log.clone()) else {
            return Ok(());
        };
        let entry = [user, action, target, result].map(str::to_string);
        let written = tokio::task::spawn_blocking(move || {
            let [user, action, target, result] = &entry;
            log.audit(user, action, target, result)
        })
        .await;
        let written = written.unwrap_or_else(|e| Err(crate::flow::log::LogError::AuditStopped(e)));
        if let Err(e) = &written {
            tracing::error!(user = %user, action, error = %e, "an audit entry could not be written");
        }
        written
    }
}

impl FromRef<Arc<AdminState>> for Auth {
    fn from_ref(state: &Arc<AdminState>) -> Auth {
        state.auth.clone()
    }
}

/// The outcome of configuration reloads so far.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Reloads applied since start.
    pub generation: u64,
    /// When the files last changed and a reload was tried (RFC 3339).
    pub last_attempt: Option<String>,
    /// Why the last reload was refused, if it was.
    pub last_error: Option<String>,
}

/// Every route of the admin address: the probes (behind the metrics token
/// when one is configured) and the console's authentication API.
pub fn router(state: Arc<AdminState>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::probe_guard,
        ));
    probes
        .merge(auth::router())
        .merge(console::router())
        .merge(fhir::router())
        .with_state(state)
}

/// Serves the admin endpoint until `shutdown` is cancelled: over HTTPS
/// when `state.tls` is set, else plain HTTP.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let tls = state.tls.clone();
    let app = router(state).into_make_service_with_connect_info::<ClientAddr>();
    let stop = shutdown.clone();
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, tls, shutdown.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> axum::response::Response {
    let reload = state.reload.lock().map(|r| r.clone()).unwrap_or_default();
    // A shared journal: the nodes over it, their heartbeats and leases. A
    // store that does not answer in time makes the node unhealthy: every
    // message would be answered AE.
    let (cluster, store_error) = match &state.journal {
        Some(j) => match tokio::time::timeout(STORE_CHECK, j.cluster()).await {
            Ok(Ok(c)) => (c, None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!(
                    "the journal did not answer within {} s",
                    STORE_CHECK.as_secs()
                )),
            ),
        },
        None => (None, None),
    };
    let status = match (&store_error, &reload.last_error) {
        (Some(_), _) => "unavailable",
        (None, Some(_)) => "degraded",
        (None, None) => "ok",
    };
    let health = Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        routes: state.slot.current().route_count(),
        listeners: state
            .listeners
            .iter()
            .map(|(name, addr)| ListenerHealth { name, addr: *addr })
            .collect(),
        reload: ReloadHealth {
            generation: reload.generation,
            last_attempt: reload.last_attempt,
            last_error: reload.last_error,
        },
        store_error,
        cluster,
    };
    let code = match health.store_error {
        Some(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        None => axum::http::StatusCode::OK,
    };
    (code, axum::Json(health)).into_response()
}

/// How long `/healthz` waits for the journal.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /healthz`: `ok`, `degraded` (the last reload was refused) or
/// `unavailable` (503: the journal does not answer, so messages would be
/// answered AE).
#[derive(Debug, serde::Serialize)]
struct Health<'a> {
    status: &'static str,
    version: &'static str,
    routes: usize,
    listeners: Vec<ListenerHealth<'a>>,
    reload: ReloadHealth,
    /// Why the journal is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    /// A shared journal's nodes, their heartbeats and leases.
    cluster: Option<crate::store::ClusterState>,
}

#[derive(Debug, serde::Serialize)]
struct ListenerHealth<'a> {
    name: &'a str,
    addr: std::net::SocketAddr,
}

#[derive(Debug, serde::Serialize)]
struct ReloadHealth {
    generation: u64,
    last_attempt: Option<String>,
    last_error: Option<String>,
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> impl IntoResponse {
    if let Some(log) = state.flow.as_ref().and_then(|f| f.log.as_ref()) {
        let dropped = i64::try_from(log.dropped()).unwrap_or(i64::MAX);
        state.metrics.message_log_dropped.set(dropped);
    }
    // Rebuilt at every scrape: a set or node that is gone is dropped.
    let pipeline = state.slot.current();
    state.metrics.codeset_updated.clear();
    for set in pipeline.codesets().0 {
        let at = console::parse_time(&set.date).map_or(0, |ms| ms.div_euclid(1000));
        state
            .metrics
            .codeset_updated
            .get_or_create(&vec![crate::metrics::l("set", &set.name)])
            .set(at);
    }
    // A shared journal's nodes; a journal that does not answer in time
    // leaves the last values (/healthz reports it).
    if let Some(journal) = &state.journal
        && let Ok(Ok(Some(cluster))) = tokio::time::timeout(STORE_CHECK, journal.cluster()).await
    {
        state.metrics.cluster_heartbeat_age.clear();
        for node in &cluster.nodes {
            state
                .metrics
                .cluster_heartbeat_age
                .get_or_create(&vec![crate::metrics::l("node", &node.id)])
                .set(node.heartbeat_age_ms.max(0) as f64 / 1000.0);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
