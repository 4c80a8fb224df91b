//! `TestEnv`: a temp HOME with an MSS project, its cloud-data and a backup
//! dir, and a command with the environment cleared so a developer's own
//! variables never leak into a test. The fixtures the test modules share
//! live in the submodules, one copy each, so no test module imports
//! another: sticks and small disks, the sshd remote, the Ceph gateway and a
//! proxy in front of it, an HTTP stub, the MSS stop/start hooks, a byte-level
//! tar writer, tree hashers, a terminal, a database writer, kill points
//! and watchdogs that wait on events.

pub mod hooks;
pub mod http;
pub mod http_proxy;
pub mod kill;
pub mod proxy;
pub mod remote;
pub mod rgw;
pub mod stick;
pub mod tar;
pub mod terminal;
pub mod tree;
pub mod user_manager;
pub mod watch;
pub mod writer;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mss_backup_sample::{self as sample, SampleSpec};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_mss-backup");

pub struct TestEnv {
    pub root: TempDir,
    pub home: PathBuf,
    #[allow(dead_code)]
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl TestEnv {
    /// An environment with sample data of `audio_mib` MiB of audio.
    pub fn with_audio(audio_mib: u64) -> Self {
        let env = Self::empty();
        sample::generate(
            &env.data_dir,
            &SampleSpec {
                audio_mib,
                seed: 42,
            },
        )
        .expect("generate sample data");
        env
    }

    /// The default fixture: a couple of MiB of audio.
    pub fn new() -> Self {
        Self::with_audio(2)
    }

    /// An environment whose cloud-data does not exist yet.
    pub fn empty() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join("home");
        let project_dir = home.join("Projects/sound-machine");
        let data_dir = project_dir.join("cloud-data");
        let backup_dir = home.join("backups/mss");
        fs::create_dir_all(&project_dir).unwrap();
        let vars = vec![
            (
                "MSS_BACKUP_PROJECT_DIR".to_string(),
                project_dir.display().to_string(),
            ),
            (
                "MSS_BACKUP_DATA_DIR".to_string(),
                data_dir.display().to_string(),
            ),
            (
                "MSS_BACKUP_DIR".to_string(),
                backup_dir.display().to_string(),
            ),
        ];
        Self {
            root,
            home,
            project_dir,
            data_dir,
            backup_dir,
            vars,
        }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
    }

    pub fn unset(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    /// `program` with only HOME, PATH, TMPDIR and our variables: the one
    /// place the environment is cleared.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", self.root.path())
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `mss-backup ARGS` with only HOME, PATH, TMPDIR and our variables.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(BIN);
        cmd.args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run mss-backup")
    }

    /// Runs and asserts exit code `code`, returning the output.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "mss-backup {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn backup_ok(&self) -> Output {
        self.expect(&[], 0)
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.backup_dir.join("archive")
    }

    pub fn latest(&self) -> PathBuf {
        self.archive_dir().join("mss-backup-latest.tar.gz")
    }

    /// Backup archive names in the archive dir (complete or not), sorted.
    pub fn archives(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.archive_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_backup_name(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn status(&self) -> serde_json::Value {
        let text =
            fs::read_to_string(self.backup_dir.join("last_backup.json")).expect("last_backup.json");
        serde_json::from_str(&text).expect("last_backup.json is JSON")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("data/sound_machine.db")
    }
}

/// Gives the whole test tree to `nobody`.
pub fn chown_to_nobody(env: &TestEnv) {
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(env.root.path())
        .status()
        .unwrap();
    assert!(status.success());
}

/// `mss-backup ARGS` as `nobody`, through `setpriv`, with the environment
/// of [`TestEnv::cmd`]: root reads everything, so an unreadable file needs
/// another user.
pub fn as_nobody(env: &TestEnv, args: &[&str]) -> Output {
    let inner = env.cmd(args);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(
            inner
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        );
    cmd.output().unwrap()
}

/// `mss-backup-YYYY-MM-DD_HHMMSS.tar.gz`, checked by hand so the test does
/// not reuse the code it tests.
pub fn is_backup_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("mss-backup-")
        .and_then(|s| s.strip_suffix(".tar.gz"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'_',
            _ => c.is_ascii_digit(),
        })
}

pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an outside tool (GNU tar, gzip, sha256sum) and asserts success.
pub fn tool(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn count_rows(db: &Path, table: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

pub fn integrity(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A variable set by `cargo xtask test` for a real service (sshd, the
/// USB mounts, the Ceph gateway); a missing one fails the test, never
/// skips it.
pub fn service_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs a real service (sshd, USB mounts or the Ceph RADOS gateway); run it through `cargo xtask test`, which starts them and sets MSS_TEST_*"
        ),
    }
}

/// A name no other test (or earlier run) uses: `PREFIX-PID-N-NANOS`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The names in `dir`, sorted (empty if it cannot be read).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The `doctor` line for the check `name` (the name column is 12 wide).
pub fn doctor_line<'a>(text: &'a str, name: &str) -> &'a str {
    let padded = format!("{name:<12} ");
    text.lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&padded))
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

/// `wrapper... mss-backup ARGS` with the same cleared environment as
/// `TestEnv::cmd`.
pub fn wrapped(env: &TestEnv, wrapper: &[&str], args: &[&str]) -> Command {
    let mut cmd = env.command(wrapper[0]);
    cmd.args(&wrapper[1..]).arg(BIN).args(args);
    cmd
}

/// Locks the live database (rollback journal, `BEGIN EXCLUSIVE`): a backup
/// started now lists `cloud-data/`, passes its free-space check, makes its
/// staging dir and then waits for the database. A real way to reach the
/// moment between listing and reading, with no hook in the code.
pub fn lock_database(env: &TestEnv) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE; INSERT INTO trackpacks(name) VALUES ('held');",
    )
    .unwrap();
    conn
}

/// Waits until the backup `pid` made its staging dir (it then waits for
/// the locked database).
pub fn wait_for_staging(env: &TestEnv, child: &mut std::process::Child) {
    let staging = env.backup_dir.join(format!(".staging-{}", child.id()));
    watch::wait_while_running(child, "it made its staging dir", || staging.is_dir());
}

/// Hidden files in `archive_dir` a run should not have left: everything
/// hidden but the member index of an archive that is there
/// (`.NAME.tar.gz.index`, which the next backup reuses members by).
pub fn hidden_leftovers(archive_dir: &Path) -> Vec<String> {
    entries(archive_dir)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .filter(|n| {
            !n.strip_prefix('.')
                .and_then(|n| n.strip_suffix(".index"))
                .is_some_and(|archive| {
                    is_backup_name(archive) && archive_dir.join(archive).exists()
                })
        })
        .collect()
}

/// The sample's WAV uploads, sorted.
pub fn wavs(env: &TestEnv) -> Vec<PathBuf> {
    let dir = env.data_dir.join("Sounds/uploads");
    let mut wavs: Vec<PathBuf> = entries(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".wav"))
        .map(|n| dir.join(n))
        .collect();
    wavs.sort();
    wavs
}

/// `mss-backup keygen` into a fresh file: its path and public key.
pub fn keygen(env: &TestEnv) -> (PathBuf, String) {
    let path = env.home.join(unique("identity"));
    let out = env.expect(&["keygen", path.to_str().unwrap()], 0);
    let public = stdout(&out).trim().to_string();
    assert!(
        public.starts_with("age1") && !public.contains('\n'),
        "{public}"
    );
    (path, public)
}

/// `systemd-analyze ARGS`: systemd's own reading of units and calendars.
pub fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze must be installed (Debian package systemd)")
}

/// The status entry of the target whose name starts with `prefix`.
pub fn target<'a>(status: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} target in {status}"))
}

/// Rows of a table, as text, for comparing databases by content.
pub fn table_rows(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
        .unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..columns)
            .map(|i| match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(x) => x.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => format!("{b:02x?}"),
            })
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Fills `path` with `bytes` of incompressible pseudo-random data
/// (xorshift), so the archive is as big as the data.
pub fn write_noise(path: &Path, bytes: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut file = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes / block.len() {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}
