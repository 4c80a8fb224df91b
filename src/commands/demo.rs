//! `mss-backup demo` runs the real backup on a generated MSS data set in a
//! temp dir and verifies it; `mss-backup sample-data` writes such a set
//! where the tests and the bench want it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use mss_backup_core::backup::Plan;
use mss_backup_core::name::LATEST;
use mss_backup_core::status;
use mss_backup_core::{RetentionPolicy, verify};
use mss_backup_sample::{self as sample, SampleSpec};

use crate::backup_run::backup_with;
use crate::config;
use crate::display::human_bytes;
use crate::monitor::Monitor;

pub fn run(audio_mib: u64) -> Result<ExitCode> {
    let root = tempfile::Builder::new()
        .prefix("mss-backup-demo-")
        .tempdir()
        .context("cannot create a temp dir for the demo")?
        .keep();
    let project_dir = root.join("sound-machine");
    let data_dir = project_dir.join("cloud-data");
    let backup_dir = root.join("backups/mss");
    let sample = sample::generate(&data_dir, &SampleSpec { audio_mib, seed: 1 })
        .with_context(|| format!("cannot generate demo data in {}", data_dir.display()))?;
    println!(
        "Demo MSS data: {} ({} files, {}: a WAL-mode SQLite database with {} trackpacks, {} WAVs, exports, config, logs)",
        data_dir.display(),
        sample.files,
        human_bytes(sample.bytes),
        sample.trackpacks,
        sample.wavs
    );
    let plan = Plan {
        project_dir,
        data_dir: data_dir.clone(),
        backup_dir: backup_dir.clone(),
        retention: RetentionPolicy {
            keep: config::DEFAULT_RETENTION,
        },
        db_busy_timeout: Duration::from_secs(60),
        gz: Default::default(),
        shrink_guard: Some(config::DEFAULT_SHRINK_GUARD),
        encryption: None,
        full: Default::default(),
    };
    let code = backup_with(&plan, &[], Duration::ZERO, &Monitor::none(), false)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let latest = plan.archive_dir().join(LATEST);
    let verified = verify::verify(&latest, &root).context("verifying the demo backup")?;
    let name = verified
        .archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("Backup:   {}", verified.archive.display());
    println!("Latest:   {}", latest.display());
    println!(
        "Verified: sha256 {}, {} files match MANIFEST.sha256, database integrity_check ok",
        verified.sha256, verified.files
    );
    println!(
        "Status:   {}",
        backup_dir.join(status::STATUS_FILE).display()
    );
    println!("Log:      {}", backup_dir.join(status::LOG_FILE).display());
    println!();
    println!("Look inside:");
    println!("  tar -tzvf {} | head", latest.display());
    println!(
        "  (cd {} && sha256sum -c {name}.sha256)",
        plan.archive_dir().display()
    );
    println!(
        "  MSS_BACKUP_DATA_DIR={} MSS_BACKUP_DIR={} mss-backup status",
        data_dir.display(),
        backup_dir.display()
    );
    println!("Remove the demo: rm -rf {}", root.display());
    Ok(ExitCode::SUCCESS)
}

pub fn sample_data(dir: &Path, audio_mib: u64, seed: u64) -> Result<ExitCode> {
    let summary = sample::generate(dir, &SampleSpec { audio_mib, seed })
        .with_context(|| format!("cannot generate sample data in {}", dir.display()))?;
    println!(
        "{} files, {} bytes, {} WAVs, {} trackpacks in {}",
        summary.files,
        summary.bytes,
        summary.wavs,
        summary.trackpacks,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
