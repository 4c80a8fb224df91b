//! The catch-up run at boot: the network may not be up yet when the
//! offsite copies start. A name that does not resolve is waited for, a
//! bounded time (`MSS_BACKUP_NETWORK_WAIT`, small here), and the log says
//! so; a refusal is reported at once. Real ssh and rsync, no service
//! needed: `.invalid` never resolves (RFC 2606), and port 1 on
//! 127.0.0.1 refuses.

use std::fs;
use std::process::Stdio;

use crate::support::watch::{finish, wait_while_running};
use crate::support::*;

fn log(env: &TestEnv) -> String {
    fs::read_to_string(env.backup_dir.join("backup.log")).unwrap()
}

#[test]
fn an_offsite_host_that_does_not_resolve_is_waited_for_a_bounded_time() {
    let mut env = TestEnv::new();
    env.set(
        "MSS_BACKUP_RSYNC_DEST",
        "backup@mss-test-nowhere.invalid:/srv/mss",
    );
    env.set("MSS_BACKUP_NETWORK_WAIT", "2s");
    let out = env.expect(&[], 1);
    let msg = stderr(&out);
    assert!(
        msg.starts_with("Backup OK locally; offsite ") && msg.contains("mss-test-nowhere.invalid"),
        "{msg}"
    );
    assert_eq!(env.archives().len(), 1, "the local backup is made first");
    let log = log(&env);
    assert!(
        log.contains("the network is not up")
            && log.contains("waiting up to 2 s for it")
            && log.contains("waited 2 s for the network; still down"),
        "{log}"
    );
    assert!(log.contains("Could not resolve hostname"), "{log}");
}

#[test]
fn the_wait_ends_as_soon_as_the_name_resolves() {
    let mut env = TestEnv::new();
    // ssh resolves the host through this file: empty, the name does not
    // resolve; once it maps the name to 127.0.0.1 port 1, it does (and is
    // refused: the network is up, the target is not).
    let ssh_config = env.root.path().join("ssh_config");
    fs::write(&ssh_config, "").unwrap();
    env.set("MSS_BACKUP_RSYNC_DEST", "backup@mss-later.invalid:/srv/mss");
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &format!("ssh -F {}", ssh_config.display()),
    );
    env.set("MSS_BACKUP_NETWORK_WAIT", "5m");
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log_file = env.backup_dir.join("backup.log");
    // Until the run says it waits (or ends without waiting).
    wait_while_running(&mut child, "it said it waits for the network", || {
        fs::read_to_string(&log_file).is_ok_and(|l| l.contains("waiting up to 300 s"))
    });
    fs::write(
        &ssh_config,
        "Host mss-later.invalid\n  HostName 127.0.0.1\n  Port 1\n",
    )
    .unwrap();
    let out = finish(child, "the waiting backup");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
    let log = log(&env);
    assert!(
        log.contains("for the network; it is up") && !log.contains("still down"),
        "{log}"
    );
}

#[test]
fn a_refused_connection_or_no_wait_set_fails_at_once() {
    let mut env = TestEnv::new();
    // Resolves and routes, but nothing listens: not the network's fault.
    env.set("MSS_BACKUP_RSYNC_DEST", "backup@127.0.0.1:/srv/mss");
    env.set("MSS_BACKUP_RSYNC_RSH", "ssh -p 1");
    env.expect(&[], 1);
    assert!(!log(&env).contains("for the network"), "{}", log(&env));
    // A host that does not resolve, with the wait switched off.
    env.set(
        "MSS_BACKUP_RSYNC_DEST",
        "backup@mss-test-nowhere.invalid:/srv/mss",
    );
    env.unset("MSS_BACKUP_RSYNC_RSH");
    env.set("MSS_BACKUP_NETWORK_WAIT", "0s");
    env.expect(&[], 1);
    assert!(!log(&env).contains("for the network"), "{}", log(&env));
    // A wait that is not a duration is a configuration error.
    env.set("MSS_BACKUP_NETWORK_WAIT", "soon");
    let out = env.expect(&[], 78);
    assert!(
        stderr(&out).contains("MSS_BACKUP_NETWORK_WAIT=soon is not valid"),
        "{}",
        stderr(&out)
    );
}
