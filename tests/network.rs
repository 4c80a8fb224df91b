//! The catch-up run at boot: the network may not be up yet when the
//! offsite copies start. A name that does not resolve is waited for, a
//! bounded time (`MSS_BACKUP_NETWORK_WAIT`, small here), and the log says
//! so; a refusal is reported at once. Real ssh and rsync, no service
//! needed: `.invalid` never resolves (RFC 2606), and port 1 on
//! 127.0.0.1 refuses.

use std::fs;

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
