//! The pipeline: from one received frame to the answer for its sender.
//! Decode the character set, read MSH, pick the route, run its plugins in
//! order, deliver, and build or relay the answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::config::{AckMode, Config, ListenerSpec, RouteSpec};
use crate::delivery::Destination;
use crate::hl7::{self, AckCode, Charset, CharsetError, Issue, Msh, Severity};
use crate::identity::Identity;
use crate::metrics::{Metrics, l};
use crate::plugin::{Envelope, LoadedPlugin, Runtime, Verdict};
use crate::store::{Journal, NewDelivery};

/// A route with its plugins loaded.
struct Route {
    spec: RouteSpec,
    plugins: Vec<LoadedPlugin>,
    /// Each plugin's metric series, in plugin order.
    series: Vec<PluginSeries>,
}

/// One plugin's metric series, looked up once when the route is built
/// rather than by label for every message.
struct PluginSeries {
    seconds: Histogram,
    continued: Counter,
    rejected: Counter,
    routed: Counter,
}

impl PluginSeries {
    fn new(metrics: &Metrics, plugin: &str) -> Self {
        let verdict = |v: &str| {
            metrics
                .plugin_verdicts
                .get_or_create(&vec![l("plugin", plugin), l("verdict", v)])
                .clone()
        };
        PluginSeries {
            seconds: metrics
                .plugin_seconds
                .get_or_create(&vec![l("plugin", plugin)])
                .clone(),
            continued: verdict("continue"),
            rejected: verdict("reject"),
            routed: verdict("route_to"),
        }
    }
}

/// Everything needed to process messages; built once from a [`Config`].
pub struct Pipeline {
    routes: Vec<Route>,
    runtime: Arc<Runtime>,
    destinations: HashMap<String, Arc<Destination>>,
    metrics: Arc<Metrics>,
    journal: Option<Journal>,
}

/// What every pipeline shares, for the life of the process.
#[derive(Clone)]
pub struct Services {
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    /// The journal, when a route uses `commit` mode (opened at start).
    pub journal: Option<Journal>,
    /// Stops background work (delivery queues) at shutdown.
    pub shutdown: CancellationToken,
    /// Where background work runs, so shutdown can wait for it.
    pub tasks: tokio_util::task::TaskTracker,
    /// Run the delivery queues (false for tools that only journal).
    pub deliver: bool,
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

impl Pipeline {
    /// Compiles (or takes from the cache) every plugin and starts every
    /// destination; destinations whose settings did not change are taken over
    /// from `previous` with their open connections. Must run inside a tokio
    /// runtime.
    pub fn build(
        config: &Config,
        services: &Services,
        previous: Option<&Pipeline>,
    ) -> anyhow::Result<Self> {
        let (runtime, metrics) = (services.runtime.clone(), services.metrics.clone());
        if config.routes.iter().any(|r| r.ack_mode == AckMode::Commit) && services.journal.is_none()
        {
            anyhow::bail!(
                "a route uses ack_mode = \"commit\", but the journal is opened only at start: restart the engine"
            );
        }
        let tables = config.tables.clone();
        runtime.cache().begin_build();
        let mut routes = Vec::new();
        for r in &config.routes {
            let mut plugins = Vec::new();
            for p in &r.plugins {
                let component = runtime.compile(&p.wasm).map_err(|e| {
                    anyhow::anyhow!(
                        "plugin '{}' ({}): cannot compile: {e}",
                        p.name,
                        p.wasm.display()
                    )
                })?;
                plugins.push(runtime.load(p, &component, &tables)?);
            }
            let series = plugins
                .iter()
                .map(|p| PluginSeries::new(&metrics, p.name()))
                .collect();
            routes.push(Route {
                spec: r.clone(),
                plugins,
                series,
            });
        }
        runtime.cache().end_build();
        let destinations = config
            .destinations
            .iter()
            .map(|d| {
                let reused = previous
                    .and_then(|p| p.destinations.get(&d.name))
                    .filter(|old| old.spec() == d)
                    .cloned();
                let dest = reused.unwrap_or_else(|| {
                    let dest = Destination::start(d.clone());
                    if let Some(journal) = services.journal.as_ref().filter(|_| services.deliver) {
                        services.tasks.spawn(crate::delivery::queue::run(
                            Arc::downgrade(&dest),
                            journal.clone(),
                            dest.wake().clone(),
                            metrics.clone(),
                            services.shutdown.clone(),
                        ));
                    }
                    dest
                });
                (d.name.clone(), dest)
            })
            .collect();
        Ok(Pipeline {
            routes,
            runtime,
            destinations,
            metrics,
            journal: services.journal.clone(),
        })
    }

    /// How many routes are configured.
    pub fn route_count(&self) -> usize {
        self.routes.len()
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
        let started = Instant::now();
        self.metrics
            .messages_in
            .get_or_create(&vec![l("listener", &listener.name)])
            .inc();
        let (route, answer) = self.process(listener, raw, identity).await;
        let route_name = route.unwrap_or("none");
        let code = match &answer {
            Answer::Reply(bytes) => hl7::read_msa(&String::from_utf8_lossy(bytes))
                .map(|(c, _)| c)
                .unwrap_or_default(),
            Answer::Close(_) => "closed".to_string(),
        };
        self.metrics
            .answers_out
            .get_or_create(&vec![l("route", route_name), l("code", &code)])
            .inc();
        self.metrics
            .message_seconds
            .get_or_create(&vec![l("route", route_name)])
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    async fn process<'s>(
        &'s self,
        listener: &ListenerSpec,
        raw: &[u8],
        identity: Option<&Identity>,
    ) -> (Option<&'s str>, Answer) {
        let (text, charset) = match hl7::decode(raw) {
            Ok(ok) => ok,
            Err(e) => return (None, self.reject_undecodable(raw, e)),
        };
        let text = hl7::normalize_segments(&text).into_owned();
        let msh = match Msh::read(&text) {
            Ok(m) => m,
            Err(e) => return (None, Answer::Close(format!("cannot answer: {e}"))),
        };
        if let Some(Identity::Refused(reason)) = identity {
            tracing::debug!(listener = %listener.name, reason = %reason, "message refused: the connection has no usable sender identity");
            let issue = Issue::error("207", reason.to_string());
            return (None, ack(&msh, AckCode::AR, &[issue], charset));
        }
        if let Some(issue) = header_problem(&msh).or_else(|| {
            hl7::check_structure(&text)
                .err()
                .map(|why| Issue::error("102", why))
        }) {
            return (None, ack(&msh, AckCode::AR, &[issue], charset));
        }
        let sender = msh.component(4, 1).to_string();
        if let Some(Identity::Proven(peer)) = identity
            && !peer.may_send_for(&sender)
        {
            tracing::warn!(listener = %listener.name, sender = %sender, peer = %peer.name, "sender is not among the facilities its identity may send for");
            let issue = Issue::error(
                "207",
                format!(
                    "sending facility '{sender}' is not one the {} may send for",
                    peer.name
                ),
            )
            .at("MSH-4");
            return (None, ack(&msh, AckCode::AR, &[issue], charset));
        }
        if !listener.allowed_senders.is_empty() && !listener.allowed_senders.contains(&sender) {
            tracing::warn!(listener = %listener.name, sender = %sender, "sender not allowed on this listener");
            let issue = Issue::error(
                "207",
                format!("sending facility '{sender}' is not allowed to send to this interface"),
            )
            .at("MSH-4");
            return (None, ack(&msh, AckCode::AR, &[issue], charset));
        }
        let Some(route) = self
            .routes
            .iter()
            .find(|r| matches(&r.spec, &listener.name, &msh))
        else {
            let mtype = format!("{}^{}", msh.message_code(), msh.trigger());
            let issue = Issue::error(
                "200",
                format!("no route accepts message type {mtype} from sending facility '{sender}' on this interface"),
            )
            .at("MSH-9");
            return (None, ack(&msh, AckCode::AR, &[issue], charset));
        };
        let answer = self
            .run_route(route, listener, raw, text, msh, charset)
            .await;
        (Some(route.spec.name.as_str()), answer)
    }

    /// A message whose bytes do not fit its character set: answer AR when its
    /// MSH can still be read.
    fn reject_undecodable(&self, raw: &[u8], err: CharsetError) -> Answer {
        let lossy = String::from_utf8_lossy(raw);
        let text = hl7::normalize_segments(&lossy);
        match Msh::read(&text) {
            Ok(msh) => {
                let issue = Issue::error("102", err.to_string()).at("MSH-18");
                ack(&msh, AckCode::AR, &[issue], Charset::Utf8)
            }
            Err(e) => Answer::Close(format!("cannot answer: {e}; also {err}")),
        }
    }

    async fn run_route(
        &self,
        route: &Route,
        listener: &ListenerSpec,
        raw: &[u8],
        mut text: String,
        mut msh: Msh,
        charset: Charset,
    ) -> Answer {
        let id = hl7::new_control_id("m");
        let received_at = hl7::rfc3339_now();
        let mut attributes: Vec<(String, String)> = Vec::new();
        let mut issues: Vec<Issue> = Vec::new();
        let mut route_to: Option<Vec<String>> = None;
        // What each plugin did, kept with the message in the journal.
        let mut stages = String::new();
        let original = msh.clone();
        for (plugin, series) in route.plugins.iter().zip(&route.series) {
            let env = Envelope {
                id: &id,
                route: &route.spec.name,
                source: &listener.name,
                received_at: &received_at,
                hl7: &text,
                attributes: &attributes,
            };
            let started = Instant::now();
            let result = self.runtime.call(plugin, &env).await;
            series.seconds.observe(started.elapsed().as_secs_f64());
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(route = %route.spec.name, message_id = %id, error = %e, "plugin failed");
                    self.metrics
                        .plugin_errors
                        .get_or_create(&vec![l("plugin", plugin.name()), l("kind", e.kind())])
                        .inc();
                    issues.push(Issue::error("207", e.to_string()));
                    return ack(&original, AckCode::AE, &issues, charset);
                }
            };
            merge_attributes(&mut attributes, outcome.attributes);
            issues.extend(outcome.issues);
            let (verdict, counter) = match &outcome.verdict {
                Verdict::Continue(_) => ("continue", &series.continued),
                Verdict::Reject(_) => ("reject", &series.rejected),
                Verdict::RouteTo(_) => ("route_to", &series.routed),
            };
            counter.inc();
            if route.spec.ack_mode == AckMode::Commit {
                let changed = matches!(&outcome.verdict, Verdict::Continue(Some(t)) if *t != text);
                stages.push_str(&format!(
                    "{}\t{verdict}\tissues={}\t{}\n",
                    plugin.name(),
                    issues.len(),
                    if changed { "changed" } else { "unchanged" }
                ));
                if let (true, Verdict::Continue(Some(t))) = (changed, &outcome.verdict) {
                    stages.push_str(t);
                    stages.push('\n');
                }
            }
            match outcome.verdict {
                Verdict::Continue(None) => {}
                Verdict::Continue(Some(new_text)) => {
                    let new_text = hl7::normalize_segments(&new_text).into_owned();
                    match Msh::read(&new_text) {
                        Ok(m) => {
                            msh = m;
                            text = new_text;
                        }
                        Err(e) => {
                            issues.push(Issue::error(
                                "207",
                                format!(
                                    "plugin '{}' returned a message whose MSH cannot be read: {e}",
                                    plugin.name()
                                ),
                            ));
                            return ack(&original, AckCode::AE, &issues, charset);
                        }
                    }
                }
                Verdict::Reject(found) => {
                    issues.extend(found);
                    let code = if issues
                        .iter()
                        .any(|i| matches!(i.code.as_str(), "200" | "201" | "202" | "203"))
                    {
                        AckCode::AR
                    } else {
                        AckCode::AE
                    };
                    if !issues.iter().any(|i| i.severity == Severity::Error) {
                        issues.push(Issue::error(
                            "207",
                            format!("rejected by plugin '{}'", plugin.name()),
                        ));
                    }
                    return ack(&original, code, &issues, charset);
                }
                Verdict::RouteTo(dests) => {
                    if let Some(unknown) =
                        dests.iter().find(|d| !self.destinations.contains_key(*d))
                    {
                        issues.push(Issue::error(
                            "207",
                            format!(
                                "plugin '{}' routed the message to unknown destination '{unknown}'",
                                plugin.name()
                            ),
                        ));
                        return ack(&original, AckCode::AE, &issues, charset);
                    }
                    route_to = Some(dests);
                }
            }
        }
        count_completeness(&self.metrics, original.component(4, 1), &attributes);
        let targets = route_to.unwrap_or_else(|| route.spec.destinations.clone());
        let Some(first) = targets.first() else {
            issues.push(Issue::error(
                "207",
                format!(
                    "route '{}' found no destination for this message",
                    route.spec.name
                ),
            ));
            return ack(&original, AckCode::AE, &issues, charset);
        };
        let payload = Bytes::from(hl7::encode(&text, charset));
        if route.spec.ack_mode == AckMode::Commit {
            return self
                .commit(
                    route, listener, raw, &original, &text, payload, &targets, issues, stages,
                    charset,
                )
                .await;
        }
        // Extra destinations get a copy; the sender is answered with the first one's answer.
        for extra in targets.iter().skip(1) {
            if let Some(dest) = self.destinations.get(extra).cloned() {
                let (payload, metrics) = (payload.clone(), self.metrics.clone());
                tokio::spawn(async move {
                    let result = dest.deliver(payload).await;
                    record_delivery(&metrics, dest.name(), &result);
                });
            }
        }
        let Some(dest) = self.destinations.get(first) else {
            issues.push(Issue::error(
                "207",
                format!("unknown destination '{first}'"),
            ));
            return ack(&original, AckCode::AE, &issues, charset);
        };
        let result = dest.deliver(payload).await;
        record_delivery(&self.metrics, dest.name(), &result);
        match result {
            Ok(answer) => {
                let class = hl7::classify_answer(&String::from_utf8_lossy(&answer));
                tracing::debug!(route = %route.spec.name, message_id = %id, class = class.as_str(), "IIS answered");
                self.metrics
                    .iis_answers
                    .get_or_create(&vec![
                        l("destination", dest.name()),
                        l("sender", original.component(4, 1)),
                        l("class", class.as_str()),
                    ])
                    .inc();
                relay(answer, &msh, &issues)
            }
            Err(e) => {
                tracing::warn!(route = %route.spec.name, message_id = %id, error = %e, "delivery failed");
                issues.push(Issue::error("207", e.to_string()));
                ack(&original, AckCode::AE, &issues, charset)
            }
        }
    }
}

impl Pipeline {
    /// Commit mode: journal the message durably for each destination, then AA.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        route: &Route,
        listener: &ListenerSpec,
        raw: &[u8],
        original: &Msh,
        text: &str,
        payload: Bytes,
        targets: &[String],
        mut issues: Vec<Issue>,
        stages: String,
        charset: Charset,
    ) -> Answer {
        let Some(journal) = &self.journal else {
            issues.push(Issue::error(
                "207",
                "the journal is not available; send the message again later",
            ));
            return ack(original, AckCode::AE, &issues, charset);
        };
        let sender = original.component(4, 1).to_string();
        let order_key = format!("{sender}|{}", hl7::first_value(text, "PID", 3));
        let batch: Vec<NewDelivery> = targets
            .iter()
            .map(|d| NewDelivery {
                listener: listener.name.clone(),
                route: route.spec.name.clone(),
                sender: sender.clone(),
                control_id: original.control_id().to_string(),
                message_type: format!("{}^{}", original.message_code(), original.trigger()),
                order_key: order_key.clone(),
                destination: d.clone(),
                raw: raw.to_vec(),
                payload: payload.to_vec(),
                stages: stages.clone(),
            })
            .collect();
        match journal.insert(batch).await {
            Ok(_) => {
                for d in targets {
                    if let Some(dest) = self.destinations.get(d) {
                        dest.wake().notify_one();
                    }
                }
                self.metrics
                    .journaled
                    .get_or_create(&vec![l("route", &route.spec.name)])
                    .inc();
                ack(original, AckCode::AA, &issues, charset)
            }
            Err(e) => {
                tracing::error!(route = %route.spec.name, error = %e, "could not journal a message; it was not acknowledged");
                issues.push(Issue::error(
                    "207",
                    "the message could not be stored; send it again",
                ));
                ack(original, AckCode::AE, &issues, charset)
            }
        }
    }
}

fn record_delivery(
    metrics: &Metrics,
    dest: &str,
    result: &Result<Bytes, crate::delivery::DeliveryError>,
) {
    let outcome = match result {
        Ok(_) => "answered",
        Err(e) => e.kind(),
    };
    metrics
        .deliveries
        .get_or_create(&vec![l("destination", dest), l("result", outcome)])
        .inc();
}

/// The IIS's answer goes back as it came, unless plugin issues must be merged in.
fn relay(answer: Bytes, sent: &Msh, issues: &[Issue]) -> Answer {
    let extra: Vec<Issue> = issues
        .iter()
        .filter(|i| i.severity != Severity::Error)
        .cloned()
        .collect();
    if let Some((_, acked)) = hl7::read_msa(&String::from_utf8_lossy(&answer))
        && acked != sent.control_id()
    {
        tracing::warn!(expected = %sent.control_id(), got = %acked, "IIS answer's MSA-2 does not match the message sent");
    }
    if extra.is_empty() {
        return Answer::Reply(answer);
    }
    match hl7::decode(&answer) {
        Ok((text, charset)) => {
            let merged = hl7::merge_issues_into_answer(&text, &extra);
            Answer::Reply(Bytes::from(hl7::encode(&merged, charset)))
        }
        Err(_) => Answer::Reply(answer),
    }
}

fn ack(msh: &Msh, code: AckCode, issues: &[Issue], charset: Charset) -> Answer {
    let text = hl7::build_ack(msh, code, issues, &hl7::new_control_id("IZH"));
    Answer::Reply(Bytes::from(hl7::encode(&text, charset)))
}

/// Values a plugin may report for `completeness.<field>` attributes; anything
/// else is ignored, so a plugin cannot flood the metrics or put data in them.
const COMPLETENESS: [&str; 6] = [
    "present", "mapped", "enriched", "missing", "unknown", "invalid",
];

/// Counts `completeness.race`-style attributes per sending facility.
fn count_completeness(metrics: &Metrics, sender: &str, attributes: &[(String, String)]) {
    for (key, value) in attributes {
        let Some(field) = key.strip_prefix("completeness.") else {
            continue;
        };
        if field.len() <= 32
            && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && COMPLETENESS.contains(&value.as_str())
        {
            metrics
                .completeness
                .get_or_create(&vec![
                    l("sender", sender),
                    l("field", field),
                    l("status", value),
                ])
                .inc();
        }
    }
}

/// The MSH fields the engine itself needs to route and answer a message.
fn header_problem(msh: &Msh) -> Option<Issue> {
    if msh.message_code().is_empty() {
        return Some(
            Issue::error("101", "MSH-9 (message type, e.g. VXU^V04^VXU_V04) is empty").at("MSH-9"),
        );
    }
    if msh.control_id().is_empty() {
        return Some(
            Issue::error(
                "101",
                "MSH-10 (message control id) is empty; each message needs a unique id so its answer can be matched",
            )
            .at("MSH-10"),
        );
    }
    None
}

fn merge_attributes(into: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        match into.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

fn matches(route: &RouteSpec, listener: &str, msh: &Msh) -> bool {
    (route.listeners.is_empty() || route.listeners.contains(listener))
        && (route.message_types.is_empty()
            || route.message_types.iter().any(|(code, trigger)| {
                code.eq_ignore_ascii_case(msh.message_code())
                    && trigger
                        .as_ref()
                        .is_none_or(|t| t.eq_ignore_ascii_case(msh.trigger()))
            }))
        && (route.senders.is_empty() || route.senders.contains(msh.component(4, 1)))
        && (route.receivers.is_empty() || route.receivers.contains(msh.component(6, 1)))
}
