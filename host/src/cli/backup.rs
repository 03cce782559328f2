//! `izhub backup` and `izhub restore`: a consistent copy of the SQLite
//! journal and message log, taken while the engine runs (SQLite's online
//! backup API), and putting one back while it is stopped.
//!
//! A backup directory holds `journal.db`, `messages.db` (each when the
//! configuration has it) and `izhub-backup.json`, which names them. A
//! PostgreSQL journal is backed up with PostgreSQL's own tools (pg_dump,
//! or base backups and WAL archiving for point-in-time recovery).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::config;

/// `izhub backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Configuration file (its `[store]` journal and `[console]` log are copied).
    #[arg(long, short, default_value = "izhub.toml")]
    pub config: PathBuf,
    /// A new or empty directory for the copy (made private, 0700).
    #[arg(long)]
    pub to: PathBuf,
}

/// `izhub restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Configuration file: the copies go where its journal and log are.
    #[arg(long, short, default_value = "izhub.toml")]
    pub config: PathBuf,
    /// A directory `izhub backup` made.
    #[arg(long)]
    pub from: PathBuf,
    /// Replace databases that exist (the engine must be stopped).
    #[arg(long)]
    pub force: bool,
}

const MANIFEST: &str = "izhub-backup.json";

/// What a backup directory holds.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The izhub version that made it.
    izhub: String,
    /// When, RFC 3339.
    created: String,
    files: Vec<Copied>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Copied {
    /// `journal` or `messages`.
    name: String,
    /// The file within the backup directory.
    file: String,
    /// Where it was copied from.
    source: PathBuf,
    bytes: u64,
}

/// The SQLite databases a configuration keeps: (name, path).
fn databases(cfg: &config::Config) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if cfg.postgres.is_none()
        && let Some(journal) = &cfg.journal
    {
        out.push(("journal", journal.clone()));
    }
    if let Some(console) = &cfg.console {
        out.push(("messages", console.log.clone()));
    }
    out
}

/// Copies every database of the configuration into `args.to`.
pub fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_config(&args.config) else {
        return Ok(ExitCode::from(2));
    };
    if cfg.postgres.is_some() {
        eprintln!(
            "the journal is PostgreSQL ([store] url): back it up with pg_dump, or base backups and WAL archiving (docs/deploy.md)"
        );
    }
    let dbs = databases(&cfg);
    if dbs.is_empty() {
        eprintln!(
            "{}: no SQLite journal or message log to back up",
            args.config.display()
        );
        return Ok(ExitCode::from(2));
    }
    if std::fs::read_dir(&args.to).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!(
            "{}: not empty; back up into a new directory",
            args.to.display()
        );
        return Ok(ExitCode::from(2));
    }
    make_private_dir(&args.to)?;
    let mut files = Vec::new();
    for (name, source) in dbs {
        if !source.is_file() {
            println!("{name:<9} {}: not there yet, skipped", source.display());
            continue;
        }
        let file = format!("{name}.db");
        let target = args.to.join(&file);
        copy_online(&source, &target)
            .map_err(|e| anyhow::anyhow!("{name} {}: {e}", source.display()))?;
        check(&target)?;
        let bytes = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        println!(
            "{name:<9} {} → {} ({bytes} bytes)",
            source.display(),
            target.display()
        );
        files.push(Copied {
            name: name.to_string(),
            file,
            source,
            bytes,
        });
    }
    let manifest = Manifest {
        izhub: crate::version::long().to_string(),
        created: crate::hl7::rfc3339_now(),
        files,
    };
    std::fs::write(
        args.to.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    println!("backup   {}", args.to.display());
    Ok(ExitCode::SUCCESS)
}

/// Copies a live database with SQLite's online backup API: all pages in one
/// step, under one read transaction, so the copy is of one moment even
/// while the engine writes (WAL mode lets it go on meanwhile).
fn copy_online(source: &Path, target: &Path) -> rusqlite::Result<()> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(10))?;
    let mut dst = Connection::open(target)?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
    // A writer holding the lock is waited for, a bounded number of times.
    let mut tries = 0;
    loop {
        match backup.step(-1)? {
            rusqlite::backup::StepResult::Done => break,
            _ if tries >= 200 => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the database stayed locked for 10 s".into()),
                ));
            }
            _ => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    drop(backup);
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// `PRAGMA quick_check` on a copy: it must say ok.
fn check(path: &Path) -> anyhow::Result<()> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let said: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    anyhow::ensure!(said == "ok", "{}: quick_check says {said}", path.display());
    Ok(())
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Puts a backup's databases where the configuration keeps them.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_config(&args.config) else {
        return Ok(ExitCode::from(2));
    };
    let manifest: Manifest = match std::fs::read_to_string(args.from.join(MANIFEST)) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.from.join(MANIFEST).display()))?,
        Err(e) => {
            eprintln!(
                "{}: {e}; is it a directory `izhub backup` made?",
                args.from.join(MANIFEST).display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let dbs = databases(&cfg);
    let mut plan = Vec::new();
    for copied in &manifest.files {
        let Some((_, target)) = dbs.iter().find(|(n, _)| *n == copied.name) else {
            eprintln!(
                "{}: the configuration has no {} database to restore {} into",
                args.config.display(),
                copied.name,
                copied.file
            );
            return Ok(ExitCode::from(2));
        };
        // Only a plain file name from the manifest: nothing outside the backup.
        let Some(file) = Path::new(&copied.file)
            .file_name()
            .filter(|f| *f == copied.file.as_str())
        else {
            eprintln!("{MANIFEST}: {:?} is not a file name", copied.file);
            return Ok(ExitCode::from(2));
        };
        let from = args.from.join(file);
        check(&from)?;
        if target.exists() {
            if !args.force {
                eprintln!(
                    "{}: exists; stop the engine and add --force to replace it",
                    target.display()
                );
                return Ok(ExitCode::from(2));
            }
            if in_use(target) {
                eprintln!("{}: in use; stop the engine first", target.display());
                return Ok(ExitCode::from(2));
            }
        }
        plan.push((copied.name.as_str(), from, target.clone()));
    }
    for (name, from, target) in plan {
        put_back(&from, &target)?;
        println!("{name:<9} {} → {}", from.display(), target.display());
    }
    println!(
        "restored from {} (made {} by {})",
        args.from.display(),
        manifest.created,
        manifest.izhub
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether another process has the database open: taking it in exclusive
/// locking mode fails then.
fn in_use(path: &Path) -> bool {
    let Ok(c) = Connection::open(path) else {
        return true;
    };
    let _ = c.busy_timeout(Duration::ZERO);
    c.pragma_update(None, "locking_mode", "EXCLUSIVE").is_err()
        || c.execute_batch("BEGIN EXCLUSIVE; COMMIT;").is_err()
}

/// Copies `from` beside `target`, then renames it over `target`, dropping
/// the old file's WAL and shared-memory files.
fn put_back(from: &Path, target: &Path) -> anyhow::Result<()> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        make_private_dir(dir)?;
    }
    let mut part = target.as_os_str().to_owned();
    part.push(".restoring");
    let part = PathBuf::from(part);
    std::fs::copy(from, &part)
        .map_err(|e| anyhow::anyhow!("cannot copy to {}: {e}", part.display()))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(side)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::rename(&part, target)
        .map_err(|e| anyhow::anyhow!("cannot put {} in place: {e}", target.display()))?;
    Ok(())
}
