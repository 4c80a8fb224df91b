//! `TestEnv`: a temp HOME with an MSS project, its cloud-data and a backup
//! dir, and a command with the environment cleared so a developer's own
//! variables never leak into a test.

use std::fs;
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

    /// `mss-backup ARGS` with only HOME, PATH, TMPDIR and our variables.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", self.root.path())
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
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
