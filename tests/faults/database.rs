//! A database written thousands of times a second while it is backed up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::support::kill::long;
use crate::support::*;

#[test]
fn every_backup_of_a_database_under_a_heavy_writer_passes_integrity_check() {
    let backups = if long() { 20 } else { 4 };
    let env = TestEnv::with_audio(2);
    let db = env.db_path();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE ticks(n INTEGER PRIMARY KEY, at TEXT, pad BLOB);",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                conn.execute(
                    "INSERT INTO ticks(n, at, pad) VALUES (?1, datetime('now'), randomblob(200))",
                    [n],
                )
                .unwrap();
                if n % 500 == 0 {
                    // MSS's own checkpoints, racing the backup's reads.
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .unwrap();
                }
                committed.store(n, Ordering::SeqCst);
            }
        })
    };
    let clock = Instant::now();
    let mut checked = 0;
    for i in 0..backups {
        let before = committed.load(Ordering::SeqCst);
        env.backup_ok();
        let name = env.status()["archive"].as_str().unwrap().to_string();
        let out = env.expect(&["verify", &name], 0);
        assert!(
            stdout(&out).contains("database integrity_check ok"),
            "{}",
            stdout(&out)
        );
        let after = committed.load(Ordering::SeqCst);
        assert!(after > before, "backup {i}: the writer kept committing");
        checked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = committed.load(Ordering::SeqCst);
    eprintln!(
        "{checked} backups under a writer: {total} transactions in {:.1} s ({:.0}/s), every archived database passed integrity_check",
        clock.elapsed().as_secs_f64(),
        total as f64 / clock.elapsed().as_secs_f64()
    );
    assert_eq!(integrity(&db), "ok");
}
