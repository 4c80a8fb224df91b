//! Several MSS machines sharing one offsite target (an S3 bucket, each
//! machine under `mss/<server id>/`): the table of machines that `list
//! --target s3` shows on a machine that does not know its own id (a new VM
//! whose data was lost), `status --fleet` for an operator with several
//! venues, and the choice of machine a restore makes on a new VM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Local;
use mss_backup_core::metrics::{FleetMachine, render_fleet};
use mss_backup_core::{Machine, Target};

use crate::config::{ConfigError, Settings, var_name};
use crate::display::{human_age, human_bytes};
use crate::{EXIT_FAILED, targets};

/// A machine's newest backup is stale when older than this (the nightly
/// run plus a couple of hours of slack), unless `--max-age` says otherwise.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

/// Prints one row per machine (JSON with `json`); returns how many are
/// stale: no complete backup, or the newest older than `max_age`.
fn print_machines(
    target: &dyn Target,
    machines: &[Machine],
    max_age: Duration,
    json: bool,
    series: &mut Vec<FleetMachine>,
) -> Result<usize> {
    let now = Local::now().naive_local();
    let max_age = chrono::TimeDelta::from_std(max_age).unwrap_or(chrono::TimeDelta::MAX);
    let stale = |m: &Machine| {
        m.backups
            .last()
            .is_none_or(|newest| now - newest.timestamp() > max_age)
    };
    let count = machines.iter().filter(|m| stale(m)).count();
    series.extend(machines.iter().map(|m| FleetMachine {
        target: target.name().to_string(),
        machine: m.id.clone(),
        newest_unix: m.backups.last().and_then(|n| {
            n.timestamp()
                .and_local_timezone(Local)
                .earliest()
                .map(|t| t.timestamp())
        }),
        backups: m.backups.len(),
        newest_size: m.newest_size,
        stale: stale(m),
    }));
    if json {
        let rows: Vec<serde_json::Value> = machines
            .iter()
            .map(|m| {
                let newest = m.backups.last();
                serde_json::json!({
                    "id": m.id,
                    "target": target.name(),
                    "newest": newest.map(|n| n.file_name()),
                    "created": newest.map(|n| n.timestamp().format("%Y-%m-%dT%H:%M:%S").to_string()),
                    "age_seconds": newest.map(|n| (now - n.timestamp()).num_seconds()),
                    "backups": m.backups.len(),
                    "size_bytes": m.newest_size,
                    "stale": stale(m),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(count);
    }
    println!("Machines on {}:", target.name());
    for m in machines {
        let mark = if stale(m) { "  STALE" } else { "" };
        match m.backups.last() {
            Some(newest) => println!(
                "  {:<20} {}  {:>8} old  {:>3} backups  {:>10}{mark}",
                m.id,
                newest.file_name(),
                human_age(now - newest.timestamp()),
                m.backups.len(),
                m.newest_size.map(human_bytes).unwrap_or_default(),
            ),
            None => println!("  {:<20} no complete backup{mark}", m.id),
        }
        if let Some(newest) = m.hidden.last() {
            println!(
                "  {:<20} {} hidden backups (deleted, kept as versions), newest {newest}",
                "",
                m.hidden.len()
            );
        }
    }
    if machines.is_empty() {
        println!("  none (nothing under mss/<server id>/)");
    }
    Ok(count)
}

/// `list --target KIND` on a machine that does not know its own place on
/// that target: the machines found there, or `None` where the target holds
/// one machine's backups.
pub fn list_machines(target: &dyn Target, json: bool) -> Result<Option<ExitCode>> {
    if target.knows_machine() {
        return Ok(None);
    }
    let Some(machines) = target.machines() else {
        return Ok(None);
    };
    let machines = machines?;
    print_machines(target, &machines, DEFAULT_MAX_AGE, json, &mut Vec::new())?;
    if !json {
        println!(
            "This machine has no server id (cloud-data/data/server_id.txt) to find its own backups by: restore one machine's with {}=mss/<id>/ (a restore brings server_id.txt back).",
            prefix_var()
        );
    }
    Ok(Some(ExitCode::SUCCESS))
}

/// `status --fleet`: every machine on each configured target that holds
/// several (today S3); exit 1 when any is stale, so a monitor can run it.
pub fn status(settings: &Settings, max_age: Option<Duration>, json: bool) -> Result<ExitCode> {
    let max_age = max_age.unwrap_or(DEFAULT_MAX_AGE);
    let mut stale = 0;
    let mut shown = 0;
    let mut series = Vec::new();
    for dest in targets::offsite(settings)? {
        let target = dest.target.as_ref();
        let Some(machines) = target.machines() else {
            continue;
        };
        stale += print_machines(target, &machines?, max_age, json, &mut series)?;
        shown += 1;
    }
    if shown == 0 {
        let switches: Vec<String> = targets::shared_kinds()
            .map(|(kind, _)| var_name(kind.switch))
            .collect();
        return Err(ConfigError(format!(
            "status --fleet needs a target that several machines share: set {} (with its endpoint and keys)",
            switches.join(" or ")
        ))
        .into());
    }
    // Beside the backup's own metrics file, never over it.
    if let Some(file) = settings.path("metrics_file")? {
        let fleet_file = file.with_file_name(format!(
            "{}_fleet.prom",
            file.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("mss_backup")
        ));
        mss_backup_core::durable::write_atomic(&fleet_file, render_fleet(&series).as_bytes())
            .with_context(|| {
                format!(
                    "cannot write the fleet metrics file {}",
                    fleet_file.display()
                )
            })?;
    }
    Ok(if stale > 0 {
        if !json {
            eprintln!(
                "{stale} machine(s) without a complete backup in the last {}",
                humantime(max_age)
            );
        }
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn humantime(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    if h * 3600 == d.as_secs() {
        format!("{h} h")
    } else {
        format!("{} min", d.as_secs() / 60)
    }
}

/// For a restore on a machine that does not know its own place on the
/// target: the one machine there, or a refusal that names each and how to
/// choose (nothing is written).
pub fn only_machine(target: Box<dyn Target>, from: &str) -> Result<Box<dyn Target>> {
    if target.knows_machine() {
        return Ok(target);
    }
    let Some(machines) = target.machines() else {
        return Ok(target);
    };
    let machines: Vec<Machine> = machines?
        .into_iter()
        .filter(|m| !m.backups.is_empty() || !m.hidden.is_empty())
        .collect();
    match machines.as_slice() {
        [] => Err(ConfigError(format!(
            "--from {from}: no machine has a complete backup on {} (under mss/<server id>/); set {} if the backups are elsewhere",
            target.name(),
            prefix_var()
        ))
        .into()),
        [one] => {
            eprintln!(
                "No server id here; {} holds one machine's backups, {}: restoring those",
                target.name(),
                one.id
            );
            target.for_machine(&one.id).ok_or_else(|| {
                anyhow::anyhow!("{} cannot be read at machine {}", target.name(), one.id)
            })
        }
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|m| {
                    let newest = m.backups.last().map(|n| n.file_name()).unwrap_or_default();
                    format!("{} (newest {newest})", m.id)
                })
                .collect();
            Err(ConfigError(format!(
                "--from {from}: this machine has no server id, and {} holds the backups of {} machines: {}; choose one with {}=mss/<id>/ (nothing was written)",
                target.name(),
                several.len(),
                list.join(", "),
                prefix_var()
            ))
            .into())
        }
    }
}

/// The variable that chooses one machine's backups on a shared target
/// (`MSS_BACKUP_S3_PREFIX`).
fn prefix_var() -> String {
    targets::shared_kinds()
        .map(|(_, key)| var_name(key))
        .collect::<Vec<_>>()
        .join(" or ")
}
