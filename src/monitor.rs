//! Telling monitors about each backup run, so a night without a good backup
//! is noticed without anyone reading logs:
//!
//! - `MSS_BACKUP_PING_URL`: Healthchecks-style pings: `URL/start` once the
//!   run holds the lock, `URL` on success, `URL/fail` on failure with the
//!   run's last `backup.log` lines as the body. A missed ping is what the
//!   monitor alerts on, so a ping that cannot be sent is only logged: it
//!   never fails the backup it reports on.
//! - `MSS_BACKUP_METRICS_FILE`: the run as Prometheus metrics for
//!   node_exporter's textfile collector (see `core::metrics`).
//!
//! The HTTP client lives here, in the binary, not in core: core is linked
//! by every target crate and its conformance suite, and has no business
//! carrying TLS and Mozilla's root certificates; it only says when a run
//! started (`backup::Hooks`) and what happened (`RunStatus`).
//!
//! A Healthchecks URL's path is its secret (a UUID, or a ping key and a
//! slug): whoever knows it can report a backup that never ran. So the path
//! is never logged or printed, only `scheme://host/…`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mss_backup_core::metrics;
use mss_backup_core::status::{self, Outcome, RunStatus};

use crate::config::{ConfigError, Settings};

/// Each ping gives up after this long (a monitor that hangs must not hold
/// the nightly run).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries per ping: one and two retries, for a network that blinked.
const PING_ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The failure ping's body: the run's last log lines, at most this many
/// bytes (Healthchecks keeps the first 100 kB of a body).
const FAIL_BODY_MAX: usize = 10_000;
/// ... and at most this many lines.
const FAIL_BODY_LINES: usize = 40;

/// The monitors configured for this run.
pub struct Monitor {
    ping: Option<Ping>,
    metrics_file: Option<PathBuf>,
}

impl Monitor {
    /// Reads `MSS_BACKUP_PING_URL` and `MSS_BACKUP_METRICS_FILE`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let ping =
            match settings.raw("ping_url")? {
                None => None,
                // The value is not repeated: its path is a secret.
                Some(raw) => Some(Ping::new(&raw.value).map_err(|reason| {
                    ConfigError(format!("{} is not valid: {reason}", raw.origin))
                })?),
            };
        let metrics_file = settings.path("metrics_file")?;
        if let Some(path) = &metrics_file
            && path.extension().is_none_or(|ext| ext != "prom")
        {
            let what = settings
                .raw("metrics_file")?
                .map_or_else(|| "MSS_BACKUP_METRICS_FILE".to_string(), |raw| raw.what);
            return Err(ConfigError(format!(
                "{what} is not valid: node_exporter's textfile collector reads only files ending in .prom (name it like /var/lib/prometheus/node-exporter/mss_backup.prom)"
            )));
        }
        Ok(Self { ping, metrics_file })
    }

    /// No monitors (the demo).
    pub fn none() -> Self {
        Self {
            ping: None,
            metrics_file: None,
        }
    }

    /// Lines for `doctor`: what is configured, secrets redacted.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(ping) = &self.ping {
            lines.push(format!("pings to {}", ping.shown));
        }
        if let Some(path) = &self.metrics_file {
            lines.push(format!("metrics in {}", path.display()));
        }
        lines
    }

    /// The metrics file, if configured.
    pub fn metrics_file(&self) -> Option<&Path> {
        self.metrics_file.as_deref()
    }

    /// The run holds the lock and begins.
    pub fn started(&self) {
        if let Some(ping) = &self.ping {
            ping.send("/start", None);
        }
    }

    /// The run is over: metrics first (a local file, quick), then the
    /// success or failure ping. `log` is `backup.log`, `log_start` where
    /// this run's lines begin in it.
    pub fn finished(
        &self,
        report: &RunStatus,
        previous: Option<&RunStatus>,
        log: &Path,
        log_start: u64,
    ) {
        if let Some(path) = &self.metrics_file {
            match metrics::update(path, report, previous) {
                Ok(()) => tracing::info!(path = %path.display(), "metrics written"),
                Err(e) => warn(&format!(
                    "cannot write the metrics file {}: {e} (check that its directory exists and is writable; the backup itself is unaffected)",
                    path.display()
                )),
            }
        }
        if let Some(ping) = &self.ping {
            match report.status {
                Outcome::Success | Outcome::Skipped => {
                    // A skipped target (a stick not plugged in) is no
                    // failure, but the check's log should still say it.
                    let skipped: Vec<String> = report
                        .targets
                        .iter()
                        .filter(|t| t.status == Outcome::Skipped)
                        .map(|t| format!("{} {}", t.name, t.detail))
                        .collect();
                    let body = skipped.join("\n");
                    ping.send("", (!body.is_empty()).then_some(body.as_str()))
                }
                Outcome::Failure => {
                    let mut body = log_tail(log, log_start);
                    if body.trim().is_empty() {
                        body = report
                            .error
                            .clone()
                            .unwrap_or_else(|| "backup failed (see backup.log)".to_string());
                    }
                    ping.send("/fail", Some(&body));
                }
            }
        }
    }

    /// A run that failed before it could report a status of its own (the
    /// lock file is unusable): the monitor still hears of it.
    pub fn failed_early(&self, error: &str) {
        if let Some(ping) = &self.ping {
            ping.send("/fail", Some(error));
        }
    }
}

/// Where this run's lines will start in `backup.log`.
pub fn log_position(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The last lines this run wrote to `backup.log`, within the body limits.
fn log_tail(log: &Path, start: u64) -> String {
    let mut text = String::new();
    let read = std::fs::File::open(log).and_then(|mut file| {
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if read.is_err() {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(FAIL_BODY_LINES)..].join("\n");
    if tail.len() > FAIL_BODY_MAX {
        let mut cut = tail.len() - FAIL_BODY_MAX;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

fn warn(message: &str) {
    tracing::warn!("{message}");
    if !crate::progress::quiet() {
        eprintln!("warning: {message}");
    }
}

/// `scheme://host[:port]/…`: a URL with its secret path hidden.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the authority are as secret as the path.
    let host = authority.rsplit('@').next().unwrap_or_default();
    if rest.len() > authority.len() {
        format!("{scheme}://{host}/…")
    } else {
        format!("{scheme}://{host}")
    }
}

/// The HTTP client of the binary (pings, MSS's health check): rustls on
/// aws-lc, the crypto opendal's reqwest already brings, and the web's root
/// certificates, so https works on a machine without a CA bundle.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::WebPki)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent(concat!("mss-backup/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// A Healthchecks-style ping URL and the client that sends to it.
struct Ping {
    /// The URL without a trailing `/`, so suffixes append cleanly.
    base: String,
    /// The same, redacted, for logs.
    shown: String,
    agent: ureq::Agent,
}

impl Ping {
    fn new(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("it must start with https:// (or http://), like https://hc-ping.com/UUID")?;
        if rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .is_empty()
        {
            return Err("it has no host".to_string());
        }
        if url.contains(['?', '#']) {
            return Err(
                "it must not have a query or fragment: /start and /fail are appended to it"
                    .to_string(),
            );
        }
        let base = url.trim_end_matches('/').to_string();
        let agent = http_agent(PING_TIMEOUT);
        Ok(Self {
            shown: redact(&base),
            base,
            agent,
        })
    }

    /// Sends one ping, retrying briefly; logs and otherwise ignores a
    /// failure.
    fn send(&self, suffix: &str, body: Option<&str>) {
        let what = match suffix {
            "" => "success",
            "/start" => "start",
            _ => "failure",
        };
        let url = format!("{}{suffix}", self.base);
        let mut pause = RETRY_PAUSE;
        let mut last_error = String::new();
        for attempt in 1..=PING_ATTEMPTS {
            let result = match body {
                Some(body) => self
                    .agent
                    .post(&url)
                    .header("Content-Type", "text/plain; charset=utf-8")
                    .send(body),
                None => self.agent.get(&url).call(),
            };
            match result {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(url = %self.shown, "{what} ping sent");
                    return;
                }
                Ok(response) => last_error = format!("HTTP status {}", response.status()),
                Err(ureq::Error::StatusCode(code)) => {
                    last_error = format!("HTTP status {code}");
                    // A 4xx (a wrong or deleted check) will not mend itself.
                    if (400..500).contains(&code) {
                        break;
                    }
                }
                Err(e) => last_error = e.to_string().replace(&self.base, &self.shown),
            }
            if attempt < PING_ATTEMPTS {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
        warn(&format!(
            "the {what} ping to {}{suffix} failed: {last_error} (the backup itself is unaffected; check MSS_BACKUP_PING_URL and the network)",
            self.shown
        ));
    }
}

/// What the nightly monitor needs from before the run: the previous
/// status (for "last success") and where this run's log lines begin.
pub struct Before {
    pub previous: Option<RunStatus>,
    pub log_start: u64,
}

impl Before {
    pub fn capture(backup_dir: &Path) -> Self {
        Self {
            previous: status::read(backup_dir).ok().flatten(),
            log_start: log_position(&backup_dir.join(status::LOG_FILE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://hc-ping.com/5f0c7d9e-1111-2222-3333-444455556666"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            redact("https://user:pw@hc.example.net:8000/ping/key/slug"),
            "https://hc.example.net:8000/…"
        );
        assert_eq!(redact("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(redact("hc-ping.com/x"), "(not a URL)");
    }

    #[test]
    fn ping_urls_are_checked() {
        assert!(Ping::new("https://hc-ping.com/abc").is_ok());
        assert!(Ping::new("http://127.0.0.1:8000/ping/abc/").is_ok());
        assert!(Ping::new("hc-ping.com/abc").is_err());
        assert!(Ping::new("https:///abc").is_err());
        assert!(Ping::new("https://hc-ping.com/abc?create=1").is_err());
        let ping = Ping::new("https://hc-ping.com/abc/").unwrap();
        assert_eq!(ping.base, "https://hc-ping.com/abc");
    }

    #[test]
    fn the_fail_body_is_this_runs_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("backup.log");
        std::fs::write(&log, "old run\n").unwrap();
        let start = log_position(&log);
        let mut text = std::fs::read_to_string(&log).unwrap();
        for i in 0..100 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, start);
        assert!(!tail.contains("old run"));
        assert!(tail.ends_with("line 99"));
        assert_eq!(tail.lines().count(), FAIL_BODY_LINES);
    }
}
