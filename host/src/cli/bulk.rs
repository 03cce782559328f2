//! `izhub bulk run | status | cancel | resume`: bulk queries from the
//! command line, with a progress line and a summary.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::args::BulkCommand;
use crate::bulk::job::{Job, JobSpec, RunEnv, State};
use crate::config;
use izhub_engine::engine::{Engine, EngineOptions, Mode, Wings};

pub(super) async fn bulk_command(cmd: BulkCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BulkCommand::Run {
            config,
            cohort,
            out,
            forecast,
            since,
            types,
            ehr_history,
            tolerance_days,
        } => {
            let since = match since.as_deref().map(crate::bulk::since_date).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("--since: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(bad) = types
                .iter()
                .find(|t| !crate::bulk::job::TYPES.contains(&t.as_str()))
            {
                eprintln!(
                    "--type {bad}: the types are {}",
                    crate::bulk::job::TYPES.join(", ")
                );
                return Ok(ExitCode::from(2));
            }
            let Some(cfg) = super::load_config(&config) else {
                return Ok(ExitCode::from(2));
            };
            let spec = JobSpec {
                forecast,
                since,
                types,
                ehr_history: ehr_history.is_some(),
                tolerance_days,
                request: format!("izhub bulk run --cohort {}", cohort.display()),
            };
            let job = match Job::create(&out, &cohort, ehr_history.as_deref(), spec) {
                Ok(j) => Arc::new(j),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            run(job, &cfg).await
        }
        BulkCommand::Resume { config, out } => {
            let Some(cfg) = super::load_config(&config) else {
                return Ok(ExitCode::from(2));
            };
            let job = Arc::new(Job::open(&out)?);
            run(job, &cfg).await
        }
        BulkCommand::Status { out } => {
            let job = Job::open(&out)?;
            let p = &job.progress;
            println!("job        {}", out.display());
            println!("state      {:?}", job.state()?);
            println!(
                "patients   {} of {} done",
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed)
            );
            summary(&job)?;
            Ok(ExitCode::SUCCESS)
        }
        BulkCommand::Cancel { out } => {
            let job = Job::open(&out)?;
            job.cancel()?;
            println!("{}: cancelled", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a job through this configuration's routes, showing progress.
async fn run(job: Arc<Job>, cfg: &config::Config) -> anyhow::Result<ExitCode> {
    // The configured journal (SQLite or PostgreSQL) for commit routes; the
    // running engine's queues deliver what they journal.
    let plan = crate::topology::plan(cfg)?;
    let (_engine, pipeline) =
        Engine::build(&plan, Mode::JournalOnly, EngineOptions::default(), |_| {
            Ok(Wings::default())
        })
        .await?;
    let pipeline = Arc::new(pipeline);
    let env = RunEnv {
        pipeline: Box::new(move || pipeline.clone()),
        listener: crate::bulk::listener_for(cfg),
        gates: crate::delivery::gate::Gates::new(&cfg.destinations),
        bulk: cfg.bulk.clone(),
    };
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: `izhub bulk resume` finishes the job");
                cancel.cancel();
            }
        });
    }
    let started = Instant::now();
    let shown = job.progress.done.load(Ordering::Relaxed);
    let progress = {
        let job = job.clone();
        tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            };
            loop {
                tokio::time::sleep(every).await;
                show(&job, started, shown, terminal);
            }
        })
    };
    let state = job.run(env, cancel).await;
    progress.abort();
    show(&job, started, shown, std::io::stderr().is_terminal());
    eprintln!();
    let state = state?;
    let secs = started.elapsed().as_secs_f64();
    let done = job
        .progress
        .done
        .load(Ordering::Relaxed)
        .saturating_sub(shown);
    println!(
        "{}: {:?}, {done} patients in {secs:.1} s ({:.0}/s)",
        job.dir().display(),
        state,
        done as f64 / secs.max(1e-9)
    );
    summary(&job)?;
    if state == State::Completed {
        let path = write_manifest(&job)?;
        println!("manifest   {}", path.display());
    }
    Ok(match state {
        State::Completed => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Writes the job's FHIR Bulk Data manifest beside its files, as
/// `manifest.json`; each `url` is a file's name in the same directory.
fn write_manifest(job: &Job) -> anyhow::Result<std::path::PathBuf> {
    let mut manifest = job.manifest(crate::bulk::job::file_name)?;
    manifest["requiresAccessToken"] = serde_json::Value::Bool(false);
    let path = job.dir().join("manifest.json");
    let part = job.dir().join("manifest.json.part");
    let text = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(&part, text + "\n")
        .and_then(|()| std::fs::rename(&part, &path))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// One progress line: done/total, rate, time left, errors.
fn show(job: &Job, started: Instant, before: u64, terminal: bool) {
    let p = &job.progress;
    let (done, total) = (
        p.done.load(Ordering::Relaxed),
        p.total.load(Ordering::Relaxed),
    );
    let rate = done.saturating_sub(before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let left = total.saturating_sub(done);
    let eta = if rate > 0.0 {
        format!("{:.0} s", left as f64 / rate)
    } else {
        "-".into()
    };
    let errors = p.failed.load(Ordering::Relaxed) + p.bad_rows.load(Ordering::Relaxed);
    let line = format!(
        "{done}/{total} patients  {rate:.0}/s  ETA {eta}  errors {errors}  not found {}  ambiguous {}",
        p.not_found.load(Ordering::Relaxed),
        p.ambiguous.load(Ordering::Relaxed)
    );
    let mut err = std::io::stderr();
    let _ = if terminal {
        write!(err, "\r{line:<100}")
    } else {
        writeln!(err, "{line}")
    };
}

fn summary(job: &Job) -> anyhow::Result<()> {
    let p = &job.progress;
    println!(
        "outcomes   found {}, not found {}, ambiguous {}, failed {}, unreadable cohort rows {}",
        p.found.load(Ordering::Relaxed),
        p.not_found.load(Ordering::Relaxed),
        p.ambiguous.load(Ordering::Relaxed),
        p.failed.load(Ordering::Relaxed),
        p.bad_rows.load(Ordering::Relaxed)
    );
    for (name, lines) in job.files()? {
        println!(
            "file       {} ({lines} lines)",
            job.dir().join(crate::bulk::job::file_name(&name)).display()
        );
    }
    Ok(())
}
