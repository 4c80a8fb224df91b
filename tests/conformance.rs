//! Every real target against the one conformance suite
//! (`mss_backup_core::testkit`): a plain directory, a tmpfs and a FAT
//! "stick", rsync to the test sshd and S3 on the Ceph gateway, each in a
//! place of its own, one test per target and behaviour. The suite sees
//! each target's storage from outside (the directory; the remote
//! directory through the local filesystem; the bucket through curl's own
//! SigV4 signing), never through the code under test. What only one
//! target has (FAT limits, labels, a server cut off mid-upload) stays in
//! that target's tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mss_backup_core::Target;
use mss_backup_core::testkit::Place;

// The fixtures, from where they live.
use crate::support::remote::{Remote, rsh};
use crate::support::rgw::{Rgw, rgw, unique_prefix};
use crate::support::stick::Stick;
use crate::support::{TestEnv, service_var, unique};

/// A directory seen as a target's storage.
struct DirPlace(PathBuf);

impl Place for DirPlace {
    fn write(&self, path: &str, bytes: &[u8]) {
        let path = self.0.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Replaced, not rewritten in place: FAT refuses to truncate a file
        // the target made.
        let _ = fs::remove_file(&path);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    let relative = path.strip_prefix(root).unwrap();
                    files.insert(
                        relative.to_string_lossy().into_owned(),
                        fs::read(&path).unwrap(),
                    );
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(&self.0, &self.0, &mut files);
        files
    }
}

/// A key prefix in the test bucket seen as the S3 target's storage,
/// through curl.
struct S3Place {
    rgw: Rgw,
    prefix: String,
}

impl Place for S3Place {
    fn write(&self, path: &str, bytes: &[u8]) {
        let body = tempfile::NamedTempFile::new().unwrap();
        fs::write(body.path(), bytes).unwrap();
        let data = format!("@{}", body.path().display());
        let key = format!("{}{path}", self.prefix);
        let (code, answer) = self
            .rgw
            .curl(&["-X", "PUT", "--data-binary", &data], &format!("/{key}"));
        assert_eq!(code, 200, "PUT {key}: {answer}");
    }

    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let body = tempfile::NamedTempFile::new().unwrap();
        let out = body.path().to_str().unwrap();
        self.rgw
            .keys(&self.prefix)
            .into_iter()
            .map(|key| {
                let (code, answer) = self.rgw.curl(&["-o", out], &format!("/{key}"));
                assert_eq!(code, 200, "GET {key}: {answer}");
                let path = key.strip_prefix(&self.prefix).unwrap().to_string();
                (path, fs::read(out).unwrap())
            })
            .collect()
    }
}

/// A directory removed with the test.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A target in a place of its own, its storage and a neighbour's (a
/// sibling directory or prefix, as another machine's would be).
struct Subject {
    target: Box<dyn Target>,
    own: Box<dyn Place>,
    neighbour: Box<dyn Place>,
    /// Mounts and directories to remove, after the target is gone.
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn dir() -> Subject {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("backups");
    Subject {
        target: Box::new(mss_backup_target_local::DirTarget::new("dir", &dir, false)),
        own: Box::new(DirPlace(dir)),
        neighbour: Box::new(DirPlace(root.path().join("other"))),
        _guards: vec![Box::new(root)],
    }
}

fn usb(fs_var: &str) -> Subject {
    use mss_backup_target_usb::{Config, UsbTarget};
    let stick = Stick::bind(fs_var);
    Subject {
        target: Box::new(UsbTarget::new(Config {
            path: stick.path.clone(),
            label: None,
            required: false,
        })),
        own: Box::new(DirPlace(stick.backups())),
        neighbour: Box::new(DirPlace(stick.path.join("other"))),
        _guards: vec![Box::new(stick)],
    }
}

fn usb_tmpfs() -> Subject {
    usb("MSS_TEST_USB_TMPFS")
}

fn usb_vfat() -> Subject {
    usb("MSS_TEST_USB_VFAT")
}

fn rsync() -> Subject {
    use mss_backup_target_rsync::{Config, RsyncTarget};
    let mut env = TestEnv::empty();
    let remote = Remote::new(&mut env);
    let dest = env
        .vars
        .iter()
        .find(|(k, _)| k == "MSS_BACKUP_RSYNC_DEST")
        .map(|(_, v)| v.clone())
        .unwrap();
    let neighbour = Scratch(PathBuf::from(service_var("MSS_TEST_SSH_ROOT")).join(unique("n")));
    Subject {
        target: Box::new(
            RsyncTarget::new(Config {
                dest,
                rsh: Some(rsh("ssh", &service_var("MSS_TEST_SSH_KEY"))),
                timeout: None,
            })
            .unwrap(),
        ),
        own: Box::new(DirPlace(remote.dir.clone())),
        neighbour: Box::new(DirPlace(neighbour.0.clone())),
        _guards: vec![Box::new(remote), Box::new(neighbour)],
    }
}

fn s3() -> Subject {
    let prefix = unique_prefix("conformance");
    let sibling = format!("{}-other/", prefix.trim_end_matches('/'));
    Subject {
        target: Box::new(rgw().target(&prefix)),
        own: Box::new(S3Place { rgw: rgw(), prefix }),
        neighbour: Box::new(S3Place {
            rgw: rgw(),
            prefix: sibling,
        }),
        _guards: Vec::new(),
    }
}

/// One test per behaviour of the suite for the target `make` builds.
macro_rules! suite {
    ($target:ident) => {
        mod $target {
            use mss_backup_core::testkit;

            #[test]
            fn round_trip() {
                let s = super::$target();
                testkit::round_trip(&*s.target, &*s.own);
            }

            #[test]
            fn unknown_names() {
                let s = super::$target();
                testkit::unknown_names(&*s.target, &*s.own);
            }

            #[test]
            fn incomplete_backups_are_not_listed() {
                let s = super::$target();
                testkit::incomplete_backups_are_not_listed(&*s.target, &*s.own);
            }

            #[test]
            fn foreign_files_survive_retention() {
                let s = super::$target();
                testkit::foreign_files_survive_retention(&*s.target, &*s.own, &*s.neighbour);
            }

            #[test]
            fn failed_put_leaves_nothing() {
                let s = super::$target();
                testkit::failed_put_leaves_nothing(&*s.target, &*s.own);
            }

            #[test]
            fn interrupted_put_leaves_nothing() {
                let s = super::$target();
                testkit::interrupted_put_leaves_nothing(&*s.target, &*s.own);
            }

            #[test]
            fn damaged_copies_are_refused() {
                let s = super::$target();
                testkit::damaged_copies_are_refused(&*s.target, &*s.own);
            }
        }
    };
}

suite!(dir);
suite!(usb_tmpfs);
suite!(usb_vfat);
suite!(rsync);
suite!(s3);
