//! Live events: metadata of each answered message as it happens (never
//! PHI), as server-sent events.

use super::*;

/// Counts an open event stream; the count drops with it.
pub(super) struct StreamSlot;

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn events(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Console(flow): Console,
) -> Response {
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
                user.on_behalf(),
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
                            let visible = user.may_see_route(&ev.summary.route)
                                && ev.summary.destination.split(',').filter(|d| !d.is_empty()).all(|d| user.may_see_destination(d));
                            if !visible || (ev.summary.route.is_empty() && user.routes.is_some()) {
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
