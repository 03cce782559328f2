//! The dashboard: counts by route and destination, summed over the
//! cluster's live nodes when there is one.

use super::*;

pub(super) async fn dashboard(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Console(flow): Console,
) -> Response {
    Json(board_for(&state, &flow, &user).await).into_response()
}

/// How long the dashboard waits for another node's counts.
pub(super) const DASHBOARD_WAIT: Duration = Duration::from_secs(1);

/// The dashboard `user` may see. In a cluster (asked by a browser, not by
/// another node) every live node's counts are added up, and what is queued
/// is read from the shared queue.
pub(super) async fn board_for(state: &AdminState, flow: &Flow, user: &CurrentUser) -> Dashboard {
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
            &user.on_behalf(),
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

/// `GET /api/dashboard/history`: the charts' counts, the last hour by
/// minute and the last seven days by hour; in a cluster (asked by a browser)
/// every live node's are added up.
pub(super) async fn history(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Console(flow): Console,
) -> Response {
    let mut traffic = flow
        .board
        .traffic(now_ms(), &|r| user.may_see_route(r), &|d| {
            user.may_see_destination(d)
        });
    if let Some(peers) = state.peers.clone().filter(|_| !user.by_peer()) {
        for (_, answer) in peers
            .call_all(
                DASHBOARD_WAIT,
                axum::http::Method::GET,
                "/api/dashboard/history",
                &user.on_behalf(),
                None,
            )
            .await
        {
            if let Ok((status, body)) = answer
                && status.is_success()
                && let Ok(other) = serde_json::from_slice(&body)
            {
                traffic.add(other);
            }
        }
    }
    Json(traffic).into_response()
}
