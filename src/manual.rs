//! Shell completions and the man page, both generated from the clap
//! definition in `cli.rs` by the installed binary itself
//! (`mss-backup completions bash`, `mss-backup man`), so they always match
//! the version that is installed and packaging needs no source tree.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// `mss-backup completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "mss-backup", &mut script);
    crate::out::stdout_bytes(&script).context("cannot write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// `mss-backup man`: the man page (roff) on stdout, with the sections clap
/// does not know about: exit status, environment and files.
///
/// One page for every command: clap_mangen's own SUBCOMMANDS section
/// points at `mss-backup-restore(1)` and the like, pages nobody installs,
/// so each command's synopsis, description and options are rendered here
/// under COMMANDS instead.
pub fn man() -> Result<ExitCode> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .and_then(|()| man.render_options_section(&mut page))
        .and_then(|()| {
            page.extend_from_slice(b".SH COMMANDS\n");
            commands(&cmd, "mss-backup", &mut page)
        })
        .and_then(|()| man.render_version_section(&mut page))
        .context("cannot render the man page")?;
    page.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    crate::out::stdout_bytes(&page).context("cannot write the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// Each visible subcommand of `cmd` (and theirs, as `schedule install`):
/// a `.SS` heading, then clap_mangen's synopsis, description and options
/// without their `.SH` lines, so they sit inside COMMANDS.
fn commands(cmd: &clap::Command, prefix: &str, page: &mut Vec<u8>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{prefix} {}", sub.get_name());
        page.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        // Without their .SH lines, synopsis and description would run on.
        part.extend_from_slice(b".PP\n");
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        for line in String::from_utf8_lossy(&part).lines() {
            if !line.starts_with(".SH ") {
                page.extend_from_slice(line.as_bytes());
                page.push(b'\n');
            }
        }
        commands(sub, &name, page)?;
    }
    Ok(())
}

/// Roff for what a reader of the man page needs beyond the options. The
/// README holds the complete table of variables.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB1\fR
A backup, copy, verify or restore failed; \fBstatus\fR found the last run failed or too old; \fBdoctor\fR found a failing check.
.TP
\fB75\fR
Another mss\-backup run holds the lock; nothing was touched.
.TP
\fB78\fR
Configuration error; nothing was written.
.SH ENVIRONMENT
Every setting is an \fBMSS_BACKUP_*\fR variable (or the same key, lower case and without the prefix, in the TOML file); \fBmss\-backup config\fR shows the resolved values and where each came from.
.TP
\fBMSS_BACKUP_PROJECT_DIR\fR, \fBMSS_BACKUP_DATA_DIR\fR, \fBMSS_BACKUP_DIR\fR
The MSS project, its cloud\-data directory, and where backups, status and log live.
.TP
\fBMSS_BACKUP_RETENTION\fR
Backups kept (default 7).
.TP
\fBMSS_BACKUP_USB_PATH\fR, \fBMSS_BACKUP_RSYNC_DEST\fR, \fBMSS_BACKUP_S3_BUCKET\fR
Switch the offsite targets on.
.TP
\fBMSS_BACKUP_PING_URL\fR
Healthchecks\-style ping URL: /start, success and /fail with the log tail.
.TP
\fBMSS_BACKUP_METRICS_FILE\fR
Prometheus metrics file (ending in .prom) for node_exporter's textfile collector.
.TP
\fBMSS_BACKUP_CONFIG\fR
The TOML file (default ~/.config/mss\-backup/config.toml).
.SH FILES
.TP
\fI~/.config/mss\-backup/env\fR
Settings written by \fBschedule install\fR for the nightly timer (0600); manual runs read it too.
.TP
\fI~/.config/systemd/user/mss\-backup.service\fR, \fI~/.config/systemd/user/mss\-backup.timer\fR
The nightly timer's units.
.TP
\fI~/backups/mss/last_backup.json\fR, \fI~/backups/mss/backup.log\fR
The last run's status and the history of every run.
"#;
