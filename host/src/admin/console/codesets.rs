//! The code sets loaded and how old they are.

use super::*;

pub(super) async fn codesets(State(state): State<Shared>, _: Viewer) -> Response {
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
