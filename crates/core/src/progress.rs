//! How long-running work tells its caller how far it got, without core
//! knowing who listens. The binary draws progress bars at a terminal and
//! passes [`NoProgress`] everywhere else (the timer, pipes, `--quiet`), so
//! core stays free of any terminal library and the nightly log stays clean.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};

/// A stretch of work measured in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// Reading `cloud-data/` into the archive (bytes of data read).
    Archive,
    /// Reading the new archive back before it gets its name.
    ReadBack,
    /// Checking an archive (bytes of the compressed file read).
    Verify,
    /// Checking and staging an archive for a restore.
    Restore,
    /// Copying a backup to the named target.
    Upload(&'a str),
}

impl fmt::Display for Phase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Archive => f.write_str("Archiving"),
            Phase::ReadBack => f.write_str("Reading back"),
            Phase::Verify => f.write_str("Verifying"),
            Phase::Restore => f.write_str("Checking"),
            Phase::Upload(target) => write!(f, "Copying to {target}"),
        }
    }
}

/// Receives progress. Calls come from the thread doing the work; one phase
/// at a time: `start`, any number of `advance`, `finish`.
pub trait Progress: Send + Sync {
    /// A phase begins; `total_bytes` is what `advance` will add up to.
    fn start(&self, _phase: Phase<'_>, _total_bytes: u64) {}
    /// `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
    /// The phase is over (also after a failure).
    fn finish(&self) {}
}

/// Reports nothing: the default for every caller that shows no progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Finishes a phase when dropped, so every early return ends it too.
pub(crate) struct PhaseGuard<'a>(&'a dyn Progress);

impl<'a> PhaseGuard<'a> {
    pub(crate) fn start(progress: &'a dyn Progress, phase: Phase<'_>, total_bytes: u64) -> Self {
        progress.start(phase, total_bytes);
        Self(progress)
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Follows how far a file has been read through another handle to the
/// same open file (a `try_clone`: the two share one offset), so work done
/// on a background thread that owns the file can be reported without
/// changing that thread.
pub(crate) struct OffsetWatch<'a> {
    file: File,
    reported: u64,
    progress: &'a dyn Progress,
}

impl<'a> OffsetWatch<'a> {
    /// Watches `file` (an open handle); `Err` if it cannot be duplicated.
    pub(crate) fn new(file: &File, progress: &'a dyn Progress) -> io::Result<Self> {
        Ok(Self {
            file: file.try_clone()?,
            reported: 0,
            progress,
        })
    }

    /// Reports whatever was read since the last call.
    pub(crate) fn update(&mut self) {
        if let Ok(offset) = self.file.stream_position()
            && offset > self.reported
        {
            self.progress.advance(offset - self.reported);
            self.reported = offset;
        }
    }
}

/// A reader that reports every byte read through it (targets use it to
/// report a copy).
pub struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<'a, R> CountingReader<'a, R> {
    pub fn new(inner: R, progress: &'a dyn Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Sum(AtomicU64);

    impl Progress for Sum {
        fn advance(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::SeqCst);
        }
    }

    #[test]
    fn offset_watch_sees_reads_through_the_other_handle() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7u8; 1000]).unwrap();
        file.rewind().unwrap();
        let sum = Sum::default();
        let mut watch = OffsetWatch::new(&file, &sum).unwrap();
        let mut buf = [0u8; 300];
        file.read_exact(&mut buf).unwrap();
        watch.update();
        assert_eq!(sum.0.load(Ordering::SeqCst), 300);
        io::copy(&mut file, &mut io::sink()).unwrap();
        watch.update();
        watch.update();
        assert_eq!(sum.0.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn counting_reader_counts_every_byte() {
        let sum = Sum::default();
        let mut reader = CountingReader::new(&[1u8; 4097][..], &sum);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        assert_eq!(sum.0.load(Ordering::SeqCst), 4097);
    }
}
