//! A one-node Ceph cluster (monitor, memstore OSD) and its RADOS Gateway
//! on 127.0.0.1: the real S3 server of the S3 target's tests.

use super::*;

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
