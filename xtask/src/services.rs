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

// ---------------------------------------------------------------------------
// OpenSSH server
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Ceph RADOS Gateway (S3)
// ---------------------------------------------------------------------------

/// The bucket the tests use; they keep apart by key prefix.
const BUCKET: &str = "mss-test";
/// Region the tests sign for; RGW's default zonegroup accepts any name.
const REGION: &str = "us-east-1";
/// Cap of the in-memory object store. Memory is only used as data is
/// written, but RGW frees deleted data late (garbage collection), so this
/// must hold many ~150 MiB test artifacts.
const MEMSTORE_BYTES: u64 = 6 << 30;

/// A one-monitor, one-OSD (in-memory) Ceph cluster and its S3 gateway.
pub struct Rgw {
    dir: PathBuf,
    conf: PathBuf,
    mon: Option<Child>,
    osd: Option<Child>,
    gateway: Option<Child>,
    port: u16,
    access_key: String,
    secret_key: String,
}

impl Rgw {
    /// Installs Ceph if needed, builds a throwaway cluster under `work/rgw`,
    /// starts radosgw on 127.0.0.1, creates a user and the bucket.
    pub fn start(work: &Path) -> Result<Rgw, String> {
        ensure_packages(&["ceph-mon", "ceph-osd", "radosgw", "curl", "procps"])?;
        let dir = make_dir(&work.join("rgw"))?;
        for sub in ["mon", "osd", "run", "log", "rgw"] {
            make_dir(&dir.join(sub))?;
        }
        let fsid = uuid()?;
        let mon_port = free_port()?;
        let port = free_port()?;
        let conf = dir.join("ceph.conf");
        write_file(&conf, &ceph_conf(&dir, &fsid, mon_port, port))?;
        let mut rgw = Rgw {
            dir,
            conf,
            mon: None,
            osd: None,
            gateway: None,
            port,
            access_key: format!("MSSTEST{}", random_string(13, UPPER_DIGITS)?),
            secret_key: random_string(40, ALNUM)?,
        };
        // Each step below leaves its daemon in `rgw`, so a failure drops it
        // and Drop kills whatever had started.
        rgw.start_mon(&fsid, mon_port)?;
        rgw.start_osd()?;
        rgw.start_gateway()?;
        rgw.create_user()?;
        rgw.create_bucket()?;
        Ok(rgw)
    }

    /// Makes sure radosgw serves again after a test stopped or killed it
    /// (through `MSS_TEST_S3_RGW_PID`): a SIGSTOPped gateway is resumed, a
    /// dead or unresponsive one is replaced. The new PID is in `env()`.
    #[allow(
        dead_code,
        reason = "for xtask steps that break the gateway on purpose"
    )]
    pub fn restart_gateway(&mut self) -> Result<(), String> {
        if let Some(mut old) = self.gateway.take() {
            if matches!(old.try_wait(), Ok(None)) {
                signal(old.id(), "CONT");
            }
            if answers_soon(&mut old, self.port) {
                self.gateway = Some(old);
                return Ok(());
            }
            stop_child(&mut old, "radosgw");
        }
        self.start_gateway()
    }

    /// Makes the monitor's store from a one-entry monmap and starts it.
    /// With `auth ... = none` no keyrings are needed anywhere.
    fn start_mon(&mut self, fsid: &str, mon_port: u16) -> Result<(), String> {
        let monmap = self.dir.join("monmap");
        let mut cmd = Command::new("monmaptool");
        cmd.args(["--create", "--fsid", fsid, "--addv", "a"])
            .arg(format!("[v2:127.0.0.1:{mon_port}]"))
            .arg(&monmap);
        run(&mut cmd, CMD_TIMEOUT)?;
        let mut cmd = self.ceph_cmd("ceph-mon");
        cmd.args(["--mkfs", "-i", "a", "--monmap"]).arg(&monmap);
        run(&mut cmd, CMD_TIMEOUT)?;
        let log = self.log("mon.out");
        let mut cmd = self.ceph_cmd("ceph-mon");
        cmd.args(["-f", "-i", "a"]);
        let mon = self.mon.insert(spawn_logged(&mut cmd, &log)?);
        wait_for_tcp(mon_port, Duration::from_secs(30), mon, &log, "ceph-mon")
    }

    /// Registers OSD 0, formats its (in-memory) store and starts it; returns
    /// once the monitor sees it up, so the gateway can create its pools.
    fn start_osd(&mut self) -> Result<(), String> {
        let osd_uuid = uuid()?;
        let id = self.ceph(&["osd", "new", &osd_uuid])?;
        if id.trim() != "0" {
            return Err(format!("`ceph osd new` gave id {id:?}, expected 0"));
        }
        let mut cmd = self.ceph_cmd("ceph-osd");
        cmd.args(["--mkfs", "-i", "0", "--osd-uuid", &osd_uuid]);
        run(&mut cmd, CMD_TIMEOUT)?;
        let log = self.log("osd.out");
        let mut cmd = self.ceph_cmd("ceph-osd");
        cmd.args(["-f", "-i", "0"]);
        self.osd = Some(spawn_logged(&mut cmd, &log)?);
        self.wait_osd_up(Duration::from_secs(60), &log)
    }

    /// Polls `ceph osd stat` until one OSD is up.
    fn wait_osd_up(&mut self, timeout: Duration, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let stat = self
                .ceph(&["osd", "stat", "-f", "json"])
                .unwrap_or_default();
            if stat.replace(' ', "").contains("\"num_up_osds\":1") {
                return Ok(());
            }
            if let Some(osd) = self.osd.as_mut() {
                check_alive(osd, log, "ceph-osd")?;
            }
            if Instant::now() > deadline {
                return Err(timeout_error("ceph-osd", "up", timeout, log));
            }
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Starts radosgw and waits until it answers HTTP (it opens its port
    /// only after it has set up its pools, which takes ~10 s here).
    fn start_gateway(&mut self) -> Result<(), String> {
        let log = self.log("radosgw.out");
        let mut cmd = self.ceph_cmd("radosgw");
        cmd.args(["-f", "-n", "client.rgw"]);
        let gateway = self.gateway.insert(spawn_logged(&mut cmd, &log)?);
        let timeout = Duration::from_secs(120);
        wait_for_http(self.port, timeout, gateway, &log, "radosgw")
    }

    /// Creates the S3 user with our generated keys (talks to RADOS directly).
    fn create_user(&self) -> Result<(), String> {
        let mut cmd = self.ceph_cmd("radosgw-admin");
        cmd.args([
            "user",
            "create",
            "--uid=mss-test",
            "--display-name=mss-backup tests",
        ])
        .arg(format!("--access-key={}", self.access_key))
        .arg(format!("--secret-key={}", self.secret_key));
        run(&mut cmd, CMD_TIMEOUT).map(|_| ())
    }

    /// Creates the bucket with a SigV4-signed PUT, which also proves that the
    /// gateway accepts the keys as the tests will use them.
    fn create_bucket(&self) -> Result<(), String> {
        let body = self.dir.join("create-bucket.out");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", "-X", "PUT"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{}/{BUCKET}", self.endpoint()));
        let code = run(&mut cmd, Duration::from_secs(90))?;
        if code.trim() != "200" {
            let answer = read_file(&body).unwrap_or_default();
            return Err(format!("creating bucket {BUCKET}: HTTP {code}: {answer}"));
        }
        Ok(())
    }

    /// Runs the `ceph` CLI against our monitor; returns its stdout.
    fn ceph(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.ceph_cmd("ceph");
        // Without a connect timeout the CLI waits forever for a dead monitor.
        cmd.args(["--connect-timeout", "20"]).args(args);
        run(&mut cmd, CMD_TIMEOUT)
    }

    /// A Ceph program pointed at our config (never /etc/ceph).
    fn ceph_cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(&self.conf).env("CEPH_CONF", &self.conf);
        cmd
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("log").join(name)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Whether a gateway that was just signalled serves within a few seconds;
/// false as soon as it has exited (a SIGKILL is not seen at once).
fn answers_soon(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        if http_answers(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// ceph.conf for a throwaway single-node cluster whose state, sockets and
/// logs all live in `dir`.
fn ceph_conf(dir: &Path, fsid: &str, mon_port: u16, rgw_port: u16) -> String {
    let d = dir.display();
    // Notes on the less obvious lines:
    // - public and cluster addr: without the latter the OSD's cluster and
    //   heartbeat ports listen on all interfaces.
    // - auth none: no keyrings to make; the S3 signatures are still checked.
    // - "crc secure" client modes: without them radosgw hangs for 300 s.
    // - memstore: the OSD keeps objects in RAM, no disk or block device.
    // - size 1 pools and chooseleaf type 0: one OSD must be enough.
    // - mon data avail crit 0: the monitor would shut down when the disk is
    //   less than 5% free, which happens on shared machines.
    // - fixed pg counts, no autoscaler: there is no mgr to run it.
    // - short rgw gc waits: deleted objects' data is freed in seconds, not 2 h.
    format!(
        "[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
run dir = {d}/run
admin socket = {d}/run/$cluster-$name.asok
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log
keyring = {d}/keyring
mon data = {d}/mon
mon data avail crit = 0
mon data avail warn = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd data = {d}/osd
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw gc obj min wait = 10
rgw gc processor period = 30
"
    )
}

impl Service for Rgw {
    fn env(&self) -> Vec<(String, String)> {
        let pid = self.gateway.as_ref().map(|c| c.id().to_string());
        vec![
            var("MSS_TEST_S3_ENDPOINT", self.endpoint()),
            var("MSS_TEST_S3_REGION", REGION),
            var("MSS_TEST_S3_BUCKET", BUCKET),
            var("MSS_TEST_S3_ACCESS_KEY_ID", &self.access_key),
            var("MSS_TEST_S3_SECRET_ACCESS_KEY", &self.secret_key),
            var("MSS_TEST_S3_RGW_PID", pid.unwrap_or_default()),
        ]
    }

    fn stop(&mut self) {
        // Gateway first, then the OSD while the monitor can still hear it
        // leave (it shuts down slowly without one), then the monitor.
        let children = [
            (self.gateway.take(), "radosgw"),
            (self.osd.take(), "ceph-osd"),
            (self.mon.take(), "ceph-mon"),
        ];
        for (child, name) in children {
            if let Some(mut child) = child {
                // A test may have SIGSTOPped the gateway: wake it so it can
                // act on SIGTERM. (Only while unreaped: a reaped PID may
                // already belong to someone else.)
                if matches!(child.try_wait(), Ok(None)) {
                    signal(child.id(), "CONT");
                }
                stop_child(&mut child, name);
            }
        }
        remove_dir(&self.dir);
    }
}

impl Drop for Rgw {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// "USB drive" filesystems
// ---------------------------------------------------------------------------

/// Size of the FAT image: room for a ~150 MiB artifact and then some.
const VFAT_BYTES: u64 = 300 << 20;

/// A tmpfs, a FAT filesystem and a plain directory, standing in for USB drives.
pub struct Mounts {
    dir: PathBuf,
    tmpfs: PathBuf,
    vfat: PathBuf,
    plain: PathBuf,
    tmpfs_mounted: bool,
    vfat_mounted: bool,
    /// How the FAT image got mounted: "kernel" or "fuse".
    vfat_kind: &'static str,
    /// The fusefat process when the kernel could not mount FAT itself.
    fuse: Option<Child>,
    stopped: bool,
}

impl Mounts {
    /// Mounts a 512 MiB tmpfs and a 300 MiB FAT32 image under `work/usb`:
    /// with the kernel's vfat driver when it has one, else with fusefat.
    pub fn start(work: &Path) -> Result<Mounts, String> {
        ensure_packages(&["dosfstools", "mount", "procps"])?;
        let dir = make_dir(&work.join("usb"))?;
        let mut mounts = Mounts {
            tmpfs: make_dir(&dir.join("tmpfs"))?,
            vfat: make_dir(&dir.join("vfat"))?,
            plain: make_dir(&dir.join("plain"))?,
            dir,
            tmpfs_mounted: false,
            vfat_mounted: false,
            vfat_kind: "kernel",
            fuse: None,
            stopped: false,
        };
        mounts.mount_tmpfs()?;
        let image = mounts.dir.join("vfat.img");
        make_vfat_image(&image)?;
        mounts.mount_vfat(&image)?;
        Ok(mounts)
    }

    fn mount_tmpfs(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(&self.tmpfs);
        run(&mut cmd, CMD_TIMEOUT)?;
        self.tmpfs_mounted = true;
        Ok(())
    }

    /// Kernel loop mount first; containers and kernels without the vfat
    /// module (like this project's machines) refuse it, so fall back to FUSE.
    fn mount_vfat(&mut self, image: &Path) -> Result<(), String> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "vfat", "-o", "loop"])
            .arg(image)
            .arg(&self.vfat);
        match run(&mut cmd, CMD_TIMEOUT) {
            Ok(_) => {
                self.vfat_mounted = true;
                Ok(())
            }
            Err(kernel_err) => self.mount_vfat_fuse(image).map_err(|fuse_err| {
                format!("cannot mount FAT image: kernel: {kernel_err}; fusefat: {fuse_err}")
            }),
        }
    }

    /// Runs fusefat in the foreground as our child, so it has a PID to stop,
    /// and waits until the mount appears.
    fn mount_vfat_fuse(&mut self, image: &Path) -> Result<(), String> {
        ensure_packages(&["fusefat", "fuse"])?;
        let log = self.dir.join("fusefat.log");
        let mut cmd = Command::new("fusefat");
        cmd.args(["-f", "-o", "rw+"]).arg(image).arg(&self.vfat);
        let fuse = self.fuse.insert(spawn_logged(&mut cmd, &log)?);
        self.vfat_mounted = true;
        self.vfat_kind = "fuse";
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mount_point(&self.vfat) {
            check_alive(fuse, &log, "fusefat")?;
            if Instant::now() > deadline {
                return Err(timeout_error(
                    "fusefat",
                    "mounted",
                    Duration::from_secs(10),
                    &log,
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// A sparse image file formatted FAT32. No volume label: fusefat would show
/// it as an empty file in the root directory.
fn make_vfat_image(image: &Path) -> Result<(), String> {
    let file = File::create(image).map_err(|e| format!("creating {}: {e}", image.display()))?;
    file.set_len(VFAT_BYTES)
        .map_err(|e| format!("sizing {}: {e}", image.display()))?;
    let mut cmd = Command::new("mkfs.vfat");
    cmd.args(["-F", "32"]).arg(image);
    run(&mut cmd, CMD_TIMEOUT).map(|_| ())
}

/// Unmounts `path`, lazily if it is busy, so stop never hangs on a test
/// that left a file open there.
fn unmount(path: &Path) {
    for args in [&["umount"][..], &["umount", "-l"][..]] {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]).arg(path);
        if run(&mut cmd, CMD_TIMEOUT).is_ok() || !is_mount_point(path) {
            return;
        }
    }
    let mut cmd = Command::new("fusermount");
    cmd.args(["-u", "-z"]).arg(path);
    if let Err(e) = run(&mut cmd, CMD_TIMEOUT) {
        eprintln!("xtask: could not unmount {}: {e}", path.display());
    }
}

impl Service for Mounts {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            var("MSS_TEST_USB_TMPFS", self.tmpfs.display().to_string()),
            var("MSS_TEST_USB_VFAT", self.vfat.display().to_string()),
            var("MSS_TEST_USB_PLAIN_DIR", self.plain.display().to_string()),
            var("MSS_TEST_USB_KIND_VFAT", self.vfat_kind),
        ]
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.tmpfs_mounted {
            unmount(&self.tmpfs);
        }
        if self.vfat_mounted {
            unmount(&self.vfat);
        }
        // Unmounting ends fusefat after it has written back the image.
        if let Some(mut fuse) = self.fuse.take() {
            stop_child(&mut fuse, "fusefat");
        }
        // Never delete through a mount that is somehow still there.
        if is_mount_point(&self.tmpfs) || is_mount_point(&self.vfat) {
            eprintln!("xtask: leaving {} (still mounted)", self.dir.display());
        } else {
            remove_dir(&self.dir);
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when `path` is the mount point of some mount, per /proc/self/mountinfo
/// (paths there escape space, tab, newline and backslash as octal).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == wanted)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

// ---------------------------------------------------------------------------
// Processes, ports and files
// ---------------------------------------------------------------------------

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
