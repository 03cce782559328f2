//! The audit trail: who did what, written with the action, and read back
//! by administrators.

use super::*;

/// Writes the audit entry of an action `user` took (or is about to take);
/// when it cannot be written the answer says so (500), and an action that
/// shows PHI does not go on.
pub(super) async fn audit(
    state: &AdminState,
    user: &CurrentUser,
    action: &str,
    target: &str,
    result: &str,
) -> Result<(), Response> {
    state
        .audit(&user.name, action, target, result)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AuditParams {
    before: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/audit`: a page of the audit trail, newest first.
#[derive(Debug, Serialize)]
pub(super) struct AuditPage<'a> {
    items: Vec<AuditView<'a>>,
}

/// An audit entry with its time in RFC 3339.
#[derive(Debug, Serialize)]
pub(super) struct AuditView<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a crate::flow::log::AuditEntry,
}

pub(super) async fn audit_list(state: &AdminState, p: AuditParams) -> Response {
    let log = match log_of(state) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    match blocking(move || log.audit_entries(p.before, p.limit.unwrap_or(100))).await {
        Ok(Ok(items)) => Json(AuditPage {
            items: items
                .iter()
                .map(|entry| AuditView {
                    time: rfc3339(entry.time),
                    entry,
                })
                .collect(),
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => r,
    }
}

pub(super) async fn audit_trail(
    State(state): State<Shared>,
    _: Admin,
    Query(p): Query<AuditParams>,
) -> Response {
    audit_list(&state, p).await
}
