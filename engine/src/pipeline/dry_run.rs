//! A message through a route without sending it anywhere: what the sender
//! would be told and where it would go. `izhub validate` reports on batches
//! of these.

use super::route::{Chain, Passed};
use super::{Pipeline, frame_problem, matches_message};
use crate::hl7::{self, AckCode, Issue, Msh};

/// What would happen to one message.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// MSH-10, when MSH could be read.
    pub control_id: String,
    /// MSH-4.1, when MSH could be read.
    pub sender: String,
    /// The route that took it.
    pub route: Option<String>,
    /// Delivered, blocked or unanswerable.
    pub outcome: DryOutcome,
    /// Every issue the sender would be sent (errors and warnings).
    pub issues: Vec<Issue>,
}

/// The fate of a message in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryOutcome {
    /// It would be delivered to these destinations.
    Delivered(Vec<String>),
    /// It would be answered with this code and never delivered.
    Blocked(AckCode),
    /// Not even an answer could be built (no readable MSH): the connection
    /// would be closed.
    Unanswerable(String),
}

impl DryRun {
    fn unanswerable(why: String) -> Self {
        DryRun {
            control_id: String::new(),
            sender: String::new(),
            route: None,
            outcome: DryOutcome::Unanswerable(why),
            issues: Vec::new(),
        }
    }
}

impl Pipeline {
    /// Runs `raw` through the route named `route` (or the first route whose
    /// message types, senders and receivers match, as on any listener) and
    /// reports what would happen, delivering nothing and journaling nothing.
    pub async fn dry_run(&self, raw: &[u8], route: Option<&str>) -> DryRun {
        let (text, _charset) = match hl7::decode(raw) {
            Ok(ok) => ok,
            Err(e) => {
                let lossy = String::from_utf8_lossy(raw);
                return match Msh::read(&hl7::normalize_segments(&lossy)) {
                    Ok(msh) => blocked(
                        &msh,
                        None,
                        AckCode::AR,
                        vec![Issue::error("102").text(e.to_string()).at("MSH-18")],
                    ),
                    Err(read) => DryRun::unanswerable(format!("{read}; also {e}")),
                };
            }
        };
        let text = hl7::normalize_segments(&text).into_owned();
        let msh = match Msh::read(&text) {
            Ok(m) => m,
            Err(e) => return DryRun::unanswerable(e.to_string()),
        };
        if let Some(issue) = frame_problem(&msh, &text) {
            return blocked(&msh, None, AckCode::AR, vec![issue]);
        }
        let chosen = self.routes.iter().find(|r| match route {
            Some(name) => r.spec.name == name,
            None => matches_message(&r.spec, &msh),
        });
        let Some(chosen) = chosen else {
            let mtype = format!("{}^{}", msh.message_code(), msh.trigger());
            let issue = Issue::error("200")
                .text(format!(
                    "no route accepts message type {mtype} from sending facility '{}'",
                    msh.component(4, 1)
                ))
                .at("MSH-9");
            return blocked(&msh, None, AckCode::AR, vec![issue]);
        };
        let name = Some(chosen.spec.name.clone());
        let id = hl7::new_control_id("v");
        let received_at = hl7::rfc3339_now();
        match self
            .run_plugins(chosen, "validate", &id, &received_at, &text, None)
            .await
        {
            Chain::Stopped { code, issues, .. } => blocked(&msh, name, code, issues),
            Chain::Passed(Passed {
                mut issues,
                route_to,
                ..
            }) => {
                let targets = route_to.unwrap_or_else(|| chosen.spec.destinations.clone());
                if targets.is_empty() {
                    issues.push(Issue::error("207").text(format!(
                        "route '{}' found no destination for this message",
                        chosen.spec.name
                    )));
                    return blocked(&msh, name, AckCode::AE, issues);
                }
                DryRun {
                    control_id: msh.control_id().to_string(),
                    sender: msh.component(4, 1).to_string(),
                    route: name,
                    outcome: DryOutcome::Delivered(targets),
                    issues,
                }
            }
        }
    }

    /// The names of the configured routes.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.spec.name.as_str())
    }
}

fn blocked(msh: &Msh, route: Option<String>, code: AckCode, issues: Vec<Issue>) -> DryRun {
    DryRun {
        control_id: msh.control_id().to_string(),
        sender: msh.component(4, 1).to_string(),
        route,
        outcome: DryOutcome::Blocked(code),
        issues,
    }
}
