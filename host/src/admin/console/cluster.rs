//! The cluster as the console sees it: the nodes sharing the journal, a
//! search made of every node, a request carried to the node that holds a
//! message or to every node.

use super::*;

/// `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub(super) struct ClusterView {
    cluster: Option<crate::store::ClusterState>,
}

/// The nodes sharing the journal (`{"cluster": null}` for one engine).
pub(super) async fn cluster(State(state): State<Shared>, _: Viewer) -> Response {
    let cluster = match &state.journal {
        Some(j) => match j.cluster().await {
            Ok(c) => c,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        None => None,
    };
    Json(ClusterView { cluster }).into_response()
}

/// One node's page in a cluster search.
pub(super) struct NodePage {
    number: i32,
    items: Vec<Value>,
    more: bool,
    partial: bool,
}

/// Reads a page of a search as JSON (`items`, `next`, `partial`).
pub(super) fn node_page(number: i32, v: &Value) -> NodePage {
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
/// Where each node's page starts: a message id names its node; a cluster
/// cursor names every node's.
fn cursors_of(before: Option<&Cursor>) -> Result<NodeCursors, String> {
    Ok(match before {
        None => NodeCursors::new(),
        Some(c) => match (c.id(), c) {
            (Some(id), _) => NodeCursors::from([(crate::flow::log::node_of(id), Some(id))]),
            (None, Cursor::Nodes(text)) => parse_cursor(text)?,
            (None, Cursor::Id(_)) => NodeCursors::new(),
        },
    })
}

pub(super) async fn search_cluster(
    state: Shared,
    peers: Arc<crate::admin::peers::Peers>,
    user: CurrentUser,
    p: SearchParams,
) -> Response {
    let mut cursors = match cursors_of(p.before.as_ref()) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
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
            let (peers, user_name, node) = (peers.clone(), user.on_behalf(), node.clone());
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
            Ok(page) => {
                let v = serde_json::to_value(page_view(&page)).unwrap_or(Value::Null);
                pages.push(node_page(me, &v));
            }
            Err(r) => return r,
        }
    }
    gather_pages(calls, &mut pages, &mut unreachable).await;
    let merged = merge_pages(&pages, limit, &mut cursors);
    let names: std::collections::HashMap<i32, String> =
        nodes.iter().map(|n| (n.number, n.name.clone())).collect();
    let done = pages
        .iter()
        .all(|pg| cursors.get(&pg.number) == Some(&None))
        && unreachable.is_empty();
    let items = merged
        .into_iter()
        .map(|(_, _, number, mut v)| {
            if let Some(obj) = v.as_object_mut() {
                let node = names
                    .get(&number)
                    .cloned()
                    .unwrap_or_else(|| "this node".into());
                obj.insert("node".into(), Value::String(node));
            }
            v
        })
        .collect();
    Json(ClusterPage {
        items,
        next: (!done).then(|| cursor_text(&cursors)),
        partial: pages.iter().any(|pg| pg.partial),
        unreachable,
    })
    .into_response()
}

/// Another node's answer to a search.
type NodeAnswer = (
    crate::store::Peer,
    Result<(StatusCode, bytes::Bytes), String>,
);

/// The other nodes' pages as they answer; a node that does not (or not
/// with a page) is named in `unreachable`.
async fn gather_pages(
    calls: Vec<tokio::task::JoinHandle<NodeAnswer>>,
    pages: &mut Vec<NodePage>,
    unreachable: &mut Vec<String>,
) {
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
}

/// A page of a search over every node. The items are the nodes' own
/// answers (each a [`MetaView`]) with the node's name added.
#[derive(Debug, Serialize)]
pub(super) struct ClusterPage {
    items: Vec<Value>,
    /// Where each node's next page starts; none after the last.
    next: Option<String>,
    partial: bool,
    /// Nodes that could not be asked this time.
    unreachable: Vec<String>,
}

/// This node's page of a search.
pub(super) async fn search_messages_local(
    state: &AdminState,
    user: &CurrentUser,
    p: SearchParams,
) -> Result<Page, Response> {
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
    Ok(page)
}

/// A page as the console shows it: patient ids masked.
pub(super) fn page_view(page: &Page) -> MessagePage<'_> {
    MessagePage {
        items: page.items.iter().map(|m| MetaView::of(m, false)).collect(),
        next: page.next,
        partial: page.partial,
    }
}

/// When message `id` is in another node's log (and this request is not
/// already from a node), asks that node and gives its answer.
pub(super) async fn on_owner(
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
            .call(&node, method, path_and_query, &user.on_behalf(), body)
            .await
        {
            Ok((status, bytes)) => {
                (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
            }
            Err(e) => error(StatusCode::BAD_GATEWAY, e),
        },
    )
}

/// In a cluster, when a browser (not another node) asked: the same request
/// made of every other live node for the same user. Their answers (JSON
/// objects) and the nodes that could not carry it out; a request another
/// node refuses (4xx) is that refusal.
pub(super) async fn on_every_node(
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
            crate::admin::peers::TIMEOUT,
            axum::http::Method::POST,
            path,
            &user.on_behalf(),
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

/// The newest `limit` items of every node's page together, each with its
/// node's number; moves each node's cursor past what was taken, or ends it
/// when the node has nothing more.
fn merge_pages(
    pages: &[NodePage],
    limit: usize,
    cursors: &mut NodeCursors,
) -> Vec<(String, i64, i32, Value)> {
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
    for pg in pages {
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
    merged
}
