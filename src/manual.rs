//! Shell completions and the man page, both generated from the clap
//! definition in `cli.rs` by the installed binary itself
//! (`mss-backup completions bash`, `mss-backup man`), so they always match
//! the version that is installed and packaging needs no source tree.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// `mss-backup completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "mss-backup", &mut out);
    out.flush().context("cannot write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// `mss-backup man`: the man page (roff) on stdout, with the sections clap
/// does not know about: exit status, environment and files.
pub fn man() -> Result<ExitCode> {
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .context("cannot render the man page")?;
    page.extend_from_slice(EXIT_STATUS.as_bytes());
    page.extend_from_slice(environment().as_bytes());
    page.extend_from_slice(FILES.as_bytes());
    let mut out = io::stdout().lock();
    out.write_all(&page)
        .and_then(|()| out.flush())
        .context("cannot write the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// The ENVIRONMENT section: every setting of the registry, so the page
/// cannot miss one.
fn environment() -> String {
    let mut out = String::from(
        ".SH ENVIRONMENT\n\
         Every setting is an \\fBMSS_BACKUP_*\\fR variable, or the same key in lower case without the prefix in the TOML file (\\fBusb_path = \"/media/stick\"\\fR). \
         A name that is not a setting is an error (exit 78) that names the closest one. \
         Precedence: defaults < TOML file < ~/.config/mss\\-backup/env < environment < flags; \
         \\fBmss\\-backup config\\fR shows the resolved values and where each came from.\n",
    );
    let mut entry = |name: &str, value: &str, text: &str| {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR=\\fI{}\\fR\n{}\n",
            roff(name),
            roff(value),
            roff(text)
        ));
    };
    entry(
        crate::config::CONFIG_VAR,
        "FILE",
        "The TOML file (default ~/.config/mss-backup/config.toml); --config overrides it.",
    );
    for setting in crate::registry::settings() {
        let default = format!("{} (default: {})", setting.help, setting.default);
        entry(&setting.var(), setting.value, &default);
    }
    for var in crate::registry::outside_vars() {
        entry(
            var,
            "VALUE",
            "Read by the S3 target when MSS_BACKUP_S3_ACCESS_KEY_ID is not set; never printed.",
        );
    }
    out
}

/// Text escaped for roff: backslashes and hyphens, and no line that starts
/// with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// Roff for what a reader of the man page needs beyond the options; the
/// ENVIRONMENT section between them is written from the settings table.
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
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
"#;

const FILES: &str = r#".SH FILES
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
