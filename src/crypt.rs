//! age encryption as the operator sees it: which settings switch it on,
//! `mss-backup keygen`, and opening an encrypted archive for verify and
//! restore. The format work itself is in `mss_backup_core::seal`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use mss_backup_core::backup::{Encryption, OPENED_PREFIX};
use mss_backup_core::durable;
use mss_backup_core::seal::{self, Identities, RecipientSource, Recipients};

use crate::config::{ConfigError, Settings};

/// Where `mss-backup keygen` writes when no path is given (under `$HOME`).
pub const DEFAULT_IDENTITY: &str = ".config/mss-backup/age-identity.txt";

/// The encryption the settings ask for: `MSS_BACKUP_ENCRYPT_RECIPIENTS`
/// or `MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE` (not both), and
/// `MSS_BACKUP_ENCRYPT_LOCAL`. The keys themselves are read by the run, so
/// a bad key fails the offsite copies, never the local backup.
pub fn encryption(settings: &Settings) -> Result<Option<Encryption>, ConfigError> {
    let list = settings.string("encrypt_recipients")?;
    let file = settings.path("encrypt_recipients_file")?;
    let local = settings.flag("encrypt_local")?;
    let recipients = match (list, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "MSS_BACKUP_ENCRYPT_RECIPIENTS and MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE are both set (use one of them)"
                    .to_string(),
            ));
        }
        (Some(list), None) => RecipientSource::List(list),
        (None, Some(file)) => RecipientSource::File(file),
        (None, None) => {
            if local == Some(true) {
                return Err(ConfigError(
                    "MSS_BACKUP_ENCRYPT_LOCAL is set, but no recipient is: set MSS_BACKUP_ENCRYPT_RECIPIENTS (or _FILE) to the public key from `mss-backup keygen`"
                        .to_string(),
                ));
            }
            return Ok(None);
        }
    };
    Ok(Some(Encryption {
        recipients,
        local: local.unwrap_or(false),
    }))
}

/// One line for `config` and `status`: whether copies are encrypted and to
/// how many recipients (never which).
pub fn describe(settings: &Settings) -> Result<String, ConfigError> {
    let Some(encryption) = encryption(settings)? else {
        return Ok(
            "offsite copies are not encrypted (set MSS_BACKUP_ENCRYPT_RECIPIENTS to encrypt them with age)"
                .to_string(),
        );
    };
    let what = if encryption.local {
        "offsite and local copies"
    } else {
        "offsite copies"
    };
    Ok(match Recipients::load(&encryption.recipients) {
        Ok(r) => format!(
            "{what} are encrypted with age to {} recipient{}",
            r.len(),
            if r.len() == 1 { "" } else { "s" }
        ),
        Err(e) => format!("{what} are to be encrypted, but the recipients are unusable: {e}"),
    })
}

/// `mss-backup keygen [PATH]`: a new identity file (0600, never over an
/// existing file); the public key goes to stdout, the rest to stderr.
pub fn keygen(settings: &Settings, path: Option<&Path>) -> Result<ExitCode> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => settings.home.join(DEFAULT_IDENTITY),
    };
    if fs::symlink_metadata(&path).is_ok() {
        return Err(ConfigError(format!(
            "{} already exists: keygen never overwrites an identity, since backups may need it (give another PATH)",
            path.display()
        ))
        .into());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        durable::create_private_dir(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let (text, public) = seal::generate_identity(&created);
    let mut file = durable::create_new_private(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "Wrote a new age identity to {} (mode 0600). Its public key, for MSS_BACKUP_ENCRYPT_RECIPIENTS:",
        path.display()
    );
    println!("{public}");
    eprintln!(
        "Keep a copy of {} somewhere other than this VM (a password manager, another machine, paper): \
         if the VM is lost with the only copy, the encrypted backups cannot be opened by anyone. \
         Restores read it from MSS_BACKUP_IDENTITY_FILE.",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The identities of `MSS_BACKUP_IDENTITY_FILE`, or the error that says
/// `archive` needs it.
pub fn identities(settings: &Settings, archive: &Path) -> Result<Identities> {
    let Some(path) = settings.path("identity_file")? else {
        return Err(ConfigError(format!(
            "{} is encrypted: set MSS_BACKUP_IDENTITY_FILE to the age identity that opens it (the file `mss-backup keygen` wrote); nothing was changed",
            archive.display()
        ))
        .into());
    };
    Ok(Identities::from_file(&path)?)
}

/// A decrypted copy of an encrypted archive, in a private dir of the
/// backup dir (the same disk as the archives, not a small /tmp); the dir
/// goes when this is dropped, and a leftover is removed by the next backup
/// once this process has ended (`verify` holds no lock).
pub struct Opened {
    pub archive: PathBuf,
    dir: PathBuf,
}

impl Drop for Opened {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Checks the encrypted `archive` against its sidecar and decrypts it.
pub fn open(settings: &Settings, archive: &Path, identities: &Identities) -> Result<Opened> {
    let dir = settings
        .backup_dir
        .join(format!("{OPENED_PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    durable::create_private_dir(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    match seal::open(archive, identities, &dir) {
        Ok(path) => {
            tracing::info!(archive = %archive.display(), identity = %identities.path().display(), "decrypted with age");
            Ok(Opened { archive: path, dir })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(e.into())
        }
    }
}
