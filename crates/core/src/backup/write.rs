//! Writing one archive: the database snapshot and `cloud-data/` streamed
//! into a hidden partial file, every member checked as it is read back,
//! then renamed under its name with its sidecar.

use super::*;

/// Builds, checks and publishes the archive in the local archive dir, and
/// with a `job` its encrypted copy (hidden, see [`seal::seal`]). Returns
/// the artifact, how many files it holds, and the encrypted copy.
pub(super) fn make_artifact(
    plan: &Plan,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
    job: Option<SealJob>,
    made: &mut Option<Made>,
) -> Result<(Artifact, u64, Sealed), BackupError> {
    // A restore killed mid-swap is finished first, so what is backed up is
    // whole (and its safety net is where the log said).
    for line in crate::restore::recover_interrupted(&plan.data_dir) {
        warnings.push(line);
    }
    if !plan.data_dir.is_dir() {
        return Err(BackupError::DataDirMissing(plan.data_dir.clone()));
    }
    let live_db = plan.data_dir.join(DB_PATH);
    let live_db_meta =
        fs::metadata(&live_db).map_err(|_| BackupError::DatabaseMissing(live_db.clone()))?;
    let archive_dir = plan.archive_dir();
    check_archive_dir(&plan.backup_dir)?;
    durable::create_private_dir(&archive_dir).map_err(io_err("cannot create", &archive_dir))?;
    remove_leftovers(plan)?;

    let listing = archive::list(&plan.data_dir).map_err(|e| match e {
        ArchiveError::Read { path, source } => BackupError::Unreadable { path, source },
        ArchiveError::Write(source) => io_err("cannot list", &plan.data_dir)(source),
        ArchiveError::Duplicate(name) => BackupError::DuplicateMember(name),
    })?;
    warnings.extend(listing.warnings.iter().cloned());
    for (section, rel) in [
        (Section::ServerId, archive::SERVER_ID_PATH),
        (Section::Config, "config"),
        (Section::Exports, "data/exports"),
        (Section::Log, "log"),
    ] {
        if !plan.data_dir.join(rel).exists() {
            let warning = format!(
                "{} not found in {}; backed up the rest",
                section.label(),
                plan.data_dir.display()
            );
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
    }

    let needed = space_needed(listing.bytes() + live_db_meta.len(), job.is_some());
    let space = durable::fs_space(&archive_dir).map_err(io_err("cannot stat", &archive_dir))?;
    if needed > space.available {
        return Err(BackupError::NoSpace {
            dir: archive_dir,
            needed: needed.div_ceil(1 << 20),
            available: space.available >> 20,
        });
    }

    let staging = plan
        .backup_dir
        .join(format!(".staging-{}", std::process::id()));
    durable::create_private_dir(&staging).map_err(io_err("cannot create", &staging))?;
    let result = write_archive(
        plan,
        &archive_dir,
        &staging,
        &listing,
        &live_db,
        &live_db_meta,
        warnings,
        progress,
        job,
        made,
    );
    let _ = fs::remove_dir_all(&staging);
    result
}

// The second half of `make_artifact`, split off to scope the staging dir;
// a struct for its inputs would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_archive(
    plan: &Plan,
    archive_dir: &Path,
    staging: &Path,
    listing: &archive::Listing,
    live_db: &Path,
    live_db_meta: &fs::Metadata,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
    job: Option<SealJob>,
    made: &mut Option<Made>,
) -> Result<(Artifact, u64, Sealed), BackupError> {
    let mut job = job;
    let mut sealed: Sealed = None;
    // The previous archive is hashed against its sidecar on another core
    // while the database is copied and the archive written; what is made
    // from it is kept only if that hash matched (else made again in full).
    let (basis, checking, mut full_at) =
        match reuse::open_unchecked(archive_dir, plan.full, SystemTime::now()) {
            reuse::Mode::Full(why) => {
                tracing::info!("{why}");
                *made = Some(Made::full(why));
                (None, None, reuse::unix_secs(SystemTime::now()))
            }
            reuse::Mode::Reuse(basis) => {
                *made = Some(Made {
                    reused_from: Some(basis.name.clone()),
                    ..Made::default()
                });
                let check = basis.check();
                let checking = std::thread::spawn(move || check.run());
                let full_at = basis.full_at;
                (Some(basis), Some(checking), full_at)
            }
        };
    let snapshot_path = staging.join("sound_machine.db");
    // The snapshot is written in the backup dir too: a full disk there is
    // the same fault as during the archive, and gets the same message.
    let db =
        snapshot::snapshot(live_db, &snapshot_path, plan.db_busy_timeout).map_err(|e| match e {
            snapshot::SnapshotError::Copy {
                source: rusqlite::Error::SqliteFailure(ref failure, _),
                ..
            } if failure.code == rusqlite::ErrorCode::DiskFull => {
                BackupError::DiskFull(archive_dir.to_path_buf())
            }
            e => BackupError::Snapshot(e),
        })?;
    tracing::info!(
        pages = db.page_count,
        "database snapshot passed integrity_check"
    );

    // A second that already has a backup, plain or encrypted (local
    // encryption leaves only the `.age`), is taken: the next one is used.
    let taken = |name: &ArtifactName| {
        [name.plain(), name.encrypted()].iter().any(|n| {
            archive_dir.join(n.file_name()).exists() || archive_dir.join(n.sidecar_name()).exists()
        })
    };
    let mut name = ArtifactName::at(Local::now().naive_local());
    while taken(&name) {
        name = name.next_second();
    }
    let partial = archive_dir.join(format!(".{}.partial", name.file_name()));
    let final_path = archive_dir.join(name.file_name());
    let db_size = fs::metadata(&snapshot_path).map(|m| m.len()).unwrap_or(0);
    // `Ok(Err(why))`: the previous archive failed its check; the partial
    // made from it is gone, and the archive is made again in full.
    let mut attempt = |basis: Option<reuse::Basis>,
                       checking: Option<std::thread::JoinHandle<Result<(), String>>>|
     -> Result<Result<archive::Written, String>, BackupError> {
        let file =
            durable::create_new_private(&partial).map_err(io_err("cannot create", &partial))?;
        let mut writer = ArchiveWriter::new(durable::Writeback::new(file), plan.gz);
        if let Some(basis) = basis {
            writer = writer.reuse_from(basis);
        }
        let write_err = |e: ArchiveError| match e {
            ArchiveError::Write(e) if durable::is_disk_full(&e) => {
                BackupError::DiskFull(archive_dir.to_path_buf())
            }
            ArchiveError::Write(e) => BackupError::Io {
                action: "cannot write",
                path: partial.clone(),
                source: e,
            },
            ArchiveError::Read { path, source } => BackupError::Unreadable { path, source },
            ArchiveError::Duplicate(name) => BackupError::DuplicateMember(name),
        };
        progress.start(Phase::Archive, db_size + listing.bytes());
        let added = (|| {
            writer
                .add_file(Section::Database, DB_PATH, &snapshot_path, live_db_meta)
                .map_err(write_err)?;
            progress.advance(db_size);
            for entry in &listing.entries {
                writer.add_entry(entry).map_err(write_err)?;
                progress.advance(entry.size);
            }
            Ok::<(), BackupError>(())
        })();
        progress.finish();
        added?;
        let time = now_rfc3339();
        let host = status::host_name();
        let inventory = inventory::render(&InventoryInput {
            time: &time,
            host: &host,
            project_dir: &plan.project_dir,
            data_dir: &plan.data_dir,
            backup_dir: &plan.backup_dir,
            sections: writer.sections(),
            db: &db,
        });
        writer
            .add_bytes(
                Section::Inventory,
                archive::INVENTORY_PATH,
                inventory.as_bytes(),
            )
            .map_err(write_err)?;
        let (file, written) = writer.finish().map_err(write_err)?;
        file.sync_all().map(drop).map_err(|e| {
            if durable::is_disk_full(&e) {
                BackupError::DiskFull(archive_dir.to_path_buf())
            } else {
                io_err("cannot sync", &partial)(e)
            }
        })?;
        if let Some(checking) = checking {
            let checked = checking
                .join()
                .unwrap_or_else(|_| Err("full backup: checking the previous one failed".into()));
            if let Err(why) = checked {
                let _ = fs::remove_file(&partial);
                return Ok(Err(why));
            }
        }
        tracing::info!(bytes = written.size, "archive written, reading it back");
        // Read back what reached the disk before giving it a backup's name:
        // the bytes on disk have the CRC-32 and length of the bytes written
        // (whose sha256 goes in the sidecar), and what was written is only
        // gzip members each proven, before it was written, to decode with a
        // good CRC to exactly its input (`gz::ParallelGz`). (Files were
        // hashed into the manifest as they were read; `mss-backup verify`
        // rechecks them all.)
        let unreadable = |detail: String| BackupError::ReadBack {
            path: partial.clone(),
            detail,
        };
        // The encrypted copy is made from the same partial meanwhile, on
        // other cores; it is discarded below if the read-back fails.
        let digest = std::thread::scope(|scope| {
            let sealing = job.take().map(|job| {
                let source = Artifact {
                    name: name.clone(),
                    archive: partial.clone(),
                    sidecar: PathBuf::new(),
                    sha256: written.sha256.clone(),
                    size: written.size,
                };
                scope.spawn(move || {
                    let clock = Instant::now();
                    let sealed = seal::seal(&source, &job.recipients, archive_dir, job.durability);
                    if let Ok(sealed) = &sealed {
                        tracing::info!(
                            recipients = job.recipients.len(),
                            bytes = sealed.size,
                            seconds = round_ms(clock.elapsed()),
                            "encrypted with age"
                        );
                    }
                    sealed
                })
            });
            let digest = read_back(&partial, written.size, progress);
            sealed = sealing.map(|h| h.join().unwrap_or(Err(seal::SealError::Thread)));
            digest
        })
        .map_err(|e| unreadable(e.to_string()))?;
        if digest != (written.crc32, written.size) {
            return Err(unreadable(format!(
                "CRC-32 {:08x} ({} bytes) on disk, {:08x} ({} bytes) written",
                digest.0, digest.1, written.crc32, written.size
            )));
        }
        Ok(Ok(written))
    };
    let mut written = attempt(basis, checking);
    if let Ok(Err(why)) = &written {
        tracing::warn!("{why}");
        *made = Some(Made::full(why.clone()));
        full_at = reuse::unix_secs(SystemTime::now());
        written = attempt(None, None);
    }
    // A full attempt has nothing to check, so no second redo.
    let written = written.and_then(|w| {
        w.map_err(|why| BackupError::Io {
            action: "cannot make",
            path: partial.clone(),
            source: io::Error::other(why),
        })
    });
    let discard_sealed = |sealed: &Sealed| {
        if let Some(Ok(sealed)) = sealed {
            seal::discard(sealed);
        }
    };
    // A signal that came during the read-back stops the run here, before
    // the archive gets a name.
    let written = written.and_then(|written| match crate::interrupt::received() {
        Some(signal) => Err(BackupError::Interrupted(signal)),
        None => Ok(written),
    });
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            discard_sealed(&sealed);
            return Err(e);
        }
    };
    warnings.extend(written.warnings.iter().cloned());
    if let Some(made) = made.as_mut() {
        made.reused_files = written.reused_files;
        made.reused_bytes = written.reused_bytes;
        if let Some(from) = &made.reused_from {
            tracing::info!(
                files = written.reused_files,
                bytes = written.reused_bytes,
                "unchanged files copied compressed from {from}"
            );
        }
    }

    // The sidecar goes in first and the archive's rename last, so in the
    // local archive dir an archive under its name always has its sidecar.
    // A crash between the two leaves a lone sidecar, which the next run
    // removes; the other order could leave a lone archive, which no run
    // would ever list, keep or delete.
    let sidecar = archive_dir.join(name.sidecar_name());
    let line = manifest::sha256sum_line(&written.sha256, &name.file_name());
    // A second signal waits for the sidecar and the rename: it would
    // otherwise leave a lone sidecar for the next run to remove.
    let critical = crate::interrupt::Critical::enter();
    let published = durable::write_atomic(&sidecar, line.as_bytes())
        .map_err(|e| {
            if durable::is_disk_full(&e) {
                BackupError::DiskFull(archive_dir.to_path_buf())
            } else {
                io_err("cannot write", &sidecar)(e)
            }
        })
        .and_then(|()| {
            fs::rename(&partial, &final_path).map_err(io_err("cannot rename", &partial))
        });
    if let Err(e) = published {
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(&sidecar);
        discard_sealed(&sealed);
        return Err(e);
    }
    drop(critical);
    if let Err(e) = durable::fsync_dir(archive_dir) {
        discard_sealed(&sealed);
        return Err(io_err("cannot sync", archive_dir)(e));
    }
    tracing::info!(archive = %final_path.display(), bytes = written.size, sha256 = %written.sha256, "archive written and verified");
    // Without its index the next run is a full one, and says so; the
    // backup itself is whole either way.
    let index = reuse::Index {
        version: reuse::VERSION,
        archive: name.file_name(),
        archive_sha256: written.sha256.clone(),
        archive_size: written.size,
        full_at,
        files: written.indexed,
    };
    if let Err(e) = reuse::write_index(&reuse::index_path(archive_dir, &name), &index) {
        let warning = format!(
            "cannot write the member index of {}: {e}; the next backup will be a full one",
            name.file_name()
        );
        tracing::warn!("{warning}");
        warnings.push(warning);
    }
    Ok((
        Artifact {
            name,
            archive: final_path,
            sidecar,
            sha256: written.sha256,
            size: written.size,
        },
        written.files,
        sealed,
    ))
}

/// The CRC-32 and size of the archive at `path` as it is on disk
/// ([`inflate::crc_file`]), reporting the bytes read.
pub(super) fn read_back(path: &Path, size: u64, progress: &dyn Progress) -> io::Result<(u32, u64)> {
    let file = fs::File::open(path)?;
    progress.start(Phase::ReadBack, size);
    let result = (|| {
        let mut watch = OffsetWatch::new(&file, progress)?;
        inflate::crc_file(&file, || watch.update())
    })();
    progress.finish();
    result
}
