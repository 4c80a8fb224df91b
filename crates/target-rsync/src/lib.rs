//! A directory on another machine (a NAS, a second VM) as an mss-backup
//! target, reached with the system's own `rsync` and `ssh`: nothing to
//! install on the remote side but sshd and rsync, keys and host keys handled
//! by OpenSSH as the operator already configured them. ssh always runs with
//! `BatchMode=yes` (a missing key fails at once instead of waiting for a
//! password prompt that never comes at 3 AM) and a connect timeout.
//!
//! A partial upload never appears under a backup's name: rsync writes each
//! file to a hidden temp name (`.NAME.XXXXXX`) in the destination directory,
//! checks it against the sender's whole-file checksum, and only then renames
//! it; an interrupted transfer removes the temp file (rsync runs without
//! `--partial` and `--inplace`). The archive goes first and the sidecar
//! last, so a listing, which counts only archives with a sidecar, never sees
//! an incomplete backup; an archive whose sidecar could not follow is
//! removed again, since retention, which goes by the listing, never would.
//! Listing uses `rsync --list-only`; creating the directory and deleting
//! use `mkdir`/`rm` over ssh.

mod shell;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mss_backup_core::plugin::{BuildContext, Built, Invalid, TargetPlugin};
use mss_backup_core::setting::{Setting, Shown};
use mss_backup_core::{Artifact, ArtifactName, Target, TargetError};
use serde::{Deserialize, Serialize};

/// Seconds ssh waits for the TCP connection and the SSH handshake.
pub const CONNECT_TIMEOUT_SECS: u32 = 10;
/// Seconds rsync waits for data before giving up on a stalled transfer,
/// unless `MSS_BACKUP_RSYNC_TIMEOUT` says otherwise.
pub const IO_TIMEOUT_SECS: u64 = 120;

/// The rsync target's settings; `rsync_dest` switches it on.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "rsync_dest",
        value: "[USER@]HOST:/PATH",
        default: "off",
        help: "`[user@]host:/path`, e.g. `backup@nas:/srv/mss`: switches rsync over SSH on",
        shown: Shown::Plain,
    },
    Setting {
        key: "rsync_rsh",
        value: "COMMAND",
        default: "ssh",
        help: "the remote shell command, like rsync's `RSYNC_RSH`: `ssh -p 2222 -i /home/mss/.ssh/mss_backup`",
        shown: Shown::Plain,
    },
    Setting {
        key: "rsync_timeout",
        value: "SECONDS",
        default: "120",
        help: "seconds (or `90s`, `5m`) a transfer may stall, no data moving, before rsync gives up on it",
        shown: Shown::Plain,
    },
    Setting {
        key: "rsync_retention",
        value: "N",
        default: "the local retention",
        help: "backups kept on the remote side",
        shown: Shown::Plain,
    },
];

/// Where backups go and how to get there. Plain data; nothing in it is
/// secret (`BatchMode=yes` rules out passwords, so credentials live in key
/// files that are only named here).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[user@]host:path`, e.g. `backup@nas:/srv/mss` (`MSS_BACKUP_RSYNC_DEST`).
    /// A relative path (or `~/path`) is relative to the remote home.
    pub dest: String,
    /// The remote shell command, e.g. `ssh -p 2222 -i ~/.ssh/mss_backup`
    /// (`MSS_BACKUP_RSYNC_RSH`); default `ssh`.
    pub rsh: Option<String>,
    /// How long a transfer may stall before rsync gives up, as written:
    /// `120`, `90s`, `5m` (`MSS_BACKUP_RSYNC_TIMEOUT`); default
    /// [`IO_TIMEOUT_SECS`].
    #[serde(default)]
    pub timeout: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand like every target's Config, so a secret added
        // later is never printed by accident.
        f.debug_struct("Config")
            .field("dest", &self.dest)
            .field("rsh", &self.rsh)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A destination or remote shell that cannot work; the binary adds which
/// variable holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} (use [user@]host:/path, like backup@nas:/srv/mss)")]
    Dest(String),
    #[error("{0} (use a command like: ssh -p 2222 -i /home/mss/.ssh/mss_backup)")]
    Rsh(String),
    #[error("{0:?} is not a timeout (use a number of seconds, like 120, or with a unit: 5m)")]
    Timeout(String),
}

/// The rsync kind: `MSS_BACKUP_RSYNC_*`, `--target rsync`, `copy rsync`.
pub struct Rsync;

impl TargetPlugin for Rsync {
    const KIND: &'static str = "rsync";
    const SWITCH: &'static str = "rsync_dest";
    const HINT: &'static str = "[user@]host:/path, like backup@nas:/srv/mss";
    const SETTINGS: &'static [Setting] = SETTINGS;
    type Config = Config;

    fn build(config: Config, _: &BuildContext) -> Result<Built, Invalid> {
        let target = RsyncTarget::new(config).map_err(|e| match e {
            ConfigError::Dest(_) => Invalid::of("rsync_dest", e.to_string()),
            ConfigError::Rsh(_) => Invalid::of("rsync_rsh", e.to_string()),
            ConfigError::Timeout(_) => Invalid::of("rsync_timeout", e.to_string()),
        })?;
        Ok(Built {
            at: None,
            description: format!("remote shell: {}", target.shell_command()),
            target: Box::new(target),
        })
    }
}

/// `[user@]host` and the directory on it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    host: String,
    dir: String,
}

impl Remote {
    fn parse(dest: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| Err(ConfigError::Dest(reason.to_string()));
        if dest.contains("://") {
            return bad("URLs are not supported, only rsync over SSH");
        }
        if dest.contains(['\n', '\r', '\0']) {
            return bad("it contains a line break");
        }
        let Some((host, path)) = dest.split_once(':') else {
            return bad("it has no `:` between the host and the path");
        };
        if host.is_empty() || host.ends_with('@') {
            return bad("the host is empty");
        }
        if host.starts_with('@') {
            return bad("the user is empty");
        }
        if host.contains('/') {
            return bad("it looks like a local path; the target needs a remote host");
        }
        if host.starts_with('-') || host.contains(char::is_whitespace) {
            return bad("the host is not a host name");
        }
        if path.starts_with(':') {
            return bad("host::module is an rsync daemon module; only rsync over SSH is supported");
        }
        // The remote shell would expand `~`, but we quote paths, so say
        // what it means: relative to the remote home.
        let path = match path {
            "~" => ".",
            p => p.strip_prefix("~/").unwrap_or(p),
        };
        let trimmed = path.trim_end_matches('/');
        let dir = match (path, trimmed) {
            ("", _) => return bad("the path is empty"),
            (_, "") => "/",
            (_, t) => t,
        };
        Ok(Self {
            host: host.to_string(),
            dir: dir.to_string(),
        })
    }

    /// The host without the user, for messages about connecting.
    fn host_name(&self) -> &str {
        self.host
            .rsplit_once('@')
            .map_or(self.host.as_str(), |(_, h)| h)
    }

    /// `dir/file` on the remote side.
    fn path(&self, file: &str) -> String {
        if self.dir.ends_with('/') {
            format!("{}{file}", self.dir)
        } else {
            format!("{}/{file}", self.dir)
        }
    }

    /// `host:dir/`: the directory's contents, as rsync takes it.
    fn dir_spec(&self) -> String {
        format!("{}:{}/", self.host, self.dir.trim_end_matches('/'))
    }

    /// `host:dir/file`, as rsync takes it.
    fn spec(&self, file: &str) -> String {
        format!("{}:{}", self.host, self.path(file))
    }
}

/// Backups in a directory on a remote host, through rsync and ssh.
#[derive(Debug, Clone)]
pub struct RsyncTarget {
    config: Config,
    name: String,
    remote: Remote,
    /// The remote shell's argv, our options included.
    shell: Vec<String>,
    /// rsync's `--timeout`: seconds a transfer may stall.
    io_timeout: u64,
}

impl RsyncTarget {
    /// Checks the destination and remote shell command; touches nothing.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let remote = Remote::parse(&config.dest)?;
        let io_timeout = match config.timeout.as_deref() {
            None => IO_TIMEOUT_SECS,
            Some(text) => parse_timeout(text).ok_or_else(|| ConfigError::Timeout(text.into()))?,
        };
        let words = shell::split(config.rsh.as_deref().unwrap_or("ssh"))
            .map_err(|reason| ConfigError::Rsh(reason.to_string()))?;
        let (program, args) = words
            .split_first()
            .ok_or_else(|| ConfigError::Rsh("it is empty".to_string()))?;
        // ssh takes the first value it sees for an option: BatchMode goes
        // first so the operator's command cannot turn it off; the timeouts
        // go last so the operator's own values win.
        let mut shell = vec![program.clone(), "-o".into(), "BatchMode=yes".into()];
        shell.extend(args.iter().cloned());
        for option in [
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
        ] {
            shell.push("-o".into());
            shell.push(option);
        }
        Ok(Self {
            name: format!("rsync:{}", config.dest),
            config,
            remote,
            shell,
            io_timeout,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The remote shell command as rsync is given it (`-e`).
    pub fn shell_command(&self) -> String {
        shell::join(&self.shell)
    }

    fn unavailable(&self, reason: impl Into<String>) -> TargetError {
        TargetError::Unavailable {
            target: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn failed(&self, action: impl Into<String>, detail: impl Into<String>) -> TargetError {
        TargetError::Failed {
            target: self.name.clone(),
            action: action.into(),
            detail: detail.into(),
        }
    }

    /// rsync and the remote shell are installed here.
    fn check_programs(&self) -> Result<(), TargetError> {
        if find_program("rsync").is_none() {
            return Err(self.unavailable(
                "rsync is not installed on this machine (install it: sudo apt install rsync)",
            ));
        }
        let program = &self.shell[0];
        if find_program(program).is_none() {
            return Err(self.unavailable(if program == "ssh" {
                "ssh is not installed on this machine (install it: sudo apt install openssh-client)"
                    .to_string()
            } else {
                format!(
                    "the remote shell {program:?} from MSS_BACKUP_RSYNC_RSH is not installed or not in PATH"
                )
            }));
        }
        Ok(())
    }

    /// Runs `command`, capturing its output, in the C locale so that the
    /// messages we recognise are in English. A stop signal stops it (rsync
    /// then drops its temp file on the other side).
    fn output(&self, mut command: Command, action: &str) -> Result<Output, TargetError> {
        let program = command.get_program().to_string_lossy().into_owned();
        command.env("LC_ALL", "C");
        mss_backup_core::interrupt::output(&mut command).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.unavailable(format!(
                    "{program} is not installed on this machine or not in PATH"
                ))
            } else {
                self.failed(action, format!("cannot run {program}: {e}"))
            }
        })
    }

    /// Runs a POSIX shell command on the remote host.
    fn ssh(&self, script: &str, action: &str) -> Result<Output, TargetError> {
        let mut command = Command::new(&self.shell[0]);
        command
            .args(&self.shell[1..])
            .arg(&self.remote.host)
            .arg(script);
        self.output(command, action)
    }

    /// Runs rsync with our remote shell and the given arguments.
    fn rsync(&self, args: &[OsString], action: &str) -> Result<String, TargetError> {
        let mut command = Command::new("rsync");
        command
            .arg(format!("--timeout={}", self.io_timeout))
            .arg("-e")
            .arg(self.shell_command())
            .args(args);
        let out = self.output(command, action)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(self.explain(&stderr, out.status.code(), action))
    }

    /// One line for a failed ssh or rsync: what happened, where, the fix.
    fn explain(&self, stderr: &str, code: Option<i32>, action: &str) -> TargetError {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
            .collect();
        let find = |needle: &str| lines.iter().find(|l| l.contains(needle)).copied();
        let host = self.remote.host_name();
        let user_host = &self.remote.host;
        // rsync's own code for "no data moved for --timeout seconds".
        if code == Some(30) || find("timeout in data send/receive").is_some() {
            return self.failed(
                action,
                format!(
                    "the transfer stalled: no data moved for {} s (is {host} still reachable? on a slow or busy line raise MSS_BACKUP_RSYNC_TIMEOUT)",
                    self.io_timeout
                ),
            );
        }
        // ssh's keep-alive gave up on a connection that went silent: rsync
        // then only reports the broken pipe it was left with.
        if let Some(line) = lines
            .iter()
            .find(|l| l.starts_with("Timeout, server") && l.contains("not responding"))
        {
            return self.failed(
                action,
                format!(
                    "the connection to {host} stalled: ssh's keep-alive got no answer ({line}); is {host} still reachable?"
                ),
            );
        }
        if let Some(line) = lines.iter().find(|l| is_auth_refusal(l)) {
            return self.unavailable(format!(
                "{user_host} refused the SSH key ({line}); check the key (-i) in MSS_BACKUP_RSYNC_RSH and authorized_keys on {host}"
            ));
        }
        if let Some(line) = find("Connection refused") {
            return self.unavailable(format!(
                "cannot connect to {host}: connection refused ({line}); is sshd running there, and is the port right?"
            ));
        }
        if let Some(line) = find("timed out") {
            return self.unavailable(format!(
                "cannot connect to {host}: no answer ({line}); is it switched on and reachable?"
            ));
        }
        if let Some(line) = find("Could not resolve hostname") {
            return self.unavailable(format!(
                "cannot find host {host} ({line}); check MSS_BACKUP_RSYNC_DEST"
            ));
        }
        if let Some(line) = find("No route to host").or_else(|| find("Network is unreachable")) {
            return self.unavailable(format!("cannot reach {host} ({line}); check the network"));
        }
        if find("Host key verification failed").is_some() {
            return self.unavailable(format!(
                "the host key of {host} is not known here or has changed; check it, then add it to known_hosts (ssh-keyscan {host} >> ~/.ssh/known_hosts)"
            ));
        }
        if find("rsync: command not found")
            .or_else(|| find("rsync: not found"))
            .is_some()
        {
            return self.unavailable(format!(
                "rsync is not installed on {host} (install it there)"
            ));
        }
        // rsync's own first error says what failed; ssh's last line does.
        let detail = lines
            .iter()
            .find(|l| l.starts_with("rsync:") || l.starts_with("rsync error:"))
            .or_else(|| lines.last())
            .map(|l| l.to_string())
            .unwrap_or_else(|| match code {
                Some(code) => format!("exit status {code}, no message"),
                None => "killed by a signal".to_string(),
            });
        self.failed(action, detail)
    }

    /// Copies one local file to `name` in the remote directory. With
    /// `--fuzzy`, rsync takes the most similar file there (last night's
    /// backup) as the basis of its delta, so only what changed crosses the
    /// network: the archive's gzip members follow files (see
    /// `mss_backup_core::archive`), so an unchanged file is the same bytes
    /// in both. `--stats` says how much was sent; the log keeps it.
    fn upload(&self, local: &Path, name: &str) -> Result<(), TargetError> {
        let action = format!("uploading {name}");
        let stats = self.rsync(
            &[
                "--fuzzy".into(),
                "--stats".into(),
                "--".into(),
                local.as_os_str().to_owned(),
                self.remote.spec(name).into(),
            ],
            &action,
        )?;
        if let Some((literal, total)) = literal_data(&stats)
            && total > 0
        {
            tracing::info!(
                target = %self.name,
                "{name}: rsync sent {literal} of {total} bytes as new data ({:.1}%), the rest matched what is there",
                100.0 * literal as f64 / total as f64
            );
        }
        Ok(())
    }

    /// Copies `name` from the remote directory to the local file `dest`.
    fn download(&self, name: &str, dest: &Path) -> Result<(), TargetError> {
        self.rsync(
            &[
                "--".into(),
                self.remote.spec(name).into(),
                dest.as_os_str().to_owned(),
            ],
            &format!("downloading {name}"),
        )
        .map(|_| ())
    }
}

/// `Literal data` and `Total file size` from rsync's `--stats`.
fn literal_data(stats: &str) -> Option<(u64, u64)> {
    let figure = |label: &str| {
        stats.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(label)?;
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
    };
    Some((figure("Literal data:")?, figure("Total file size:")?))
}

impl Target for RsyncTarget {
    fn name(&self) -> &str {
        &self.name
    }

    /// rsync and ssh are here, the host answers, takes the key, has rsync,
    /// and the directory exists (created if missing).
    fn preflight(&self) -> Result<(), TargetError> {
        self.check_programs()?;
        let dir = shell::sh_quote(&self.remote.dir);
        let script = format!(
            "mkdir -p -m 700 -- {dir} || exit 2; command -v rsync >/dev/null 2>&1 || exit 3"
        );
        let action = format!("preparing {} on {}", self.remote.dir, self.remote.host);
        let out = self.ssh(&script, &action)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => Ok(()),
            Some(2) => Err(self.failed(
                format!("creating {} on {}", self.remote.dir, self.remote.host),
                stderr.lines().last().unwrap_or("mkdir failed").trim(),
            )),
            Some(3) => Err(self.unavailable(format!(
                "rsync is not installed on {} (install it there)",
                self.remote.host_name()
            ))),
            code => Err(self.explain(&stderr, code, &action)),
        }
    }

    fn put(&self, artifact: &Artifact) -> Result<(), TargetError> {
        let file_name = artifact.name.file_name();
        self.upload(&artifact.archive, &file_name)?;
        // The sidecar goes last: its presence marks a complete backup.
        let sidecar = self.upload(&artifact.sidecar, &artifact.name.sidecar_name());
        if sidecar.is_err() {
            // An archive without its sidecar is never listed, so retention
            // would never delete it: it would stay for good. Best effort,
            // as after a stop signal the clean-up is stopped too.
            let script = format!(
                "rm -f -- {}",
                shell::sh_quote(&self.remote.path(&file_name))
            );
            let _ = self.ssh(&script, &format!("deleting {file_name}"));
        }
        sidecar
    }

    fn list(&self) -> Result<Vec<ArtifactName>, TargetError> {
        let listing = self.rsync(
            &[
                "--list-only".into(),
                "--".into(),
                self.remote.dir_spec().into(),
            ],
            &format!("listing {}", self.remote.dir),
        )?;
        Ok(complete_backups(&listing))
    }

    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError> {
        if !self.list()?.contains(name) {
            return Err(TargetError::NotFound {
                target: self.name.clone(),
                name: name.file_name(),
            });
        }
        // Both to hidden names and checked before either is named: a
        // dropped connection or a copy that rotted over there leaves
        // nothing under a backup's name here.
        mss_backup_core::target::fetch_checked(&self.name, name, dest_dir, |archive, sidecar| {
            self.download(&name.sidecar_name(), sidecar)?;
            self.download(&name.file_name(), archive)
        })
    }

    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        // Sidecar first: an archive without one is incomplete, never listed.
        let script = format!(
            "rm -f -- {} {}",
            shell::sh_quote(&self.remote.path(&name.sidecar_name())),
            shell::sh_quote(&self.remote.path(&name.file_name()))
        );
        let action = format!("deleting {name}");
        let out = self.ssh(&script, &action)?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.explain(
            &String::from_utf8_lossy(&out.stderr),
            out.status.code(),
            &action,
        ))
    }
}

/// `120` (seconds), or with a unit: `90s`, `5m`; never zero, which rsync
/// would take as "wait for ever".
fn parse_timeout(text: &str) -> Option<u64> {
    let text = text.trim();
    let seconds = match text.parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => mss_backup_core::setting::parse_duration(text)?.as_secs(),
    };
    (seconds > 0).then_some(seconds)
}

/// ssh's `user@host: Permission denied (publickey,password).`, not a
/// file's `Permission denied (13)`.
fn is_auth_refusal(line: &str) -> bool {
    let Some((_, rest)) = line.split_once("Permission denied (") else {
        return false;
    };
    let methods = rest.split(')').next().unwrap_or_default();
    !methods.is_empty()
        && methods
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ',' || c == '-')
}

/// The backups in an `rsync --list-only` listing that have their sidecar.
fn complete_backups(listing: &str) -> Vec<ArtifactName> {
    let files: Vec<&str> = listing.lines().filter_map(regular_file_name).collect();
    let mut names: Vec<ArtifactName> = files
        .iter()
        .filter_map(|f| ArtifactName::parse(f))
        .filter(|n| files.contains(&n.sidecar_name().as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The name in one `--list-only` line if it is a regular file:
/// `-rw------- 1,234,567 2026/02/10 20:33:50 NAME` (mode, size, date, time,
/// one space, the name as rsync prints it).
fn regular_file_name(line: &str) -> Option<&str> {
    let mut rest = line;
    let mut mode = "";
    for i in 0..4 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        if i == 0 {
            mode = &rest[..end];
        }
        rest = &rest[end..];
    }
    let name = rest.strip_prefix(' ')?;
    (mode.starts_with('-') && !name.is_empty()).then_some(name)
}

/// The path of `program` if it can be run: as given when it has a `/`,
/// else the first match in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return runnable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delta_figures_are_read_from_rsyncs_stats() {
        let stats = "\nNumber of files: 1 (reg: 1)\nTotal file size: 118,573,355 bytes\nTotal transferred file size: 118,573,355 bytes\nLiteral data: 2,817,275 bytes\nMatched data: 115,756,080 bytes\n";
        assert_eq!(literal_data(stats), Some((2_817_275, 118_573_355)));
        assert_eq!(literal_data("sent 10 bytes"), None);
    }

    fn target(dest: &str, rsh: Option<&str>) -> RsyncTarget {
        RsyncTarget::new(Config {
            dest: dest.to_string(),
            rsh: rsh.map(str::to_string),
            timeout: None,
        })
        .unwrap()
    }

    #[test]
    fn destinations_parse_or_say_why_not() {
        let r = Remote::parse("backup@nas:/srv/mss/").unwrap();
        assert_eq!(
            (r.host.as_str(), r.dir.as_str()),
            ("backup@nas", "/srv/mss")
        );
        assert_eq!(r.host_name(), "nas");
        assert_eq!(r.spec("x"), "backup@nas:/srv/mss/x");
        assert_eq!(Remote::parse("nas:backups/mss").unwrap().dir, "backups/mss");
        assert_eq!(Remote::parse("nas:~/backups").unwrap().dir, "backups");
        assert_eq!(Remote::parse("nas:/").unwrap().path("x"), "/x");
        for (bad, why) in [
            ("/srv/mss", "no `:`"),
            ("nas", "no `:`"),
            (":/srv", "host is empty"),
            ("backup@:/srv", "host is empty"),
            ("@nas:/srv", "user is empty"),
            ("./a:b", "local path"),
            ("-oProxyCommand=x:/srv", "not a host name"),
            ("nas::module", "daemon module"),
            ("rsync://nas/mss", "URLs"),
            ("nas:", "path is empty"),
        ] {
            let err = Remote::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("like backup@nas:/srv/mss"), "{err}");
        }
    }

    #[test]
    fn batch_mode_comes_first_and_timeouts_last() {
        let t = target("nas:/srv", Some("ssh -p 2222 -o BatchMode=no"));
        assert_eq!(
            t.shell_command(),
            "ssh -o BatchMode=yes -p 2222 -o BatchMode=no -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
        );
        assert!(
            target("nas:/srv", None)
                .shell_command()
                .starts_with("ssh -o BatchMode=yes")
        );
        let err = RsyncTarget::new(Config {
            dest: "nas:/srv".into(),
            rsh: Some("ssh -i 'x".into()),
            timeout: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("unclosed"), "{err}");
    }

    #[test]
    fn listing_counts_only_complete_backups_of_ours() {
        let listing = "\
drwx------          4,096 2026/03/01 10:00:00 .
-rw-------    123,456,789 2026/03/01 03:15:04 mss-backup-2026-03-01_031500.tar.gz
-rw-------             99 2026/03/01 03:15:05 mss-backup-2026-03-01_031500.tar.gz.sha256
-rw-------    123,456,789 2026/03/02 03:15:04 mss-backup-2026-03-02_031500.tar.gz
-rw-------              5 2026/03/02 03:15:04 .mss-backup-2026-03-03_031500.tar.gz.Ab12Cd
-rw-------              5 2026/03/02 03:15:04 notes mss-backup-2026-03-04_031500.tar.gz
-rw-------              5 2026/03/02 03:15:04 notes mss-backup-2026-03-04_031500.tar.gz.sha256
lrwxrwxrwx             10 2026/03/02 03:15:04 mss-backup-2026-03-05_031500.tar.gz -> x
-rw-------              5 2026/03/02 03:15:04 mss-backup-2026-03-05_031500.tar.gz.sha256
";
        let names = complete_backups(listing);
        assert_eq!(
            names,
            vec![ArtifactName::parse("mss-backup-2026-03-01_031500.tar.gz").unwrap()]
        );
    }

    #[test]
    fn failures_are_one_clear_line() {
        let t = target("backup@nas:/srv/mss", None);
        let cases = [
            (
                "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\r\nbackup@nas: Permission denied (publickey).\r\n",
                "backup@nas refused the SSH key",
            ),
            (
                "ssh: connect to host nas port 22: Connection refused\n",
                "cannot connect to nas: connection refused",
            ),
            (
                "ssh: connect to host nas port 22: Connection timed out\n",
                "cannot connect to nas: no answer",
            ),
            (
                "ssh: Could not resolve hostname nas: Name or service not known\n",
                "cannot find host nas",
            ),
            (
                "Host key verification failed.\n",
                "the host key of nas is not known here",
            ),
            (
                "bash: line 1: rsync: command not found\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
                "rsync is not installed on nas",
            ),
            (
                "rsync: [receiver] mkstemp \"/srv/mss/.x.AbCd\" failed: Permission denied (13)\nrsync error: some files could not be transferred (code 23)\n",
                "uploading x failed: rsync: [receiver] mkstemp",
            ),
            (
                "Timeout, server nas not responding.\r\nrsync: [sender] write error: Broken pipe (32)\nrsync error: error in socket IO (code 10) at io.c(848) [sender=3.2.7]\n",
                "uploading x failed: the connection to nas stalled: ssh's keep-alive got no answer (Timeout, server nas not responding.); is nas still reachable?",
            ),
            (
                "[sender] io timeout after 120 seconds -- exiting\nrsync error: timeout in data send/receive (code 30) at io.c(201) [sender=3.2.7]\n",
                "uploading x failed: the transfer stalled: no data moved for 120 s (is nas still reachable? on a slow or busy line raise MSS_BACKUP_RSYNC_TIMEOUT)",
            ),
        ];
        for (stderr, expected) in cases {
            let line = t.explain(stderr, Some(255), "uploading x").to_string();
            assert!(line.contains(expected), "{line}");
            assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
            assert!(line.starts_with("rsync:backup@nas:/srv/mss: "), "{line}");
        }
    }

    #[test]
    fn the_stall_timeout_is_seconds_or_a_duration_and_never_zero() {
        let with = |timeout: &str| {
            RsyncTarget::new(Config {
                dest: "nas:/srv".into(),
                rsh: None,
                timeout: Some(timeout.into()),
            })
        };
        assert_eq!(target("nas:/srv", None).io_timeout, 120);
        assert_eq!(with("3").unwrap().io_timeout, 3);
        assert_eq!(with("90s").unwrap().io_timeout, 90);
        assert_eq!(with("5m").unwrap().io_timeout, 300);
        for bad in ["0", "0s", "soon", "-3", ""] {
            let err = with(bad).unwrap_err();
            assert!(matches!(err, ConfigError::Timeout(_)), "{bad}: {err}");
            assert!(err.to_string().contains("like 120"), "{err}");
        }
    }
}
