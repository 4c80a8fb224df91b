//! Fast reading of gzip files, for `verify`, restore and the check every
//! backup makes of what reached the disk. A background thread reads the
//! file, hashes it (sha256) and decodes whole gzip members with libdeflate,
//! which is several times faster than a streaming inflater; the reader on
//! the other side only consumes decoded bytes, so hashing, decoding and
//! the work on the decoded stream (tar parsing, member hashes) run in
//! parallel. Every member's CRC-32 and length are checked by libdeflate.
//! [`MemberCheck`] proves each member as it is made, and [`crc_file`] is
//! what is left of a backup's read-back after that.
//!
//! Whole-member decoding needs the member in memory: members written by
//! mss-backup are 2 MiB (4 MiB before); larger ones (up to 64 MiB) are handled by
//! growing the buffers, and anything bigger is refused as not ours.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS,
};
use sha2::{Digest, Sha256};

use crate::manifest::hex;

/// Compressed bytes kept available past the current member.
const WINDOW: usize = 8 << 20;
/// The largest member (compressed or decoded) this reader accepts.
const MAX_MEMBER: usize = 64 << 20;
/// Decoded members waiting for the consumer.
const QUEUE: usize = 3;

/// The compressed file's sha256 and size, known once it has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub size: u64,
}

/// Decoded bytes of a gzip file, produced by a background thread.
pub struct GzReader {
    members: Receiver<io::Result<Vec<u8>>>,
    recycle: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    worker: Option<JoinHandle<io::Result<FileDigest>>>,
}

impl GzReader {
    /// Starts decoding `file` in the background.
    pub fn new(file: File) -> Self {
        let (member_tx, member_rx) = mpsc::sync_channel(QUEUE);
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let worker = std::thread::spawn(move || pump(file, &member_tx, &recycle_rx));
        Self {
            members: member_rx,
            recycle: recycle_tx,
            current: Vec::new(),
            pos: 0,
            worker: Some(worker),
        }
    }

    /// Decodes whatever is left (every member is checked), and returns the
    /// digest of the whole compressed file.
    pub fn finish(mut self) -> io::Result<FileDigest> {
        io::copy(&mut self, &mut io::sink())?;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("gzip reader thread stopped unexpectedly")),
        }
    }
}

impl Read for GzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            // Once per member: the file may be read to its end already,
            // while extraction or checking goes on here.
            crate::interrupt::check()?;
            let next = match self.members.recv() {
                Ok(member) => member?,
                // The worker is done (or failed: `finish` reports why).
                Err(_) => return Ok(0),
            };
            let used = std::mem::replace(&mut self.current, next);
            let _ = self.recycle.send(used);
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads the gzip file at `path` to the end: every member decodes and
/// passes its CRC, and the file's sha256 is returned.
pub fn check_file(path: &Path) -> io::Result<FileDigest> {
    GzReader::new(File::open(path)?).finish()
}

/// The CRC-32 and size of what `file` holds from its current offset on,
/// calling `read` after each read (for progress). With every member proven
/// by [`MemberCheck`] before it was written, this is all a backup's
/// read-back needs: the bytes on disk are the bytes that were proven. The
/// sha256 of those bytes was taken as they were written; comparing CRC-32
/// and length here (several GB/s, where sha256 is about 1) catches a file
/// the filesystem lost, cut or changed just as surely, as a torn or zeroed
/// block changes the CRC but for a 2^-32 chance.
pub fn crc_file(mut file: &File, mut read: impl FnMut()) -> io::Result<(u32, u64)> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc.update(&buf[..n]);
        size += n as u64;
        read();
        crate::interrupt::check()?;
    }
    Ok((crc.finalize(), size))
}

/// Proves a freshly made gzip member before it is written: it is exactly
/// one complete member, and it decodes (CRC-32 and length checked) to
/// exactly the bytes it was made from. Run on the compressing thread, in
/// memory, so the check costs no second pass over the file.
pub struct MemberCheck {
    inflater: Inflater,
    scratch: Vec<u8>,
}

impl MemberCheck {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            inflater: Inflater::new()?,
            scratch: Vec::new(),
        })
    }

    /// Whether `member` is one gzip member that decodes to `data`.
    pub fn holds(&mut self, member: &[u8], data: &[u8]) -> bool {
        // One byte of room past `data`: a member that decodes to more fails.
        self.scratch.resize(data.len() + 1, 0);
        match self.inflater.gzip(member, &mut self.scratch) {
            Ok((used, decoded)) => {
                used == member.len() && decoded == data.len() && self.scratch[..decoded] == *data
            }
            Err(_) => false,
        }
    }
}

fn corrupt(offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt gzip data at byte {offset}: {what}"),
    )
}

/// The worker: read, hash, decode, send; until the end of the file.
fn pump(
    mut file: File,
    members: &SyncSender<io::Result<Vec<u8>>>,
    recycle: &Receiver<Vec<u8>>,
) -> io::Result<FileDigest> {
    let result = (|| {
        let mut inflater = Inflater::new()?;
        let mut input = Input::new();
        let mut window = WINDOW;
        loop {
            input.fill(&mut file, window)?;
            if input.available().is_empty() {
                break;
            }
            let mut out = recycle.try_recv().unwrap_or_default();
            let mut capacity = out.capacity().max((4 << 20) + (64 << 10));
            loop {
                out.resize(capacity, 0);
                match inflater.gzip(input.available(), &mut out) {
                    Ok((used, decoded)) => {
                        out.truncate(decoded);
                        input.consume(used);
                        window = WINDOW;
                        break;
                    }
                    Err(Failure::OutputFull) if capacity < MAX_MEMBER => capacity *= 2,
                    // A member longer than the window looks truncated: read more.
                    Err(Failure::BadData) if !input.eof && window < MAX_MEMBER => {
                        window *= 2;
                        input.fill(&mut file, window)?;
                    }
                    Err(Failure::OutputFull) => {
                        return Err(corrupt(
                            input.offset(),
                            "a member decodes to more than 64 MiB (not an mss-backup archive?)",
                        ));
                    }
                    Err(Failure::BadData) => {
                        return Err(corrupt(input.offset(), "invalid or truncated member"));
                    }
                }
            }
            if members.send(Ok(out)).is_err() {
                // The reader was dropped: nobody wants the rest.
                break;
            }
        }
        Ok(input.digest())
    })();
    if let Err(e) = &result {
        let _ = members.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

/// The compressed bytes: a window over the file, hashed as it is read.
struct Input {
    buf: Vec<u8>,
    start: usize,
    consumed: u64,
    eof: bool,
    hasher: Sha256,
    size: u64,
}

impl Input {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(WINDOW * 2),
            start: 0,
            consumed: 0,
            eof: false,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn offset(&self) -> u64 {
        self.consumed
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.consumed += n as u64;
    }

    /// Makes at least `window` bytes available, or all that is left.
    fn fill(&mut self, file: &mut File, window: usize) -> io::Result<()> {
        if self.eof || self.buf.len() - self.start >= window {
            return Ok(());
        }
        self.buf.drain(..self.start);
        self.start = 0;
        while !self.eof && self.buf.len() < window {
            crate::interrupt::check()?;
            let old = self.buf.len();
            self.buf.resize(window.max(old + (1 << 20)), 0);
            let n = match file.read(&mut self.buf[old..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            self.hasher.update(&self.buf[old..]);
            self.size += n as u64;
            self.eof = n == 0;
        }
        Ok(())
    }

    fn digest(self) -> FileDigest {
        FileDigest {
            sha256: hex(&self.hasher.finalize()),
            size: self.size,
        }
    }
}

enum Failure {
    BadData,
    OutputFull,
}

/// An owned libdeflate decompressor.
struct Inflater(NonNull<libdeflate_decompressor>);

// SAFETY: a libdeflate decompressor has no thread affinity; it is only
// ever used through `&mut self`, from one thread at a time.
unsafe impl Send for Inflater {}

impl Inflater {
    fn new() -> io::Result<Self> {
        // SAFETY: plain allocation; a null return means out of memory.
        let ptr = unsafe { libdeflate_alloc_decompressor() };
        NonNull::new(ptr).map(Self).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a gzip decoder")
        })
    }

    /// Decodes the first gzip member of `input` into `out`: the bytes of
    /// input it used and of output it produced.
    fn gzip(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Failure> {
        let mut used = 0usize;
        let mut produced = 0usize;
        // SAFETY: the pointers and lengths describe live, non-overlapping
        // slices; libdeflate reads at most input.len() and writes at most
        // out.len() bytes, and writes the two counts through valid pointers.
        let rc = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut produced,
            )
        };
        if rc == libdeflate_result_LIBDEFLATE_SUCCESS {
            Ok((used, produced))
        } else if rc == libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE {
            Err(Failure::OutputFull)
        } else {
            Err(Failure::BadData)
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the pointer came from libdeflate_alloc_decompressor and is
        // freed exactly once.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gz::{Content, GzOptions, ParallelGz};
    use std::io::Write;

    fn gzip_file(dir: &Path, data: &[u8], chunk: usize) -> std::path::PathBuf {
        let options = GzOptions {
            chunk_size: chunk,
            ..GzOptions::default()
        };
        let mut gz = ParallelGz::new(Vec::new(), options);
        gz.set_content(Content::Media).unwrap();
        gz.write_all(data).unwrap();
        let bytes = gz.finish().unwrap();
        let path = dir.join("x.gz");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn decodes_every_member_and_hashes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let path = gzip_file(dir.path(), &data, 300_000);
        let mut reader = GzReader::new(File::open(&path).unwrap());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        let digest = reader.finish().unwrap();
        let (expected, size) = crate::manifest::sha256_of(File::open(&path).unwrap()).unwrap();
        assert_eq!(
            digest,
            FileDigest {
                sha256: expected,
                size
            }
        );
    }

    #[test]
    fn reads_a_single_large_member_from_another_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 20 << 20];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let path = dir.path().join("big.gz");
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut out = Vec::new();
        GzReader::new(File::open(&path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), data.len());
    }

    #[test]
    fn member_check_accepts_only_the_exact_member() {
        let data: Vec<u8> = (0..500_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let member = enc.finish().unwrap();
        let mut check = MemberCheck::new().unwrap();
        assert!(check.holds(&member, &data));
        assert!(!check.holds(&member, &data[1..]), "other bytes");
        assert!(
            !check.holds(&member[..member.len() - 1], &data),
            "truncated"
        );
        let mut flipped = member.clone();
        flipped[member.len() / 2] ^= 1;
        assert!(!check.holds(&flipped, &data), "flipped");
        let mut two = member.clone();
        two.extend_from_slice(&member);
        assert!(!check.holds(&two, &data), "a second member");
    }

    /// The read-back agrees with what the archive writer fingerprinted,
    /// and a single flipped bit on disk changes it.
    #[test]
    fn crc_file_matches_the_writer_and_sees_a_flipped_bit() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        let mut writer = crate::manifest::CrcWriter::new(Vec::new());
        for piece in data.chunks(77_777) {
            writer.write_all(piece).unwrap();
        }
        let (_, written) = writer.finish();
        std::fs::write(&path, &data).unwrap();
        let mut reads = 0;
        let on_disk = crc_file(&File::open(&path).unwrap(), || reads += 1).unwrap();
        assert_eq!(on_disk, (written, data.len() as u64));
        assert!(reads >= 3);
        let mut flipped = data.clone();
        flipped[1_500_000] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let (crc, size) = crc_file(&File::open(&path).unwrap(), || ()).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_ne!(crc, written);
    }

    #[test]
    fn truncation_and_flipped_bytes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let path = gzip_file(dir.path(), &data, 200_000);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert!(check_file(&path).is_err());
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(check_file(&path).is_err());
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_file(&path).is_ok());
    }
}
