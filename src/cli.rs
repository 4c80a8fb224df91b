//! The command line. With no subcommand, `mss-backup` makes one backup now.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mss-backup",
    version,
    about = "Back up MSS (cloud-data/) into one checksummed tar.gz, safely while MSS runs.",
    long_about = "Back up MSS (cloud-data/) into one checksummed tar.gz, safely while MSS runs.\n\n\
        With no command, makes one backup now. Settings come from MSS_BACKUP_* environment \
        variables, an optional TOML file (MSS_BACKUP_CONFIG, default ~/.config/mss-backup/config.toml) \
        and the flags below; `mss-backup config` shows the result."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct Global {
    /// TOML config file (overrides MSS_BACKUP_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// MSS project dir (MSS_BACKUP_PROJECT_DIR; default ~/Projects/sound-machine).
    #[arg(long, global = true, value_name = "DIR")]
    pub project_dir: Option<String>,
    /// The cloud-data dir to back up (MSS_BACKUP_DATA_DIR; default PROJECT/cloud-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Where backups, status and log live (MSS_BACKUP_DIR; default ~/backups/mss).
    #[arg(long, global = true, value_name = "DIR")]
    pub backup_dir: Option<String>,
    /// How many backups to keep (MSS_BACKUP_RETENTION; default 7).
    #[arg(long, global = true, value_name = "N")]
    pub retention: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make one backup now (the default).
    Backup,
    /// List backups on disk, newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the last run from last_backup.json; exit 1 if it failed or is too old.
    Status {
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
        /// Fail if the last successful backup finished longer ago than this (e.g. 26h, 90m, 2d).
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
    },
    /// Check an archive: sha256 sidecar, every member against the manifest, database integrity.
    Verify {
        /// Archive path or name in the archive dir (default: latest).
        archive: Option<String>,
    },
    /// Show the resolved configuration and where each value came from.
    Config,
    /// Make a small sample cloud-data/ in a temp dir, back it up, verify it, show where it all is.
    Demo {
        /// Size of the sample audio in MiB.
        #[arg(long, default_value_t = 8)]
        audio_mib: u64,
    },
    /// Generate a deterministic sample cloud-data/ (tests and benchmarks).
    #[command(hide = true)]
    SampleData {
        dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        audio_mib: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}
