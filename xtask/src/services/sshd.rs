//! OpenSSH's sshd on 127.0.0.1 for the rsync target's tests: its own host
//! key, a client key, and a known_hosts file the tests hand to ssh.

use super::*;

/// An sshd on 127.0.0.1 with throwaway host and client keys, for rsync over SSH.
pub struct Sshd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    user: String,
    key: PathBuf,
    wrong_key: PathBuf,
    known_hosts: PathBuf,
    root: PathBuf,
}

impl Sshd {
    /// Installs OpenSSH and rsync if needed, starts sshd under `work/sshd`
    /// and returns once a real key login has succeeded.
    pub fn start(work: &Path) -> Result<Sshd, String> {
        ensure_packages(&["openssh-server", "openssh-client", "rsync", "procps"])?;
        let dir = make_dir(&work.join("sshd"))?;
        // sshd refuses to start without its privilege-separation directory,
        // which only the (unused) systemd unit would create.
        make_dir(Path::new("/run/sshd"))?;
        let host_key = dir.join("host_ed25519");
        let key = dir.join("client_ed25519");
        let wrong_key = dir.join("wrong_ed25519");
        for k in [&host_key, &key, &wrong_key] {
            ssh_keygen(k)?;
        }
        copy_file(&pub_key(&key), &dir.join("authorized_keys"))?;
        let port = free_port()?;
        let known_hosts = dir.join("known_hosts");
        write_known_hosts(&known_hosts, port, &host_key)?;
        let config = dir.join("sshd_config");
        write_file(&config, &sshd_config(&dir, port, &host_key))?;
        check_sshd_config(&config)?;
        let root = make_dir(&dir.join("remote"))?;
        let user = current_user()?;
        let log = dir.join("sshd.log");
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let mut sshd = Sshd {
            child: None,
            dir,
            port,
            user,
            key,
            wrong_key,
            known_hosts,
            root,
        };
        // From here on an early return drops `sshd`, which kills the child.
        let child = sshd.child.insert(spawn_logged(&mut cmd, &log)?);
        wait_for_tcp(port, Duration::from_secs(10), child, &log, "sshd")?;
        sshd.check_login()?;
        Ok(sshd)
    }

    /// Logs in with the client key and runs `true`: proves keys, config and
    /// the remote shell all work, not only that the port is open.
    fn check_login(&self) -> Result<(), String> {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.key)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg("true");
        run(&mut cmd, Duration::from_secs(20))
            .map(|_| ())
            .map_err(|e| {
                let log = log_tail(&self.dir.join("sshd.log"), 20);
                format!("ssh login to the test sshd failed: {e}\nsshd log:\n{log}")
            })
    }
}

/// Generates an unencrypted ed25519 key pair at `path` and `path.pub`.
fn ssh_keygen(path: &Path) -> Result<(), String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "mss-test", "-f"])
        .arg(path);
    run(&mut cmd, CMD_TIMEOUT).map(|_| ())
}

/// The public half of a key made by `ssh_keygen`.
fn pub_key(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A known_hosts file for tests that want strict host key checking.
fn write_known_hosts(path: &Path, port: u16, host_key: &Path) -> Result<(), String> {
    let public = read_file(&pub_key(host_key))?;
    let mut fields = public.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(format!("unexpected host public key: {public}"));
    };
    write_file(path, &format!("[127.0.0.1]:{port} {kind} {blob}\n"))
}

/// sshd_config that keeps everything in `dir` and allows only key logins.
fn sshd_config(dir: &Path, port: u16, host_key: &Path) -> String {
    let d = dir.display();
    // MaxStartups/MaxSessions are raised because tests run in parallel and
    // sshd's default (10:30:100) randomly drops connections beyond ten.
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {}\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         UsePAM no\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         PidFile {d}/sshd.pid\n\
         Subsystem sftp internal-sftp\n\
         LogLevel ERROR\n\
         PrintMotd no\n\
         MaxStartups 100\n\
         MaxSessions 100\n",
        host_key.display()
    )
}

/// `sshd -t` reports a bad config at once instead of as a dead daemon.
fn check_sshd_config(config: &Path) -> Result<(), String> {
    let mut cmd = Command::new("/usr/sbin/sshd");
    cmd.arg("-t").arg("-f").arg(config);
    run(&mut cmd, CMD_TIMEOUT).map(|_| ())
}

impl Service for Sshd {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            var("MSS_TEST_SSH_HOST", "127.0.0.1"),
            var("MSS_TEST_SSH_PORT", self.port.to_string()),
            var("MSS_TEST_SSH_USER", &self.user),
            var("MSS_TEST_SSH_KEY", self.key.display().to_string()),
            var(
                "MSS_TEST_SSH_WRONG_KEY",
                self.wrong_key.display().to_string(),
            ),
            var(
                "MSS_TEST_SSH_KNOWN_HOSTS",
                self.known_hosts.display().to_string(),
            ),
            var("MSS_TEST_SSH_ROOT", self.root.display().to_string()),
        ]
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "sshd");
        }
        remove_dir(&self.dir);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
