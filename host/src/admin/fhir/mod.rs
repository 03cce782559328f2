//! The FHIR Bulk Data API on the admin address: a Group made from an
//! uploaded cohort, `GET /fhir/Group/{id}/$export` (async kick-off), status
//! polling, cancel, and the NDJSON files. Behind the same login or bearer
//! token as the rest of the admin API; exports hold PHI, so they need the
//! operator role and an unlimited user, and each is audited.
// Handlers answer early with a whole Response, as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::AdminState;
use super::auth::{CurrentUser, Role};
use crate::bulk::fhir::operation_outcome;
use crate::bulk::job::{Job, JobSpec, RunEnv, State as JobState, TYPES};
use crate::config::{BulkSpec, ListenerSpec};
use crate::delivery::gate::Gates;

type Shared = Arc<AdminState>;

mod jobs;

use jobs::*;

/// Largest cohort upload.
const MAX_COHORT_BYTES: usize = 256 * 1024 * 1024;
/// Export jobs kept at most.
const MAX_JOBS: usize = 1_000;

/// What the API needs beside the admin state: where groups and jobs live,
/// how queries are made, the running jobs.
pub struct Exports {
    dir: PathBuf,
    bulk: BulkSpec,
    listener: ListenerSpec,
    gates: Gates,
    running: Mutex<HashMap<String, (Arc<Job>, CancellationToken)>>,
    /// A shared journal: a job runs on the node holding its lease, and
    /// another node resumes it when that lease lapses.
    journal: Option<crate::store::Journal>,
    /// Jobs found completed or cancelled (they never run again), left out
    /// of later scans for jobs no node runs.
    finished: Mutex<std::collections::HashSet<String>>,
}

impl Exports {
    /// For a configuration's `[bulk]` settings and destinations.
    pub fn new(cfg: &crate::config::Config, journal: Option<crate::store::Journal>) -> Arc<Self> {
        Arc::new(Exports {
            dir: cfg.bulk.dir.clone(),
            bulk: cfg.bulk.clone(),
            listener: crate::bulk::listener_for(cfg),
            gates: Gates::new(&cfg.destinations),
            running: Mutex::new(HashMap::new()),
            journal: journal.filter(|j| j.lease().is_some()),
            finished: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// In a cluster, how often this node looks for jobs whose node has
    /// stopped (a lease); `None` outside one.
    pub fn scan_every(&self) -> Option<std::time::Duration> {
        self.journal.as_ref()?.lease()
    }

    /// An error's text as a client may read it: the server's bulk directory
    /// left out of the paths it names (`groups/…/cohort.csv row 3: …`).
    fn for_client(&self, text: &str) -> String {
        let dir = format!("{}/", self.dir.display());
        text.replace(&dir, "")
    }

    fn groups(&self) -> PathBuf {
        self.dir.join("groups")
    }

    fn jobs(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    /// Starts (or resumes) a job in the background on the current pipeline.
    fn start(self: &Arc<Self>, state: &Shared, id: &str, job: Arc<Job>) {
        let cancel = state.shutdown.child_token();
        if let Ok(mut running) = self.running.lock() {
            running.insert(id.to_string(), (job.clone(), cancel.clone()));
        }
        let slot = state.slot.clone();
        let env = RunEnv {
            pipeline: Box::new(move || slot.current()),
            listener: self.listener.clone(),
            gates: self.gates.clone(),
            bulk: self.bulk.clone(),
        };
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let keeper = match &me.journal {
                Some(journal) => match journal.job_lease(&id).await {
                    Ok(true) => Some(tokio::spawn(keep_lease(
                        journal.clone(),
                        id.clone(),
                        job.clone(),
                        cancel.clone(),
                    ))),
                    Ok(false) => {
                        tracing::debug!(job = %id, "bulk export runs on another node");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "cannot take the bulk export's lease; not running it now");
                        None
                    }
                },
                None => None,
            };
            if me.journal.is_none() || keeper.is_some() {
                match job.run(env, cancel).await {
                    Ok(s) => tracing::info!(job = %id, state = ?s, "bulk export stopped"),
                    Err(e) => tracing::warn!(job = %id, error = %e, "bulk export failed"),
                }
            }
            if let Some(k) = keeper {
                k.abort();
                if let Some(journal) = &me.journal
                    && let Err(e) = journal.job_release(&id).await
                {
                    tracing::debug!(job = %id, error = %e, "the bulk export's lease ends by itself");
                }
            }
            if let Ok(mut running) = me.running.lock() {
                running.remove(&id);
            }
        });
    }

    /// Resumes every job that was running when the engine stopped.
    pub fn resume_all(self: &Arc<Self>, state: &Shared) {
        let Ok(entries) = std::fs::read_dir(self.jobs()) else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) {
                continue;
            }
            seen.insert(id.clone());
            let here = self.running.lock().is_ok_and(|r| r.contains_key(&id));
            if here || self.finished.lock().is_ok_and(|f| f.contains(&id)) {
                continue;
            }
            match Job::open(&entry.path()) {
                Ok(job) => match job.state() {
                    Ok(JobState::Running) => {
                        if self.journal.is_none() {
                            tracing::info!(job = %id, "resuming bulk export");
                        }
                        self.start(state, &id, Arc::new(job));
                    }
                    Ok(_) => {
                        if let Ok(mut f) = self.finished.lock() {
                            f.insert(id);
                        }
                    }
                    Err(_) => {}
                },
                Err(e) => tracing::warn!(job = %id, error = %e, "bulk export not resumable"),
            }
        }
        // Jobs deleted since are forgotten.
        if let Ok(mut f) = self.finished.lock() {
            f.retain(|id| seen.contains(id));
        }
    }

    fn job(&self, id: &str) -> Option<Arc<Job>> {
        if !valid_id(id) {
            return None;
        }
        if let Some((job, _)) = self.running.lock().ok()?.get(id) {
            return Some(job.clone());
        }
        Job::open(&self.jobs().join(id)).ok().map(Arc::new)
    }
}

/// Renews this node's lease on a running job every third of a lease; stops
/// the run when the lease is lost (another node took the job over) or
/// cannot be renewed for a whole lease, or when the job was cancelled on
/// another node.
async fn keep_lease(
    journal: crate::store::Journal,
    id: String,
    job: Arc<Job>,
    cancel: CancellationToken,
) {
    let Some(lease) = journal.lease() else { return };
    tracing::info!(job = %id, "bulk export runs on this node (its lease taken)");
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(lease / 3) => {}
        }
        if !matches!(job.state(), Ok(JobState::Running)) {
            cancel.cancel();
            return;
        }
        match journal.job_lease(&id).await {
            Ok(true) => renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(job = %id, "another node took the bulk export over; stopping it here");
                cancel.cancel();
                return;
            }
            Err(e) if renewed.elapsed() >= lease => {
                tracing::warn!(job = %id, error = %e, "the bulk export's lease could not be renewed; stopping it here");
                cancel.cancel();
                return;
            }
            Err(_) => {}
        }
    }
}

/// Ids are made here: lowercase hex.
fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        // Never reached in practice; a clock-based id still names one job.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{n:032x}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API's routes, to merge into the admin router.
pub fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/fhir/Group",
            axum::routing::post(create_group).layer(DefaultBodyLimit::max(MAX_COHORT_BYTES)),
        )
        .route("/fhir/Group/{id}", get(read_group))
        .route("/fhir/Group/{id}/{op}", get(kick_off))
        .route("/fhir/bulkstatus/{job}", get(status).delete(cancel))
        .route("/fhir/bulkfiles/{job}/{file}", get(file))
}

/// A FHIR error: an OperationOutcome with the status.
fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        operation_outcome("error", code, text, None).to_string(),
    )
        .into_response()
}

fn fhir_json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        value.to_string(),
    )
        .into_response()
}

/// Exports hold PHI of every route: an operator (or admin) not limited to
/// some routes or destinations.
fn allowed(user: &CurrentUser) -> Result<(), Response> {
    if let Err(r) = user.require(Role::Operator) {
        return Err(outcome(r.status(), "forbidden", r.message()));
    }
    if user.routes.is_some() || user.destinations.is_some() {
        return Err(outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "bulk exports cover every route; this user is limited to some",
        ));
    }
    Ok(())
}

/// The exports, for a user allowed to use them.
fn access(state: &AdminState, user: &CurrentUser) -> Result<Arc<Exports>, Response> {
    allowed(user)?;
    exports(state).cloned()
}

fn exports(state: &AdminState) -> Result<&Arc<Exports>, Response> {
    state.bulk.as_ref().ok_or_else(|| {
        outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            "bulk export is not enabled on this engine",
        )
    })
}

/// The answer when the audit entry of an export action cannot be
/// written: a download of PHI does not go on without one.
fn exception(e: &dyn std::fmt::Display) -> Response {
    outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        &e.to_string(),
    )
}

/// The base URL the client used, for absolute URLs in answers.
fn base_url(state: &AdminState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// `POST /fhir/Group`: the body is a cohort (CSV with a header row, or FHIR
/// Patient NDJSON). It is read through once to count its patients; the
/// answer is the Group.
async fn create_group(
    State(state): State<Shared>,
    user: CurrentUser,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ex = match access(&state, &user) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let ext = if kind.starts_with("text/csv") {
        "csv"
    } else if kind.contains("ndjson") {
        "ndjson"
    } else {
        return outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "send the cohort as text/csv or application/fhir+ndjson",
        );
    };
    let id = new_id();
    let dir = ex.groups().join(&id);
    let counted = tokio::task::spawn_blocking(move || -> Result<(u64, u64, PathBuf), String> {
        // The cohort is PHI: its directories are made 0700 with it.
        let path = dir.join(format!("cohort.{ext}"));
        crate::store::private_files(&path).map_err(|e| e.to_string())?;
        std::fs::write(&path, &body).map_err(|e| e.to_string())?;
        let cohort = crate::bulk::cohort::Cohort::open(&path).map_err(|e| e.to_string())?;
        let (mut ok, mut bad) = (0u64, 0u64);
        for row in cohort {
            match row {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        Ok((ok, bad, path))
    })
    .await;
    let (ok, bad) = match counted {
        Ok(Ok((ok, bad, _))) => (ok, bad),
        Ok(Err(e)) => {
            let _ = std::fs::remove_dir_all(ex.groups().join(&id));
            return outcome(StatusCode::BAD_REQUEST, "invalid", &ex.for_client(&e));
        }
        Err(e) => {
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                &e.to_string(),
            );
        }
    };
    let group = json!({
        "resourceType": "Group",
        "id": id,
        "type": "person",
        "actual": true,
        "quantity": ok,
        "name": format!("Cohort of {ok} patients"),
        "extension": [{
            "url": "https://izhub.dev/fhir/StructureDefinition/unreadable-cohort-rows",
            "valueUnsignedInt": bad,
        }],
    });
    let _ = std::fs::write(ex.groups().join(&id).join("group.json"), group.to_string());
    if let Err(e) = state
        .audit(
            &user.name,
            "bulk-group",
            &format!("group {id}"),
            &format!("{ok} patients, {bad} unreadable rows"),
        )
        .await
    {
        return exception(&e);
    }
    let mut r = fhir_json(StatusCode::CREATED, &group);
    if let Ok(v) = format!("{}/fhir/Group/{id}", base_url(&state, &headers)).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn read_group(
    State(state): State<Shared>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Response {
    let ex = match access(&state, &user) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such Group");
    }
    match std::fs::read_to_string(ex.groups().join(&id).join("group.json")) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/fhir+json")], text).into_response(),
        Err(_) => outcome(StatusCode::NOT_FOUND, "not-found", "no such Group"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert!(!valid_id("../../etc"));
        assert!(!valid_id("ABCDEF0123"));
        assert!(!valid_id("abc"));
    }
}
