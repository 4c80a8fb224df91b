//! Moving bytes: the streamed multipart upload of an archive (aborted on
//! any failure, so nothing half-written ever has a backup's name), the
//! check of what arrived before the sidecar marks it complete, and the
//! ranged download into a partial file that [`mss_backup_core::target::fetch_checked`]
//! verifies.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use mss_backup_core::delta::{self, Delta, Piece};
use mss_backup_core::progress::Progress;
use mss_backup_core::{Artifact, ArtifactName, durable};
use opendal::Buffer;

use crate::{
    CONCURRENT_PARTS, Failure, PART_SIZE, S3Target, SHA256_METADATA, complete_backups, local,
};

/// How long aborting a failed upload may take, retries included.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

impl S3Target {
    /// Streams `file` to `key` in parts of [`PART_SIZE`], at most
    /// [`CONCURRENT_PARTS`] in flight; aborts the upload on any error so
    /// that nothing appears under `key`. Each part handed to the upload
    /// counts as progress.
    async fn upload(
        &self,
        file: &Path,
        key: &str,
        sha256: &str,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let mut input = File::open(file).map_err(local(format!("opening {}", file.display())))?;
        let mut writer = self.writer(key, sha256, Some(PART_SIZE)).await?;
        let sent = async {
            loop {
                let part =
                    read_part(&mut input).map_err(local(format!("reading {}", file.display())))?;
                if part.is_empty() {
                    break;
                }
                let len = part.len() as u64;
                writer.write(Buffer::from(part)).await?;
                progress.advance(len);
            }
            writer.close().await?;
            Ok::<_, Failure>(())
        }
        .await;
        if sent.is_err() {
            self.abort(&mut writer, key).await;
        }
        sent
    }

    /// A multipart upload to `key` that carries the archive's sha256 in its
    /// metadata, in parts of `part` bytes, or of the server's minimum and
    /// up (`None`).
    async fn writer(
        &self,
        key: &str,
        sha256: &str,
        part: Option<usize>,
    ) -> Result<opendal::Writer, Failure> {
        let mut writer = self
            .operator
            .writer_with(key)
            .concurrent(CONCURRENT_PARTS)
            .user_metadata([(SHA256_METADATA.to_string(), sha256.to_string())]);
        if let Some(part) = part {
            writer = writer.chunk(part);
        }
        Ok(writer.await?)
    }

    /// Aborts a failed upload, so that nothing appears under `key`. Worth
    /// one bounded try: when the server is gone, the abort fails too, and
    /// waiting out its retries helps no one.
    async fn abort(&self, writer: &mut opendal::Writer, key: &str) {
        let aborted = tokio::time::timeout(ABORT_TIMEOUT, writer.abort()).await;
        if !matches!(aborted, Ok(Ok(()))) {
            // The parts stay invisible (no object under the name) until
            // the bucket's lifecycle rule removes them.
            tracing::warn!(target = %self.label, key, "could not abort the failed upload");
        }
    }

    /// Last night's backup, here and on S3 byte for byte, as the basis of
    /// tonight's upload: its key and how tonight's archive is made of it.
    /// `Err` says why the upload goes in full.
    async fn basis(&self, artifact: &Artifact, prefix: &str) -> Result<(String, Delta), String> {
        if artifact.name.is_encrypted() {
            return Err("an encrypted archive shares no bytes with another".into());
        }
        if !self.operator.info().capability().write_can_copy_from {
            return Err("this server (or a checksum setting) allows no server-side copy".into());
        }
        let names = self
            .names_under(prefix)
            .await
            .map_err(|e| format!("cannot list {prefix}: {e}"))?;
        let Some(last) = complete_backups(&names)
            .into_iter()
            .filter(|n| !n.is_encrypted() && *n < artifact.name)
            .max()
        else {
            return Err("no earlier backup there".into());
        };
        let here = artifact
            .archive
            .parent()
            .map(|dir| dir.join(last.file_name()))
            .filter(|p| p.is_file())
            .ok_or_else(|| format!("{last} is no longer here to compare with"))?;
        let key = format!("{prefix}{}", last.file_name());
        let stored = self
            .operator
            .stat(&key)
            .await
            .map_err(|e| format!("cannot stat {key}: {e}"))?;
        let stored_sha = stored
            .user_metadata()
            .and_then(|m| m.get(SHA256_METADATA))
            .map(str::to_string)
            .ok_or_else(|| format!("{key} has no sha256 metadata"))?;
        let delta = delta::plan(&here, &artifact.archive)
            .map_err(|e| format!("cannot compare with {}: {e}", here.display()))?;
        if delta.basis_sha256 != stored_sha {
            return Err(format!("{last} here is not the one on S3 (sha256 differs)"));
        }
        if delta.copied < artifact.size / 10 {
            return Err(format!("little of it is in {last}"));
        }
        Ok((key, delta))
    }

    /// Builds `key` from `file`'s new bytes and ranges of `basis` that the
    /// server copies itself (UploadPartCopy): one multipart upload, aborted
    /// on any error like a full one.
    async fn upload_delta(
        &self,
        file: &Path,
        key: &str,
        sha256: &str,
        basis: &str,
        delta: &Delta,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let mut input = File::open(file).map_err(local(format!("opening {}", file.display())))?;
        // No fixed part size: opendal then copies each run in one part,
        // and streams only what fills a part up to the minimum (5 MiB) where
        // new bytes meet a copied run; a fixed size would also stream every
        // run's tail.
        let mut writer = self.writer(key, sha256, None).await?;
        let sent = async {
            for piece in &delta.pieces {
                mss_backup_core::interrupt::check()
                    .map_err(local(format!("reading {}", file.display())))?;
                match *piece {
                    Piece::Copy { from, len } => {
                        writer.copy_from(basis, from..from + len).await?;
                        progress.advance(len);
                    }
                    Piece::Send { at, len } => {
                        input
                            .seek(SeekFrom::Start(at))
                            .map_err(local(format!("reading {}", file.display())))?;
                        let mut left = len;
                        while left > 0 {
                            let take = left.min(PART_SIZE as u64);
                            let mut part = Vec::with_capacity(take as usize);
                            (&mut input)
                                .take(take)
                                .read_to_end(&mut part)
                                .map_err(local(format!("reading {}", file.display())))?;
                            if part.len() as u64 != take {
                                return Err(Failure::Integrity(format!(
                                    "{} ended while being sent",
                                    file.display()
                                )));
                            }
                            writer.write(Buffer::from(part)).await?;
                            progress.advance(take);
                            left -= take;
                        }
                    }
                }
            }
            writer.close().await?;
            Ok::<_, Failure>(())
        }
        .await;
        if sent.is_err() {
            self.abort(&mut writer, key).await;
        }
        sent
    }

    /// Tonight's archive onto `key`: only what changed since last night's
    /// where the server can copy the rest itself, else every byte.
    async fn send(
        &self,
        artifact: &Artifact,
        prefix: &str,
        key: &str,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let file_name = artifact.name.file_name();
        match self.basis(artifact, prefix).await {
            Ok((basis, delta)) => {
                let sent = self
                    .upload_delta(
                        &artifact.archive,
                        key,
                        &artifact.sha256,
                        &basis,
                        &delta,
                        progress,
                    )
                    .await;
                match sent {
                    Ok(()) => {
                        tracing::info!(
                            target = %self.label,
                            "{file_name}: sent {} of {} bytes ({:.1}%); the server copied the other {} from {basis}",
                            delta.sent,
                            artifact.size,
                            100.0 * delta.sent as f64 / artifact.size.max(1) as f64,
                            delta.copied
                        );
                        return Ok(());
                    }
                    Err(e) if mss_backup_core::interrupt::received().is_some() => return Err(e),
                    Err(e) => tracing::warn!(
                        target = %self.label,
                        "{file_name}: the server-side copy from {basis} failed ({e}); sending it in full"
                    ),
                }
            }
            Err(why) => tracing::info!(target = %self.label, "{file_name}: sent in full: {why}"),
        }
        self.upload(&artifact.archive, key, &artifact.sha256, progress)
            .await
    }

    pub(crate) async fn put_async(
        &self,
        artifact: &Artifact,
        prefix: &str,
        progress: &dyn Progress,
    ) -> Result<(), (String, Failure)> {
        let file_name = artifact.name.file_name();
        let key = format!("{prefix}{file_name}");
        let sidecar_key = format!("{prefix}{}", artifact.name.sidecar_name());
        let uploading = format!("uploading {file_name}");
        self.send(artifact, prefix, &key, progress)
            .await
            .map_err(|f| (uploading.clone(), f))?;
        // Check what arrived before the sidecar marks it complete (the
        // completion ETag of a multipart upload says nothing on some
        // servers, so ask for the size).
        let checked = async {
            let meta = self.operator.stat(&key).await?;
            if meta.content_length() != artifact.size {
                return Err(Failure::Integrity(format!(
                    "S3 holds {} bytes, the archive has {}",
                    meta.content_length(),
                    artifact.size
                )));
            }
            match meta.user_metadata().and_then(|m| m.get(SHA256_METADATA)) {
                Some(stored) if stored != artifact.sha256 => {
                    return Err(Failure::Integrity(format!(
                        "S3 metadata says sha256 {stored}, the archive has {}",
                        artifact.sha256
                    )));
                }
                Some(_) => {}
                None => tracing::warn!(target = %self.label, key, "the server did not keep the sha256 metadata"),
            }
            let sidecar = fs::read(&artifact.sidecar)
                .map_err(local(format!("reading {}", artifact.sidecar.display())))?;
            self.operator.write(&sidecar_key, sidecar).await?;
            Ok(())
        }
        .await;
        if let Err(failure) = checked {
            // Best effort: an archive without a sidecar is never listed, but
            // it should not linger either.
            let _ = self.operator.delete(&key).await;
            let action = match failure {
                Failure::Integrity(_) => file_name,
                _ => uploading,
            };
            return Err((action, failure));
        }
        Ok(())
    }

    /// Downloads the sidecar and then the archive to the hidden paths that
    /// [`target::fetch_checked`] hands over; it checks and names them.
    pub(crate) async fn fetch_async(
        &self,
        name: &ArtifactName,
        prefix: &str,
        archive: &Path,
        sidecar: &Path,
    ) -> Result<(), (String, Failure)> {
        let file_name = name.file_name();
        let downloading = format!("downloading {file_name}");
        let fail = |f: Failure| (downloading.clone(), f);
        let sidecar_key = format!("{prefix}{}", name.sidecar_name());
        let bytes = self
            .operator
            .read(&sidecar_key)
            .await
            .map_err(|e| fail(e.into()))?
            .to_vec();
        write_private(sidecar, &bytes).map_err(fail)?;
        self.download(&format!("{prefix}{file_name}"), None, archive)
            .await
            .map_err(fail)
    }

    /// Downloads `key` into the new file `partial` in ranged reads of
    /// [`PART_SIZE`], fsynced.
    pub(crate) async fn download(
        &self,
        key: &str,
        version: Option<&str>,
        partial: &Path,
    ) -> Result<(), Failure> {
        let (size, reader) = match version {
            None => (
                self.operator.stat(key).await?.content_length(),
                self.operator.reader(key).await?,
            ),
            Some(v) => (
                self.operator
                    .stat_with(key)
                    .version(v)
                    .await?
                    .content_length(),
                self.operator.reader_with(key).version(v).await?,
            ),
        };
        let _ = fs::remove_file(partial);
        let mut out = durable::create_new_private(partial)
            .map_err(local(format!("creating {}", partial.display())))?;
        let mut offset = 0;
        while offset < size {
            mss_backup_core::interrupt::check()
                .map_err(local(format!("writing {}", partial.display())))?;
            let end = size.min(offset + PART_SIZE as u64);
            let buffer = reader.read(offset..end).await?;
            if buffer.is_empty() {
                return Err(Failure::Integrity(format!(
                    "the object ended after {offset} of {size} bytes"
                )));
            }
            for chunk in buffer {
                out.write_all(&chunk)
                    .map_err(local(format!("writing {}", partial.display())))?;
                offset += chunk.len() as u64;
            }
        }
        out.sync_all()
            .map_err(local(format!("syncing {}", partial.display())))
    }
}

/// Reads up to [`PART_SIZE`] bytes (less only at the end of the file).
fn read_part(input: &mut File) -> io::Result<Vec<u8>> {
    // A stop signal ends the upload here, which then aborts it.
    mss_backup_core::interrupt::check()?;
    let mut part = Vec::with_capacity(PART_SIZE);
    input.take(PART_SIZE as u64).read_to_end(&mut part)?;
    Ok(part)
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let _ = fs::remove_file(path);
    let mut file =
        durable::create_new_private(path).map_err(local(format!("creating {}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(local(format!("writing {}", path.display())))
}
