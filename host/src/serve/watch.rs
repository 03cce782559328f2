//! The configuration watcher: it notices changed files (the
//! configuration, plugins, certificates, code sets), waits until they
//! settle, and puts a good change in force without dropping a connection.

use super::*;

pub(super) type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// Watches the configuration file and every plugin file it names, and puts
/// each good change in force: unchanged parts keep running.
pub(super) struct Watcher {
    pub(super) config: Config,
    /// The engine's long-lived parts; each good change is a new pipeline.
    pub(super) engine: Arc<Engine>,
    pub(super) listeners: Listeners,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) slot: Arc<PipelineSlot>,
    pub(super) status: Arc<Mutex<ReloadStatus>>,
    /// The admin endpoint's users and certificate, swapped on reload.
    pub(super) admin: Option<Arc<AdminState>>,
    pub(super) every: Duration,
    pub(super) flow: Option<Arc<crate::flow::Flow>>,
}

pub(super) fn fingerprint(config: &Config) -> Fingerprint {
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
        paths.push(dir.join(izhub_codesets::RELEASED));
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
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut last = fingerprint(&self.config);
        // SIGHUP reloads at once (`systemctl reload`), whatever the poll.
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let hup = async {
                #[cfg(unix)]
                if let Some(signal) = hangup.as_mut() {
                    signal.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
                _ = hup => {
                    tracing::info!("SIGHUP: reading the configuration again");
                    last = self.reload(fingerprint(&self.config)).await;
                    continue;
                }
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
            // Compared next with the files as the reload read them, so a
            // change made while it ran is seen.
            last = self.reload(seen).await;
        }
    }

    /// Reloads from the files as they are now; `seen` is their settled
    /// fingerprint. Returns what to compare the files with from now on: the
    /// new configuration's files as this reload read them (the
    /// configuration file as `seen` had it, the files it names before they
    /// were read), or `seen` when the change is refused.
    async fn reload(&mut self, seen: Fingerprint) -> Fingerprint {
        let path = self.config.path.clone();
        let config_as_seen = seen.first().map(|(_, meta)| *meta);
        let attempt = async {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                return Err(format!(
                    "{} is empty (still being written?)",
                    path.display()
                ));
            }
            let new = config::load(&path).map_err(|e| e.to_string().trim_end().to_string())?;
            let mut read_as = fingerprint(&new);
            if let (Some(first), Some(meta)) = (read_as.first_mut(), config_as_seen) {
                first.1 = meta;
            }
            if new.routes.iter().any(|r| r.ack_mode == AckMode::Commit)
                && self.engine.journal.is_none()
            {
                return Err(
                    "a route uses ack_mode = \"commit\", but the journal is opened only at start: restart the engine"
                        .to_string(),
                );
            }
            if new.admin != self.config.admin {
                tracing::warn!("admin address changes take effect at the next restart");
            }
            let (engine, slot, cfg) = (self.engine.clone(), self.slot.clone(), new.clone());
            let flow = self.flow.clone();
            let built = tokio::task::spawn_blocking(move || {
                let plan = crate::topology::plan(&cfg)
                    .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
                let pipeline = engine.rebuild(&plan, &slot.current())?;
                if let Some(flow) = &flow {
                    let (routes, dests) = pipeline.names();
                    flow.board.know(&routes, &dests);
                }
                Ok::<_, anyhow::Error>((plan, pipeline))
            })
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
            .map_err(|e| format!("{e:#}"))?;
            Ok::<_, String>((new, built, read_as))
        };
        let result = attempt.await;
        let mut next = seen;
        let outcome = match result {
            Ok((new, (plan, pipeline), read_as)) => {
                next = read_as;
                self.slot.replace(pipeline);
                self.engine
                    .deliveries
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
                self.engine
                    .metrics
                    .reloads
                    .get_or_create(&vec![l("result", "applied")])
                    .inc();
                tracing::info!(generation = status.generation, "configuration reloaded");
            }
            Err(e) => {
                self.engine
                    .metrics
                    .reloads
                    .get_or_create(&vec![l("result", "refused")])
                    .inc();
                tracing::error!(error = %e, "configuration change refused; the previous configuration stays in force");
                status.last_error = Some(e);
            }
        }
        next
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
