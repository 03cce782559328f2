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
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::cohort::{Cohort, Patient};
use super::fhir::{self, Context, Outcome};
use super::qbp::{QueryParams, build_qbp};
use super::reconcile;
use crate::config::{BulkSpec, ListenerSpec};
use crate::delivery::gate::Gates;
use crate::pipeline::{Answer, Pipeline};

mod run;

pub use run::RunEnv;

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

/// The job state's schema versions (`PRAGMA user_version`); version 1
/// adopts a job made before the schema was versioned.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    idx INTEGER PRIMARY KEY,
    data TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS patients_pending ON patients(done, idx);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, length INTEGER NOT NULL, lines INTEGER NOT NULL);
"];

/// Opens a job's state, brought to this release's schema (a newer one is
/// refused untouched).
fn open_state(dir: &Path) -> Result<Connection, JobError> {
    let mut conn = Connection::open(dir.join("job.db")).map_err(|e| state_err(dir, e))?;
    // Before the switch to WAL, which rewrites the file's header: a newer
    // release's job is left exactly as it was.
    crate::store::sqlite::schema::migrate(
        &mut conn,
        crate::store::sqlite::schema::VersionIn::Header,
        &MIGRATIONS,
    )
    .map_err(|e| state_err(dir, e))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .map_err(|e| state_err(dir, e))?;
    Ok(conn)
}

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
        let mut conn = open_state(dir)?;
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
        let conn = open_state(dir)?;
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
        let queries: u64 = value("queries")?.parse().unwrap_or(0);
        progress.queries.store(queries, Ordering::Relaxed);
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

    /// The FHIR Bulk Data completion manifest; `url` gives each output
    /// file's address (the API's download URL, or the file's name beside
    /// the manifest for `izhub bulk run`).
    pub fn manifest(&self, url: impl Fn(&str) -> String) -> Result<Value, JobError> {
        let files = self.files()?;
        let listed = |errors: bool| -> Vec<Value> {
            files
                .iter()
                .filter(|(name, lines)| {
                    *lines > 0
                        && if errors {
                            name == ERRORS
                        } else {
                            TYPES.contains(&name.as_str())
                        }
                })
                .map(|(name, lines)| {
                    let kind = if errors { ERRORS } else { name.as_str() };
                    json!({"type": kind, "url": url(name), "count": lines})
                })
                .collect()
        };
        Ok(json!({
            "transactionTime": self.transaction_time,
            "request": self.spec.request,
            "requiresAccessToken": true,
            "output": listed(false),
            "error": listed(true),
            "extension": {"izhub": self.progress.to_json()},
        }))
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
}
