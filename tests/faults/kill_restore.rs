//! `kill -9` of a restore at each step, and a swap stuck half-way: the
//! live data is the old state or the new one, never a mix, and the old
//! data is where the log says.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use crate::support::hooks::Service;
use crate::support::kill::*;
use crate::support::tree::data_tree;
use crate::support::*;

#[derive(Clone, PartialEq, Debug)]
struct LiveState {
    tree: BTreeMap<String, String>,
    rows: Option<i64>,
}

fn live_state(env: &TestEnv) -> LiveState {
    LiveState {
        tree: data_tree(&env.data_dir),
        rows: env
            .db_path()
            .is_file()
            .then(|| count_rows(&env.db_path(), "trackpacks")),
    }
}

/// The state a restore of `mode` produces from `old` (live now) and
/// `backup` (what the archive holds).
fn restored_state(mode: &str, old: &LiveState, backup: &LiveState) -> LiveState {
    match mode {
        "db" => LiveState {
            tree: old.tree.clone(),
            rows: backup.rows,
        },
        "sounds" => {
            let mut tree: BTreeMap<String, String> = old
                .tree
                .iter()
                .filter(|(k, _)| !k.starts_with("Sounds"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            tree.extend(
                backup
                    .tree
                    .iter()
                    .filter(|(k, _)| k.starts_with("Sounds"))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            LiveState {
                tree,
                rows: old.rows,
            }
        }
        _ => backup.clone(),
    }
}

/// Live data moves on after the backup: a new upload and a new row.
/// Returns the state a restore would replace.
fn move_on_after_the_backup(env: &TestEnv) -> LiveState {
    fs::write(
        env.data_dir.join("Sounds/uploads/after-the-backup.wav"),
        b"RIFF new upload",
    )
    .unwrap();
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute(
            "INSERT INTO trackpacks(name) VALUES ('after the backup')",
            [],
        )
        .unwrap();
    live_state(env)
}

/// The database's side files a `restore MODE` moves first, one
/// `renameat2` each; then come the exchange and the old data's rename.
fn side_files(env: &TestEnv, mode: &str) -> u32 {
    if mode != "db" {
        return 0;
    }
    ["-wal", "-shm", "-journal"]
        .iter()
        .filter(|s| {
            let mut p = env.db_path().into_os_string();
            p.push(s);
            Path::new(&p).exists()
        })
        .count() as u32
}

/// `path` holds what `restore MODE` replaced: the old tree, the old
/// `Sounds/`, or the old database.
fn assert_holds_the_old_data(path: &Path, mode: &str, old: &LiveState, what: &str) {
    match mode {
        "all" => assert_eq!(data_tree(path), old.tree, "{what}"),
        "sounds" => {
            let old_sounds: BTreeMap<String, String> = old
                .tree
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("Sounds/")
                        .map(|r| (r.to_string(), v.clone()))
                })
                .collect();
            assert_eq!(data_tree(path), old_sounds, "{what}");
        }
        _ => assert_eq!(count_rows(path, "trackpacks"), old.rows.unwrap(), "{what}"),
    }
}

/// Hook scripts for stop and start: `kill_in` makes that hook kill the
/// restore (by the pid in the lock file), as a crash at that step would.
fn hooks(env: &mut TestEnv, kill_in: Option<&str>) {
    let kill = format!(
        "kill -9 $(cut -d' ' -f1 '{}')",
        env.backup_dir.join(".lock").display()
    );
    let tail = |hook: &str| {
        if kill_in == Some(hook) {
            kill.as_str()
        } else {
            "exit 0"
        }
    };
    Service::install_with(env, 200, tail("stop"), tail("start"));
}

#[test]
fn kill_9_of_a_restore_at_each_step_leaves_the_old_state_or_the_new_one() {
    // (step, how it is killed, whether the swap had happened)
    let steps: [(&str, &str, bool); 5] = [
        ("staged and checked, before MSS is stopped", "syncfs", false),
        ("while MSS is being stopped", "stop hook", false),
        (
            "at the swap, side files moved aside, before the exchange",
            "renameat2 exchange",
            false,
        ),
        (
            "after the exchange, before the old data is named",
            "renameat2 net",
            true,
        ),
        ("while MSS is being started again", "start hook", true),
    ];
    for mode in ["db", "sounds", "all"] {
        for (step, how, swapped) in steps {
            let what = format!("restore {mode}, killed {step}");
            let mut env = TestEnv::with_audio(2);
            env.backup_ok();
            let backup = live_state(&env);
            let old = move_on_after_the_backup(&env);
            let new = restored_state(mode, &old, &backup);
            assert_ne!(old, new, "{what}: the restore changes something");
            let args = ["restore", mode, "--yes"];
            let out = match how {
                "stop hook" | "start hook" => {
                    hooks(&mut env, how.split(' ').next());
                    env.run(&args)
                }
                _ => {
                    let mut no_stop = args.to_vec();
                    no_stop.push("--no-stop");
                    let sides = side_files(&env, mode);
                    let (syscall, when) = match how {
                        "renameat2 exchange" => ("renameat2", sides + 1),
                        "renameat2 net" => ("renameat2", sides + 2),
                        _ => (how, 1),
                    };
                    strace_kill(&env, syscall, None, when, &no_stop)
                }
            };
            if how.ends_with("hook") {
                // The hook killed the restore: the run ends by SIGKILL.
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGKILL),
                    "{what}: {}",
                    stderr(&out)
                );
            } else {
                assert_killed(&out, &what);
            }
            let now = live_state(&env);
            let expected = if swapped { &new } else { &old };
            assert!(
                now == *expected,
                "{what}: the live data is neither the old state nor the new one (expected the {} state; rows: old {:?}, new {:?})\nnow: {now:#?}",
                if swapped { "new" } else { "old" },
                old.rows,
                new.rows
            );
            assert!(lock_is_free(&env), "{what}: lock held");
            let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
            if swapped {
                let line = log
                    .lines()
                    .find(|l| l.contains("goes to the safety net"))
                    .unwrap_or_else(|| panic!("{what}: the log names no safety net:\n{log}"));
                let net = line
                    .split("safety_net=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| panic!("{what}: {line}"));
                // The next run finishes the swap: the data from before the
                // restore is where the log said. For sounds the next run is
                // the nightly backup, which finishes it before it lists
                // cloud-data/ (docs/restore.md: "restore or backup").
                let (next, said) = if mode == "sounds" {
                    let out = env.expect(&[], 0);
                    let warnings = env.status()["warnings"].to_string();
                    (out, warnings)
                } else {
                    (
                        env.expect(&["restore", mode, "--dry-run"], 0),
                        String::new(),
                    )
                };
                if step.starts_with("after the exchange") {
                    let text = format!("{}{}{said}", stdout(&next), stderr(&next));
                    assert!(
                        text.contains("killed after swapping"),
                        "{what}: the next run reports what it finished: {text}"
                    );
                }
                if mode == "sounds" {
                    // What that backup archived as Sounds/ is the restored
                    // one, whole: no mix of old and new. (The safety net
                    // inside cloud-data/ is archived too, as documented.)
                    let members = tool(
                        "tar",
                        &["-tzf", env.latest().to_str().unwrap()],
                        &env.backup_dir,
                    );
                    assert!(
                        !members
                            .lines()
                            .any(|m| m.starts_with("Sounds/") && m.contains("after-the-backup")),
                        "{what}: {members}"
                    );
                }
                assert!(net.exists(), "{what}: safety net {} missing", net.display());
                assert_holds_the_old_data(&net, mode, &old, &what);
            }
            let leftovers: Vec<String> = entries(&env.project_dir)
                .into_iter()
                .filter(|n| n.starts_with(".mss-restore-"))
                .collect();
            if swapped {
                assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
            }
            // A full restore works afterwards and leaves nothing behind.
            let mut env = env;
            hooks(&mut env, None);
            env.expect(&["restore", mode, "--yes"], 0);
            assert_eq!(
                live_state(&env),
                restored_state(mode, &now, &backup),
                "{what}"
            );
            let leftovers: Vec<String> = entries(&env.project_dir)
                .into_iter()
                .filter(|n| n.starts_with(".mss-restore-"))
                .collect();
            assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
            assert!(lock_is_free(&env));
            eprintln!(
                "{what}: {} state, nothing lost",
                if swapped { "new" } else { "old" }
            );
        }
    }
}

/// After the exchange, the old data cannot be moved to the safety net and
/// the exchange back fails too (both `renameat2` calls fail with ENOSPC,
/// injected by strace). The restore stops, says where the old data is and
/// how to keep it, and that data is still there; the next run moves it to
/// the safety net.
#[test]
fn a_swap_stuck_half_way_keeps_the_old_data_where_it_says() {
    for mode in ["db", "sounds"] {
        let what = format!("restore {mode}, stuck after the exchange");
        let env = TestEnv::with_audio(2);
        env.backup_ok();
        let backup = live_state(&env);
        let old = move_on_after_the_backup(&env);
        let inject = format!(
            "inject=renameat2:error=ENOSPC:when={}+",
            side_files(&env, mode) + 2
        );
        let wrapper = [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=renameat2",
            "-e",
            &inject,
            "--",
        ];
        let out = wrapped(&env, &wrapper, &["restore", mode, "--yes", "--no-stop"])
            .output()
            .expect("strace must be installed (cargo xtask test installs it)");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let mv = err
            .split("keep it with: mv ")
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: no mv to keep the old data: {err}"));
        let mut words = mv.split_whitespace();
        let (at, net) = match (words.next(), words.next()) {
            (Some(at), Some(net)) => (PathBuf::from(at), PathBuf::from(net)),
            _ => panic!("{what}: {err}"),
        };
        assert!(
            at.exists(),
            "{what}: the old data is gone from {}",
            at.display()
        );
        assert_holds_the_old_data(&at, mode, &old, &what);
        assert_eq!(
            live_state(&env),
            restored_state(mode, &old, &backup),
            "{what}"
        );
        assert!(lock_is_free(&env), "{what}: lock held");

        // The next run finishes what the stuck one could not.
        let dry = env.expect(&["restore", mode, "--dry-run"], 0);
        assert!(
            format!("{}{}", stdout(&dry), stderr(&dry)).contains("killed after swapping"),
            "{what}: the next run reports what it finished: {}{}",
            stdout(&dry),
            stderr(&dry)
        );
        assert_holds_the_old_data(&net, mode, &old, &what);
        let leftovers: Vec<String> = entries(&env.project_dir)
            .into_iter()
            .filter(|n| n.starts_with(".mss-restore-"))
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
        eprintln!("{what}: the old data kept, then moved to the safety net");
    }
}
