//! The one way to assemble the engine from a [`Plan`]: the plugin runtime,
//! the metrics, the journal the configuration names (SQLite or
//! PostgreSQL), the destinations and their queues, and the pipeline. What
//! runs depends on the [`Mode`]; `serve`, `check`, `validate`, `reprocess`
//! and `bulk run` all build it here, so they cannot disagree on what a
//! configuration means.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{QueueWatch, Workers};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::observe::Observer;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::store::Journal;
use crate::topology::{Deliveries, Plan};

/// What the assembled engine does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything: the journal with its retention, the destinations, and
    /// the queues that deliver what commit routes journal.
    Serve,
    /// The journal and the destinations, without queue consumers: commit
    /// routes journal for the running engine to deliver, relay routes
    /// deliver now (`reprocess`, `bulk run`).
    JournalOnly,
    /// The routes' plugins alone: no journal, no destination, nothing sent
    /// (`check`, `validate`).
    DryRun,
}

/// What the wings hang on the core: who is told of each handled message,
/// and who watches the delivery queues.
#[derive(Default)]
pub struct Wings {
    pub observer: Option<Arc<dyn Observer>>,
    pub watch: Option<Arc<dyn QueueWatch>>,
}

/// Where the engine's tasks run and stop.
#[derive(Clone, Default)]
pub struct EngineOptions {
    pub runtime: RuntimeOptions,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
    /// The engine's own tasks (journal retention, queue consumers).
    pub tracker: TaskTracker,
    /// The delivery tasks, drained at shutdown.
    pub workers: Workers,
}

/// The long-lived parts of an assembled engine; a reload builds a new
/// pipeline from them ([`Engine::rebuild`]).
pub struct Engine {
    pub mode: Mode,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub journal: Option<Journal>,
    pub deliveries: Arc<Deliveries>,
    observer: Option<Arc<dyn Observer>>,
}

/// How often a serving engine prunes its journal.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Engine {
    /// Assembles the engine for `plan` in `mode`. `wings` is called once the
    /// journal is open (a cluster's node number comes from it) and gives
    /// what the wings hang on the core.
    pub async fn build(
        plan: &Plan,
        mode: Mode,
        opts: EngineOptions,
        wings: impl FnOnce(Option<&Journal>) -> anyhow::Result<Wings>,
    ) -> anyhow::Result<(Engine, Pipeline)> {
        let config = &plan.config;
        let metrics = Arc::new(Metrics::new());
        let runtime = Arc::new(Runtime::new(opts.runtime.clone())?);
        let journal = match mode {
            Mode::DryRun => None,
            Mode::Serve | Mode::JournalOnly => crate::store::open_configured(config).await?,
        };
        if let (Mode::Serve, Some(journal)) = (mode, &journal) {
            if let Some(path) = &config.journal {
                tracing::info!(path = %path.display(), "journal open; undelivered messages resume");
            }
            opts.tracker.spawn(retention(
                journal.clone(),
                config.retention,
                config.max_finished,
                opts.shutdown.clone(),
            ));
        }
        let Wings { observer, watch } = wings(journal.as_ref())?;
        let deliveries = Arc::new(
            Deliveries::new(
                journal.clone(),
                metrics.clone(),
                opts.shutdown.clone(),
                opts.tracker.clone(),
                opts.workers.clone(),
                mode == Mode::Serve,
            )
            .with_watch(watch),
        );
        let engine = Engine {
            mode,
            runtime,
            metrics,
            journal,
            deliveries,
            observer,
        };
        let pipeline = engine.pipeline(plan, None)?;
        Ok((engine, pipeline))
    }

    /// A new pipeline for `plan` (a reloaded configuration): destinations
    /// whose settings did not change keep their connections and queues.
    pub fn rebuild(&self, plan: &Plan, previous: &Pipeline) -> anyhow::Result<Pipeline> {
        self.pipeline(plan, Some(previous))
    }

    fn pipeline(&self, plan: &Plan, previous: Option<&Pipeline>) -> anyhow::Result<Pipeline> {
        let destinations = match self.mode {
            Mode::DryRun => Default::default(),
            Mode::Serve | Mode::JournalOnly => self
                .deliveries
                .start(&plan.targets, previous.map(Pipeline::destinations)),
        };
        let pipeline = Pipeline::build(
            plan,
            &self.runtime,
            &self.metrics,
            self.journal.clone(),
            destinations,
        )?;
        Ok(pipeline.with_observer(self.observer.clone()))
    }
}

/// Prunes finished messages from the journal every hour.
async fn retention(
    journal: Journal,
    max_age: Duration,
    max_finished: Option<u64>,
    stop: CancellationToken,
) {
    loop {
        match journal.prune(max_age, max_finished).await {
            Ok(n) if n > 0 => {
                tracing::info!(deleted = n, "journal retention: pruned finished messages");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal retention failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn plan_of(dir: &std::path::Path) -> Plan {
        let text = r#"
[listeners.ehr]
listen = "127.0.0.1:0"

[destinations.mi]
mllp = "127.0.0.1:9"

[[routes]]
name = "vxu"
ack_mode = "commit"
destinations = ["mi"]
"#;
        let path = dir.join("izhub.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::load(&path).unwrap();
        crate::topology::plan(&config).unwrap()
    }

    #[tokio::test]
    async fn each_mode_opens_what_it_needs_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_of(dir.path());
        let journal_file = plan.config.journal.clone().unwrap();

        let (dry, pipeline) = Engine::build(&plan, Mode::DryRun, EngineOptions::default(), |j| {
            assert!(j.is_none());
            Ok(Wings::default())
        })
        .await
        .unwrap();
        assert!(dry.journal.is_none());
        assert!(pipeline.destinations().is_empty());
        assert!(!journal_file.exists(), "a dry run created the journal");

        let mut told_of_journal = false;
        let (only, pipeline) =
            Engine::build(&plan, Mode::JournalOnly, EngineOptions::default(), |j| {
                told_of_journal = j.is_some();
                Ok(Wings::default())
            })
            .await
            .unwrap();
        assert!(told_of_journal);
        assert!(only.journal.is_some());
        assert!(journal_file.exists());
        assert_eq!(pipeline.destinations().len(), 1);
        // A rebuild keeps the destination whose settings did not change.
        let again = only.rebuild(&plan, &pipeline).unwrap();
        assert!(Arc::ptr_eq(
            &again.destinations()["mi"],
            &pipeline.destinations()["mi"]
        ));
    }
}
