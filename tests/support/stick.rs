//! USB sticks and small disks: a fresh directory of a test filesystem
//! bind-mounted as a stick, or a tmpfs of a given size (a stick without
//! room, a disk that fills); unmounted on drop, also on panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::*;

/// Runs a system tool (mount, umount) and asserts success.
pub fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A "stick" of its own: a fresh directory on one of the test filesystems,
/// bind-mounted on a fresh mount point; unmounted and removed on drop.
pub struct Stick {
    pub path: PathBuf,
    pub backing: PathBuf,
    _mount_dir: TempDir,
}

impl Stick {
    pub fn bind(fs_var: &str) -> Self {
        let backing = PathBuf::from(service_var(fs_var)).join(unique("t"));
        fs::create_dir(&backing).unwrap();
        let mount_dir = tempfile::tempdir().unwrap();
        let path = mount_dir.path().join("stick");
        fs::create_dir(&path).unwrap();
        run_ok(
            "mount",
            &["--bind", backing.to_str().unwrap(), path.to_str().unwrap()],
        );
        Self {
            path,
            backing,
            _mount_dir: mount_dir,
        }
    }

    /// A tmpfs of its own, `size` big (for the free-space check).
    pub fn tmpfs(size: &str) -> Self {
        let mount_dir = tempfile::tempdir().unwrap();
        let path = mount_dir.path().join("stick");
        fs::create_dir(&path).unwrap();
        run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Self {
            backing: path.clone(),
            path,
            _mount_dir: mount_dir,
        }
    }

    pub fn backups(&self) -> PathBuf {
        self.path.join("mss-backup")
    }
}

impl Drop for Stick {
    fn drop(&mut self) {
        let path = self.path.to_str().unwrap_or_default();
        let unmounted = Command::new("umount")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("umount")
                .args(["-l", path])
                .status()
                .is_ok_and(|s| s.success());
        if unmounted && self.backing != self.path {
            let _ = fs::remove_dir_all(&self.backing);
        }
    }
}

/// The whole test filesystem as the stick (for the tmpfs and FAT tests
/// proper), emptied of what an earlier run left.
pub fn whole_fs_stick(fs_var: &str) -> PathBuf {
    let stick = PathBuf::from(service_var(fs_var));
    let _ = fs::remove_dir_all(stick.join("mss-backup"));
    let _ = fs::remove_file(stick.join(".mss-backup-target"));
    stick
}

/// Backup archive names in `dir`, sorted.
pub fn backups_in(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| is_backup_name(n))
        .collect()
}

/// Asserts `dir` holds every local backup named, byte for byte, with a
/// sidecar that `sha256sum -c` accepts right there.
pub fn assert_copied(env: &TestEnv, dir: &Path, names: &[String]) {
    for name in names {
        let copy = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name} in {dir:?}: {e}"));
        assert!(
            copy == fs::read(env.archive_dir().join(name)).unwrap(),
            "{name} differs"
        );
        let check = tool("sha256sum", &["-c", &format!("{name}.sha256")], dir);
        assert!(check.contains(&format!("{name}: OK")), "{check}");
    }
}
