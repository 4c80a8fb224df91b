//! Real services for the integration tests, started on loopback by `cargo xtask test`.
//!
//! The backup tool talks to an SSH server (rsync over SSH), an S3 server and
//! removable "USB" filesystems. Mocks would hide the bugs that matter (key
//! handling, signatures, FAT's quirks), so the tests run against the real
//! thing: OpenSSH's sshd, a one-node Ceph cluster with its RADOS Gateway, a
//! tmpfs and a FAT image. Each service installs its Debian packages when
//! missing, keeps all of its state under the caller's work directory, hands
//! its addresses to the tests as `MSS_TEST_*` environment variables, and on
//! `stop()` (or drop) kills exactly the processes it started, by PID, and
//! unmounts what it mounted.
//!
//! Plain std only: xtask has no dependencies.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod mounts;
mod rgw;
mod sshd;

pub use mounts::Mounts;
pub use rgw::Rgw;
pub use sshd::Sshd;

/// Set once `apt-get update` succeeded in this process, so it runs at most once.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// How long a single apt-get command may take (Ceph's packages need about a minute).
const APT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long a short helper command (ssh-keygen, ceph CLI, mount...) may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Installs Debian packages that are missing (checks with `dpkg -s`), running
/// `apt-get update` once first if anything is missing. Uses
/// DEBIAN_FRONTEND=noninteractive and --no-install-recommends.
pub fn ensure_packages(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    if !APT_UPDATED.load(Ordering::SeqCst) {
        apt_get(&["update"])?;
        APT_UPDATED.store(true, Ordering::SeqCst);
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args)
}

/// True when dpkg says the package is fully installed (not merely known, or
/// removed with its config files left, which `dpkg -s` also reports).
fn is_installed(pkg: &str) -> bool {
    let Ok(out) = Command::new("dpkg")
        .args(["-s", pkg])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "Status: install ok installed")
}

/// Runs apt-get without prompts; waits for the dpkg lock instead of failing
/// at once when another apt is running (other sessions share the machine).
fn apt_get(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-o", "DPkg::Lock::Timeout=600"])
        .args(args);
    run(&mut cmd, APT_TIMEOUT).map(|_| ())
}

/// A running service; stops (kills its processes by PID, unmounts, removes
/// its temp dir) on `stop()` and on Drop.
pub trait Service {
    /// The `MSS_TEST_*` variables that tell the tests where the service is.
    fn env(&self) -> Vec<(String, String)>;
    /// Stops the service and removes its state; safe to call more than once.
    fn stop(&mut self);
}

/// Runs a command to completion within `timeout`, killing it when it takes
/// longer; returns its stdout, or an error with its output's tail.
///
/// Output goes to scratch files, not pipes: a daemon started by the command
/// (apt's postinst scripts may start one) could hold a pipe open forever.
fn run(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out_path = scratch_path("out");
    let err_path = scratch_path("err");
    let result = run_to_files(cmd, timeout, &out_path, &err_path);
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    match result {
        Ok(()) => Ok(stdout),
        Err(why) => {
            let output = format!("{stdout}{}", String::from_utf8_lossy(&stderr));
            Err(format!("{what} {why}:\n{}", tail(&output, 30)))
        }
    }
}

/// Spawns `cmd` with its output in the given files and waits for success.
fn run_to_files(
    cmd: &mut Command,
    timeout: Duration,
    out_path: &Path,
    err_path: &Path,
) -> Result<(), String> {
    let create =
        |p: &Path| File::create(p).map_err(|e| format!("could not create {}: {e}", p.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(create(out_path)?)
        .stderr(create(err_path)?)
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("failed ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("took longer than {timeout:?} and was killed"));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A unique path in the system temp dir for one command's output.
fn scratch_path(kind: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("xtask-{}-{n}.{kind}", std::process::id());
    std::env::temp_dir().join(name)
}

/// Starts a daemon with stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let what = format!("{cmd:?}");
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening {}: {e}", log.display()))
    };
    cmd.stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))
}

/// Sends a signal by name with kill(1): std can only send SIGKILL itself.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, up to STOP_GRACE for a clean exit, then SIGKILL; always reaps.
fn stop_child(child: &mut Child, name: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "xtask: {name} (pid {}) ignored SIGTERM; killing",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Fails with the log's tail if the daemon has already exited.
fn check_alive(child: &mut Child, log: &Path, name: &str) -> Result<(), String> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!(
            "{name} exited ({status}) while starting; {}:\n{}",
            log.display(),
            log_tail(log, 30)
        )),
        Err(e) => Err(format!("checking {name}: {e}")),
    }
}

/// Waits until 127.0.0.1:`port` accepts TCP connections.
fn wait_for_tcp(
    port: u16,
    timeout: Duration,
    child: &mut Child,
    log: &Path,
    name: &str,
) -> Result<(), String> {
    wait_until(timeout, child, log, name, "listening", || {
        TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
    })
}

/// Waits until 127.0.0.1:`port` answers an HTTP request with any status.
fn wait_for_http(
    port: u16,
    timeout: Duration,
    child: &mut Child,
    log: &Path,
    name: &str,
) -> Result<(), String> {
    wait_until(timeout, child, log, name, "answering HTTP", || {
        http_answers(port)
    })
}

/// Polls `ready` until it holds, the daemon dies, or `timeout` passes.
fn wait_until(
    timeout: Duration,
    child: &mut Child,
    log: &Path,
    name: &str,
    state: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        check_alive(child, log, name)?;
        if Instant::now() > deadline {
            return Err(timeout_error(name, state, timeout, log));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn timeout_error(name: &str, state: &str, timeout: Duration, log: &Path) -> String {
    format!(
        "{name} not {state} after {timeout:?}; {}:\n{}",
        log.display(),
        log_tail(log, 30)
    )
}

/// Sends `GET /` and checks that an HTTP status line comes back.
fn http_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port that was free a moment ago: the kernel picks it for a throwaway
/// listener. Ports are handed to daemons right after, so a clash is unlikely.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn current_user() -> Result<String, String> {
    let name = run(Command::new("id").arg("-un"), CMD_TIMEOUT)?;
    Ok(name.trim().to_string())
}

/// A fresh random UUID from the kernel (for Ceph's fsid and OSD uuid).
fn uuid() -> Result<String, String> {
    read_file(Path::new("/proc/sys/kernel/random/uuid")).map(|s| s.trim().to_string())
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn from `alphabet` using /dev/urandom.
fn random_string(len: usize, alphabet: &[u8]) -> Result<String, String> {
    let mut bytes = vec![0u8; len];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

/// Creates a directory (and parents) and returns its absolute path, which
/// is what daemons and the tests must be given.
fn make_dir(path: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    fs::canonicalize(path).map_err(|e| format!("resolving {}: {e}", path.display()))
}

fn remove_dir(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("xtask: could not remove {}: {e}", path.display());
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn read_file(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

/// The last `lines` lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn var(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}
