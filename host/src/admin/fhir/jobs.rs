//! An export's life: kick-off, status polling, cancel and the file
//! downloads, each audited.

use super::*;

/// `GET /fhir/Group/{id}/$export`: checks the parameters as the Bulk Data
/// spec says (an unsupported one is a 400 with an OperationOutcome), makes
/// the job and answers 202 with its status URL.
pub(super) async fn kick_off(
    State(state): State<Shared>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((id, op)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if op != "$export" {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            "only $export is supported on a Group",
        );
    }
    let ex = match access(&state, &user) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !prefer.split(',').any(|p| p.trim() == "respond-async") {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "a bulk export needs the header Prefer: respond-async",
        );
    }
    let cohort = ["csv", "ndjson"]
        .iter()
        .map(|ext| ex.groups().join(&id).join(format!("cohort.{ext}")))
        .find(|p| valid_id(&id) && p.exists());
    let Some(cohort) = cohort else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such Group");
    };
    let mut spec = JobSpec {
        tolerance_days: 7,
        request: format!("{}/fhir/Group/{id}/$export", base_url(&state, &headers)),
        ..JobSpec::default()
    };
    if let Err(r) = export_params(&mut spec, &params) {
        return r;
    }
    let jobs = ex.jobs();
    if std::fs::read_dir(&jobs).map(|d| d.count()).unwrap_or(0) >= MAX_JOBS {
        return outcome(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "too many export jobs are kept; delete finished ones first",
        );
    }
    let job_id = new_id();
    let dir = jobs.join(&job_id);
    let made = tokio::task::spawn_blocking(move || Job::create(&dir, &cohort, None, spec)).await;
    let job = match made {
        Ok(Ok(j)) => Arc::new(j),
        Ok(Err(e)) => {
            let text = ex.for_client(&e.to_string());
            return outcome(StatusCode::BAD_REQUEST, "invalid", &text);
        }
        Err(e) => {
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                &e.to_string(),
            );
        }
    };
    ex.start(&state, &job_id, job);
    if let Err(e) = state
        .audit(
            &user.name,
            "bulk-export",
            &format!("group {id}"),
            &format!("job {job_id}"),
        )
        .await
    {
        return exception(&e);
    }
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = format!("{}/fhir/bulkstatus/{job_id}", base_url(&state, &headers)).parse() {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    r
}

/// `GET /fhir/bulkstatus/{job}`: 202 with `X-Progress` while it runs, 200
/// with the manifest once complete.
pub(super) async fn status(
    State(state): State<Shared>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    let (_, job) = match job_access(&state, &user, &job_id) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let progress = &job.progress;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
    match job.state() {
        Ok(JobState::Running) => {
            let mut r = StatusCode::ACCEPTED.into_response();
            let text = format!(
                "{}/{} patients",
                load(&progress.done),
                load(&progress.total)
            );
            if let Ok(v) = text.parse() {
                r.headers_mut().insert("x-progress", v);
            }
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
            r
        }
        Ok(JobState::Cancelled) => outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "the export job was cancelled",
        ),
        Ok(JobState::Completed) => {
            let base = base_url(&state, &headers);
            let url = |name: &str| {
                format!(
                    "{base}/fhir/bulkfiles/{job_id}/{}",
                    crate::bulk::job::file_name(name)
                )
            };
            let manifest = match job.manifest(url) {
                Ok(m) => m,
                Err(e) => {
                    return outcome(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "exception",
                        &e.to_string(),
                    );
                }
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                manifest.to_string(),
            )
                .into_response()
        }
        Err(e) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            &e.to_string(),
        ),
    }
}

/// `DELETE /fhir/bulkstatus/{job}`: cancels the job and deletes its files.
pub(super) async fn cancel(
    State(state): State<Shared>,
    user: CurrentUser,
    Path(job_id): Path<String>,
) -> Response {
    let (ex, job) = match job_access(&state, &user, &job_id) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let _ = job.cancel();
    let running = ex.running.lock().ok().and_then(|mut r| r.remove(&job_id));
    if let Some((_, token)) = running {
        token.cancel();
    }
    let dir = job.dir().to_path_buf();
    drop(job);
    let removed = tokio::task::spawn_blocking(move || remove_later(&dir)).await;
    if let Err(e) = state
        .audit(
            &user.name,
            "bulk-cancel",
            &format!("job {job_id}"),
            if matches!(removed, Ok(true)) {
                "deleted"
            } else {
                "cancelled"
            },
        )
        .await
    {
        return exception(&e);
    }
    StatusCode::ACCEPTED.into_response()
}

/// Deletes a cancelled job's directory once its run has let go of it.
pub(super) fn remove_later(dir: &FsPath) -> bool {
    for _ in 0..50 {
        if std::fs::remove_dir_all(dir).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// `GET /fhir/bulkfiles/{job}/{file}`: one NDJSON file, streamed.
pub(super) async fn file(
    State(state): State<Shared>,
    user: CurrentUser,
    Path((job_id, name)): Path<(String, String)>,
) -> Response {
    let ex = match access(&state, &user) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let known: Vec<String> = TYPES
        .iter()
        .chain(std::iter::once(&crate::bulk::job::ERRORS))
        .map(|t| crate::bulk::job::file_name(t))
        .collect();
    if !valid_id(&job_id) || !known.contains(&name) {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such file");
    }
    let Some(job) = ex.job(&job_id) else {
        return no_such_job();
    };
    if !matches!(job.state(), Ok(JobState::Completed)) {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "the export is not complete",
        );
    }
    let path = job.dir().join(&name);
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            if let Err(e) = state
                .audit(
                    &user.name,
                    "bulk-download",
                    &format!("job {job_id} {name}"),
                    "ok",
                )
                .await
            {
                return exception(&e);
            }
            (
                [(header::CONTENT_TYPE, "application/fhir+ndjson")],
                Body::from_stream(tokio_util::io::ReaderStream::new(f)),
            )
                .into_response()
        }
        Err(_) => outcome(StatusCode::NOT_FOUND, "not-found", "no such file"),
    }
}

/// Reads a kick-off's parameters into `spec`; an unsupported one is a 400
/// with an OperationOutcome, as the Bulk Data spec says.
fn export_params(spec: &mut JobSpec, params: &[(String, String)]) -> Result<(), Response> {
    let bad = |code: &str, text: String| outcome(StatusCode::BAD_REQUEST, code, &text);
    for (k, v) in params {
        match k.as_str() {
            "_outputFormat" => {
                if !["application/fhir+ndjson", "application/ndjson", "ndjson"]
                    .contains(&v.as_str())
                {
                    return Err(bad(
                        "not-supported",
                        format!(
                            "_outputFormat {v:?} is not supported; use application/fhir+ndjson"
                        ),
                    ));
                }
            }
            "_type" => {
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !TYPES.contains(&t) {
                        return Err(bad(
                            "not-supported",
                            format!(
                                "_type {t:?} is not exported; the types are {}",
                                TYPES.join(", ")
                            ),
                        ));
                    }
                    if !spec.types.iter().any(|x| x == t) {
                        spec.types.push(t.to_string());
                    }
                }
            }
            "_since" => match crate::bulk::since_date(v) {
                Ok(d) => spec.since = Some(d),
                Err(e) => return Err(bad("invalid", format!("_since: {e}"))),
            },
            // izhub's own: the evaluated history and forecast (Z44).
            "forecast" => spec.forecast = v == "true",
            other => {
                return Err(bad(
                    "not-supported",
                    format!("parameter {other:?} is not supported"),
                ));
            }
        }
    }
    // A forecast asked for by type.
    if spec
        .types
        .iter()
        .any(|t| t == "ImmunizationRecommendation" || t == "ImmunizationEvaluation")
    {
        spec.forecast = true;
    }
    Ok(())
}

/// The export job `job_id` for `user`, who must be allowed exports.
fn job_access(
    state: &AdminState,
    user: &CurrentUser,
    job_id: &str,
) -> Result<(Arc<Exports>, Arc<Job>), Response> {
    let ex = access(state, user)?;
    let job = ex.job(job_id).ok_or_else(no_such_job)?;
    Ok((ex, job))
}

fn no_such_job() -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", "no such export job")
}
