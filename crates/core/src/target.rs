//! What a backup target is: a place that can hold complete artifacts. A
//! target puts, lists, gets and deletes files; it never decides what to keep
//! (retention is decided once, in [`crate::retention`]).

use std::path::{Path, PathBuf};

use crate::name::ArtifactName;
use crate::progress::Progress;

/// A complete backup on local disk: the archive and its checksum sidecar.
/// Handed to targets as paths, not a stream: rsync needs a file, retries
/// reopen it, and the checksum is computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: ArtifactName,
    pub archive: PathBuf,
    pub sidecar: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// A target's failure: one line that names the target, what went wrong and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target is not usable now (not mounted, unreachable, refused).
    #[error("{target}: {reason}")]
    Unavailable { target: String, reason: String },
    /// An operation failed part-way.
    #[error("{target}: {action} failed: {detail}")]
    Failed {
        target: String,
        action: String,
        detail: String,
    },
    /// What arrived is not what was sent.
    #[error("{target}: {name} does not match its checksum ({detail})")]
    Integrity {
        target: String,
        name: String,
        detail: String,
    },
    /// The named backup is not there.
    #[error("{target}: no backup named {name}")]
    NotFound { target: String, name: String },
}

/// A place backups are copied to. Implementations are small: the run,
/// retention and reporting live in core.
pub trait Target: Send + Sync {
    /// How the operator knows it, e.g. `local`, `usb:/media/stick`.
    fn name(&self) -> &str;
    /// Cheap check that the target can take a backup now (mounted? reachable?).
    fn preflight(&self) -> Result<(), TargetError>;
    /// Stores the artifact; the sidecar goes last and marks it complete. An
    /// interrupted put leaves nothing under the backup's name.
    fn put(&self, artifact: &Artifact) -> Result<(), TargetError>;
    /// [`Target::put`] that reports the archive bytes it has sent to
    /// `progress` (whose phase the caller started with the archive's size).
    /// A target that cannot tell how far a copy got keeps this default:
    /// its bar then fills at the end.
    fn put_with_progress(
        &self,
        artifact: &Artifact,
        progress: &dyn Progress,
    ) -> Result<(), TargetError> {
        let _ = progress;
        self.put(artifact)
    }
    /// The complete backups present (names that parse and have a sidecar).
    fn list(&self) -> Result<Vec<ArtifactName>, TargetError>;
    /// Brings a backup into `dest_dir`, returning the archive's path.
    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError>;
    /// Removes a backup and its sidecar.
    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError>;
    /// How many bytes `artifact` lacks on a target with a space limit it
    /// can see (a mounted disk): `Some(0)` when it fits, `None` where
    /// there is no such limit or it cannot be known now.
    fn shortfall(&self, artifact: &Artifact) -> Option<u64> {
        let _ = artifact;
        None
    }
    /// The bytes a stored backup takes (archive and sidecar), where known.
    fn size_of(&self, name: &ArtifactName) -> Option<u64> {
        let _ = name;
        None
    }
}
