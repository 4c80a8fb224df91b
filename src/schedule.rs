//! The nightly timer: systemd **user** units that run the same
//! `mss-backup` an operator runs by hand, at 03:15 by default, catching up
//! after the VM was off (`Persistent=true`). A unit does not see the
//! shell's environment, so the variables that switch targets on (and the
//! S3 credentials) are written to `~/.config/mss-backup/env` (0600), which
//! the service reads with `EnvironmentFile=` and manual runs read too.
//!
//! With `--drill KIND`, a second pair of units reads one offsite target's
//! newest copy back once a month (`verify --from KIND:latest`): a copy
//! nobody has read back is a hope, not a backup. Its result is in
//! `drills.json`, which `status` shows, and in `backup.log`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::config::{self, ConfigError, Env, Settings};

pub const SERVICE: &str = "mss-backup.service";
pub const TIMER: &str = "mss-backup.timer";
pub const DRILL_SERVICE: &str = "mss-backup-drill.service";
pub const DRILL_TIMER: &str = "mss-backup-drill.timer";
/// Spreads the drills of many VMs over an hour, still eleven hours clear of
/// the nightly backup (see `drill_calendar`).
const DRILL_DELAY: &str = "1h";

/// Where user units live.
pub fn unit_dir(home: &Path) -> PathBuf {
    home.join(".config/systemd/user")
}

/// `HH:MM` to systemd's `*-*-* HH:MM:00`.
pub fn on_calendar(at: &str) -> Result<String, ConfigError> {
    let valid = at.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && at.len() == 5).then_some((h, m))
    });
    match valid {
        Some((h, m)) => Ok(format!("*-*-* {h:02}:{m:02}:00")),
        None => Err(ConfigError(format!(
            "--at {at} is not valid: use a 24-hour time HH:MM, like 03:15"
        ))),
    }
}

/// The service unit: one backup, niced and idle-class I/O, no restart loop.
pub fn service_unit(exe: &Path, env_file: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=MSS backup (mss-backup)\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} backup\n\
         EnvironmentFile=-{env}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n",
        exe = exe.display(),
        env = env_file.display()
    )
}

/// The timer unit: daily at `calendar`, caught up at boot if missed.
pub fn timer_unit(calendar: &str, random_delay: Option<&str>) -> String {
    let mut unit = format!(
        "[Unit]\n\
         Description=Nightly MSS backup\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         Persistent=true\n"
    );
    if let Some(delay) = random_delay {
        let _ = writeln!(unit, "RandomizedDelaySec={delay}");
    }
    unit.push_str("\n[Install]\nWantedBy=timers.target\n");
    unit
}

/// The drill's service: one `verify --from KIND:latest`, with the nightly
/// run's settings. `After=` the backup, so when both are caught up at boot
/// the backup goes first and the drill reads the newest copy (and neither
/// finds the other holding the lock at its start).
pub fn drill_service_unit(exe: &Path, env_file: &Path, kind: &str) -> String {
    format!(
        "[Unit]\n\
         Description=MSS offsite drill of {kind} (mss-backup verify --from)\n\
         After={SERVICE}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} verify --from {kind}:latest\n\
         EnvironmentFile=-{env}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n",
        exe = exe.display(),
        env = env_file.display()
    )
}

/// The drill's calendar: the 1st of each month, twelve hours away from the
/// nightly backup at `at` (HH:MM), so a drill holding the run lock never
/// makes a night's backup exit 75 ("already running").
pub fn drill_calendar(at: &str) -> Result<String, ConfigError> {
    on_calendar(at)?;
    let (h, m) = at.split_once(':').unwrap_or(("3", "15"));
    let h: u32 = h.parse().unwrap_or(3);
    let m: u32 = m.parse().unwrap_or(15);
    Ok(format!("*-*-01 {:02}:{m:02}:00", (h + 12) % 24))
}

/// The drill's timer: monthly at `calendar`, caught up at boot if missed.
pub fn drill_timer_unit(calendar: &str) -> String {
    format!(
        "[Unit]\n\
         Description=Monthly MSS offsite drill\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         Persistent=true\n\
         RandomizedDelaySec={DRILL_DELAY}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// Whether `schedule install` writes a variable into the environment file:
/// our settings (and `MSS_BACKUP_CONFIG`) and the credentials a target reads.
fn wanted(name: &str) -> bool {
    name.starts_with(config::ENV_PREFIX)
        || crate::registry::outside_vars().any(|outside| outside == name)
}

/// What `schedule install` did to one variable of the environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    /// Changed, with the value it had.
    Changed(String),
    Kept,
    /// Dropped by `--replace`, with the value it had.
    Dropped(String),
}

/// The environment file's new variables: what it holds now, with the
/// shell's values on top (a new login shell has none of them, and must not
/// empty the file), or with `replace` the shell's alone. Each variable of
/// either side comes with what happened to it, in name order.
pub fn merge_env(existing: &Env, shell: &Env, replace: bool) -> (Env, Vec<(String, Change)>) {
    let shell: Env = shell
        .iter()
        .filter(|(k, _)| wanted(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut merged = if replace {
        Env::new()
    } else {
        existing.clone()
    };
    merged.extend(shell.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut names: Vec<&String> = merged.keys().chain(existing.keys()).collect();
    names.sort();
    names.dedup();
    let changes = names
        .into_iter()
        .map(|name| {
            let change = match (existing.get(name), merged.get(name)) {
                (None, _) => Change::Added,
                (Some(old), None) => Change::Dropped(old.clone()),
                (Some(old), Some(new)) if old != new => Change::Changed(old.clone()),
                (Some(_), Some(_)) => Change::Kept,
            };
            (name.clone(), change)
        })
        .collect();
    (merged, changes)
}

/// One line a variable for the operator, secrets hidden:
/// `  changed  MSS_BACKUP_RETENTION=3 (was 7)`.
fn change_line(name: &str, change: &Change, merged: &Env) -> String {
    let shown = |value: &str| crate::registry::shown_value(name, value);
    let now = merged.get(name).map(|v| shown(v)).unwrap_or_default();
    match change {
        Change::Added => format!("  added    {name}={now}"),
        Change::Changed(old) => format!("  changed  {name}={now} (was {})", shown(old)),
        Change::Kept => format!("  kept     {name}={now}"),
        Change::Dropped(old) => format!("  dropped  {name} (was {})", shown(old)),
    }
}

/// The environment file's text for `vars`.
pub fn env_file_contents(vars: &Env) -> Result<String, ConfigError> {
    let mut out = String::from(
        "# Written by `mss-backup schedule install`: the settings the nightly\n\
         # run uses (manual runs read it too). Contains secrets: keep it 0600.\n\
         # Running `schedule install` again keeps these and adds the shell's.\n",
    );
    for (key, value) in vars.iter().filter(|(k, _)| wanted(k)) {
        let line = config::env_file_line(key, value).ok_or_else(|| {
            ConfigError(format!(
                "{key} contains a line break and cannot go into the environment file (set it without one)"
            ))
        })?;
        out.push_str(&line);
    }
    Ok(out)
}

/// Whether `systemctl --user` can reach a user manager here.
fn user_systemd_reachable() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn systemctl(args: &[&str]) -> Result<()> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .context("cannot run systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl --user {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn enable_commands(drill: bool) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "$USER".to_string());
    let timers = if drill {
        format!("{TIMER} {DRILL_TIMER}")
    } else {
        TIMER.to_string()
    };
    format!(
        "  systemctl --user daemon-reload\n  systemctl --user enable --now {timers}\n  loginctl enable-linger {user}    # so it runs without a login session\n"
    )
}

/// `schedule install`: writes the env file and both units, then enables the
/// timer where a user systemd is reachable; with `drill`, the drill's pair
/// too, once that target is known to be configured.
pub fn install(
    settings: &Settings,
    shell: &Env,
    at: &str,
    replace: bool,
    drill: Option<&str>,
) -> Result<()> {
    let calendar = on_calendar(at)?;
    // Before anything is written: a drill of a target that is not
    // configured would fail every month, unseen until someone looks.
    if let Some(kind) = drill {
        let what = format!("schedule install --drill {kind}");
        crate::targets::kind(kind)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--drill {kind}: no such target (use one of {})",
                    crate::targets::kind_names().collect::<Vec<_>>().join(", ")
                ))
            })?
            .enabled(settings, &what)?;
    }
    let random_delay = settings.string("random_delay")?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot find the path of this mss-backup binary")?;
    let env_file = settings.home.join(config::ENV_FILE);
    let units = unit_dir(&settings.home);
    mss_backup_core::durable::create_private_dir(durable_parent(&env_file))
        .with_context(|| format!("cannot create {}", durable_parent(&env_file).display()))?;
    std::fs::create_dir_all(&units)
        .with_context(|| format!("cannot create {}", units.display()))?;
    let (vars, changes) = merge_env(settings.env_file_vars(), shell, replace);
    let contents = env_file_contents(&vars)?;
    mss_backup_core::durable::write_atomic(&env_file, contents.as_bytes())
        .with_context(|| format!("cannot write {}", env_file.display()))?;
    let service = units.join(SERVICE);
    let timer = units.join(TIMER);
    mss_backup_core::durable::write_atomic(&service, service_unit(&exe, &env_file).as_bytes())
        .with_context(|| format!("cannot write {}", service.display()))?;
    mss_backup_core::durable::write_atomic(
        &timer,
        timer_unit(&calendar, random_delay.as_deref()).as_bytes(),
    )
    .with_context(|| format!("cannot write {}", timer.display()))?;
    println!("Wrote {} and {}", service.display(), timer.display());
    if let Some(kind) = drill {
        let drill_service = units.join(DRILL_SERVICE);
        let drill_timer = units.join(DRILL_TIMER);
        mss_backup_core::durable::write_atomic(
            &drill_service,
            drill_service_unit(&exe, &env_file, kind).as_bytes(),
        )
        .with_context(|| format!("cannot write {}", drill_service.display()))?;
        mss_backup_core::durable::write_atomic(
            &drill_timer,
            drill_timer_unit(&drill_calendar(at)?).as_bytes(),
        )
        .with_context(|| format!("cannot write {}", drill_timer.display()))?;
        println!(
            "Wrote {} and {}: a monthly drill of {kind} (verify --from {kind}:latest)",
            drill_service.display(),
            drill_timer.display()
        );
    }
    println!(
        "Wrote {} ({} variables, 0600): the nightly run sees these settings{}",
        env_file.display(),
        vars.len(),
        if replace {
            " (replaced: only this shell's)"
        } else {
            " (kept what it held, this shell's values on top)"
        }
    );
    for (name, change) in &changes {
        println!("{}", change_line(name, change, &vars));
    }
    if user_systemd_reachable() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", TIMER])?;
        println!("Enabled {TIMER}: next run at {calendar} (`mss-backup schedule status` shows it)");
        if drill.is_some() {
            systemctl(&["enable", "--now", DRILL_TIMER])?;
            println!(
                "Enabled {DRILL_TIMER}: monthly, on the 1st at {}, twelve hours from the nightly run",
                drill_calendar(at)?
            );
        }
        println!("For runs without a login session: loginctl enable-linger $USER");
    } else {
        println!("No user systemd is reachable from here; to enable the timer run:");
        print!("{}", enable_commands(drill.is_some()));
    }
    Ok(())
}

fn durable_parent(path: &Path) -> &Path {
    mss_backup_core::durable::parent_dir(path)
}

/// `schedule remove`: disables the timers and removes the units, the
/// drill's too. The env file stays: manual runs still read it.
pub fn remove(settings: &Settings) -> Result<()> {
    let units = unit_dir(&settings.home);
    if user_systemd_reachable() {
        let _ = systemctl(&["disable", "--now", TIMER]);
        if units.join(DRILL_TIMER).exists() {
            let _ = systemctl(&["disable", "--now", DRILL_TIMER]);
        }
    }
    for name in [TIMER, SERVICE, DRILL_TIMER, DRILL_SERVICE] {
        let path = units.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => println!("Removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    if user_systemd_reachable() {
        systemctl(&["daemon-reload"])?;
    }
    println!(
        "Kept {} (manual runs read it; delete it if you no longer want these settings)",
        settings.home.join(config::ENV_FILE).display()
    );
    Ok(())
}

/// `schedule status`: the units, the next run, the last result.
pub fn status(settings: &Settings) -> Result<bool> {
    let units = unit_dir(&settings.home);
    let mut ok = true;
    for name in [SERVICE, TIMER] {
        let path = units.join(name);
        let there = path.is_file();
        ok &= there;
        println!(
            "{name}: {}",
            if there {
                path.display().to_string()
            } else {
                "not installed (run `mss-backup schedule install`)".into()
            }
        );
    }
    let text = std::fs::read_to_string(units.join(TIMER)).unwrap_or_default();
    if let Some(cal) = text.lines().find_map(|l| l.strip_prefix("OnCalendar=")) {
        println!(
            "schedule: {cal} (Persistent: a run missed while the VM was off happens at the next boot)"
        );
    }
    if user_systemd_reachable() {
        let out = Command::new("systemctl")
            .args(["--user", "list-timers", TIMER, "--no-pager"])
            .output()
            .context("cannot run systemctl")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    } else {
        println!("next run: unknown (no user systemd reachable from here)");
    }
    match mss_backup_core::status::read(&settings.backup_dir)? {
        Some(last) => println!(
            "last run: {:?}, finished {}{}",
            last.status,
            last.finished_at,
            last.error.map(|e| format!(": {e}")).unwrap_or_default()
        ),
        None => println!("last run: none yet"),
    }
    drill_status(settings, &units)?;
    Ok(ok)
}

/// The drill's part of `schedule status`; it is optional, so its absence
/// is said but is not a failure.
fn drill_status(settings: &Settings, units: &Path) -> Result<()> {
    let service = std::fs::read_to_string(units.join(DRILL_SERVICE)).unwrap_or_default();
    let command = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_once(" verify "))
        .map(|(_, args)| format!("verify {args}"));
    match command {
        Some(command) if units.join(DRILL_TIMER).is_file() => {
            println!(
                "{DRILL_TIMER}: {} (monthly: {command})",
                units.join(DRILL_TIMER).display()
            );
            if user_systemd_reachable() {
                let out = Command::new("systemctl")
                    .args(["--user", "list-timers", DRILL_TIMER, "--no-pager"])
                    .output()
                    .context("cannot run systemctl")?;
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        _ => println!(
            "{DRILL_TIMER}: not installed (`mss-backup schedule install --drill KIND` adds a monthly offsite drill)"
        ),
    }
    for (target, drill) in mss_backup_core::drill::read(&settings.backup_dir)? {
        println!(
            "last drill of {target}: {:?}, finished {}, {}",
            drill.result,
            drill.finished_at,
            drill.backup.as_deref().unwrap_or("no backup read")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_accepts_only_real_times() {
        assert_eq!(on_calendar("03:15").unwrap(), "*-*-* 03:15:00");
        assert_eq!(on_calendar("23:59").unwrap(), "*-*-* 23:59:00");
        for bad in ["3:15", "24:00", "12:60", "noon", "03:15:00"] {
            assert!(on_calendar(bad).is_err(), "{bad}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_file_keeps_our_variables_and_credentials_only() {
        let shell = env(&[
            ("MSS_BACKUP_S3_BUCKET", "0123"),
            ("AWS_SECRET_ACCESS_KEY", "it's secret"),
            ("PATH", "/usr/bin"),
            ("HOME", "/home/mss"),
        ]);
        let (vars, _) = merge_env(&Env::new(), &shell, false);
        let text = env_file_contents(&vars).unwrap();
        let parsed = config::parse_env_file(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["MSS_BACKUP_S3_BUCKET"], "0123");
        assert_eq!(parsed["AWS_SECRET_ACCESS_KEY"], "it's secret");
    }

    #[test]
    fn reinstall_keeps_the_file_and_puts_the_shell_on_top() {
        let file = env(&[("MSS_BACKUP_S3_BUCKET", "b"), ("MSS_BACKUP_RETENTION", "7")]);
        let shell = env(&[("MSS_BACKUP_RETENTION", "3"), ("MSS_BACKUP_USB_PATH", "/m")]);
        let (vars, changes) = merge_env(&file, &shell, false);
        assert_eq!(
            vars,
            env(&[
                ("MSS_BACKUP_RETENTION", "3"),
                ("MSS_BACKUP_S3_BUCKET", "b"),
                ("MSS_BACKUP_USB_PATH", "/m"),
            ])
        );
        assert_eq!(
            changes,
            vec![
                ("MSS_BACKUP_RETENTION".into(), Change::Changed("7".into())),
                ("MSS_BACKUP_S3_BUCKET".into(), Change::Kept),
                ("MSS_BACKUP_USB_PATH".into(), Change::Added),
            ]
        );
        let (vars, changes) = merge_env(&file, &shell, true);
        assert_eq!(vars.len(), 2);
        assert!(changes.contains(&("MSS_BACKUP_S3_BUCKET".into(), Change::Dropped("b".into()))));
    }
}
