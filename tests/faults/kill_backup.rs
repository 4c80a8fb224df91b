//! `kill -9` of a backup at random offsets and at named points (strace
//! kills it at the entry of a known system call), and during an upload to
//! a USB stick: no file under a backup's name is ever incomplete.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::support::kill::*;
use crate::support::stick::Stick;
use crate::support::*;

/// Where a kill after a random delay landed, judged from what it left.
fn landed(env: &TestEnv, before: &BTreeSet<String>, finished: bool) -> &'static str {
    if finished {
        return "after the run had finished";
    }
    let names = entries(&env.archive_dir());
    let latest = fs::read_link(env.latest())
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new: Vec<&String> = names
        .iter()
        .filter(|n| is_backup_name(n) && !before.contains(*n))
        .collect();
    if let Some(new) = new.first() {
        if **new == latest {
            "after latest moved (retention, offsite, status)"
        } else {
            "after the archive got its name, before latest moved"
        }
    } else if names.iter().any(|n| {
        n.ends_with(".sha256") && !names.contains(&n.trim_end_matches(".sha256").to_string())
    }) {
        "after the sidecar, before the archive's rename"
    } else if names.iter().any(|n| n.ends_with(".partial")) {
        "while the archive was written or read back"
    } else if entries(&env.backup_dir)
        .iter()
        .any(|n| n.starts_with(".staging-"))
    {
        "before the partial existed (listing, database snapshot)"
    } else {
        "at start-up, before the staging dir"
    }
}

#[test]
fn kill_9_of_a_backup_at_random_offsets_loses_nothing() {
    let runs = if long() { 120 } else { 20 };
    let seed = seed();
    eprintln!(
        "kill -9 of a backup at {runs} random offsets, seed {seed} (MSS_FAULTS_SEED={seed} replays it)"
    );
    let mut env = TestEnv::with_audio(if long() { 24 } else { 6 });
    env.set("MSS_BACKUP_RETENTION", "3");
    let clock = Instant::now();
    env.backup_ok();
    let full = clock.elapsed();
    let mut rng = Rng(seed);
    let mut tally: BTreeMap<&str, u32> = BTreeMap::new();
    for run in 0..runs {
        let before: BTreeSet<String> = entries(&env.archive_dir()).into_iter().collect();
        // Squared, so the short early steps (listing, snapshot, publishing)
        // are hit as well as the long stream; a few land after the end.
        let u = rng.unit();
        let delay = full.mul_f64(u * u * 1.1);
        let mut child = env
            .cmd(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        let at = landed(&env, &before, finished);
        *tally.entry(at).or_default() += 1;
        let what = format!("run {run} (seed {seed}), killed after {delay:?}: {at}");
        eprintln!("{what}");
        assert_nothing_lost(&env, &what);
        assert_next_run_cleans_up(&env, &what);
    }
    eprintln!("kill -9 of a backup: where the {runs} kills landed: {tally:#?}");
    // Kills that all land after the run (a fast machine) or at start-up
    // prove nothing: the two steps that matter must have been hit.
    for step in [
        "while the archive was written or read back",
        "before the partial existed (listing, database snapshot)",
    ] {
        assert!(
            tally.get(step).is_some_and(|n| *n > 0),
            "no kill landed {step} (seed {seed}): {tally:#?}"
        );
    }
}

#[test]
fn kill_9_of_a_backup_at_each_named_point_loses_nothing() {
    let mut env = TestEnv::with_audio(4);
    env.set("MSS_BACKUP_RETENTION", "3");
    for _ in 0..3 {
        env.backup_ok();
    }
    let db = env.db_path();
    let middle_wav = {
        let wavs = wavs(&env);
        wavs[wavs.len() / 2].clone()
    };
    let status_file = env.backup_dir.join("last_backup.json");
    // (what, syscall, path, when): each kills at the entry of that call.
    type Point = (&'static str, &'static str, Option<PathBuf>, u32);
    type PointAt<'a> = Box<dyn Fn(&TestEnv) -> Point + 'a>;
    let oldest = |env: &TestEnv| env.archive_dir().join(&env.archives()[0]);
    let points: Vec<PointAt> = vec![
        Box::new(|_| {
            (
                "before the partial exists (opening the live database)",
                "openat",
                Some(db.clone()),
                1,
            )
        }),
        Box::new(|_| {
            (
                "mid-stream (opening a WAV half-way through)",
                "openat",
                Some(middle_wav.clone()),
                1,
            )
        }),
        Box::new(|_| {
            (
                "written and read back, before the sidecar is named",
                "rename",
                None,
                1,
            )
        }),
        Box::new(|_| {
            (
                "after the sidecar, before the archive's rename",
                "rename",
                None,
                2,
            )
        }),
        Box::new(|_| {
            (
                "after the archive's rename, before its member index",
                "rename",
                None,
                3,
            )
        }),
        Box::new(|_| {
            (
                "after the archive's rename, before latest moves",
                "symlink",
                None,
                1,
            )
        }),
        Box::new(move |env| {
            (
                "retention: before deleting the oldest archive",
                "unlink",
                Some(oldest(env)),
                1,
            )
        }),
        Box::new(move |env| {
            let mut sidecar = oldest(env).into_os_string();
            sidecar.push(".sha256");
            (
                "retention: between the oldest archive and its sidecar",
                "unlink",
                Some(PathBuf::from(sidecar)),
                1,
            )
        }),
        // Renames of a run: sidecar, archive, member index, latest,
        // last_backup.json.
        Box::new(|_| ("while replacing last_backup.json", "rename", None, 5)),
    ];
    for point in &points {
        let (what, syscall, path, when) = point(&env);
        let before = env.archives();
        let latest_before = fs::read_link(env.latest()).unwrap();
        let status_before = fs::read(&status_file).unwrap();
        let out = strace_kill(&env, syscall, path.as_deref(), when, &[]);
        assert_killed(&out, what);
        let names = entries(&env.archive_dir());
        // Each point left what it should, so the kill landed there.
        match (syscall, when, path.is_some()) {
            ("openat", _, _) => {
                assert_eq!(env.archives(), before, "{what}");
                assert_eq!(
                    names.iter().any(|n| n.ends_with(".partial")),
                    what.starts_with("mid-stream"),
                    "{what}: {names:?}"
                );
            }
            ("rename", 1, false) => {
                assert!(
                    names.iter().any(|n| n.ends_with(".partial")),
                    "{what}: {names:?}"
                );
                assert_eq!(env.archives(), before, "{what}");
            }
            ("rename", 2, false) => {
                let lone: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        n.ends_with(".sha256") && !names.contains(&n.replace(".sha256", ""))
                    })
                    .collect();
                assert_eq!(lone.len(), 1, "{what}: a lone sidecar: {names:?}");
                assert_eq!(env.archives(), before, "{what}");
            }
            _ => {
                // The archive is named (with its sidecar): exactly one new
                // backup, and what else each point leaves.
                let after = env.archives();
                let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
                assert_eq!(new.len(), 1, "{what}: one new backup: {after:?}");
                let new = new[0].clone();
                assert!(
                    names.contains(&format!("{new}.sha256")),
                    "{what}: {names:?}"
                );
                let latest = fs::read_link(env.latest()).unwrap();
                let oldest = &before[0];
                let oldest_sidecar = names.contains(&format!("{oldest}.sha256"));
                let kept: Vec<String> = before.iter().skip(1).cloned().collect();
                let with_new = |mut names: Vec<String>| {
                    names.push(new.clone());
                    names.sort();
                    names
                };
                match (syscall, what.contains("its sidecar")) {
                    ("rename", _) if what.contains("member index") => {
                        assert_eq!(latest, latest_before, "{what}: latest has not moved");
                        assert_eq!(after, with_new(before.clone()), "{what}");
                        assert!(
                            !names.contains(&format!(".{new}.index"))
                                && names
                                    .iter()
                                    .any(|n| n.starts_with(&format!("..{new}.index.tmp-"))),
                            "{what}: the index only in its temp file: {names:?}"
                        );
                    }
                    ("symlink", _) => {
                        assert_eq!(latest, latest_before, "{what}: latest has not moved");
                        assert_eq!(after, with_new(before.clone()), "{what}");
                    }
                    ("unlink", false) => {
                        // Killed before retention deleted anything.
                        assert_eq!(latest, Path::new(&new), "{what}: latest moved");
                        assert_eq!(after, with_new(before.clone()), "{what}");
                        assert!(oldest_sidecar, "{what}: {names:?}");
                    }
                    ("unlink", true) => {
                        // The oldest archive is gone, its sidecar not yet.
                        assert_eq!(latest, Path::new(&new), "{what}: latest moved");
                        assert_eq!(after, with_new(kept), "{what}");
                        assert!(oldest_sidecar, "{what}: the lone sidecar: {names:?}");
                    }
                    _ => {
                        // Retention done, only the status file not replaced.
                        assert_eq!(latest, Path::new(&new), "{what}: latest moved");
                        assert_eq!(after, with_new(kept), "{what}");
                        assert!(!oldest_sidecar, "{what}: {names:?}");
                        assert_eq!(
                            fs::read(&status_file).unwrap(),
                            status_before,
                            "{what}: last_backup.json is the previous run's, whole"
                        );
                    }
                }
            }
        }
        assert_nothing_lost(&env, what);
        assert_next_run_cleans_up(&env, what);
        if what.contains("member index") {
            // Without the index, the next run reads everything, and says so.
            let reuse = &env.status()["reuse"];
            assert!(
                reuse["full"].as_str().is_some_and(|why| why.ends_with(
                    "has no member index (made by an older mss-backup, or its run was cut short)"
                )),
                "{what}: {reuse}"
            );
        }
        eprintln!("kill -9 {what}: nothing lost, next run clean");
    }
}

#[test]
fn kill_9_during_an_upload_to_a_usb_stick_leaves_nothing_under_a_backup_name() {
    let mut env = TestEnv::with_audio(4);
    let stick = Stick::tmpfs("64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let on_stick = stick.path.join("mss-backup");
    // Renames of a run: local sidecar, local archive, member index,
    // latest, then the stick's sidecar (5) and archive (6), then the
    // status file.
    for (when, what) in [
        (5, "while the sidecar is copied to the stick"),
        (
            6,
            "after the archive was copied and read back, before its name",
        ),
    ] {
        let before = entries(&on_stick);
        let out = strace_kill(&env, "rename", None, when, &[]);
        assert_killed(&out, what);
        let left = entries(&on_stick);
        assert!(
            left.iter()
                .any(|n| n.starts_with('.') && n.ends_with(".partial")),
            "{what}: a hidden partial shows the copy was under way: {left:?}"
        );
        let complete: Vec<&String> = left.iter().filter(|n| is_backup_name(n)).collect();
        assert_eq!(
            complete,
            before
                .iter()
                .filter(|n| is_backup_name(n))
                .collect::<Vec<_>>(),
            "{what}: no new archive under a backup's name on the stick"
        );
        assert_nothing_lost(&env, what);
        assert_next_run_cleans_up(&env, what);
        let now = entries(&on_stick);
        assert!(
            now.iter().all(|n| !n.starts_with('.')),
            "{what}: the next copy tidied the stick: {now:?}"
        );
        for name in now.iter().filter(|n| is_backup_name(n)) {
            let check = tool("sha256sum", &["-c", &format!("{name}.sha256")], &on_stick);
            assert!(check.contains(": OK"), "{check}");
        }
        for name in now.iter().filter(|n| n.ends_with(".sha256")) {
            assert!(now.contains(&name.replace(".sha256", "")), "lone {name}");
        }
    }
}
