//! The operator console's JSON API and pages (see `docs/console-api.md`):
//! the dashboard, live events, the message browser, actions, data quality,
//! code sets and the audit trail. Every handler takes the [`CurrentUser`]
//! (401 without one), checks the role, and shows only the routes and
//! destinations the user may see. PHI is masked unless an operator unmasks
//! one message, which is audited.

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
use serde_json::{Value, json};

use super::AdminState;
use super::auth::{CurrentUser, Refusal};
use super::mask::{mask_hl7, mask_id};
use crate::config::Role;
use crate::flow::Flow;
use crate::flow::board::Dashboard;
use crate::flow::log::{Full, Meta, Search};
use crate::hl7::days_from_civil;
use crate::store::now_ms;

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
    (status, Json(json!({ "error": message.into() }))).into_response()
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

// ---- pages ----

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

// ---- dashboard and live events ----

async fn dashboard(State(state): State<Shared>, user: CurrentUser) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let flow = match flow_of(&state) {
        Ok(f) => f.clone(),
        Err(r) => return r,
    };
    Json(board_for(&state, &flow, &user).await).into_response()
}

/// How long the dashboard waits for another node's counts.
const DASHBOARD_WAIT: Duration = Duration::from_secs(1);

/// The dashboard `user` may see. In a cluster (asked by a browser, not by
/// another node) every live node's counts are added up, and what is queued
/// is read from the shared queue.
async fn board_for(state: &AdminState, flow: &Flow, user: &CurrentUser) -> Dashboard {
    let mut board = flow
        .board
        .dashboard(now_ms(), &|r| user.may_see_route(r), &|d| {
            user.may_see_destination(d)
        });
    let Some(peers) = state.peers.clone().filter(|_| !user.by_peer()) else {
        return board;
    };
    let mut nodes = 1u32;
    let mut unreachable = Vec::new();
    // A dashboard does not wait for a node that is slow to answer.
    for (node, answer) in peers
        .call_all(
            DASHBOARD_WAIT,
            axum::http::Method::GET,
            "/api/dashboard",
            &user.name,
            None,
        )
        .await
    {
        match answer.map(|(status, body)| (status, serde_json::from_slice::<Dashboard>(&body))) {
            Ok((status, Ok(other))) if status.is_success() => {
                board.add(other);
                nodes += 1;
            }
            Ok(_) | Err(_) => unreachable.push(node.name),
        }
    }
    if let Some(journal) = &state.journal {
        match journal.queued_by_destination().await {
            Ok(rows) => {
                let now = now_ms();
                for row in &mut board.destinations {
                    let queued = rows.iter().find(|(d, _, _)| *d == row.name);
                    row.queued = Some(queued.map_or(0, |q| q.1));
                    row.oldest_queued_secs = queued.map(|q| ((now - q.2) / 1000).max(0));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the shared queue's counts"),
        }
    }
    board.nodes = Some(nodes);
    board.unreachable = Some(unreachable);
    board
}

/// The nodes sharing the journal (`{"cluster": null}` for one engine).
async fn cluster(State(state): State<Shared>, user: CurrentUser) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let cluster = match &state.journal {
        Some(j) => match j.cluster().await {
            Ok(c) => c,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        None => None,
    };
    Json(json!({ "cluster": cluster })).into_response()
}

/// Counts an open event stream; the count drops with it.
struct StreamSlot;

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(state): State<Shared>, user: CurrentUser) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let flow = match flow_of(&state) {
        Ok(f) => f.clone(),
        Err(r) => return r,
    };
    if STREAMS.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views are open",
        );
    }
    let slot = StreamSlot;
    let rx = flow.subscribe();
    let tick = tokio::time::interval(Duration::from_millis(1000));
    // In a cluster the other nodes' messages join the stream; their
    // followers end with it.
    let (peer_tx, peer_rx) = tokio::sync::mpsc::channel::<String>(256);
    let followers = state.shutdown.child_token();
    if let Some(peers) = state.peers.clone().filter(|_| !user.by_peer()) {
        for node in peers.list().await {
            let (peers, tx, stop, name) = (
                peers.clone(),
                peer_tx.clone(),
                followers.clone(),
                user.name.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = peers.follow(&node, &name, tx, stop).await {
                    tracing::warn!(error = %e, "another node's live view could not be followed");
                }
            });
        }
    }
    drop(peer_tx);
    let peer_rx = (peer_rx, followers.drop_guard());
    // The slot travels with the stream (it counts it); the token ends it
    // at shutdown.
    let cluster = state.peers.is_some() && !user.by_peer();
    let start = (
        rx,
        tick,
        None::<i64>,
        flow,
        user,
        (slot, state.shutdown.clone(), peer_rx, state.clone()),
    );
    let stream = futures::stream::unfold(
        start,
        move |(mut rx, mut tick, mut sent, flow, user, mut slot)| async move {
            loop {
                tokio::select! {
                    _ = slot.1.cancelled() => return None,
                    Some(data) = slot.2.0.recv() => {
                        // Already filtered for this user by the node it came from.
                        let event = Event::default().event("message").data(data);
                        return Some((Ok(event), (rx, tick, sent, flow, user, slot)));
                    }
                    got = rx.recv() => match got {
                        Ok(ev) => {
                            let visible = user.may_see_route(&ev.route)
                                && ev.destination.split(',').filter(|d| !d.is_empty()).all(|d| user.may_see_destination(d));
                            if !visible || (ev.route.is_empty() && user.routes.is_some()) {
                                continue;
                            }
                            let Ok(event) = Event::default().event("message").json_data(&*ev) else {
                                continue;
                            };
                            return Some((Ok::<_, std::convert::Infallible>(event), (rx, tick, sent, flow, user, slot)));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = tick.tick() => {
                        // In a cluster the other nodes' counts move too: sent
                        // every other second, whatever changed here.
                        let version = if cluster { now_ms() / 2000 } else { flow.board.version() as i64 };
                        if sent == Some(version) {
                            continue;
                        }
                        sent = Some(version);
                        let board = board_for(&slot.3, &flow, &user).await;
                        let Ok(event) = Event::default().event("dashboard").json_data(&board) else {
                            continue;
                        };
                        return Some((Ok(event), (rx, tick, sent, flow, user, slot)));
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

// ---- the message browser ----

/// Search parameters, as the query string gives them.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub struct SearchParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub sender: Option<String>,
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub patient_id: Option<String>,
    pub status: Option<String>,
    pub route: Option<String>,
    pub destination: Option<String>,
    pub detection: Option<String>,
    pub contains: Option<String>,
    pub unresolved: Option<bool>,
    /// Where the previous page ended: the `next` it gave.
    pub before: Option<Cursor>,
    pub limit: Option<usize>,
    /// Only this node's messages (what one node asks another).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
}

/// Where a page of search results ended: a message id on one node; in a
/// cluster, per node, `number:id` (or `number:done`), comma-separated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Cursor {
    Id(i64),
    Nodes(String),
}

impl Cursor {
    /// The one message id it names: a number, or a number written as text
    /// (a query string carries every value as text).
    fn id(&self) -> Option<i64> {
        match self {
            Cursor::Id(id) => Some(*id),
            Cursor::Nodes(text) => text.trim().parse().ok(),
        }
    }
}

/// Per node number: the id its next page starts below (`None`: done).
type NodeCursors = std::collections::BTreeMap<i32, Option<i64>>;

/// Most nodes a cursor names.
const MAX_CURSOR_NODES: usize = 256;

fn parse_cursor(text: &str) -> Result<NodeCursors, String> {
    let mut out = NodeCursors::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (node, at) = part
            .split_once(':')
            .ok_or_else(|| format!("before: '{part}' is not node:id"))?;
        let node: i32 = node
            .parse()
            .map_err(|_| format!("before: '{node}' is not a node number"))?;
        let at = match at {
            "done" => None,
            id => Some(
                id.parse::<i64>()
                    .map_err(|_| format!("before: '{id}' is not a message id"))?,
            ),
        };
        out.insert(node, at);
        if out.len() > MAX_CURSOR_NODES {
            return Err("before: names too many nodes".into());
        }
    }
    Ok(out)
}

fn cursor_text(cursors: &NodeCursors) -> String {
    cursors
        .iter()
        .map(|(n, at)| match at {
            Some(id) => format!("{n}:{id}"),
            None => format!("{n}:done"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `1700000000000` (ms), `2026-11-29`, `2026-11-29T10:00:00Z`,
/// `2026-11-29T10:00:00.123+01:00` → ms since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let num = |a: usize, b: usize| t.get(a..b).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if t.get(4..5) != Some("-")
        || t.get(7..8) != Some("-")
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    let rest = t.get(10..).unwrap_or("");
    if rest.is_empty() {
        return Some(ms);
    }
    let rest = rest.strip_prefix(['T', ' '])?;
    let (h, mi) = (
        rest.get(0..2)?.parse::<i64>().ok()?,
        rest.get(3..5)?.parse::<i64>().ok()?,
    );
    let mut tail = rest.get(5..)?;
    let mut s = 0;
    if let Some(sec) = tail.strip_prefix(':') {
        s = sec.get(0..2)?.parse::<i64>().ok()?;
        tail = sec.get(2..)?;
    }
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = frac.get(..digits)?;
        ms += f
            .get(..3.min(digits))
            .and_then(|x| format!("{x:0<3}").parse::<i64>().ok())
            .unwrap_or(0);
        tail = frac.get(digits..)?;
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    ms += ((h * 60 + mi) * 60 + s) * 1000;
    let offset = match tail {
        "" | "Z" | "z" => 0,
        z => {
            let sign = match z.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh = z.get(1..3)?.parse::<i64>().ok()?;
            let om = z.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 60 + om) * 60_000
        }
    };
    Some(ms - offset)
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 200)
}

/// The search a user may make with these parameters.
fn search_of(p: &SearchParams, user: &CurrentUser) -> Result<Search, Response> {
    let time = |v: &Option<String>, what: &str| -> Result<Option<i64>, Response> {
        match nonempty(v) {
            None => Ok(None),
            Some(t) => parse_time(&t).map(Some).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{what}: '{t}' is not a time (RFC 3339 or ms since the epoch)"),
                )
            }),
        }
    };
    let from_ms = time(&p.from, "from")?;
    let to_ms = time(&p.to, "to")?;
    let contains = nonempty(&p.contains);
    if contains.is_some() {
        match (from_ms, to_ms) {
            (Some(f), Some(t)) if t >= f && t - f <= 86_400_000 => {}
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "a content search needs from and to at most 24 hours apart",
                ));
            }
        }
    }
    let status = nonempty(&p.status);
    if let Some(s) = &status {
        const KNOWN: [&str; 6] = [
            "accepted",
            "accepted_with_warnings",
            "rejected_by_izhub",
            "rejected_by_iis",
            "errored",
            "queued",
        ];
        if !KNOWN.contains(&s.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("status: one of {}", KNOWN.join(", ")),
            ));
        }
    }
    Ok(Search {
        from_ms,
        to_ms,
        sender: nonempty(&p.sender),
        message_type: nonempty(&p.message_type),
        control_id: nonempty(&p.control_id),
        patient_id: nonempty(&p.patient_id),
        status,
        route: nonempty(&p.route),
        destination: nonempty(&p.destination),
        detection: nonempty(&p.detection),
        unresolved: p.unresolved.unwrap_or(false),
        contains,
        before: match &p.before {
            None => None,
            Some(c) => match c.id() {
                Some(id) => Some(id),
                None => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "before: a cluster cursor needs the cluster's search",
                    ));
                }
            },
        },
        limit: p.limit.unwrap_or(50).clamp(1, 200),
        routes_allowed: user.routes.clone(),
        destinations_allowed: user.destinations.clone(),
    })
}

fn meta_json(m: &Meta, unmask: bool) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        if !unmask {
            obj.insert("patient_id".into(), Value::String(mask_id(&m.patient_id)));
        }
        obj.insert("time".into(), Value::String(rfc3339(m.time)));
    }
    v
}

/// ms since the epoch → RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::hl7::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Sets a flag when dropped: a search in progress stops when its request
/// goes away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn messages(
    State(state): State<Shared>,
    user: CurrentUser,
    Query(p): Query<SearchParams>,
) -> Response {
    search_messages(state, user, p).await
}

/// The same search with its parameters in a JSON body, so a patient id
/// never travels in a URL.
async fn messages_post(
    State(state): State<Shared>,
    user: CurrentUser,
    Json(p): Json<SearchParams>,
) -> Response {
    search_messages(state, user, p).await
}

async fn search_messages(state: Shared, user: CurrentUser, p: SearchParams) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    if let Some(peers) = state.peers.clone()
        && p.local != Some(true)
        && !user.by_peer()
    {
        return search_cluster(state, peers, user, p).await;
    }
    match search_messages_local(&state, &user, p).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// One node's page in a cluster search.
struct NodePage {
    number: i32,
    items: Vec<Value>,
    more: bool,
    partial: bool,
}

/// Reads a page of a search as JSON (`items`, `next`, `partial`).
fn node_page(number: i32, v: &Value) -> NodePage {
    NodePage {
        number,
        items: v
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        more: v.get("next").is_some_and(|n| !n.is_null()),
        partial: v.get("partial").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// A search over every node of the cluster: each live node is asked for a
/// page below its own cursor, the pages are merged newest first, and the
/// cursor says per node where the next page starts. Nodes that cannot be
/// asked are named in `unreachable` and asked again for the next page.
async fn search_cluster(
    state: Shared,
    peers: Arc<super::peers::Peers>,
    user: CurrentUser,
    p: SearchParams,
) -> Response {
    let mut cursors = match &p.before {
        None => NodeCursors::new(),
        Some(c) => match (c.id(), c) {
            (Some(id), _) => NodeCursors::from([(crate::flow::log::node_of(id), Some(id))]),
            (None, Cursor::Nodes(text)) => match parse_cursor(text) {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            },
            (None, Cursor::Id(_)) => NodeCursors::new(),
        },
    };
    let limit = p.limit.unwrap_or(50).clamp(1, 200);
    let me = peers.number();
    let nodes = peers.list().await;
    let ask = |number: i32| -> Option<SearchParams> {
        match cursors.get(&number) {
            Some(None) => None,
            at => Some(SearchParams {
                before: at.copied().flatten().map(Cursor::Id),
                limit: Some(limit),
                local: Some(true),
                ..p.clone()
            }),
        }
    };
    let mut pages: Vec<NodePage> = Vec::new();
    let mut unreachable: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    for node in &nodes {
        if let Some(q) = ask(node.number) {
            let body = serde_json::to_value(&q).unwrap_or(Value::Null);
            let (peers, user_name, node) = (peers.clone(), user.name.clone(), node.clone());
            calls.push(tokio::spawn(async move {
                let answer = peers
                    .call(
                        &node,
                        axum::http::Method::POST,
                        "/api/messages/search",
                        &user_name,
                        Some(&body),
                    )
                    .await;
                (node, answer)
            }));
        }
    }
    if let Some(q) = ask(me) {
        let local = search_messages_local(&state, &user, q).await;
        match local {
            Ok(v) => pages.push(node_page(me, &v)),
            Err(r) => return r,
        }
    }
    for call in calls {
        let Ok((node, answer)) = call.await else {
            continue;
        };
        match answer {
            Ok((status, body)) if status.is_success() => {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => pages.push(node_page(node.number, &v)),
                    Err(_) => unreachable.push(node.name.clone()),
                }
            }
            Ok((status, _)) => {
                tracing::warn!(node = %node.name, %status, "another node refused a console search");
                unreachable.push(node.name.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "another node could not be searched");
                unreachable.push(node.name.clone());
            }
        }
    }
    // Newest first; RFC 3339 times of one format sort as text.
    let mut merged: Vec<(String, i64, i32, Value)> = pages
        .iter()
        .flat_map(|pg| {
            pg.items.iter().map(move |v| {
                let time = v
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let id = v.get("id").and_then(Value::as_i64).unwrap_or(0);
                (time, id, pg.number, v.clone())
            })
        })
        .collect();
    merged.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    merged.truncate(limit);
    for pg in &pages {
        let taken: Vec<i64> = merged
            .iter()
            .filter(|m| m.2 == pg.number)
            .map(|m| m.1)
            .collect();
        let all_taken = taken.len() == pg.items.len();
        if pg.items.is_empty() || (all_taken && !pg.more) {
            cursors.insert(pg.number, None);
        } else if let Some(lowest) = taken.iter().min() {
            cursors.insert(pg.number, Some(*lowest));
        }
    }
    let names: std::collections::HashMap<i32, String> =
        nodes.iter().map(|n| (n.number, n.name.clone())).collect();
    let done = pages
        .iter()
        .all(|pg| cursors.get(&pg.number) == Some(&None))
        && unreachable.is_empty();
    Json(json!({
        "items": merged.into_iter().map(|(_, _, number, mut v)| {
            if let Some(obj) = v.as_object_mut() {
                let node = names.get(&number).cloned().unwrap_or_else(|| "this node".into());
                obj.insert("node".into(), Value::String(node));
            }
            v
        }).collect::<Vec<_>>(),
        "next": if done { Value::Null } else { Value::String(cursor_text(&cursors)) },
        "partial": pages.iter().any(|pg| pg.partial),
        "unreachable": unreachable,
    }))
    .into_response()
}

/// This node's page of a search, as JSON.
async fn search_messages_local(
    state: &AdminState,
    user: &CurrentUser,
    p: SearchParams,
) -> Result<Value, Response> {
    let log = log_of(state)?.clone();
    let search = search_of(&p, user)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let page = match blocking(move || log.search(&search, &|| cancel.load(Ordering::Relaxed))).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(r) => return Err(r),
    };
    Ok(json!({
        "items": page.items.iter().map(|m| meta_json(m, false)).collect::<Vec<_>>(),
        "next": page.next,
        "partial": page.partial,
    }))
}

/// When message `id` is in another node's log (and this request is not
/// already from a node), asks that node and gives its answer.
async fn on_owner(
    state: &AdminState,
    user: &CurrentUser,
    id: i64,
    method: axum::http::Method,
    path_and_query: &str,
    body: Option<&Value>,
) -> Option<Response> {
    let peers = state.peers.as_ref()?;
    if user.by_peer() {
        return None;
    }
    let number = crate::flow::log::node_of(id);
    if number == peers.number() {
        return None;
    }
    let Some(node) = peers.owner(id).await else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("message {id} is held by a node that is not running now"),
        ));
    };
    Some(
        match peers
            .call(&node, method, path_and_query, &user.name, body)
            .await
        {
            Ok((status, bytes)) => {
                (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
            }
            Err(e) => error(StatusCode::BAD_GATEWAY, e),
        },
    )
}

/// The first destination of a message (a message for several has them
/// comma-separated) for visibility checks.
fn may_see(user: &CurrentUser, meta: &Meta) -> bool {
    let route = (!meta.route.is_empty()).then_some(meta.route.as_str());
    let dests: Vec<&str> = meta
        .destination
        .split(',')
        .filter(|d| !d.is_empty())
        .collect();
    if dests.is_empty() {
        return user.may_see_message(route, None);
    }
    dests.iter().all(|d| user.may_see_message(route, Some(d)))
}

/// A message the user may see, or the answer to give instead.
async fn visible_message(
    state: &AdminState,
    user: &CurrentUser,
    id: i64,
) -> Result<Full, Response> {
    let log = log_of(state)?.clone();
    let full = match blocking(move || log.get(id)).await? {
        Ok(Some(f)) => f,
        Ok(None) => return Err(error(StatusCode::NOT_FOUND, format!("no message {id}"))),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    if !may_see(user, &full.meta) {
        // Not "forbidden": whether it exists is not theirs to know.
        return Err(error(StatusCode::NOT_FOUND, format!("no message {id}")));
    }
    Ok(full)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DetailParams {
    unmask: Option<bool>,
}

/// MSA and ERR of an answer, decoded.
fn decode_answer(text: &str) -> Value {
    let sep = text
        .strip_prefix("MSH")
        .and_then(|r| r.chars().next())
        .unwrap_or('|');
    let comp = text.get(4..5).and_then(|c| c.chars().next()).unwrap_or('^');
    let mut msa = Value::Null;
    let mut errs = Vec::new();
    for seg in text.split(['\r', '\n']) {
        let fields: Vec<&str> = seg.split(sep).collect();
        let f = |i: usize| fields.get(i).copied().unwrap_or("");
        match f(0) {
            "MSA" if msa.is_null() => {
                msa = json!({ "code": f(1), "control_id": f(2), "text": f(3) });
            }
            "ERR" if errs.len() < 100 => {
                errs.push(json!({
                    "location": f(2).split(comp).filter(|c| !c.is_empty()).collect::<Vec<_>>().join("-"),
                    "code": f(3).split(comp).next().unwrap_or(""),
                    "code_text": f(3).split(comp).nth(1).unwrap_or(""),
                    "severity": f(4),
                    "app_code": f(5).split(comp).next().unwrap_or(""),
                    "text": f(8),
                }));
            }
            _ => {}
        }
    }
    json!({ "msa": msa, "err": errs })
}

async fn message(
    State(state): State<Shared>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Query(p): Query<DetailParams>,
) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let path = format!(
        "/api/messages/{id}{}",
        if p.unmask == Some(true) {
            "?unmask=true"
        } else {
            ""
        }
    );
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::GET, &path, None).await {
        return r;
    }
    let unmask = p.unmask.unwrap_or(false);
    if unmask && let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    let full = match visible_message(&state, &user, id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let shown = |text: &str| {
        if unmask {
            text.to_string()
        } else {
            mask_hl7(text)
        }
    };
    if unmask && let Ok(log) = log_of(&state) {
        log.audit(&user.name, "unmask", &format!("message {id}"), "shown");
    }
    let received = String::from_utf8_lossy(&full.received).into_owned();
    let answer = String::from_utf8_lossy(&full.answer).into_owned();
    let stages: Vec<Value> = serde_json::from_str::<Vec<Value>>(&full.stages)
        .unwrap_or_default()
        .into_iter()
        .map(|mut s| {
            if let Some(t) = s.get("text").and_then(Value::as_str).map(&shown) {
                s["text"] = Value::String(t);
            }
            s
        })
        .collect();
    let attempts: Vec<Value> = full
        .attempts
        .iter()
        .map(|a| {
            json!({
                "time": rfc3339(a.time),
                "destination": a.destination,
                "result": a.result,
                "class": a.class,
                "answer": a.answer.as_ref().map(|b| shown(&String::from_utf8_lossy(b))),
            })
        })
        .collect();
    let decoded = decode_answer(&answer);
    let issues = decoded
        .get("err")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    // PHI shown in full must not be kept by a browser or a proxy.
    let cache = unmask.then_some([(axum::http::header::CACHE_CONTROL, "no-store")]);
    let body = Json(json!({
        "meta": meta_json(&full.meta, unmask),
        "received": shown(&received),
        "stages": stages,
        "issues": issues,
        "answer": shown(&answer),
        "answer_decoded": decoded,
        "attempts": attempts,
        "masked": !unmask,
        "reprocess_of": full.reprocess_of,
        "reprocessed_as": full.reprocessed_as,
    }));
    (cache, body).into_response()
}

// ---- actions ----

/// Runs a logged message through its route again, as if its listener had
/// just received it.
async fn reprocess(state: &AdminState, full: &Full) -> Result<String, String> {
    let pipeline = state.slot.current();
    let Some(listener) = pipeline.listener(&full.meta.listener).cloned() else {
        return Err(format!(
            "listener '{}' is no longer configured",
            full.meta.listener
        ));
    };
    match pipeline
        .reprocess(&listener, &full.received, full.meta.id)
        .await
    {
        crate::pipeline::Answer::Reply(bytes) => {
            Ok(crate::hl7::read_msa(&String::from_utf8_lossy(&bytes))
                .map(|(code, _)| code)
                .unwrap_or_else(|| "answered".into()))
        }
        crate::pipeline::Answer::Close(why) => Err(why),
    }
}

fn audit(state: &AdminState, user: &CurrentUser, action: &str, target: &str, result: &str) {
    if let Some(log) = state.flow.as_ref().and_then(|f| f.log.as_ref()) {
        log.audit(&user.name, action, target, result);
    }
    // Quoted: a target can carry a route or destination name from the request.
    tracing::info!(user = %user.name, action, target = ?target, result = ?result, "console action");
}

async fn reprocess_one(
    State(state): State<Shared>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    let path = format!("/api/messages/{id}/reprocess");
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::POST, &path, None).await {
        return r;
    }
    let full = match visible_message(&state, &user, id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let target = format!("message {id}");
    match reprocess(&state, &full).await {
        Ok(ack) => {
            audit(&state, &user, "reprocess", &target, &format!("ok: {ack}"));
            // The new message, once the log has it, so the page can link to it.
            let new_id = match log_of(&state) {
                Ok(log) => {
                    let log = log.clone();
                    blocking(move || {
                        log.sync();
                        log.get(id)
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
                    .and_then(|f| f.reprocessed_as.last().copied())
                }
                Err(_) => None,
            };
            Json(json!({ "ok": true, "ack": ack, "message": new_id })).into_response()
        }
        Err(why) => {
            audit(
                &state,
                &user,
                "reprocess",
                &target,
                &format!("failed: {why}"),
            );
            error(StatusCode::CONFLICT, why)
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
struct BulkBody {
    filter: SearchParams,
    confirm: bool,
}

async fn reprocess_many(
    State(state): State<Shared>,
    user: CurrentUser,
    Json(body): Json<BulkBody>,
) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    if state.peers.is_none() || body.filter.local == Some(true) || user.by_peer() {
        return match reprocess_here(&state, &user, &body).await {
            Ok(v) => Json(v).into_response(),
            Err(r) => r,
        };
    }
    // In a cluster each node reprocesses the matching messages in its own
    // log; the counts are added up.
    let mut ask = body.clone();
    ask.filter.local = Some(true);
    let ask = serde_json::to_value(&ask).unwrap_or(Value::Null);
    let mine = match reprocess_here(&state, &user, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (mut answers, unreachable) =
        match on_every_node(&state, &user, "/api/reprocess", Some(&ask)).await {
            Ok(a) => a,
            Err(r) => return r,
        };
    answers.push(mine);
    let sum = |key: &str| -> u64 { answers.iter().filter_map(|v| v.get(key)?.as_u64()).sum() };
    if !body.confirm {
        return Json(
            json!({ "count": sum("count"), "limit": MAX_BULK, "unreachable": unreachable }),
        )
        .into_response();
    }
    let failed = sum("failed");
    Json(json!({
        "ok": failed == 0 && unreachable.is_empty(),
        "reprocessed": sum("reprocessed"),
        "failed": failed,
        "unreachable": unreachable,
    }))
    .into_response()
}

/// Reprocesses (or, unconfirmed, counts) the matching messages of this
/// node's log.
async fn reprocess_here(
    state: &Shared,
    user: &CurrentUser,
    body: &BulkBody,
) -> Result<Value, Response> {
    let log = log_of(state)?.clone();
    let search = search_of(&body.filter, user)?;
    if search.contains.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a bulk reprocess takes no content search",
        ));
    }
    // Every matching id, newest first, up to the cap.
    let l = log.clone();
    let ids: Vec<i64> = match blocking(move || l.search_all(&search, MAX_BULK)).await? {
        Ok(metas) => metas.iter().map(|m| m.id).collect(),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    if !body.confirm {
        return Ok(json!({ "count": ids.len(), "limit": MAX_BULK }));
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    // Oldest first, as they came.
    for id in ids.iter().rev() {
        let l = log.clone();
        let id = *id;
        let full = match blocking(move || l.get(id)).await {
            Ok(Ok(Some(f))) => f,
            _ => {
                failed += 1;
                continue;
            }
        };
        match reprocess(state, &full).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    audit(
        state,
        user,
        "reprocess-filtered",
        &format!("{} messages", ids.len()),
        &format!("{ok} reprocessed, {failed} failed"),
    );
    Ok(json!({ "ok": failed == 0, "reprocessed": ok, "failed": failed }))
}

/// The journal rows of a logged message.
async fn journal_ids(state: &AdminState, id: i64) -> Result<Vec<i64>, Response> {
    let log = log_of(state)?.clone();
    match blocking(move || log.journal_ids(id)).await? {
        Ok(ids) => Ok(ids),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn queue_action(state: Shared, user: CurrentUser, id: i64, resend: bool) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    if let Err(r) = visible_message(&state, &user, id).await {
        return r;
    }
    let Some(journal) = state.journal.clone() else {
        return error(
            StatusCode::CONFLICT,
            "no route journals messages (commit mode)",
        );
    };
    let rows = match journal_ids(&state, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (action, what) = if resend {
        ("resend", "dead")
    } else {
        ("retry", "queued")
    };
    let mut done = Vec::new();
    for row in rows {
        let result = if resend {
            journal.requeue(row).await
        } else {
            journal.retry_now(row).await
        };
        match result {
            Ok(Some(dest)) => {
                if let Some(d) = state.slot.current().destinations().get(&dest) {
                    d.wake().notify_one();
                }
                done.push(dest);
            }
            Ok(None) => {}
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    let target = format!("message {id}");
    if done.is_empty() {
        audit(&state, &user, action, &target, &format!("nothing {what}"));
        return error(
            StatusCode::CONFLICT,
            format!("message {id} has no {what} delivery"),
        );
    }
    audit(
        &state,
        &user,
        action,
        &target,
        &format!("ok: {}", done.join(",")),
    );
    Json(json!({ "ok": true, "destinations": done })).into_response()
}

async fn retry(State(state): State<Shared>, user: CurrentUser, Path(id): Path<i64>) -> Response {
    let path = format!("/api/messages/{id}/retry");
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::POST, &path, None).await {
        return r;
    }
    queue_action(state, user, id, false).await
}

async fn resend(State(state): State<Shared>, user: CurrentUser, Path(id): Path<i64>) -> Response {
    let path = format!("/api/messages/{id}/resend");
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::POST, &path, None).await {
        return r;
    }
    queue_action(state, user, id, true).await
}

async fn destination_action(
    State(state): State<Shared>,
    user: CurrentUser,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    if !user.may_see_destination(&name) {
        return error(StatusCode::NOT_FOUND, "no such destination");
    }
    let flow = match flow_of(&state) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let pipeline = state.slot.current();
    let Some(dest) = pipeline.destinations().get(&name) else {
        return error(StatusCode::NOT_FOUND, "no such destination");
    };
    let control = flow.control(&name);
    match action.as_str() {
        "pause" => control.paused.store(true, Ordering::Relaxed),
        "resume" => control.paused.store(false, Ordering::Relaxed),
        "reset-breaker" => control.reset.store(true, Ordering::Relaxed),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "actions: pause, resume, reset-breaker",
            );
        }
    }
    dest.wake().notify_one();
    audit(&state, &user, &action, &format!("destination {name}"), "ok");
    // In a cluster every node delivers: each pauses, resumes or resets its own.
    let path = format!("/api/destinations/{name}/{action}");
    match on_every_node(&state, &user, &path, None).await {
        Err(r) => r,
        Ok((_, unreachable)) => {
            Json(json!({ "ok": unreachable.is_empty(), "unreachable": unreachable }))
                .into_response()
        }
    }
}

/// In a cluster, when a browser (not another node) asked: the same request
/// made of every other live node for the same user. Their answers (JSON
/// objects) and the nodes that could not carry it out; a request another
/// node refuses (4xx) is that refusal.
async fn on_every_node(
    state: &AdminState,
    user: &CurrentUser,
    path: &str,
    body: Option<&Value>,
) -> Result<(Vec<Value>, Vec<String>), Response> {
    let Some(peers) = state.peers.clone().filter(|_| !user.by_peer()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut answers = Vec::new();
    let mut unreachable = Vec::new();
    for (node, answer) in peers
        .call_all(
            super::peers::TIMEOUT,
            axum::http::Method::POST,
            path,
            &user.name,
            body,
        )
        .await
    {
        match answer {
            Ok((status, bytes)) if status.is_success() => {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if v.is_object() => answers.push(v),
                    _ => unreachable.push(node.name),
                }
            }
            Ok((status, bytes)) if status.is_client_error() => {
                return Err(
                    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                );
            }
            Ok((status, _)) => {
                tracing::warn!(node = %node.name, %status, path, "another node could not carry out an action");
                unreachable.push(node.name);
            }
            Err(e) => {
                tracing::warn!(error = %e, "another node could not be asked to carry out an action");
                unreachable.push(node.name);
            }
        }
    }
    Ok((answers, unreachable))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct ResolveBody {
    ids: Vec<i64>,
    route: Option<String>,
    destination: Option<String>,
}

async fn resolve(
    State(state): State<Shared>,
    user: CurrentUser,
    Json(body): Json<ResolveBody>,
) -> Response {
    if let Err(r) = user.require(Role::Operator) {
        return refused(r);
    }
    let flow = match flow_of(&state) {
        Ok(f) => f.clone(),
        Err(r) => return r,
    };
    if body.ids.len() > MAX_BULK {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_BULK} ids at once"),
        );
    }
    let route = body.route.clone().filter(|r| !r.is_empty());
    let destination = body.destination.clone().filter(|d| !d.is_empty());
    if route.as_deref().is_some_and(|r| !user.may_see_route(r))
        || destination
            .as_deref()
            .is_some_and(|d| !user.may_see_destination(d))
    {
        return error(StatusCode::NOT_FOUND, "no such route or destination");
    }
    let mut resolved = 0usize;
    if let Some(log) = flow.log.clone() {
        // The messages concerned: the ids given, or every unresolved one of the scope.
        let metas: Vec<Meta> = if body.ids.is_empty() {
            let search = Search {
                unresolved: true,
                route: route.clone(),
                destination: destination.clone(),
                routes_allowed: user.routes.clone(),
                destinations_allowed: user.destinations.clone(),
                ..Search::default()
            };
            let l = log.clone();
            match blocking(move || l.search_all(&search, 100_000)).await {
                Ok(Ok(metas)) => metas,
                Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                Err(r) => return r,
            }
        } else {
            let mut all = Vec::new();
            for id in &body.ids {
                if let Ok(f) = visible_message(&state, &user, *id).await {
                    all.push(f.meta);
                }
            }
            all
        };
        let open: Vec<&Meta> = metas
            .iter()
            .filter(|m| {
                !m.resolved
                    && matches!(
                        m.status.as_str(),
                        "rejected_by_izhub" | "rejected_by_iis" | "errored"
                    )
            })
            .collect();
        resolved = open.len();
        if body.ids.is_empty() {
            flow.board
                .resolve(route.as_deref(), destination.as_deref(), None);
        } else {
            for m in &open {
                flow.board.resolve(Some(&m.route), None, Some(1));
                for d in m.destination.split(',').filter(|d| !d.is_empty()) {
                    flow.board.resolve(None, Some(d), Some(1));
                }
            }
        }
        log.resolve(open.iter().map(|m| m.id).collect());
    } else {
        flow.board
            .resolve(route.as_deref(), destination.as_deref(), None);
    }
    let target = match (&route, &destination) {
        (Some(r), _) => format!("route {r}"),
        (None, Some(d)) => format!("destination {d}"),
        (None, None) if body.ids.is_empty() => "all".to_string(),
        (None, None) => format!("{} messages", body.ids.len()),
    };
    audit(
        &state,
        &user,
        "resolve",
        &target,
        &format!("{resolved} resolved"),
    );
    // In a cluster every node clears its own counts and the messages its
    // log holds.
    let ask = serde_json::to_value(&body).unwrap_or(Value::Null);
    match on_every_node(&state, &user, "/api/errors/resolve", Some(&ask)).await {
        Err(r) => r,
        Ok((answers, unreachable)) => {
            let resolved = resolved as u64
                + answers
                    .iter()
                    .filter_map(|v| v.get("resolved")?.as_u64())
                    .sum::<u64>();
            Json(json!({ "ok": unreachable.is_empty(), "resolved": resolved, "unreachable": unreachable }))
                .into_response()
        }
    }
}

// ---- data quality, code sets, audit ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QualityParams {
    sender: Option<String>,
    days: Option<i64>,
    format: Option<String>,
}

async fn quality(
    State(state): State<Shared>,
    user: CurrentUser,
    Query(p): Query<QualityParams>,
) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let log = match log_of(&state) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    let days = p.days.unwrap_or(30).clamp(1, 366);
    let since = now_ms() - days * 86_400_000;
    let sender = nonempty(&p.sender);
    let one_sender = sender.is_some();
    let limited = user.routes.is_some() || user.destinations.is_some();
    let result = blocking(move || {
        let rows = log.quality(since, sender.as_deref())?;
        let mut detections = log.detections_by_sender(since, sender.as_deref(), 10)?;
        let mut senders: Vec<Value> = Vec::new();
        let mut by_sender: HashMap<String, Vec<(String, i64, i64, Value)>> = HashMap::new();
        for (s, day, n, rejected, completeness) in rows {
            by_sender.entry(s).or_default().push((day, n, rejected, completeness));
        }
        let mut names: Vec<String> = by_sender.keys().cloned().collect();
        names.sort();
        for s in names.into_iter().take(500) {
            let days_rows = by_sender.remove(&s).unwrap_or_default();
            let messages: i64 = days_rows.iter().map(|r| r.1).sum();
            let rejected: i64 = days_rows.iter().map(|r| r.2).sum();
            let top = detections.remove(&s).unwrap_or_default();
            // A masked example of each detection for one sender; of the first
            // three for each of the first 50 senders when all are shown.
            let (senders_with, ranks) = if one_sender { (1, 10) } else { (50, 3) };
            let with_examples = senders.len() < senders_with;
            let mut examples = Vec::new();
            for (rank, (id, _, example)) in top.iter().enumerate() {
                let full = if with_examples && rank < ranks { log.get(*example)? } else { None };
                examples.push(full.map(|f| example_of(&f, id)).unwrap_or(Value::Null));
            }
            senders.push(json!({
                "sender": s,
                "messages": messages,
                "rejected": rejected,
                "by_day": days_rows.iter().map(|(d, n, r, c)| json!({"day": d, "messages": n, "rejected": r, "completeness": c})).collect::<Vec<_>>(),
                "top_detections": top.iter().zip(examples).map(|((id, n, example_id), example)| json!({"id": id, "messages": n, "example_id": example_id, "example": example})).collect::<Vec<_>>(),
            }));
        }
        Ok::<_, crate::flow::log::LogError>(senders)
    })
    .await;
    match result {
        // A user limited to some routes sees no cross-route statistics.
        Ok(Ok(_)) if limited => error(
            StatusCode::FORBIDDEN,
            "data quality covers every route; this user is limited to some",
        ),
        Ok(Ok(senders)) => Json(json!({ "days": days, "senders": senders })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => r,
    }
}

/// A masked example of a detection in one message: where it was found, the
/// sentence the clinic read (quoted values cut out) and that segment with
/// its PHI masked.
fn example_of(full: &Full, detection: &str) -> Value {
    let answer = String::from_utf8_lossy(&full.answer);
    let decoded = decode_answer(&answer);
    let err = decoded["err"].as_array().and_then(|errs| {
        errs.iter().find(|e| {
            e["text"]
                .as_str()
                .and_then(crate::hl7::detection_id)
                .is_some_and(|d| d == detection)
        })
    });
    let location = err
        .and_then(|e| e["location"].as_str())
        .unwrap_or("")
        .to_string();
    let text = err
        .and_then(|e| e["text"].as_str())
        .map(crate::report::without_value)
        .unwrap_or_default();
    let mut parts = location.split('-');
    let name = parts.next().unwrap_or("");
    let nth: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let segment = (name.len() == 3)
        .then(|| {
            let masked = super::mask::mask_hl7(&String::from_utf8_lossy(&full.received));
            masked
                .split(['\r', '\n'])
                .filter(|s| s.get(..3) == Some(name))
                .nth(nth.saturating_sub(1))
                .map(str::to_string)
        })
        .flatten()
        .unwrap_or_default();
    json!({
        "id": full.meta.id,
        "control_id": full.meta.control_id,
        "location": location,
        "text": text,
        "segment": segment,
    })
}

/// The per-sender report an HIE hands a clinic: the validation report of
/// the sender's messages over the period, from the log.
async fn quality_report(
    State(state): State<Shared>,
    user: CurrentUser,
    Query(p): Query<QualityParams>,
) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let log = match log_of(&state) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    let Some(sender) = nonempty(&p.sender) else {
        return error(StatusCode::BAD_REQUEST, "sender is required");
    };
    let days = p.days.unwrap_or(30).clamp(1, 366);
    let since = now_ms() - days * 86_400_000;
    let (routes, dests) = (user.routes.clone(), user.destinations.clone());
    let title_sender = sender.clone();
    let report = blocking(move || {
        let mut report = crate::report::Report::new(
            format!("Sending facility {title_sender}: messages of the last {days} days"),
            false,
        );
        let search = Search {
            sender: Some(sender),
            from_ms: Some(since),
            routes_allowed: routes,
            destinations_allowed: dests,
            ..Search::default()
        };
        for m in log.search_all(&search, 20_000)? {
            let Some(full) = log.get(m.id)? else { continue };
            report.add(
                &format!("message {} (MSH-10 {})", m.id, m.control_id),
                &as_dry_run(&full),
            );
        }
        Ok::<_, crate::flow::log::LogError>(report)
    })
    .await;
    let report = match report {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => return r,
    };
    match p.format.as_deref().unwrap_or("html") {
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"data-quality.csv\"",
                ),
            ],
            report.to_csv(),
        )
            .into_response(),
        _ => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            report.to_html(500),
        )
            .into_response(),
    }
}

/// A logged message as the validation report reads a dry run: its outcome
/// and the issues of the answer it got.
fn as_dry_run(full: &Full) -> crate::pipeline::DryRun {
    use crate::hl7::{AckCode, Issue, Severity};
    use crate::pipeline::{DryOutcome, DryRun};
    let answer = String::from_utf8_lossy(&full.answer);
    let decoded = decode_answer(&answer);
    let issues: Vec<Issue> = decoded["err"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let mut issue = Issue::error(&s("code")).text(s("text")).at(s("location"));
                    issue.severity = match s("severity").as_str() {
                        "W" => Severity::Warning,
                        "I" => Severity::Info,
                        _ => Severity::Error,
                    };
                    issue
                })
                .collect()
        })
        .unwrap_or_default();
    // An answer refusing without ERR segments: its MSA-3 says why, if anything does.
    let mut issues: Vec<Issue> = issues;
    if issues.is_empty()
        && let Some(text) = decoded["msa"]["text"].as_str().filter(|t| !t.is_empty())
        && decoded["msa"]["code"]
            .as_str()
            .is_some_and(|c| c != "AA" && c != "CA")
    {
        issues.push(Issue::error("207").text(text));
    }
    let outcome = match full.meta.status.as_str() {
        "rejected_by_izhub" | "rejected_by_iis" | "errored" => {
            DryOutcome::Blocked(if full.meta.ack == "AR" {
                AckCode::AR
            } else {
                AckCode::AE
            })
        }
        _ => DryOutcome::Delivered(vec![full.meta.destination.clone()]),
    };
    DryRun {
        control_id: full.meta.control_id.clone(),
        sender: full.meta.sender.clone(),
        route: Some(full.meta.route.clone()),
        outcome,
        issues,
    }
}

async fn codesets(State(state): State<Shared>, user: CurrentUser) -> Response {
    if let Err(r) = user.require(Role::Viewer) {
        return refused(r);
    }
    let pipeline = state.slot.current();
    let (sets, max_age) = pipeline.codesets();
    let today = now_ms().div_euclid(86_400_000);
    let rows: Vec<Value> = sets
        .iter()
        .map(|c| {
            let age = parse_time(&c.date).map(|ms| today - ms.div_euclid(86_400_000));
            let watched = matches!(c.name.as_str(), "cvx" | "ndc");
            json!({
                "name": c.name,
                "source": c.sources.join(", "),
                "date": c.date,
                "count": c.count,
                "age_days": age,
                "stale": watched && age.is_none_or(|a| a > max_age as i64),
            })
        })
        .collect();
    Json(rows).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuditParams {
    before: Option<i64>,
    limit: Option<usize>,
}

async fn audit_list(state: &AdminState, p: AuditParams) -> Response {
    let log = match log_of(state) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    match blocking(move || log.audit_entries(p.before, p.limit.unwrap_or(100))).await {
        Ok(Ok(items)) => Json(json!({
            "items": items.iter().map(|a| json!({
                "id": a.id, "time": rfc3339(a.time), "user": a.user,
                "action": a.action, "target": a.target, "result": a.result,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => r,
    }
}

async fn audit_trail(
    State(state): State<Shared>,
    user: CurrentUser,
    Query(p): Query<AuditParams>,
) -> Response {
    if let Err(r) = user.require(Role::Admin) {
        return refused(r);
    }
    audit_list(&state, p).await
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
        let ex = example_of(&full, "patient-birth-date-invalid");
        assert_eq!(ex["location"], "PID-1-7");
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
        assert_eq!(example_of(&full, "other")["segment"], "");
    }

    #[test]
    fn answers_decoded() {
        let d = decode_answer(
            "MSH|^~\\&|A\rMSA|AE|C1|bad\rERR||PID^1^7|101^Required field missing^HL70357|E|7|||Birth date. [patient-birth-date-missing]\r",
        );
        assert_eq!(d["msa"]["code"], "AE");
        assert_eq!(d["err"][0]["location"], "PID-1-7");
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
