//! Data quality: detections by sender over a period, with masked
//! examples, and the per-sender validation report.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct QualityParams {
    sender: Option<String>,
    days: Option<i64>,
    format: Option<String>,
}

/// `GET /api/quality`: per sender, messages and rejections by day and the
/// most frequent detections, each with a masked example.
#[derive(Debug, Serialize)]
pub(super) struct QualityView {
    days: i64,
    senders: Vec<SenderQuality>,
}

#[derive(Debug, Serialize)]
pub(super) struct SenderQuality {
    sender: String,
    messages: i64,
    rejected: i64,
    by_day: Vec<DayQuality>,
    top_detections: Vec<TopDetection>,
}

#[derive(Debug, Serialize)]
pub(super) struct DayQuality {
    /// `YYYY-MM-DD`.
    day: String,
    messages: i64,
    rejected: i64,
    /// Race and ethnicity: how many reported them, how many complete.
    completeness: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct TopDetection {
    id: String,
    messages: i64,
    example_id: i64,
    /// For the first few detections of the first senders only.
    example: Option<Example>,
}

/// A masked example of a detection: where, what the clinic read (quoted
/// values cut out) and the segment with its PHI masked.
#[derive(Debug, Serialize)]
pub(super) struct Example {
    id: i64,
    control_id: String,
    location: String,
    text: String,
    segment: String,
}

pub(super) async fn quality(
    Viewer(user): Viewer,
    Log(log): Log,
    Query(p): Query<QualityParams>,
) -> Response {
    let days = p.days.unwrap_or(30).clamp(1, 366);
    let since = now_ms() - days * 86_400_000;
    let sender = nonempty(&p.sender);
    let one_sender = sender.is_some();
    // A user limited to some routes sees no cross-route statistics.
    if user.routes.is_some() || user.destinations.is_some() {
        return error(
            StatusCode::FORBIDDEN,
            "data quality covers every route; this user is limited to some",
        );
    }
    let result = blocking(move || {
        let rows = log.quality(since, sender.as_deref())?;
        let mut detections = log.detections_by_sender(since, sender.as_deref(), 10)?;
        let mut senders: Vec<SenderQuality> = Vec::new();
        let mut by_sender: HashMap<String, Vec<(String, i64, i64, Value)>> = HashMap::new();
        for (s, day, n, rejected, completeness) in rows {
            by_sender
                .entry(s)
                .or_default()
                .push((day, n, rejected, completeness));
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
                let full = if with_examples && rank < ranks {
                    log.get(*example)?
                } else {
                    None
                };
                examples.push(full.map(|f| example_of(&f, id)));
            }
            senders.push(SenderQuality {
                sender: s,
                messages,
                rejected,
                by_day: days_rows
                    .into_iter()
                    .map(|(day, messages, rejected, completeness)| DayQuality {
                        day,
                        messages,
                        rejected,
                        completeness,
                    })
                    .collect(),
                top_detections: top
                    .into_iter()
                    .zip(examples)
                    .map(|((id, messages, example_id), example)| TopDetection {
                        id,
                        messages,
                        example_id,
                        example,
                    })
                    .collect(),
            });
        }
        Ok::<_, crate::flow::log::LogError>(senders)
    })
    .await;
    match result {
        Ok(Ok(senders)) => Json(QualityView { days, senders }).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(r) => r,
    }
}

/// A masked example of a detection in one message: where it was found, the
/// sentence the clinic read (quoted values cut out) and that segment with
/// its PHI masked.
pub(super) fn example_of(full: &Full, detection: &str) -> Example {
    let answer = String::from_utf8_lossy(&full.answer);
    let decoded = decode_answer(&answer);
    let err = decoded
        .err
        .iter()
        .find(|e| crate::hl7::detection_id(&e.text).is_some_and(|d| d == detection));
    let location = err.map(|e| e.location.clone()).unwrap_or_default();
    let text = err
        .map(|e| crate::report::without_value(&e.text))
        .unwrap_or_default();
    // `PID-11.5`, `RXA[2]-5.1`: the segment's name and which of them.
    let name = location.get(..3).unwrap_or("");
    let nth: usize = location
        .get(3..)
        .and_then(|r| r.strip_prefix('['))
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let segment = (name.len() == 3)
        .then(|| {
            let masked = crate::admin::mask::mask_hl7(&String::from_utf8_lossy(&full.received));
            masked
                .split(['\r', '\n'])
                .filter(|s| s.get(..3) == Some(name))
                .nth(nth.saturating_sub(1))
                .map(str::to_string)
        })
        .flatten()
        .unwrap_or_default();
    Example {
        id: full.meta.id,
        control_id: full.meta.control_id.clone(),
        location,
        text,
        segment,
    }
}

/// The per-sender report an HIE hands a clinic: the validation report of
/// the sender's messages over the period, from the log.
pub(super) async fn quality_report(
    Viewer(user): Viewer,
    Log(log): Log,
    Query(p): Query<QualityParams>,
) -> Response {
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
            matching: Matching {
                sender: Some(sender),
                ..Matching::default()
            },
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
pub(super) fn as_dry_run(full: &Full) -> crate::pipeline::DryRun {
    use crate::hl7::{AckCode, Issue, Severity};
    use crate::pipeline::{DryOutcome, DryRun};
    let answer = String::from_utf8_lossy(&full.answer);
    let decoded = decode_answer(&answer);
    let mut issues: Vec<Issue> = decoded
        .err
        .iter()
        .map(|e| {
            let mut issue = Issue::error(&e.code)
                .text(e.text.clone())
                .at(e.location.clone());
            issue.severity = match e.severity.as_str() {
                "W" => Severity::Warning,
                "I" => Severity::Info,
                _ => Severity::Error,
            };
            issue
        })
        .collect();
    // An answer refusing without ERR segments: its MSA-3 says why, if anything does.
    if issues.is_empty()
        && let Some(msa) = &decoded.msa
        && !msa.text.is_empty()
        && msa.code != "AA"
        && msa.code != "CA"
    {
        issues.push(Issue::error("207").text(msa.text.clone()));
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
