//! The admin HTTP endpoint: `/healthz` for probes, `/metrics` for Prometheus.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::sync::Mutex;

use crate::metrics::Metrics;
use crate::pipeline::PipelineSlot;

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

/// Serves the admin endpoint until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> impl IntoResponse {
    let listeners: Vec<String> = state
        .listeners
        .iter()
        .map(|(name, addr)| format!("{{\"name\":\"{}\",\"addr\":\"{addr}\"}}", json_escape(name)))
        .collect();
    let reload = state.reload.lock().map(|r| r.clone()).unwrap_or_default();
    let opt = |v: &Option<String>| {
        v.as_ref()
            .map_or("null".to_string(), |s| format!("\"{}\"", json_escape(s)))
    };
    let body = format!(
        "{{\"status\":\"{}\",\"version\":\"{}\",\"routes\":{},\"listeners\":[{}],\"reload\":{{\"generation\":{},\"last_attempt\":{},\"last_error\":{}}}}}",
        if reload.last_error.is_some() {
            "degraded"
        } else {
            "ok"
        },
        env!("CARGO_PKG_VERSION"),
        state.slot.current().route_count(),
        listeners.join(","),
        reload.generation,
        opt(&reload.last_attempt),
        opt(&reload.last_error),
    );
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}
