//! Developer tasks for mss-backup, run as `cargo xtask <task>` (see
//! `.cargo/config.toml`). Plain Rust with no dependencies, so it builds in
//! seconds on a fresh machine.
//!
//! - `test`: the README's test command. Installs what the tests need,
//!   checks formatting and lints, runs every test of the workspace.
//! - `bench`: speed and memory against the standard tools (see bench.rs).

mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use services::Service;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        _ => Err(
            "usage: cargo xtask test [-- NEXTEST ARGS]\n  test   install and start what the tests need, check fmt and clippy, run every test"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, failing on a non-zero exit.
fn run(program: &str, args: &[&str], envs: &[(String, String)]) -> Result<(), String> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed with {status}", args.join(" ")))
    }
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts every service the tests need, on loopback, each in its own
/// directory under `work`. The caller stops them.
fn start_services(work: &Path) -> Result<Vec<Box<dyn Service>>, String> {
    services::ensure_packages(&["tar", "gzip", "coreutils"])?;
    let mut started: Vec<Box<dyn Service>> = Vec::new();
    eprintln!("xtask: mounting the USB test filesystems");
    started.push(Box::new(services::Mounts::start(work)?));
    eprintln!("xtask: starting sshd on 127.0.0.1");
    started.push(Box::new(services::Sshd::start(work)?));
    eprintln!("xtask: starting a Ceph RADOS gateway (S3) on 127.0.0.1");
    started.push(Box::new(services::Rgw::start(work)?));
    Ok(started)
}

fn test(extra: &[String]) -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"], &[])?;
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ];
    run("cargo", &clippy, &[])?;
    let work = std::env::temp_dir().join(format!("mss-xtask-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let mut services = match start_services(&work) {
        Ok(services) => services,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    let envs: Vec<(String, String)> = services.iter().flat_map(|s| s.env()).collect();
    let result = run_tests(extra, &envs);
    for service in services.iter_mut().rev() {
        service.stop();
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// nextest when installed (one process per test, clearer output), else
/// cargo test.
fn run_tests(extra: &[String], envs: &[(String, String)]) -> Result<(), String> {
    let extra: Vec<&str> = extra
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--")
        .collect();
    let mut args = if has_nextest() {
        vec!["nextest", "run", "--workspace", "--no-fail-fast"]
    } else {
        vec!["test", "--workspace", "--no-fail-fast"]
    };
    args.extend(&extra);
    run("cargo", &args, envs)
}
