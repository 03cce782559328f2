//! `izhub serve`: wires listeners, the pipeline and the admin endpoint
//! together from a checked configuration, and shuts them down gracefully.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::listener;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// How long shutdown waits for in-flight messages.
const DRAIN: Duration = Duration::from_secs(30);

/// A running engine: its bound addresses and a handle to stop it.
pub struct Running {
    /// Bound address of each listener, by name (useful with port 0).
    pub listeners: BTreeMap<String, SocketAddr>,
    /// Bound admin address, if configured.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Stops accepting, lets in-flight messages finish (up to 30 s), and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("shutdown: some connections did not finish in time");
        }
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let pipeline = Arc::new(Pipeline::build(config, metrics.clone())?);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut bound = BTreeMap::new();
    let mut sockets = Vec::new();
    for spec in &config.listeners {
        let socket = TcpListener::bind(spec.addr)
            .await
            .with_context(|| format!("listener '{}': cannot bind {}", spec.name, spec.addr))?;
        bound.insert(spec.name.clone(), socket.local_addr()?);
        sockets.push((socket, Arc::new(spec.clone())));
    }
    for (socket, spec) in sockets {
        tracing::info!(listener = %spec.name, addr = %bound.get(&spec.name).map(|a| a.to_string()).unwrap_or_default(), "listening for MLLP");
        tracker.spawn(listener::run(
            socket,
            spec,
            pipeline.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    let admin_addr = match config.admin {
        Some(addr) => {
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin: cannot bind {addr}"))?;
            let local = socket.local_addr()?;
            let state = Arc::new(AdminState {
                metrics,
                listeners: bound.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                routes: config.routes.len(),
            });
            tracing::info!(addr = %local, "admin endpoint on /healthz and /metrics");
            tracker.spawn(admin::run(socket, state, shutdown.clone()));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        listeners: bound,
        admin: admin_addr,
        shutdown,
        tracker,
    })
}

/// Runs until `signal` completes, then shuts down gracefully.
pub async fn run(config: &Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down: no new connections; finishing in-flight messages");
    running.stop().await;
    Ok(())
}
