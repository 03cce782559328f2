//! The message browser: searches (cursors per node), one message's
//! detail, masked unless an operator unmasks it (audited).

use super::*;

/// Search parameters, as the query string gives them.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub struct SearchParams {
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(flatten)]
    pub matching: Matching,
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
    pub(super) fn id(&self) -> Option<i64> {
        match self {
            Cursor::Id(id) => Some(*id),
            Cursor::Nodes(text) => text.trim().parse().ok(),
        }
    }
}

/// Per node number: the id its next page starts below (`None`: done).
pub(super) type NodeCursors = std::collections::BTreeMap<i32, Option<i64>>;

/// Most nodes a cursor names.
pub(super) const MAX_CURSOR_NODES: usize = 256;

pub(super) fn parse_cursor(text: &str) -> Result<NodeCursors, String> {
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

pub(super) fn cursor_text(cursors: &NodeCursors) -> String {
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

pub(super) use crate::flow::log::nonempty;

/// The search a user may make with these parameters.
pub(super) fn search_of(p: &SearchParams, user: &CurrentUser) -> Result<Search, Response> {
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
    let matching = p.matching.trimmed();
    if matching.contains.is_some() {
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
    if let Some(s) = &matching.status {
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
        matching,
        unresolved: p.unresolved.unwrap_or(false),
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

/// A message's metadata as the console shows it: the log's [`Meta`] with
/// its time in RFC 3339 and its patient id masked unless unmasked.
#[derive(Debug, Serialize)]
pub(super) struct MetaView<'a> {
    time: String,
    patient_id: String,
    #[serde(flatten)]
    meta: &'a Meta,
}

impl MetaView<'_> {
    pub(super) fn of(meta: &Meta, unmask: bool) -> MetaView<'_> {
        MetaView {
            time: rfc3339(meta.time),
            patient_id: match unmask {
                true => meta.patient_id.clone(),
                false => mask_id(&meta.patient_id),
            },
            meta,
        }
    }
}

/// A page of search results on one node.
#[derive(Debug, Serialize)]
pub(super) struct MessagePage<'a> {
    pub(super) items: Vec<MetaView<'a>>,
    /// Where the next page starts (`before`); none after the last.
    pub(super) next: Option<i64>,
    /// The content search stopped early (time or the asker went away).
    pub(super) partial: bool,
}

/// A stage of the message's route as stored, its text masked when shown
/// masked.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StageView {
    plugin: String,
    verdict: String,
    /// A count (older logs may hold a list).
    issues: Value,
    changed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// A delivery attempt as shown.
#[derive(Debug, Serialize)]
pub(super) struct AttemptView {
    time: String,
    destination: String,
    result: String,
    class: String,
    answer: Option<String>,
}

/// An answer's MSA.
#[derive(Debug, Serialize)]
pub(super) struct MsaView {
    pub(super) code: String,
    pub(super) control_id: String,
    pub(super) text: String,
}

/// One ERR of an answer.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ErrView {
    pub(super) location: String,
    pub(super) code: String,
    pub(super) code_text: String,
    pub(super) severity: String,
    pub(super) app_code: String,
    pub(super) text: String,
}

/// MSA and ERR of an answer, decoded.
#[derive(Debug, Serialize)]
pub(super) struct DecodedAnswer {
    pub(super) msa: Option<MsaView>,
    pub(super) err: Vec<ErrView>,
}

/// `GET /api/messages/{id}`: one message whole, masked unless unmasked.
#[derive(Debug, Serialize)]
pub(super) struct MessageDetail<'a> {
    meta: MetaView<'a>,
    received: String,
    stages: Vec<StageView>,
    issues: Vec<ErrView>,
    answer: String,
    answer_decoded: DecodedAnswer,
    attempts: Vec<AttemptView>,
    masked: bool,
    /// Delivered through the queue (commit mode): Retry now and Resend
    /// apply. A relay-mode message was sent while its sender waited.
    journaled: bool,
    reprocess_of: Option<i64>,
    reprocessed_as: &'a [i64],
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
pub(super) struct CancelOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(super) async fn messages(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Query(p): Query<SearchParams>,
) -> Response {
    search_messages(state, user, p).await
}

/// The same search with its parameters in a JSON body, so a patient id
/// never travels in a URL.
pub(super) async fn messages_post(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Json(p): Json<SearchParams>,
) -> Response {
    search_messages(state, user, p).await
}

pub(super) async fn search_messages(state: Shared, user: CurrentUser, p: SearchParams) -> Response {
    if let Some(peers) = state.peers.clone()
        && p.local != Some(true)
        && !user.by_peer()
    {
        return search_cluster(state, peers, user, p).await;
    }
    match search_messages_local(&state, &user, p).await {
        Ok(page) => Json(page_view(&page)).into_response(),
        Err(r) => r,
    }
}

/// The first destination of a message (a message for several has them
/// comma-separated) for visibility checks.
pub(super) fn may_see(user: &CurrentUser, meta: &Meta) -> bool {
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
pub(super) async fn visible_message(
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
pub(super) struct DetailParams {
    unmask: Option<bool>,
}

/// MSA and ERR of an answer, read with the HL7 parser: values decoded
/// (`\\S\\` is `^` again), ERR-2 written as the validator writes locations
/// (`PID-11.5`, `RXA[2]-5.1`). An answer that does not parse has neither.
pub(super) fn decode_answer(text: &str) -> DecodedAnswer {
    let mut decoded = DecodedAnswer {
        msa: None,
        err: Vec::new(),
    };
    let text = crate::hl7::normalize_segments(text);
    let Ok(msg) = crate::bulk::rsp::parse(&text) else {
        return decoded;
    };
    for seg in crate::bulk::rsp::segments(&msg) {
        match seg.name() {
            "MSA" if decoded.msa.is_none() => {
                decoded.msa = Some(MsaView {
                    code: seg.text(1, 1),
                    control_id: seg.text(2, 1),
                    text: seg.text(3, 1),
                });
            }
            "ERR" if decoded.err.len() < 100 => decoded.err.push(ErrView {
                location: location_of(&seg),
                code: seg.text(3, 1),
                code_text: seg.text(3, 2),
                severity: seg.text(4, 1),
                app_code: seg.text(5, 1),
                text: seg.text(8, 1),
            }),
            _ => {}
        }
    }
    decoded
}

/// ERR-2 (segment, its sequence, field, repetition, component,
/// subcomponent) as a location: `PID-11.5`, `RXA[2]-5.1`, `OBX[3]-5[2]`.
fn location_of(err: &crate::bulk::rsp::Seg<'_>) -> String {
    let part = |c: usize| err.text(2, c);
    let (segment, field) = (part(1), part(3));
    if segment.is_empty() {
        return String::new();
    }
    let nth = |n: String| match n.parse::<u32>() {
        Ok(k) if k > 1 => format!("[{k}]"),
        _ => String::new(),
    };
    let mut out = format!("{segment}{}", nth(part(2)));
    if field.is_empty() {
        return out;
    }
    out.push_str(&format!("-{field}{}", nth(part(4))));
    for c in [5, 6] {
        match part(c) {
            v if v.is_empty() => break,
            v => out.push_str(&format!(".{v}")),
        }
    }
    out
}

pub(super) async fn message(
    State(state): State<Shared>,
    Viewer(user): Viewer,
    Path(id): Path<i64>,
    Query(p): Query<DetailParams>,
) -> Response {
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
    if unmask
        && let Err(r) = audit(&state, &user, "unmask", &format!("message {id}"), "shown").await
    {
        return r;
    }
    let received = String::from_utf8_lossy(&full.received).into_owned();
    let answer = String::from_utf8_lossy(&full.answer).into_owned();
    let stages: Vec<StageView> = serde_json::from_str::<Vec<StageView>>(&full.stages)
        .unwrap_or_default()
        .into_iter()
        .map(|s| StageView {
            text: s.text.as_deref().map(&shown),
            ..s
        })
        .collect();
    let attempts: Vec<AttemptView> = full
        .attempts
        .iter()
        .map(|a| AttemptView {
            time: rfc3339(a.time),
            destination: a.destination.clone(),
            result: a.result.clone(),
            class: a.class.clone(),
            answer: a
                .answer
                .as_ref()
                .map(|b| shown(&String::from_utf8_lossy(b))),
        })
        .collect();
    // Read from the answer as shown: masked, its sentences' quoted values
    // are too.
    let answer = shown(&answer);
    let decoded = decode_answer(&answer);
    let journaled = match journal_ids(&state, id).await {
        Ok(ids) => !ids.is_empty(),
        Err(r) => return r,
    };
    // PHI shown in full must not be kept by a browser or a proxy.
    let cache = unmask.then_some([(axum::http::header::CACHE_CONTROL, "no-store")]);
    let body = Json(MessageDetail {
        meta: MetaView::of(&full.meta, unmask),
        received: shown(&received),
        stages,
        issues: decoded.err.clone(),
        answer,
        answer_decoded: decoded,
        attempts,
        masked: !unmask,
        journaled,
        reprocess_of: full.reprocess_of,
        reprocessed_as: &full.reprocessed_as,
    });
    (cache, body).into_response()
}
