//! A systemd user manager of the test's own, so that systemd itself
//! reads what `schedule install` wrote. The test container is not booted
//! with systemd (PID 1 is not systemd), and `systemd --user` refuses to
//! start without `/run/systemd/system`; in a mount namespace of its own
//! (`unshare -m`) a tmpfs on `/run/systemd` holds that directory for this
//! manager alone, leaving the machine's `/run` as it was. Its runtime dir
//! (`XDG_RUNTIME_DIR`, where `systemctl --user` and `systemd-run --user`
//! find it) and its HOME (where it finds the installed units) are the
//! test's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::watch::WATCHDOG;

pub struct UserManager {
    manager: Child,
    home: PathBuf,
    runtime_dir: PathBuf,
}

impl UserManager {
    /// Starts a user manager for `home` and waits until it runs.
    pub fn start(home: &Path, runtime_dir: &Path) -> UserManager {
        std::fs::create_dir_all(runtime_dir).unwrap();
        std::fs::set_permissions(
            runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let manager = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec /usr/lib/systemd/systemd --user",
            ])
            .env_clear()
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", runtime_dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux) and systemd must be installed");
        let mut this = UserManager {
            manager,
            home: home.to_path_buf(),
            runtime_dir: runtime_dir.to_path_buf(),
        };
        let give_up = Instant::now() + WATCHDOG;
        loop {
            if let Some(status) = this.manager.try_wait().unwrap() {
                panic!("the systemd user manager ended ({status}) before it ran");
            }
            // Not `is-system-running`: outside the namespace it sees no
            // /run/systemd/system and says "offline" without asking.
            let state = this.systemctl(&["show", "--property=SystemState", "--value"]);
            let state = String::from_utf8_lossy(&state.stdout);
            if matches!(state.trim(), "running" | "degraded") {
                return this;
            }
            assert!(
                Instant::now() < give_up,
                "the systemd user manager never ran: {state}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn user_command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .arg("--user")
            .env_clear()
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command
    }

    /// `systemctl --user ARGS` against this manager.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.user_command("systemctl").args(args).output().unwrap()
    }

    /// `systemd-run --user --wait --pipe -p PROPERTY… -- COMMAND…`: a
    /// transient service of this manager, its output piped back.
    pub fn run(&self, properties: &[&str], command: &[&str]) -> Output {
        let mut run = self.user_command("systemd-run");
        run.args(["--wait", "--pipe", "--quiet"]);
        for property in properties {
            run.args(["-p", property]);
        }
        run.arg("--").args(command).output().unwrap()
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SIGTERM: a user manager starts exit.target, stopping what it
        // started (its D-Bus too), then exits.
        // SAFETY: `manager` is our own child, not reaped yet.
        unsafe { libc::kill(self.manager.id() as i32, libc::SIGTERM) };
        let _ = self.manager.wait();
    }
}
