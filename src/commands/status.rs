//! `mss-backup status [--json] [--max-age D] [--fleet]`: the last run as
//! `last_backup.json` has it, with each target's last drill; exit 1 when it
//! failed or is too old, for monitoring. `--fleet` is every machine on a
//! shared target (see `fleet`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use mss_backup_core::drill::{self, DrillResult};
use mss_backup_core::status::{self, Outcome};

use crate::EXIT_FAILED;
use crate::config::{ConfigError, Settings, parse_duration};
use crate::display::{human_age, human_bytes};
use crate::guard::check_backup_dir_readable;

/// `status`, or `status --fleet`.
pub fn run(
    settings: &Settings,
    json: bool,
    max_age: Option<&str>,
    fleet: bool,
) -> Result<ExitCode> {
    if fleet {
        let max_age = max_age
            .map(|text| {
                parse_duration(text).ok_or_else(|| {
                    ConfigError(format!(
                        "--max-age {text} is not valid: use a duration like 26h, 90m or 2d"
                    ))
                })
            })
            .transpose()?;
        return crate::fleet::status(settings, max_age, json);
    }
    show_status(settings, json, max_age)
}

fn show_status(settings: &Settings, json: bool, max_age: Option<&str>) -> Result<ExitCode> {
    let max_age = max_age
        .map(|text| {
            parse_duration(text).ok_or_else(|| {
                ConfigError(format!(
                    "--max-age {text} is not valid: use a number with a unit, like 26h, 90m or 2d"
                ))
            })
        })
        .transpose()?;
    check_backup_dir_readable(settings)?;
    let status_file = settings.backup_dir.join(status::STATUS_FILE);
    let read = status::read(&settings.backup_dir)
        .with_context(|| format!("cannot read {}", status_file.display()))?;
    let Some(report) = read else {
        eprintln!(
            "No backup has run yet: {} does not exist",
            settings.backup_dir.join(status::STATUS_FILE).display()
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    let drills_file = settings.backup_dir.join(drill::DRILLS_FILE);
    let drills = drill::read(&settings.backup_dir)
        .with_context(|| format!("cannot read {}", drills_file.display()))?;
    if json {
        // The status document, with each target's last drill beside it
        // (kept in drills.json, which backups do not rewrite).
        let mut document = serde_json::to_value(&report)?;
        if let Some(fields) = document.as_object_mut() {
            fields.insert("drills".into(), serde_json::to_value(&drills)?);
        }
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        let word = match report.status {
            Outcome::Success => "success",
            Outcome::Skipped => "skipped",
            Outcome::Failure => "failure",
        };
        println!("Last backup: {word}, finished {}", report.finished_at);
        if let Some(archive) = &report.archive {
            println!(
                "  archive: {archive} ({})",
                human_bytes(report.size_bytes.unwrap_or(0))
            );
        }
        if report.archive.is_some()
            && let Some(line) = report.reuse.as_ref().and_then(crate::display::made_line)
        {
            println!("  made: {line}");
        }
        if let Some(error) = &report.error {
            println!("  error: {error}");
        }
        for target in &report.targets {
            println!("  {}: {:?} — {}", target.name, target.status, target.detail);
        }
        match report.encrypted_for {
            Some(n) => println!(
                "  encryption: copies encrypted with age to {n} recipient{}",
                if n == 1 { "" } else { "s" }
            ),
            None => println!("  encryption: none in this run"),
        }
        for warning in &report.warnings {
            println!("  warning: {warning}");
        }
        for held in &report.shrink_guard.kept {
            println!(
                "  shrink guard: keeping {} ({} files, {}) beyond retention: a later backup held far less (see MSS_BACKUP_SHRINK_GUARD)",
                held.archive,
                held.files,
                human_bytes(held.size_bytes)
            );
        }
        if drills.is_empty() {
            println!(
                "  drills: none yet (`mss-backup verify --from KIND:latest` reads an offsite copy back)"
            );
        }
        for (target, drill) in &drills {
            let word = match drill.result {
                DrillResult::Success => "ok",
                DrillResult::Failure => "FAILED",
            };
            println!(
                "  drill {target}: {word}, finished {}, {} — {}",
                drill.finished_at,
                drill.backup.as_deref().unwrap_or("no backup read"),
                drill.detail
            );
        }
    }
    if report.status != Outcome::Success {
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if let Some(max_age) = max_age {
        let finished = DateTime::parse_from_rfc3339(&report.finished_at).with_context(|| {
            format!(
                "finished_at {:?} in last_backup.json is not a time",
                report.finished_at
            )
        })?;
        let age = Local::now().signed_duration_since(finished);
        if age.to_std().map(|a| a > max_age).unwrap_or(false) {
            eprintln!(
                "The last backup is {} old, more than the allowed {}",
                human_age(age),
                human_age(chrono::TimeDelta::from_std(max_age).unwrap_or_default())
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    Ok(ExitCode::SUCCESS)
}
