//! The commands, one file each, and the dispatch from the command line to
//! them. A command loads what it needs, calls core and prints; what several
//! commands share is a module of its own, named for what it is (`source`,
//! `guard`, `service`, `display`, `backup_run`), and no command imports
//! another.

mod backup;
mod config;
mod copy;
mod demo;
mod doctor;
mod list;
mod restore;
mod schedule;
mod status;
mod usb;
mod verify;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, Global, UsbCommand};
use crate::config::{Overrides, Settings};

pub fn run(cli: Cli) -> Result<ExitCode> {
    crate::progress::set_quiet(cli.global.quiet);
    if cli.full && cli.command.is_some() {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--full before a command: it belongs to a backup (`mss-backup --full` or `mss-backup backup --full`)",
            )
            .exit();
    }
    let command = cli.command.unwrap_or(Command::Backup {
        json: false,
        full: cli.full,
    });
    // The commands that need no settings (a broken config file must not
    // stop the demo, the man page or `doctor`, which reports it).
    match command {
        Command::SampleData {
            dir,
            audio_mib,
            seed,
        } => return demo::sample_data(&dir, audio_mib, seed),
        Command::Demo { audio_mib } => return demo::run(audio_mib),
        Command::Doctor => return Ok(doctor::run(&cli.global)),
        Command::Completions { shell } => return crate::manual::completions(shell),
        Command::Man => return crate::manual::man(),
        Command::Usb {
            command: UsbCommand::Init { path, label },
        } => return usb::init(&path, &label),
        Command::Backup { .. }
        | Command::Verify { .. }
        | Command::Restore { .. }
        | Command::Copy { .. } => crate::interrupted::install(),
        _ => {}
    }
    let settings = load_settings(&cli.global)?;
    match command {
        Command::Backup { json, full } => backup::run(&settings, json, full),
        Command::List { json, target } => list::run(&settings, &target, json),
        Command::Status {
            json,
            max_age,
            fleet,
        } => status::run(&settings, json, max_age.as_deref(), fleet),
        Command::Verify { archive, from } => {
            verify::run(&settings, archive.as_deref(), from.as_deref())
        }
        Command::Restore {
            what,
            from,
            dry_run,
            yes,
            no_stop,
        } => restore::run(
            &settings,
            &restore::Options {
                mode: what.mode(),
                from,
                dry_run,
                yes,
                no_stop,
            },
        ),
        Command::Config { command } => config::run(&settings, command),
        Command::Keygen { path } => crate::crypt::keygen(&settings, path.as_deref()),
        Command::Schedule { command } => schedule::run(&settings, command),
        Command::Copy { target, archive } => copy::run(&settings, &target, archive.as_deref()),
        Command::Demo { .. }
        | Command::SampleData { .. }
        | Command::Usb { .. }
        | Command::Doctor
        | Command::Completions { .. }
        | Command::Man => unreachable!("handled above"),
    }
}

pub fn load_settings(global: &Global) -> Result<Settings> {
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
        &crate::config::process_env(),
        &flags,
        global.config.as_deref(),
    )?)
}
