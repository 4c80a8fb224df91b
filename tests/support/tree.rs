//! What a tree holds, as far as a backup or a restore must keep it:
//! every path with its kind, content hash, mode and mtime, compared
//! with the first difference named.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One path of a tree, as much as a restore must preserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { content: u64, mode: u32, mtime: i64 },
    Dir { mode: u32, mtime: i64 },
    Link { target: PathBuf, mtime: i64 },
}

/// Every path under `dir` (not `dir` itself). `precise` keeps mtimes to
/// the nanosecond (for "untouched"); otherwise to the second, which is what
/// a tar archive holds.
pub fn tree(dir: &Path, precise: bool) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, prefix: &str, precise: bool, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mtime = if precise {
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
            } else {
                meta.mtime()
            };
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link {
                    target: fs::read_link(entry.path()).unwrap(),
                    mtime,
                }
            } else if meta.is_dir() {
                walk(&entry.path(), &format!("{rel}/"), precise, out);
                Node::Dir { mode, mtime }
            } else {
                let mut hasher = DefaultHasher::new();
                fs::read(entry.path()).unwrap().hash(&mut hasher);
                Node::File {
                    content: hasher.finish(),
                    mode,
                    mtime,
                }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", precise, &mut out);
    out
}

/// Compares two trees and names the first difference.
pub fn assert_same_tree(actual: &BTreeMap<String, Node>, expected: &BTreeMap<String, Node>) {
    for (path, node) in expected {
        assert_eq!(actual.get(path), Some(node), "{path}");
    }
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "unexpected paths: {extra:?}");
}

pub fn without_db(mut tree: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    tree.retain(|path, _| !path.starts_with("data/sound_machine.db"));
    tree
}

/// A tree as far as a restore must keep it (the database aside: its bytes
/// differ between a live file and a snapshot, its rows do not). Safety
/// nets are left out: they are where the old data goes.
pub fn data_tree(dir: &Path) -> BTreeMap<String, String> {
    tree(dir, false)
        .into_iter()
        .filter(|(rel, _)| {
            !rel.starts_with("data/sound_machine.db")
                && !rel.split('/').any(|part| part.contains(".pre-restore-"))
        })
        .map(|(rel, node)| {
            // A dir's mtime moves with every file added or removed in it.
            let node = match node {
                Node::Dir { mode, .. } => Node::Dir { mode, mtime: 0 },
                other => other,
            };
            (rel, format!("{node:?}"))
        })
        .collect()
}
