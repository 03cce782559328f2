//! Commit mode: the message is journaled durably for each destination
//! before the sender gets AA; the destinations' queues deliver it.

use super::reply::ack;
use super::route::{Outbound, Route};
use super::{Answer, Pipeline};
use crate::config::ListenerSpec;
use crate::hl7::{self, AckCode, Inbound, Issue};
use crate::metrics::l;
use crate::store::NewDelivery;

impl Pipeline {
    /// Commit mode: journal the message durably for each destination, then AA.
    pub(super) async fn commit(
        &self,
        route: &Route,
        listener: &ListenerSpec,
        inbound: &Inbound<'_>,
        outbound: Outbound<'_>,
        trace: &mut super::trace::Trace,
    ) -> Answer {
        let (original, charset) = (&inbound.msh, inbound.charset);
        let Outbound {
            text,
            payload,
            targets,
            mut issues,
            stages,
        } = outbound;
        let Some(journal) = &self.journal else {
            trace.errored = true;
            issues.push(
                Issue::error("207")
                    .text("the journal is not available; send the message again later"),
            );
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
                raw: inbound.raw.to_vec(),
                payload: payload.to_vec(),
                stages: stages.clone(),
                dedupe: trace.reprocess_of.is_none(),
            })
            .collect();
        match journal.insert(batch).await {
            Ok(ids) => {
                trace.queued = targets.len();
                trace.journal_ids = ids;
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
                trace.errored = true;
                self.metrics
                    .journal_errors
                    .get_or_create(&vec![l("op", "insert")])
                    .inc();
                tracing::error!(route = %route.spec.name, error = %e, "could not journal a message; it was not acknowledged");
                issues.push(
                    Issue::error("207").text("the message could not be stored; send it again"),
                );
                ack(original, AckCode::AE, &issues, charset)
            }
        }
    }
}
