//! One function per subcommand: load what it needs, call core, print.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Local};
use mss_backup_core::backup::{self, Destination, Plan};
use mss_backup_core::drill::{self, Drill, DrillResult};
use mss_backup_core::lock::LockError;
use mss_backup_core::name::{LATEST, LATEST_AGE};
use mss_backup_core::seal;
use mss_backup_core::status::{self, Outcome, RunStatus};
use mss_backup_core::{RetentionPolicy, Target, verify};
use mss_backup_sample::{self as sample, SampleSpec};
use mss_backup_target_local::{DirTarget, local};

use crate::cli::{Cli, Command, ConfigCommand, Global, ScheduleCommand, UsbCommand};
use crate::config::{self, ConfigError, Overrides, Settings};
use crate::monitor::Monitor;
use crate::{EXIT_FAILED, EXIT_LOCKED};

pub fn run(cli: Cli) -> Result<ExitCode> {
    crate::progress::set_quiet(cli.global.quiet);
    let command = cli.command.unwrap_or(Command::Backup { json: false });
    match command {
        Command::SampleData {
            dir,
            audio_mib,
            seed,
        } => sample_data(&dir, audio_mib, seed),
        Command::Demo { audio_mib } => demo(audio_mib),
        Command::Doctor => Ok(crate::doctor::run(&cli.global)),
        Command::Completions { shell } => crate::manual::completions(shell),
        Command::Man => crate::manual::man(),
        Command::Usb {
            command: UsbCommand::Init { path, label },
        } => crate::offsite_cmd::usb_init(&path, &label),
        command => {
            if matches!(
                command,
                Command::Backup { .. }
                    | Command::Verify { .. }
                    | Command::Restore { .. }
                    | Command::Copy { .. }
            ) {
                crate::interrupted::install();
            }
            let settings = load_settings(&cli.global)?;
            match command {
                Command::Backup { json } => run_backup(&settings, json),
                Command::List { json, target } => list_on(&settings, &target, json),
                Command::Status {
                    json,
                    max_age,
                    fleet: true,
                } => {
                    let max_age = max_age
                        .as_deref()
                        .map(|text| {
                            parse_duration(text).ok_or_else(|| {
                                ConfigError(format!(
                                    "--max-age {text} is not valid: use a duration like 26h, 90m or 2d"
                                ))
                            })
                        })
                        .transpose()?;
                    crate::fleet::status(&settings, max_age, json)
                }
                Command::Status { json, max_age, .. } => {
                    show_status(&settings, json, max_age.as_deref())
                }
                Command::Verify {
                    from: Some(from), ..
                } => verify_offsite(&settings, &from),
                Command::Verify { archive, .. } => verify_archive(&settings, archive.as_deref()),
                Command::Restore {
                    what,
                    from,
                    dry_run,
                    yes,
                    no_stop,
                } => crate::restore::run(
                    &settings,
                    &crate::restore::Options {
                        mode: what.mode(),
                        from,
                        dry_run,
                        yes,
                        no_stop,
                    },
                ),
                Command::Config { command: None } => show_config(&settings),
                Command::Config {
                    command: Some(ConfigCommand::Init { path }),
                } => crate::manual::config_init(&settings, path.as_deref()),
                Command::Config {
                    command: Some(ConfigCommand::Reference),
                } => {
                    print!("{}", crate::manual::settings_reference());
                    Ok(ExitCode::SUCCESS)
                }
                Command::Keygen { path } => crate::crypt::keygen(&settings, path.as_deref()),
                Command::Schedule { command } => schedule(&settings, command),
                Command::Copy { target, archive } => {
                    crate::offsite_cmd::copy(&settings, &target, archive.as_deref())
                }
                Command::Demo { .. }
                | Command::SampleData { .. }
                | Command::Usb { .. }
                | Command::Doctor
                | Command::Completions { .. }
                | Command::Man => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

fn schedule(settings: &Settings, command: ScheduleCommand) -> Result<ExitCode> {
    match command {
        ScheduleCommand::Install { at, replace, drill } => crate::schedule::install(
            settings,
            &config::process_env(),
            &at,
            replace,
            drill.as_deref(),
        )?,
        ScheduleCommand::Remove => crate::schedule::remove(settings)?,
        ScheduleCommand::Status => {
            if !crate::schedule::status(settings)? {
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn load_settings(global: &Global) -> Result<Settings> {
    let mut flags = Overrides::new();
    for (key, value) in [
        ("project_dir", &global.project_dir),
        ("data_dir", &global.data_dir),
        ("dir", &global.backup_dir),
        ("retention", &global.retention),
    ] {
        if let Some(value) = value {
            flags.insert(key, value.clone());
        }
    }
    Ok(Settings::load(
        &config::process_env(),
        &flags,
        global.config.as_deref(),
    )?)
}

pub(crate) fn plan(settings: &Settings) -> Result<Plan, ConfigError> {
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
    })
}

fn run_backup(settings: &Settings, json: bool) -> Result<ExitCode> {
    let offsite =
        crate::network::waiting(crate::targets::offsite(settings)?, network_wait(settings)?);
    let plan = plan(settings)?;
    let monitor = Monitor::from_settings(settings)?;
    check_backup_dir_owner(settings)?;
    backup_with(&plan, &offsite, &monitor, json)
}

/// `MSS_BACKUP_NETWORK_WAIT`: how long the offsite copies wait for a
/// network that is not up yet (see `network`).
fn network_wait(settings: &Settings) -> Result<Duration, ConfigError> {
    match settings.raw("network_wait")? {
        Some(raw) => parse_duration(&raw.value).ok_or_else(|| {
            ConfigError(format!(
                "{} is not valid: use a duration like 2m, 90s, or 0s for no wait",
                raw.what
            ))
        }),
        None => Ok(crate::network::DEFAULT_WAIT),
    }
}

/// Takes the run lock for a backup-dir command; `None` when another run
/// holds it, after saying so (the caller exits 75).
pub(crate) fn take_lock(backup_dir: &Path) -> Result<Option<mss_backup_core::lock::RunLock>> {
    match mss_backup_core::lock::acquire(backup_dir) {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ LockError::Held { .. }) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses, before anything is written, a backup dir that belongs to
/// another user or that this user cannot reach, and root creating one for
/// another user's data, unless `MSS_BACKUP_ALLOW_OTHER_OWNER` says it is
/// meant.
pub(crate) fn check_backup_dir_owner(settings: &Settings) -> Result<(), ConfigError> {
    check_dir_use(settings, backup::DirUse::Write)
}

/// Refuses, before anything is read, a backup dir this user cannot read,
/// with the owner and the fix (a bare `Permission denied`, or "no backups",
/// would not be true).
pub(crate) fn check_backup_dir_readable(settings: &Settings) -> Result<(), ConfigError> {
    check_dir_use(settings, backup::DirUse::Read)
}

fn check_dir_use(settings: &Settings, usage: backup::DirUse) -> Result<(), ConfigError> {
    let allow = settings.flag("allow_other_owner")?.unwrap_or(false);
    backup::check_dir_owner(&settings.backup_dir, &settings.data_dir, usage, allow)
        .map_err(|e| ConfigError(e.to_string()))
}

/// One backup with monitoring and, at a terminal, progress bars. `json`
/// prints the status document on stdout; `--quiet` drops the summary of a
/// good run (a failure is still reported on stderr, for cron's mail).
fn backup_with(
    plan: &Plan,
    offsite: &[Destination],
    monitor: &Monitor,
    json: bool,
) -> Result<ExitCode> {
    crate::logging::to_backup_log(&plan.backup_dir)
        .with_context(|| format!("cannot open the log in {}", plan.backup_dir.display()))?;
    let local = local(plan.archive_dir());
    let before = crate::monitor::Before::capture(&plan.backup_dir);
    let progress = crate::progress::for_stderr();
    let started = || monitor.started();
    let hooks = backup::Hooks {
        started: &started,
        progress: progress.as_ref(),
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

fn archive_target(settings: &Settings) -> DirTarget {
    local(backup::archive_dir(&settings.backup_dir))
}

fn list(settings: &Settings, json: bool) -> Result<ExitCode> {
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

/// `list [--target local|usb|rsync|s3]`. An offsite target's complete
/// backups are listed newest first by their names alone (what every target
/// can tell).
fn list_on(settings: &Settings, which: &str, json: bool) -> Result<ExitCode> {
    let Some(kind) = crate::targets::kind(which) else {
        return list(settings, json);
    };
    let enabled = kind.enabled(settings, &format!("list --target {which}"))?;
    let target = enabled.destination.target;
    if let Some(code) = crate::fleet::list_machines(target.as_ref(), json)? {
        return Ok(code);
    }
    let mut names = target.list()?;
    names.reverse();
    let now = Local::now().naive_local();
    if json {
        let rows: Vec<serde_json::Value> = names
            .iter()
            .map(|name| {
                serde_json::json!({
                    "name": name.file_name(),
                    "target": target.name(),
                    "created": name.timestamp().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "age_seconds": (now - name.timestamp()).num_seconds(),
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
    for name in &names {
        println!(
            "{}  {}",
            name.file_name(),
            human_age(now - name.timestamp())
        );
    }
    Ok(ExitCode::SUCCESS)
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

/// `26h`, `90m`, `2d`, `45s`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

pub(crate) fn resolve_archive(settings: &Settings, archive: Option<&str>) -> PathBuf {
    let archive_dir = backup::archive_dir(&settings.backup_dir);
    match archive {
        None => latest_link(&archive_dir),
        Some(a) if a.contains('/') => PathBuf::from(a),
        Some(name) => archive_dir.join(name),
    }
}

/// The `latest` link in `archive_dir`: `mss-backup-latest.tar.gz`, or its
/// `.age` twin when the local backups are encrypted.
pub(crate) fn latest_link(archive_dir: &Path) -> PathBuf {
    let plain = archive_dir.join(LATEST);
    let sealed = archive_dir.join(LATEST_AGE);
    if fs::symlink_metadata(&plain).is_err() && fs::symlink_metadata(&sealed).is_ok() {
        sealed
    } else {
        plain
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
    let (kind_name, name) = from.split_once(':').unwrap_or((from, ""));
    let kind = crate::targets::kind(kind_name).ok_or_else(|| {
        ConfigError(format!(
            "--from {from}: no such target (use s3:NAME, usb:NAME or rsync:NAME, NAME being latest or a backup's name)"
        ))
    })?;
    if name.is_empty() {
        return Err(ConfigError(format!(
            "--from {from} names no backup (use {kind_name}:latest or {kind_name}:mss-backup-YYYY-MM-DD_HHMMSS.tar.gz)"
        ))
        .into());
    }
    let target = kind
        .enabled(settings, &format!("verify --from {from}"))?
        .destination
        .target;
    check_backup_dir_owner(settings)?;
    mss_backup_core::durable::create_private_dir(&settings.backup_dir)
        .with_context(|| format!("cannot create {}", settings.backup_dir.display()))?;
    // Under the run lock, so no backup's retention deletes the copy while
    // it is being read.
    let Some(_lock) = take_lock(&settings.backup_dir)? else {
        return Ok(ExitCode::from(EXIT_LOCKED));
    };
    crate::logging::to_backup_log(&settings.backup_dir)
        .with_context(|| format!("cannot open the log in {}", settings.backup_dir.display()))?;
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
    target.preflight()?;
    let names = target.list()?;
    let wanted = mss_backup_core::name::find(&names, name);
    let Some(wanted) = wanted else {
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

fn verify_archive(settings: &Settings, archive: Option<&str>) -> Result<ExitCode> {
    check_archive(settings, archive, &mut String::new())
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
    let path = resolve_archive(settings, archive);
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

fn show_config(settings: &Settings) -> Result<ExitCode> {
    let rows = [
        ("project_dir", settings.project_dir.display().to_string()),
        ("data_dir", settings.data_dir.display().to_string()),
        ("dir", settings.backup_dir.display().to_string()),
        ("retention", settings.retention.to_string()),
    ];
    let core_keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
    for (key, value) in &rows {
        println!("{key:<12} {value:<50} ({})", settings.origin(key));
    }
    // Every other setting that is set, secrets redacted.
    for key in settings.keys() {
        if core_keys.contains(&key.as_str()) {
            continue;
        }
        let Some(raw) = settings.raw(&key)? else {
            continue;
        };
        let value = crate::registry::shown_value(&key, &raw.value);
        println!("{key:<12} {value:<50} ({})", raw.origin);
    }
    match &settings.file {
        Some(file) => println!("config file  {}", file.display()),
        None => println!("config file  none (set {} to use one)", config::CONFIG_VAR),
    }
    match &settings.env_file {
        Some(file) => println!(
            "env file     {} (written by `mss-backup schedule install`)",
            file.display()
        ),
        None => println!(
            "env file     none (`mss-backup schedule install` writes ~/{})",
            config::ENV_FILE
        ),
    }
    println!(
        "targets      local ({})",
        backup::archive_dir(&settings.backup_dir).display()
    );
    for line in crate::targets::describe(settings)? {
        println!("             {line}");
    }
    println!("encryption   {}", crate::crypt::describe(settings)?);
    Ok(ExitCode::SUCCESS)
}

fn sample_data(dir: &Path, audio_mib: u64, seed: u64) -> Result<ExitCode> {
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

fn demo(audio_mib: u64) -> Result<ExitCode> {
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
    };
    let code = backup_with(&plan, &[], &Monitor::none(), false)?;
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

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

pub(crate) fn human_age(age: chrono::TimeDelta) -> String {
    let secs = age.num_seconds();
    match secs {
        s if s < 0 => "in the future (clock change?)".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
