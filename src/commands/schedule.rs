//! `mss-backup schedule install|remove|status`: the nightly systemd user
//! timer (see `crate::schedule` for the units it writes).

use std::process::ExitCode;

use anyhow::Result;

use crate::EXIT_FAILED;
use crate::cli::ScheduleCommand;
use crate::config::{self, Settings};

pub fn run(settings: &Settings, command: ScheduleCommand) -> Result<ExitCode> {
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
