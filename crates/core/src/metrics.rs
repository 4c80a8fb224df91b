//! The last run as Prometheus metrics, for node_exporter's textfile
//! collector: one small `.prom` file in the text exposition format,
//! replaced atomically after every run so a scrape never sees half of it.
//!
//! The file is 0644, unlike everything else mss-backup writes: the
//! collector runs as another user (`prometheus` on Debian) and must read
//! it, and it holds only timestamps, sizes, counts and target names.
//!
//! "Last success" must survive a failed run, so it is carried over from
//! the previous metrics file, or from the previous status file when that
//! run succeeded.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use chrono::DateTime;

use crate::durable;
use crate::status::{Outcome, RunStatus};

/// Mode of the metrics file: readable by node_exporter's user.
pub const METRICS_FILE_MODE: u32 = 0o644;

const LAST_SUCCESS: &str = "mss_backup_last_success_timestamp_seconds";

/// Writes the metrics for `report` to `path` (atomically, 0644).
/// `previous` is the status of the run before this one, if any.
pub fn update(path: &Path, report: &RunStatus, previous: Option<&RunStatus>) -> io::Result<()> {
    let last_success = if report.status == Outcome::Success {
        unix_time(&report.finished_at)
    } else {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| read_last_success(&text))
            .or_else(|| {
                previous
                    .filter(|p| p.status == Outcome::Success)
                    .and_then(|p| unix_time(&p.finished_at))
            })
    };
    durable::write_atomic_with_mode(
        path,
        render(report, last_success).as_bytes(),
        METRICS_FILE_MODE,
    )
}

/// The text exposition of `report`; `last_success` in Unix seconds.
pub fn render(report: &RunStatus, last_success: Option<i64>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(Option<&str>, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (target, value) in samples {
            match target {
                Some(target) => {
                    let _ = writeln!(out, "{name}{{target=\"{}\"}} {value}", escape(target));
                }
                None => {
                    let _ = writeln!(out, "{name} {value}");
                }
            }
        }
    };
    let ok = |outcome: Outcome| f64::from(u8::from(outcome == Outcome::Success));
    gauge(
        "mss_backup_last_run_success",
        "1 if the last backup run succeeded (every target took the backup), 0 if it failed.",
        &[(None, ok(report.status))],
    );
    if let Some(finished) = unix_time(&report.finished_at) {
        gauge(
            "mss_backup_last_run_timestamp_seconds",
            "When the last backup run finished, in Unix time.",
            &[(None, finished as f64)],
        );
    }
    if let Some(success) = last_success {
        gauge(
            LAST_SUCCESS,
            "When the last successful backup run finished, in Unix time.",
            &[(None, success as f64)],
        );
    }
    gauge(
        "mss_backup_last_run_duration_seconds",
        "How long the last backup run took.",
        &[(None, report.duration_seconds)],
    );
    if let Some(size) = report.size_bytes {
        gauge(
            "mss_backup_last_archive_size_bytes",
            "Size of the archive the last run made.",
            &[(None, size as f64)],
        );
    }
    gauge(
        "mss_backup_last_archive_files",
        "Files in the archive the last run made (0 if it made none).",
        &[(None, report.files as f64)],
    );
    gauge(
        "mss_backup_last_run_warnings",
        "Warnings of the last run (missing sections, files that changed while read).",
        &[(None, report.warnings.len() as f64)],
    );
    let targets: Vec<(Option<&str>, f64)> = report
        .targets
        .iter()
        .map(|t| (Some(t.name.as_str()), ok(t.status)))
        .collect();
    gauge(
        "mss_backup_target_success",
        "1 if the target took the last run's backup (and applied its retention), 0 if not.",
        &targets,
    );
    let skipped: Vec<(Option<&str>, f64)> = report
        .targets
        .iter()
        .map(|t| {
            let skipped = t.status == Outcome::Skipped;
            (Some(t.name.as_str()), f64::from(u8::from(skipped)))
        })
        .collect();
    gauge(
        "mss_backup_target_skipped",
        "1 if the target was skipped in the last run because it was not there (a USB stick not plugged in), else 0.",
        &skipped,
    );
    let durations: Vec<(Option<&str>, f64)> = report
        .targets
        .iter()
        .map(|t| (Some(t.name.as_str()), t.duration_seconds))
        .collect();
    gauge(
        "mss_backup_target_duration_seconds",
        "How long the target took in the last run.",
        &durations,
    );
    out
}

/// The last-success timestamp in an earlier metrics file.
fn read_last_success(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(LAST_SUCCESS)?.strip_prefix(' ')?;
        let seconds: f64 = value.trim().parse().ok()?;
        Some(seconds as i64)
    })
}

fn unix_time(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

/// One machine of a shared target, as `status --fleet` saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetMachine {
    pub target: String,
    pub machine: String,
    /// When its newest complete backup was made, in Unix time.
    pub newest_unix: Option<i64>,
    pub backups: usize,
    pub newest_size: Option<u64>,
    pub stale: bool,
}

/// The fleet's series, one per machine and figure, labelled with the
/// target and the machine's id (a file of its own beside the backup's
/// metrics file, so neither overwrites the other).
pub fn render_fleet(machines: &[FleetMachine]) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&FleetMachine) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for m in machines {
            if let Some(v) = value(m) {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{}\",machine=\"{}\"}} {v}",
                    escape(&m.target),
                    escape(&m.machine)
                );
            }
        }
    };
    gauge(
        "mss_backup_fleet_newest_timestamp_seconds",
        "When the machine's newest complete backup on the target was made, in Unix time.",
        &|m| m.newest_unix.map(|t| t as f64),
    );
    gauge(
        "mss_backup_fleet_backups",
        "Complete backups of the machine on the target.",
        &|m| Some(m.backups as f64),
    );
    gauge(
        "mss_backup_fleet_newest_size_bytes",
        "Size of the machine's newest backup on the target.",
        &|m| m.newest_size.map(|s| s as f64),
    );
    gauge(
        "mss_backup_fleet_stale",
        "1 if the machine's newest complete backup is older than --max-age, or it has none.",
        &|m| Some(f64::from(u8::from(m.stale))),
    );
    out
}

/// A label value as the exposition format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Built from JSON, as `last_backup.json` holds it, so fields added to
    /// the status later (with serde defaults) need no change here.
    fn report(status: Outcome, finished_at: &str) -> RunStatus {
        serde_json::from_value(serde_json::json!({
            "status": status,
            "started_at": finished_at,
            "finished_at": finished_at,
            "duration_seconds": 4.25,
            "archive": "mss-backup-2026-02-11_031500.tar.gz",
            "size_bytes": 388_000_000u64,
            "sha256": null,
            "files": 412,
            "warnings": [],
            "error": null,
            "targets": [{
                "name": "rsync:backup@nas:/srv/\"mss\"",
                "status": status,
                "detail": "",
                "duration_seconds": 1.5,
            }],
            "retention": {"kept": [], "deleted": []},
            "version": "0",
            "host": "h",
        }))
        .unwrap()
    }

    #[test]
    fn last_success_survives_a_failed_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mss_backup.prom");
        let good = report(Outcome::Success, "2026-02-11T03:15:04+00:00");
        update(&path, &good, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mss_backup_last_run_success 1\n"), "{text}");
        assert!(text.contains("mss_backup_last_success_timestamp_seconds 1770779704\n"));
        assert!(text.contains(
            "mss_backup_target_success{target=\"rsync:backup@nas:/srv/\\\"mss\\\"\"} 1\n"
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        let bad = report(Outcome::Failure, "2026-02-12T03:15:04+00:00");
        update(&path, &bad, Some(&good)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mss_backup_last_run_success 0\n"), "{text}");
        assert!(text.contains("mss_backup_last_success_timestamp_seconds 1770779704\n"));
        assert!(text.contains("mss_backup_last_run_timestamp_seconds 1770866104\n"));

        // Without the old file, the previous status still knows.
        std::fs::remove_file(&path).unwrap();
        update(&path, &bad, Some(&good)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mss_backup_last_success_timestamp_seconds 1770779704\n"));
        update(&path, &bad, Some(&bad)).unwrap();
    }
}
