//! Integrity at the edges of a backup's life: a plain-tar restore leaves
//! the archive's own files in `cloud-data/`, a copy rots on a stick or a
//! remote, a local archive rots before `copy` sends it, and an encrypted
//! run needs room for two archives. Each case ends in a backup that looks
//! fine but is not, unless the tool notices; these tests stage each one
//! with real files, real mounts and the real binary.

use std::fs;
use std::path::Path;

use crate::support::*;

/// How many members of the archive at `path` are named `member` (GNU tar
/// as the judge).
fn members_named(path: &Path, member: &str) -> usize {
    tool("tar", &["-tzf", path.to_str().unwrap()], Path::new("/"))
        .lines()
        .filter(|l| *l == member)
        .count()
}

// ------------------------------------------------- plain-tar restores

/// The operator restores the whole backup with plain tar, straight into
/// `cloud-data/`, and keeps running nightly backups. The archive's own
/// `inventory.txt` and `MANIFEST.sha256` now sit at the top of
/// `cloud-data/`; archived, each would be a second member of its name,
/// and every later backup unusable by `verify` and `restore`.
#[test]
fn a_plain_tar_restore_into_cloud_data_does_not_poison_later_backups() {
    let env = TestEnv::new();
    env.backup_ok();
    let latest = env.latest();
    tool(
        "tar",
        &[
            "-xzf",
            latest.to_str().unwrap(),
            "-C",
            env.data_dir.to_str().unwrap(),
        ],
        &env.home,
    );
    for reserved in ["inventory.txt", "MANIFEST.sha256"] {
        assert!(env.data_dir.join(reserved).is_file(), "{reserved}");
    }

    let out = env.backup_ok();
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    let status = env.status();
    assert_eq!(status["status"], "success", "{status}");
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for reserved in ["inventory.txt", "MANIFEST.sha256"] {
        let path = env.data_dir.join(reserved);
        let warning = warnings
            .iter()
            .find(|w| w.contains(&format!("skipped {}", path.display())))
            .unwrap_or_else(|| panic!("no warning for {reserved}: {warnings:?}"));
        assert!(
            warning.contains("delete it") && shown.contains(*warning),
            "{warning}\n{shown}"
        );
        assert_eq!(members_named(&latest, reserved), 1, "{reserved}");
    }
    env.expect(&["verify"], 0);
    env.expect(&["restore", "sounds", "--yes", "--no-stop"], 0);
    env.expect(&["restore", "all", "--dry-run"], 0);
    // The next run is as good: the skip is not a one-off.
    env.backup_ok();
    env.expect(&["verify"], 0);
}
