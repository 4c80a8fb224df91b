//! A consistent copy of the live MSS database, taken while MSS keeps
//! writing to it. SQLite's online backup API copies the database inside one
//! read transaction (`step(-1)`), so the copy is exactly one committed state
//! and the writer is never blocked. Copying the `.db`/`-wal`/`-shm` files
//! raw gives corrupt or inconsistent copies; a stepwise backup restarts on
//! every write and may never finish under load.
//!
//! The live database is opened read-only with checkpoint-on-close disabled:
//! a backup never changes it (no journal-mode change, no checkpoint).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Facts about a database, for the inventory and the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFacts {
    pub page_size: u64,
    pub page_count: u64,
    pub user_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} stayed busy for {waited:?}: another process holds a lock (try again later)"
    )]
    Busy { path: PathBuf, waited: Duration },
    #[error("copying database {path} failed: {source}")]
    Copy {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database copy of {path} failed integrity_check: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// A stop signal came while the database was busy.
    #[error("{0}")]
    Interrupted(crate::interrupt::Interrupted),
}

/// Copies the live database at `live` into a new file `dest` and checks the
/// copy with `PRAGMA integrity_check`. Retries while the database is busy,
/// for at most `busy_timeout`.
pub fn snapshot(
    live: &Path,
    dest: &Path,
    busy_timeout: Duration,
) -> Result<DbFacts, SnapshotError> {
    let open_err = |source| SnapshotError::Open {
        path: live.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(live, flags).map_err(open_err)?;
    src.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(open_err)?;
    // Each attempt waits up to a second on SQLite's own busy handler; the
    // loop below bounds the whole.
    src.busy_timeout(Duration::from_secs(1)).map_err(open_err)?;

    let copy_err = |source| SnapshotError::Copy {
        path: live.to_path_buf(),
        source,
    };
    let mut dst = Connection::open(dest).map_err(copy_err)?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let step = {
            let backup = Backup::new(&src, &mut dst).map_err(copy_err)?;
            backup.step(-1)
        };
        match step {
            Ok(StepResult::Done) => break,
            Ok(StepResult::More | StepResult::Busy | StepResult::Locked)
            | Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error {
                    code: rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked,
                    ..
                },
                _,
            )) => {
                if let Some(signal) = crate::interrupt::received() {
                    return Err(SnapshotError::Interrupted(signal));
                }
                if started.elapsed() >= busy_timeout {
                    return Err(SnapshotError::Busy {
                        path: live.to_path_buf(),
                        waited: started.elapsed(),
                    });
                }
                tracing::debug!(?pause, "database busy, retrying the snapshot");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Ok(_) => break,
            Err(e) => return Err(copy_err(e)),
        }
    }
    drop(src);
    let facts = check(&dst).map_err(|detail| SnapshotError::Corrupt {
        path: live.to_path_buf(),
        detail,
    })?;
    // Closing the copy folds its WAL (if the live database was in WAL mode)
    // back into the one file that goes into the archive.
    dst.close().map_err(|(_, e)| copy_err(e))?;
    Ok(facts)
}

/// Runs `PRAGMA integrity_check` on the database file at `path` and reads
/// its facts. The file is opened `immutable`: a copy that nobody writes,
/// checked without locks and without SQLite creating `-wal`/`-shm` files
/// beside it (a plain read-only open of a WAL-mode copy leaves both behind,
/// and a restore must never put stale ones next to a database).
pub fn check_file(path: &Path) -> Result<DbFacts, String> {
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(uri, flags).map_err(|e| e.to_string())?;
    check(&conn)
}

/// Opens the live database as a backup does (read-only, no checkpoint on
/// close: nothing is written) and runs `PRAGMA quick_check`, the cheap
/// form of `integrity_check`: whether the database is there, readable and
/// sound enough to back up. For `mss-backup doctor`.
pub fn quick_check_live(live: &Path) -> Result<DbFacts, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(live, flags).map_err(|e| e.to_string())?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    run_check(&conn, "quick_check")
}

/// `path` escaped for an SQLite `file:` URI (`?`, `#` and `%` would end or
/// change the path).
fn uri_path(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(String::new(), |mut out, &b| {
            if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

fn check(conn: &Connection) -> Result<DbFacts, String> {
    run_check(conn, "integrity_check")
}

/// Runs `PRAGMA integrity_check` or `quick_check`; the facts if it says
/// `ok`, else everything it found.
fn run_check(conn: &Connection, pragma: &str) -> Result<DbFacts, String> {
    let verdict: Vec<String> = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| e.to_string())?;
    if verdict != ["ok"] {
        return Err(verdict.join("; "));
    }
    facts(conn)
}

fn facts(conn: &Connection) -> Result<DbFacts, String> {
    let pragma = |name: &str| -> Result<i64, String> {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .map_err(|e| e.to_string())
    };
    Ok(DbFacts {
        page_size: pragma("page_size")? as u64,
        page_count: pragma("page_count")? as u64,
        user_version: pragma("user_version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checking_a_file_leaves_nothing_beside_it_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.db");
        let writer = Connection::open(&live).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let sub = dir.path().join("odd ?#% name");
        std::fs::create_dir(&sub).unwrap();
        let copy = sub.join("copy.db");
        snapshot(&live, &copy, Duration::from_secs(5)).unwrap();
        let facts = check_file(&copy).unwrap();
        assert_eq!(facts.page_count, 2);
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["copy.db"],
            "no -wal or -shm beside the checked copy"
        );
    }

    #[test]
    fn copies_a_wal_database_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.db");
        let writer = Connection::open(&live).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA user_version=5;
                 CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        let wal = dir.path().join("live.db-wal");
        let wal_before = std::fs::read(&wal).unwrap();
        let dest = dir.path().join("copy.db");
        let facts = snapshot(&live, &dest, Duration::from_secs(5)).unwrap();
        assert_eq!(facts.user_version, 5);
        // The live WAL was not checkpointed or truncated by the backup.
        assert_eq!(std::fs::read(&wal).unwrap(), wal_before);
        assert!(!dir.path().join("copy.db-wal").exists());
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
