//! Versioned schemas for the SQLite files the engine keeps: the journal,
//! the console's message log and each bulk job's state. Each file records
//! its version; the missing migrations run one transaction each, and a file
//! written by a newer release is refused untouched.

use rusqlite::{Connection, params};

/// Where a file records its schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionIn {
    /// Rows of a `schema_version` table (the journal, since its first
    /// release).
    Table,
    /// SQLite's header field `PRAGMA user_version` (0 in a file that never
    /// set it: one written before its schema was versioned, which
    /// migration 1 adopts).
    Header,
}

/// Why a file could not be brought to this release's schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "its schema is version {found}, newer than this izhub knows ({known}): it was written by a newer release; run that release, or restore a backup made by this one"
    )]
    Newer { found: i64, known: usize },
    #[error("migration {version} failed: {cause}")]
    Migration {
        version: i64,
        cause: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// The schema version `conn` records.
pub fn version(conn: &Connection, kept: VersionIn) -> rusqlite::Result<i64> {
    match kept {
        VersionIn::Table => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )?;
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
        }
        VersionIn::Header => conn.query_row("PRAGMA user_version", [], |r| r.get(0)),
    }
}

/// Applies `migrations[v..]` to a file at version `v`, each in its own
/// transaction with the new version; refuses a file newer than
/// `migrations.len()`.
pub fn migrate(
    conn: &mut Connection,
    kept: VersionIn,
    migrations: &[&str],
) -> Result<(), SchemaError> {
    let current = version(conn, kept)?;
    if current > migrations.len() as i64 {
        return Err(SchemaError::Newer {
            found: current,
            known: migrations.len(),
        });
    }
    for (version, sql) in (1..).zip(migrations.iter()) {
        if version <= current {
            continue;
        }
        let failed = |cause| SchemaError::Migration { version, cause };
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        match kept {
            VersionIn::Table => tx
                .execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    params![version],
                )
                .map(|_| ()),
            // A pragma takes no parameters; the version is a number.
            VersionIn::Header => tx.execute_batch(&format!("PRAGMA user_version = {version}")),
        }
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_migration_runs_once_and_a_newer_file_is_left_alone() {
        for kept in [VersionIn::Table, VersionIn::Header] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.db");
            let mut conn = Connection::open(&path).unwrap();
            let v1 = ["CREATE TABLE a (x INTEGER)"];
            migrate(&mut conn, kept, &v1).unwrap();
            migrate(&mut conn, kept, &v1).unwrap();
            assert_eq!(version(&conn, kept).unwrap(), 1);
            let v2 = [v1[0], "ALTER TABLE a ADD COLUMN y INTEGER"];
            migrate(&mut conn, kept, &v2).unwrap();
            assert_eq!(version(&conn, kept).unwrap(), 2);
            conn.execute("INSERT INTO a (x, y) VALUES (1, 2)", [])
                .unwrap();
            let e = migrate(&mut conn, kept, &v1).unwrap_err();
            assert!(
                matches!(e, SchemaError::Newer { found: 2, known: 1 }),
                "{e}"
            );
            assert!(e.to_string().contains("newer than this izhub knows"));
            assert_eq!(version(&conn, kept).unwrap(), 2);
            // A failing migration leaves the file at its version.
            let bad = [v1[0], v2[1], "CREATE TABLE a (z INTEGER)"];
            let e = migrate(&mut conn, kept, &bad).unwrap_err();
            assert!(
                matches!(e, SchemaError::Migration { version: 3, .. }),
                "{e}"
            );
            assert_eq!(version(&conn, kept).unwrap(), 2);
        }
    }
}
