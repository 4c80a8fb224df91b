//! What an intruder holding this VM's S3 key could do to the offsite
//! copies, for `doctor`. Found by trying, never by guessing from settings,
//! and never on a backup: a small probe object of our own is written under
//! the prefix, then deleted plainly (can this key delete?), and on a
//! versioned bucket its version is deleted too (can it destroy, or only
//! hide?). Without versions even a key that cannot delete can destroy, by
//! writing junk over a backup. The probe's name is not a backup's, so nothing lists, counts
//! or restores it; where a delete is refused it stays, a few bytes.

use mss_backup_core::Exposure;
use opendal::ErrorKind;

use crate::{Failure, S3Target};

/// Where the probe goes under the prefix; dot-prefixed, so never taken
/// for a backup.
const PROBE: &str = ".mss-backup-doctor-probe";

impl S3Target {
    pub(crate) async fn exposure_async(&self, prefix: &str) -> Result<Exposure, Failure> {
        let key = format!("{prefix}{PROBE}");
        let written = self
            .operator
            .write(&key, "mss-backup doctor: delete probe\n")
            .await?;
        let version = written
            .version()
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_string);
        let place = format!("s3://{}/{prefix}", self.bucket);
        match self.operator.delete(&key).await {
            // A key that may write can overwrite a backup with junk: only
            // versions keep the original then.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Ok(match version {
                    Some(_) => Exposure {
                        safe: true,
                        words: format!(
                            "this key cannot delete under {place} and the bucket keeps versions: an intruder on this VM can neither remove nor overwrite the offsite copies; old ones expire by the bucket's lifecycle rule (MSS_BACKUP_S3_RETENTION=bucket); the probe {key} stays"
                        ),
                    },
                    None => Exposure {
                        safe: false,
                        words: format!(
                            "this key cannot delete under {place}, but the bucket keeps no versions: an intruder on this VM can still overwrite a backup with junk (turn on versioning or Object Lock: see docs/s3-append-only.md); the probe {key} stays"
                        ),
                    },
                });
            }
            other => other?,
        }
        let Some(version) = version else {
            return Ok(Exposure {
                safe: false,
                words: format!(
                    "this key can delete under {place} and the bucket keeps no versions: an intruder on this VM can destroy every offsite copy (use a key without delete, or Object Lock: see docs/s3-append-only.md)"
                ),
            });
        };
        match self.operator.delete_with(&key).version(&version).await {
            Ok(()) => Ok(Exposure {
                safe: false,
                words: format!(
                    "the bucket keeps versions, but this key can delete them under {place}: an intruder on this VM can destroy every offsite copy (turn on Object Lock, or deny s3:DeleteObjectVersion: see docs/s3-append-only.md)"
                ),
            }),
            Err(e) => {
                tracing::info!(target = %self.label, kind = %e.kind(), "the probe's version could not be deleted: {}", e.message());
                Ok(Exposure {
                    safe: true,
                    words: format!(
                        "this key can delete under {place}, but the bucket keeps versions it cannot delete (Object Lock or policy): an intruder can hide the offsite copies, not destroy them, and `restore --from s3:latest` still finds them; the probe's locked version stays until its retention ends"
                    ),
                })
            }
        }
    }
}
