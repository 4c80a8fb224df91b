//! Shell completions and the man page, both generated from the clap
//! definition in `cli.rs` by the installed binary itself
//! (`mss-backup completions bash`, `mss-backup man`), so they always match
//! the version that is installed and packaging needs no source tree.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::config::Settings;

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
    page.extend_from_slice(EXIT_STATUS.as_bytes());
    page.extend_from_slice(environment().as_bytes());
    page.extend_from_slice(FILES.as_bytes());
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

/// The settings reference in Markdown: the table docs/configuration.md
/// holds between its markers (a test keeps the two equal).
pub fn settings_reference() -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let code = |text: &str| format!("`{}`", cell(text));
    let mut out = String::from(
        "| variable | TOML key | takes | default | meaning |\n|---|---|---|---|---|\n",
    );
    for setting in crate::registry::settings() {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            setting.var(),
            setting.key,
            code(setting.value),
            match setting.default {
                words @ ("off" | "none") => words.to_string(),
                words if words.starts_with("the ") => words.to_string(),
                value => code(value),
            },
            cell(setting.help)
        ));
    }
    out
}

/// `config init [PATH]`: a starting config.toml with every setting as a
/// comment, written 0600 and never over an existing file (a config may
/// hold keys, and an operator's file is never replaced).
pub fn config_init(settings: &Settings, path: Option<&Path>) -> Result<ExitCode> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => settings
            .file
            .clone()
            .unwrap_or_else(|| settings.home.join(crate::config::DEFAULT_CONFIG_FILE)),
    };
    let mut text = String::from(
        "# mss-backup settings (TOML). Every line below is a comment showing a\n\
         # setting and its default: remove the leading `# ` to set one. The same\n\
         # setting as an environment variable (MSS_BACKUP_ + upper case) wins over\n\
         # this file. `mss-backup config` shows what is in force; keep this file\n\
         # 0600 if it holds keys.\n",
    );
    let in_file = crate::registry::settings()
        .filter(|s| !mss_backup_core::setting::ENV_ONLY.contains(&s.key));
    for setting in in_file {
        text.push_str(&format!(
            "\n# {} ({})\n# {} = {}\n",
            setting.help.replace('\n', " "),
            setting.value,
            setting.key,
            toml_example(setting)
        ));
    }
    if let Some(dir) = path.parent() {
        mss_backup_core::durable::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = match mss_backup_core::durable::create_new_private(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(crate::config::ConfigError(format!(
                "{} already exists and is left as it is (edit it, or move it away and run `mss-backup config init` again)",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Wrote {} (0600): every setting, commented out; `mss-backup config` shows what is in force",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A value for the commented line: the default where it is a value, else
/// the form it takes, quoted as TOML wants a string.
fn toml_example(setting: &mss_backup_core::Setting) -> String {
    let value = match setting.default {
        "off" | "none" | "" => setting.value,
        d if d.contains('<') || (d.contains(' ') && !d.starts_with("docker")) => setting.value,
        d => d,
    };
    if value.parse::<f64>().is_ok() || matches!(value, "true" | "false") {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

/// The ENVIRONMENT section: every setting of the registry, so the page
/// cannot miss one.
fn environment() -> String {
    let mut out = String::from(
        ".SH ENVIRONMENT\n\
         Every setting is an \\fBMSS_BACKUP_*\\fR variable, or the same key in lower case without the prefix in the TOML file (\\fBretention = 14\\fR). \
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
    for kind in &crate::targets::KINDS {
        for var in kind.outside_vars {
            let help = format!(
                "Read by the {} target, where its own settings leave it to the standard variables of that service's tools{}.",
                kind.name,
                if kind.outside_secrets.contains(var) {
                    "; never printed"
                } else {
                    ""
                }
            );
            entry(var, "VALUE", &help);
        }
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
.TP
\fB130\fR, \fB143\fR
Stopped by SIGINT (Ctrl\-C) or SIGTERM (\fBsystemctl stop\fR): partial files were removed, earlier backups are untouched.
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
