//! One bulk job: a cohort, one query per patient, FHIR NDJSON out, in its
//! own directory. Its state is a SQLite file beside the output (`job.db`):
//! every patient and whether it is done, and how long each output file was
//! when its last batch was committed. Output lines are written and synced
//! before the batch that names them commits; a restart cuts every file back
//! to its committed length and queries only the patients not done, so a job
//! killed at any moment finishes with every patient exactly once.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::cohort::{Cohort, Patient};
use super::fhir::{self, Context, Outcome};
use super::qbp::{QueryParams, build_qbp};
use super::reconcile;
use crate::config::{BulkSpec, ListenerSpec};
use crate::delivery::gate::Gates;
use crate::pipeline::{Answer, Pipeline};

/// The resource types a job writes, each to `<Type>.ndjson`.
pub const TYPES: [&str; 4] = [
    "Patient",
    "Immunization",
    "ImmunizationRecommendation",
    "ImmunizationEvaluation",
];
/// The error file (OperationOutcome per line).
pub const ERRORS: &str = "OperationOutcome";
/// Reconciliation output, when an EHR history was given.
const RECONCILIATION: &str = "reconciliation";
/// Queries in flight across destinations at most (each also waits at its
/// destination's gate).
const MAX_TASKS: usize = 256;
/// Patients per committed batch at most.
const BATCH: usize = 500;
/// The most EHR Immunization lines read for reconciliation.
const MAX_EHR_LINES: usize = 5_000_000;

/// What a job was asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    /// Z44 (evaluated history and forecast) instead of Z34.
    pub forecast: bool,
    /// `YYYYMMDD`: only Immunizations on or after it.
    pub since: Option<String>,
    /// Resource types written; empty: all of [`TYPES`].
    pub types: Vec<String>,
    /// Reconcile with this EHR history (Immunization NDJSON, copied into the job).
    pub ehr_history: bool,
    /// Days two doses of one vaccine group may differ and still match.
    pub tolerance_days: u32,
    /// The request, as the manifest repeats it.
    pub request: String,
}

/// Why a job could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Cohort(#[from] super::cohort::CohortError),
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("bulk job state {path}: {detail}")]
    State { path: String, detail: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Completed,
    Cancelled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> State {
        match s {
            "completed" => State::Completed,
            "cancelled" => State::Cancelled,
            _ => State::Running,
        }
    }
}

/// Counters as the job goes; read by progress bars and the status API.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
    pub found: AtomicU64,
    pub not_found: AtomicU64,
    pub ambiguous: AtomicU64,
    /// Refused by the IIS or failed after every attempt.
    pub failed: AtomicU64,
    /// Cohort rows that could not be read.
    pub bad_rows: AtomicU64,
    /// Queries sent (every attempt).
    pub queries: AtomicU64,
}

impl Progress {
    fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    /// `done/total` and the rest, as a JSON object.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "total": Self::get(&self.total),
            "done": Self::get(&self.done),
            "found": Self::get(&self.found),
            "not_found": Self::get(&self.not_found),
            "ambiguous": Self::get(&self.ambiguous),
            "failed": Self::get(&self.failed),
            "bad_rows": Self::get(&self.bad_rows),
            "queries": Self::get(&self.queries),
        })
    }
}

/// A job on disk.
pub struct Job {
    dir: PathBuf,
    db: std::sync::Mutex<Connection>,
    pub spec: JobSpec,
    pub progress: Arc<Progress>,
    /// When the job was made (RFC 3339), the manifest's transactionTime.
    pub transaction_time: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    idx INTEGER PRIMARY KEY,
    data TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS patients_pending ON patients(done, idx);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, length INTEGER NOT NULL, lines INTEGER NOT NULL);
";

fn state_err(dir: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::State {
        path: dir.join("job.db").display().to_string(),
        detail: e.to_string(),
    }
}

/// The file a type's lines go to.
pub fn file_name(kind: &str) -> String {
    if kind == RECONCILIATION {
        "reconciliation.ndjson".into()
    } else {
        format!("{kind}.ndjson")
    }
}

/// One patient's part of the output.
struct Done {
    idx: i64,
    outcome: &'static str,
    /// (file kind, NDJSON line without its newline)
    lines: Vec<(&'static str, String)>,
}

impl Job {
    /// Makes a job in `dir` (which must not hold one) from a cohort file:
    /// every readable patient is stored, every unreadable row becomes an
    /// OperationOutcome in the error file at once.
    pub fn create(
        dir: &Path,
        cohort: &Path,
        ehr_history: Option<&Path>,
        spec: JobSpec,
    ) -> Result<Job, JobError> {
        if dir.join("job.db").exists() {
            return Err(JobError::Invalid(format!(
                "{} already holds a bulk job: resume it or choose another directory",
                dir.display()
            )));
        }
        let reader = Cohort::open(cohort)?;
        // The output is PHI: the directory is the engine user's alone.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| file_err(dir, e))?;
        crate::store::private_files(&dir.join("job.db")).map_err(|e| file_err(dir, e))?;
        if let Some(ehr) = ehr_history {
            std::fs::copy(ehr, dir.join("ehr-history.ndjson")).map_err(|e| file_err(ehr, e))?;
        }
        let mut conn = Connection::open(dir.join("job.db")).map_err(|e| state_err(dir, e))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .and_then(|_| conn.execute_batch(SCHEMA))
            .map_err(|e| state_err(dir, e))?;
        let transaction_time = crate::hl7::rfc3339_now();
        let errors_path = dir.join(file_name(ERRORS));
        let mut errors = std::io::BufWriter::new(
            std::fs::File::create(&errors_path).map_err(|e| file_err(&errors_path, e))?,
        );
        let (mut total, mut bad) = (0u64, 0u64);
        let tx = conn.transaction().map_err(|e| state_err(dir, e))?;
        {
            let mut insert = tx
                .prepare("INSERT INTO patients (idx, data) VALUES (?1, ?2)")
                .map_err(|e| state_err(dir, e))?;
            for item in reader {
                match item {
                    Ok(p) => {
                        total += 1;
                        let data = serde_json::to_string(&p).map_err(|e| state_err(dir, e))?;
                        insert
                            .execute(params![total as i64, data])
                            .map_err(|e| state_err(dir, e))?;
                    }
                    Err(row) => {
                        bad += 1;
                        writeln!(errors, "{}", row.operation_outcome())
                            .map_err(|e| file_err(&errors_path, e))?;
                    }
                }
            }
        }
        let file = errors
            .into_inner()
            .map_err(|e| file_err(&errors_path, e.error()))?;
        file.sync_all().map_err(|e| file_err(&errors_path, e))?;
        let length = file
            .metadata()
            .map_err(|e| file_err(&errors_path, e))?
            .len();
        let mut lengths: Vec<(String, u64, u64)> = vec![(ERRORS.into(), length, bad)];
        if spec.ehr_history {
            let csv = dir.join("reconciliation.csv");
            let header = reconcile::CSV_HEADER;
            std::fs::write(&csv, header).map_err(|e| file_err(&csv, e))?;
            lengths.push(("reconciliation.csv".into(), header.len() as u64, 0));
        }
        for (name, length, lines) in lengths {
            tx.execute(
                "INSERT OR REPLACE INTO files (name, length, lines) VALUES (?1, ?2, ?3)",
                params![name, length as i64, lines as i64],
            )
            .map_err(|e| state_err(dir, e))?;
        }
        for (k, v) in [
            (
                "spec",
                serde_json::to_string(&spec).map_err(|e| state_err(dir, e))?,
            ),
            ("state", State::Running.as_str().to_string()),
            ("transaction_time", transaction_time.clone()),
            ("bad_rows", bad.to_string()),
        ] {
            tx.execute(
                "INSERT OR REPLACE INTO job (key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .map_err(|e| state_err(dir, e))?;
        }
        tx.commit().map_err(|e| state_err(dir, e))?;
        drop(conn);
        Job::open(dir)
    }

    /// Opens the job in `dir`.
    pub fn open(dir: &Path) -> Result<Job, JobError> {
        let path = dir.join("job.db");
        if !path.exists() {
            return Err(JobError::Invalid(format!(
                "{} holds no bulk job",
                dir.display()
            )));
        }
        let conn = Connection::open(&path).map_err(|e| state_err(dir, e))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .and_then(|_| conn.execute_batch(SCHEMA))
            .map_err(|e| state_err(dir, e))?;
        let value = |k: &str| -> Result<String, JobError> {
            conn.query_row("SELECT value FROM job WHERE key = ?1", params![k], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(|e| state_err(dir, e))
            .map(Option::unwrap_or_default)
        };
        let spec: JobSpec = serde_json::from_str(&value("spec")?).map_err(|e| state_err(dir, e))?;
        let transaction_time = value("transaction_time")?;
        let bad: u64 = value("bad_rows")?.parse().unwrap_or(0);
        let progress = Arc::new(Progress::default());
        let counts: Vec<(String, i64, i64)> = conn
            .prepare("SELECT outcome, done, COUNT(*) FROM patients GROUP BY outcome, done")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| state_err(dir, e))?;
        for (outcome, done, n) in counts {
            let n = n.max(0) as u64;
            progress.total.fetch_add(n, Ordering::Relaxed);
            if done != 0 {
                progress.done.fetch_add(n, Ordering::Relaxed);
                progress.count(&outcome, n);
            }
        }
        progress.bad_rows.store(bad, Ordering::Relaxed);
        Ok(Job {
            dir: dir.to_path_buf(),
            db: std::sync::Mutex::new(conn),
            spec,
            progress,
            transaction_time,
        })
    }

    /// The job's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, JobError> {
        let mut conn = self
            .db
            .lock()
            .map_err(|_| state_err(&self.dir, "state lock poisoned"))?;
        f(&mut conn).map_err(|e| state_err(&self.dir, e))
    }

    /// Where the job stands, as stored.
    pub fn state(&self) -> Result<State, JobError> {
        self.db(|c| {
            c.query_row("SELECT value FROM job WHERE key = 'state'", [], |r| {
                r.get::<_, String>(0)
            })
        })
        .map(|s| State::parse(&s))
    }

    /// Marks the job cancelled; a running job stops at its next batch.
    pub fn cancel(&self) -> Result<(), JobError> {
        self.set_state(State::Cancelled)
    }

    fn set_state(&self, state: State) -> Result<(), JobError> {
        self.db(|c| {
            c.execute(
                "INSERT OR REPLACE INTO job (key, value) VALUES ('state', ?1)",
                params![state.as_str()],
            )
            .map(|_| ())
        })
    }

    /// Every output file with its committed line count (for the manifest).
    pub fn files(&self) -> Result<Vec<(String, u64)>, JobError> {
        self.db(|c| {
            c.prepare("SELECT name, lines FROM files ORDER BY name")?
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect()
        })
    }

    /// Cuts each output file back to its committed length (a run that was
    /// killed may have written lines whose batch never committed).
    fn cut_back(&self) -> Result<HashMap<String, (u64, u64)>, JobError> {
        let committed: HashMap<String, (u64, u64)> = self.db(|c| {
            c.prepare("SELECT name, length, lines FROM files")?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        (
                            r.get::<_, i64>(1)?.max(0) as u64,
                            r.get::<_, i64>(2)?.max(0) as u64,
                        ),
                    ))
                })?
                .collect()
        })?;
        let mut names: Vec<String> = TYPES.iter().map(|t| file_name(t)).collect();
        names.push(file_name(ERRORS));
        if self.spec.ehr_history {
            names.push(file_name(RECONCILIATION));
            names.push("reconciliation.csv".into());
        }
        let mut out = HashMap::new();
        for name in names {
            let key = name.strip_suffix(".ndjson").unwrap_or(&name).to_string();
            let (length, lines) = committed.get(&key).copied().unwrap_or((0, 0));
            let path = self.dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| file_err(&path, e))?;
            file.set_len(length).map_err(|e| file_err(&path, e))?;
            file.sync_all().map_err(|e| file_err(&path, e))?;
            out.insert(key, (length, lines));
        }
        Ok(out)
    }

    /// Runs the job until every patient is done or it is cancelled; safe to
    /// call again after any stop (see the module docs).
    pub async fn run(
        self: &Arc<Self>,
        env: RunEnv,
        cancel: CancellationToken,
    ) -> Result<State, JobError> {
        match self.state()? {
            State::Running => {}
            other => return Ok(other),
        }
        let committed = self.cut_back()?;
        let ehr = match self.spec.ehr_history {
            true => Arc::new(load_ehr(&self.dir.join("ehr-history.ndjson"))?),
            false => Arc::new(HashMap::new()),
        };
        let (tx, rx) = mpsc::channel::<Done>(BATCH * 2);
        let writer = {
            let job = self.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || job.write_loop(rx, committed, cancel))
        };
        let tasks = Arc::new(Semaphore::new(MAX_TASKS));
        let env = Arc::new(env);
        let mut after = 0i64;
        let mut running = tokio::task::JoinSet::new();
        'pages: loop {
            if cancel.is_cancelled() {
                break;
            }
            let page: Vec<(i64, String)> = self.db(|c| {
                c.prepare_cached(
                    "SELECT idx, data FROM patients WHERE done = 0 AND idx > ?1 ORDER BY idx LIMIT 1000",
                )?
                .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
            })?;
            let Some(last) = page.last().map(|p| p.0) else {
                break;
            };
            after = last;
            for (idx, data) in page {
                let permit = tokio::select! {
                    _ = cancel.cancelled() => break 'pages,
                    p = tasks.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'pages,
                    },
                };
                let Ok(patient) = serde_json::from_str::<Patient>(&data) else {
                    let _ = tx
                        .send(Done {
                            idx,
                            outcome: "failed",
                            lines: vec![(
                                ERRORS,
                                fhir::operation_outcome(
                                    "error",
                                    "exception",
                                    "the stored patient could not be read",
                                    None,
                                )
                                .to_string(),
                            )],
                        })
                        .await;
                    continue;
                };
                let (job, env, tx, cancel, ehr) = (
                    self.clone(),
                    env.clone(),
                    tx.clone(),
                    cancel.clone(),
                    ehr.clone(),
                );
                running.spawn(async move {
                    let done = job.query_one(idx, &patient, &env, &cancel, &ehr).await;
                    if let Some(done) = done {
                        let _ = tx.send(done).await;
                    }
                    drop(permit);
                });
                // Reap finished tasks as we go, so the set stays small.
                while running.try_join_next().is_some() {}
            }
        }
        while running.join_next().await.is_some() {}
        drop(tx);
        match writer.await {
            Ok(r) => r?,
            Err(e) => return Err(JobError::Invalid(format!("the bulk writer stopped: {e}"))),
        }
        if cancel.is_cancelled() || self.state()? == State::Cancelled {
            return Ok(State::Cancelled);
        }
        let pending: i64 = self.db(|c| {
            c.query_row("SELECT COUNT(*) FROM patients WHERE done = 0", [], |r| {
                r.get(0)
            })
        })?;
        if pending == 0 {
            self.set_state(State::Completed)?;
            Ok(State::Completed)
        } else {
            Ok(State::Running)
        }
    }

    /// One patient: the query (again on AE or no answer, with backoff; later
    /// when its destination's gate says not now), the answer as FHIR.
    async fn query_one(
        &self,
        idx: i64,
        patient: &Patient,
        env: &RunEnv,
        cancel: &CancellationToken,
        ehr: &HashMap<String, Vec<Value>>,
    ) -> Option<Done> {
        let tag = format!("p{idx}");
        let mut attempt = 0u32;
        let mut last_words = String::new();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let query = build_qbp(
                patient,
                &QueryParams {
                    tag: tag.clone(),
                    forecast: self.spec.forecast,
                    control_id: crate::hl7::new_control_id("BQ"),
                    sending_app: env.bulk.sending_application.clone(),
                    sending_facility: env.bulk.sending_facility.clone(),
                    receiving_app: String::new(),
                    receiving_facility: String::new(),
                    limit: env.bulk.max_records,
                    timestamp: crate::hl7::hl7_timestamp(),
                },
            );
            let pipeline = (env.pipeline)();
            self.progress.queries.fetch_add(1, Ordering::Relaxed);
            let (answer, not_now) = pipeline
                .bulk_query(&env.listener, query.as_bytes(), &env.gates)
                .await;
            if let Some(wait) = not_now {
                // Not a failed attempt: the IIS's hours or cap.
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait.wait().min(Duration::from_secs(60))) => {}
                }
                continue;
            }
            attempt += 1;
            let retry = match &answer {
                Answer::Close(why) => {
                    last_words = why.clone();
                    true
                }
                Answer::Reply(bytes) => {
                    let text = match crate::hl7::decode(bytes) {
                        Ok((t, _)) => t,
                        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
                    };
                    let iis = env
                        .destination_of(&text)
                        .unwrap_or_else(|| "iis".to_string());
                    let converted = fhir::convert(
                        &text,
                        &Context {
                            patient,
                            tag: &tag,
                            since: self.spec.since.as_deref(),
                            iis: &iis,
                        },
                    );
                    let transient = matches!(&converted.outcome, Outcome::Refused { code, .. } if code == "AE" || code == "unreadable");
                    if !transient || attempt >= env.bulk.max_attempts {
                        return Some(self.done(idx, patient, converted, ehr));
                    }
                    if let Outcome::Refused { text, .. } = &converted.outcome {
                        last_words = text.clone();
                    }
                    true
                }
            };
            if retry && attempt >= env.bulk.max_attempts {
                return Some(Done {
                    idx,
                    outcome: "failed",
                    lines: vec![(
                        ERRORS,
                        with_tag(
                            fhir::operation_outcome(
                                "error",
                                "transient",
                                &format!(
                                    "no answer after {attempt} attempts: {}",
                                    crate::report::without_value(&last_words)
                                ),
                                None,
                            ),
                            &tag,
                            patient.row,
                        )
                        .to_string(),
                    )],
                });
            }
            let backoff = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)))
                .min(Duration::from_secs(10));
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// The output lines of one converted answer.
    fn done(
        &self,
        idx: i64,
        patient: &Patient,
        converted: fhir::Converted,
        ehr: &HashMap<String, Vec<Value>>,
    ) -> Done {
        let outcome = match &converted.outcome {
            Outcome::Found => "found",
            Outcome::NotFound => "not_found",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Refused { .. } => "failed",
        };
        let wanted =
            |kind: &str| self.spec.types.is_empty() || self.spec.types.iter().any(|t| t == kind);
        let mut lines = Vec::new();
        let mut immunizations = Vec::new();
        for (kind, resource) in converted.resources {
            if kind == "Immunization" && self.spec.ehr_history {
                immunizations.push(resource.clone());
            }
            if let Some(kind) = TYPES.iter().find(|t| **t == kind)
                && wanted(kind)
            {
                lines.push((*kind, resource.to_string()));
            }
        }
        for e in converted.errors {
            lines.push((ERRORS, e.to_string()));
        }
        if self.spec.ehr_history && outcome == "found" {
            let key = [&patient.member_id, &patient.mrn]
                .into_iter()
                .find(|k| !k.is_empty() && ehr.contains_key(k.as_str()))
                .or([&patient.member_id, &patient.mrn]
                    .into_iter()
                    .find(|k| !k.is_empty()));
            if let Some(key) = key {
                let theirs = ehr.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                for d in reconcile::reconcile(key, &immunizations, theirs, self.spec.tolerance_days)
                {
                    lines.push((RECONCILIATION, d.to_json().to_string()));
                    lines.push(("reconciliation.csv", d.to_csv_line()));
                }
            }
        }
        Done {
            idx,
            outcome,
            lines,
        }
    }

    /// The single writer: appends each finished patient's lines, syncs the
    /// files, then commits the batch (patients done, file lengths).
    fn write_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Done>,
        committed: HashMap<String, (u64, u64)>,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        let mut files: HashMap<String, (std::fs::File, u64, u64)> = HashMap::new();
        for (key, (length, lines)) in committed {
            let name = if key.ends_with(".csv") {
                key.clone()
            } else {
                file_name(&key)
            };
            let path = self.dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| file_err(&path, e))?;
            files.insert(key, (file, length, lines));
        }
        let mut last_check = Instant::now();
        loop {
            let Some(first) = rx.blocking_recv() else {
                return Ok(());
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            let mut buffers: HashMap<&str, (String, u64)> = HashMap::new();
            for d in &batch {
                for (kind, line) in &d.lines {
                    let (text, n) = buffers.entry(kind).or_default();
                    text.push_str(line);
                    // CSV rows come terminated (CRLF); NDJSON lines do not.
                    if !kind.ends_with(".csv") {
                        text.push('\n');
                    }
                    *n += 1;
                }
            }
            for (kind, (text, n)) in &buffers {
                let Some((file, length, lines)) = files.get_mut(*kind) else {
                    continue;
                };
                file.write_all(text.as_bytes())
                    .and_then(|_| file.sync_data())
                    .map_err(|e| file_err(&self.dir.join(file_name(kind)), e))?;
                *length += text.len() as u64;
                *lines += n;
            }
            self.db(|c| {
                let tx = c.transaction()?;
                {
                    let mut mark = tx.prepare_cached(
                        "UPDATE patients SET done = 1, outcome = ?2 WHERE idx = ?1",
                    )?;
                    for d in &batch {
                        mark.execute(params![d.idx, d.outcome])?;
                    }
                    let mut len = tx.prepare_cached(
                        "INSERT OR REPLACE INTO files (name, length, lines) VALUES (?1, ?2, ?3)",
                    )?;
                    for (key, (_, length, lines)) in &files {
                        len.execute(params![key, *length as i64, *lines as i64])?;
                    }
                }
                tx.commit()
            })?;
            for d in &batch {
                self.progress.done.fetch_add(1, Ordering::Relaxed);
                self.progress.count(d.outcome, 1);
            }
            // Another process (`izhub bulk cancel`) may have cancelled it.
            if last_check.elapsed() > Duration::from_secs(1) {
                last_check = Instant::now();
                if self.state()? == State::Cancelled {
                    cancel.cancel();
                }
            }
        }
    }
}

impl Progress {
    fn count(&self, outcome: &str, n: u64) {
        let slot = match outcome {
            "found" => &self.found,
            "not_found" => &self.not_found,
            "ambiguous" => &self.ambiguous,
            "failed" => &self.failed,
            _ => return,
        };
        slot.fetch_add(n, Ordering::Relaxed);
    }
}

/// Tags an OperationOutcome with the patient it is about (the cohort row).
fn with_tag(mut oo: Value, tag: &str, row: u64) -> Value {
    if let Some(issue) = oo.pointer_mut("/issue/0")
        && let Some(obj) = issue.as_object_mut()
    {
        obj.insert(
            "expression".into(),
            serde_json::json!([format!("cohort row {row} (query {tag})")]),
        );
    }
    oo
}

/// The EHR's Immunizations by the patient key they name.
fn load_ehr(path: &Path) -> Result<HashMap<String, Vec<Value>>, JobError> {
    let file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        if n >= MAX_EHR_LINES {
            return Err(file_err(path, format!("more than {MAX_EHR_LINES} lines")));
        }
        let line = line.map_err(|e| file_err(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| file_err(path, format!("line {}: {e}", n + 1)))?;
        if value.get("resourceType").and_then(Value::as_str) != Some("Immunization") {
            return Err(file_err(
                path,
                format!("line {}: not an Immunization resource", n + 1),
            ));
        }
        if let Some(key) = reconcile::ehr_patient_key(&value) {
            out.entry(key.to_string()).or_default().push(value);
        }
    }
    Ok(out)
}

/// What a run needs from the engine around it.
pub struct RunEnv {
    /// The pipeline to query through (the current one, across reloads).
    pub pipeline: Box<dyn Fn() -> Arc<Pipeline> + Send + Sync>,
    /// The listener queries are taken as arriving on.
    pub listener: ListenerSpec,
    pub gates: Gates,
    pub bulk: BulkSpec,
}

impl RunEnv {
    /// The IIS that answered (MSH-4 of its answer), for identifier systems.
    fn destination_of(&self, answer: &str) -> Option<String> {
        crate::hl7::Msh::read(answer)
            .ok()
            .map(|m| m.component(4, 1).to_string())
            .filter(|s| !s.is_empty() && s.len() <= 64)
    }
}
