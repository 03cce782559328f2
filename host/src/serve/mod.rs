//! `izhub serve`: wires listeners, the pipeline and the admin endpoint
//! together from a checked configuration, reloads routes, destinations and
//! plugins when their files change, and shuts down gracefully.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::auth::Auth;
use crate::admin::https::AdminTls;
use crate::admin::{self, AdminState, ReloadStatus};
use crate::config::{self, AckMode, Config, ListenerSpec};
use crate::delivery::QueueWatch;
use crate::delivery::Workers;
use crate::listener;
use crate::metrics::l;
use crate::pipeline::PipelineSlot;
use crate::pipeline::observe::Observer;
use crate::plugin::RuntimeOptions;
use crate::tls::ListenerTls;
use crate::topology::Deliveries;
use izhub_engine::engine::{Engine, EngineOptions, Mode, Wings};

mod admin_address;
mod listeners;
mod watch;

use admin_address::*;
use listeners::*;
use watch::*;

/// How long shutdown waits for in-flight messages.
const DRAIN: Duration = Duration::from_secs(30);

/// How the engine runs besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Plugin runtime options (compiled-component cache).
    pub runtime: RuntimeOptions,
    /// Poll the configuration and plugin files this often and reload on change.
    pub watch: Option<Duration>,
}

/// A running engine: its bound addresses and a handle to stop it.
pub struct Running {
    /// Bound address of each listener, by name (useful with port 0).
    pub listeners: BTreeMap<String, SocketAddr>,
    /// Bound admin address, if configured.
    pub admin: Option<SocketAddr>,
    /// Time from start to serving (plugins compiled or loaded from cache).
    pub startup: Duration,
    shutdown: CancellationToken,
    /// Listeners, connections, queue consumers, the admin endpoint, the watcher.
    tracker: TaskTracker,
    /// Destinations' connection workers and relay copies: stopped after
    /// everything that feeds them.
    workers: Workers,
    journal: Option<crate::store::Journal>,
    slot: Arc<PipelineSlot>,
    /// The destinations' queue consumers are handed new settings through
    /// this; it lives as long as the engine.
    deliveries: Arc<Deliveries>,
}

impl Running {
    /// Stops accepting, lets in-flight messages and deliveries finish (up to
    /// 30 s), commits what they recorded in the journal, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        let deadline = tokio::time::Instant::now() + DRAIN;
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("shutdown: some connections did not finish in time");
        }
        // Nothing feeds the destinations any more: let their workers finish
        // what is queued, then end.
        drop(self.slot);
        drop(self.deliveries);
        self.workers.drain.cancel();
        self.workers.tracker.close();
        if tokio::time::timeout_at(deadline, self.workers.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("shutdown: some deliveries did not finish in time");
        }
        if let Some(journal) = &self.journal
            && let Err(e) = journal.flush().await
        {
            tracing::error!(error = %e, "shutdown: the journal could not commit the last deliveries");
        }
    }

    /// The pipeline in force (for tests and tools).
    pub fn pipeline(&self) -> Arc<crate::pipeline::Pipeline> {
        self.slot.current()
    }
}

/// Binds every listener and starts serving, with default options.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    start_with(config, ServeOptions::default()).await
}

/// The console's flow when the admin address is on: with the message log
/// unless `[console]` switches it off.
fn console_flow(
    config: &Config,
    journal: Option<&crate::store::Journal>,
) -> anyhow::Result<Option<Arc<crate::flow::Flow>>> {
    Ok(match (&config.admin, &config.console) {
        (Some(_), Some(c)) => {
            let node = journal.and_then(|j| j.node_number());
            let log = crate::flow::log::MessageLog::open(&c.log, c.keep, c.keep_messages, node)?;
            tracing::info!(path = %c.log.display(), "message log open");
            Some(crate::flow::Flow::new(Some(log)))
        }
        (Some(_), None) => Some(crate::flow::Flow::new(None)),
        (None, _) => None,
    })
}

/// Binds every listener and starts serving.
/// A cluster's nodes call each other with a shared token: refuse to start
/// when the variable named for it is unset or too short.
fn check_peer_token(config: &Config) -> anyhow::Result<()> {
    if let Some(var) = &config.admin_access.peer_token_env
        && crate::admin::auth::peer_token(&config.admin_access).is_none()
    {
        anyhow::bail!(
            "admin.peer_token_env: {var} is not set or shorter than {} characters",
            crate::admin::auth::MIN_PEER_TOKEN
        );
    }
    Ok(())
}

pub async fn start_with(config: &Config, opts: ServeOptions) -> anyhow::Result<Running> {
    let started = Instant::now();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    check_peer_token(config)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let workers = Workers::default();
    let plan = crate::topology::plan(config)?;
    let engine_opts = EngineOptions {
        runtime: opts.runtime.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        workers: workers.clone(),
    };
    // The console's view of the flow: counts for the dashboard, live events,
    // and (unless switched off) the message log.
    let mut flow = None;
    let (engine, pipeline) = Engine::build(&plan, Mode::Serve, engine_opts, |journal| {
        flow = console_flow(config, journal)?;
        Ok(Wings {
            observer: flow.clone().map(|f| f as Arc<dyn Observer>),
            watch: flow.clone().map(|f| f as Arc<dyn QueueWatch>),
        })
    })
    .await?;
    let (metrics, journal) = (engine.metrics.clone(), engine.journal.clone());
    if let Some(flow) = &flow {
        seed_board(flow, journal.as_ref(), &pipeline).await;
    }
    let slot = Arc::new(PipelineSlot::new(pipeline));
    engine.deliveries.hand_over(slot.current().destinations());
    let (runtime, deliveries) = (engine.runtime.clone(), engine.deliveries.clone());
    let mut listeners = Listeners::new();
    for spec in &config.listeners {
        let tls = plan.tls_of(&spec.name).cloned();
        let handle = start_listener(spec, tls, &slot, &shutdown, &tracker).await?;
        listeners.insert(spec.name.clone(), handle);
    }
    let bound: BTreeMap<String, SocketAddr> = listeners
        .iter()
        .map(|(name, h)| (name.clone(), h.addr))
        .collect();
    let status = Arc::new(Mutex::new(ReloadStatus::default()));
    let admin_addr = match config.admin {
        Some(addr) => Some(
            start_admin(
                addr,
                AdminParts {
                    config,
                    plan: &plan,
                    metrics: metrics.clone(),
                    listeners: bound.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    slot: slot.clone(),
                    reload: status.clone(),
                    flow: flow.clone(),
                    journal: journal.clone(),
                    deliveries: deliveries.clone(),
                    shutdown: shutdown.clone(),
                    tracker: tracker.clone(),
                },
            )
            .await?,
        ),
        None => None,
    };
    let (admin_addr, admin_state) = admin_addr.unzip();
    if let Some(every) = opts.watch {
        let watcher = Watcher {
            config: config.clone(),
            engine: Arc::new(engine),
            listeners,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            slot: slot.clone(),
            status,
            admin: admin_state,
            every,
            flow: flow.clone(),
        };
        tracker.spawn(watcher.run(shutdown.clone()));
    } else {
        tracker.spawn(ignore_hangups(shutdown.clone()));
    }
    let startup = started.elapsed();
    log_started(config, &runtime, startup);
    Ok(Running {
        listeners: bound,
        admin: admin_addr,
        startup,
        shutdown,
        tracker,
        workers,
        journal,
        slot,
        deliveries,
    })
}

/// The startup line: how long it took and how many plugins were compiled
/// or read from the cache.
fn log_started(config: &Config, runtime: &crate::plugin::Runtime, startup: Duration) {
    let (compiled, from_disk, _) = runtime.cache().counts();
    tracing::info!(
        ms = startup.as_millis() as u64,
        plugins = config.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
        compiled,
        from_disk,
        "engine started"
    );
}

/// With reloading off (`--no-reload`), SIGHUP is said to be ignored rather
/// than left to end the process.
async fn ignore_hangups(shutdown: CancellationToken) {
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangup.recv() => tracing::warn!("SIGHUP ignored: the engine runs with --no-reload"),
            }
        }
    }
    shutdown.cancelled().await;
}

/// What the console's board starts from: the queued counts in the journal
/// (it keeps them from then on) and the names of the routes and
/// destinations.
async fn seed_board(
    flow: &Arc<crate::flow::Flow>,
    journal: Option<&crate::store::Journal>,
    pipeline: &crate::pipeline::Pipeline,
) {
    if let Some(journal) = journal {
        match journal.queued_by_destination().await {
            Ok(rows) => {
                for (dest, n, oldest) in rows {
                    flow.board
                        .queue_state(&dest, Some(n), Some(oldest), "closed", false);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the queued counts"),
        }
    }
    let (routes, dests) = pipeline.names();
    flow.board.know(&routes, &dests);
    // The charts' last seven days, from the log, off the start path: only
    // what was logged before now, so nothing counted live is counted twice.
    if let Some(log) = flow.log.clone() {
        let flow = flow.clone();
        let until = crate::store::now_ms();
        tokio::task::spawn_blocking(move || match log.traffic(until - 7 * 86_400_000, until) {
            Ok(rows) => {
                for (route, dest, minute, n, rejected) in rows {
                    let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
                    flow.board.seed_history(
                        &route,
                        &dest,
                        (minute.max(0) as u64) * 60,
                        clamp(n),
                        clamp(rejected),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log's traffic for the dashboard's charts")
            }
        });
    }
}

/// Runs until `signal` completes, then shuts down gracefully.
pub async fn run(
    config: &Config,
    opts: ServeOptions,
    signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start_with(config, opts).await?;
    signal.await;
    tracing::info!("shutting down: no new connections; finishing in-flight messages");
    running.stop().await;
    Ok(())
}
