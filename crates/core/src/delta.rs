//! Which bytes of tonight's archive last night's archive already holds.
//! The archive's gzip members follow files (see [`crate::archive`]), so an
//! unchanged file is the same run of bytes in both; a target that can copy
//! server-side (S3's UploadPartCopy) sends only the rest.
//!
//! Both files are cut at every gzip member header our writers produce
//! (`1f 8b 08 00 00000000`: deflate, no flags, no mtime) and each piece is
//! hashed. A piece of tonight's archive whose sha256 and length equal one
//! of last night's is copied from there; everything else is sent. Where the
//! pattern also occurs inside compressed data, a piece is only cut smaller:
//! what is copied is decided by the bytes' hash, never by where the cuts
//! fall, so the result is byte-identical to tonight's archive either way.
//! Both files are read once, in blocks: memory stays small.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The start of a gzip member as our writers write it.
const MEMBER_START: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00];
const BLOCK: usize = 4 << 20;

/// One run of tonight's archive: copied from last night's, or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes at `from` in last night's archive.
    Copy { from: u64, len: u64 },
    /// `len` bytes at `at` in tonight's archive.
    Send { at: u64, len: u64 },
}

/// How to build tonight's archive from last night's plus new bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// In order; they add up to tonight's archive.
    pub pieces: Vec<Piece>,
    /// The sha256 of last night's archive as read here: the copy is only
    /// good where the stored copy has exactly these bytes.
    pub basis_sha256: String,
    pub copied: u64,
    pub sent: u64,
}

struct Cut {
    offset: u64,
    len: u64,
    hash: [u8; 32],
}

/// The pieces of `tonight` in terms of `last_night`.
pub fn plan(last_night: &Path, tonight: &Path) -> io::Result<Delta> {
    let (old, basis_sha256) = cuts(last_night, true)?;
    let known: HashMap<([u8; 32], u64), u64> =
        old.iter().map(|c| ((c.hash, c.len), c.offset)).collect();
    // Tonight's sha256 is known already (its sidecar): not hashed again.
    let (new, _) = cuts(tonight, false)?;
    let mut pieces: Vec<Piece> = Vec::new();
    let (mut copied, mut sent) = (0, 0);
    for cut in new {
        let piece = match known.get(&(cut.hash, cut.len)) {
            Some(&from) => {
                copied += cut.len;
                Piece::Copy { from, len: cut.len }
            }
            None => {
                sent += cut.len;
                Piece::Send {
                    at: cut.offset,
                    len: cut.len,
                }
            }
        };
        // Runs that continue each other become one piece.
        match (pieces.last_mut(), piece) {
            (
                Some(Piece::Copy { from, len }),
                Piece::Copy {
                    from: next,
                    len: more,
                },
            ) if *from + *len == next => {
                *len += more;
            }
            (
                Some(Piece::Send { at, len }),
                Piece::Send {
                    at: next,
                    len: more,
                },
            ) if *at + *len == next => {
                *len += more;
            }
            _ => pieces.push(piece),
        }
    }
    Ok(Delta {
        pieces,
        basis_sha256,
        copied,
        sent,
    })
}

/// `path` cut at each member start, each piece hashed; and, with `whole`,
/// the whole file's sha256 (else an empty string).
fn cuts(path: &Path, hash_whole: bool) -> io::Result<(Vec<Cut>, String)> {
    let mut file = File::open(path)?;
    let finder = memchr::memmem::Finder::new(MEMBER_START);
    let mut whole = hash_whole.then(Sha256::new);
    let mut piece = Sha256::new();
    let mut cuts = Vec::new();
    // `buf` holds bytes not yet hashed; `base` is the offset of buf[0].
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + MEMBER_START.len());
    let mut base = 0u64;
    let mut piece_start = 0u64;
    let mut block = vec![0u8; BLOCK];
    loop {
        let n = read_full(&mut file, &mut block)?;
        let end = n == 0;
        buf.extend_from_slice(&block[..n]);
        // A member start may straddle two blocks: the last bytes wait for
        // the next one, unless this is the end.
        let limit = if end {
            buf.len()
        } else {
            buf.len().saturating_sub(MEMBER_START.len() - 1)
        };
        let mut fed = 0;
        for at in finder.find_iter(&buf[..buf.len()]) {
            if at >= limit {
                break;
            }
            let offset = base + at as u64;
            if offset == piece_start {
                continue;
            }
            piece.update(&buf[fed..at]);
            if let Some(whole) = &mut whole {
                whole.update(&buf[fed..at]);
            }
            cuts.push(Cut {
                offset: piece_start,
                len: offset - piece_start,
                hash: piece.finalize_reset().into(),
            });
            piece_start = offset;
            fed = at;
        }
        piece.update(&buf[fed..limit]);
        if let Some(whole) = &mut whole {
            whole.update(&buf[fed..limit]);
        }
        buf.drain(..limit);
        base += limit as u64;
        if end {
            break;
        }
    }
    if base > piece_start {
        cuts.push(Cut {
            offset: piece_start,
            len: base - piece_start,
            hash: piece.finalize().into(),
        });
    }
    Ok((cuts, whole.map(|w| hex(&w.finalize())).unwrap_or_default()))
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(body: &[u8]) -> Vec<u8> {
        let mut out = MEMBER_START.to_vec();
        out.extend_from_slice(&[0, 3]);
        out.extend_from_slice(body);
        out
    }

    /// Rebuilds tonight's file from the pieces, as a server-side copy would.
    fn rebuild(delta: &Delta, old: &[u8], new: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in &delta.pieces {
            match *piece {
                Piece::Copy { from, len } => {
                    out.extend_from_slice(&old[from as usize..(from + len) as usize])
                }
                Piece::Send { at, len } => {
                    out.extend_from_slice(&new[at as usize..(at + len) as usize])
                }
            }
        }
        out
    }

    #[test]
    fn unchanged_members_are_copied_and_the_rebuild_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let a = member(&vec![1u8; 3 << 20]);
        let b = member(&vec![2u8; 5 << 20]);
        let c = member(b"a new upload");
        let d = member(&vec![4u8; BLOCK + 3]);
        let old: Vec<u8> = [a.clone(), b.clone(), d.clone()].concat();
        let new: Vec<u8> = [a.clone(), c.clone(), b.clone(), d.clone()].concat();
        std::fs::write(dir.path().join("old"), &old).unwrap();
        std::fs::write(dir.path().join("new"), &new).unwrap();
        let delta = plan(&dir.path().join("old"), &dir.path().join("new")).unwrap();
        assert_eq!(delta.sent, c.len() as u64);
        assert_eq!(delta.copied, (new.len() - c.len()) as u64);
        assert_eq!(rebuild(&delta, &old, &new), new);
        assert_eq!(delta.basis_sha256, hex(&Sha256::digest(&old)));
        // a, then the new member, then b and d in one run.
        assert_eq!(delta.pieces.len(), 3, "{:?}", delta.pieces);
    }

    #[test]
    fn a_member_start_across_two_blocks_is_still_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        // The second member starts 3 bytes before the first block ends.
        let first = member(&vec![7u8; BLOCK - 3 - 10]);
        let second = member(&vec![8u8; 1000]);
        let old: Vec<u8> = [first.clone(), second.clone()].concat();
        let new: Vec<u8> = [member(b"changed"), second.clone()].concat();
        std::fs::write(dir.path().join("old"), &old).unwrap();
        std::fs::write(dir.path().join("new"), &new).unwrap();
        let delta = plan(&dir.path().join("old"), &dir.path().join("new")).unwrap();
        assert_eq!(delta.copied, second.len() as u64, "{:?}", delta.pieces);
        assert_eq!(rebuild(&delta, &old, &new), new);
    }

    #[test]
    fn the_pattern_inside_data_only_cuts_finer_and_never_breaks_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let mut tricky = vec![9u8; 1000];
        tricky.extend_from_slice(MEMBER_START);
        tricky.extend_from_slice(&[5u8; 1000]);
        let old: Vec<u8> = [member(&tricky), member(b"x")].concat();
        let mut changed = tricky.clone();
        changed[1500] = 6;
        let new: Vec<u8> = [member(&changed), member(b"x")].concat();
        std::fs::write(dir.path().join("old"), &old).unwrap();
        std::fs::write(dir.path().join("new"), &new).unwrap();
        let delta = plan(&dir.path().join("old"), &dir.path().join("new")).unwrap();
        assert_eq!(rebuild(&delta, &old, &new), new);
        assert!(delta.copied > 1000, "{:?}", delta.pieces);
    }
}
