//! The S3 target against a real S3 server: Ceph's RADOS Gateway on
//! 127.0.0.1, which `cargo xtask test` starts and hands over in
//! `MSS_TEST_S3_*` variables (without them these tests fail, they never
//! skip). It checks signatures, so wrong keys are really refused. Each test
//! works under a key prefix of its own, so they run in parallel. What the
//! binary stored is checked with curl's own SigV4 signing, not with the
//! code under test. A server that goes away mid-upload is a TCP proxy in
//! front of the gateway that the test kills (or freezes, like a SIGSTOP),
//! so the real gateway keeps serving the other tests.

use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Instant;

use crate::support::http_proxy::{Answer, HttpProxy};
use crate::support::proxy::Proxy;
use crate::support::rgw::*;
use crate::support::watch::{finish, wait_while_running};
use crate::support::*;

/// Runs mss-backup to completion and returns its exit code, stdout, stderr
/// and peak resident memory in KiB (from the kernel's accounting of the
/// reaped child, `wait4`).
fn run_measured(env: &TestEnv, args: &[&str]) -> (i32, String, String, u64) {
    let out_path = env.root.path().join("measured.out");
    let err_path = env.root.path().join("measured.err");
    #[allow(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reports its peak memory"
    )]
    let child = env
        .cmd(args)
        .stdout(Stdio::from(File::create(&out_path).unwrap()))
        .stderr(Stdio::from(File::create(&err_path).unwrap()))
        .spawn()
        .expect("start mss-backup");
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; wait4 writes only into the
    // two out-parameters, which live for the whole call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        fs::read_to_string(&out_path).unwrap(),
        fs::read_to_string(&err_path).unwrap(),
        u64::try_from(usage.ru_maxrss).unwrap(),
    )
}

#[test]
fn s3_backup_stores_archive_sidecar_and_sha256_metadata() {
    let rgw = rgw();
    let prefix = unique_prefix("basic");
    let env = s3_env(&rgw, &prefix);
    let out = env.backup_ok();
    let (name, sha, size) = newest_local(&env);

    let entry = s3_status(&env);
    assert_eq!(
        entry["name"],
        format!("s3://{}/{prefix}", rgw.bucket),
        "{entry}"
    );
    assert_eq!(entry["status"], "success", "{entry}");
    assert!(
        stderr(&out).contains(&format!("s3://{}/{prefix} ok", rgw.bucket)),
        "{}",
        stderr(&out)
    );

    // Exactly the archive and its sidecar, byte for byte where it counts.
    let archive_key = format!("{prefix}{name}");
    let sidecar_key = format!("{archive_key}.sha256");
    assert_eq!(
        rgw.keys(&prefix),
        vec![archive_key.clone(), sidecar_key.clone()]
    );
    assert_eq!(rgw.header(&archive_key, "content-length"), size.to_string());
    assert_eq!(rgw.header(&archive_key, "x-amz-meta-sha256"), sha);
    // The object itself, fetched by curl: the local archive's bytes.
    let fetched = env.root.path().join("fetched");
    assert_eq!(rgw.download(&archive_key, &fetched), sha);
    assert!(fs::read(&fetched).unwrap() == fs::read(env.archive_dir().join(&name)).unwrap());
    assert_eq!(
        rgw.get(&sidecar_key),
        fs::read_to_string(env.archive_dir().join(format!("{name}.sha256"))).unwrap()
    );
    assert!(rgw.open_uploads(&prefix).is_empty());

    // What the tool itself reports from there.
    let listed = env.expect(&["list", "--target", "s3"], 0);
    assert!(stdout(&listed).starts_with(&name), "{}", stdout(&listed));
    let json = env.expect(&["list", "--target", "s3", "--json"], 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(rows[0]["name"], name.as_str(), "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");

    // `config` shows the target, never the keys.
    let config = env.expect(&["config"], 0);
    assert!(
        stdout(&config).contains(&format!("s3://{}/{prefix} at {}", rgw.bucket, rgw.endpoint)),
        "{}",
        stdout(&config)
    );
    assert!(
        stdout(&config).contains("keys from MSS_BACKUP_S3_ACCESS_KEY_ID"),
        "{}",
        stdout(&config)
    );
    assert_no_secret(&env, &[&out, &listed, &json, &config], &rgw.secret);
}

#[test]
fn s3_default_prefix_is_the_server_id_and_a_missing_id_fails_only_s3() {
    let rgw = rgw();
    let id = unique_prefix("id")
        .trim_start_matches("t/")
        .replace('/', "");
    let mut env = s3_env(&rgw, "unused");
    env.unset("MSS_BACKUP_S3_PREFIX");
    fs::write(env.data_dir.join("data/server_id.txt"), format!("{id}\n")).unwrap();
    env.backup_ok();
    let (name, _, _) = newest_local(&env);
    let prefix = format!("mss/{id}/");
    assert_eq!(
        rgw.keys(&prefix),
        vec![format!("{prefix}{name}"), format!("{prefix}{name}.sha256")]
    );
    assert_eq!(
        s3_status(&env)["name"],
        format!("s3://{}/{prefix}", rgw.bucket)
    );

    // Without the id there is no safe prefix: S3 fails, the backup is made.
    fs::remove_file(env.data_dir.join("data/server_id.txt")).unwrap();
    let out = env.expect(&[], 1);
    let entry = s3_status(&env);
    assert_eq!(entry["status"], "failure", "{entry}");
    let detail = entry["detail"].as_str().unwrap();
    assert!(
        detail.contains("server id file") && detail.contains("MSS_BACKUP_S3_PREFIX"),
        "{detail}"
    );
    assert_eq!(env.archives().len(), 2);
    assert!(stderr(&out).contains("FAILED"), "{}", stderr(&out));
}

#[test]
fn s3_retention_keeps_the_newest() {
    let rgw = rgw();
    let prefix = unique_prefix("retention");
    let mut env = s3_env(&rgw, &prefix);
    env.set("MSS_BACKUP_S3_RETENTION", "2");
    let old = "mss-backup-2000-01-04_000000.tar.gz";
    let line = |name: &str| format!("{}  {name}\n", "0".repeat(64));
    // A sidecar whose archive is gone: never listed, and (unlike on a
    // stick, which tidies such leftovers) left alone.
    let lone = format!("{prefix}mss-backup-2000-01-02_000000.tar.gz.sha256");
    rgw.put(&lone, &line("mss-backup-2000-01-02_000000.tar.gz"));
    // One complete old backup of ours: the first to go.
    rgw.put(&format!("{prefix}{old}"), "old");
    rgw.put(&format!("{prefix}{old}.sha256"), &line(old));

    for _ in 0..3 {
        env.backup_ok();
    }
    let local = env.archives();
    assert_eq!(local.len(), 3, "local retention is separate: {local:?}");
    let mut expected = vec![lone];
    for name in &local[1..] {
        expected.push(format!("{prefix}{name}"));
        expected.push(format!("{prefix}{name}.sha256"));
    }
    expected.sort();
    assert_eq!(rgw.keys(&prefix), expected);
    let entry = s3_status(&env);
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .ends_with("2 kept, 1 deleted by retention"),
        "{entry}"
    );

    let listed = stdout(&env.expect(&["list", "--target", "s3"], 0));
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        vec![local[2].as_str(), local[1].as_str()],
        "{listed}"
    );
}

#[test]
fn s3_big_archive_goes_up_in_parts_with_flat_memory() {
    let rgw = rgw();
    let prefix = unique_prefix("big");
    let env = s3_env(&rgw, &prefix);
    write_noise(&env.data_dir.join("data/exports/big.zip"), 140 << 20);
    let (code, _, err, peak_kib) = run_measured(&env, &[]);
    assert_eq!(code, 0, "{err}");
    let (name, sha, size) = newest_local(&env);
    assert!(size > 140 << 20, "archive of {size} bytes");
    let key = format!("{prefix}{name}");
    assert_eq!(rgw.header(&key, "content-length"), size.to_string());
    assert_eq!(rgw.header(&key, "x-amz-meta-sha256"), sha);
    // A multipart object's ETag ends in -<number of parts>.
    let etag = rgw.header(&key, "etag");
    let parts: u64 = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a multipart ETag: {etag}"));
    assert_eq!(parts, size.div_ceil(8 << 20), "{etag}");

    let seconds = s3_status(&env)["duration_seconds"].as_f64().unwrap();
    let peak_mib = peak_kib / 1024;
    eprintln!(
        "uploaded {} MiB in {parts} parts in {seconds:.2} s ({:.0} MiB/s); peak RSS of the whole run {peak_mib} MiB",
        size >> 20,
        (size >> 20) as f64 / seconds.max(0.001)
    );
    assert!(
        peak_mib < 100 && peak_mib * 3 < (size >> 20) * 2,
        "peak RSS {peak_mib} MiB for a {} MiB archive",
        size >> 20
    );
}

#[test]
fn s3_wrong_secret_fails_the_target_not_the_backup() {
    let rgw = rgw();
    let prefix = unique_prefix("wrongkey");
    let mut env = s3_env(&rgw, &prefix);
    let wrong = format!("wrong{}", unique_prefix("s").replace(['/', '-'], ""));
    env.set("MSS_BACKUP_S3_SECRET_ACCESS_KEY", &wrong);
    // Through a proxy that logs each request: a refused signature is not
    // worth a retry, so no request is sent twice (retries would be the same
    // request again, 1, 2 and 4 s apart).
    let proxy = HttpProxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    let out = env.expect(&[], 1);
    env.set("MSS_BACKUP_S3_ENDPOINT", &rgw.endpoint);
    let requests = proxy.requests();
    assert!(!requests.is_empty(), "no request reached S3");
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.answer, Answer::Gateway(Some(403)), "{requests:#?}");
        assert!(
            !requests[..i]
                .iter()
                .any(|r| r.method == request.method && r.target == request.target),
            "a refused request was sent again: {requests:#?}"
        );
    }
    let entry = s3_status(&env);
    assert_eq!(entry["status"], "failure", "{entry}");
    let detail = entry["detail"].as_str().unwrap();
    assert!(
        detail.contains("SignatureDoesNotMatch")
            && detail.contains("check MSS_BACKUP_S3_SECRET_ACCESS_KEY"),
        "{detail}"
    );
    assert!(!detail.contains('\n'));
    assert!(
        stderr(&out).contains(&format!(
            "Backup OK locally; offsite s3://{}/{prefix} FAILED: S3 at {} rejected the request signature",
            rgw.bucket,
            proxy.endpoint()
        )),
        "{}",
        stderr(&out)
    );
    let (name, _, _) = newest_local(&env);
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains("OK"), "{check}");
    assert_eq!(env.status()["status"], "failure");
    assert!(rgw.keys(&prefix).is_empty());
    assert_no_secret(&env, &[&out], &wrong);
}

#[test]
fn s3_missing_bucket_and_refused_endpoint_are_one_clear_line() {
    let rgw = rgw();
    let prefix = unique_prefix("nobucket");
    let mut env = s3_env(&rgw, &prefix);
    let bucket = format!("missing-{}", std::process::id());
    env.set("MSS_BACKUP_S3_BUCKET", &bucket);
    env.expect(&[], 1);
    let detail = s3_status(&env)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.ends_with(&format!(
            "bucket {bucket} does not exist at {} (NoSuchBucket): create it, or fix MSS_BACKUP_S3_BUCKET",
            rgw.endpoint
        )),
        "{detail}"
    );

    // Nothing listens on a port we just had the kernel free.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.set("MSS_BACKUP_S3_BUCKET", &rgw.bucket);
    env.set(
        "MSS_BACKUP_S3_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    );
    env.expect(&[], 1);
    let detail = s3_status(&env)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("cannot reach S3 at http://127.0.0.1:{port}"))
            && detail.contains("refused")
            && detail.contains("MSS_BACKUP_S3_ENDPOINT"),
        "{detail}"
    );
    assert_eq!(env.archives().len(), 2);
}

#[test]
fn s3_credentials_come_from_aws_variables_or_fail_at_once() {
    let rgw = rgw();
    let prefix = unique_prefix("awsenv");
    let mut env = s3_env(&rgw, &prefix);
    env.unset("MSS_BACKUP_S3_ACCESS_KEY_ID");
    env.unset("MSS_BACKUP_S3_SECRET_ACCESS_KEY");

    // No keys anywhere: a configuration error before any request (the
    // proxy in front of the gateway sees no connection), nothing made.
    let proxy = Proxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    let out = env.expect(&[], 78);
    assert_eq!(proxy.connections(), 0, "a request was made without keys");
    env.set("MSS_BACKUP_S3_ENDPOINT", &rgw.endpoint);
    let message = stderr(&out);
    assert!(
        message.contains(
            "no S3 credentials: set MSS_BACKUP_S3_ACCESS_KEY_ID and MSS_BACKUP_S3_SECRET_ACCESS_KEY"
        ) && message.contains("AWS_PROFILE"),
        "{message}"
    );
    assert!(env.archives().is_empty());

    // Half a pair names the missing half.
    env.set("MSS_BACKUP_S3_ACCESS_KEY_ID", &rgw.key_id);
    let out = env.expect(&[], 78);
    assert!(
        stderr(&out).contains(
            "MSS_BACKUP_S3_ACCESS_KEY_ID is set but MSS_BACKUP_S3_SECRET_ACCESS_KEY is not"
        ),
        "{}",
        stderr(&out)
    );
    env.unset("MSS_BACKUP_S3_ACCESS_KEY_ID");

    // The standard AWS variables work on their own.
    env.set("AWS_ACCESS_KEY_ID", &rgw.key_id);
    env.set("AWS_SECRET_ACCESS_KEY", &rgw.secret);
    let out = env.backup_ok();
    assert_eq!(s3_status(&env)["status"], "success");
    assert_eq!(rgw.keys(&prefix).len(), 2);
    let config = env.expect(&["config"], 0);
    assert!(
        stdout(&config).contains("keys from AWS_ACCESS_KEY_ID"),
        "{}",
        stdout(&config)
    );
    assert_no_secret(&env, &[&out, &config], &rgw.secret);
}

/// Starts a backup of `zip_bytes` more data whose upload goes through a
/// proxy in front of the gateway, and returns once `after` bytes went
/// through it: the moment to cut, reset or freeze the "server".
fn upload_through_proxy(
    env: &mut TestEnv,
    rgw: &Rgw,
    zip_bytes: usize,
    after: u64,
) -> (Proxy, std::process::Child) {
    write_noise(&env.data_dir.join("data/exports/big.zip"), zip_bytes);
    let proxy = Proxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, &format!("{after} bytes went up"), || {
        proxy.forwarded() >= after
    });
    (proxy, child)
}

#[test]
fn s3_server_gone_mid_upload_leaves_no_object_and_the_local_backup() {
    let rgw = rgw();
    let prefix = unique_prefix("gone");
    let mut env = s3_env(&rgw, &prefix);
    // Kill the "server" once a good part of the archive went through.
    let (proxy, child) = upload_through_proxy(&mut env, &rgw, 120 << 20, 40 << 20);
    proxy.kill();
    let out = finish(child, "the backup");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let (name, _, _) = newest_local(&env);
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{name}: OK")), "{check}");
    let entry = s3_status(&env);
    assert_eq!(entry["status"], "failure", "{entry}");
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot reach S3 at {}", proxy.endpoint())),
        "{entry}"
    );
    // Nothing under the backup's name, and nothing the tool would list.
    assert!(rgw.keys(&prefix).is_empty(), "{:?}", rgw.keys(&prefix));
    env.set("MSS_BACKUP_S3_ENDPOINT", &rgw.endpoint);
    let listed = env.expect(&["list", "--target", "s3"], 0);
    assert!(
        stdout(&listed).starts_with("No backups on"),
        "{}",
        stdout(&listed)
    );

    // With the server back, the next run copies its own backup.
    env.backup_ok();
    let (newer, _, _) = newest_local(&env);
    assert_ne!(newer, name);
    assert_eq!(
        rgw.keys(&prefix),
        vec![
            format!("{prefix}{newer}"),
            format!("{prefix}{newer}.sha256")
        ]
    );
}

#[test]
fn s3_connections_reset_mid_upload_are_retried() {
    let rgw = rgw();
    let prefix = unique_prefix("reset");
    let mut env = s3_env(&rgw, &prefix);
    let (proxy, child) = upload_through_proxy(&mut env, &rgw, 60 << 20, 20 << 20);
    let at_reset = proxy.connections();
    proxy.reset();
    let out = finish(child, "the backup");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s3_status(&env)["status"], "success");
    // A retry really happened: the upload came back on new connections.
    assert!(
        proxy.connections() > at_reset,
        "no new connection after the reset ({at_reset} before)"
    );
    // What is there is whole: curl fetches the local archive's bytes.
    let (file_name, sha, size) = newest_local(&env);
    let key = format!("{prefix}{file_name}");
    assert_eq!(rgw.header(&key, "content-length"), size.to_string());
    let fetched = env.root.path().join("fetched");
    assert_eq!(rgw.download(&key, &fetched), sha);
    assert!(rgw.open_uploads(&prefix).is_empty());
}

#[test]
fn s3_server_frozen_mid_upload_times_out_and_leaves_no_object() {
    let rgw = rgw();
    let prefix = unique_prefix("frozen");
    let mut env = s3_env(&rgw, &prefix);
    env.set("MSS_BACKUP_S3_TIMEOUT", "2");
    let (proxy, child) = upload_through_proxy(&mut env, &rgw, 60 << 20, 20 << 20);
    // Like SIGSTOP: connections stay open, nothing answers. The run must
    // end on its own (the watchdog only catches a hang) and say it was the
    // timeout that ended it.
    proxy.freeze();
    let frozen_at = Instant::now();
    let out = finish(child, "the backup to a frozen S3");
    let waited = frozen_at.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let entry = s3_status(&env);
    assert_eq!(entry["status"], "failure", "{entry}");
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 2 s"),
        "{entry}"
    );
    let (name, _, _) = newest_local(&env);
    assert!(env.archive_dir().join(format!("{name}.sha256")).is_file());
    assert!(rgw.keys(&prefix).is_empty(), "{:?}", rgw.keys(&prefix));
    eprintln!("failed {waited:?} after the freeze (measured, not asserted)");
}
