//! From a checked configuration to running parts, and from one configuration
//! to the next. The [`Deliveries`] here own every destination's delivery
//! queue for the life of the engine: exactly one consumer per destination
//! name at any moment, handed the destination's new settings on reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod plan;

pub use plan::{Plan, plan};

use crate::delivery::{Control, Destination, QueueWatch, Target, Workers};
use crate::metrics::Metrics;
use crate::store::Journal;

/// One destination name's queue consumer.
struct Consumer {
    /// The destination the consumer delivers through; `None` once removed.
    current: watch::Sender<Option<Arc<Destination>>>,
    /// Rung when a message for this destination is journaled.
    wake: Arc<Notify>,
    /// Whether its task runs (only with a journal and delivery on).
    running: bool,
    /// The operator's pause and breaker reset, for the engine's life.
    control: Arc<Control>,
}

/// Destinations and their delivery queues, across configuration reloads.
pub struct Deliveries {
    consumers: Mutex<HashMap<String, Consumer>>,
    journal: Option<Journal>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Where queue consumers run (shutdown waits for them).
    tasks: TaskTracker,
    /// Where destinations' connection workers run.
    workers: Workers,
    /// Run queue consumers (false for tools that only journal).
    deliver: bool,
    /// Who follows the queues' work (the console).
    watch: Option<Arc<dyn QueueWatch>>,
}

impl Deliveries {
    /// Delivery for an engine: queue consumers on `tasks` (when `journal`
    /// is given and `deliver` is on), connection workers on `workers`.
    pub fn new(
        journal: Option<Journal>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        workers: Workers,
        deliver: bool,
    ) -> Self {
        Deliveries {
            consumers: Mutex::new(HashMap::new()),
            journal,
            metrics,
            shutdown,
            tasks,
            workers,
            deliver,
            watch: None,
        }
    }

    /// Reports the queues' work to `watch` (the console).
    pub fn with_watch(mut self, watch: Option<Arc<dyn QueueWatch>>) -> Self {
        self.watch = watch;
        self
    }

    /// Destinations for a configuration: each one whose settings did not
    /// change is taken from `previous` with its open connections, the others
    /// are started. Nothing is handed to the queues yet ([`Deliveries::hand_over`]).
    pub fn start(
        &self,
        specs: &[Target],
        previous: Option<&HashMap<String, Arc<Destination>>>,
    ) -> HashMap<String, Arc<Destination>> {
        specs
            .iter()
            .map(|spec| {
                let reused = previous
                    .and_then(|p| p.get(&spec.name))
                    .filter(|old| old.spec() == spec)
                    .cloned();
                let dest = reused.unwrap_or_else(|| {
                    let mismatched = self
                        .metrics
                        .iis_answers_mismatched
                        .get_or_create(&vec![crate::metrics::l("destination", &spec.name)])
                        .clone();
                    Destination::start(
                        spec.clone(),
                        self.wake(&spec.name),
                        self.workers.clone(),
                        mismatched,
                    )
                });
                (spec.name.clone(), dest)
            })
            .collect()
    }

    /// Puts `current` in force for the queues: each name's one consumer
    /// delivers through its new destination from its next round on, a
    /// removed destination's consumer waits, a new name gets its consumer.
    pub fn hand_over(&self, current: &HashMap<String, Arc<Destination>>) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        for name in current.keys() {
            consumers.entry(name.clone()).or_insert_with(Consumer::new);
        }
        for (name, consumer) in consumers.iter_mut() {
            consumer.current.send_replace(current.get(name).cloned());
            if !consumer.running
                && self.deliver
                && let Some(journal) = &self.journal
            {
                consumer.running = true;
                self.tasks
                    .spawn(crate::delivery::queue::run(crate::delivery::queue::Queue {
                        name: name.clone(),
                        current: consumer.current.subscribe(),
                        journal: journal.clone(),
                        wake: consumer.wake.clone(),
                        control: consumer.control.clone(),
                        metrics: self.metrics.clone(),
                        shutdown: self.shutdown.clone(),
                        watch: self.watch.clone(),
                    }));
            }
        }
    }

    /// The queue doorbell of destination `name`, the same across reloads.
    fn wake(&self, name: &str) -> Arc<Notify> {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        consumers
            .entry(name.to_string())
            .or_insert_with(Consumer::new)
            .wake
            .clone()
    }

    /// The operator's controls of destination `name`'s queue (pause,
    /// breaker reset), the same for the engine's life.
    pub fn control(&self, name: &str) -> Arc<Control> {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        consumers
            .entry(name.to_string())
            .or_insert_with(Consumer::new)
            .control
            .clone()
    }

    /// How many queue consumers run (one per destination name ever configured).
    pub fn consumers_running(&self) -> usize {
        let consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        consumers.values().filter(|c| c.running).count()
    }
}

impl Consumer {
    fn new() -> Self {
        Consumer {
            current: watch::channel(None).0,
            wake: Arc::new(Notify::new()),
            running: false,
            control: Arc::new(Control::default()),
        }
    }
}
