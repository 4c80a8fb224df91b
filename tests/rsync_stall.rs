//! A remote that stops answering mid-upload: the TCP proxy in front of the
//! real sshd freezes (connections open, nothing moves, like a NAS whose
//! disk hangs or a line that silently drops everything). rsync's stall
//! timeout (`MSS_BACKUP_RSYNC_TIMEOUT`) must end the upload; the run fails
//! in one line that names the remote and the setting, nothing half-sent
//! has a backup's name on either side, and the local backup stands.

use std::process::Stdio;

use crate::support::proxy::Proxy;
use crate::support::remote::{Remote, rsh_to_port};
use crate::support::watch::{finish, wait_while_running};
use crate::support::*;

#[test]
fn a_remote_that_freezes_mid_upload_fails_after_the_stall_timeout_and_keeps_the_local_backup() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    write_noise(&env.data_dir.join("data/exports/big.zip"), 48 << 20);
    let port = service_var("MSS_TEST_SSH_PORT");
    let proxy = Proxy::start(&format!("{}:{port}", service_var("MSS_TEST_SSH_HOST")));
    let proxy_port = proxy.endpoint().rsplit(':').next().unwrap().to_string();
    // ssh goes to the proxy's port but checks the real sshd's host key.
    let shell = format!(
        "{} -o HostKeyAlias=[127.0.0.1]:{port}",
        rsh_to_port("ssh", &service_var("MSS_TEST_SSH_KEY"), &proxy_port)
    );
    env.set("MSS_BACKUP_RSYNC_RSH", &shell);
    env.set("MSS_BACKUP_RSYNC_TIMEOUT", "3s");

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
    let message = stderr(&out);
    let stalled: Vec<&str> = message.lines().filter(|l| l.contains("stalled")).collect();
    assert_eq!(stalled.len(), 1, "{message}");
    assert!(
        stalled[0].contains(&dest)
            && stalled[0].contains("no data moved for 3 s")
            && stalled[0].contains("MSS_BACKUP_RSYNC_TIMEOUT"),
        "{}",
        stalled[0]
    );
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
