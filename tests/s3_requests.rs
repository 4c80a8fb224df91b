//! What the S3 target asks of the server, request by request: an
//! HTTP-aware proxy in front of the real gateway logs each request line in
//! order and throttles on cue (`503 SlowDown`, S3's own answer), so a test
//! can see that a throttled upload is retried and in which order retention
//! deletes, rather than infer it from what is left in the bucket; and it
//! holds a request unanswered, so a run can be killed at a known request.

use std::fs;
use std::process::Stdio;

use crate::support::http_proxy::{Answer, HttpProxy};
use crate::support::rgw::*;
use crate::support::watch::wait_while_running;
use crate::support::*;

/// docs/targets.md: "a 5xx, throttling … is retried". The archive's own
/// upload meets one `SlowDown`; the same request goes again, the backup
/// succeeds, and the object is the local archive byte for byte.
#[test]
fn s3_a_slowdown_on_the_archive_upload_is_retried_and_the_backup_succeeds() {
    let rgw = rgw();
    let prefix = unique_prefix("slowdown");
    let mut env = s3_env(&rgw, &prefix);
    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    // The archive, not its sidecar (`.sha256`) or a probe.
    proxy.slow_down(1, |r| r.method == "PUT" && r.path().ends_with(".tar.gz"));
    let out = env.backup_ok();
    assert!(
        stderr(&out).contains(&format!("s3://{}/{prefix} ok", rgw.bucket)),
        "{}",
        stderr(&out)
    );
    assert_eq!(s3_status(&env)["status"], "success");

    let (name, sha, _) = newest_local(&env);
    let path = format!("/{}/{prefix}{name}", rgw.bucket);
    let requests = proxy.requests();
    let puts: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path() == path)
        .collect();
    assert_eq!(
        puts.iter().map(|r| r.answer.clone()).collect::<Vec<_>>(),
        vec![Answer::SlowDown, Answer::Gateway(Some(200))],
        "one throttled upload and its retry: {requests:#?}"
    );
    assert_eq!(
        puts[0].target, puts[1].target,
        "the retry is the same request"
    );

    let fetched = env.root.path().join("fetched");
    assert_eq!(rgw.download(&format!("{prefix}{name}"), &fetched), sha);
    assert!(fs::read(&fetched).unwrap() == fs::read(env.archive_dir().join(&name)).unwrap());
    assert!(rgw.open_uploads(&prefix).is_empty());
}

/// docs/targets.md and the S3 target: retention deletes a backup's archive
/// before its sidecar, so a delete cut off halfway leaves a lone sidecar
/// (a few bytes, never listed) rather than a lone archive (never listed
/// either, so never deleted, and billed for good). The order is read from
/// the requests themselves.
#[test]
fn s3_retention_deletes_the_archive_before_its_sidecar() {
    let rgw = rgw();
    let prefix = unique_prefix("delorder");
    let mut env = s3_env(&rgw, &prefix);
    env.set("MSS_BACKUP_S3_RETENTION", "1");
    let old = "mss-backup-2000-01-04_000000.tar.gz";
    rgw.put(&format!("{prefix}{old}"), "old");
    rgw.put(
        &format!("{prefix}{old}.sha256"),
        &format!("{}  {old}\n", "0".repeat(64)),
    );
    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    env.backup_ok();

    let archive = format!("/{}/{prefix}{old}", rgw.bucket);
    let sidecar = format!("{archive}.sha256");
    let requests = proxy.requests();
    let deletes: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.path().contains(old))
        .map(|r| r.path())
        .collect();
    assert_eq!(
        deletes,
        vec![archive.as_str(), sidecar.as_str()],
        "archive first, then its sidecar: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.method == "DELETE")
            .all(|r| r.answer == Answer::Gateway(Some(204))),
        "{requests:#?}"
    );
    let (name, _, _) = newest_local(&env);
    assert_eq!(
        rgw.keys(&prefix),
        vec![format!("{prefix}{name}"), format!("{prefix}{name}.sha256")]
    );
    let entry = s3_status(&env);
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .ends_with("1 kept, 1 deleted by retention"),
        "{entry}"
    );
}

/// A nightly run killed (-9) while its upload is built from last night's
/// object on the server (UploadPartCopy, held unanswered by the proxy: the
/// run is known to be mid-upload): nothing appears under tonight's name on
/// S3, tonight's local archive is whole, and the next night succeeds with
/// an object that is its local archive byte for byte.
#[test]
fn s3_a_night_killed_mid_server_side_copy_leaves_no_object_and_the_next_is_whole() {
    let rgw = rgw();
    let prefix = unique_prefix("killcopy");
    let mut env = TestEnv::with_audio(24);
    s3_vars(&rgw, &prefix, &mut env);
    env.backup_ok();
    let (first, _, _) = newest_local(&env);
    write_noise(&env.data_dir.join("data/exports/tonight.zip"), 3 << 20);

    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    proxy.hold(|r| r.header("x-amz-copy-source").is_some());
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "a server-side copy was sent", || {
        proxy.holding()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop(proxy);
    env.set("MSS_BACKUP_S3_ENDPOINT", &rgw.endpoint);

    let (tonight, _, _) = newest_local(&env);
    assert_ne!(tonight, first, "tonight's local archive was published");
    let check = tool(
        "sha256sum",
        &["-c", &format!("{tonight}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{tonight}: OK")), "{check}");
    assert_eq!(
        rgw.keys(&prefix),
        vec![
            format!("{prefix}{first}"),
            format!("{prefix}{first}.sha256")
        ],
        "nothing under tonight's name"
    );
    // The kill landed inside tonight's multipart upload: begun, never
    // completed (nor aborted: a kill -9 leaves that to the bucket's
    // lifecycle rule), and invisible.
    assert_eq!(
        rgw.open_uploads(&prefix),
        vec![format!("{prefix}{tonight}")]
    );

    env.backup_ok();
    let (next, sha, _) = newest_local(&env);
    assert_ne!(next, tonight);
    let keys = rgw.keys(&prefix);
    assert!(
        keys.contains(&format!("{prefix}{next}"))
            && keys.contains(&format!("{prefix}{next}.sha256")),
        "{keys:?}"
    );
    let fetched = env.root.path().join("next.tar.gz");
    assert_eq!(rgw.download(&format!("{prefix}{next}"), &fetched), sha);
    assert!(fs::read(&fetched).unwrap() == fs::read(env.archive_dir().join(&next)).unwrap());
}

/// Ctrl-C while the gateway sits on a request of tonight's upload (held by
/// the proxy, with `s3_timeout` at half an hour): the run stops after its
/// short grace instead of waiting out the timeout and its retries, says it
/// was interrupted, keeps the local backup, and leaves nothing under
/// tonight's name on S3.
#[test]
fn s3_ctrl_c_while_the_gateway_sits_on_an_upload_stops_the_run() {
    let rgw = rgw();
    let prefix = unique_prefix("stopheld");
    let mut env = TestEnv::with_audio(8);
    s3_vars(&rgw, &prefix, &mut env);
    env.set("MSS_BACKUP_S3_TIMEOUT", "30m");
    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    proxy.hold(|r| r.method == "PUT");
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "an upload request was sent", || proxy.holding());
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    // A watchdog against a hang only: without the stop, the run would sit
    // on the held request for the half hour of `s3_timeout`.
    let out = crate::support::watch::finish(child, "the run after Ctrl-C");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted by SIGINT"),
        "{}",
        stderr(&out)
    );
    drop(proxy);
    let (name, _, _) = newest_local(&env);
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{name}: OK")), "{check}");
    assert_eq!(
        rgw.keys(&prefix),
        Vec::<String>::new(),
        "nothing under tonight's name"
    );
}

/// The same for a download: Ctrl-C while the gateway sits on the GET of
/// the archive during a drill (`verify --from s3:latest`) stops it, and
/// the drill's temp copy is gone.
#[test]
fn s3_ctrl_c_while_the_gateway_sits_on_a_download_stops_the_drill() {
    let rgw = rgw();
    let prefix = unique_prefix("stopget");
    let mut env = TestEnv::with_audio(2);
    s3_vars(&rgw, &prefix, &mut env);
    env.backup_ok();
    env.set("MSS_BACKUP_S3_TIMEOUT", "30m");
    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    proxy.hold(|r| r.method == "GET" && r.path().ends_with(".tar.gz"));
    let mut child = env
        .cmd(&["verify", "--from", "s3:latest"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "the archive's download was asked for", || {
        proxy.holding()
    });
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = crate::support::watch::finish(child, "the drill after Ctrl-C");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted by SIGINT"),
        "{}",
        stderr(&out)
    );
    let left: Vec<String> = entries(&env.backup_dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert_eq!(left, Vec::<String>::new(), "the drill's temp copy is gone");
}
