//! MSS as a busy writer: a thread that commits row after row into a
//! `ticks` table of the live database (WAL mode), optionally running
//! MSS's own checkpoints, until it is stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicI64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Creates `ticks(n, at, pad)` in `db` and starts committing rows of
    /// `pad` random bytes; every `checkpoint_every` rows a
    /// `wal_checkpoint(TRUNCATE)` races the backup's reads. Returns once
    /// the first row is committed.
    pub fn start(db: &Path, pad: usize, checkpoint_every: Option<i64>) -> Self {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE ticks(n INTEGER PRIMARY KEY, at TEXT, pad BLOB);",
            )
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(0));
        let thread = {
            let (stop, committed, db) = (stop.clone(), committed.clone(), PathBuf::from(db));
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(&db).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    conn.execute(
                        "INSERT INTO ticks(n, at, pad) VALUES (?1, datetime('now'), randomblob(?2))",
                        rusqlite::params![n, pad as i64],
                    )
                    .unwrap();
                    if checkpoint_every.is_some_and(|every| n % every == 0) {
                        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                            .unwrap();
                    }
                    committed.store(n, Ordering::SeqCst);
                }
            })
        };
        let writer = Self {
            stop,
            committed,
            thread: Some(thread),
        };
        writer.wait_for(1);
        writer
    }

    /// Rows committed so far.
    pub fn committed(&self) -> i64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Waits until `rows` rows are committed (the writer is really going).
    pub fn wait_for(&self, rows: i64) {
        let started = Instant::now();
        while self.committed() < rows {
            assert!(
                self.thread.as_ref().is_some_and(|t| !t.is_finished()),
                "the writer died"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer committed {} of {rows} rows in a minute",
                self.committed()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the writer and returns how many rows it committed in all.
    pub fn stop(mut self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.committed()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
