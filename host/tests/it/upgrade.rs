//! Upgrades keep data: databases an earlier release wrote
//! (`host/tests/fixtures/VERSION/`, made by `fixtures/make.sh`) are opened
//! by this build, which brings their schemas up to date and finds every
//! message: the journal's queued messages are each delivered once, the
//! message log lists them all, a bulk job's state reads as it was. A file
//! whose schema is newer than this build knows is refused untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;

use crate::common::*;

/// The release whose files are the fixtures.
const FROM: &str = "0.1.0";

fn fixture(rel: &str) -> PathBuf {
    root().join("host/tests/fixtures").join(FROM).join(rel)
}

fn control_ids() -> Vec<String> {
    std::fs::read_to_string(fixture("control-ids.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Copies a fixture folder into `to` (the tests change what they open).
fn copy(rel: &str, to: &Path) -> PathBuf {
    let out = Command::new("cp")
        .arg("-a")
        .arg(fixture(rel))
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    to.join(Path::new(rel).file_name().unwrap())
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// The commit-mode configuration the fixtures' journal was written with,
/// its IIS now up at `iis`.
fn config(store: &str, log: &Path, iis: std::net::SocketAddr) -> String {
    format!(
        "{store}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[console]\nlog = \"{}\"\n\n[listeners.clinics]\nlisten = \"127.0.0.1:0\"\n\n[destinations.iis]\nmllp = \"{iis}\"\n\n[[routes]]\nname = \"vxu\"\nmessage_types = [\"VXU^V04\"]\nack_mode = \"commit\"\ndestinations = [\"iis\"]\n",
        log.display()
    )
}

/// Starts this build on `config` and waits until the IIS has every message
/// the earlier release acknowledged; each must arrive once.
async fn delivers_each_once(dir: &Path, config: &str, sim: &Sim) {
    let path = dir.join("izhub.toml");
    std::fs::write(&path, config).unwrap();
    let engine = start_engine(&path).await;
    let ids = control_ids();
    assert_eq!(ids.len(), 20);
    wait_until("every message of the earlier release delivered", 30, || {
        ids.iter().all(|id| sim.state.count(id) >= 1)
    })
    .await;
    engine.stop().await;
    for id in &ids {
        assert_eq!(sim.state.count(id), 1, "{id} delivered more than once");
    }
    assert_eq!(sim.state.received(), 20, "something else was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_journal_and_message_log_of_the_last_release_keep_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy("sqlite", dir.path());
    let log = data.join("messages.db");
    assert_eq!(
        user_version(&log),
        0,
        "written before the log was versioned"
    );
    let sim = start_sim(sim_named("MIIIS")).await;
    let store = format!("[store]\npath = \"{}\"", data.join("izhub.db").display());
    delivers_each_once(dir.path(), &config(&store, &log, sim.addr), &sim).await;

    // The log is at this build's schema and still lists all 20 with their
    // bodies.
    assert_eq!(user_version(&log), 1);
    let conn = Connection::open(&log).unwrap();
    let mut listed: Vec<String> = conn
        .prepare("SELECT control_id FROM messages WHERE body_ref IS NOT NULL ORDER BY control_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    listed.dedup();
    assert_eq!(listed, control_ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_journal_of_the_last_release_keeps_every_message() {
    let Some(pg) = crate::pg_cluster::shared() else {
        return;
    };
    let url = pg.database("upgrade_from_0_1_0").await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let dump = std::fs::read_to_string(fixture("postgres/journal.sql")).unwrap();
    client.batch_execute(&dump).await.unwrap();
    // The dump empties the session's search_path.
    client.batch_execute("RESET search_path").await.unwrap();
    let known: i32 = client
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);

    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(sim_named("MIIIS")).await;
    let store = format!("[store]\nurl = \"{url}\"\nnode = \"upgrade\"");
    let log = dir.path().join("messages.db");
    delivers_each_once(dir.path(), &config(&store, &log, sim.addr), &sim).await;

    // A journal a newer release migrated is refused, and left as it is.
    client
        .execute(
            "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES ($1, 0, 'a newer release')",
            &[&(known + 50)],
        )
        .await
        .unwrap();
    let path = dir.path().join("izhub.toml");
    let cfg = izhub::config::load(&path).unwrap();
    let refused = izhub::serve::start(&cfg).await.err().expect("refused");
    assert!(
        refused.to_string().contains("newer than this izhub knows"),
        "{refused:#}"
    );
    let left: i64 = client
        .query_one("SELECT COUNT(*) FROM deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 20);
}

fn izhub_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_izhub"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_bulk_job_of_the_last_release_reads_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let job = copy("bulk/job", dir.path());
    let state = job.join("job.db");
    assert_eq!(user_version(&state), 0);
    let out = izhub_cli(&["bulk", "status", "--out", job.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Completed"), "{text}");
    assert!(text.contains("3 of 3 done"), "{text}");
    assert!(text.contains("not found 3"), "{text}");
    assert!(text.contains("OperationOutcome.ndjson (3 lines)"), "{text}");
    assert_eq!(user_version(&state), 1);
}

/// The message log and a bulk job's state of a newer release are refused
/// with a clear error and not altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_message_log_or_bulk_job_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let job = copy("bulk/job", dir.path());
    let state = job.join("job.db");
    Connection::open(&state)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let before = std::fs::read(&state).unwrap();
    let out = izhub_cli(&["bulk", "status", "--out", job.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("schema is version 7, newer than this izhub knows (1)"),
        "{text}"
    );
    assert!(
        std::fs::read(&state).unwrap() == before,
        "the job was altered"
    );

    let data = copy("sqlite", dir.path());
    let log = data.join("messages.db");
    Connection::open(&log)
        .unwrap()
        .execute_batch("PRAGMA user_version = 9")
        .unwrap();
    let sim = start_sim(sim_named("MIIIS")).await;
    let store = format!("[store]\npath = \"{}\"", data.join("izhub.db").display());
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, config(&store, &log, sim.addr)).unwrap();
    let cfg = izhub::config::load(&path).unwrap();
    let refused = izhub::serve::start(&cfg).await.err().expect("refused");
    assert!(
        format!("{refused:#}").contains("schema is version 9, newer than this izhub knows (1)"),
        "{refused:#}"
    );
    assert_eq!(user_version(&log), 9);
    let rows: i64 = Connection::open(&log)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 20);
}
