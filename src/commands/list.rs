//! `mss-backup list [--target KIND] [--json]`: the backups in the archive
//! dir, or on an offsite target (by their names alone, which every target
//! can tell), newest first.

use std::fs;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Local;
use mss_backup_core::Target;
use mss_backup_core::backup;
use mss_backup_target_local::{DirTarget, local};

use crate::config::Settings;
use crate::display::{human_age, human_bytes};
use crate::guard::check_backup_dir_readable;

/// `list [--target local|usb|rsync|s3]`. An offsite target's complete
/// backups are listed newest first by their names alone (what every target
/// can tell).
pub fn run(settings: &Settings, which: &str, json: bool) -> Result<ExitCode> {
    let Some(kind) = crate::targets::kind(which) else {
        return list_local(settings, json);
    };
    let enabled = kind.enabled(settings, &format!("list --target {which}"))?;
    let target = enabled.destination.target;
    if let Some(code) = crate::fleet::list_machines(target.as_ref(), json)? {
        return Ok(code);
    }
    // Listed and hidden (deleted, kept as versions), newest first.
    let mut names: Vec<(mss_backup_core::ArtifactName, bool)> = target
        .list()?
        .into_iter()
        .map(|n| (n, false))
        .chain(target.hidden()?.into_iter().map(|n| (n, true)))
        .collect();
    names.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    let now = Local::now().naive_local();
    if json {
        let rows: Vec<serde_json::Value> = names
            .iter()
            .map(|(name, hidden)| {
                serde_json::json!({
                    "name": name.file_name(),
                    "target": target.name(),
                    "created": name.timestamp().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "age_seconds": (now - name.timestamp()).num_seconds(),
                    "hidden": hidden,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if names.is_empty() {
        println!("No backups on {}", target.name());
        return Ok(ExitCode::SUCCESS);
    }
    for (name, hidden) in &names {
        let mark = if *hidden {
            "  hidden: deleted, kept as a version (restore --from can bring it back)"
        } else {
            ""
        };
        println!(
            "{}  {}{mark}",
            name.file_name(),
            human_age(now - name.timestamp())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list_local(settings: &Settings, json: bool) -> Result<ExitCode> {
    check_backup_dir_readable(settings)?;
    let target = archive_target(settings);
    // Only a dir that is not there holds no backups; one that cannot be
    // read is an error, never an empty list.
    let mut names = match fs::metadata(target.dir()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", target.dir().display()));
        }
        Ok(_) => target.list()?,
    };
    names.reverse();
    let now = Local::now().naive_local();
    let rows: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            let path = target.dir().join(name.file_name());
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            serde_json::json!({
                "name": name.file_name(),
                "path": path,
                "size_bytes": size,
                "created": name.timestamp().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "age_seconds": (now - name.timestamp()).num_seconds(),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No backups in {}", target.dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    for (name, row) in names.iter().zip(&rows) {
        let size = row["size_bytes"].as_u64().unwrap_or(0);
        println!(
            "{}  {:>10}  {}",
            name.file_name(),
            human_bytes(size),
            human_age(now - name.timestamp())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn archive_target(settings: &Settings) -> DirTarget {
    local(backup::archive_dir(&settings.backup_dir))
}
