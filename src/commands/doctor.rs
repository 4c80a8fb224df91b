//! `mss-backup doctor`: is this machine ready for tonight's backup? One
//! line per check, each saying what was checked, what was found and, when
//! it fails, the fix; the exit code is 1 if any check failed (78 if the
//! configuration does not even load). Checks only read, with two
//! exceptions: a target's preflight is the same as a backup's, so the rsync
//! target creates its remote directory as a backup would; and the S3
//! exposure check writes a probe object of its own and tries to delete it.
//!
//! A `!` line is worth knowing but fails nothing: a lock held right now
//! (a run is in progress), no backup yet, a last run that failed, no timer
//! yet (the README runs `doctor` before `schedule install`), a config file
//! other users can read or that is not this user's.

use std::fs::{self, File, TryLockError};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mss_backup_core::archive::{self, DB_PATH};
use mss_backup_core::lock::LOCK_FILE;
use mss_backup_core::status::{self, Outcome};
use mss_backup_core::{backup, durable, snapshot};

use crate::cli::Global;
use crate::config::Settings;
use crate::display::human_bytes;
use crate::monitor::Monitor;
use crate::schedule;
use crate::{EXIT_CONFIG, EXIT_FAILED};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ok,
    Note,
    Fail,
}

/// Prints one line per check and tallies the failures.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, mark: Mark, name: &str, detail: impl AsRef<str>) {
        let sign = match mark {
            Mark::Ok => "✓",
            Mark::Note => "!",
            Mark::Fail => {
                self.failed += 1;
                "✗"
            }
        };
        println!("{sign} {name:<12} {}", detail.as_ref());
    }
}

/// Runs every check; see the module docs.
pub fn run(global: &Global) -> ExitCode {
    let mut report = Report::default();
    let settings = match super::load_settings(global) {
        Ok(settings) => settings,
        Err(e) => {
            report.line(Mark::Fail, "config", format!("{e:#}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let targets = crate::targets::offsite(&settings);
    let monitor = Monitor::from_settings(&settings);
    let plan = crate::backup_run::plan(&settings);
    let config_problem = [
        targets.as_ref().err().map(ToString::to_string),
        monitor.as_ref().err().map(ToString::to_string),
        plan.as_ref().err().map(ToString::to_string),
    ]
    .into_iter()
    .flatten()
    .next();
    match config_problem {
        Some(problem) => report.line(Mark::Fail, "config", problem),
        None => report.line(Mark::Ok, "config", config_sources(&settings)),
    }
    check_env_file(&mut report, &settings);
    check_config_file(&mut report, &settings);
    let data_bytes = check_data(&mut report, &settings);
    check_database(&mut report, &settings);
    // A backup with encryption writes an encrypted copy beside the archive
    // when there is an offsite target or the local copies are encrypted:
    // the same rule the backup's own free-space check follows.
    let sealed = match (&plan, &targets) {
        (Ok(plan), Ok(targets)) => plan
            .encryption
            .as_ref()
            .is_some_and(|e| e.local || !targets.is_empty()),
        _ => false,
    };
    check_backup_dir(&mut report, &settings, data_bytes, sealed);
    check_lock(&mut report, &settings.backup_dir);
    if let Ok(targets) = &targets {
        for dest in targets {
            let target = dest.target.as_ref();
            match target.preflight() {
                Ok(()) => report.line(
                    Mark::Ok,
                    "target",
                    format!("{} is reachable", target.name()),
                ),
                Err(e) => report.line(Mark::Fail, "target", e.to_string()),
            }
            match target.exposure() {
                Some(Ok(found)) if found.safe => report.line(Mark::Ok, "exposure", found.words),
                Some(Ok(found)) => report.line(Mark::Note, "exposure", found.words),
                Some(Err(e)) => report.line(Mark::Note, "exposure", format!("not known: {e}")),
                None => {}
            }
        }
    }
    check_encryption(
        &mut report,
        &settings,
        targets.as_ref().is_ok_and(|t| !t.is_empty()),
    );
    if let Ok(monitor) = &monitor {
        check_monitor(&mut report, monitor);
    }
    check_timer(&mut report, &settings);
    check_timer_binary(&mut report, &settings);
    check_last_run(&mut report, &settings);
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!(
            "{} check{} failed",
            report.failed,
            if report.failed == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_FAILED)
    }
}

fn config_sources(settings: &Settings) -> String {
    let file = settings
        .file
        .as_ref()
        .map_or_else(|| "no config file".to_string(), |f| f.display().to_string());
    let env = settings.env_file.as_ref().map_or_else(
        || "no env file".to_string(),
        |f| format!("env file {}", f.display()),
    );
    format!("loaded ({file}; {env})")
}

/// The env file holds credentials: it must be private.
fn check_env_file(report: &mut Report, settings: &Settings) {
    let Some(path) = &settings.env_file else {
        return;
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => report.line(
            Mark::Fail,
            "env file",
            format!(
                "{} is readable by others (mode {:o}) and may hold credentials (chmod 600 {})",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            ),
        ),
        Ok(_) => report.line(
            Mark::Ok,
            "env file",
            format!("{} is private", path.display()),
        ),
        Err(e) => report.line(
            Mark::Fail,
            "env file",
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

/// The TOML file may hold keys too (`s3_secret_access_key`): it should be
/// as private as the env file, and the user's. A note, not a failure: many
/// hold no secret, and a backup still works.
fn check_config_file(report: &mut Report, settings: &Settings) {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = &settings.file else {
        return;
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            report.line(
                Mark::Fail,
                "config file",
                format!("cannot read {}: {e}", path.display()),
            );
            return;
        }
    };
    let uid = backup::effective_uid();
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        report.line(
            Mark::Note,
            "config file",
            format!(
                "{} can be read by other users (mode {mode:o}) and may hold secrets (chmod 600 {})",
                path.display(),
                path.display()
            ),
        );
    } else if meta.uid() != uid {
        let user = backup::user_name(uid);
        report.line(
            Mark::Note,
            "config file",
            format!(
                "{} belongs to {}, not to {user}, who runs mss-backup (sudo chown {user}: {}; chmod 600 {})",
                path.display(),
                backup::user_name(meta.uid()),
                path.display(),
                path.display()
            ),
        );
    } else {
        report.line(
            Mark::Ok,
            "config file",
            format!("{} is private", path.display()),
        );
    }
}

/// The data dir exists and can be listed; returns the bytes a backup reads.
fn check_data(report: &mut Report, settings: &Settings) -> Option<u64> {
    let dir = &settings.data_dir;
    if !dir.is_dir() {
        report.line(
            Mark::Fail,
            "data",
            format!(
                "Cloud data directory not found: {} (check MSS_BACKUP_DATA_DIR or MSS_BACKUP_PROJECT_DIR)",
                dir.display()
            ),
        );
        return None;
    }
    match archive::list(dir) {
        Ok(listing) => {
            let db = std::fs::metadata(dir.join(DB_PATH))
                .map(|m| m.len())
                .unwrap_or(0);
            let bytes = listing.bytes() + db;
            report.line(
                Mark::Ok,
                "data",
                format!(
                    "{} ({} entries, {})",
                    dir.display(),
                    listing.entries.len(),
                    human_bytes(bytes)
                ),
            );
            Some(bytes)
        }
        Err(e) => {
            report.line(
                Mark::Fail,
                "data",
                format!(
                    "cannot read {}: {e} (run mss-backup as the user that owns it)",
                    dir.display()
                ),
            );
            None
        }
    }
}

fn check_database(report: &mut Report, settings: &Settings) {
    let db = settings.data_dir.join(DB_PATH);
    if !db.is_file() {
        report.line(
            Mark::Fail,
            "database",
            format!(
                "Database not found: {} (MSS keeps it at cloud-data/{DB_PATH}; check MSS_BACKUP_DATA_DIR)",
                db.display()
            ),
        );
        return;
    }
    match snapshot::quick_check_live(&db) {
        Ok(facts) => report.line(
            Mark::Ok,
            "database",
            format!(
                "{} opens read-only, quick_check ok ({} pages, user_version {})",
                db.display(),
                facts.page_count,
                facts.user_version
            ),
        ),
        Err(e) => report.line(
            Mark::Fail,
            "database",
            format!(
                "{} fails its check: {e} (check the file's owner and mode; if it is damaged, see `mss-backup restore db`)",
                db.display()
            ),
        ),
    }
}

/// Ours, and room for one more backup, by the same estimate a backup uses
/// (the data uncompressed: an upper bound; twice with an encrypted copy).
fn check_backup_dir(
    report: &mut Report,
    settings: &Settings,
    data_bytes: Option<u64>,
    sealed: bool,
) {
    if let Err(e) = crate::guard::check_backup_dir_owner(settings) {
        report.line(Mark::Fail, "backup dir", e.to_string());
        return;
    }
    let archive_dir = backup::archive_dir(&settings.backup_dir);
    let existing = nearest_existing(&archive_dir);
    let space = match durable::fs_space(&existing) {
        Ok(space) => space,
        Err(e) => {
            report.line(
                Mark::Fail,
                "free space",
                format!("cannot check the free space at {}: {e}", existing.display()),
            );
            return;
        }
    };
    let last = status::read(&settings.backup_dir)
        .ok()
        .flatten()
        .and_then(|s| s.size_bytes);
    let last_words = last
        .map(|size| format!("; the last archive was {}", human_bytes(size)))
        .unwrap_or_default();
    let needed = match (data_bytes, last) {
        (Some(data), _) => backup::space_needed(data, sealed),
        (None, Some(last)) => last,
        (None, None) => {
            report.line(
                Mark::Note,
                "free space",
                format!(
                    "{} available in {} (unknown how much a backup needs: no data, no earlier backup)",
                    human_bytes(space.available),
                    existing.display()
                ),
            );
            return;
        }
    };
    if needed > space.available {
        report.line(
            Mark::Fail,
            "free space",
            format!(
                "Not enough free space in {}: a backup needs up to {}, {} available{last_words} (free some space there, e.g. delete its oldest backup; then lower MSS_BACKUP_RETENTION so it does not fill again)",
                existing.display(),
                human_bytes(needed),
                human_bytes(space.available)
            ),
        );
    } else {
        report.line(
            Mark::Ok,
            "free space",
            format!(
                "{} available in {}, a backup needs up to {}{last_words}",
                human_bytes(space.available),
                existing.display(),
                human_bytes(needed)
            ),
        );
    }
}

/// The first ancestor of `path` that exists (the backup dir may not yet).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Free or held, without taking it: a shared lock attempt on the lock
/// file fails exactly while a run holds its exclusive lock.
fn check_lock(report: &mut Report, backup_dir: &Path) {
    let path = backup_dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.line(Mark::Ok, "lock", "free (no run yet)");
            return;
        }
        Err(e) => {
            report.line(
                Mark::Fail,
                "lock",
                format!("cannot open {}: {e}", path.display()),
            );
            return;
        }
    };
    match file.try_lock_shared() {
        Ok(()) => report.line(Mark::Ok, "lock", "free"),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().split_once(' ') {
                Some((pid, started)) => format!("pid {pid}, started {started}"),
                None => "pid unknown".to_string(),
            };
            report.line(
                Mark::Note,
                "lock",
                format!(
                    "held by {holder}: a backup, copy or restore is running now (a run started meanwhile exits 75; if it has run for hours, look at it with ps)"
                ),
            );
        }
        Err(TryLockError::Error(e)) => report.line(
            Mark::Fail,
            "lock",
            format!("cannot check {}: {e}", path.display()),
        ),
    }
}

/// The recipients must parse (or every offsite copy would fail), and an
/// identity file, when set, must open and be private.
fn check_encryption(report: &mut Report, settings: &Settings, has_offsite: bool) {
    use mss_backup_core::seal::{Identities, Recipients};
    match crate::crypt::encryption(settings) {
        Err(e) => report.line(Mark::Fail, "encryption", e.to_string()),
        Ok(None) if has_offsite => report.line(
            Mark::Note,
            "encryption",
            "offsite copies are not encrypted (set MSS_BACKUP_ENCRYPT_RECIPIENTS to encrypt them with age)",
        ),
        Ok(None) => {}
        Ok(Some(encryption)) => match Recipients::load(&encryption.recipients) {
            Ok(_) => report.line(
                Mark::Ok,
                "encryption",
                crate::crypt::describe(settings).unwrap_or_default(),
            ),
            Err(e) => report.line(Mark::Fail, "encryption", e.to_string()),
        },
    }
    let Ok(Some(path)) = settings.path("identity_file") else {
        return;
    };
    match Identities::from_file(&path) {
        Ok(_) => {
            let open_to_others = fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(false);
            if open_to_others {
                report.line(
                    Mark::Fail,
                    "identity",
                    format!(
                        "{} can be read by other users (chmod 600 {})",
                        path.display(),
                        path.display()
                    ),
                );
            } else {
                report.line(
                    Mark::Ok,
                    "identity",
                    format!("{} opens encrypted backups", path.display()),
                );
            }
        }
        Err(e) => report.line(Mark::Fail, "identity", e.to_string()),
    }
}

fn check_monitor(report: &mut Report, monitor: &Monitor) {
    for line in monitor.describe() {
        report.line(Mark::Ok, "monitoring", line);
    }
    if let Some(path) = monitor.metrics_file() {
        let dir = durable::parent_dir(path);
        if !dir.is_dir() {
            report.line(
                Mark::Fail,
                "metrics",
                format!(
                    "{} does not exist, so {} cannot be written (create it, e.g. /var/lib/prometheus/node-exporter, writable by this user)",
                    dir.display(),
                    path.display()
                ),
            );
        }
    }
}

/// Not installed yet is a note: the README runs `doctor` before
/// `schedule install`, and a fresh set-up must be able to pass.
fn check_timer(report: &mut Report, settings: &Settings) {
    let units = schedule::unit_dir(&settings.home);
    let timer = units.join(schedule::TIMER);
    let service = units.join(schedule::SERVICE);
    if !timer.is_file() || !service.is_file() {
        report.line(
            Mark::Note,
            "timer",
            format!(
                "not installed: no {} (run `mss-backup schedule install`)",
                timer.display()
            ),
        );
        return;
    }
    let calendar = std::fs::read_to_string(&timer)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar=").map(str::to_string))
        .unwrap_or_else(|| "no OnCalendar=".to_string());
    report.line(
        Mark::Ok,
        "timer",
        format!(
            "installed in {} ({calendar}; `mss-backup schedule status` shows the next run)",
            units.display()
        ),
    );
}

/// The service unit names one binary by path. After a move from `cargo
/// install` (~/.cargo/bin) to the Debian package (/usr/bin) it still names
/// the old one: a nightly run of an old version while that file is there
/// (worth knowing), no nightly run at all once it is gone (a failure).
fn check_timer_binary(report: &mut Report, settings: &Settings) {
    let service = schedule::unit_dir(&settings.home).join(schedule::SERVICE);
    let Ok(unit) = fs::read_to_string(&service) else {
        return; // check_timer has said the unit is missing
    };
    let fix = "run `mss-backup schedule install` again";
    // systemd allows prefixes such as `-` or `@` before the path.
    let runs = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .filter_map(|cmd| {
            cmd.trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .next()
        })
        .next_back();
    let Some(runs) = runs else {
        report.line(
            Mark::Fail,
            "timer binary",
            format!("{} has no ExecStart= ({fix})", service.display()),
        );
        return;
    };
    let this = std::env::current_exe().and_then(|p| p.canonicalize());
    match (Path::new(runs).canonicalize(), this) {
        (Err(_), this) => report.line(
            Mark::Fail,
            "timer binary",
            format!(
                "the timer runs {runs}, which does not exist{}: {fix}",
                this.map(|p| format!(" (this is {})", p.display()))
                    .unwrap_or_default()
            ),
        ),
        (Ok(target), Ok(this)) if target == this => report.line(
            Mark::Ok,
            "timer binary",
            format!("the timer runs {runs}, this binary"),
        ),
        (Ok(_), Ok(this)) => report.line(
            Mark::Note,
            "timer binary",
            format!(
                "the timer runs {runs}, but this is {}: {fix} if this is the one to run nightly",
                this.display()
            ),
        ),
        (Ok(_), Err(e)) => report.line(
            Mark::Note,
            "timer binary",
            format!("the timer runs {runs}; cannot tell whether that is this binary: {e}"),
        ),
    }
}

fn check_last_run(report: &mut Report, settings: &Settings) {
    match status::read(&settings.backup_dir) {
        Ok(Some(last)) if last.status == Outcome::Success => report.line(
            Mark::Ok,
            "last run",
            format!("success, finished {}", last.finished_at),
        ),
        Ok(Some(last)) => report.line(
            Mark::Note,
            "last run",
            format!(
                "failed, finished {}: {} (run `mss-backup` once the checks above pass)",
                last.finished_at,
                last.error.as_deref().unwrap_or("see backup.log")
            ),
        ),
        Ok(None) => report.line(Mark::Note, "last run", "none yet (run `mss-backup`)"),
        Err(e) => report.line(
            Mark::Fail,
            "last run",
            format!("{e} (it is rewritten by the next backup; remove it if it stays unreadable)"),
        ),
    }
}
