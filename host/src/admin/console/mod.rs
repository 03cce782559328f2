//! The operator console's JSON API and pages (see `docs/console-api.md`),
//! one file per resource: the dashboard, live events, the message browser,
//! actions, data quality, code sets, the audit trail and the cluster. Every
//! handler takes the role it needs as an extractor ([`Viewer`],
//! [`Operator`], [`Admin`]: 401 without a user, 403 without the role) and
//! shows only the routes and destinations the user may see. PHI is masked
//! unless an operator unmasks one message, which is audited first.

// Helpers answer `Result<_, Response>`: the error is the HTTP answer itself,
// built once on a path that ends the request.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AdminState;
use super::auth::{Admin, CurrentUser, Operator, Refusal, Viewer};
use super::mask::{mask_hl7, mask_id};
use crate::config::Role;
use crate::flow::Flow;
use crate::flow::board::Dashboard;
use crate::flow::log::{Full, Matching, Meta, Page, Search};
use crate::hl7::days_from_civil;
use crate::store::now_ms;

mod actions;
mod audit;
mod cluster;
mod codesets;
mod dashboard;
mod live;
mod messages;
mod quality;

use actions::*;
use audit::*;
use cluster::*;
use codesets::*;
use dashboard::*;
use live::*;
pub use messages::parse_time;
use messages::*;
use quality::*;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// Live-event streams open at once, at most.
const MAX_STREAMS: usize = 64;
/// Messages one bulk reprocess may take.
const MAX_BULK: usize = 10_000;

static STREAMS: AtomicUsize = AtomicUsize::new(0);

type Shared = Arc<AdminState>;

/// The console's routes, to merge into the admin router.
pub fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/console/") }),
        )
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(asset))
        .route("/api/dashboard", get(dashboard))
        .route("/api/dashboard/history", get(history))
        .route("/api/cluster", get(cluster))
        .route("/api/events", get(events))
        .route("/api/messages", get(messages))
        .route("/api/messages/search", post(messages_post))
        .route("/api/messages/{id}", get(message))
        .route("/api/messages/{id}/reprocess", post(reprocess_one))
        .route("/api/messages/{id}/retry", post(retry))
        .route("/api/messages/{id}/resend", post(resend))
        .route("/api/reprocess", post(reprocess_many))
        .route(
            "/api/destinations/{name}/{action}",
            post(destination_action),
        )
        .route("/api/errors/resolve", post(resolve))
        .route("/api/quality", get(quality))
        .route("/api/quality/report", get(quality_report))
        .route("/api/codesets", get(codesets))
        .route("/api/audit", get(audit_trail))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = crate::admin::auth::ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

fn refused(r: Refusal) -> Response {
    error(r.status(), r.message())
}

fn flow_of(state: &AdminState) -> Result<&Arc<Flow>, Response> {
    state
        .flow
        .as_ref()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "the console is not enabled"))
}

fn log_of(state: &AdminState) -> Result<&Arc<crate::flow::log::MessageLog>, Response> {
    flow_of(state)?.log.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "messages are not recorded ([console] record = false)",
        )
    })
}

/// A handler argument taken from the engine's state by `$part`, which
/// answers (404) before the handler runs when that part is switched off.
macro_rules! state_part {
    ($(#[$doc:meta])* $name:ident($ty:ty) = $part:ident) => {
        $(#[$doc])*
        struct $name($ty);

        impl axum::extract::FromRequestParts<Shared> for $name {
            type Rejection = Response;

            async fn from_request_parts(
                _: &mut axum::http::request::Parts,
                state: &Shared,
            ) -> Result<Self, Response> {
                $part(state).cloned().map($name)
            }
        }
    };
}

state_part!(
    /// The message log (off without the console or with `record = false`).
    Log(Arc<crate::flow::log::MessageLog>) = log_of
);
state_part!(
    /// The console's view of the flow (off without the console).
    Console(Arc<Flow>) = flow_of
);

/// Runs blocking log work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request did not finish: {e}"),
        )
    })
}

async fn index() -> Response {
    asset_named("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    if path.is_empty() {
        return asset_named("index.html");
    }
    asset_named(&path)
}

fn asset_named(name: &str) -> Response {
    match assets::ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, bytes)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such console file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_from_a_query_string_or_json() {
        let uri: axum::http::Uri = "/api/messages?before=42&limit=5".parse().unwrap();
        let Query(q) = Query::<SearchParams>::try_from_uri(&uri).unwrap();
        assert_eq!(q.before.as_ref().and_then(Cursor::id), Some(42));
        let j: SearchParams = serde_json::from_str(r#"{"before":42}"#).unwrap();
        assert_eq!(j.before, Some(Cursor::Id(42)));
        let c: SearchParams = serde_json::from_str(r#"{"before":"3:10,4:done"}"#).unwrap();
        assert_eq!(c.before.as_ref().and_then(Cursor::id), None);
        let parsed = parse_cursor("3:10,4:done").unwrap();
        assert_eq!(parsed.get(&3), Some(&Some(10)));
        assert_eq!(parsed.get(&4), Some(&None));
        assert_eq!(cursor_text(&parsed), "3:10,4:done");
        assert!(parse_cursor("3:x").is_err());
        assert!(parse_cursor("nope").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("2026-11-29T10:00:00Z"), Some(1_795_946_400_000));
        assert_eq!(
            parse_time("2026-11-29T11:00:00+01:00"),
            Some(1_795_946_400_000)
        );
        assert_eq!(
            parse_time("2026-11-29T10:00:00.250Z"),
            Some(1_795_946_400_250)
        );
        assert_eq!(parse_time("2026-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(rfc3339(1_795_946_400_250), "2026-11-29T10:00:00.250Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn detection_examples_are_masked_and_cut() {
        let meta = Meta {
            id: 9,
            time: 0,
            listener: "ehr".into(),
            sender: "CLINIC".into(),
            message_type: "VXU^V04".into(),
            control_id: "C9".into(),
            patient_id: "P1".into(),
            route: "vxu".into(),
            destination: "mi".into(),
            status: "rejected_by_izhub".into(),
            ack: "AE".into(),
            detections: vec!["patient-birth-date-invalid".into()],
            latency_ms: 1.0,
            resolved: false,
        };
        let full = Full {
            meta,
            received: b"MSH|^~\\&|EHR|CLINIC|||20260101||VXU^V04|C9|P|2.5.1\rPID|1||P123^^^MRN^MR||DOE^JANE||2026130\rRXA|0|1|20260101|20260101|08^HepB^CVX|999\r".to_vec(),
            stages: String::new(),
            issues: String::new(),
            answer: b"MSH|^~\\&|IZHUB\rMSA|AE|C9\rERR||PID^1^7|102^Data type error^HL70357|E||||The birth date is not a valid date. Value sent: '2026130'. [patient-birth-date-invalid]\r".to_vec(),
            attempts: Vec::new(),
            reprocess_of: None,
            reprocessed_as: Vec::new(),
        };
        let ex = serde_json::to_value(example_of(&full, "patient-birth-date-invalid")).unwrap();
        assert_eq!(ex["location"], "PID-7");
        assert_eq!(
            ex["text"],
            "The birth date is not a valid date. [patient-birth-date-invalid]"
        );
        let segment = ex["segment"].as_str().unwrap_or("");
        assert!(segment.starts_with("PID|"), "{segment}");
        for phi in ["DOE", "JANE", "2026130", "P123"] {
            assert!(!segment.contains(phi), "{phi} in {segment}");
        }
        // A detection the answer does not name has no location.
        let other = serde_json::to_value(example_of(&full, "other")).unwrap();
        assert_eq!(other["segment"], "");
    }

    /// Locations in one notation, the validator's; escapes decoded.
    #[test]
    fn answer_locations_and_escapes_read_as_people_write_them() {
        let d = serde_json::to_value(decode_answer(
            "MSH|^~\\&|A\rMSA|AE|C1\rERR||RXA^2^5^1^1|103^Table value not found^HL70357|E||||Z22\\S\\CDCPHINVS is not known\rERR||PID^1^11^1^5|102|W\rERR||OBX^3^5^2|102|W\r",
        ))
        .unwrap();
        assert_eq!(d["err"][0]["location"], "RXA[2]-5.1");
        assert_eq!(d["err"][0]["text"], "Z22^CDCPHINVS is not known");
        assert_eq!(d["err"][1]["location"], "PID-11.5");
        assert_eq!(d["err"][2]["location"], "OBX[3]-5[2]");
        assert!(decode_answer("not HL7").err.is_empty());
    }

    #[test]
    fn answers_decoded() {
        let d = serde_json::to_value(decode_answer(
            "MSH|^~\\&|A\rMSA|AE|C1|bad\rERR||PID^1^7|101^Required field missing^HL70357|E|7|||Birth date. [patient-birth-date-missing]\r",
        ))
        .unwrap();
        assert_eq!(d["msa"]["code"], "AE");
        assert_eq!(d["err"][0]["location"], "PID-7");
        assert_eq!(d["err"][0]["code"], "101");
        assert_eq!(d["err"][0]["severity"], "E");
        assert!(
            d["err"][0]["text"]
                .as_str()
                .unwrap_or("")
                .ends_with("[patient-birth-date-missing]")
        );
    }
}
