//! Actions on messages and destinations: reprocess one or many, retry or
//! resend a journaled delivery, pause or reset a destination, resolve
//! errors. Every one is audited.

use super::*;

/// Runs a logged message through its route again, as if its listener had
/// just received it.
pub(super) async fn reprocess(state: &AdminState, full: &Full) -> Result<String, String> {
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

/// `POST /api/messages/{id}/reprocess`: the answer it got and the new
/// message, once the log has it.
#[derive(Debug, Serialize)]
pub(super) struct Reprocessed {
    ok: bool,
    /// MSA-1 of the answer.
    ack: String,
    message: Option<i64>,
}

/// `POST /api/reprocess`: unconfirmed, how many match; confirmed, how it
/// went. In a cluster, summed over the nodes, with those not asked.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum BulkAnswer {
    Count {
        count: u64,
        limit: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        unreachable: Option<Vec<String>>,
    },
    Done {
        ok: bool,
        reprocessed: u64,
        failed: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        unreachable: Option<Vec<String>>,
    },
}

/// `POST /api/messages/{id}/retry` and `/resend`: the destinations whose
/// delivery was queued again.
#[derive(Debug, Serialize)]
pub(super) struct Requeued {
    ok: bool,
    destinations: Vec<String>,
}

/// An action every node of a cluster carries out: whether all did.
#[derive(Debug, Serialize)]
pub(super) struct OnEveryNode {
    ok: bool,
    unreachable: Vec<String>,
}

/// `POST /api/errors/resolve`: messages marked resolved, on every node.
#[derive(Debug, Serialize)]
pub(super) struct Resolved {
    ok: bool,
    resolved: u64,
    unreachable: Vec<String>,
}

pub(super) async fn reprocess_one(
    State(state): State<Shared>,
    Operator(user): Operator,
    Path(id): Path<i64>,
) -> Response {
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
            if let Err(r) = audit(&state, &user, "reprocess", &target, &format!("ok: {ack}")).await
            {
                return r;
            }
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
            Json(Reprocessed {
                ok: true,
                ack,
                message: new_id,
            })
            .into_response()
        }
        Err(why) => {
            if let Err(r) = audit(
                &state,
                &user,
                "reprocess",
                &target,
                &format!("failed: {why}"),
            )
            .await
            {
                return r;
            }
            error(StatusCode::CONFLICT, why)
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub(super) struct BulkBody {
    filter: SearchParams,
    confirm: bool,
}

pub(super) async fn reprocess_many(
    State(state): State<Shared>,
    Operator(user): Operator,
    Json(body): Json<BulkBody>,
) -> Response {
    if state.peers.is_none() || body.filter.local == Some(true) || user.by_peer() {
        return match reprocess_here(&state, &user, &body).await {
            Ok(answer) => Json(answer).into_response(),
            Err(r) => r,
        };
    }
    // In a cluster each node reprocesses the matching messages in its own
    // log; the counts are added up.
    let mut ask = body.clone();
    ask.filter.local = Some(true);
    let ask = serde_json::to_value(&ask).unwrap_or(Value::Null);
    let mine = match reprocess_here(&state, &user, &body).await {
        Ok(answer) => serde_json::to_value(answer).unwrap_or(Value::Null),
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
        return Json(BulkAnswer::Count {
            count: sum("count"),
            limit: MAX_BULK,
            unreachable: Some(unreachable),
        })
        .into_response();
    }
    let failed = sum("failed");
    Json(BulkAnswer::Done {
        ok: failed == 0 && unreachable.is_empty(),
        reprocessed: sum("reprocessed"),
        failed,
        unreachable: Some(unreachable),
    })
    .into_response()
}

/// Reprocesses (or, unconfirmed, counts) the matching messages of this
/// node's log.
pub(super) async fn reprocess_here(
    state: &Shared,
    user: &CurrentUser,
    body: &BulkBody,
) -> Result<BulkAnswer, Response> {
    let log = log_of(state)?.clone();
    let search = search_of(&body.filter, user)?;
    if search.matching.contains.is_some() {
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
        return Ok(BulkAnswer::Count {
            count: ids.len() as u64,
            limit: MAX_BULK,
            unreachable: None,
        });
    }
    let (mut ok, mut failed) = (0u64, 0u64);
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
    )
    .await?;
    Ok(BulkAnswer::Done {
        ok: failed == 0,
        reprocessed: ok,
        failed,
        unreachable: None,
    })
}

/// The journal rows of a logged message.
pub(super) async fn journal_ids(state: &AdminState, id: i64) -> Result<Vec<i64>, Response> {
    let log = log_of(state)?.clone();
    match blocking(move || log.journal_ids(id)).await? {
        Ok(ids) => Ok(ids),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

pub(super) async fn queue_action(
    state: Shared,
    user: CurrentUser,
    id: i64,
    resend: bool,
) -> Response {
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
        if let Err(r) = audit(&state, &user, action, &target, &format!("nothing {what}")).await {
            return r;
        }
        return error(
            StatusCode::CONFLICT,
            format!("message {id} has no {what} delivery"),
        );
    }
    if let Err(r) = audit(
        &state,
        &user,
        action,
        &target,
        &format!("ok: {}", done.join(",")),
    )
    .await
    {
        return r;
    }
    Json(Requeued {
        ok: true,
        destinations: done,
    })
    .into_response()
}

pub(super) async fn retry(
    State(state): State<Shared>,
    Operator(user): Operator,
    Path(id): Path<i64>,
) -> Response {
    let path = format!("/api/messages/{id}/retry");
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::POST, &path, None).await {
        return r;
    }
    queue_action(state, user, id, false).await
}

pub(super) async fn resend(
    State(state): State<Shared>,
    Operator(user): Operator,
    Path(id): Path<i64>,
) -> Response {
    let path = format!("/api/messages/{id}/resend");
    if let Some(r) = on_owner(&state, &user, id, axum::http::Method::POST, &path, None).await {
        return r;
    }
    queue_action(state, user, id, true).await
}

pub(super) async fn destination_action(
    State(state): State<Shared>,
    Operator(user): Operator,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if !user.may_see_destination(&name) {
        return error(StatusCode::NOT_FOUND, "no such destination");
    }
    let pipeline = state.slot.current();
    let Some(dest) = pipeline.destinations().get(&name) else {
        return error(StatusCode::NOT_FOUND, "no such destination");
    };
    // Relay mode sends each message while its sender waits: there is no
    // queue to hold, so pausing would change nothing and is not offered.
    if !pipeline.queued(&name) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "destination {name} takes relay-mode messages only: they are sent while the sender waits, with no queue to pause, resume or hold behind a breaker"
            ),
        );
    }
    let control = state.deliveries.control(&name);
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
    if let Err(r) = audit(&state, &user, &action, &format!("destination {name}"), "ok").await {
        return r;
    }
    // In a cluster every node delivers: each pauses, resumes or resets its own.
    let path = format!("/api/destinations/{name}/{action}");
    match on_every_node(&state, &user, &path, None).await {
        Err(r) => r,
        Ok((_, unreachable)) => Json(OnEveryNode {
            ok: unreachable.is_empty(),
            unreachable,
        })
        .into_response(),
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub(super) struct ResolveBody {
    ids: Vec<i64>,
    route: Option<String>,
    destination: Option<String>,
}

pub(super) async fn resolve(
    State(state): State<Shared>,
    Operator(user): Operator,
    Console(flow): Console,
    Json(body): Json<ResolveBody>,
) -> Response {
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
    let resolved = match resolve_here(&state, &user, &flow, &body, &route, &destination).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let target = match (&route, &destination) {
        (Some(r), _) => format!("route {r}"),
        (None, Some(d)) => format!("destination {d}"),
        (None, None) if body.ids.is_empty() => "all".to_string(),
        (None, None) => format!("{} messages", body.ids.len()),
    };
    if let Err(r) = audit(
        &state,
        &user,
        "resolve",
        &target,
        &format!("{resolved} resolved"),
    )
    .await
    {
        return r;
    }
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
            Json(Resolved {
                ok: unreachable.is_empty(),
                resolved,
                unreachable,
            })
            .into_response()
        }
    }
}

/// Resolves on this node: the messages given by id, or every unresolved one
/// of the scope, in the log and on the board; how many were open.
async fn resolve_here(
    state: &Shared,
    user: &CurrentUser,
    flow: &Flow,
    body: &ResolveBody,
    route: &Option<String>,
    destination: &Option<String>,
) -> Result<usize, Response> {
    let mut resolved = 0usize;
    if let Some(log) = flow.log.clone() {
        // The messages concerned: the ids given, or every unresolved one of the scope.
        let metas: Vec<Meta> = if body.ids.is_empty() {
            let search = Search {
                unresolved: true,
                matching: Matching {
                    route: route.clone(),
                    destination: destination.clone(),
                    ..Matching::default()
                },
                routes_allowed: user.routes.clone(),
                destinations_allowed: user.destinations.clone(),
                ..Search::default()
            };
            let l = log.clone();
            match blocking(move || l.search_all(&search, 100_000)).await {
                Ok(Ok(metas)) => metas,
                Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
                Err(r) => return Err(r),
            }
        } else {
            let mut all = Vec::new();
            for id in &body.ids {
                if let Ok(f) = visible_message(state, user, *id).await {
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
    Ok(resolved)
}
