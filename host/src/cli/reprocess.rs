//! `izhub reprocess`: journaled messages through their route again.

use std::path::PathBuf;
use std::process::ExitCode;

use izhub_engine::engine::{Engine, EngineOptions, Mode, Wings};

pub(super) async fn reprocess(
    config: PathBuf,
    ids: Vec<i64>,
    sender: Option<String>,
    status: Option<String>,
    since_minutes: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_config(&config) else {
        return Ok(ExitCode::from(2));
    };
    let plan = crate::topology::plan(&cfg)?;
    let (engine, pipeline) =
        Engine::build(&plan, Mode::JournalOnly, EngineOptions::default(), |_| {
            Ok(Wings::default())
        })
        .await?;
    let Some(journal) = engine.journal.clone() else {
        anyhow::bail!("no route uses ack_mode = \"commit\", so nothing is journaled");
    };
    if let Some(s) = &status
        && !["queued", "delivered", "dead"].contains(&s.as_str())
    {
        anyhow::bail!("--status must be queued, delivered or dead");
    }
    let filter = crate::store::Filter {
        ids,
        sender,
        status,
        since_ms: since_minutes.map(|m| crate::store::now_ms() - m * 60_000),
    };
    let rows = journal.select(&filter).await?;
    if dry_run || rows.is_empty() {
        for crate::store::Journaled {
            id,
            listener,
            control_id,
            ..
        } in &rows
        {
            println!("{id}\t{listener}\t{control_id}");
        }
        println!(
            "{} message(s) {}",
            rows.len(),
            if dry_run {
                "would be reprocessed"
            } else {
                "match"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for crate::store::Journaled {
        id,
        listener,
        raw,
        control_id,
    } in rows
    {
        let Some(spec) = cfg.listeners.iter().find(|l| l.name == listener) else {
            println!("{id}\t{control_id}\tskipped: listener '{listener}' is no longer configured");
            failed += 1;
            continue;
        };
        let code = match pipeline.handle(spec, &raw).await {
            crate::pipeline::Answer::Reply(bytes) => {
                crate::hl7::read_msa(&String::from_utf8_lossy(&bytes))
                    .map(|(c, _)| c)
                    .unwrap_or_default()
            }
            crate::pipeline::Answer::Close(why) => format!("closed: {why}"),
        };
        if code != "AA" {
            failed += 1;
        }
        println!("{id}\t{control_id}\t{code}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
