//! Encryption of what leaves the machine, in the age format (rage's `age`
//! library), so the standard `age` command can always open a backup, with
//! or without mss-backup.
//!
//! A backup is encrypted once per run, streaming from the finished and
//! verified `NAME.tar.gz` into `NAME.tar.gz.age` (64 KiB authenticated
//! chunks, flat memory); every offsite target gets that same file and its
//! own sidecar, the sha256 of the encrypted bytes. Decryption streams the
//! other way into a private file; age authenticates every chunk and the end
//! of the stream, so a flipped byte or a truncated file is an error, never
//! a short or altered archive.
//!
//! No key material is ever put into a message: recipients are counted and
//! numbered, never echoed (a private key pasted where a public one belongs
//! must not reach a log).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, SyncSender};
use std::thread::{self, JoinHandle};

use age::secrecy::ExposeSecret;

use crate::durable::{self, Writeback};
use crate::manifest::{self, HashingWriter};
use crate::name::ArtifactName;
use crate::target::Artifact;

/// Where the public keys to encrypt to come from.
#[derive(Clone, PartialEq, Eq)]
pub enum RecipientSource {
    /// Comma-separated `age1…` or `ssh-ed25519 …` keys
    /// (`MSS_BACKUP_ENCRYPT_RECIPIENTS`).
    List(String),
    /// A recipients file in age's format: one key per line, `#` comments
    /// (`MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE`).
    File(PathBuf),
}

impl fmt::Debug for RecipientSource {
    // Public keys are not secret, but they are key material all the same:
    // only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(list) => write!(f, "List({} entries)", split_list(list).count()),
            Self::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

/// Why encrypting or decrypting failed: one line naming the file or the
/// setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "{what}: entry {index} is not an age public key (age1...) or an ssh-ed25519/ssh-rsa public key{detail} (fix or remove it; `mss-backup keygen` prints a valid age1 key)"
    )]
    BadRecipient {
        what: String,
        index: usize,
        detail: String,
    },
    #[error("{what} names no recipient (give at least one age1... or ssh-ed25519 public key)")]
    NoRecipients { what: String },
    #[error(
        "cannot read the recipients file {path}: {source} (check MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE)"
    )]
    RecipientsFile { path: PathBuf, source: io::Error },
    #[error(
        "cannot use the identity file {path}: {reason} (set MSS_BACKUP_IDENTITY_FILE to an age identity file, as written by `mss-backup keygen`, or an unencrypted ssh private key)"
    )]
    Identity { path: PathBuf, reason: String },
    #[error(
        "{archive} is encrypted, but not to the identity in {identity} (set MSS_BACKUP_IDENTITY_FILE to the identity whose public key was in MSS_BACKUP_ENCRYPT_RECIPIENTS); nothing was changed"
    )]
    WrongIdentity { archive: PathBuf, identity: PathBuf },
    #[error(
        "{archive} does not decrypt: {reason} (the file is damaged or truncated; use another copy of this backup); nothing was changed"
    )]
    Damaged { archive: PathBuf, reason: String },
    #[error("the encryption thread stopped without a result")]
    Thread,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SealError {
    let path = path.to_path_buf();
    move |source| SealError::Io {
        action,
        path,
        source,
    }
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The public keys a backup is encrypted to.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send>>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({})", self.keys.len())
    }
}

impl Recipients {
    /// Parses the keys of `source`; `what` names the setting in errors.
    pub fn load(source: &RecipientSource) -> Result<Self, SealError> {
        match source {
            RecipientSource::List(list) => {
                Self::parse(split_list(list), "MSS_BACKUP_ENCRYPT_RECIPIENTS")
            }
            RecipientSource::File(path) => {
                let text =
                    fs::read_to_string(path).map_err(|source| SealError::RecipientsFile {
                        path: path.clone(),
                        source,
                    })?;
                let lines = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'));
                Self::parse(lines, &format!("the recipients file {}", path.display()))
            }
        }
    }

    fn parse<'a>(entries: impl Iterator<Item = &'a str>, what: &str) -> Result<Self, SealError> {
        let mut keys = Vec::new();
        for (i, entry) in entries.enumerate() {
            keys.push(
                parse_recipient(entry).map_err(|detail| SealError::BadRecipient {
                    what: what.to_string(),
                    index: i + 1,
                    detail,
                })?,
            );
        }
        if keys.is_empty() {
            return Err(SealError::NoRecipients {
                what: what.to_string(),
            });
        }
        Ok(Self { keys })
    }

    /// How many keys can open what is encrypted to these.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a loaded set (loading refuses an empty one).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One recipient, or why not (never echoing the entry).
fn parse_recipient(entry: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    if entry.starts_with("AGE-SECRET-KEY-") || entry.starts_with("-----BEGIN") {
        return Err(": it is a private key, which must not be here".to_string());
    }
    if let Ok(key) = age::x25519::Recipient::from_str(entry) {
        return Ok(Box::new(key));
    }
    match age::ssh::Recipient::from_str(entry) {
        Ok(key) => Ok(Box::new(key)),
        Err(age::ssh::ParseRecipientKeyError::Unsupported(kind)) => {
            Err(format!(": ssh key type {kind} is not supported by age"))
        }
        Err(age::ssh::ParseRecipientKeyError::RsaModulusTooSmall) => {
            Err(": the ssh-rsa key is under 2048 bits".to_string())
        }
        Err(_) => Err(String::new()),
    }
}

/// The private keys that open encrypted backups.
pub struct Identities {
    path: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identities({}, {})",
            self.path.display(),
            self.keys.len()
        )
    }
}

impl Identities {
    /// Reads an age identity file (`AGE-SECRET-KEY-1…` lines) or an
    /// unencrypted OpenSSH private key (ed25519 or rsa).
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let bad = |reason: String| SealError::Identity {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let starts_like_ssh = reader
            .fill_buf()
            .map_err(|e| bad(e.to_string()))?
            .starts_with(b"-----BEGIN");
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if starts_like_ssh {
            match age::ssh::Identity::from_buffer(reader, None) {
                Ok(key @ age::ssh::Identity::Unencrypted(_)) => vec![Box::new(key)],
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(bad(
                        "the ssh key is protected by a passphrase, which a nightly run cannot type"
                            .to_string(),
                    ));
                }
                Ok(age::ssh::Identity::Unsupported(_)) => {
                    return Err(bad("age does not support this kind of ssh key".to_string()));
                }
                Err(e) => return Err(bad(e.to_string())),
            }
        } else {
            // age's own messages name a line number, never the line.
            age::IdentityFile::from_buffer(reader)
                .map_err(|e| bad(e.to_string()))?
                .into_identities()
                .map_err(|e| bad(e.to_string()))?
        };
        if keys.is_empty() {
            return Err(bad("it holds no identity".to_string()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The file the identities were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `path` names an age-encrypted archive (`….tar.gz.age`).
pub fn is_encrypted(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(crate::name::AGE_SUFFIX))
}

/// Streams `src` into a new private file `dest` encrypted to `recipients`
/// (fsynced when `durability` says so); returns the sha256 and size of the
/// encrypted bytes. `dest` is removed on error.
pub fn encrypt_file(
    src: &Path,
    dest: &Path,
    recipients: &Recipients,
    durability: Durability,
) -> Result<(String, u64), SealError> {
    let result = (|| {
        let mut input = File::open(src).map_err(io_err("cannot read", src))?;
        let output = durable::create_new_private(dest).map_err(io_err("cannot create", dest))?;
        let encryptor =
            age::Encryptor::with_recipients(recipients.keys.iter().map(|k| k.as_ref() as _))
                .map_err(|e| SealError::BadRecipient {
                    what: "the recipients".to_string(),
                    index: 0,
                    detail: format!(": {e}"),
                })?;
        let output = match durability {
            Durability::Synced => Writeback::new(output),
            Durability::Transient => Writeback::deferred(output),
        };
        let mut stream = encryptor
            .wrap_output(Offload::new(output))
            .map_err(io_err("cannot write", dest))?;
        copy_large(&mut input, &mut stream).map_err(|e| match e {
            Copy::Read(e) => io_err("cannot read", src)(e),
            Copy::Write(e) => io_err("cannot write", dest)(e),
        })?;
        let (file, sha256, size) = stream
            .finish()
            .and_then(Offload::finish)
            .map_err(io_err("cannot write", dest))?;
        if durability == Durability::Synced {
            file.sync_all()
                .map(drop)
                .map_err(io_err("cannot sync", dest))?;
        }
        Ok((sha256, size))
    })();
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

/// A writer that hands 1 MiB blocks to a thread which hashes and writes
/// them, so that sha256 and the kernel's copy run beside the encryption
/// instead of after it (the run is otherwise single-threaded here, and the
/// second core idle). At most [`OFFLOAD_DEPTH`] blocks wait: flat memory.
struct Offload {
    buf: Vec<u8>,
    blocks: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<(Writeback, String, u64)>>>,
}

const OFFLOAD_BLOCK: usize = 1 << 20;
const OFFLOAD_DEPTH: usize = 4;

impl Offload {
    fn new(file: Writeback) -> Self {
        let (blocks, received) = mpsc::sync_channel::<Vec<u8>>(OFFLOAD_DEPTH);
        let worker = thread::spawn(move || {
            let mut out = HashingWriter::new(file);
            for block in received {
                out.write_all(&block)?;
            }
            Ok(out.finish())
        });
        Self {
            buf: Vec::with_capacity(OFFLOAD_BLOCK),
            blocks: Some(blocks),
            worker: Some(worker),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(OFFLOAD_BLOCK));
        let sent = self.blocks.as_ref().map(|tx| tx.send(block).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The worker stopped: its error is the one to report.
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the writer thread stopped before the end")))
    }

    fn join(&mut self) -> io::Result<(Writeback, String, u64)> {
        self.blocks = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer thread already finished")),
        }
    }

    /// Writes what is left and returns the file, the sha256 and the size.
    fn finish(mut self) -> io::Result<(Writeback, String, u64)> {
        self.send()?;
        self.join()
    }
}

impl Write for Offload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OFFLOAD_BLOCK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether an encrypted file must reach the disk before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// It will be a backup under its name (`MSS_BACKUP_ENCRYPT_LOCAL`).
    Synced,
    /// Only a source for the targets' copies, which read it back
    /// themselves and which a crash discards anyway: the page cache is
    /// enough, and the fsync of a whole archive (about a second and a half
    /// for 357 MB here) is saved.
    Transient,
}

/// Streams the age file `src` into a new private file `dest`, decrypted
/// with `identities`; returns the sha256 and size of the plaintext. The
/// identity is tried before `dest` is created; `dest` is removed on error.
pub fn decrypt_file(
    src: &Path,
    dest: &Path,
    identities: &Identities,
) -> Result<(String, u64), SealError> {
    let damaged = |reason: String| SealError::Damaged {
        archive: src.to_path_buf(),
        reason,
    };
    let input = BufReader::new(File::open(src).map_err(io_err("cannot read", src))?);
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| match e {
        age::DecryptError::Io(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
            io_err("cannot read", src)(e)
        }
        e => damaged(format!("not a readable age file ({e})")),
    })?;
    let mut reader = decryptor
        .decrypt(identities.keys.iter().map(|k| k.as_ref() as _))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SealError::WrongIdentity {
                archive: src.to_path_buf(),
                identity: identities.path.clone(),
            },
            e => damaged(e.to_string()),
        })?;
    let result = (|| {
        let output = durable::create_new_private(dest).map_err(io_err("cannot create", dest))?;
        let mut hashing = Offload::new(Writeback::new(output));
        copy_large(&mut reader, &mut hashing).map_err(|e| match e {
            // age reports a failed tag or a missing last chunk as InvalidData
            // or UnexpectedEof: the file, not the disk.
            Copy::Read(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                damaged(e.to_string())
            }
            Copy::Read(e) => io_err("cannot read", src)(e),
            Copy::Write(e) => io_err("cannot write", dest)(e),
        })?;
        let (file, sha256, size) = hashing.finish().map_err(io_err("cannot write", dest))?;
        file.sync_all()
            .map(drop)
            .map_err(io_err("cannot sync", dest))?;
        Ok((sha256, size))
    })();
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy` with a 1 MiB buffer, telling read errors from write errors.
fn copy_large(input: &mut impl Read, output: &mut impl Write) -> Result<u64, Copy> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        crate::interrupt::check().map_err(Copy::Read)?;
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        output.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
    output.flush().map_err(Copy::Write)?;
    Ok(total)
}

/// Encrypts a finished artifact into hidden files in `dir`
/// (`.NAME.tar.gz.age.sealed` and its sidecar), ready for targets to copy
/// under the `NAME.tar.gz.age` name. A crash leaves only hidden files of
/// ours, which the next run removes. [`publish`] gives them their names.
pub fn seal(
    artifact: &Artifact,
    recipients: &Recipients,
    dir: &Path,
    durability: Durability,
) -> Result<Artifact, SealError> {
    let name = artifact.name.encrypted();
    let archive = dir.join(format!(".{}.sealed", name.file_name()));
    let sidecar = dir.join(format!(".{}.sealed", name.sidecar_name()));
    let _ = fs::remove_file(&archive);
    let (sha256, size) = encrypt_file(&artifact.archive, &archive, recipients, durability)?;
    let line = manifest::sha256sum_line(&sha256, &name.file_name());
    if let Err(e) = durable::write_atomic(&sidecar, line.as_bytes()) {
        let _ = fs::remove_file(&archive);
        return Err(io_err("cannot write", &sidecar)(e));
    }
    Ok(Artifact {
        name,
        archive,
        sidecar,
        sha256,
        size,
    })
}

/// Renames a [`seal`]ed artifact in `dir` to its real names: the sidecar
/// first and the archive last, so an archive under its name always has its
/// sidecar (the order every target keeps).
pub fn publish(sealed: &Artifact, dir: &Path) -> Result<Artifact, SealError> {
    let archive = dir.join(sealed.name.file_name());
    let sidecar = dir.join(sealed.name.sidecar_name());
    fs::rename(&sealed.sidecar, &sidecar).map_err(io_err("cannot rename", &sealed.sidecar))?;
    fs::rename(&sealed.archive, &archive).map_err(io_err("cannot rename", &sealed.archive))?;
    durable::fsync_dir(dir).map_err(io_err("cannot sync", dir))?;
    Ok(Artifact {
        archive,
        sidecar,
        ..sealed.clone()
    })
}

/// Removes a [`seal`]ed artifact's hidden files (after the targets took it).
pub fn discard(sealed: &Artifact) {
    let _ = fs::remove_file(&sealed.archive);
    let _ = fs::remove_file(&sealed.sidecar);
}

/// Decrypts the encrypted archive `archive` (checked against its sidecar
/// first) into `dir` as `NAME.tar.gz` with a sidecar of its own, so that
/// verify and restore read it like any archive. The plaintext sidecar
/// holds the hash of what age authenticated, chunk by chunk and to its end.
pub fn open(archive: &Path, identities: &Identities, dir: &Path) -> Result<PathBuf, OpenError> {
    let (archive, _) = crate::verify::check_sidecar(archive).map_err(OpenError::Verify)?;
    let archive = archive.as_path();
    let plain_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(ArtifactName::parse)
        .map(|n| n.plain().file_name())
        .unwrap_or_else(|| "archive.tar.gz".to_string());
    let dest = dir.join(&plain_name);
    let (sha256, _) = decrypt_file(archive, &dest, identities)?;
    let sidecar = crate::verify::sidecar_path(&dest);
    let line = manifest::sha256sum_line(&sha256, &plain_name);
    durable::write_atomic(&sidecar, line.as_bytes())
        .map_err(|e| OpenError::Seal(io_err("cannot write", &sidecar)(e)))?;
    Ok(dest)
}

/// Why [`open`] failed: the encrypted file's own checksum, or decryption.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Verify(crate::verify::VerifyError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A new age identity: the text of an identity file (with the public key in
/// a comment, as age-keygen writes it) and the public recipient.
pub fn generate_identity(created: &str) -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let secret = identity.to_string();
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        secret.expose_secret()
    );
    (text, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_file(dir: &Path) -> (PathBuf, String) {
        let (text, public) = generate_identity("test");
        let path = dir.join("identity.txt");
        fs::write(&path, text).unwrap();
        (path, public)
    }

    #[test]
    fn round_trips_and_refuses_the_wrong_identity_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (id_path, public) = identity_file(dir.path());
        let plain = dir.path().join("plain");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&plain, &data).unwrap();
        let recipients = Recipients::load(&RecipientSource::List(format!(" {public} ,"))).unwrap();
        assert_eq!(recipients.len(), 1);
        let sealed = dir.path().join("sealed.age");
        let (sha, size) = encrypt_file(&plain, &sealed, &recipients, Durability::Synced).unwrap();
        let bytes = fs::read(&sealed).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(sha, manifest::sha256_of(&bytes[..]).unwrap().0);
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"));

        let ids = Identities::from_file(&id_path).unwrap();
        let out = dir.path().join("out");
        decrypt_file(&sealed, &out, &ids).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);

        let other = tempfile::tempdir().unwrap();
        let (other_id, _) = identity_file(other.path());
        let wrong = Identities::from_file(&other_id).unwrap();
        let out2 = dir.path().join("out2");
        let err = decrypt_file(&sealed, &out2, &wrong).unwrap_err();
        assert!(matches!(err, SealError::WrongIdentity { .. }), "{err}");
        assert!(!out2.exists());

        let mut flipped = bytes.clone();
        let at = flipped.len() - 1000;
        flipped[at] ^= 1;
        fs::write(&sealed, &flipped).unwrap();
        let err = decrypt_file(&sealed, &out2, &ids).unwrap_err();
        assert!(matches!(err, SealError::Damaged { .. }), "{err}");
        assert!(!out2.exists());

        fs::write(&sealed, &bytes[..bytes.len() - 70_000]).unwrap();
        let err = decrypt_file(&sealed, &out2, &ids).unwrap_err();
        assert!(matches!(err, SealError::Damaged { .. }), "{err}");
        assert!(!out2.exists());
    }

    #[test]
    fn bad_recipients_are_named_by_position_never_echoed() {
        let (text, public) = generate_identity("test");
        let secret = text.lines().last().unwrap().to_string();
        for (list, index) in [
            (format!("{public},age1nope"), 2),
            (secret.clone(), 1),
            ("ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_string(), 1),
        ] {
            let err = Recipients::load(&RecipientSource::List(list)).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&format!("entry {index} ")), "{message}");
            assert!(!message.contains(&secret) && !message.contains("age1nope"));
        }
        let err = Recipients::load(&RecipientSource::List(" , ".to_string())).unwrap_err();
        assert!(matches!(err, SealError::NoRecipients { .. }));
        let err = Recipients::load(&RecipientSource::File(PathBuf::from("/nonexistent/r.txt")))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/r.txt"), "{err}");
    }
}
