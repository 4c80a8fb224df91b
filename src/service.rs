//! MSS as a service a restore stops, starts and checks: the operator's
//! stop and start commands (run by `sh -c` in the project dir, their output
//! echoed and logged) and MSS's health URL, polled until it answers 2xx.
//! Nothing else in the tool runs operator commands or talks to MSS.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Settings, parse_duration};
use crate::interrupted;

/// Stops MSS before the swap (`MSS_BACKUP_STOP_CMD`).
pub const DEFAULT_STOP_CMD: &str = "docker compose down";
/// Starts MSS after it (`MSS_BACKUP_START_CMD`).
pub const DEFAULT_START_CMD: &str = "docker compose up -d";
/// Must answer 2xx once MSS is back (`MSS_BACKUP_HEALTH_URL`).
pub const DEFAULT_HEALTH_URL: &str = "http://localhost:8080/api/trackpacks";
/// How long MSS gets to answer (`MSS_BACKUP_HEALTH_TIMEOUT`).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// How MSS is stopped, started and checked.
#[derive(Debug, Clone)]
pub struct Service {
    pub stop: String,
    pub start: String,
    pub health: HealthUrl,
    pub health_timeout: Duration,
}

impl Service {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let health_text = settings
            .string("health_url")?
            .unwrap_or_else(|| DEFAULT_HEALTH_URL.to_string());
        let health = HealthUrl::parse(&health_text).map_err(|reason| {
            let what = settings
                .raw("health_url")
                .ok()
                .flatten()
                .map(|raw| raw.what)
                .unwrap_or_else(|| format!("MSS_BACKUP_HEALTH_URL={health_text}"));
            ConfigError(format!("{what} is not valid: {reason}"))
        })?;
        let health_timeout = match settings.raw("health_timeout")? {
            None => DEFAULT_HEALTH_TIMEOUT,
            Some(raw) => {
                let value = raw.value.trim();
                let parsed = if value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse().ok().map(Duration::from_secs)
                } else {
                    parse_duration(value)
                };
                parsed.filter(|d| !d.is_zero()).ok_or_else(|| {
                    ConfigError(format!(
                        "{} is not valid: use seconds or a number with a unit, like 120, 90s or 3m",
                        raw.what
                    ))
                })?
            }
        };
        Ok(Self {
            stop: settings
                .string("stop_cmd")?
                .unwrap_or_else(|| DEFAULT_STOP_CMD.to_string()),
            start: settings
                .string("start_cmd")?
                .unwrap_or_else(|| DEFAULT_START_CMD.to_string()),
            health,
            health_timeout,
        })
    }
}

/// Runs an operator command with `sh -c` in `dir`, echoing its output to
/// stderr and the log; `Err` says how it failed.
pub fn run_hook(what: &str, command: &str, dir: &Path) -> Result<(), String> {
    tracing::info!(command, dir = %dir.display(), "running the {what} command");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null());
    // A signal stops the command, unless one came already: then this is
    // the command that puts MSS back, which must run to its end.
    let output = if interrupted::received().is_some() {
        sh.output()
    } else {
        mss_backup_core::interrupt::output(&mut sh)
    }
    .map_err(|e| format!("could not be run: {e}"))?;
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("  | {line}");
            tracing::info!("{what}: {line}");
        }
    }
    if output.status.success() {
        return Ok(());
    }
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "a signal".to_string(),
    };
    Err(format!("failed ({status})"))
}

/// MSS's health URL: a plain `http://host[:port]/path` (MSS's health
/// endpoint is local), checked when it is read so that a typo is found
/// before anything is stopped, not after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUrl {
    pub text: String,
}

impl HealthUrl {
    fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("https://") {
            return Err(
                "https is not supported for the health check; use MSS's local http:// address, like http://localhost:8080/api/trackpacks".to_string(),
            );
        }
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            "it must be an http:// URL, like http://localhost:8080/api/trackpacks".to_string()
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err("it must name a host, like localhost:8080 (no user name)".to_string());
        }
        let port = match authority.strip_prefix('[') {
            Some(v6) => {
                let (_, after) = v6
                    .split_once(']')
                    .ok_or_else(|| "its IPv6 address lacks a closing ]".to_string())?;
                after.strip_prefix(':')
            }
            None => authority.rsplit_once(':').map(|(_, port)| port),
        };
        if let Some(port) = port
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(format!("its port {port:?} is not a number from 1 to 65535"));
        }
        Ok(Self {
            text: text.to_string(),
        })
    }
}

/// Asks `url` once a second until it answers 2xx (returns the status and
/// how long it took) or `timeout` passes (returns the last answer or error).
pub fn poll_health(url: &HealthUrl, timeout: Duration) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let agent = crate::monitor::http_agent(
            left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
        );
        let last = match agent.get(&url.text).call() {
            Ok(answer) if answer.status().is_success() => {
                return Ok((answer.status().as_u16(), started.elapsed()));
            }
            Ok(answer) => format!("HTTP {}", answer.status().as_u16()),
            Err(ureq::Error::StatusCode(code)) => format!("HTTP {code}"),
            Err(e) => e.to_string(),
        };
        tracing::info!(url = %url.text, "health check: {last}");
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() || interrupted::received().is_some() {
            return Err(last);
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_urls_are_checked_before_anything_is_stopped() {
        for good in [
            "http://localhost:8080/api/trackpacks",
            "http://[::1]:9000",
            "http://mss/",
        ] {
            assert_eq!(HealthUrl::parse(good).unwrap().text, good);
        }
        for bad in [
            "localhost:8080",
            "http://mss:99999/",
            "http://user@mss/",
            "http:///x",
            "https://mss/",
        ] {
            assert!(HealthUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
