//! S3-compatible object storage as an mss-backup target: AWS S3, Ceph RGW,
//! Garage, MinIO, Backblaze B2, Wasabi, anything that speaks the S3 API,
//! through opendal's `s3` service. This is the only crate that knows tokio
//! and opendal: [`S3Target`] owns a small runtime and blocks on it, so the
//! [`Target`] trait stays synchronous for everyone else.
//!
//! Backups live under a prefix (by default `mss/<server id>/`), so several
//! MSS machines can share a bucket and no machine's retention ever lists or
//! deletes another's backups. The archive is streamed from disk in a
//! multipart upload with a fixed part size and bounded concurrency, so
//! memory stays flat however big it is; an upload that fails is aborted, so
//! no object ever appears under a backup's name half-written. The sha256
//! travels with the archive as object metadata (`x-amz-meta-sha256`), and
//! the `.sha256` sidecar is uploaded only once the archive is there with
//! the right size: as on disk, the sidecar marks a complete backup.

mod config;
mod exposure;
mod plugin;
mod remote_error;
mod transfer;
mod transport;
mod versions;

pub use config::{Checksum, Config, ConfigError, KeySource, OUTSIDE_VARS, SETTINGS};

pub use plugin::{S3, S3Settings};

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mss_backup_core::progress::{NoProgress, Progress};
use mss_backup_core::{Artifact, ArtifactName, Target, TargetError, target};
use opendal::{ErrorKind, Operator};

use crate::remote_error::{Place, describe};

/// Size of one part of a multipart upload, and of one ranged read when
/// downloading. An upload holds [`CONCURRENT_PARTS`] + 2 of these in
/// memory (the parts in flight, the next one, the one being read), so
/// about 32 MiB whatever the archive's size; S3 allows 10,000 parts, so
/// archives up to 80 GiB fit.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at the same time.
pub const CONCURRENT_PARTS: usize = 2;
/// Default for [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Region used when none is configured (opendal cannot build without one;
/// most S3-compatible servers accept any name).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The user metadata key the archive's sha256 is stored under (sent as
/// `x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// Where each machine's backups live by default: `mss/<server id>/`.
pub const MACHINES_ROOT: &str = "mss/";

/// The complete backups among object names: ours, with their sidecar,
/// oldest first.
pub(crate) fn complete_backups(names: &BTreeSet<String>) -> Vec<ArtifactName> {
    let mut backups: Vec<ArtifactName> = names
        .iter()
        .filter_map(|n| ArtifactName::parse(n))
        .filter(|n| names.contains(&n.sidecar_name()))
        .collect();
    backups.sort_unstable();
    backups
}

/// An S3 bucket and prefix holding `NAME.tar.gz` + `NAME.tar.gz.sha256`
/// pairs.
pub struct S3Target {
    label: String,
    bucket: String,
    /// For messages: the endpoint, or `AWS S3 (region)`.
    endpoint: String,
    region: String,
    /// `mss/vm1/` (or empty for the bucket's root), or why there is none.
    prefix: Result<String, String>,
    key_id_var: &'static str,
    secret_var: &'static str,
    timeout: Duration,
    operator: Operator,
    /// Shared with the same target at another machine's prefix.
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
    /// `MSS_BACKUP_S3_RETENTION=bucket`: never delete, the bucket's
    /// lifecycle rule expires old backups.
    retention_by_bucket: bool,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("label", &self.label)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed, before it is worded for the operator.
enum Failure {
    Remote(opendal::Error),
    Local { what: String, source: io::Error },
    Integrity(String),
}

impl fmt::Display for Failure {
    /// The failure's own words, for the log (the operator's message comes
    /// from `S3Target::error`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Remote(e) => write!(f, "{e}"),
            Failure::Local { what, source } => write!(f, "{what}: {source}"),
            Failure::Integrity(detail) => f.write_str(detail),
        }
    }
}

impl From<opendal::Error> for Failure {
    fn from(e: opendal::Error) -> Self {
        Failure::Remote(e)
    }
}

/// How long a stop signal lets a running upload reach its own next check
/// (between parts), where it aborts the multipart upload cleanly.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `work` to its end, or until a stop signal has waited
/// [`STOP_GRACE`] for it: a request the server sits on (a frozen gateway)
/// would otherwise hold Ctrl-C or `systemctl stop` for `s3_timeout` and
/// every retry. What was begun on the server is then left as after a kill:
/// an unfinished multipart upload, never an object under a backup's name
/// (a lifecycle rule removes those; see docs/s3-append-only.md).
async fn until_stopped<T>(
    work: impl std::future::Future<Output = Result<T, (String, Failure)>>,
    what: &str,
) -> Result<T, (String, Failure)> {
    let mut work = std::pin::pin!(work);
    let mut deadline: Option<std::time::Instant> = None;
    loop {
        match tokio::time::timeout(Duration::from_millis(100), work.as_mut()).await {
            Ok(done) => return done,
            Err(_) => {
                let Err(signal) = mss_backup_core::interrupt::check() else {
                    continue;
                };
                let deadline =
                    *deadline.get_or_insert_with(|| std::time::Instant::now() + STOP_GRACE);
                if std::time::Instant::now() >= deadline {
                    return Err((
                        what.to_string(),
                        Failure::Local {
                            what: what.to_string(),
                            source: signal,
                        },
                    ));
                }
            }
        }
    }
}

fn local(what: impl Into<String>) -> impl FnOnce(io::Error) -> Failure {
    let what = what.into();
    move |source| Failure::Local { what, source }
}

impl S3Target {
    /// The key prefix backups are under (`mss/vm1/`), or the reason there
    /// is none (the server id file is missing).
    pub fn prefix(&self) -> Result<&str, TargetError> {
        self.prefix
            .as_deref()
            .map_err(|reason| TargetError::Unavailable {
                target: self.label.clone(),
                reason: reason.clone(),
            })
    }

    /// The same bucket and keys at another prefix (another machine's).
    pub fn at_prefix(&self, prefix: &str) -> S3Target {
        S3Target {
            label: format!("s3://{}/{prefix}", self.bucket),
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            prefix: Ok(prefix.to_string()),
            key_id_var: self.key_id_var,
            secret_var: self.secret_var,
            timeout: self.timeout,
            retention_by_bucket: self.retention_by_bucket,
            operator: self.operator.clone(),
            runtime: std::sync::Arc::clone(&self.runtime),
        }
    }

    /// Each machine under [`MACHINES_ROOT`] with its complete backups.
    async fn machines_async(&self) -> Result<Vec<mss_backup_core::Machine>, Failure> {
        let folders = self.folders_under(MACHINES_ROOT).await?;
        let mut machines = Vec::new();
        for folder in &folders {
            let Some(id) = folder
                .strip_prefix(MACHINES_ROOT)
                .map(|rest| rest.trim_end_matches('/'))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            else {
                continue;
            };
            let prefix = format!("{MACHINES_ROOT}{id}/");
            let backups = complete_backups(&self.names_under(&prefix).await?);
            let newest_size = match backups.last() {
                Some(newest) => self
                    .operator
                    .stat(&format!("{prefix}{}", newest.file_name()))
                    .await
                    .ok()
                    .map(|m| m.content_length()),
                None => None,
            };
            machines.push(mss_backup_core::Machine {
                id: id.to_string(),
                backups,
                newest_size,
                hidden: self.hidden_under(&prefix).await?,
            });
        }
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(machines)
    }

    /// With `yes`, retention never deletes here: the bucket's lifecycle
    /// rule expires old backups (`MSS_BACKUP_S3_RETENTION=bucket`, for a
    /// key that may not delete).
    pub fn leave_retention_to_bucket(mut self, yes: bool) -> S3Target {
        self.retention_by_bucket = yes;
        self
    }

    /// The endpoint as messages name it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error(&self, action: impl Into<String>, failure: Failure) -> TargetError {
        let target = self.label.clone();
        match failure {
            Failure::Remote(e) => {
                let prefix = self.prefix.as_deref().unwrap_or_default();
                let described = describe(
                    &e,
                    &Place {
                        endpoint: &self.endpoint,
                        bucket: &self.bucket,
                        region: &self.region,
                        prefix,
                        key_id_var: self.key_id_var,
                        secret_var: self.secret_var,
                        timeout: self.timeout,
                    },
                );
                // The S3 error document's fields (code, message, request id)
                // for the log, never the request or its headers.
                tracing::warn!(target = %self.label, kind = %e.kind(), "S3 error: {}", e.message());
                if described.unavailable {
                    TargetError::Unavailable {
                        target,
                        reason: described.message,
                    }
                } else {
                    TargetError::Failed {
                        target,
                        action: action.into(),
                        detail: described.message,
                    }
                }
            }
            Failure::Local { what, source } => TargetError::Failed {
                target,
                action: action.into(),
                detail: format!("{what}: {source}"),
            },
            Failure::Integrity(detail) => TargetError::Integrity {
                target,
                name: action.into(),
                detail,
            },
        }
    }

    /// Every object name directly under the prefix.
    pub(crate) async fn names_under(&self, prefix: &str) -> Result<BTreeSet<String>, Failure> {
        let dir = if prefix.is_empty() { "/" } else { prefix };
        let entries = self.operator.list(dir).await?;
        Ok(entries
            .iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| e.name().to_string())
            .collect())
    }
}

impl Target for S3Target {
    fn name(&self) -> &str {
        &self.label
    }

    /// Lists the prefix: proves the endpoint answers, the keys are
    /// accepted and the bucket exists, before a large upload starts.
    fn preflight(&self) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        self.runtime
            .block_on(self.names_under(prefix))
            .map(|_| ())
            .map_err(|f| self.error(format!("listing {prefix}"), f))
    }

    fn put(&self, artifact: &Artifact) -> Result<(), TargetError> {
        self.put_with_progress(artifact, &NoProgress)
    }

    fn put_with_progress(
        &self,
        artifact: &Artifact,
        progress: &dyn Progress,
    ) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        let uploading = format!("uploading {}", artifact.name.file_name());
        self.runtime
            .block_on(until_stopped(
                self.put_async(artifact, prefix, progress),
                &uploading,
            ))
            .map_err(|(action, f)| self.error(action, f))
    }

    fn knows_machine(&self) -> bool {
        self.prefix.is_ok()
    }

    fn machines(&self) -> Option<Result<Vec<mss_backup_core::Machine>, TargetError>> {
        Some(
            self.runtime
                .block_on(self.machines_async())
                .map_err(|f| self.error(format!("listing {MACHINES_ROOT}"), f)),
        )
    }

    fn for_machine(&self, id: &str) -> Option<Box<dyn Target>> {
        Some(Box::new(self.at_prefix(&format!("{MACHINES_ROOT}{id}/"))))
    }

    fn list(&self) -> Result<Vec<ArtifactName>, TargetError> {
        let prefix = self.prefix()?;
        let names = self
            .runtime
            .block_on(self.names_under(prefix))
            .map_err(|f| self.error(format!("listing {prefix}"), f))?;
        Ok(complete_backups(&names))
    }

    /// Downloads the sidecar and the archive into `dest_dir` through hidden
    /// files, which [`target::fetch_checked`] checks against each other
    /// before it names them (the sidecar first).
    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError> {
        let prefix = self.prefix()?;
        let not_found = || TargetError::NotFound {
            target: self.label.clone(),
            name: name.file_name(),
        };
        target::fetch_checked(&self.label, name, dest_dir, |archive, sidecar| {
            let downloading = format!("downloading {}", name.file_name());
            let current = self.runtime.block_on(until_stopped(
                self.fetch_async(name, prefix, archive, sidecar),
                &downloading,
            ));
            match current {
                Ok(()) => Ok(()),
                // Not listed: perhaps hidden behind a delete marker, with
                // its versions still in the bucket.
                Err((_, Failure::Remote(e))) if e.kind() == ErrorKind::NotFound => self
                    .runtime
                    .block_on(self.fetch_version_async(name, prefix, archive, sidecar))
                    .map_err(|f| match f {
                        Failure::Remote(e) if e.kind() == ErrorKind::NotFound => not_found(),
                        Failure::Remote(e) if versions::unsupported(&e) => not_found(),
                        f => self.error(format!("downloading {}", name.file_name()), f),
                    }),
                Err((action, f)) => Err(self.error(action, f)),
            }
        })
    }

    /// Writes a probe under the prefix and tries to delete it, then its
    /// version (see [`exposure`]).
    fn exposure(&self) -> Option<Result<mss_backup_core::Exposure, TargetError>> {
        let prefix = match self.prefix() {
            Ok(prefix) => prefix,
            Err(e) => return Some(Err(e)),
        };
        Some(
            self.runtime
                .block_on(self.exposure_async(prefix))
                .map_err(|f| self.error("probing what this key may delete", f)),
        )
    }

    /// Complete backups behind delete markers on a versioned or
    /// Object-Locked bucket (see [`versions`]).
    fn hidden(&self) -> Result<Vec<ArtifactName>, TargetError> {
        let prefix = self.prefix()?;
        self.runtime
            .block_on(self.hidden_under(prefix))
            .map_err(|f| self.error(format!("listing the versions under {prefix}"), f))
    }

    /// Deletes the archive first. A backup half deleted is then a lone
    /// sidecar: never listed, a few bytes. The other way round it would be
    /// a lone archive, never listed either, so never deleted, and billed
    /// for good.
    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        if self.retention_by_bucket {
            return Err(TargetError::DeleteRefused {
                target: self.label.clone(),
                reason: "MSS_BACKUP_S3_RETENTION=bucket: mss-backup never deletes here".into(),
            });
        }
        for file in [name.file_name(), name.sidecar_name()] {
            let key = format!("{prefix}{file}");
            match self.runtime.block_on(self.operator.delete(&key)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    tracing::warn!(target = %self.label, "S3 refused a delete: {}", e.message());
                    return Err(TargetError::DeleteRefused {
                        target: self.label.clone(),
                        reason: format!(
                            "S3 at {} refused to delete {file}: this key cannot delete, so retention is left to the bucket (a lifecycle rule must expire old backups); set MSS_BACKUP_S3_RETENTION=bucket to say so and skip the deletes",
                            self.endpoint
                        ),
                    });
                }
                Err(e) => return Err(self.error(format!("deleting {file}"), e.into())),
            }
        }
        Ok(())
    }

    fn retention_elsewhere(&self) -> Option<String> {
        self.retention_by_bucket
            .then(|| "retention left to the bucket (MSS_BACKUP_S3_RETENTION=bucket)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::config::tests::config;

    #[test]
    fn the_default_prefix_comes_from_the_server_id() {
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("server_id.txt");
        let mut c = config();
        c.prefix = None;
        c.server_id_file = Some(id_file.clone());
        let target = c.clone().build().unwrap();
        let err = target.preflight().unwrap_err().to_string();
        assert!(err.contains("server id file"), "{err}");
        assert!(err.contains("MSS_BACKUP_S3_PREFIX"), "{err}");
        assert_eq!(target.name(), "s3://backups");

        fs::write(&id_file, "  9f2c-vm1\n").unwrap();
        let target = c.clone().build().unwrap();
        assert_eq!(target.prefix().unwrap(), "mss/9f2c-vm1/");
        assert_eq!(target.name(), "s3://backups/mss/9f2c-vm1/");

        fs::write(&id_file, "a/b").unwrap();
        let err = c.build().unwrap().prefix().unwrap_err().to_string();
        assert!(err.contains("cannot name one"), "{err}");
    }
}
