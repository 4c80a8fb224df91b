//! `mss-backup` (no arguments) and `mss-backup backup`: one backup now,
//! with every offsite target that is switched on. The nightly timer runs
//! exactly this.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::backup_run::{backup_with, plan};
use crate::config::{ConfigError, Settings, parse_duration};
use crate::monitor::Monitor;

pub fn run(settings: &Settings, json: bool, full: bool) -> Result<ExitCode> {
    let offsite = crate::targets::offsite(settings)?;
    let wait = network_wait(settings)?;
    let mut plan = plan(settings)?;
    plan.full.now = full;
    let monitor = Monitor::from_settings(settings)?;
    crate::guard::check_backup_dir_owner(settings)?;
    backup_with(&plan, &offsite, wait, &monitor, json)
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
