//! One backup run as the operator sees it: the core plan built from the
//! settings, the run with monitoring and progress bars, and the summary
//! on stderr. `backup` (the nightly run) and `demo` both go through it, so
//! the demo shows exactly what a real night prints.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use mss_backup_core::RetentionPolicy;
use mss_backup_core::Target;
use mss_backup_core::backup::{self, Destination, Plan};
use mss_backup_core::lock::LockError;
use mss_backup_core::reuse::{DEFAULT_FULL_EVERY, FullPolicy};
use mss_backup_core::status::{self, Outcome, RunStatus};
use mss_backup_target_local::local;

use crate::config::{self, ConfigError, Settings};
use crate::display::human_bytes;
use crate::monitor::Monitor;
use crate::{EXIT_FAILED, EXIT_LOCKED};

pub fn plan(settings: &Settings) -> Result<Plan, ConfigError> {
    let shrink_guard = match settings.raw("shrink_guard")? {
        Some(raw) => config::parse_shrink_guard(&raw.value, &raw.what)?,
        None => Some(config::DEFAULT_SHRINK_GUARD),
    };
    Ok(Plan {
        project_dir: settings.project_dir.clone(),
        data_dir: settings.data_dir.clone(),
        backup_dir: settings.backup_dir.clone(),
        retention: RetentionPolicy {
            keep: settings.retention,
        },
        db_busy_timeout: Duration::from_secs(60),
        gz: Default::default(),
        shrink_guard,
        encryption: crate::crypt::encryption(settings)?,
        full: FullPolicy {
            now: false,
            every: match settings.raw("full_every")? {
                Some(raw) => config::parse_full_every(&raw.value, &raw.what)?,
                None => DEFAULT_FULL_EVERY,
            },
        },
    })
}

/// One backup with monitoring and, at a terminal, progress bars. `json`
/// prints the status document on stdout; `--quiet` drops the summary of a
/// good run (a failure is still reported on stderr, for cron's mail).
pub fn backup_with(
    plan: &Plan,
    offsite: &[Destination],
    network_wait: Duration,
    monitor: &Monitor,
    json: bool,
) -> Result<ExitCode> {
    crate::logging::to_backup_log(&plan.backup_dir)
        .with_context(|| format!("cannot open the log in {}", plan.backup_dir.display()))?;
    let local = local(plan.archive_dir());
    let before = crate::monitor::Before::capture(&plan.backup_dir);
    let progress = crate::progress::for_stderr();
    let started = || monitor.started();
    let network = crate::network::NetworkWait::new(network_wait);
    let preflight = |target: &dyn Target| network.preflight(target);
    let hooks = backup::Hooks {
        started: &started,
        progress: progress.as_ref(),
        preflight: &preflight,
    };
    let report = match backup::run_with(plan, &local, offsite, &hooks) {
        Ok(report) => report,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_LOCKED));
        }
        Err(e) => {
            monitor.failed_early(&e.to_string());
            return Err(e.into());
        }
    };
    monitor.finished(
        &report,
        before.previous.as_ref(),
        &plan.backup_dir.join(status::LOG_FILE),
        before.log_start,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if let Some(signal) = crate::interrupted::received()
        && report.status != Outcome::Success
    {
        // The status file and the monitor have the run as failed, with
        // this line as its error; the terminal gets the line alone.
        let outcome = report
            .error
            .as_deref()
            .and_then(|e| e.strip_prefix(&signal.to_string()))
            .map(|rest| rest.trim_start_matches([';', ':', ' ']))
            .unwrap_or("see backup.log");
        return Ok(crate::interrupted::report(
            signal,
            &plan.backup_dir,
            outcome,
        ));
    }
    if !crate::progress::quiet() || report.status != Outcome::Success {
        print_summary(plan, &report);
    }
    Ok(exit_for(report.status))
}

fn exit_for(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Success | Outcome::Skipped => ExitCode::SUCCESS,
        Outcome::Failure => ExitCode::from(EXIT_FAILED),
    }
}

fn print_summary(plan: &Plan, report: &RunStatus) {
    let local_name = local(plan.archive_dir()).name().to_string();
    let local_ok = report
        .targets
        .iter()
        .any(|t| t.name == local_name && t.status == Outcome::Success);
    let offsite_failed: Vec<String> = report
        .targets
        .iter()
        .filter(|t| t.name != local_name && t.status == Outcome::Failure)
        .map(|t| {
            // The detail often starts with the target's name already.
            let detail = t
                .detail
                .strip_prefix(&format!("{}: ", t.name))
                .unwrap_or(&t.detail);
            format!("offsite {} FAILED: {detail}", t.name)
        })
        .collect();
    // The backup itself is there; "Backup FAILED" would send the operator
    // looking for a problem the local disk does not have. The headline
    // then carries each failed copy's reason, and the lines below only the
    // other targets, so each reason is said once.
    let only_offsite_failed = report.archive.is_some() && local_ok && !offsite_failed.is_empty();
    match (&report.archive, report.status) {
        (Some(_), Outcome::Failure) if only_offsite_failed => {
            eprintln!("Backup OK locally; {}", offsite_failed.join("; "))
        }
        (Some(archive), Outcome::Success) => eprintln!(
            "Backup OK: {} ({}, {} files, {:.1} s)",
            plan.archive_dir().join(archive).display(),
            human_bytes(report.size_bytes.unwrap_or(0)),
            report.files,
            report.duration_seconds
        ),
        _ => eprintln!(
            "Backup FAILED: {}",
            report
                .error
                .as_deref()
                .unwrap_or("unknown error (see backup.log)")
        ),
    }
    if report.archive.is_some()
        && let Some(line) = report.reuse.as_ref().and_then(crate::display::made_line)
    {
        eprintln!("  {line}");
    }
    for target in &report.targets {
        if only_offsite_failed && target.status == Outcome::Failure {
            continue;
        }
        let word = match target.status {
            Outcome::Success => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Failure => "FAILED",
        };
        eprintln!("  {} {word}: {}", target.name, target.detail);
    }
    for warning in &report.warnings {
        eprintln!("  warning: {warning}");
    }
}
