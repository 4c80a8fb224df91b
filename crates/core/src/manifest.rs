//! `MANIFEST.sha256`, the last member of every archive: one line per file in
//! `sha256sum` format, so `sha256sum -c MANIFEST.sha256` passes in an
//! extracted copy, and `verify` and `restore` can check every member.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// The manifest's path inside the archive.
pub const MANIFEST_PATH: &str = "MANIFEST.sha256";

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// One line of `sha256sum` output, with its escaping of `\` and newlines.
pub fn sha256sum_line(hash: &str, path: &str) -> String {
    if path.contains(['\\', '\n', '\r']) {
        let escaped = path
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hash}  {escaped}\n")
    } else {
        format!("{hash}  {path}\n")
    }
}

/// Parses `sha256sum` output into path -> hash. `None` for a malformed line.
pub fn parse(text: &str) -> Option<BTreeMap<String, String>> {
    let mut entries = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hash, path) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = if escaped {
            unescape(path)?
        } else {
            path.to_string()
        };
        entries.insert(path, hash.to_ascii_lowercase());
    }
    Some(entries)
}

fn unescape(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, the hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that takes the CRC-32 of what passes through it: a cheap
/// second fingerprint of an archive, for reading it back
/// ([`crate::inflate::crc_file`]).
pub struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The inner writer and the CRC-32 of everything written.
    pub fn finish(self) -> (W, u32) {
        (self.inner, self.crc.finalize())
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// The reader underneath.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The hex sha256 and the byte count of everything read.
    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// The sha256 of everything `reader` yields.
pub fn sha256_of(reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingReader::new(reader);
    let mut buf = vec![0; 1 << 20];
    while hashing.read(&mut buf)? != 0 {
        crate::interrupt::check()?;
    }
    Ok(hashing.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_including_escapes() {
        let hash = "ab".repeat(32);
        let text = [
            sha256sum_line(&hash, "data/sound_machine.db"),
            sha256sum_line(&hash, "Sounds/uploads/odd\nname\\x.wav"),
        ]
        .concat();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parsed.contains_key("Sounds/uploads/odd\nname\\x.wav"));
        assert_eq!(parse("nonsense"), None);
    }

    #[test]
    fn hashes_match_known_value() {
        let (hash, n) = sha256_of(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
