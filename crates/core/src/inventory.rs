//! `inventory.txt`, the system snapshot inside every archive: what was
//! running, which code version, how full the disks were, and what the
//! archive holds. It names files and counts; it never copies their content
//! (`config/` holds secrets).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::archive::{Section, SectionStats};
use crate::durable;
use crate::snapshot::DbFacts;

/// Everything the inventory reports on.
pub struct InventoryInput<'a> {
    pub time: &'a str,
    pub host: &'a str,
    pub project_dir: &'a Path,
    pub data_dir: &'a Path,
    pub backup_dir: &'a Path,
    pub sections: &'a BTreeMap<Section, SectionStats>,
    pub db: &'a DbFacts,
}

/// How long an outside command (docker, git) may take before it is skipped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Renders `inventory.txt`.
pub fn render(input: &InventoryInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mss-backup inventory");
    let _ = writeln!(out, "time: {}", input.time);
    let _ = writeln!(out, "host: {}", input.host);
    let _ = writeln!(out, "tool: mss-backup {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "project dir: {}", input.project_dir.display());
    let _ = writeln!(out, "data dir: {}", input.data_dir.display());

    let _ = writeln!(out, "\n== docker compose ps ==");
    out.push_str(&command_output(
        input.project_dir,
        "docker",
        &["compose", "ps"],
    ));

    let _ = writeln!(out, "\n== git ==");
    for (label, args) in [
        ("commit", &["rev-parse", "HEAD"][..]),
        (
            "describe",
            &["describe", "--always", "--dirty", "--tags"][..],
        ),
    ] {
        let text = command_output(input.project_dir, "git", args);
        let _ = writeln!(out, "{label}: {}", text.trim());
    }

    let _ = writeln!(out, "\n== disk usage ==");
    for (label, path) in [("data", input.data_dir), ("backups", input.backup_dir)] {
        match durable::fs_space(path) {
            Ok(space) => {
                let _ = writeln!(
                    out,
                    "{label} filesystem ({}): total {} bytes, used {} bytes, available {} bytes",
                    path.display(),
                    space.total,
                    space.total.saturating_sub(space.available),
                    space.available
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{label} filesystem ({}): unknown: {e}", path.display());
            }
        }
    }

    let _ = writeln!(out, "\n== sections ==");
    for (section, stats) in input.sections {
        let _ = writeln!(
            out,
            "{:<24} {:>8} files {:>16} bytes",
            section.label(),
            stats.files,
            stats.bytes
        );
    }

    let _ = writeln!(out, "\n== database ==");
    let _ = writeln!(out, "page size: {}", input.db.page_size);
    let _ = writeln!(out, "page count: {}", input.db.page_count);
    let _ = writeln!(out, "user_version: {}", input.db.user_version);
    let _ = writeln!(out, "integrity_check: ok");
    out
}

/// Runs a command in `dir` with a time limit; its stdout, or one line
/// saying why it could not run.
fn command_output(dir: &Path, program: &str, args: &[&str]) -> String {
    let shown = format!("{program} {}", args.join(" "));
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return format!("({shown} could not run: {e})\n"),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stdout = String::new();
                let mut stderr = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut stdout);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut stderr);
                }
                if status.success() {
                    return if stdout.ends_with('\n') || stdout.is_empty() {
                        stdout
                    } else {
                        stdout + "\n"
                    };
                }
                let reason = stderr
                    .lines()
                    .next()
                    .unwrap_or("no message")
                    .trim()
                    .to_string();
                return format!("({shown} failed with {status}: {reason})\n");
            }
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("({shown} did not answer within {COMMAND_TIMEOUT:?})\n");
            }
            Err(e) => return format!("({shown} could not be waited for: {e})\n"),
        }
    }
}
