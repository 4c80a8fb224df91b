//! The command line. With no subcommand, `mss-backup` makes one backup now.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// With no command: read and compress every file again (see `backup --full`).
    #[arg(long)]
    pub full: bool,
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
    /// No progress bars and no summary (failures are still reported on stderr).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make one backup now (the default).
    Backup {
        /// Print the status document (last_backup.json) on stdout.
        #[arg(long)]
        json: bool,
        /// Read and compress every file again, instead of copying the
        /// compressed bytes of files unchanged since the previous backup
        /// (a full backup also comes every MSS_BACKUP_FULL_EVERY, 7d).
        #[arg(long)]
        full: bool,
    },
    /// List backups on disk (or on an offsite target), newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where to list: the archive dir (local), or a configured offsite target (usb, rsync, s3).
        #[arg(long, value_name = "TARGET", default_value = "local", value_parser = list_target())]
        target: String,
    },
    /// Show the last run from last_backup.json; exit 1 if it failed or is too old.
    Status {
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
        /// Fail if the last successful backup finished longer ago than this (e.g. 26h, 90m, 2d).
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
        /// Every machine sharing the offsite bucket (mss/<server id>/): newest complete backup, age, size; exit 1 if any is older than --max-age (default 26h) or has none. Only reads.
        #[arg(long)]
        fleet: bool,
    },
    /// Check an archive: sha256 sidecar, every member against the manifest, database integrity.
    Verify {
        /// Archive path or name in the archive dir (default: latest).
        #[arg(conflicts_with = "from")]
        archive: Option<String>,
        /// A drill: fetch KIND:NAME (s3:latest, usb:NAME, rsync:latest) from that offsite target into a private temp dir, check it all, remove it; nothing is added to archive/.
        #[arg(long, value_name = "TARGET:NAME")]
        from: Option<String>,
    },
    /// Restore the database, the audio or everything from a backup: verified and staged first, the replaced data kept as a safety net.
    Restore {
        /// db (data/sound_machine.db), sounds (Sounds/) or all (everything in cloud-data/).
        what: RestoreWhat,
        /// The backup: latest, a name in the archive dir, a path, or one on an offsite target as KIND:NAME (s3:NAME, usb:NAME, rsync:NAME; NAME is latest or mss-backup-YYYY-MM-DD_HHMMSS.tar.gz), fetched and checked first.
        #[arg(long, value_name = "ARCHIVE", default_value = "latest")]
        from: String,
        /// Verify and stage, print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long)]
        yes: bool,
        /// Neither stop nor start MSS (stop it yourself first).
        #[arg(long)]
        no_stop: bool,
    },
    /// Show the resolved configuration and where each value came from.
    Config {
        #[command(subcommand)]
        command: Option<ConfigCommand>,
    },
    /// The nightly systemd user timer (03:15 by default, caught up after downtime).
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Copy an existing backup to an offsite target now, then apply that target's retention.
    Copy {
        /// The target, as configured: usb (MSS_BACKUP_USB_PATH), rsync (MSS_BACKUP_RSYNC_DEST) or s3 (MSS_BACKUP_S3_BUCKET).
        #[arg(value_parser = copy_target())]
        target: String,
        /// Archive path or name in the archive dir (default: latest).
        archive: Option<String>,
    },
    /// Write a new age identity (0600) and print its public key, for MSS_BACKUP_ENCRYPT_RECIPIENTS.
    Keygen {
        /// Where to write it (default ~/.config/mss-backup/age-identity.txt); never overwritten.
        path: Option<PathBuf>,
    },
    /// Prepare a USB stick.
    Usb {
        #[command(subcommand)]
        command: UsbCommand,
    },
    /// Check the set-up: config, data, database, free space, lock, each enabled target, the timer.
    Doctor,
    /// Print a shell completion script, e.g. `mss-backup completions bash > /etc/bash_completion.d/mss-backup`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `mss-backup man > /usr/local/share/man/man1/mss-backup.1`.
    Man,
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

/// `local` or a kind of offsite target, for `list --target`.
fn list_target() -> clap::builder::PossibleValuesParser {
    std::iter::once("local")
        .chain(crate::targets::kind_names())
        .collect::<Vec<_>>()
        .into()
}

/// A kind of offsite target, for `copy` and `schedule install --drill`.
fn copy_target() -> clap::builder::PossibleValuesParser {
    crate::targets::kind_names().collect::<Vec<_>>().into()
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented starting config.toml (0600), every setting in it; never over an existing file.
    Init {
        /// Where (default ~/.config/mss-backup/config.toml, or MSS_BACKUP_CONFIG).
        path: Option<PathBuf>,
    },
    /// Print the settings reference (Markdown), as docs/configuration.md holds it.
    #[command(hide = true)]
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum UsbCommand {
    /// Label the stick mounted at PATH: writes PATH/.mss-backup-target, which MSS_BACKUP_USB_LABEL=LABEL then requires.
    Init {
        /// The stick's mount point, e.g. /media/backup-stick.
        path: PathBuf,
        /// A short name for this stick, e.g. mss-stick-1.
        label: String,
    },
}

/// What `restore` puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreWhat {
    /// data/sound_machine.db only.
    Db,
    /// Sounds/ only.
    Sounds,
    /// Everything in cloud-data/.
    All,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Write the user units and ~/.config/mss-backup/env (what it holds, plus this shell's MSS_BACKUP_* and AWS_* variables), then enable the timer.
    Install {
        /// Time of day, 24-hour HH:MM.
        #[arg(long, default_value = "03:15")]
        at: String,
        /// Write only this shell's variables into the env file, dropping the
        /// ones it held (by default they are kept and the shell's go on top).
        #[arg(long)]
        replace: bool,
        /// Also a monthly offsite drill of this target (usb, rsync or s3): a second timer that runs `verify --from KIND:latest`.
        #[arg(long, value_name = "KIND", value_parser = copy_target())]
        drill: Option<String>,
    },
    /// Disable the timers and remove the units, the drill's too (the env file stays).
    Remove,
    /// Show the units, the next run and the last result; exit 1 if not installed.
    Status,
}
