//! README and docs claims that had no test of their own: what else under
//! `cloud-data/` is kept, the free-space check before anything is
//! written, a `db` restore that decodes only the database, a corrupt
//! database in a correctly checksummed archive, setuid/setgid stripped,
//! foreign owners on a restore as root and as the data's own user, and a
//! failed MSS start that is not rolled back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::hooks::Service;
use crate::support::stick::{Stick, backups_in};
use crate::support::tree::{assert_same_tree, tree};
use crate::support::*;

/// Rebuilds the archive at `path` after `change` edited its extracted
/// members (GNU tar, the members in their original order, so the database
/// stays first), and writes a sidecar that matches the new bytes: damage
/// that gets past the checksum, which only the contents can reveal.
fn rebuild_archive(env: &TestEnv, path: &Path, change: impl FnOnce(&Path)) {
    let work = env.root.path().join(unique("rebuild"));
    fs::create_dir_all(&work).unwrap();
    let members = tool("tar", &["-tzf", path.to_str().unwrap()], &work);
    tool("tar", &["-xzf", path.to_str().unwrap()], &work);
    change(&work);
    let list = env.root.path().join(unique("members"));
    fs::write(&list, &members).unwrap();
    tool(
        "tar",
        &[
            "--format=pax",
            "--no-recursion",
            "-czf",
            path.to_str().unwrap(),
            "-T",
            list.to_str().unwrap(),
        ],
        &work,
    );
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let sidecar = tool("sha256sum", &[name], dir);
    fs::write(dir.join(format!("{name}.sha256")), sidecar).unwrap();
}

/// docs/design.md: "anything else under cloud-data/ is kept too, never
/// silently dropped": a top-level dir and file the tool knows nothing
/// about are archived and come back with `restore all`.
#[test]
fn anything_else_under_cloud_data_is_backed_up_and_restored() {
    let env = TestEnv::new();
    let plugins = env.data_dir.join("plugins/midi");
    fs::create_dir_all(&plugins).unwrap();
    fs::write(plugins.join("mapping.cfg"), b"button 3 = airhorn\n").unwrap();
    fs::write(env.data_dir.join("NOTES.txt"), b"ask Sam about the pads\n").unwrap();
    env.backup_ok();
    let members = tool(
        "tar",
        &["-tzf", env.latest().to_str().unwrap()],
        &env.backup_dir,
    );
    for member in ["plugins/midi/mapping.cfg", "NOTES.txt"] {
        assert!(members.lines().any(|m| m == member), "{member}: {members}");
    }
    fs::remove_dir_all(env.data_dir.join("plugins")).unwrap();
    fs::remove_file(env.data_dir.join("NOTES.txt")).unwrap();
    env.expect(&["restore", "all", "--yes", "--no-stop"], 0);
    assert_eq!(
        fs::read(plugins.join("mapping.cfg")).unwrap(),
        b"button 3 = airhorn\n"
    );
    assert_eq!(
        fs::read(env.data_dir.join("NOTES.txt")).unwrap(),
        b"ask Sam about the pads\n"
    );
}

/// README: "Not enough free space in … nothing was written": a backup dir
/// on a disk smaller than the data is refused before the archive is
/// begun, and the older backups there are untouched.
#[test]
fn a_disk_smaller_than_the_data_is_refused_before_anything_is_written() {
    let mut env = TestEnv::with_audio(1);
    let disk = Stick::tmpfs("6m");
    env.backup_dir = disk.path.join("mss");
    let dir = env.backup_dir.display().to_string();
    env.set("MSS_BACKUP_DIR", &dir);
    env.backup_ok();
    let before = entries(&env.archive_dir());
    // Now the data is bigger than the whole disk.
    let big = env.data_dir.join("data/exports/big.zip");
    write_noise(&big, 8 << 20);
    let out = env.expect(&[], 1);
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!(
            "Not enough free space in {}",
            env.archive_dir().display()
        )),
        "{msg}"
    );
    assert_eq!(
        entries(&env.archive_dir()),
        before,
        "no partial, no new archive"
    );
    assert!(
        entries(&env.backup_dir)
            .iter()
            .all(|n| !n.starts_with(".staging-")),
        "no staging dir: {:?}",
        entries(&env.backup_dir)
    );
    env.expect(&["verify"], 0);
}

/// docs/restore.md step 1: `db` decodes only the database, the first
/// member. With a later member damaged and the sidecar resealed, `restore
/// db` works, and `restore sounds`, which reads every member against the
/// manifest, refuses naming the damaged one and changes nothing.
#[test]
fn restore_db_decodes_only_the_first_member() {
    let env = TestEnv::new();
    env.backup_ok();
    let rows = table_rows(&env.db_path(), "trackpacks");
    let wav = wavs(&env).pop().unwrap();
    let rel = wav
        .strip_prefix(&env.data_dir)
        .unwrap()
        .display()
        .to_string();
    let archive = env.archive_dir().join(&env.archives()[0]);
    rebuild_archive(&env, &archive, |dir| {
        let member = dir.join(&rel);
        let mut bytes = fs::read(&member).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        fs::write(&member, bytes).unwrap();
    });
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute(
            "INSERT INTO trackpacks(name) VALUES ('after the backup')",
            [],
        )
        .unwrap();

    let sounds = tree(&env.data_dir.join("Sounds"), true);
    let out = env.expect(&["restore", "sounds", "--yes", "--no-stop"], 1);
    assert!(stderr(&out).contains(&rel), "{}", stderr(&out));
    assert_same_tree(&tree(&env.data_dir.join("Sounds"), true), &sounds);

    env.expect(&["restore", "db", "--yes", "--no-stop"], 0);
    assert_eq!(table_rows(&env.db_path(), "trackpacks"), rows);
}

/// A database that is damaged inside an archive whose checksum matches
/// (the sidecar resealed after the damage) is refused by the restore's
/// `integrity_check`, and the live database is untouched.
#[test]
fn a_corrupt_database_in_a_checksummed_archive_is_refused() {
    let env = TestEnv::new();
    env.backup_ok();
    let archive = env.archive_dir().join(&env.archives()[0]);
    rebuild_archive(&env, &archive, |dir| {
        let db = dir.join("data/sound_machine.db");
        let mut bytes = fs::read(&db).unwrap();
        // Garbage over the second page (a table's b-tree page).
        let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
        for b in &mut bytes[page..page * 2] {
            *b = 0xa5;
        }
        fs::write(&db, bytes).unwrap();
    });
    let live = fs::read(env.db_path()).unwrap();
    let out = env.expect(&["restore", "db", "--yes", "--no-stop"], 1);
    assert!(
        stderr(&out).contains("the database inside fails integrity_check"),
        "{}",
        stderr(&out)
    );
    assert!(
        fs::read(env.db_path()).unwrap() == live,
        "live database untouched"
    );
    assert!(
        entries(&env.data_dir.join("data"))
            .iter()
            .all(|n| !n.contains(".pre-restore-")),
        "no safety net: nothing was swapped"
    );
}

/// docs/restore.md step 2: modes are kept, a file's less setuid/setgid;
/// a dir keeps setgid (ordinary on a shared dir), as the code means to.
#[test]
fn a_restore_strips_setuid_and_setgid() {
    let env = TestEnv::new();
    let wav = wavs(&env)[0].clone();
    fs::set_permissions(&wav, fs::Permissions::from_mode(0o6755)).unwrap();
    let dir = env.data_dir.join("Sounds/uploads");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o2775)).unwrap();
    env.backup_ok();
    fs::write(&wav, b"changed").unwrap();
    env.expect(&["restore", "sounds", "--yes", "--no-stop"], 0);
    let wav_mode = fs::metadata(&wav).unwrap().permissions().mode() & 0o7777;
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(wav_mode, 0o755, "{wav_mode:o}");
    assert_eq!(dir_mode, 0o2775, "{dir_mode:o}");
}

/// docs/restore.md step 6: a failed start is reported loudly with the
/// safety net's path and exits 1, but is not rolled back.
#[test]
fn a_failed_start_is_exit_1_and_not_rolled_back() {
    let mut env = TestEnv::new();
    let service = Service::install_with(&mut env, 200, "exit 0", "exit 3");
    env.backup_ok();
    let backed_up = tree(&env.data_dir.join("Sounds"), false);
    let extra = env.data_dir.join("Sounds/uploads/after-the-backup.wav");
    fs::write(&extra, b"RIFF new").unwrap();
    let out = env.expect(&["restore", "sounds", "--yes"], 1);
    let net: PathBuf = entries(&env.data_dir)
        .into_iter()
        .find(|n| n.starts_with("Sounds.pre-restore-"))
        .map(|n| env.data_dir.join(n))
        .expect("a safety net");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(&net.display().to_string()), "{text}");
    assert_eq!(service.calls(&env.project_dir), ["stop", "start"]);
    // Restored, and left so: the safety net holds the newer upload.
    assert_same_tree(&tree(&env.data_dir.join("Sounds"), false), &backed_up);
    assert!(net.join("uploads/after-the-backup.wav").is_file());
}

/// The offsite fetch runs under the lock (src/commands/restore.rs: so no backup's
/// retention can prune the copy between download and restore): while
/// another run holds it, `restore --from usb:latest` exits 75 before
/// downloading anything; once free, it downloads and restores.
#[test]
fn an_offsite_restore_fetches_nothing_while_the_lock_is_held() {
    use std::io::Write;
    let mut env = TestEnv::new();
    let stick = Stick::tmpfs("64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let name = env.archives().pop().unwrap();
    fs::remove_dir_all(env.archive_dir()).unwrap();
    fs::create_dir(env.archive_dir()).unwrap();
    let live = fs::read(env.db_path()).unwrap();
    let mut lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.backup_dir.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    lock.set_len(0).unwrap();
    writeln!(lock, "4242 2026-02-11T03:15:00+00:00").unwrap();
    let args = [
        "restore",
        "db",
        "--from",
        "usb:latest",
        "--yes",
        "--no-stop",
    ];
    let out = env.expect(&args, 75);
    assert!(
        stderr(&out).contains("Another mss-backup is already running"),
        "{}",
        stderr(&out)
    );
    assert!(
        entries(&env.archive_dir()).is_empty(),
        "nothing downloaded: {:?}",
        entries(&env.archive_dir())
    );
    assert!(fs::read(env.db_path()).unwrap() == live);
    drop(lock);
    let out = env.expect(&args, 0);
    assert!(
        stderr(&out).contains(&format!("Downloading {name}")),
        "{}",
        stderr(&out)
    );
    assert!(env.archive_dir().join(&name).is_file());
}

/// docs/design.md: the previous backup is kept beyond retention "here and
/// on every offsite target" while the data is shrunk: on a USB stick with
/// retention 2, a week of small backups never rotates the last good one
/// out; once the data is back, retention takes it.
#[test]
fn the_shrink_guard_holds_the_last_good_backup_on_a_usb_stick() {
    let mut env = TestEnv::with_audio(4);
    let stick = Stick::tmpfs("256m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.set("MSS_BACKUP_USB_RETENTION", "2");
    assert_shrink_guard_holds(&env, &stick.backups());
}

/// The same on the rsync remote, through the real sshd.
#[test]
fn the_shrink_guard_holds_the_last_good_backup_on_the_rsync_remote() {
    let mut env = TestEnv::with_audio(4);
    let remote = crate::support::remote::Remote::new(&mut env);
    env.set("MSS_BACKUP_RSYNC_RETENTION", "2");
    assert_shrink_guard_holds(&env, &remote.dir);
}

/// With an offsite target of retention 2 whose backups land in `there`:
/// four nights of emptied uploads keep the last good backup there beside
/// the two newest; the night the uploads are back lets it go.
fn assert_shrink_guard_holds(env: &TestEnv, there: &Path) {
    env.backup_ok();
    let good = env.status()["archive"].as_str().unwrap().to_string();
    let listed = || backups_in(there);
    assert_eq!(listed(), std::slice::from_ref(&good));
    let uploads = env.data_dir.join("Sounds/uploads");
    let saved = env.root.path().join("saved-uploads");
    fs::rename(&uploads, &saved).unwrap();
    fs::create_dir(&uploads).unwrap();
    for night in 0..4 {
        env.backup_ok();
        let names = listed();
        assert!(names.contains(&good), "night {night}: {names:?}");
        assert!(
            names.len() <= 3,
            "night {night}: 2 by retention + the held one: {names:?}"
        );
    }
    assert_eq!(listed().len(), 3);
    fs::remove_dir(&uploads).unwrap();
    fs::rename(&saved, &uploads).unwrap();
    env.backup_ok();
    let names = listed();
    assert!(!names.contains(&good), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
}

/// docs/restore.md: "when run as root, owners are kept": files and dirs
/// that belong to other users (MSS's container user) come back theirs.
#[test]
fn a_restore_as_root_gives_files_back_to_their_owners() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    assert_eq!(unsafe { libc::geteuid() }, 0, "the test suite runs as root");
    let wav = wavs(&env).remove(0);
    let dir = env.data_dir.join("Sounds/uploads");
    std::os::unix::fs::chown(&wav, Some(4242), Some(4343)).unwrap();
    std::os::unix::fs::chown(&dir, Some(4244), Some(4345)).unwrap();
    env.backup_ok();
    // Someone takes them over: the restore must give them back.
    std::os::unix::fs::chown(&wav, Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
    env.expect(&["restore", "all", "--yes", "--no-stop"], 0);
    let file = fs::metadata(&wav).unwrap();
    assert_eq!((file.uid(), file.gid()), (4242, 4343));
    let meta = fs::metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4244, 4345));
}

/// docs/restore.md: owners are kept only "when run as root". Restored by
/// its non-root owner (`nobody` here), an archive whose members belong to
/// other users (uid 4242, as root's backup of MSS's container files
/// records them) comes back owned by the restoring user, with each file's
/// bytes and mode and each dir's mode, and nothing fails on the chown a
/// non-root user may not do.
#[test]
fn a_restore_by_a_non_root_user_gives_foreign_files_to_that_user() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    assert_eq!(unsafe { libc::geteuid() }, 0, "the test suite runs as root");
    let wav = wavs(&env).remove(0);
    let dir = env.data_dir.join("Sounds/uploads");
    let bytes = fs::read(&wav).unwrap();
    fs::set_permissions(&wav, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&wav, Some(4242), Some(4343)).unwrap();
    std::os::unix::fs::chown(&dir, Some(4244), Some(4345)).unwrap();
    env.backup_ok();
    let name = env.archives().pop().unwrap();
    let listed = tool(
        "tar",
        &["--numeric-owner", "-tvzf", &name],
        &env.archive_dir(),
    );
    let member = wav
        .strip_prefix(&env.data_dir)
        .unwrap()
        .display()
        .to_string();
    assert!(
        listed
            .lines()
            .any(|l| l.contains("4242/4343") && l.ends_with(&member)),
        "the archive records the foreign owner: {listed}"
    );

    // The whole tree becomes nobody's, and the file is damaged: nobody's
    // restore must bring the bytes back without the foreign owner.
    chown_to_nobody(&env);
    fs::write(&wav, b"damaged").unwrap();
    let out = as_nobody(&env, &["restore", "sounds", "--yes", "--no-stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = fs::symlink_metadata(&wav).unwrap();
    assert_eq!((file.uid(), file.gid()), (65534, 65534));
    assert_eq!(file.mode() & 0o7777, 0o640, "{:o}", file.mode());
    assert!(
        fs::read(&wav).unwrap() == bytes,
        "the file's bytes are back"
    );
    let meta = fs::symlink_metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o7777, 0o750, "{:o}", meta.mode());
}
