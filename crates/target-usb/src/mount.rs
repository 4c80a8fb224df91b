//! Is this path a mount point of its own, and of what filesystem? Read from
//! `/proc/self/mountinfo`, the kernel's own list. Comparing `st_dev` with the
//! parent directory would miss bind mounts (same device on both sides) and
//! says nothing about the filesystem type, which decides FAT's limits.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The kernel's list of this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The filesystem types with FAT's limits (no symlinks, no modes, 2-second
/// mtimes, files below 4 GiB): the kernel's drivers and the FUSE one.
const FAT_TYPES: [&str; 5] = ["vfat", "msdos", "fat", "umsdos", "fuse.fusefat"];

/// One mount, as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted (the 5th field).
    pub mount_point: PathBuf,
    /// The directory of the mounted filesystem that appears there (the 4th
    /// field): `/` for a whole filesystem, a subdirectory for a bind mount.
    pub root: PathBuf,
    /// The filesystem type (after the ` - ` separator): `vfat`, `ext4`,
    /// `fuse.fusefat`.
    pub fstype: String,
    /// What is mounted, e.g. `/dev/sdb1`.
    pub source: String,
}

impl Mount {
    /// Whether the filesystem is FAT, with its 4 GiB file limit and no
    /// symlinks.
    pub fn is_fat(&self) -> bool {
        FAT_TYPES.contains(&self.fstype.as_str())
    }
}

/// The mount whose mount point is exactly `path` (after resolving symlinks
/// and `..`), or `None` when `path` is a plain directory on some other
/// mount. A missing path is an error of kind `NotFound`.
pub fn mount_at(path: &Path) -> io::Result<Option<Mount>> {
    let canonical = fs::canonicalize(path)?;
    let info = fs::read(MOUNTINFO)?;
    Ok(find(&info, canonical.as_os_str().as_bytes()))
}

/// The last (topmost, when mounts are stacked) entry of `mountinfo` whose
/// mount point is `path`.
fn find(mountinfo: &[u8], path: &[u8]) -> Option<Mount> {
    mountinfo
        .split(|b| *b == b'\n')
        .rev()
        .filter_map(parse_line)
        .find(|m| m.mount_point.as_os_str().as_bytes() == path)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`: id,
/// parent id, device, root, mount point, options, optional fields ended by
/// `-`, then type, source, superblock options (see proc_pid_mountinfo(5)).
fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    // Root and mount point are absolute paths, so the first lone `-` after
    // the six fixed fields is the separator.
    let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let root = fields.get(3)?;
    let mount_point = fields.get(4)?;
    let fstype = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    Some(Mount {
        mount_point: unescape(mount_point),
        root: unescape(root),
        fstype: String::from_utf8_lossy(&unescape_bytes(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape_bytes(source)).into_owned(),
    })
}

fn unescape(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_bytes(field)))
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo`
/// (octal): `/media/my\040stick`.
fn unescape_bytes(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(code) = field.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, d| match d {
        b'0'..=b'7' => acc.checked_mul(8)?.checked_add(d - b'0'),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
42 22 0:39 / /media/stick rw,relatime - tmpfs tmpfs rw,size=524288k
43 22 0:40 / /media/fat rw,nosuid,nodev,relatime shared:7 master:2 - fuse.fusefat fusefat rw,user_id=0
44 22 259:1 /home/mss/stick-dir /media/bound rw,relatime - ext4 /dev/root rw
45 22 8:17 / /media/my\\040stick\\134x rw - vfat /dev/sdb1 rw,fmask=0022
46 22 0:41 / /media/stick rw - ext4 /dev/sdc1 rw
";

    fn at(path: &str) -> Option<Mount> {
        find(INFO.as_bytes(), path.as_bytes())
    }

    #[test]
    fn finds_only_exact_mount_points() {
        assert_eq!(at("/").unwrap().fstype, "ext4");
        assert!(at("/media").is_none());
        assert!(at("/media/stick/mss-backup").is_none());
        assert!(at("/media/stic").is_none());
    }

    #[test]
    fn the_topmost_of_stacked_mounts_wins() {
        let m = at("/media/stick").unwrap();
        assert_eq!(m.fstype, "ext4");
        assert_eq!(m.source, "/dev/sdc1");
    }

    #[test]
    fn bind_mounts_count_and_show_their_root() {
        let m = at("/media/bound").unwrap();
        assert_eq!(m.root, Path::new("/home/mss/stick-dir"));
        assert!(!m.is_fat());
    }

    #[test]
    fn octal_escapes_are_decoded() {
        let m = at("/media/my stick\\x").unwrap();
        assert_eq!(m.fstype, "vfat");
        assert!(m.is_fat());
        assert_eq!(unescape_bytes(b"a\\011b\\012c\\9"), b"a\tb\nc\\9");
        assert_eq!(unescape_bytes(b"trailing\\04"), b"trailing\\04");
    }

    #[test]
    fn fat_includes_fusefat() {
        assert!(at("/media/fat").unwrap().is_fat());
        assert!(!at("/media/stick").unwrap().is_fat());
    }

    #[test]
    fn the_real_root_is_a_mount_point() {
        assert!(mount_at(Path::new("/")).unwrap().is_some());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::create_dir(&plain).unwrap();
        assert!(mount_at(&plain).unwrap().is_none());
        let missing = mount_at(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
