//! One route's run: each plugin in order on a fresh instance, its verdict
//! applied, then delivery (relay mode) or the journal (commit mode).

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::observe::{AttemptInfo, Stage};
use super::reply::{ack, relay};
use super::trace::{Trace, count_completeness, note_completeness};
use super::untrusted::checked_replacement;
use super::{Answer, Pipeline};
use crate::config::{AckMode, ListenerSpec, RouteSpec};
use crate::hl7::{self, AckCode, Inbound, Issue, Severity};
use crate::metrics::{Metrics, l};
use crate::plugin::{Envelope, LoadedPlugin, Verdict};

/// A route with its plugins loaded.
pub(super) struct Route {
    pub(super) spec: RouteSpec,
    pub(super) plugins: Vec<LoadedPlugin>,
    /// Each plugin's metric series, in plugin order.
    pub(super) series: Vec<PluginSeries>,
}

/// One plugin's metric series, looked up once when the route is built
/// rather than by label for every message.
pub(super) struct PluginSeries {
    seconds: Histogram,
    /// Messages this plugin (at this version) handled.
    handled: Counter,
    continued: Counter,
    rejected: Counter,
    routed: Counter,
}

impl PluginSeries {
    pub(super) fn new(metrics: &Metrics, route: &str, loaded: &LoadedPlugin) -> Self {
        let plugin = loaded.name();
        let verdict = |v: &str| {
            metrics
                .plugin_verdicts
                .get_or_create(&vec![l("plugin", plugin), l("verdict", v)])
                .clone()
        };
        PluginSeries {
            handled: metrics
                .plugin_messages
                .get_or_create(&vec![
                    l("route", route),
                    l("plugin", plugin),
                    l("version", loaded.provenance().version()),
                ])
                .clone(),
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

/// What a route's plugins made of a message.
pub(super) enum Chain<'t> {
    /// Every plugin let it through.
    Passed(Passed<'t>),
    /// A plugin stopped it (or failed, then `errored`): the answer's code
    /// and every issue.
    Stopped {
        code: AckCode,
        issues: Vec<Issue>,
        errored: bool,
    },
}

/// What commit mode journals: the message as the plugins left it, for its
/// destinations.
pub(super) struct Outbound<'a> {
    pub(super) text: &'a str,
    pub(super) payload: Bytes,
    pub(super) targets: &'a [String],
    pub(super) issues: Vec<Issue>,
    pub(super) stages: String,
}

/// A message every plugin of its route let through.
pub(super) struct Passed<'t> {
    /// The text as the last plugin left it (the received text when none
    /// changed it).
    pub(super) text: Cow<'t, str>,
    /// Warnings and notes the plugins reported.
    pub(super) issues: Vec<Issue>,
    /// Attributes the plugins set.
    pub(super) attributes: Vec<(String, String)>,
    /// Where a plugin routed it, if one did.
    pub(super) route_to: Option<Vec<String>>,
    /// What each plugin did, for the journal (commit mode only).
    pub(super) stages: String,
}

/// What one plugin's verdict means for the run.
enum Step {
    /// Go on to the next plugin.
    Next,
    /// Stop here with this result.
    Stop(Chain<'static>),
}

/// The code of a refusal: AR (not processable at all) when an error says
/// the message type, event, processing id or version is not supported (a
/// warning with such a code does not), else AE.
fn refusal_code(issues: &[Issue]) -> AckCode {
    if issues.iter().any(|i| {
        i.severity == Severity::Error && matches!(i.code.as_str(), "200" | "201" | "202" | "203")
    }) {
        AckCode::AR
    } else {
        AckCode::AE
    }
}

/// The verdict's name, as metrics and the trace spell it.
fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Continue(_) => "continue",
        Verdict::Reject(_) => "reject",
        Verdict::RouteTo(_) => "route_to",
    }
}

/// Whether a verdict replaces the text with a different one.
fn changes(verdict: &Verdict, text: &str) -> bool {
    matches!(verdict, Verdict::Continue(Some(t)) if t.as_str() != text)
}

/// The trace's record of one plugin's step.
fn stage_of(plugin: &LoadedPlugin, outcome: &crate::plugin::Outcome, text: &str) -> Stage {
    let changed = changes(&outcome.verdict, text);
    Stage {
        plugin: plugin.label().to_string(),
        verdict: verdict_name(&outcome.verdict),
        issues: outcome.issues.len()
            + match &outcome.verdict {
                Verdict::Reject(found) => found.len(),
                _ => 0,
            },
        changed,
        text: match &outcome.verdict {
            Verdict::Continue(Some(t)) if changed => Some(t.clone()),
            _ => None,
        },
    }
}

/// A stop for a plugin that failed or misbehaved: AE, with the issues so far.
fn errored(issues: Vec<Issue>) -> Step {
    Step::Stop(Chain::Stopped {
        code: AckCode::AE,
        issues,
        errored: true,
    })
}

impl Pipeline {
    /// Runs `route`'s plugins in order on `text`, each on a fresh instance,
    /// applying each verdict: what the engine does before delivery, and all
    /// `izhub validate` does.
    pub(super) async fn run_plugins<'t>(
        &self,
        route: &Route,
        source: &str,
        id: &str,
        received_at: &str,
        text: &'t str,
        mut trace: Option<&mut Vec<Stage>>,
    ) -> Chain<'t> {
        let mut text = Cow::Borrowed(text);
        let mut attributes: Vec<(String, String)> = Vec::new();
        let mut issues: Vec<Issue> = Vec::new();
        let mut route_to: Option<Vec<String>> = None;
        // What each plugin did, kept with the message in the journal.
        let mut stages = String::new();
        // Once a plugin refuses the message, the later plugins still look at
        // it so that the answer names every problem at once; what they would
        // change or route is not kept.
        let mut refused = false;
        // Where the fields and segments are, found once for the chain (and
        // again only after a plugin changes the text), for the plugins that
        // take it instead of scanning the text themselves.
        let mut found_layout: Option<Vec<u32>> = None;
        for (plugin, series) in route.plugins.iter().zip(&route.series) {
            let layout = match &mut found_layout {
                Some(found) => found.as_slice(),
                found @ None if plugin.takes_layout() => {
                    found.insert(hl7::layout(&text).unwrap_or_default())
                }
                None => &[],
            };
            let env = Envelope {
                id,
                route: &route.spec.name,
                source,
                received_at,
                hl7: &text,
                attributes: &attributes,
                layout,
            };
            let started = Instant::now();
            let result = self.runtime.call(plugin, &env).await;
            series.seconds.observe(started.elapsed().as_secs_f64());
            series.handled.inc();
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(route = %route.spec.name, message_id = %id, error = %e, "plugin failed");
                    self.plugin_error(plugin, e.kind());
                    issues.push(Issue::error("207").text(e.to_string()));
                    if let Some(stages) = trace.as_deref_mut() {
                        stages.push(Stage {
                            plugin: plugin.label().to_string(),
                            verdict: "failed",
                            issues: 1,
                            changed: false,
                            text: None,
                        });
                    }
                    if refused {
                        break;
                    }
                    return Chain::Stopped {
                        code: AckCode::AE,
                        issues,
                        errored: true,
                    };
                }
            };
            if let Some(stages) = trace.as_deref_mut() {
                stages.push(stage_of(plugin, &outcome, &text));
            }
            issues.extend(outcome.issues);
            match &outcome.verdict {
                Verdict::Continue(_) => &series.continued,
                Verdict::Reject(_) => &series.rejected,
                Verdict::RouteTo(_) => &series.routed,
            }
            .inc();
            if refused {
                if let Verdict::Reject(found) = outcome.verdict {
                    issues.extend(found);
                }
                continue;
            }
            merge_attributes(&mut attributes, outcome.attributes);
            if route.spec.ack_mode == AckMode::Commit {
                journal_stage(&mut stages, plugin, &outcome.verdict, &text, issues.len());
            }
            // A new text (when `apply` takes it) has a layout of its own.
            if matches!(outcome.verdict, Verdict::Continue(Some(_))) {
                found_layout = None;
            }
            let step = self.apply(
                route,
                id,
                plugin,
                outcome.verdict,
                &mut text,
                &mut issues,
                &mut route_to,
            );
            match step {
                Step::Next => {}
                Step::Stop(Chain::Stopped {
                    issues: found,
                    errored: false,
                    ..
                }) => {
                    refused = true;
                    issues = found;
                }
                Step::Stop(stopped) => return stopped,
            }
        }
        if refused {
            return Chain::Stopped {
                code: refusal_code(&issues),
                issues,
                errored: false,
            };
        }
        Chain::Passed(Passed {
            text,
            issues,
            attributes,
            route_to,
            stages,
        })
    }

    /// Counts a plugin's failure of `kind`.
    fn plugin_error(&self, plugin: &LoadedPlugin, kind: &str) {
        self.metrics
            .plugin_errors
            .get_or_create(&vec![l("plugin", plugin.name()), l("kind", kind)])
            .inc();
    }

    /// Applies one plugin's verdict: a checked replacement text, a reject's
    /// answer code, or a route the route grants.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        route: &Route,
        id: &str,
        plugin: &LoadedPlugin,
        verdict: Verdict,
        text: &mut Cow<'_, str>,
        issues: &mut Vec<Issue>,
        route_to: &mut Option<Vec<String>>,
    ) -> Step {
        match verdict {
            Verdict::Continue(None) => Step::Next,
            Verdict::Continue(Some(new_text)) => {
                let new_text = hl7::normalize_segments(&new_text).into_owned();
                // MSH-10 may change (some HIEs renumber); the sender is
                // still answered with its own, from `original`.
                match checked_replacement(&new_text, text) {
                    Ok(_) => {
                        *text = Cow::Owned(new_text);
                        Step::Next
                    }
                    Err(why) => {
                        tracing::warn!(route = %route.spec.name, message_id = %id, plugin = plugin.name(), reason = %why, "plugin returned a message that cannot be sent on");
                        self.plugin_error(plugin, "bad_output");
                        issues.push(Issue::error("207").text(format!(
                            "plugin '{}' returned a message that cannot be sent on: {why}",
                            plugin.name()
                        )));
                        errored(std::mem::take(issues))
                    }
                }
            }
            Verdict::Reject(found) => {
                issues.extend(found);
                if !issues.iter().any(|i| i.severity == Severity::Error) {
                    issues.push(
                        Issue::error("207").text(format!("rejected by plugin '{}'", plugin.name())),
                    );
                }
                Step::Stop(Chain::Stopped {
                    code: refusal_code(issues),
                    issues: std::mem::take(issues),
                    errored: false,
                })
            }
            Verdict::RouteTo(dests) => {
                if let Some(refused) = dests.iter().find(|d| !route.spec.route_to.contains(*d)) {
                    tracing::warn!(route = %route.spec.name, message_id = %id, plugin = plugin.name(), "plugin routed a message to a destination its route does not grant");
                    let granted: Vec<&str> =
                        route.spec.route_to.iter().map(String::as_str).collect();
                    issues.push(Issue::error("207").text(format!(
                        "plugin '{}' routed the message to '{refused}', which route '{}' does not grant (route_to: {})",
                        plugin.name(),
                        route.spec.name,
                        if granted.is_empty() { "none".to_string() } else { granted.join(", ") }
                    )));
                    return errored(std::mem::take(issues));
                }
                *route_to = Some(dests);
                Step::Next
            }
        }
    }

    pub(super) async fn run_route(
        &self,
        route: &Route,
        listener: &ListenerSpec,
        inbound: Inbound<'_>,
        trace: &mut Trace,
    ) -> Answer {
        let id = hl7::new_control_id("m");
        let (original, charset) = (&inbound.msh, inbound.charset);
        trace.route = route.spec.name.clone();
        let keep = trace.keep;
        let Passed {
            text,
            mut issues,
            attributes,
            route_to,
            stages,
        } = match self
            .run_plugins(
                route,
                &listener.name,
                &id,
                &inbound.received_at,
                &inbound.text,
                keep.then_some(&mut trace.stages),
            )
            .await
        {
            Chain::Passed(passed) => passed,
            Chain::Stopped {
                code,
                issues,
                errored,
            } => {
                trace.errored = errored;
                return ack(original, code, &issues, charset);
            }
        };
        note_completeness(trace, &attributes);
        count_completeness(
            &self.metrics,
            self.sender_label(original.component(4, 1)),
            &attributes,
        );
        let targets = route_to.unwrap_or_else(|| route.spec.destinations.clone());
        trace.destinations = targets.clone();
        let Some(first) = targets.first() else {
            issues.push(Issue::error("207").text(format!(
                "route '{}' found no destination for this message",
                route.spec.name
            )));
            return ack(original, AckCode::AE, &issues, charset);
        };
        let payload = Bytes::from(hl7::encode(&text, charset));
        if route.spec.ack_mode == AckMode::Commit {
            let outbound = Outbound {
                text: &text,
                payload,
                targets: &targets,
                issues,
                stages,
            };
            return self
                .commit(route, listener, &inbound, outbound, trace)
                .await;
        }
        // What the IIS's answer must name: the message as delivered.
        let question = hl7::Question::of(&text);
        // Extra destinations get a copy; the sender is answered with the first one's answer.
        for extra in targets.iter().skip(1) {
            if let Some(dest) = self.destinations.get(extra) {
                dest.send_copy(payload.clone(), question.clone(), self.metrics.clone());
            }
        }
        let Some(dest) = self.destinations.get(first) else {
            issues.push(Issue::error("207").text(format!("unknown destination '{first}'")));
            return ack(original, AckCode::AE, &issues, charset);
        };
        // A bulk query waits for its place at the destination's gate.
        let _pass = match &trace.bulk {
            Some(gates) => match gates.pass(dest.name()).await {
                Ok(pass) => Some(pass),
                Err(not_now) => {
                    issues.push(Issue::error("207").text(not_now.to_string()));
                    trace.bulk_wait = Some(not_now);
                    return ack(original, AckCode::AE, &issues, charset);
                }
            },
            None => None,
        };
        let result = dest.deliver(payload, &question).await;
        crate::delivery::record(&self.metrics, dest.name(), &result);
        self.answer_sender(route, &id, &inbound, dest.name(), result, issues, trace)
    }

    /// The sender's answer from the IIS's answer (relayed with the plugins'
    /// issues) or from a failed delivery (AE 207); the trace notes which.
    #[allow(clippy::too_many_arguments)]
    fn answer_sender(
        &self,
        route: &Route,
        id: &str,
        inbound: &Inbound<'_>,
        destination: &str,
        result: Result<hl7::IisAnswer, crate::delivery::DeliveryError>,
        mut issues: Vec<Issue>,
        trace: &mut Trace,
    ) -> Answer {
        let (original, charset) = (&inbound.msh, inbound.charset);
        match result {
            Ok(answer) => {
                let class = answer.class();
                trace.by_iis = true;
                trace.attempt = Some(AttemptInfo {
                    at: crate::store::now_ms(),
                    destination: destination.to_string(),
                    result: "delivered".into(),
                    class: class.as_str().into(),
                    answer: trace.keep.then(|| answer.bytes().clone()),
                });
                tracing::debug!(route = %route.spec.name, message_id = %id, class = class.as_str(), "IIS answered");
                self.metrics
                    .iis_answers
                    .get_or_create(&vec![
                        l("destination", destination),
                        l("sender", self.sender_label(original.component(4, 1))),
                        l("class", class.as_str()),
                    ])
                    .inc();
                let extra =
                    answer.ack().is_some() && issues.iter().any(|i| i.severity != Severity::Error);
                trace.relayed = Some(super::trace::Relayed {
                    code: answer.ack(),
                    has_err: !answer.errors().is_empty() || extra,
                });
                relay(&answer, original, &issues)
            }
            Err(e) => {
                trace.errored = true;
                trace.attempt = Some(AttemptInfo {
                    at: crate::store::now_ms(),
                    destination: destination.to_string(),
                    result: "failed".into(),
                    class: e.kind().into(),
                    answer: None,
                });
                tracing::warn!(route = %route.spec.name, message_id = %id, error = %e, "delivery failed");
                issues.push(Issue::error("207").text(e.to_string()));
                ack(original, AckCode::AE, &issues, charset)
            }
        }
    }
}

/// Appends one plugin's step to the journal's stage record (commit mode).
fn journal_stage(
    stages: &mut String,
    plugin: &LoadedPlugin,
    verdict: &Verdict,
    text: &str,
    issues: usize,
) {
    let changed = changes(verdict, text);
    stages.push_str(&format!(
        "{}\t{}\tissues={issues}\t{}\n",
        plugin.label(),
        verdict_name(verdict),
        if changed { "changed" } else { "unchanged" }
    ));
    if let (true, Verdict::Continue(Some(t))) = (changed, verdict) {
        stages.push_str(t);
        stages.push('\n');
    }
}

fn merge_attributes(into: &mut Vec<(String, String)>, new: Vec<(String, String)>) {
    for (k, v) in new {
        match into.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}
