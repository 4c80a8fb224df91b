//! A gzip writer that uses every core: the stream is cut into chunks, each
//! chunk becomes one gzip member compressed on a worker thread, and members
//! are written back in order. Concatenated members are standard gzip
//! (RFC 1952 §2.2): `gzip -t`, GNU tar and `MultiGzDecoder` read them.
//!
//! Memory is bounded by the number of chunks in flight, not by the data.
//! Chunks that deflate cannot shrink (PCM music, noise, zips) are written as
//! stored blocks instead of being compressed for nothing.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

/// What kind of bytes are being written, which decides how hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Database, text, logs: compress well, worth a higher level.
    Dense,
    /// PCM audio and zips: deflate gains little, so favour speed.
    Media,
}

/// Tuning of the parallel writer.
#[derive(Debug, Clone, Copy)]
pub struct GzOptions {
    /// Bytes per gzip member.
    pub chunk_size: usize,
    /// Worker threads.
    pub threads: usize,
    /// libdeflate level for `Content::Dense`.
    pub dense_level: i32,
    /// libdeflate level for `Content::Media`.
    pub media_level: i32,
}

impl Default for GzOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        Self {
            chunk_size: 4 << 20,
            threads,
            dense_level: 6,
            media_level: 2,
        }
    }
}

/// A chunk compresses to a member no bigger than this fraction of its size,
/// or it is stored: a member that saves under 3% is not worth its CPU.
const STORE_ABOVE_RATIO: f64 = 0.97;
/// Bytes compressed at the lowest level to guess whether a chunk will shrink.
const PROBE_LEN: usize = 64 << 10;

struct Job {
    seq: u64,
    data: Vec<u8>,
    content: Content,
}

type Done = (u64, Vec<u8>, io::Result<Vec<u8>>);

/// Parallel multi-member gzip writer over `W`. Call [`ParallelGz::finish`]:
/// dropping it discards what is still in flight (the workers see the job
/// channel close and exit on their own).
pub struct ParallelGz<W: Write> {
    inner: W,
    buf: Vec<u8>,
    content: Content,
    chunk_size: usize,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl<W: Write> ParallelGz<W> {
    pub fn new(inner: W, options: GzOptions) -> Self {
        let threads = options.threads.max(1);
        let max_in_flight = threads * 2;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(max_in_flight);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let jobs = std::sync::Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || worker(&jobs, &done, options))
            })
            .collect();
        Self {
            inner,
            buf: Vec::with_capacity(options.chunk_size),
            content: Content::Dense,
            chunk_size: options.chunk_size.max(1),
            max_in_flight,
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            spare: Vec::new(),
        }
    }

    /// Declares what the following bytes are. A change of kind ends the
    /// current member, so each member is compressed for what it holds.
    pub fn set_content(&mut self, content: Content) -> io::Result<()> {
        if content != self.content {
            self.dispatch()?;
            self.content = content;
        }
        Ok(())
    }

    /// Compresses what is buffered, writes every member in order, and
    /// returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        self.jobs = None;
        while self.next_write < self.next_seq {
            self.receive(true)?;
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.next_seq - self.next_write >= self.max_in_flight as u64 {
            self.receive(true)?;
        }
        let fresh = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.chunk_size));
        let data = std::mem::replace(&mut self.buf, fresh);
        let job = Job {
            seq: self.next_seq,
            data,
            content: self.content,
        };
        let sender = self.jobs.as_ref().ok_or_else(workers_gone)?;
        sender.send(job).map_err(|_| workers_gone())?;
        self.next_seq += 1;
        while self.receive(false)? {}
        Ok(())
    }

    /// Takes one finished member (waiting for it if `block`), then writes
    /// out every member that is now next in order. Returns whether it got one.
    fn receive(&mut self, block: bool) -> io::Result<bool> {
        let (seq, mut input, output) = if block {
            self.results.recv().map_err(|_| workers_gone())?
        } else {
            match self.results.try_recv() {
                Ok(done) => done,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Err(workers_gone()),
            }
        };
        input.clear();
        self.spare.push(input);
        self.ready.insert(seq, output?);
        while let Some(member) = self.ready.remove(&self.next_write) {
            self.inner.write_all(&member)?;
            self.next_write += 1;
        }
        Ok(true)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= self.chunk_size {
            self.dispatch()?;
        }
        Ok(take)
    }

    /// Members are only written in order as they finish; a flush cannot
    /// force a half-filled chunk out without changing the member layout, so
    /// it flushes what has been written so far.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn workers_gone() -> io::Error {
    io::Error::other("gzip worker thread stopped unexpectedly")
}

fn worker(jobs: &std::sync::Mutex<mpsc::Receiver<Job>>, done: &Sender<Done>, options: GzOptions) {
    let mut compressors = Compressors::new(options);
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let member = compressors.member(&job.data, job.content);
        if done.send((job.seq, job.data, member)).is_err() {
            return;
        }
    }
}

/// One libdeflate compressor per level, reused across chunks.
struct Compressors {
    options: GzOptions,
    by_level: BTreeMap<i32, Compressor>,
}

impl Compressors {
    fn new(options: GzOptions) -> Self {
        Self {
            options,
            by_level: BTreeMap::new(),
        }
    }

    fn compress(&mut self, level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
        let compressor = match self.by_level.entry(level) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let lvl = CompressionLvl::new(level).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("invalid deflate level {level}"),
                    )
                })?;
                e.insert(Compressor::new(lvl))
            }
        };
        let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
        let n = compressor
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("deflate failed: {e:?}")))?;
        out.truncate(n);
        Ok(out)
    }

    fn member(&mut self, data: &[u8], content: Content) -> io::Result<Vec<u8>> {
        if data.len() > 2 * PROBE_LEN {
            // Probe the middle of the chunk: file headers at the start are
            // not typical of what follows.
            let start = data.len() / 2 - PROBE_LEN / 2;
            let probe = &data[start..start + PROBE_LEN];
            let probed = self.compress(1, probe)?;
            if probed.len() as f64 > STORE_ABOVE_RATIO * PROBE_LEN as f64 {
                return Ok(stored_member(data));
            }
        }
        let level = match content {
            Content::Dense => self.options.dense_level,
            Content::Media => self.options.media_level,
        };
        let member = self.compress(level, data)?;
        if member.len() as f64 > STORE_ABOVE_RATIO * data.len() as f64 {
            return Ok(stored_member(data));
        }
        Ok(member)
    }
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks.
fn stored_member(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 65_535;
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(data.len() + blocks * 5 + 18);
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unix
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = block.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_mixed_content_in_order() {
        let options = GzOptions {
            chunk_size: 100_000,
            threads: 3,
            ..GzOptions::default()
        };
        let text = b"trackpack kick snare hat ".repeat(20_000);
        let random = noise(700_000, 7);
        let mut gz = ParallelGz::new(Vec::new(), options);
        gz.write_all(&text).unwrap();
        gz.set_content(Content::Media).unwrap();
        gz.write_all(&random).unwrap();
        gz.set_content(Content::Dense).unwrap();
        gz.write_all(b"tail").unwrap();
        let out = gz.finish().unwrap();
        let expected = [&text[..], &random[..], b"tail"].concat();
        assert_eq!(gunzip(&out), expected);
        // Text shrinks a lot; noise is stored, costing only a few bytes per block.
        assert!(out.len() < random.len() + text.len() / 10);
    }

    #[test]
    fn stored_member_is_valid_gzip() {
        for len in [0, 1, 65_535, 65_536, 200_000] {
            let data = noise(len, 3);
            assert_eq!(gunzip(&stored_member(&data)), data, "len {len}");
        }
    }
}
