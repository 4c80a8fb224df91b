//! Developer tasks for mss-backup, run as `cargo xtask <task>` (see
//! `.cargo/config.toml`). Plain Rust with no dependencies, so it builds in
//! seconds on a fresh machine.
//!
//! - `test`: the README's test command. Installs what the tests need,
//!   checks formatting and lints, runs every test of the workspace.
//! - `faults`: the long variants of the fault matrix (tests/faults/).
//! - `bench`: speed and memory against the standard tools (see bench.rs).
//! - `dist`: the Debian package and a tarball of the same files (dist.rs).

mod bench;
mod dist;
mod night;
mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use services::Service;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("faults") => faults(&args[1..]),
        Some("dist") => dist::dist(&args[1..]),
        _ => Err(
            "usage: cargo xtask test [-- NEXTEST ARGS] | faults | bench [--size-mib N] [--rounds N] [--mix NAME].. [--seed N].. [--mix-mib N] [--sizes-only] [--night] | dist [--profile dev|release] [--check] [--no-build]\n  test   install and start what the tests need, check fmt and clippy, run every test, then build and check the package (from the debug binary)\n  faults the long variants of the fault matrix (tests/faults/)\n  bench  time and measure a backup against tar, igzip and pigz on the same data, then a night (full, one new upload, nightly; against restic and rsync), then the archive size against tar -czf per mix and seed\n  dist   build target/dist/mss-backup_VERSION_ARCH.deb and .tar.gz (release by default); --check runs the test command's package checks; --no-build packages the binary already built"
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
    // The tools the tests run beside our binary: GNU tar, gzip and sha256sum
    // read the archives, script gives a terminal, man checks the man page,
    // systemd-analyze checks the timer units, setpriv runs as another user,
    // the standard age tool opens (and makes) encrypted backups, ssh-keygen
    // makes the ssh-ed25519 recipient.
    // libisal2 is the ISA-L that backups use for audio when present (its
    // tests need it); isal's igzip is what the benchmark compares with.
    services::ensure_packages(&[
        "age",
        "libisal2",
        "isal",
        "openssh-client",
        "tar",
        "gzip",
        "coreutils",
        "bsdutils",
        "man-db",
        "systemd",
        "util-linux",
    ])?;
    services::ensure_packages(FAULT_TOOLS)?;
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
    result?;
    // The package, from the debug binary the tests just ran (a release
    // build would cost CI another 5 to 9 minutes). Only on a full run: a
    // run filtered to a few tests is someone working on those.
    if extra.iter().all(|a| a == "--") {
        let package = dist::build(dist::Profile::Dev)?;
        dist::check(&package)?;
    }
    Ok(())
}

/// What tests/faults/ runs beside our binary: strace kills at exact
/// system calls, faketime fixes the clock, setpriv runs as nobody, mount
/// makes small disks.
const FAULT_TOOLS: &[&str] = &["strace", "faketime", "util-linux", "mount", "tar", "gzip"];

/// `cargo xtask faults`: the fault matrix's long variants (more kill
/// points, 20 backups under the database writer, more hostile archives),
/// which the normal test run keeps short. `MSS_FAULTS_SEED=N` replays a run.
fn faults(extra: &[String]) -> Result<(), String> {
    services::ensure_packages(FAULT_TOOLS)?;
    let mut args = vec!["nextest", "run", "-p", "mss-backup", "--no-fail-fast"];
    args.extend([
        "-E",
        "test(faults::)",
        "--run-ignored",
        "all",
        "--no-capture",
    ]);
    args.extend(extra.iter().map(String::as_str).filter(|a| *a != "--"));
    run(
        "cargo",
        &args,
        &[("MSS_FAULTS_LONG".to_string(), "1".to_string())],
    )
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
