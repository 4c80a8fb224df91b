//! A USB stick as an mss-backup target: the copy that walks out of the
//! building. A stick is only worth writing to when it is really there: when
//! it is not plugged in, its mount point is an empty folder on the VM's own
//! disk, and writing there silently fills that disk and protects nothing. So
//! every operation first checks that the path is a mount point of its own
//! (`/proc/self/mountinfo`, where a bind mount counts), and, when a label is
//! configured, that the stick carries it, so a different stick is never
//! filled or pruned. The copying itself is the archive directory's
//! ([`DirTarget`]: temp name, fsync, rename, fsync the directory, read back
//! and check the sha256), without the `latest` symlink, which FAT cannot
//! hold. Backups go into `mss-backup/` on the stick, beside whatever else
//! the stick holds.

mod mount;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mss_backup_core::durable;
use mss_backup_core::plugin::{BuildContext, Built, Invalid, TargetPlugin, absolute_path};
use mss_backup_core::setting::{Setting, Shown};
use mss_backup_core::{Artifact, ArtifactName, Target, TargetError};
use mss_backup_target_local::DirTarget;
use serde::{Deserialize, Serialize};

pub use mount::{MOUNTINFO, Mount, mount_at};

/// The marker file at the root of a labelled stick; its first line is the
/// label (`mss-backup usb init PATH LABEL` writes it).
pub const MARKER_FILE: &str = ".mss-backup-target";
/// The directory on the stick that holds the backups. A subdirectory keeps
/// them apart from whatever else is on the stick (and from the marker), so
/// a listing or retention never even sees the stick's other files.
pub const BACKUP_SUBDIR: &str = "mss-backup";
/// The largest file FAT32 can hold: 4 GiB minus one byte.
pub const FAT_MAX_FILE: u64 = (4 << 30) - 1;
/// The longest label accepted.
pub const MAX_LABEL_LEN: usize = 64;
/// Room kept free beyond the artifact itself (sidecar, directory entries).
const SPACE_MARGIN: u64 = 1 << 20;

/// The USB target's settings; `usb_path` switches it on.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "usb_path",
        value: "PATH",
        default: "off",
        help: "the USB stick's mount point, e.g. `/media/backup-stick`: switches the USB target on",
        shown: Shown::Plain,
    },
    Setting {
        key: "usb_label",
        value: "LABEL",
        default: "none",
        help: "the stick must carry this label (written by `mss-backup usb init`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "usb_required",
        value: "true|false",
        default: "false",
        help: "`true`: a stick that is not plugged in fails the run (exit 1); by default the nightly run skips it and says so, and `mss-backup copy usb` copies later",
        shown: Shown::Plain,
    },
    Setting {
        key: "usb_retention",
        value: "N",
        default: "the local retention",
        help: "backups kept on the stick",
        shown: Shown::Plain,
    },
];

/// Where the stick is mounted and which stick it must be. Plain data: no
/// secrets here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The stick's mount point, e.g. `/media/backup-stick`
    /// (`MSS_BACKUP_USB_PATH`). Must be a mount point of its own.
    pub path: PathBuf,
    /// When set, the stick must hold [`MARKER_FILE`] with this label
    /// (`MSS_BACKUP_USB_LABEL`).
    pub label: Option<String>,
    /// A stick that is not plugged in fails the run (`MSS_BACKUP_USB_REQUIRED`);
    /// by default it is skipped: the copy is made on demand.
    #[serde(default)]
    pub required: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand like every target's Config, so a secret added
        // later is never printed by accident.
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("label", &self.label)
            .field("required", &self.required)
            .finish()
    }
}

/// Why a stick could not be labelled, or a label is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    #[error(
        "{0} is not a mount point (mount the stick first; `findmnt {0}` shows what is mounted there)"
    )]
    NotMounted(PathBuf),
    #[error("label {label:?} is not valid: {reason}")]
    BadLabel { label: String, reason: String },
    #[error(
        "{path} is already labelled {found:?} (to relabel it, delete {path}/{MARKER_FILE} first)"
    )]
    AlreadyLabelled { path: PathBuf, found: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A label is one short line of printable text.
pub fn validate_label(label: &str) -> Result<(), UsbError> {
    let bad = |reason: &str| {
        Err(UsbError::BadLabel {
            label: label.to_string(),
            reason: reason.to_string(),
        })
    };
    if label.is_empty() {
        return bad("it is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return bad(&format!("it is longer than {MAX_LABEL_LEN} bytes"));
    }
    if label.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if label.trim() != label {
        return bad("it starts or ends with a space");
    }
    Ok(())
}

/// The label in `mount_point`'s marker file, or `None` when there is none.
pub fn read_label(mount_point: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(mount_point.join(MARKER_FILE)) {
        Ok(text) => Ok(Some(
            text.lines().next().unwrap_or_default().trim().to_string(),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labelled {
    /// The marker was written.
    New,
    /// The stick already carried this label.
    Already,
}

/// Labels the stick mounted at `path` (`mss-backup usb init PATH LABEL`):
/// writes [`MARKER_FILE`] atomically. Refuses a path that is not a mount
/// point, and a stick that already carries a different label.
pub fn init(path: &Path, label: &str) -> Result<Labelled, UsbError> {
    validate_label(label)?;
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| UsbError::Io {
            action,
            path,
            source,
        }
    };
    match mount_at(path) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(UsbError::NotMounted(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(UsbError::NotMounted(path.to_path_buf()));
        }
        Err(e) => return Err(io_err("check the mounts for", path)(e)),
    }
    match read_label(path).map_err(io_err("read the label of", path))? {
        Some(found) if found == label => return Ok(Labelled::Already),
        Some(found) => {
            return Err(UsbError::AlreadyLabelled {
                path: path.to_path_buf(),
                found,
            });
        }
        None => {}
    }
    let marker = path.join(MARKER_FILE);
    durable::write_atomic(&marker, format!("{label}\n").as_bytes())
        .map_err(io_err("write", &marker))?;
    Ok(Labelled::New)
}

/// The USB kind: `MSS_BACKUP_USB_*`, `--target usb`, `copy usb`.
pub struct Usb;

impl TargetPlugin for Usb {
    const KIND: &'static str = "usb";
    const SWITCH: &'static str = "usb_path";
    const HINT: &'static str = "the stick's mount point, like /media/backup-stick";
    const SETTINGS: &'static [Setting] = SETTINGS;
    type Config = Config;

    fn build(mut config: Config, context: &BuildContext) -> Result<Built, Invalid> {
        let path = config.path.to_string_lossy().into_owned();
        config.path = absolute_path(&path, context.home).map_err(|e| Invalid::of("usb_path", e))?;
        let mut description = Vec::new();
        if let Some(label) = &config.label {
            validate_label(label).map_err(|e| Invalid::of("usb_label", e.to_string()))?;
            description.push(format!("label {label:?}"));
        }
        if config.required {
            description.push("required".to_string());
        }
        Ok(Built {
            at: None,
            target: Box::new(UsbTarget::new(config)),
            description: description.join(", "),
        })
    }
}

/// Backups on a mounted USB stick, in `<mount point>/mss-backup/`.
#[derive(Debug, Clone)]
pub struct UsbTarget {
    config: Config,
    name: String,
    dir: DirTarget,
}

impl UsbTarget {
    /// A target for the stick `config` describes. Touches nothing: every
    /// check happens when the target is used.
    pub fn new(config: Config) -> Self {
        let name = format!("usb:{}", config.path.display());
        let dir = DirTarget::new(name.clone(), config.path.join(BACKUP_SUBDIR), false);
        Self { config, name, dir }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The directory on the stick that holds the backups.
    pub fn dir(&self) -> &Path {
        self.dir.dir()
    }

    fn unavailable(&self, reason: String) -> TargetError {
        TargetError::Unavailable {
            target: self.name.clone(),
            reason,
        }
    }

    /// The stick's mount, or the operator's one line when it is not there.
    fn mounted(&self) -> Result<Mount, TargetError> {
        let path = &self.config.path;
        // Not plugged in is the usual state of an on-demand stick: the
        // run skips it (Absent) unless the operator said it must be there.
        let not_mounted = || {
            let reason = format!(
                "USB target {} is not mounted (plug in the stick; then `mss-backup copy usb` copies the newest backup)",
                path.display()
            );
            if self.config.required {
                self.unavailable(format!(
                    "{reason}; MSS_BACKUP_USB_REQUIRED is set, so this fails the run"
                ))
            } else {
                TargetError::Absent {
                    target: self.name.clone(),
                    reason,
                }
            }
        };
        match mount_at(path) {
            Ok(Some(mount)) => Ok(mount),
            Ok(None) => Err(not_mounted()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_mounted()),
            Err(e) => Err(TargetError::Failed {
                target: self.name.clone(),
                action: format!("checking whether {} is mounted", path.display()),
                detail: e.to_string(),
            }),
        }
    }

    /// Mounted, and the right stick when a label is configured.
    fn check(&self) -> Result<Mount, TargetError> {
        let mount = self.mounted()?;
        let Some(wanted) = &self.config.label else {
            return Ok(mount);
        };
        let path = &self.config.path;
        let found = read_label(path).map_err(|e| TargetError::Failed {
            target: self.name.clone(),
            action: format!("reading {}", path.join(MARKER_FILE).display()),
            detail: e.to_string(),
        })?;
        match found {
            Some(found) if &found == wanted => Ok(mount),
            Some(found) => Err(self.unavailable(format!(
                "USB target {} is the stick labelled {found:?}, not {wanted:?} (plug in the stick labelled {wanted:?}, or change MSS_BACKUP_USB_LABEL)",
                path.display()
            ))),
            None => Err(self.unavailable(format!(
                "USB target {} has no label file {MARKER_FILE}, but MSS_BACKUP_USB_LABEL={wanted} is set (if this is the right stick, run `mss-backup usb init {} {wanted}`; else plug in the right one)",
                path.display(),
                path.display()
            ))),
        }
    }

    fn check_file_limit(&self, mount: &Mount, artifact: &Artifact) -> Result<(), TargetError> {
        check_fat_limit(mount, artifact.size).map_err(|reason| {
            self.unavailable(format!(
                "USB target {} {reason} (reformat the stick as exFAT or ext4)",
                self.config.path.display()
            ))
        })
    }

    /// The bytes `artifact` needs on the stick and the bytes free there.
    fn space_for(&self, artifact: &Artifact) -> Result<(u64, u64), TargetError> {
        let sidecar = fs::metadata(&artifact.sidecar)
            .map(|m| m.len())
            .unwrap_or(0);
        // A copy of the same backup already there is replaced, so its space
        // counts as free.
        let replaced = fs::metadata(self.dir().join(artifact.name.file_name()))
            .map(|m| m.len())
            .unwrap_or(0);
        let needed = (artifact.size + sidecar + SPACE_MARGIN).saturating_sub(replaced);
        let space = durable::fs_space(self.dir()).map_err(|e| TargetError::Failed {
            target: self.name.clone(),
            action: format!("checking the free space on {}", self.config.path.display()),
            detail: e.to_string(),
        })?;
        Ok((needed, space.available))
    }

    /// FAT's file limit and the free space, before a byte is written.
    fn check_room(&self, mount: &Mount, artifact: &Artifact) -> Result<(), TargetError> {
        self.check_file_limit(mount, artifact)?;
        let (needed, available) = self.space_for(artifact)?;
        if needed > available {
            return Err(self.unavailable(format!(
                "Not enough free space on USB target {}: {} needs {} MiB, {} MiB available, and deleting the backups retention lets go would not free enough (free space on the stick, or lower MSS_BACKUP_USB_RETENTION)",
                self.config.path.display(),
                artifact.name,
                needed.div_ceil(1 << 20),
                available >> 20
            )));
        }
        Ok(())
    }
}

/// `Err(reason)` when `size` bytes cannot be one file on `mount`.
fn check_fat_limit(mount: &Mount, size: u64) -> Result<(), String> {
    if mount.is_fat() && size > FAT_MAX_FILE {
        return Err(format!(
            "is a FAT filesystem ({}), which cannot hold files of 4 GiB or more, and this backup is {:.2} GiB",
            mount.fstype,
            size as f64 / f64::from(1u32 << 30)
        ));
    }
    Ok(())
}

impl Target for UsbTarget {
    fn name(&self) -> &str {
        &self.name
    }

    /// Mounted, labelled right, and the backup directory exists. Nothing
    /// is written unless the first two hold.
    fn preflight(&self) -> Result<(), TargetError> {
        self.check()?;
        self.dir.preflight()
    }

    fn put(&self, artifact: &Artifact) -> Result<(), TargetError> {
        // Checked again: a stick can be pulled out between two steps.
        let mount = self.check()?;
        self.dir.preflight()?;
        for path in self.dir.remove_leftover_partials()? {
            tracing::info!(target = %self.name, path = %path.display(), "removed the leftover of an interrupted copy");
        }
        self.check_room(&mount, artifact)?;
        self.dir.put(artifact)
    }

    fn check_fits(&self, artifact: &Artifact) -> Result<(), TargetError> {
        let mount = self.check()?;
        self.check_file_limit(&mount, artifact)
    }

    fn list(&self) -> Result<Vec<ArtifactName>, TargetError> {
        self.check()?;
        if !self.dir().is_dir() {
            return Ok(Vec::new());
        }
        self.dir.list()
    }

    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError> {
        self.check()?;
        self.dir.get(name, dest_dir)
    }

    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        self.check()?;
        self.dir.delete(name)
    }

    fn shortfall(&self, artifact: &Artifact) -> Option<u64> {
        self.check().ok()?;
        let (needed, available) = self.space_for(artifact).ok()?;
        Some(needed.saturating_sub(available))
    }

    fn size_of(&self, name: &ArtifactName) -> Option<u64> {
        let archive = fs::metadata(self.dir().join(name.file_name())).ok()?;
        let sidecar = fs::metadata(self.dir().join(name.sidecar_name())).map_or(0, |m| m.len());
        Some(archive.len() + sidecar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(fstype: &str) -> Mount {
        Mount {
            mount_point: PathBuf::from("/media/stick"),
            root: PathBuf::from("/"),
            fstype: fstype.to_string(),
            source: "/dev/sdb1".to_string(),
        }
    }

    #[test]
    fn fat_refuses_files_of_4_gib_and_more() {
        assert!(check_fat_limit(&mount("vfat"), FAT_MAX_FILE).is_ok());
        let err = check_fat_limit(&mount("vfat"), 4 << 30).unwrap_err();
        assert!(err.contains("cannot hold files of 4 GiB or more"), "{err}");
        assert!(check_fat_limit(&mount("fuse.fusefat"), 5 << 30).is_err());
        assert!(check_fat_limit(&mount("exfat"), 5 << 30).is_ok());
        assert!(check_fat_limit(&mount("ext4"), 5 << 30).is_ok());
    }

    #[test]
    fn labels_are_one_short_printable_line() {
        assert!(validate_label("MSS stick 1").is_ok());
        assert!(validate_label("0123").is_ok());
        for bad in ["", " x", "x ", "a\nb", "a\tb", &"x".repeat(65)] {
            assert!(validate_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_plain_directory_is_refused_and_left_empty() {
        let dir = tempfile::tempdir().unwrap();
        let target = UsbTarget::new(Config {
            path: dir.path().to_path_buf(),
            label: None,
            required: false,
        });
        let err = target.preflight().unwrap_err();
        assert!(matches!(err, TargetError::Absent { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.ends_with(&format!(
                "USB target {} is not mounted (plug in the stick; then `mss-backup copy usb` copies the newest backup)",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(target.list().is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = init(dir.path(), "MSS1").unwrap_err();
        assert!(matches!(err, UsbError::NotMounted(_)), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn debug_shows_the_path_and_label() {
        let config = Config {
            path: PathBuf::from("/media/stick"),
            label: Some("MSS1".into()),
            required: true,
        };
        assert_eq!(
            format!("{config:?}"),
            r#"Config { path: "/media/stick", label: Some("MSS1"), required: true }"#
        );
    }
}
