//! `mss-backup restore db|sounds|all`: the seed's restore runbooks as one
//! command that cannot make things worse. Core verifies and stages the
//! archive, swaps it in and keeps the safety net; this module does the
//! parts that belong to the operator's machine: asking before anything is
//! touched, stopping and starting MSS with the configured commands (run by
//! `sh -c` in the project dir), polling MSS's health URL, and telling the
//! operator, on screen and in `backup.log`, what was restored from which
//! backup and where the safety net is.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Local;
use mss_backup_core::restore::{self, Mode, RestorePlan, Staged, SwapError, Swapped};
use mss_backup_core::seal;

use crate::cli::RestoreWhat;
use crate::config::{ConfigError, Settings};
use crate::display::human_bytes;
use crate::guard::{RunGuard, check_backup_dir_owner};
use crate::interrupted;
use crate::service::{Service, poll_health, run_hook};
use crate::source::{Source, find_with_hidden, offsite_target};
use crate::targets::Kind;
use crate::{EXIT_FAILED, EXIT_LOCKED};

/// The command line of one restore.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// `latest`, a name in the archive dir, or a path.
    pub from: String,
    pub dry_run: bool,
    pub yes: bool,
    pub no_stop: bool,
}

impl RestoreWhat {
    pub fn mode(self) -> Mode {
        match self {
            RestoreWhat::Db => Mode::Db,
            RestoreWhat::Sounds => Mode::Sounds,
            RestoreWhat::All => Mode::All,
        }
    }
}

/// Brings a backup from an offsite target into the local archive dir
/// (through a partial file, checked against its sidecar by the target), or
/// uses the local copy when the same backup is already there.
fn fetch(settings: &Settings, kind: &Kind, name: &str) -> Result<PathBuf> {
    let target = offsite_target(
        settings,
        kind,
        name,
        &format!("--from {}:{name}", kind.name),
    )?;
    let found = find_with_hidden(target.as_ref(), name)?;
    if let Some((hidden, true)) = &found {
        eprintln!(
            "{hidden} is hidden on {} (deleted from its listing, still kept by the bucket as a version): restoring that version, checked against its sidecar",
            target.name()
        );
    }
    let Some((wanted, _)) = found else {
        bail!(
            "no backup named {name} on {} (see `mss-backup list --target {}`)",
            target.name(),
            kind.name
        );
    };
    let archive_dir = mss_backup_core::backup::archive_dir(&settings.backup_dir);
    // The same backup already here (plain first: it needs no key), if it
    // still matches its sidecar: a damaged copy is never preferred to the
    // target's, which is fetched over it instead.
    for local in [wanted.plain(), wanted.clone()] {
        let local_copy = archive_dir.join(local.file_name());
        if !local_copy.is_file() || !archive_dir.join(local.sidecar_name()).is_file() {
            continue;
        }
        match mss_backup_core::verify::check_sidecar(&local_copy) {
            Ok(_) => {
                eprintln!(
                    "{} is already in {}; restoring from that copy",
                    local,
                    archive_dir.display()
                );
                return Ok(local_copy);
            }
            Err(e) => {
                tracing::warn!("not restoring from the local copy: {e}");
                eprintln!(
                    "warning: the copy in {} is not used: {e}",
                    archive_dir.display()
                );
            }
        }
    }
    mss_backup_core::durable::create_private_dir(&archive_dir)
        .with_context(|| format!("cannot create {}", archive_dir.display()))?;
    eprintln!("Downloading {wanted} from {} ...", target.name());
    let path = target.get(&wanted, &archive_dir)?;
    tracing::info!(target = target.name(), archive = %path.display(), "fetched for restore");
    Ok(path)
}

/// Runs one restore; see the module docs for the order of work.
pub fn run(settings: &Settings, opts: &Options) -> Result<ExitCode> {
    let service = Service::from_settings(settings)?;
    let uses_service = !opts.no_stop && !opts.dry_run;
    if uses_service && !settings.project_dir.is_dir() {
        return Err(ConfigError(format!(
            "MSS project dir {} not found: the stop and start commands run there (set MSS_BACKUP_PROJECT_DIR, or stop MSS yourself and pass --no-stop)",
            settings.project_dir.display()
        ))
        .into());
    }
    let source = Source::parse(settings, &opts.from)?;
    check_backup_dir_owner(settings)?;
    if let Source::Local(path) = &source
        && !path.exists()
    {
        bail!(
            "Archive {} not found (run `mss-backup list` to see the backups)",
            path.display()
        );
    }
    if !opts.dry_run && !opts.yes && !io::stdin().is_terminal() {
        eprintln!(
            "Refusing to restore without confirmation: there is no terminal to ask on (add --yes to confirm, or --dry-run to only check); nothing was changed"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }

    let Some(_guard) = RunGuard::take(settings)? else {
        return Ok(ExitCode::from(EXIT_LOCKED));
    };
    // Fetched under the lock, so no backup's retention can prune the copy
    // between download and restore.
    let archive = match source {
        Source::Offsite { kind, name } => match fetch(settings, kind, name) {
            Ok(path) => path,
            Err(e) if e.downcast_ref::<ConfigError>().is_some() => return Err(e),
            Err(e) => {
                if let Some(code) = interrupted::stopped(
                    &settings.backup_dir,
                    "the download was stopped and its partial removed; nothing was changed",
                ) {
                    return Ok(code);
                }
                tracing::error!("restore failed: {e:#}");
                eprintln!("Restore FAILED: {e:#}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        },
        Source::Local(path) => path,
    };
    // An encrypted backup is checked against its sidecar and decrypted to a
    // private copy before anything else: a missing or wrong identity, or a
    // damaged file, stops here with nothing changed.
    let opened = if seal::is_encrypted(&archive) {
        let opened = crate::crypt::identities(settings, &archive).and_then(|identities| {
            eprintln!("Decrypting {} ...", archive.display());
            crate::crypt::open(settings, &archive, &identities)
        });
        match opened {
            Ok(opened) => Some(opened),
            Err(e) if e.downcast_ref::<ConfigError>().is_some() => return Err(e),
            Err(e) => {
                if let Some(code) = interrupted::stopped(
                    &settings.backup_dir,
                    "decryption was stopped and the decrypted copy removed; nothing was changed",
                ) {
                    return Ok(code);
                }
                tracing::error!("restore failed: {e:#}");
                eprintln!("Restore FAILED: {e:#}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    } else {
        None
    };
    // The plan names the archive the operator chose: the decrypted copy is
    // a private detail that is gone when the restore ends.
    let chosen = archive.clone();
    let archive = opened.as_ref().map_or(archive, |o| o.archive.clone());
    tracing::info!(
        mode = opts.mode.word(),
        archive = %archive.display(),
        dry_run = opts.dry_run,
        "restore started"
    );
    let failed = |message: String| {
        if let Some(code) = interrupted::stopped(
            &settings.backup_dir,
            "the restore was stopped before anything live was touched; its staging copy was removed, nothing was changed",
        ) {
            return Ok(code);
        }
        tracing::error!("restore failed: {message}");
        eprintln!("Restore FAILED: {message}");
        Ok(ExitCode::from(EXIT_FAILED))
    };

    // A restore killed half-way is finished first, so the plan sees the
    // live data as it is: on a file system without RENAME_EXCHANGE,
    // cloud-data/ itself may still be moved aside.
    for line in restore::recover_interrupted(&settings.data_dir) {
        tracing::warn!("{line}");
        eprintln!("warning: {line}");
    }
    let mut plan = match restore::plan(&archive, opts.mode, &settings.data_dir) {
        Ok(plan) => plan,
        Err(e) => return failed(e.to_string()),
    };
    if opened.is_some() {
        plan.archive = std::fs::canonicalize(&chosen).unwrap_or(chosen);
        plan.archive_size = std::fs::metadata(&plan.archive).map_or(plan.archive_size, |m| m.len());
    }
    eprintln!("Verifying {} ...", plan.archive.display());
    let progress = crate::progress::for_stderr();
    let staged =
        match restore::stage_with(&archive, opts.mode, &settings.data_dir, progress.as_ref()) {
            Ok(staged) => staged,
            Err(e) => return failed(e.to_string()),
        };
    print_plan(&plan, &staged, &service, opts);
    if opts.dry_run {
        println!("Dry run: the backup checks out and nothing was changed.");
        tracing::info!("restore dry run finished: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    let confirmed = if opts.yes {
        Ok(true)
    } else {
        confirm(opts.mode)
    };
    if interrupted::received().is_some() {
        drop(staged);
        drop(opened);
        // The prompt's line is still open.
        eprintln!();
        return Ok(interrupted::stopped(
            &settings.backup_dir,
            "the restore was cancelled; its staging copy was removed, nothing was changed",
        )
        .unwrap_or(ExitCode::from(EXIT_FAILED)));
    }
    if !confirmed? {
        eprintln!("Restore cancelled; nothing was changed.");
        tracing::info!("restore cancelled at the prompt: nothing was changed");
        return Ok(ExitCode::from(EXIT_FAILED));
    }

    if !opts.no_stop {
        eprintln!("Stopping MSS: {}", service.stop);
        let stopped = run_hook("stop", &service.stop, &settings.project_dir);
        if interrupted::received().is_some() {
            // Put things back as they were: the old data never left, and
            // MSS runs on it again.
            drop(staged);
            drop(opened);
            eprintln!("Starting MSS again on the old data: {}", service.start);
            let started = run_hook("start", &service.start, &settings.project_dir);
            let outcome = match started {
                Ok(()) => "the restore was stopped before the swap; its staging copy was removed, nothing was changed, and MSS was started again".to_string(),
                Err(why) => format!(
                    "the restore was stopped before the swap; its staging copy was removed, nothing was changed, but MSS did not start: `{}` {why}",
                    service.start
                ),
            };
            return Ok(interrupted::stopped(&settings.backup_dir, &outcome)
                .unwrap_or(ExitCode::from(EXIT_FAILED)));
        }
        if let Err(why) = stopped {
            return failed(format!(
                "the stop command `{}` {why}; nothing was changed (fix it, or stop MSS yourself and pass --no-stop)",
                service.stop
            ));
        }
    }

    let swapped = match restore::swap(staged, Local::now().naive_local()) {
        Ok(swapped) => swapped,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            if matches!(e, SwapError::RolledBack { .. }) && !opts.no_stop {
                // The old data is back in place: bring MSS back on it.
                eprintln!("Starting MSS again on the old data: {}", service.start);
                if let Err(why) = run_hook("start", &service.start, &settings.project_dir) {
                    eprintln!("MSS did not start: `{}` {why}", service.start);
                }
            }
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    report_swap(&plan, &swapped);
    // A signal during the swap waited for it: the restore is complete.
    // MSS is started on it all the same (unless --no-stop), as the swap
    // left it stopped; its health is not waited for.
    if interrupted::received().is_some() {
        let outcome = if opts.no_stop {
            "the swap was finished first, so the restore is complete".to_string()
        } else {
            eprintln!("Starting MSS: {}", service.start);
            match run_hook("start", &service.start, &settings.project_dir) {
                Ok(()) => "the swap was finished first, so the restore is complete; MSS was started, its health was not checked".to_string(),
                Err(why) => format!(
                    "the swap was finished first, so the restore is complete; MSS did not start: `{}` {why}",
                    service.start
                ),
            }
        };
        print_net_hint(&swapped);
        return Ok(interrupted::stopped(&settings.backup_dir, &outcome)
            .unwrap_or(ExitCode::from(EXIT_FAILED)));
    }

    if opts.no_stop {
        println!("MSS was not stopped or started (--no-stop): start it when you are ready.");
        print_net_hint(&swapped);
        tracing::info!("restore finished (MSS not restarted: --no-stop)");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("Starting MSS: {}", service.start);
    if let Err(why) = run_hook("start", &service.start, &settings.project_dir) {
        if let Some(code) = interrupted::stopped(
            &settings.backup_dir,
            &format!(
                "the restore is complete, but its start command was stopped: start MSS with `{}`",
                service.start
            ),
        ) {
            print_net_hint(&swapped);
            return Ok(code);
        }
        loud(
            &format!(
                "MSS did not start: the start command `{}` {why}",
                service.start
            ),
            &swapped,
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    eprintln!(
        "Waiting for {} (up to {} s) ...",
        service.health.text,
        service.health_timeout.as_secs()
    );
    match poll_health(&service.health, service.health_timeout) {
        Ok((code, waited)) => {
            println!(
                "MSS is up: {} answered {code} after {:.1} s.",
                service.health.text,
                waited.as_secs_f64()
            );
            tracing::info!(
                url = %service.health.text,
                code,
                "restore finished: MSS answers its health check"
            );
            print_net_hint(&swapped);
            Ok(ExitCode::SUCCESS)
        }
        Err(last) => {
            if let Some(code) = interrupted::stopped(
                &settings.backup_dir,
                "the restore is complete and MSS was started; its health check was stopped before MSS answered",
            ) {
                print_net_hint(&swapped);
                return Ok(code);
            }
            loud(
                &format!(
                    "MSS did not pass its health check: {} did not answer 2xx within {} s (last: {last})",
                    service.health.text,
                    service.health_timeout.as_secs()
                ),
                &swapped,
            );
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn backup_label(plan: &RestorePlan) -> String {
    let name = plan
        .archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match plan.backup_time {
        Some(time) => format!("{name} (backup of {})", time.format("%Y-%m-%d %H:%M:%S")),
        None => name,
    }
}

fn print_plan(plan: &RestorePlan, staged: &Staged, service: &Service, opts: &Options) {
    let mode = opts.mode;
    println!("Restore {} ({})", mode.word(), mode.what());
    println!(
        "  from      {} ({})",
        plan.archive.display(),
        human_bytes(plan.archive_size)
    );
    if let Some(time) = plan.backup_time {
        println!(
            "  made      {}",
            time.format("%Y-%m-%d %H:%M:%S (local time)")
        );
    }
    let mut checks = vec!["sha256 matches its checksum file".to_string()];
    if let Some(files) = staged.manifest_files {
        checks.push(format!("{files} files match MANIFEST.sha256"));
    }
    if let Some(db) = &staged.db {
        checks.push(format!(
            "database integrity_check ok ({} pages, user_version {})",
            db.page_count, db.user_version
        ));
    }
    println!("  verified  {}", checks.join(", "));
    println!(
        "  restores  {} file{}, {}",
        staged.files,
        if staged.files == 1 { "" } else { "s" },
        human_bytes(staged.bytes)
    );
    if plan.replaced.is_empty() {
        println!("  replaces  nothing: there is nothing there now");
    }
    for (i, replaced) in plan.replaced.iter().enumerate() {
        let label = if i == 0 { "replaces" } else { "" };
        let size = if replaced.is_dir {
            format!("{} files, {}", replaced.files, human_bytes(replaced.bytes))
        } else {
            human_bytes(replaced.bytes)
        };
        println!("  {label:<9} {} ({size})", replaced.path.display());
    }
    if !plan.replaced.is_empty() {
        println!(
            "            moved aside as the safety net (*{}<time>), never deleted",
            restore::NET_MARK
        );
    }
    for warning in &staged.warnings {
        println!("  warning   {warning}");
    }
    if opts.no_stop {
        println!("  MSS       not stopped or started (--no-stop): make sure it is stopped");
    } else {
        println!(
            "  MSS       stopped with `{}`, then started with `{}`; {} must answer within {} s",
            service.stop,
            service.start,
            service.health.text,
            service.health_timeout.as_secs()
        );
    }
}

/// Asks on the terminal; true only for an explicit yes.
fn confirm(mode: Mode) -> Result<bool> {
    eprint!(
        "Replace {} with the backup? Type yes to go on: ",
        mode.what()
    );
    io::stderr().flush().ok();
    let mut answer = String::new();
    // A blocking read would be restarted after Ctrl-C.
    mss_backup_core::interrupt::wait_for_stdin().context("cannot read the answer")?;
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "yes" | "y"
    ))
}

fn report_swap(plan: &RestorePlan, swapped: &Swapped) {
    println!(
        "Restored {} from {} into {}.",
        plan.mode.what(),
        backup_label(plan),
        swapped.restored.display()
    );
    for warning in &swapped.warnings {
        eprintln!("  warning: {warning}");
    }
    match swapped.safety_net.split_first() {
        Some((main, rest)) => {
            println!("Safety net: {}", main.net.display());
            for side in rest {
                println!("            {}", side.net.display());
            }
        }
        None => println!("Safety net: none (there was nothing to replace)"),
    }
    tracing::info!(
        mode = plan.mode.word(),
        archive = %plan.archive.display(),
        restored = %swapped.restored.display(),
        safety_net = %swapped
            .safety_net
            .iter()
            .map(|n| n.net.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        "restore swapped in"
    );
}

fn print_net_hint(swapped: &Swapped) {
    if swapped.safety_net.is_empty() {
        return;
    }
    let paths: Vec<String> = swapped
        .safety_net
        .iter()
        .map(|n| shell_quote(&n.net))
        .collect();
    println!(
        "Once MSS works as it should, remove the safety net: rm -rf {}",
        paths.join(" ")
    );
}

/// The restore is in place but MSS is not healthy: say so on every channel,
/// with where the old data is. No automatic rollback: the operator decides.
fn loud(problem: &str, swapped: &Swapped) {
    let net = match swapped.safety_net.first() {
        Some(main) => format!(
            "the data from before the restore is in the safety net {}",
            main.net.display()
        ),
        None => "there was no data before the restore, so there is no safety net".to_string(),
    };
    let message = format!(
        "{problem}. The restored data is in place at {} and was NOT rolled back; {net}.",
        swapped.restored.display()
    );
    tracing::error!("{message}");
    eprintln!("!!! {message}");
}

fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
