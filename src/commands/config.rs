//! `mss-backup config`: every setting in force and where it came from
//! (secrets hidden), the targets that are on, and encryption;
//! `config init` writes a starting TOML file, `config reference` the
//! settings table of the docs.

use std::process::ExitCode;

use anyhow::Result;
use mss_backup_core::backup;

use crate::cli::ConfigCommand;
use crate::config::{self, Settings};

/// `config`, `config init [PATH]`, `config reference`.
pub fn run(settings: &Settings, command: Option<ConfigCommand>) -> Result<ExitCode> {
    match command {
        None => show_config(settings),
        Some(ConfigCommand::Init { path }) => crate::manual::config_init(settings, path.as_deref()),
        Some(ConfigCommand::Reference) => {
            print!("{}", crate::manual::settings_reference());
            Ok(ExitCode::SUCCESS)
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
