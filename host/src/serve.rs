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
use crate::delivery::Workers;
use crate::listener;
use crate::metrics::{Metrics, l};
use crate::pipeline::{Pipeline, PipelineSlot};
use crate::plugin::{Runtime, RuntimeOptions};
use crate::tls::ListenerTls;
use crate::topology::Deliveries;

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

/// One running listener: its settings, bound address, and the token that
/// stops it (its accept loop and its connections) without touching others.
struct ListenerHandle {
    spec: Arc<ListenerSpec>,
    /// Its TLS as loaded (compared with the files' contents on reload).
    tls: Option<ListenerTls>,
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The listeners in force, by name.
type Listeners = BTreeMap<String, ListenerHandle>;

/// Binds one listener and starts its accept loop on `tracker`.
async fn start_listener(
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

/// Binds every listener and starts serving.
pub async fn start_with(config: &Config, opts: ServeOptions) -> anyhow::Result<Running> {
    let started = Instant::now();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(var) = &config.admin_access.peer_token_env
        && crate::admin::auth::peer_token(&config.admin_access).is_none()
    {
        anyhow::bail!(
            "admin.peer_token_env: {var} is not set or shorter than {} characters",
            crate::admin::auth::MIN_PEER_TOKEN
        );
    }
    let metrics = Arc::new(Metrics::new());
    let runtime = Arc::new(Runtime::new(opts.runtime.clone())?);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let workers = Workers {
        tracker: TaskTracker::new(),
        drain: CancellationToken::new(),
    };
    let journal = match crate::store::open_configured(config).await? {
        Some(journal) => {
            if let Some(path) = &config.journal {
                tracing::info!(path = %path.display(), "journal open; undelivered messages resume");
            }
            let max_finished = config.max_finished;
            let (j, every, retention, stop) = (
                journal.clone(),
                Duration::from_secs(3600),
                config.retention,
                shutdown.clone(),
            );
            tracker.spawn(async move {
                loop {
                    match j.prune(retention, max_finished).await {
                        Ok(n) if n > 0 => tracing::info!(
                            deleted = n,
                            "journal retention: pruned finished messages"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "journal retention failed"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            });
            Some(journal)
        }
        None => None,
    };
    // The console's view of the flow: counts for the dashboard, live events,
    // and (unless switched off) the message log.
    let flow = match (&config.admin, &config.console) {
        (Some(_), Some(c)) => {
            let node = journal.as_ref().and_then(|j| j.node_number());
            let log = crate::flow::log::MessageLog::open(&c.log, c.keep, c.keep_messages, node)?;
            tracing::info!(path = %c.log.display(), "message log open");
            Some(crate::flow::Flow::new(Some(log)))
        }
        (Some(_), None) => Some(crate::flow::Flow::new(None)),
        (None, _) => None,
    };
    let deliveries = Arc::new(
        Deliveries::new(
            journal.clone(),
            metrics.clone(),
            shutdown.clone(),
            tracker.clone(),
            workers.clone(),
            true,
        )
        .with_watch(
            flow.clone()
                .map(|f| f as Arc<dyn crate::delivery::QueueWatch>),
        ),
    );
    // The queued counts the console starts from; it keeps them from then on.
    if let (Some(flow), Some(journal)) = (&flow, &journal) {
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
    let plan = crate::topology::plan(config)?;
    let destinations = deliveries.start(&plan.targets, None);
    let pipeline = Pipeline::build(&plan, &runtime, &metrics, journal.clone(), destinations)?
        .with_observer(
            flow.clone()
                .map(|f| f as Arc<dyn crate::pipeline::observe::Observer>),
        );
    if let Some(flow) = &flow {
        let (routes, dests) = pipeline.names();
        flow.board.know(&routes, &dests);
    }
    let slot = Arc::new(PipelineSlot::new(pipeline));
    deliveries.hand_over(slot.current().destinations());
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
        Some(addr) => {
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
                metrics: metrics.clone(),
                listeners: bound.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                slot: slot.clone(),
                reload: status.clone(),
                flow: flow.clone(),
                journal: journal.clone(),
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
            Some((local, state))
        }
        None => None,
    };
    let (admin_addr, admin_state) = admin_addr.unzip();
    if let Some(every) = opts.watch {
        let watcher = Watcher {
            config: config.clone(),
            runtime: runtime.clone(),
            metrics: metrics.clone(),
            journal: journal.clone(),
            deliveries: deliveries.clone(),
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
    }
    let (compiled, from_disk, _) = runtime.cache().counts();
    let startup = started.elapsed();
    tracing::info!(
        ms = startup.as_millis() as u64,
        plugins = config.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
        compiled,
        from_disk,
        "engine started"
    );
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

/// A CDC WSDL SOAP listener: each `submitSingleMessage` goes through the
/// pipeline like an MLLP frame, and its answer is the SOAP return value.
/// Connection tasks run on `tracker`, as for MLLP.
async fn soap_listener(
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

type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// Watches the configuration file and every plugin file it names, and puts
/// each good change in force: unchanged parts keep running.
struct Watcher {
    config: Config,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    journal: Option<crate::store::Journal>,
    deliveries: Arc<Deliveries>,
    listeners: Listeners,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slot: Arc<PipelineSlot>,
    status: Arc<Mutex<ReloadStatus>>,
    /// The admin endpoint's users and certificate, swapped on reload.
    admin: Option<Arc<AdminState>>,
    every: Duration,
    flow: Option<Arc<crate::flow::Flow>>,
}

fn fingerprint(config: &Config) -> Fingerprint {
    let mut paths = vec![config.path.clone()];
    // Certificates and keys: a rotated file reloads its listener or destination.
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        paths.extend([tls.cert.clone(), tls.key.clone()]);
        paths.extend(tls.client_ca.clone());
    }
    for tls in config.admin_access.tls.iter() {
        paths.extend([tls.cert.clone(), tls.key.clone()]);
        paths.extend(tls.client_ca.clone());
    }
    for tls in config.destinations.iter().filter_map(|d| d.tls.as_ref()) {
        paths.push(tls.ca.clone());
        paths.extend(tls.client.iter().flat_map(|(c, k)| [c.clone(), k.clone()]));
    }
    if let Some(dir) = config.codesets.as_ref().map(|c| &c.dir) {
        for sub in ["cdc", "aira"] {
            if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                let mut files: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                files.sort();
                paths.extend(files);
            }
        }
    }
    paths.extend(
        config
            .routes
            .iter()
            .flat_map(|r| r.plugins.iter().map(|p| p.wasm.clone())),
    );
    paths
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

impl Watcher {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut last = fingerprint(&self.config);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let mut seen = fingerprint(&self.config);
            if seen == last {
                continue;
            }
            // Wait until the files stop changing: a file an editor or a copy
            // is still writing must not be read half-written (a truncated
            // configuration would drop listeners and their connections).
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.every) => {}
                }
                let now = fingerprint(&self.config);
                if now == seen {
                    break;
                }
                seen = now;
            }
            self.reload().await;
            // Watch the files of whatever configuration is now in force.
            last = fingerprint(&self.config);
        }
    }

    async fn reload(&mut self) {
        let path = self.config.path.clone();
        let attempt = async {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                return Err(format!(
                    "{} is empty (still being written?)",
                    path.display()
                ));
            }
            let new = config::load(&path).map_err(|e| e.to_string().trim_end().to_string())?;
            if new.routes.iter().any(|r| r.ack_mode == AckMode::Commit) && self.journal.is_none() {
                return Err(
                    "a route uses ack_mode = \"commit\", but the journal is opened only at start: restart the engine"
                        .to_string(),
                );
            }
            if new.admin != self.config.admin {
                tracing::warn!("admin address changes take effect at the next restart");
            }
            let (runtime, metrics, journal) = (
                self.runtime.clone(),
                self.metrics.clone(),
                self.journal.clone(),
            );
            let (deliveries, slot, cfg) = (self.deliveries.clone(), self.slot.clone(), new.clone());
            let flow = self.flow.clone();
            let built = tokio::task::spawn_blocking(move || {
                let plan = crate::topology::plan(&cfg)
                    .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
                let previous = slot.current();
                let destinations = deliveries.start(&plan.targets, Some(previous.destinations()));
                let pipeline = Pipeline::build(&plan, &runtime, &metrics, journal, destinations)?
                    .with_observer(
                        flow.clone()
                            .map(|f| f as Arc<dyn crate::pipeline::observe::Observer>),
                    );
                if let Some(flow) = &flow {
                    let (routes, dests) = pipeline.names();
                    flow.board.know(&routes, &dests);
                }
                Ok::<_, anyhow::Error>((plan, pipeline))
            })
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
            .map_err(|e| format!("{e:#}"))?;
            Ok::<_, String>((new, built))
        };
        let result = attempt.await;
        let outcome = match result {
            Ok((new, (plan, pipeline))) => {
                self.slot.replace(pipeline);
                self.deliveries
                    .hand_over(self.slot.current().destinations());
                let swapped = self.swap_listeners(&plan).await;
                if let Some(admin) = &self.admin {
                    admin.auth.reload(&new.admin_access);
                    match (&admin.tls, plan.admin_tls.clone()) {
                        (Some(current), Some(tls)) => {
                            if current.replace(tls) {
                                tracing::info!("admin endpoint: new certificate in force");
                            }
                        }
                        (None, None) => {}
                        _ => tracing::warn!(
                            "admin endpoint: turning HTTPS on or off takes effect at the next restart"
                        ),
                    }
                }
                self.config = new;
                swapped
            }
            Err(e) => Err(e),
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_attempt = Some(crate::hl7::rfc3339_now());
        match outcome {
            Ok(()) => {
                status.generation += 1;
                status.last_error = None;
                self.metrics
                    .reloads
                    .get_or_create(&vec![l("result", "applied")])
                    .inc();
                tracing::info!(generation = status.generation, "configuration reloaded");
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&vec![l("result", "refused")])
                    .inc();
                tracing::error!(error = %e, "configuration change refused; the previous configuration stays in force");
                status.last_error = Some(e);
            }
        }
    }

    /// Stops listeners that were removed or changed and starts the changed
    /// and new ones; the others keep their sockets and connections.
    async fn swap_listeners(&mut self, plan: &crate::topology::Plan) -> Result<(), String> {
        let wanted: BTreeMap<&str, &ListenerSpec> = plan
            .config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let stale: Vec<String> = self
            .listeners
            .iter()
            .filter(|(name, h)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|w| **w != *h.spec || plan.tls_of(name.as_str()) != h.tls.as_ref())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            if let Some(old) = self.listeners.remove(name) {
                old.stop.cancel();
                // Its socket must be closed before the address is bound again.
                let _ = old.task.await;
                tracing::info!(listener = %name, "listener stopped for the new configuration");
            }
        }
        let mut failed = Vec::new();
        for (name, spec) in wanted {
            if self.listeners.contains_key(name) {
                continue;
            }
            let tls = plan.tls_of(name).cloned();
            match start_listener(spec, tls, &self.slot, &self.shutdown, &self.tracker).await {
                Ok(handle) => {
                    self.listeners.insert(name.to_string(), handle);
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}
