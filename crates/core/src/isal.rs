//! Intel's ISA-L deflate, used when the system has it. On PCM audio its
//! level-2 encoder is several times faster than libdeflate's fastest levels
//! at about the same ratio (issue #3), and it is what `igzip` uses.
//!
//! The library is opened at run time (`dlopen("libisal.so.2")`), never
//! linked: a fresh machine without Debian's `isal` package builds and runs
//! the same binary, only with libdeflate doing all the work. The few
//! declarations needed are written here by hand from ISA-L's
//! `igzip_lib.h` (v2.30), so building needs no header either. Only the
//! public head of `struct isal_zstream` is touched; the stream lives in a
//! zeroed buffer far larger than the whole struct, so a library whose
//! private `internal_state` has grown still has room. Every member it makes
//! is decoded again by the caller before it is written (see `gz.rs`), so a
//! library that misbehaves costs speed, never a bad archive.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

/// `IGZIP_GZIP`: wrap the deflate stream in a gzip header and trailer.
const IGZIP_GZIP: u16 = 1;
/// `NO_FLUSH`: one complete stream from one call.
const NO_FLUSH: u16 = 0;
/// `COMP_OK`.
const COMP_OK: c_int = 0;
/// `ISAL_DEF_MAX_HDR_SIZE`: the largest dynamic Huffman block header.
const MAX_HDR_SIZE: usize = 328;
/// `sizeof(struct isal_zstream)` is 82,384 bytes in v2.30; four times that
/// leaves room for any growth of the private state.
const STREAM_BYTES: usize = 4 * 82_384;

/// The public head of `struct isal_zstream` (igzip_lib.h), unchanged since
/// ISA-L 2.25; `internal_state` follows at offset 64.
#[repr(C)]
struct ZStreamHead {
    next_in: *const u8,
    avail_in: u32,
    total_in: u32,
    next_out: *mut u8,
    avail_out: u32,
    total_out: u32,
    hufftables: *mut c_void,
    level: u32,
    level_buf_size: u32,
    level_buf: *mut u8,
    end_of_stream: u16,
    flush: u16,
    gzip_flag: u16,
    hist_bits: u16,
}

type StatelessInit = unsafe extern "C" fn(*mut ZStreamHead);
type Stateless = unsafe extern "C" fn(*mut ZStreamHead) -> c_int;

/// The two entry points, resolved once per process.
struct Library {
    init: StatelessInit,
    deflate: Stateless,
}

fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY.get_or_init(open).as_ref()
}

fn open() -> Option<Library> {
    // SAFETY: dlopen takes a NUL-terminated name; the handle is kept for
    // the life of the process (never dlclose'd), so the symbols stay valid.
    let handle =
        unsafe { libc::dlopen(c"libisal.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let symbol = |name: &std::ffi::CStr| {
        // SAFETY: a live handle and a NUL-terminated name.
        let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!ptr.is_null()).then_some(ptr)
    };
    let init = symbol(c"isal_deflate_stateless_init")?;
    let deflate = symbol(c"isal_deflate_stateless")?;
    // SAFETY: both symbols are functions of these C signatures in every
    // libisal.so.2 (igzip_lib.h); a data pointer and a function pointer
    // have the same size on every platform dlsym exists on.
    unsafe {
        Some(Library {
            init: std::mem::transmute::<*mut c_void, StatelessInit>(init),
            deflate: std::mem::transmute::<*mut c_void, Stateless>(deflate),
        })
    }
}

/// Whether `libisal.so.2` could be opened.
#[cfg(test)]
pub(crate) fn available() -> bool {
    library().is_some()
}

/// `ISAL_DEF_LVL{1,2,3}_*` level buffer sizes: the token buffer sets the
/// deflate block length, and smaller blocks follow the changing statistics
/// of audio more closely (`_SMALL` = 16 Ki tokens).
fn level_buf_size(level: u32) -> Option<usize> {
    const K: usize = 1024;
    let (hash, extra) = match level {
        // IGZIP_HASH8K_HASH_SIZE, IGZIP_HASH_HIST_SIZE, IGZIP_HASH_MAP_HASH_SIZE
        1 => (8 * K, 0),
        2 => (32 * K, 0),
        3 => (32 * K, 16 * K),
        _ => return None,
    };
    Some(4 * K + extra + 2 * hash + 4 * TOKENS_K * K)
}

/// Thousands of tokens per block; see [`level_buf_size`].
const TOKENS_K: usize = 16;

/// One compressor: a stream and its level buffer, reused across members by
/// one thread.
pub struct IsalCompressor {
    library: &'static Library,
    level: u32,
    /// `u64`s keep the stream 8-byte aligned, as its pointers need.
    stream: Box<[u64]>,
    level_buf: Vec<u8>,
}

// SAFETY: the raw pointers inside are only set for the duration of one
// `gzip` call, made through `&mut self`; nothing is shared between threads.
unsafe impl Send for IsalCompressor {}

impl IsalCompressor {
    /// A level 1..=3 compressor, or `None` if ISA-L is not installed.
    pub fn new(level: u32) -> Option<Self> {
        let library = library()?;
        let level_buf = vec![0; level_buf_size(level)?];
        Some(Self {
            library,
            level,
            stream: vec![0; STREAM_BYTES / 8].into_boxed_slice(),
            level_buf,
        })
    }

    /// Compresses `data` into one complete gzip member (header, deflate
    /// stream, CRC-32 and length), appended to `out`. `None` if ISA-L
    /// refused, in which case `out` is as it was.
    pub fn gzip(&mut self, data: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let avail_in = u32::try_from(data.len()).ok()?;
        // Stored blocks cost 5 bytes per 64 KiB: the worst case, plus the
        // gzip wrapper and a block header.
        let bound = data.len() + 5 * (data.len() / 65_535 + 2) + 18 + MAX_HDR_SIZE;
        let start = out.len();
        out.reserve(bound);
        let avail_out = u32::try_from(out.capacity() - start).ok()?;
        let stream = self.stream.as_mut_ptr().cast::<ZStreamHead>();
        // SAFETY: `stream` points to STREAM_BYTES of zeroed, 8-aligned,
        // exclusively borrowed memory, more than sizeof(struct isal_zstream).
        // init fills in defaults; the fields set after it describe `data`
        // (read only), the spare capacity of `out` and `level_buf`, all live
        // for the call. ISA-L writes at most avail_out bytes and reports
        // how many in total_out.
        let rc = unsafe {
            (self.library.init)(stream);
            let s = &mut *stream;
            s.next_in = data.as_ptr();
            s.avail_in = avail_in;
            s.next_out = out.as_mut_ptr().add(start);
            s.avail_out = avail_out;
            s.level = self.level;
            s.level_buf = self.level_buf.as_mut_ptr();
            s.level_buf_size = u32::try_from(self.level_buf.len()).ok()?;
            s.end_of_stream = 1;
            s.flush = NO_FLUSH;
            s.gzip_flag = IGZIP_GZIP;
            (self.library.deflate)(stream)
        };
        // SAFETY: as above; the call has returned.
        let (written, consumed) = unsafe { ((*stream).total_out, (*stream).total_in) };
        if rc != COMP_OK || consumed != avail_in || written > avail_out {
            return None;
        }
        // SAFETY: ISA-L initialised `written` bytes after `start`, within
        // the capacity reserved above.
        unsafe { out.set_len(start + written as usize) };
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gz::tests::{assert_gzip_t, gunzip};

    fn audio_like(len: usize) -> Vec<u8> {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        (0..len / 2)
            .flat_map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let tone = ((i as f64 * 0.031).sin() * 6000.0) as i16;
                tone.wrapping_add((seed % 64) as i16 - 32).to_le_bytes()
            })
            .collect()
    }

    /// ISA-L must be there (`cargo xtask test` installs Debian's libisal2):
    /// a test that cannot reach what it tests fails, it never skips.
    fn require_isal() {
        assert!(
            available(),
            "libisal.so.2 is not installed: install Debian's libisal2 (cargo xtask test does)"
        );
    }

    #[test]
    fn members_decode_and_pass_gzip_t() {
        require_isal();
        let data = audio_like(3 << 20);
        let mut out = Vec::new();
        for level in 1..=3 {
            let mut isal = IsalCompressor::new(level).unwrap();
            let mut member = Vec::new();
            isal.gzip(&data, &mut member).unwrap();
            assert!(member.len() < data.len(), "level {level} shrinks audio");
            out.extend_from_slice(&member);
            let mut empty = Vec::new();
            isal.gzip(&[], &mut empty).unwrap();
            out.extend_from_slice(&empty);
        }
        assert_eq!(gunzip(&out), [&data[..], &data[..], &data[..]].concat());
        assert_gzip_t(&out, "ISA-L levels 1-3");
    }

    #[test]
    fn noise_fits_the_bound() {
        require_isal();
        let mut seed = 7u64;
        let noise: Vec<u8> = (0..1_000_003)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let mut member = vec![1, 2, 3];
        IsalCompressor::new(2)
            .unwrap()
            .gzip(&noise, &mut member)
            .unwrap();
        assert_eq!(gunzip(&member[3..]), noise);
    }
}
