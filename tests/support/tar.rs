//! Tar streams written byte by byte, so that every header field can say
//! what a test wants (traversal names, links, devices, lying sizes).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::tool;

/// What a header's size field holds: the true size in octal, or any 12
/// bytes at all (base-256, garbage, too short).
#[derive(Debug, Clone)]
pub enum Size {
    Octal(u64),
    Raw([u8; 12]),
}

/// Every field of one ustar header, as a test wants it.
pub struct Header<'a> {
    pub name: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub size: Size,
    pub link: &'a str,
    pub good_checksum: bool,
}

/// `value` in octal, NUL-terminated, its low digits kept if it is too
/// long for the field.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

/// One 512-byte ustar header; names and link targets longer than their
/// fields are cut at 100 bytes.
pub fn header(f: &Header) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = f.name.as_bytes();
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(f.mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    match &f.size {
        Size::Octal(size) => octal(&mut h[124..136], *size),
        Size::Raw(bytes) => h[124..136].copy_from_slice(bytes),
    }
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = f.kind;
    let link = f.link.as_bytes();
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if f.kind == b'3' || f.kind == b'4' {
        octal(&mut h[329..337], 1);
        octal(&mut h[337..345], 3);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let sum = if f.good_checksum { sum } else { sum ^ 0x15 };
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// Writes tar headers byte by byte, to make what no well-behaved tar
/// library would: absolute paths, `..`, links out, device nodes.
pub struct HostileTar {
    tar: Vec<u8>,
    manifest: String,
}

impl HostileTar {
    pub fn new() -> Self {
        Self {
            tar: Vec::new(),
            manifest: String::new(),
        }
    }

    fn push_header(&mut self, path: &str, kind: u8, size: usize, link: &str, mode: u32) {
        assert!(path.len() < 100 && link.len() < 100);
        self.tar.extend_from_slice(&header(&Header {
            name: path,
            kind,
            mode,
            size: Size::Octal(size as u64),
            link,
            good_checksum: true,
        }));
    }

    pub fn file(&mut self, path: &str, data: &[u8], dir: &Path) -> &mut Self {
        self.push_header(path, b'0', data.len(), "", 0o644);
        self.tar.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.tar.extend(std::iter::repeat_n(0u8, pad));
        let scratch = dir.join("member");
        fs::write(&scratch, data).unwrap();
        let sum = tool("sha256sum", &[scratch.to_str().unwrap()], dir);
        let hash = sum.split_whitespace().next().unwrap();
        self.manifest.push_str(&format!("{hash}  {path}\n"));
        self
    }

    pub fn entry(&mut self, path: &str, kind: u8, link: &str) -> &mut Self {
        self.push_header(path, kind, 0, link, 0o755);
        self
    }

    /// Ends the archive with a manifest of its regular files, gzips it
    /// and writes a matching sidecar: it passes every checksum.
    pub fn finish(&mut self, archive: &Path) {
        let dir = archive.parent().unwrap();
        let manifest = std::mem::take(&mut self.manifest);
        self.file("MANIFEST.sha256", manifest.as_bytes(), dir);
        self.tar.extend(std::iter::repeat_n(0u8, 1024));
        let mut gzip = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = gzip.stdin.take().unwrap();
        let tar = std::mem::take(&mut self.tar);
        let writer = std::thread::spawn(move || stdin.write_all(&tar).unwrap());
        let out = gzip.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        fs::write(archive, out.stdout).unwrap();
        let name = archive.file_name().unwrap().to_str().unwrap();
        let sidecar = tool("sha256sum", &[name], dir);
        fs::write(dir.join(format!("{name}.sha256")), sidecar).unwrap();
    }
}
