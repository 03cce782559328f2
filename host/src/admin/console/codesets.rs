//! The code sets loaded and how old they are.

use super::*;

/// One code set as `GET /api/codesets` lists it.
#[derive(Debug, Serialize)]
pub(super) struct CodesetView<'a> {
    name: &'a str,
    /// Where it was read from, comma-separated.
    source: String,
    /// The set's own date, as its files say.
    date: &'a str,
    count: usize,
    age_days: Option<i64>,
    /// A CVX or NDC set older than `[console] codeset_max_age_days`.
    stale: bool,
}

pub(super) async fn codesets(State(state): State<Shared>, _: Viewer) -> Response {
    let pipeline = state.slot.current();
    let (sets, max_age) = pipeline.codesets();
    let today = now_ms().div_euclid(86_400_000);
    let rows: Vec<CodesetView> = sets
        .iter()
        .map(|c| {
            let age = parse_time(&c.date).map(|ms| today - ms.div_euclid(86_400_000));
            let watched = matches!(c.name.as_str(), "cvx" | "ndc");
            CodesetView {
                name: &c.name,
                source: c.sources.join(", "),
                date: &c.date,
                count: c.count,
                age_days: age,
                stale: watched && age.is_none_or(|a| a > max_age as i64),
            }
        })
        .collect();
    Json(rows).into_response()
}
