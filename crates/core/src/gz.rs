//! A gzip writer that uses every core: the stream is cut into chunks, each
//! chunk becomes one gzip member compressed on a worker thread, and members
//! are written back in order. Concatenated members are standard gzip
//! (RFC 1952 §2.2): `gzip -t`, GNU tar and `MultiGzDecoder` read them.
//!
//! Memory is bounded by the number of chunks in flight, not by the data.
//! Chunks that deflate cannot shrink (PCM music, noise, zips) are written as
//! stored blocks instead of being compressed for nothing.
//!
//! Each chunk is measured on a few slices of its own bytes and goes to the
//! encoder with the best trade of CPU for size ([`SAVING_PER_CPU`]): stored,
//! ISA-L (see [`crate::isal`]) where the system has it, or libdeflate;
//! `MSS_BACKUP_DEFLATE=libdeflate` leaves ISA-L out. Every member is decoded again in memory on its worker
//! before it is written ([`MemberCheck`]), so the read-back after writing
//! only has to hash the file.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

use crate::inflate::MemberCheck;
use crate::isal::IsalCompressor;

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
            chunk_size: 2 << 20,
            threads,
            dense_level: 6,
            media_level: 2,
        }
    }
}

/// The one trade of archive size for CPU: an encoder that costs one more
/// unit of CPU per byte of a chunk (see [`COST_MEDIA`]) is chosen only where
/// the chunk's own bytes show it saving more than this fraction of the
/// chunk. Every chunk takes the encoder with the least CPU + size/this,
/// which for a given CPU makes the smallest archive any per-chunk rule can
/// (a Lagrangian split of one budget), on whatever mix of data. 1.5% is the
/// largest of 1, 1.25, 1.5, 2 and 3% that kept every mix and seed measured
/// at about half the size goal (worst 1.0105 × `tar -czf`, of the 1.02
/// allowed; 2% let a small drum-heavy tree reach 1.0199): see
/// docs/performance.md, which also gives the CPU it costs. The thresholds
/// it replaced (store below 3% saving, ISA-L unless 8% bigger) were fitted
/// to one data set and missed the goal on others.
const SAVING_PER_CPU: f64 = 0.015;
/// CPU per input byte of each encoder in units of ISA-L level 2's, counted
/// (instructions, callgrind) on drum, speech and music chunks: libdeflate
/// level 2 2.6 to 3.0, level 6 2.9 to 3.0 (5 to 6 on near-incompressible or
/// near-silent audio, where the saving decides anyway). Storing costs none.
const COST_MEDIA: f64 = 2.7;
const COST_DENSE: f64 = 3.0;
/// Probes per chunk, spread evenly across it, and the bytes of each: a chunk
/// often holds the end of one file and the start of another, or a loud and a
/// quiet stretch, which one probe from the middle misjudges.
const PROBES: usize = 4;
const PROBE_LEN: usize = 16 << 10;

/// How a chunk becomes a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Stored,
    Isal,
    Libdeflate(i32),
}

struct Job {
    seq: u64,
    data: Vec<u8>,
    content: Content,
}

type Done = (u64, Vec<u8>, io::Result<Vec<u8>>);

/// Where one unit of the output went: a member compressed here, or a run
/// of bytes copied in whole ([`ParallelGz::copy_members`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset in the output.
    pub offset: u64,
    pub len: u64,
    /// The member's trailer (CRC-32 and size of what it decodes to), for a
    /// member compressed here; `None` for a copied run.
    pub trailer: Option<(u32, u32)>,
}

/// What is next in output order: a member, or a run to copy from a file.
enum Ready {
    Member(Vec<u8>),
    Copy {
        from: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: u64,
    },
}

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
    ready: BTreeMap<u64, Ready>,
    spare: Vec<Vec<u8>>,
    /// One per unit written, in order.
    spans: Vec<Span>,
    written: u64,
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
            spans: Vec::new(),
            written: 0,
        }
    }

    /// How many units (members, copied runs) have been started: after
    /// [`ParallelGz::end_member`], the index of the next one.
    pub fn units(&self) -> u64 {
        self.next_seq
    }

    /// Ends the current member and puts `len` bytes of `from` at `offset`
    /// next in the output, as they are: gzip members made by an earlier
    /// run (see [`crate::reuse`]), which the caller has checked. They are
    /// copied when their turn comes, a block at a time.
    pub fn copy_members(
        &mut self,
        from: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.dispatch()?;
        self.ready
            .insert(self.next_seq, Ready::Copy { from, offset, len });
        self.next_seq += 1;
        self.write_ready()
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

    /// Ends the current member here, so that what follows starts one of its
    /// own. The archive writer calls it at file boundaries: an unchanged
    /// file then gives the same members from one backup to the next.
    pub fn end_member(&mut self) -> io::Result<()> {
        self.dispatch()
    }

    /// Compresses what is buffered, writes every member in order, and
    /// returns the inner writer (flushed).
    pub fn finish(self) -> io::Result<W> {
        self.finish_with_spans().map(|(inner, _)| inner)
    }

    /// [`ParallelGz::finish`], with where each unit went.
    pub fn finish_with_spans(mut self) -> io::Result<(W, Vec<Span>)> {
        self.dispatch()?;
        self.jobs = None;
        self.write_ready()?;
        while self.next_write < self.next_seq {
            self.receive(true)?;
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.inner.flush()?;
        Ok((self.inner, self.spans))
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
        self.ready.insert(seq, Ready::Member(output?));
        self.write_ready()?;
        Ok(true)
    }

    /// Writes every unit that is next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(unit) = self.ready.remove(&self.next_write) {
            let (len, trailer) = match unit {
                Ready::Member(member) => {
                    self.inner.write_all(&member)?;
                    (member.len() as u64, trailer(&member))
                }
                Ready::Copy { from, offset, len } => {
                    copy_range(&from, offset, len, &mut self.inner)?;
                    (len, None)
                }
            };
            self.spans.push(Span {
                offset: self.written,
                len,
                trailer,
            });
            self.written += len;
            self.next_write += 1;
        }
        Ok(())
    }
}

/// The CRC-32 and size a gzip member ends with (its last 8 bytes).
pub(crate) fn trailer(member: &[u8]) -> Option<(u32, u32)> {
    let tail: &[u8; 8] = member
        .get(member.len().checked_sub(8)?..)?
        .try_into()
        .ok()?;
    let [c0, c1, c2, c3, s0, s1, s2, s3] = *tail;
    Some((
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([s0, s1, s2, s3]),
    ))
}

/// Copies `len` bytes of `from` at `offset` into `out`; a file shorter
/// than that is an error, never a short copy.
fn copy_range(from: &std::fs::File, offset: u64, len: u64, out: &mut impl Write) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![
        0u8;
        (1 << 20)
            .min(usize::try_from(len).unwrap_or(usize::MAX))
            .max(1)
    ];
    let mut done = 0u64;
    while done < len {
        crate::interrupt::check()?;
        let want = buf
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        let n = from.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the previous archive ended before the members copied from it",
            ));
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
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
    let mut compressors = Compressors::new(options, MediaEncoder::from_env());
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let member = compressors.checked_member(&job.data, job.content);
        if done.send((job.seq, job.data, member)).is_err() {
            return;
        }
    }
}

/// Which deflate compresses `Content::Media` chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaEncoder {
    Libdeflate,
    /// ISA-L if `libisal.so.2` loads, else libdeflate.
    Isal,
}

impl MediaEncoder {
    /// `MSS_BACKUP_DEFLATE`: `libdeflate`, or `isal`/`auto`/unset for ISA-L
    /// where installed. A developer's switch for measuring, not a setting.
    fn from_env() -> Self {
        match std::env::var("MSS_BACKUP_DEFLATE").as_deref() {
            Ok("libdeflate") => MediaEncoder::Libdeflate,
            _ => MediaEncoder::Isal,
        }
    }
}

/// The ISA-L level (1..=3) standing in for libdeflate `level`: the same
/// number, as both run from fastest (1) upwards; `igzip -2` is level 2.
fn isal_level(level: i32) -> u32 {
    level.clamp(1, 3) as u32
}

/// The compressors of one worker: one libdeflate compressor per level and
/// maybe one ISA-L compressor, reused across chunks, and the checker every
/// member passes before it leaves the worker.
struct Compressors {
    options: GzOptions,
    by_level: BTreeMap<i32, Compressor>,
    isal: Option<IsalCompressor>,
    check: Option<MemberCheck>,
}

impl Compressors {
    fn new(options: GzOptions, media: MediaEncoder) -> Self {
        let isal = match media {
            MediaEncoder::Isal => IsalCompressor::new(isal_level(options.media_level)),
            MediaEncoder::Libdeflate => None,
        };
        Self {
            options,
            by_level: BTreeMap::new(),
            isal,
            check: None,
        }
    }

    /// [`Compressors::member`], proven to decode to `data`. A member from
    /// ISA-L that fails is made again with libdeflate (and ISA-L is not
    /// used again by this worker); one from libdeflate or stored that fails
    /// means memory or CPU trouble: an error, never a bad archive.
    fn checked_member(&mut self, data: &[u8], content: Content) -> io::Result<Vec<u8>> {
        let member = self.member(data, content)?;
        if self.holds(&member, data)? {
            return Ok(member);
        }
        if self.isal.take().is_some() {
            tracing::warn!("ISA-L made a gzip member that does not decode; using libdeflate");
            let member = self.member(data, content)?;
            if self.holds(&member, data)? {
                return Ok(member);
            }
        }
        Err(io::Error::other(
            "a gzip member just compressed does not decode to its input (memory or CPU fault?)",
        ))
    }

    fn holds(&mut self, member: &[u8], data: &[u8]) -> io::Result<bool> {
        let check = match &mut self.check {
            Some(check) => check,
            None => self.check.insert(MemberCheck::new()?),
        };
        Ok(check.holds(member, data))
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
        let route = match content {
            _ if data.len() >= 2 * PROBES * PROBE_LEN => self.route(data, content)?,
            Content::Dense => Route::Libdeflate(self.options.dense_level),
            Content::Media if self.isal.is_some() => Route::Isal,
            Content::Media => Route::Libdeflate(self.options.media_level),
        };
        let member = match route {
            Route::Stored => return Ok(stored_member(data)),
            Route::Isal => {
                let mut out = Vec::new();
                match self
                    .isal
                    .as_mut()
                    .and_then(|isal| isal.gzip(data, &mut out))
                {
                    Some(()) => out,
                    None => self.compress(self.options.media_level, data)?,
                }
            }
            Route::Libdeflate(level) => self.compress(level, data)?,
        };
        // ISA-L's member is the exact measure the probes only estimated:
        // stored, the chunk costs no CPU to read back, so ISA-L has to save
        // what a unit of CPU is worth. Other members cost more to make than
        // they would to read, and are kept unless storing is smaller.
        let stored_len = stored_member_len(data.len()) as f64;
        let worth = match route {
            Route::Isal => SAVING_PER_CPU * data.len() as f64,
            _ => 0.0,
        };
        if stored_len - (member.len() as f64) <= worth {
            return Ok(stored_member(data));
        }
        Ok(member)
    }

    /// Measures a chunk on [`PROBES`] slices of it with each encoder and
    /// takes the one with the least CPU + size / [`SAVING_PER_CPU`]. A
    /// function of the chunk's bytes only, so the same chunk always makes
    /// the same member. Dense chunks (database, logs) only choose between
    /// stored and the dense level.
    fn route(&mut self, data: &[u8], content: Content) -> io::Result<Route> {
        let probes = (0..PROBES).map(|k| {
            let start = data.len() * (2 * k + 1) / (2 * PROBES) - PROBE_LEN / 2;
            &data[start..start + PROBE_LEN]
        });
        let probes: Vec<&[u8]> = probes.collect();
        let probed = (PROBES * PROBE_LEN) as f64;
        // CPU is counted in units of the cheapest encoder at hand.
        let unit = if self.isal.is_some() { 1.0 } else { COST_MEDIA };
        let score = |cost: f64, size: usize| cost / unit + size as f64 / probed / SAVING_PER_CPU;
        let stored = (
            Route::Stored,
            score(0.0, PROBES * stored_member_len(PROBE_LEN)),
        );
        let (media, dense) = (self.options.media_level, self.options.dense_level);
        if content == Content::Dense {
            let by_dense = self.probe_libdeflate(dense, &probes)?;
            let compressed = (Route::Libdeflate(dense), score(COST_DENSE, by_dense));
            return Ok(cheapest([Some(stored), Some(compressed)]));
        }
        let mut isal = None;
        if let Some(compressor) = &mut self.isal {
            let mut total = Some(0);
            for probe in &probes {
                let mut out = Vec::new();
                total = total
                    .zip(compressor.gzip(probe, &mut out))
                    .map(|(t, ())| t + out.len());
            }
            isal = total.map(|size| (Route::Isal, score(1.0, size)));
        }
        // Where even ISA-L's probes save less than its CPU is worth, store
        // untried (music under hiss, zips).
        if isal.is_some_and(|(_, by_isal)| by_isal >= stored.1) {
            return Ok(Route::Stored);
        }
        let by_media = self.probe_libdeflate(media, &probes)?;
        let route = cheapest([
            Some(stored),
            isal,
            Some((Route::Libdeflate(media), score(COST_MEDIA, by_media))),
        ]);
        // ISA-L's member of the whole chunk settles stored against ISA-L
        // exactly (see `member`), so the probes only pick the encoder.
        if route == Route::Stored && isal.is_some() {
            return Ok(Route::Isal);
        }
        // Where libdeflate's matcher beats ISA-L (drum hits and one-shots
        // over a quiet floor), its dense level may save more still
        // (near-silence, where longer matches pay).
        if route == Route::Libdeflate(media) && dense != media {
            let by_dense = self.probe_libdeflate(dense, &probes)?;
            if score(COST_DENSE, by_dense) < score(COST_MEDIA, by_media) {
                return Ok(Route::Libdeflate(dense));
            }
        }
        Ok(route)
    }

    /// The total size of libdeflate's members of `probes` at `level`.
    fn probe_libdeflate(&mut self, level: i32, probes: &[&[u8]]) -> io::Result<usize> {
        let mut total = 0;
        for probe in probes {
            total += self.compress(level, probe)?.len();
        }
        Ok(total)
    }
}

/// The route of least score; the first of equals (the cheapest, as the
/// candidates come in order of cost).
fn cheapest<const N: usize>(candidates: [Option<(Route, f64)>; N]) -> Route {
    let mut best: Option<(Route, f64)> = None;
    for (route, score) in candidates.into_iter().flatten() {
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((route, score));
        }
    }
    best.map_or(Route::Stored, |(route, _)| route)
}

/// The size of [`stored_member`] of `len` bytes.
fn stored_member_len(len: usize) -> usize {
    len + 5 * len.div_ceil(65_535).max(1) + 18
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
pub(crate) mod tests {
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

    pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// Asserts that the `gzip` command accepts `bytes` (`gzip -t`).
    pub(crate) fn assert_gzip_t(bytes: &[u8], what: &str) {
        let mut gzip = std::process::Command::new("gzip")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        gzip.stdin.take().unwrap().write_all(bytes).unwrap();
        assert!(gzip.wait().unwrap().success(), "gzip -t, {what}");
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

    /// Both media encoders, ISA-L only where installed: every member
    /// decodes to its chunk with `MultiGzDecoder` and passes `gzip -t`.
    #[test]
    fn media_members_from_each_encoder_are_valid_gzip() {
        let options = GzOptions::default();
        // Quiet 16-bit "audio": compressible, so it is not stored.
        let audio: Vec<u8> = noise(1 << 20, 11)
            .chunks(2)
            .flat_map(|b| (((b[0] as i16) >> 3) + ((b[1] as i16) >> 4)).to_le_bytes())
            .collect();
        assert!(
            crate::isal::available(),
            "libisal.so.2 is not installed: install Debian's libisal2 (cargo xtask test does)"
        );
        let encoders = [MediaEncoder::Libdeflate, MediaEncoder::Isal];
        let mut members = Vec::new();
        for encoder in encoders {
            let mut compressors = Compressors::new(options, encoder);
            assert_eq!(compressors.isal.is_some(), encoder == MediaEncoder::Isal);
            let mut out = Vec::new();
            // Chunks too small to probe: ISA-L takes each whole.
            for chunk in audio.chunks(2 * PROBE_LEN) {
                out.extend(compressors.checked_member(chunk, Content::Media).unwrap());
            }
            assert!(out.len() < audio.len() * 9 / 10, "{encoder:?} compresses");
            assert_eq!(gunzip(&out), audio, "{encoder:?}");
            assert_gzip_t(&out, &format!("{encoder:?}"));
            members.push(out);
        }
        if let [libdeflate, isal] = &members[..] {
            assert_ne!(libdeflate, isal, "ISA-L was used");
        }
    }

    #[test]
    fn stored_member_is_valid_gzip() {
        for len in [0, 1, 65_535, 65_536, 200_000] {
            let data = noise(len, 3);
            assert_eq!(gunzip(&stored_member(&data)), data, "len {len}");
        }
    }
}
