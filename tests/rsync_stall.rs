//! A remote that stops answering mid-upload: the TCP proxy in front of the
//! real sshd freezes (connections open, nothing moves, like a NAS whose
//! disk hangs or a line that silently drops everything). rsync's stall
//! timeout (`MSS_BACKUP_RSYNC_TIMEOUT`) must end the upload; the run fails
//! in one line that names the remote and the setting, nothing half-sent
//! has a backup's name on either side, and the local backup stands. When
//! ssh's keep-alive gives up first, the line says that instead of rsync's
//! "Broken pipe".

use std::process::Stdio;

use crate::support::proxy::Proxy;
use crate::support::remote::{Remote, rsh_to_port};
use crate::support::watch::{finish, wait_while_running};
use crate::support::*;

/// Backs up to the rsync remote through a proxy in front of the real
/// sshd, with `ssh_options` added to the remote shell, freezes the proxy
/// once 8 MiB of the upload went through, and returns the run's output and
/// the stderr lines that say the transfer stalled. ssh checks the real
/// sshd's host key (`HostKeyAlias`) although it dials the proxy.
fn freeze_mid_upload(
    env: &mut TestEnv,
    remote: &Remote,
    ssh_options: &str,
) -> (std::process::Output, Vec<String>) {
    write_noise(&env.data_dir.join("data/exports/big.zip"), 48 << 20);
    let port = service_var("MSS_TEST_SSH_PORT");
    let proxy = Proxy::start(&format!("{}:{port}", service_var("MSS_TEST_SSH_HOST")));
    let proxy_port = proxy.endpoint().rsplit(':').next().unwrap().to_string();
    let shell = format!(
        "{} -o HostKeyAlias=[127.0.0.1]:{port} {ssh_options}",
        rsh_to_port("ssh", &service_var("MSS_TEST_SSH_KEY"), &proxy_port)
    );
    env.set("MSS_BACKUP_RSYNC_RSH", &shell);
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "8 MiB of the upload went through", || {
        proxy.forwarded() > 8 << 20
    });
    proxy.freeze();
    let out = finish(child, "the backup to a frozen remote");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dest = format!(
        "rsync:{}@{}:{}",
        service_var("MSS_TEST_SSH_USER"),
        service_var("MSS_TEST_SSH_HOST"),
        remote.dir.display()
    );
    let stalled: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("stalled"))
        .map(str::to_string)
        .collect();
    assert_eq!(stalled.len(), 1, "{}", stderr(&out));
    assert!(stalled[0].contains(&dest), "{}", stalled[0]);
    (out, stalled)
}

/// Only the backup, its sidecar and `latest` here, the backup whole; only
/// rsync's hidden temp file, if anything, there.
fn assert_nothing_half_sent(env: &TestEnv, remote: &Remote) {
    let status = env.status();
    assert_eq!(status["status"], "failure", "{status}");
    let rsync = target(&status, "rsync:");
    assert_eq!(rsync["status"], "failure", "{rsync}");

    // Here: the backup and its sidecar, whole, and nothing half-written.
    let local = env.archives();
    assert_eq!(local.len(), 1, "{local:?}");
    let name = &local[0];
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{name}: OK")), "{check}");
    let here = entries(&env.archive_dir());
    assert!(
        here.iter().all(|n| n == name
            || *n == format!("{name}.sha256")
            || *n == format!(".{name}.index")
            || n == "mss-backup-latest.tar.gz"),
        "{here:?}"
    );
    // There: only rsync's hidden temp file may remain, never a backup's name.
    let there = entries(&remote.dir);
    assert!(
        there.iter().all(|n| n.starts_with('.')),
        "the frozen upload left {there:?}"
    );
}

#[test]
fn a_remote_that_freezes_mid_upload_fails_after_the_stall_timeout_and_keeps_the_local_backup() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    env.set("MSS_BACKUP_RSYNC_TIMEOUT", "3s");
    let (_, stalled) = freeze_mid_upload(&mut env, &remote, "");
    assert!(
        stalled[0].contains("no data moved for 3 s")
            && stalled[0].contains("MSS_BACKUP_RSYNC_TIMEOUT"),
        "{}",
        stalled[0]
    );
    assert_nothing_half_sent(&env, &remote);
}

/// ssh's own keep-alive (the operator's `ServerAliveInterval`, which wins
/// over ours) gives up before rsync's stall timeout: the line says so,
/// not rsync's "write error: Broken pipe".
#[test]
fn a_frozen_remote_that_ssh_gives_up_on_first_is_named_as_stalled() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    env.set("MSS_BACKUP_RSYNC_TIMEOUT", "10m");
    let (out, stalled) = freeze_mid_upload(
        &mut env,
        &remote,
        "-o ServerAliveInterval=1 -o ServerAliveCountMax=2",
    );
    assert!(
        stalled[0].contains("ssh's keep-alive got no answer")
            && stalled[0].contains("not responding"),
        "{}",
        stalled[0]
    );
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
    assert_nothing_half_sent(&env, &remote);
}
