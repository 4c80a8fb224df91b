//! `mss-backup verify [ARCHIVE]` checks a local backup end to end;
//! `mss-backup verify --from KIND:NAME` is an offsite drill: the copy is
//! read back from the target and checked the same way, and the result kept
//! in `drills.json` for `status`.

use std::fs;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Local;
use mss_backup_core::drill::{self, Drill, DrillResult};
use mss_backup_core::{Target, seal, verify};

use crate::config::Settings;
use crate::guard::{RunGuard, check_backup_dir_readable};
use crate::source::{Source, find_on, local_archive};
use crate::{EXIT_FAILED, EXIT_LOCKED};

/// `verify [ARCHIVE]` or `verify --from KIND:NAME`.
pub fn run(settings: &Settings, archive: Option<&str>, from: Option<&str>) -> Result<ExitCode> {
    match from {
        Some(from) => verify_offsite(settings, from),
        None => check_archive(settings, archive, &mut String::new()),
    }
}

/// `verify --from KIND:NAME`: an offsite drill. A copy nobody has read back
/// is a hope, not a backup: the target's copy is fetched into a private
/// temp dir beside the archive dir (0700, removed afterwards, on failure
/// and on Ctrl-C too), checked against that target's sidecar as it is
/// fetched, then verified like a local archive (every member against the
/// manifest, the database's integrity_check, decrypted with
/// MSS_BACKUP_IDENTITY_FILE where encrypted). Nothing is added to archive/.
fn verify_offsite(settings: &Settings, from: &str) -> Result<ExitCode> {
    let (kind, name) = Source::offsite(from)?;
    let target = kind
        .enabled(settings, &format!("verify --from {from}"))?
        .destination
        .target;
    // Under the run lock, so no backup's retention deletes the copy while
    // it is being read.
    let Some(_guard) = RunGuard::take(settings)? else {
        return Ok(ExitCode::from(EXIT_LOCKED));
    };
    let mut drill = Drill {
        finished_at: String::new(),
        backup: None,
        result: DrillResult::Failure,
        detail: String::new(),
    };
    let result = drill_target(settings, target.as_ref(), name, &mut drill);
    let code = match &result {
        Ok(code) => *code,
        Err(e) => {
            drill.detail = format!("{e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    };
    // An interrupted drill says nothing about the copy: not recorded.
    if code != ExitCode::SUCCESS && crate::interrupted::received().is_some() {
        return result;
    }
    drill.finished_at = Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    drill.result = if code == ExitCode::SUCCESS {
        DrillResult::Success
    } else {
        DrillResult::Failure
    };
    let backup = drill.backup.as_deref().unwrap_or("no backup");
    match drill.result {
        DrillResult::Success => tracing::info!(
            "drill of {}: {backup} reads back whole: {}",
            target.name(),
            drill.detail
        ),
        DrillResult::Failure => tracing::error!(
            "drill of {} FAILED ({backup}): {}",
            target.name(),
            drill.detail
        ),
    }
    // A drill whose result `status` cannot show has not told anyone
    // anything: not being able to record it is an error.
    drill::record(&settings.backup_dir, target.name(), drill).with_context(|| {
        format!(
            "cannot record the drill in {}",
            settings.backup_dir.join(drill::DRILLS_FILE).display()
        )
    })?;
    result
}

/// The drill proper, under the lock: finds the backup on `target`, fetches
/// it into a private temp dir and checks it, filling in `drill` as it goes.
fn drill_target(
    settings: &Settings,
    target: &dyn Target,
    name: &str,
    drill: &mut Drill,
) -> Result<ExitCode> {
    let Some(wanted) = find_on(target, name)? else {
        drill.detail = format!("{}: no backup named {name}", target.name());
        eprintln!("Verify FAILED: {}", drill.detail);
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    drill.backup = Some(wanted.to_string());
    let scratch = tempfile::Builder::new()
        .prefix(".mss-backup-drill-")
        .tempdir_in(&settings.backup_dir)
        .with_context(|| {
            format!(
                "cannot make a temp dir in {}",
                settings.backup_dir.display()
            )
        })?;
    eprintln!("Fetching {wanted} from {} for a check ...", target.name());
    let fetched = match target.get(&wanted, scratch.path()) {
        Ok(path) => path,
        Err(e) => {
            if let Some(signal) = crate::interrupted::received() {
                return Ok(crate::interrupted::report(
                    signal,
                    &settings.backup_dir,
                    "the drill stopped while fetching; its temp copy was removed",
                ));
            }
            drill.detail = e.to_string();
            eprintln!("Verify FAILED: {e}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let path = fetched.display().to_string();
    let code = check_archive(settings, Some(&path), &mut drill.detail)?;
    // The temp dir is gone after the drill; its path would only confuse.
    drill.detail = drill
        .detail
        .replace(&format!("{}/", scratch.path().display()), "");
    if code == ExitCode::SUCCESS {
        println!("Drill OK: {wanted} on {} reads back whole", target.name());
    }
    Ok(code)
}

/// [`verify_archive`], leaving in `detail` what was checked or what was
/// wrong, for a drill's record.
fn check_archive(
    settings: &Settings,
    archive: Option<&str>,
    detail: &mut String,
) -> Result<ExitCode> {
    // An archive named by its path may be anywhere (a stick, a download);
    // the others are in the backup dir, which must be readable.
    if !archive.is_some_and(|a| a.contains('/')) {
        check_backup_dir_readable(settings)?;
    }
    let path = local_archive(settings, archive);
    if let Err(e) = fs::metadata(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e).with_context(|| format!("cannot read {}", path.display()));
    }
    if !path.exists() {
        bail!(
            "Archive {} not found (run `mss-backup list` to see the backups)",
            path.display()
        );
    }
    // An encrypted archive: its sidecar is checked without a key; the rest
    // needs the identity, and is checked on a decrypted copy.
    let opened = if seal::is_encrypted(&path) {
        if settings.raw("identity_file")?.is_none() {
            return Ok(match verify::check_sidecar(&path) {
                Ok((path, _)) => {
                    *detail = "sha256 matches its checksum file; the contents are encrypted and were not checked (MSS_BACKUP_IDENTITY_FILE is not set)".into();
                    println!(
                        "Checked {}: sha256 matches its checksum file. Its contents are encrypted and were not checked (set MSS_BACKUP_IDENTITY_FILE to check every file and the database too)",
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => match crate::interrupted::received() {
                    Some(signal) => crate::interrupted::report(
                        signal,
                        &settings.backup_dir,
                        "verify stopped before the end; the archive is untouched",
                    ),
                    None => {
                        *detail = e.to_string();
                        eprintln!("Verify FAILED: {e}");
                        ExitCode::from(EXIT_FAILED)
                    }
                },
            });
        }
        let identities = crate::crypt::identities(settings, &path)?;
        match crate::crypt::open(settings, &path, &identities) {
            Ok(opened) => Some(opened),
            Err(e) => {
                if let Some(signal) = crate::interrupted::received() {
                    return Ok(crate::interrupted::report(
                        signal,
                        &settings.backup_dir,
                        "verify stopped while decrypting; the decrypted copy was removed, the archive is untouched",
                    ));
                }
                *detail = format!("{e:#}");
                eprintln!("Verify FAILED: {e:#}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    } else {
        None
    };
    let plain = opened
        .as_ref()
        .map_or(path.as_path(), |o| o.archive.as_path());
    let scratch = tempfile::Builder::new()
        .prefix("mss-backup-verify-")
        .tempdir()
        .context("cannot create a temp dir for verify")?;
    let progress = crate::progress::for_stderr();
    match verify::verify_with(plain, scratch.path(), progress.as_ref()) {
        Ok(v) => {
            *detail = format!(
                "sha256 matches its checksum file{}, {} files match MANIFEST.sha256, database integrity_check ok ({} pages, user_version {})",
                if opened.is_some() {
                    ", age decryption authenticated every chunk"
                } else {
                    ""
                },
                v.files,
                v.db.page_count,
                v.db.user_version
            );
            println!("Verified {}: {detail}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if let Some(signal) = crate::interrupted::received() {
                let decrypted = opened.is_some();
                drop(opened);
                drop(scratch);
                return Ok(crate::interrupted::report(
                    signal,
                    &settings.backup_dir,
                    if decrypted {
                        "verify stopped before the end; the decrypted copy was removed, the archive is untouched"
                    } else {
                        "verify stopped before the end; the archive is untouched"
                    },
                ));
            }
            *detail = e.to_string();
            eprintln!("Verify FAILED: {e}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}
