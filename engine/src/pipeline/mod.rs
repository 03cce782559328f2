//! The pipeline: from one received frame to the answer for its sender.
//! Decode the character set, read MSH, pick the route ([`route`] runs its
//! plugins in order and delivers, [`commit`] journals in commit mode) and
//! build or relay the answer ([`reply`]). It spawns nothing: every task
//! belongs to the running topology.

mod commit;
mod dry_run;
pub mod observe;
mod reply;
mod route;
mod trace;
mod untrusted;

pub use dry_run::{DryOutcome, DryRun};
use reply::ack;
use route::{PluginSeries, Route};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{ListenerSpec, RouteSpec};
use crate::delivery::{Destination, gate};
use crate::hl7::{self, AckCode, Charset, CharsetError, Issue, Msh};
use crate::identity::Identity;
use crate::metrics::{Metrics, l};
use crate::plugin::Runtime;
use crate::store::Journal;
use crate::topology::Plan;
use observe::Observer;

/// Everything needed to process messages; built once from a [`Plan`].
pub struct Pipeline {
    routes: Vec<Route>,
    runtime: Arc<Runtime>,
    destinations: HashMap<String, Arc<Destination>>,
    metrics: Arc<Metrics>,
    journal: Option<Journal>,
    /// Sending facilities that may appear as metric labels: those named in
    /// the configuration, up to its cap; every other counts as `other`.
    sender_labels: Arc<std::collections::HashSet<String>>,
    /// Who is told of every answered message, if anyone.
    observer: Option<Arc<dyn Observer>>,
    /// The configured listeners, by name (reprocessing needs them).
    listeners: HashMap<String, ListenerSpec>,
    /// The code sets loaded, for the console.
    codesets: Vec<crate::topology::plan::CodeSetStatus>,
    /// CVX and NDC sets older than this many days are flagged.
    codeset_max_age_days: u64,
}

/// The pipeline in force, swapped whole when the configuration is reloaded:
/// a message in flight keeps the pipeline it started with.
pub struct PipelineSlot {
    current: std::sync::RwLock<Arc<Pipeline>>,
    metrics: Arc<Metrics>,
}

impl PipelineSlot {
    /// A slot holding `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        let metrics = pipeline.metrics.clone();
        metrics.set_senders(pipeline.sender_labels.clone());
        PipelineSlot {
            current: std::sync::RwLock::new(Arc::new(pipeline)),
            metrics,
        }
    }

    /// The pipeline new messages go through.
    pub fn current(&self) -> Arc<Pipeline> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new pipeline in force.
    pub fn replace(&self, pipeline: Pipeline) {
        self.metrics.set_senders(pipeline.sender_labels.clone());
        let new = Arc::new(pipeline);
        match self.current.write() {
            Ok(mut p) => *p = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// The metrics every pipeline in this slot records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The answer to one frame: bytes to frame and send back, or nothing (close).
#[derive(Debug)]
pub enum Answer {
    /// Send these bytes (an ACK or RSP) back to the sender.
    Reply(Bytes),
    /// Nothing in the frame could be answered: close the connection.
    Close(String),
}

/// What a bulk query came back with.
#[derive(Debug)]
pub struct BulkAnswer {
    pub answer: Answer,
    /// The destination's gate turned it back (outside its window, over its
    /// daily cap), and why: not a failed attempt.
    pub not_now: Option<gate::NotNow>,
    /// The destination it was routed to: identifier systems are named for it.
    pub destination: Option<String>,
}

/// What [`Pipeline::handle_traced`] learned beyond the answer (bulk only).
struct BulkDone {
    not_now: Option<gate::NotNow>,
    destination: Option<String>,
}

impl Pipeline {
    /// Compiles (or takes from the cache) every plugin of `plan` and puts
    /// the routes together with `destinations` (started by the topology) and
    /// the journal for commit-mode routes. Spawns nothing and opens nothing.
    pub fn build(
        plan: &Plan,
        runtime: &Arc<Runtime>,
        metrics: &Arc<Metrics>,
        journal: Option<Journal>,
        destinations: HashMap<String, Arc<Destination>>,
    ) -> anyhow::Result<Self> {
        let tables = plan.tables.clone();
        runtime.cache().begin_build();
        let mut routes = Vec::new();
        for r in &plan.routes {
            let mut plugins = Vec::new();
            for p in &r.plugins {
                // Checked (manifest, pin, signature) from the very bytes
                // that are then compiled.
                let (bytes, provenance) = crate::plugin::admit(p)?;
                let component = runtime.compile_bytes(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "plugin '{}' ({}): cannot compile: {e}",
                        p.name,
                        p.wasm.display()
                    )
                })?;
                plugins.push(runtime.load(p, &component, provenance, &tables)?);
            }
            let series = plugins
                .iter()
                .map(|p| PluginSeries::new(metrics, &r.name, p))
                .collect();
            routes.push(Route {
                spec: r.clone(),
                plugins,
                series,
            });
        }
        runtime.cache().end_build();
        Ok(Pipeline {
            routes,
            runtime: runtime.clone(),
            destinations,
            metrics: metrics.clone(),
            journal,
            sender_labels: Arc::new(plan.config.sender_labels()),
            observer: None,
            listeners: plan
                .config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.clone()))
                .collect(),
            codesets: plan.codesets.clone(),
            codeset_max_age_days: plan.config.codeset_max_age_days,
        })
    }

    /// The code sets loaded and the age beyond which CVX and NDC are stale.
    pub fn codesets(&self) -> (&[crate::topology::plan::CodeSetStatus], u64) {
        (&self.codesets, self.codeset_max_age_days)
    }

    /// Tells `observer` of every answered message.
    pub fn with_observer(mut self, observer: Option<Arc<dyn Observer>>) -> Self {
        self.observer = observer;
        self
    }

    /// A configured listener by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.get(name)
    }

    /// The route names and the destination names, as configured.
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let routes = self.routes.iter().map(|r| r.spec.name.clone()).collect();
        let mut dests: Vec<String> = self
            .routes
            .iter()
            .flat_map(|r| r.spec.destinations.iter().chain(r.spec.route_to.iter()))
            .cloned()
            .chain(self.destinations.keys().cloned())
            .collect();
        dests.sort();
        dests.dedup();
        (routes, dests)
    }

    /// Whether messages for `destination` go through the delivery queue: a
    /// commit-mode route delivers (or may route) to it. Only such a
    /// destination can be paused, or have a breaker an operator resets.
    pub fn queued(&self, destination: &str) -> bool {
        self.routes.iter().any(|r| {
            r.spec.ack_mode == crate::config::AckMode::Commit
                && r.spec
                    .destinations
                    .iter()
                    .chain(r.spec.route_to.iter())
                    .any(|d| d == destination)
        })
    }

    /// The destinations this pipeline delivers to, by name.
    pub fn destinations(&self) -> &HashMap<String, Arc<Destination>> {
        &self.destinations
    }

    /// MSH-4.1 as a metric label: kept for senders the configuration names
    /// (up to its cap), `other` for the rest, so labels never grow with input.
    fn sender_label<'a>(&self, sender: &'a str) -> &'a str {
        if self.sender_labels.contains(sender) {
            sender
        } else {
            "other"
        }
    }

    /// How many routes are configured.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Each route's spec with its loaded plugins (their specs in the same order).
    pub fn loaded_plugins(
        &self,
    ) -> impl Iterator<Item = (&RouteSpec, &[crate::plugin::LoadedPlugin])> {
        self.routes.iter().map(|r| (&r.spec, r.plugins.as_slice()))
    }

    /// The plugin runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The metrics this pipeline records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Processes one frame received on `listener` and returns the answer.
    pub async fn handle(&self, listener: &ListenerSpec, raw: &[u8]) -> Answer {
        self.handle_from(listener, raw, None).await
    }

    /// [`Pipeline::handle`] on a connection whose transport establishes who
    /// sends (a client certificate, a SOAP user): for a proven identity
    /// MSH-4.1 must be one of the facilities it may send for; a refused one
    /// gets AR naming the reason for every message whose MSH can be read.
    pub async fn handle_from(
        &self,
        listener: &ListenerSpec,
        raw: &[u8],
        identity: Option<&Identity>,
    ) -> Answer {
        self.handle_traced(listener, raw, identity, None, None)
            .await
            .0
    }

    /// [`Pipeline::handle`] for a message an operator reprocesses from the
    /// console: its record names the logged message it came from.
    pub async fn reprocess(&self, listener: &ListenerSpec, raw: &[u8], of: i64) -> Answer {
        self.handle_traced(listener, raw, None, Some(of), None)
            .await
            .0
    }

    /// A bulk query: like [`Pipeline::handle`], but it waits at its
    /// destination's gate before it is sent; when the gate turns it back
    /// (outside the window, over the daily cap) the answer is an AE made
    /// here and the reason comes with it.
    pub async fn bulk_query(
        &self,
        listener: &ListenerSpec,
        raw: &[u8],
        gates: &gate::Gates,
    ) -> BulkAnswer {
        let (answer, done) = self
            .handle_traced(listener, raw, None, None, Some(gates.clone()))
            .await;
        BulkAnswer {
            answer,
            not_now: done.not_now,
            destination: done.destination,
        }
    }

    async fn handle_traced(
        &self,
        listener: &ListenerSpec,
        raw: &[u8],
        identity: Option<&Identity>,
        reprocess_of: Option<i64>,
        bulk: Option<gate::Gates>,
    ) -> (Answer, BulkDone) {
        let started = Instant::now();
        self.metrics
            .messages_in
            .get_or_create(&vec![l("listener", &listener.name)])
            .inc();
        let mut trace = trace::Trace::new(self.observer.as_ref().is_some_and(|o| o.keeps_texts()));
        trace.reprocess_of = reprocess_of;
        trace.bulk = bulk;
        let (route, answer) = self.process(listener, raw, identity, &mut trace).await;
        let route_name = route.unwrap_or("none");
        // MSA-1 of the answer, for the metric and for the flow: a relayed
        // IIS answer's was read when it arrived; the engine's own ACK is read.
        let msa_code = match (&answer, &trace.relayed) {
            (Answer::Close(_), _) => None,
            (_, Some(relayed)) => relayed.code.map(hl7::MsaCode::as_str),
            (Answer::Reply(bytes), None) => hl7::read_msa(&String::from_utf8_lossy(bytes))
                .map(|(c, _)| hl7::MsaCode::parse(&c).as_str()),
        };
        let code = match (&answer, msa_code) {
            (Answer::Close(_), _) => "closed",
            (_, Some(c)) => c,
            (_, None) => "none",
        };
        self.metrics
            .answers_out
            .get_or_create(&vec![l("route", route_name), l("code", code)])
            .inc();
        self.metrics
            .message_seconds
            .get_or_create(&vec![l("route", route_name)])
            .observe(started.elapsed().as_secs_f64());
        let done = BulkDone {
            not_now: trace.bulk_wait.take(),
            destination: trace
                .bulk
                .as_ref()
                .and_then(|_| trace.destinations.first().cloned()),
        };
        if let Some(observer) = &self.observer {
            let ack = msa_code.unwrap_or_default();
            trace.took = started.elapsed();
            self.record(observer.as_ref(), listener, raw, &answer, ack, trace);
        }
        (answer, done)
    }

    async fn process<'s>(
        &'s self,
        listener: &ListenerSpec,
        raw: &[u8],
        identity: Option<&Identity>,
        trace: &mut trace::Trace,
    ) -> (Option<&'s str>, Answer) {
        let inbound = match hl7::Inbound::read(raw) {
            Ok(inbound) => inbound,
            Err(hl7::InboundError::Charset(e)) => return (None, self.reject_undecodable(raw, e)),
            Err(hl7::InboundError::Msh(e)) => {
                return (None, Answer::Close(format!("cannot answer: {e}")));
            }
        };
        let (msh, text, charset) = (&inbound.msh, &inbound.text, inbound.charset);
        if self.observer.is_some() {
            trace.header(msh, text);
        }
        if let Some(Identity::Refused(reason)) = identity {
            tracing::debug!(listener = %listener.name, reason = %reason, "message refused: the connection has no usable sender identity");
            let issue = Issue::error("207").text(reason.to_string());
            return (None, ack(msh, AckCode::AR, &[issue], charset));
        }
        if let Some(issue) = frame_problem(msh, text) {
            return (None, ack(msh, AckCode::AR, &[issue], charset));
        }
        let sender = msh.component(4, 1).to_string();
        if let Some(Identity::Proven(peer)) = identity
            && !peer.may_send_for(&sender)
        {
            tracing::warn!(listener = %listener.name, sender = ?sender, peer = %peer.name, "sender is not among the facilities its identity may send for");
            let issue = Issue::error("207")
                .text(format!(
                    "sending facility '{sender}' is not one the {} may send for",
                    peer.name
                ))
                .at("MSH-4");
            return (None, ack(msh, AckCode::AR, &[issue], charset));
        }
        if !listener.allowed_senders.is_empty() && !listener.allowed_senders.contains(&sender) {
            tracing::warn!(listener = %listener.name, sender = ?sender, "sender not allowed on this listener");
            let issue = Issue::error("207")
                .text(format!(
                    "sending facility '{sender}' is not allowed to send to this interface"
                ))
                .at("MSH-4");
            return (None, ack(msh, AckCode::AR, &[issue], charset));
        }
        let Some(route) = self
            .routes
            .iter()
            .find(|r| matches(&r.spec, &listener.name, msh))
        else {
            let mtype = format!("{}^{}", msh.message_code(), msh.trigger());
            let issue = Issue::error("200").text(format!("no route accepts message type {mtype} from sending facility '{sender}' on this interface"),
            )
            .at("MSH-9");
            return (None, ack(msh, AckCode::AR, &[issue], charset));
        };
        let answer = self.run_route(route, listener, inbound, trace).await;
        (Some(route.spec.name.as_str()), answer)
    }

    /// A message whose bytes do not fit its character set: answer AR when its
    /// MSH can still be read.
    fn reject_undecodable(&self, raw: &[u8], err: CharsetError) -> Answer {
        let lossy = String::from_utf8_lossy(raw);
        let text = hl7::normalize_segments(&lossy);
        match Msh::read(&text) {
            Ok(msh) => {
                let issue = Issue::error("102").text(err.to_string()).at("MSH-18");
                ack(&msh, AckCode::AR, &[issue], Charset::Utf8)
            }
            Err(e) => Answer::Close(format!("cannot answer: {e}; also {err}")),
        }
    }
}

/// What stops the engine from processing a frame at all: MSH fields it needs
/// to route and answer, or segments that are not segments.
pub(super) fn frame_problem(msh: &Msh, text: &str) -> Option<Issue> {
    header_problem(msh).or_else(|| {
        hl7::check_structure(text)
            .err()
            .map(|why| Issue::error("102").text(why))
    })
}

/// The MSH fields the engine itself needs to route and answer a message.
pub(super) fn header_problem(msh: &Msh) -> Option<Issue> {
    if msh.message_code().is_empty() {
        return Some(
            Issue::error("101")
                .text("MSH-9 (message type, e.g. VXU^V04^VXU_V04) is empty")
                .at("MSH-9"),
        );
    }
    if msh.control_id().is_empty() {
        return Some(
            Issue::error("101").text("MSH-10 (message control id) is empty; each message needs a unique id so its answer can be matched",
            )
            .at("MSH-10"),
        );
    }
    None
}

fn matches(route: &RouteSpec, listener: &str, msh: &Msh) -> bool {
    (route.listeners.is_empty() || route.listeners.contains(listener))
        && matches_message(route, msh)
}

/// Whether a route takes this message, whichever listener it came in on.
pub(super) fn matches_message(route: &RouteSpec, msh: &Msh) -> bool {
    (route.message_types.is_empty()
        || route.message_types.iter().any(|(code, trigger)| {
            code.eq_ignore_ascii_case(msh.message_code())
                && trigger
                    .as_ref()
                    .is_none_or(|t| t.eq_ignore_ascii_case(msh.trigger()))
        }))
        && (route.senders.is_empty() || route.senders.contains(msh.component(4, 1)))
        && (route.receivers.is_empty() || route.receivers.contains(msh.component(6, 1)))
}
