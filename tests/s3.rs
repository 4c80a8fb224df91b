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
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mss_backup_core::{ArtifactName, Target};
use mss_backup_target_s3::{Config, KeySource};

use crate::support::*;

/// The gateway `cargo xtask test` started.
pub(crate) struct Rgw {
    endpoint: String,
    region: String,
    bucket: String,
    key_id: String,
    secret: String,
}

pub(crate) fn rgw() -> Rgw {
    Rgw {
        endpoint: service_var("MSS_TEST_S3_ENDPOINT"),
        region: service_var("MSS_TEST_S3_REGION"),
        bucket: service_var("MSS_TEST_S3_BUCKET"),
        key_id: service_var("MSS_TEST_S3_ACCESS_KEY_ID"),
        secret: service_var("MSS_TEST_S3_SECRET_ACCESS_KEY"),
    }
}

/// A key prefix no other test (or earlier run) uses: `t/TAG-PID-N-NANOS/`.
pub(crate) fn unique_prefix(tag: &str) -> String {
    format!("t/{}/", unique(tag))
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `<tag>value</tag>` in an XML answer.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next())
        .map(str::to_string)
        .collect()
}

impl Rgw {
    /// A SigV4-signed curl request; returns the HTTP status and the body
    /// (with `-I`, the headers).
    pub(crate) fn curl(&self, args: &[&str], url_path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("{}/{}{url_path}", self.endpoint, self.bucket))
            .output()
            .expect("curl must be installed (cargo xtask test installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Keys under `prefix` (recursively), sorted.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let (code, body) = self.curl(&[], &format!("?list-type=2&prefix={}", encode(prefix)));
        assert_eq!(code, 200, "listing {prefix}: {body}");
        let mut keys = xml_values(&body, "Key");
        keys.sort();
        keys
    }

    /// Multipart uploads begun and neither completed nor aborted.
    fn open_uploads(&self, prefix: &str) -> Vec<String> {
        let (code, body) = self.curl(&[], &format!("?prefix={}&uploads=", encode(prefix)));
        assert_eq!(code, 200, "listing uploads under {prefix}: {body}");
        xml_values(&body, "Key")
    }

    /// The response headers of a HEAD, lower-cased names.
    fn head(&self, key: &str) -> Vec<(String, String)> {
        let (code, headers) = self.curl(&["-I"], &format!("/{key}"));
        assert_eq!(code, 200, "HEAD {key}: {headers}");
        headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    fn header(&self, key: &str, name: &str) -> String {
        self.head(key)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("HEAD {key}: no {name} header"))
    }

    pub(crate) fn get(&self, key: &str) -> String {
        let (code, body) = self.curl(&[], &format!("/{key}"));
        assert_eq!(code, 200, "GET {key}: {body}");
        body
    }

    fn put(&self, key: &str, body: &str) {
        let (code, answer) = self.curl(&["-X", "PUT", "--data-binary", body], &format!("/{key}"));
        assert_eq!(code, 200, "PUT {key}: {answer}");
    }

    /// The S3 target as the binary would build it, for library-level checks.
    pub(crate) fn target(&self, prefix: &str) -> mss_backup_target_s3::S3Target {
        Config {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            prefix: Some(prefix.to_string()),
            server_id_file: None,
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(self.secret.clone()),
            session_token: None,
            key_source: KeySource::Mss,
            profile: None,
            use_instance_metadata: false,
            virtual_host_style: false,
            timeout: None,
        }
        .build()
        .expect("S3 target builds")
    }
}

/// A test environment backing up to the gateway under `prefix`.
pub(crate) fn s3_env(rgw: &Rgw, prefix: &str) -> TestEnv {
    let mut env = TestEnv::new();
    for (key, value) in [
        ("MSS_BACKUP_S3_BUCKET", rgw.bucket.as_str()),
        ("MSS_BACKUP_S3_ENDPOINT", rgw.endpoint.as_str()),
        ("MSS_BACKUP_S3_REGION", rgw.region.as_str()),
        ("MSS_BACKUP_S3_PREFIX", prefix),
        ("MSS_BACKUP_S3_ACCESS_KEY_ID", rgw.key_id.as_str()),
        ("MSS_BACKUP_S3_SECRET_ACCESS_KEY", rgw.secret.as_str()),
    ] {
        env.set(key, value);
    }
    env
}

/// The status entry of the target whose name starts with `s3://`.
fn s3_status(env: &TestEnv) -> serde_json::Value {
    let status = env.status();
    let targets = status["targets"].as_array().expect("targets").clone();
    assert_eq!(targets[0]["name"], "local", "{status}");
    assert_eq!(targets[0]["status"], "success", "{status}");
    targets
        .into_iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with("s3://")))
        .unwrap_or_else(|| panic!("no s3 entry in {status}"))
}

/// The newest local backup's name, sha256 (from its sidecar) and size.
fn newest_local(env: &TestEnv) -> (String, String, u64) {
    let name = env.archives().pop().expect("a local backup");
    let sidecar = fs::read_to_string(env.archive_dir().join(format!("{name}.sha256"))).unwrap();
    let sha = sidecar.split_whitespace().next().unwrap().to_string();
    let size = fs::metadata(env.archive_dir().join(&name)).unwrap().len();
    (name, sha, size)
}

/// Asserts nothing the operator can see holds `secret`.
fn assert_no_secret(env: &TestEnv, outputs: &[&std::process::Output], secret: &str) {
    for out in outputs {
        assert!(!stdout(out).contains(secret), "secret in stdout");
        assert!(!stderr(out).contains(secret), "secret in stderr");
    }
    for file in ["backup.log", "last_backup.json"] {
        let text = fs::read_to_string(env.backup_dir.join(file)).unwrap_or_default();
        assert!(!text.contains(secret), "secret in {file}");
    }
}

/// Fills `path` with `bytes` of incompressible pseudo-random data
/// (xorshift), so the archive is as big as the data.
fn write_noise(path: &Path, bytes: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut file = io::BufWriter::new(File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes / block.len() {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

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
    let started = Instant::now();
    let out = env.expect(&[], 1);
    assert!(started.elapsed() < Duration::from_secs(30));
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
            rgw.bucket, rgw.endpoint
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

    // No keys anywhere: a configuration error in milliseconds, nothing made.
    let started = Instant::now();
    let out = env.expect(&[], 78);
    assert!(started.elapsed() < Duration::from_secs(5));
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
    let child = env
        .cmd(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while proxy.forwarded() < after {
        assert!(Instant::now() < deadline, "the upload never got going");
        thread::sleep(Duration::from_millis(5));
    }
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
    let out = child.wait_with_output().unwrap();
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
    proxy.reset();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s3_status(&env)["status"], "success");
    // What is there is whole: it downloads and matches the sidecar.
    let (file_name, _, size) = newest_local(&env);
    let key = format!("{prefix}{file_name}");
    assert_eq!(rgw.header(&key, "content-length"), size.to_string());
    let name = ArtifactName::parse(&file_name).unwrap();
    let dest = tempfile::tempdir().unwrap();
    rgw.target(&prefix).get(&name, dest.path()).unwrap();
    assert!(rgw.open_uploads(&prefix).is_empty());
}

#[test]
fn s3_server_frozen_mid_upload_times_out_and_leaves_no_object() {
    let rgw = rgw();
    let prefix = unique_prefix("frozen");
    let mut env = s3_env(&rgw, &prefix);
    env.set("MSS_BACKUP_S3_TIMEOUT", "2");
    let (proxy, child) = upload_through_proxy(&mut env, &rgw, 60 << 20, 20 << 20);
    // Like SIGSTOP: connections stay open, nothing answers.
    proxy.freeze();
    let frozen_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = frozen_at.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(waited < Duration::from_secs(90), "hung for {waited:?}");
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
    eprintln!("failed {waited:?} after the freeze");
}

/// A TCP proxy in front of the gateway that a test can kill (connections
/// closed, new ones refused: the server process died) or freeze (nothing
/// forwarded, connections left open: the server was SIGSTOPped).
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accepter: Option<JoinHandle<()>>,
}

struct ProxyState {
    mode: AtomicU8,
    upstream: SocketAddr,
    /// Bytes forwarded from the client to the server.
    forwarded: AtomicU64,
    sockets: Mutex<Vec<TcpStream>>,
}

const FORWARD: u8 = 0;
const FROZEN: u8 = 1;
const DEAD: u8 = 2;

impl Proxy {
    fn start(endpoint: &str) -> Proxy {
        let upstream: SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the test gateway is at http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            mode: AtomicU8::new(FORWARD),
            upstream,
            forwarded: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let accepter = thread::spawn(move || accept_loop(&listener, &shared));
        Proxy {
            port,
            state,
            accepter: Some(accepter),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    fn freeze(&self) {
        self.state.mode.store(FROZEN, Ordering::SeqCst);
    }

    /// Closes the connections open now (a network blip, a load balancer
    /// restart); new ones are served.
    fn reset(&self) {
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Closes every connection; the listener closes within milliseconds.
    fn kill(&self) {
        self.state.mode.store(DEAD, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    while state.mode.load(Ordering::SeqCst) != DEAD {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(state.upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut sockets = state.sockets.lock().unwrap();
                    if state.mode.load(Ordering::SeqCst) == DEAD {
                        return;
                    }
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            sockets.push(s);
                        }
                    }
                }
                let up = Arc::clone(state);
                thread::spawn(move || pump(client, server, &up, true));
                let down = Arc::clone(state);
                thread::spawn(move || pump(server2, client2, &down, false));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

/// Copies `from` to `to` until either closes or the proxy dies; stands
/// still while frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState, count: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match state.mode.load(Ordering::SeqCst) {
            DEAD => return,
            FROZEN => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if count {
                    state.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn s3_restore_from_the_bucket_after_the_local_archive_is_lost() {
    let rgw = rgw();
    let prefix = unique_prefix("restore");
    let env = s3_env(&rgw, &prefix);
    env.backup_ok();
    let first = env.status()["archive"].as_str().unwrap().to_string();
    let trackpacks = |db: &Path| -> String {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("SELECT group_concat(name, '|') FROM trackpacks", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let original = trackpacks(&env.db_path());
    env.backup_ok();
    let second = env.status()["archive"].as_str().unwrap().to_string();

    // The VM's backups are gone and the database is broken.
    fs::remove_dir_all(env.archive_dir()).unwrap();
    fs::write(env.db_path(), b"not a database").unwrap();

    let out = env.expect(
        &["restore", "db", "--from", "s3:latest", "--yes", "--no-stop"],
        0,
    );
    assert!(
        stderr(&out).contains(&format!("Downloading {second}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(integrity(&env.db_path()), "ok");
    assert_eq!(
        trackpacks(&env.db_path()),
        original,
        "the database came back from S3"
    );
    // The download went through a partial into the archive dir, with its sidecar.
    assert!(env.archive_dir().join(&second).is_file());
    let check = tool(
        "sha256sum",
        &["-c", &format!("{second}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(": OK"), "{check}");
    assert!(!fs::read_dir(env.archive_dir()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));

    // A named backup works too; an unknown one is refused with nothing touched.
    env.expect(
        &[
            "restore",
            "db",
            "--from",
            &format!("s3:{first}"),
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert!(env.archive_dir().join(&first).is_file());
    let before = fs::read(env.db_path()).unwrap();
    let out = env.expect(
        &[
            "restore",
            "db",
            "--from",
            "s3:mss-backup-1999-01-01_000000.tar.gz",
            "--yes",
            "--no-stop",
        ],
        1,
    );
    assert!(stderr(&out).contains("no backup named"), "{}", stderr(&out));
    assert!(
        fs::read(env.db_path()).unwrap() == before,
        "nothing was touched"
    );
}

/// `copy s3` sends an existing local backup through the same delivery as
/// the nightly run (it used to be "invalid value": copy knew USB and rsync
/// only).
#[test]
fn copy_s3_sends_an_existing_backup() {
    let rgw = rgw();
    let prefix = unique_prefix("copy");
    let mut env = s3_env(&rgw, &prefix);
    let s3_vars: Vec<(String, String)> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with("MSS_BACKUP_S3_"))
        .cloned()
        .collect();
    for (key, _) in &s3_vars {
        env.unset(key);
    }
    env.backup_ok();
    assert!(
        rgw.keys(&prefix).is_empty(),
        "the backup itself stayed local"
    );
    let (name, sha, size) = newest_local(&env);

    for (key, value) in &s3_vars {
        env.set(key, value);
    }
    let out = env.expect(&["copy", "s3"], 0);
    assert!(
        stdout(&out).contains(&format!("Copied {name} to s3://{}/{prefix}", rgw.bucket)),
        "{}",
        stdout(&out)
    );
    let archive_key = format!("{prefix}{name}");
    assert_eq!(
        rgw.keys(&prefix),
        vec![archive_key.clone(), format!("{archive_key}.sha256")]
    );
    assert_eq!(rgw.header(&archive_key, "content-length"), size.to_string());
    assert_eq!(rgw.header(&archive_key, "x-amz-meta-sha256"), sha);
    let listed = stdout(&env.expect(&["list", "--target", "s3"], 0));
    assert!(listed.contains(&name), "{listed}");
}

/// An offsite drill: `verify --from s3:latest` reads the bucket's copy back
/// whole (sha256 against the sidecar, every member, the database) without
/// adding anything to archive/; the same object damaged in place is exit 1
/// naming the target and the backup, and the temp copy is gone either way.
#[test]
fn verify_from_s3_drills_the_offsite_copy_and_refuses_a_damaged_one() {
    let rgw = rgw();
    let prefix = unique_prefix("drill");
    let env = s3_env(&rgw, &prefix);
    env.backup_ok();
    let (name, _, _) = newest_local(&env);
    let archive_before = entries(&env.archive_dir());
    let backup_dir_before = entries(&env.backup_dir);

    let out = env.expect(&["verify", "--from", "s3:latest"], 0);
    assert!(
        stdout(&out).contains(&format!(
            "Drill OK: {name} on s3://{}/{prefix} reads back whole",
            rgw.bucket
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("files match MANIFEST.sha256, database integrity_check ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        entries(&env.archive_dir()),
        archive_before,
        "nothing added to archive/"
    );

    // Damaged in place on the server.
    rgw.put(&format!("{prefix}{name}"), "not the backup any more");
    let out = env.expect(&["verify", "--from", &format!("s3:{name}")], 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("s3://{}/{prefix}", rgw.bucket))
            && err.contains(&format!("{name} does not match its checksum")),
        "{err}"
    );
    assert_eq!(
        entries(&env.archive_dir()),
        archive_before,
        "nothing added to archive/"
    );
    let mut after = entries(&env.backup_dir);
    // The drill's record is the one file a drill adds (see tests/drills.rs).
    after.retain(|n| {
        n != "backup.log" && n != "drills.json" && n != ".lock" && !n.ends_with(".lock")
    });
    let mut before = backup_dir_before;
    before.retain(|n| n != "backup.log" && n != ".lock" && !n.ends_with(".lock"));
    assert_eq!(after, before, "no temp copy left");
}

/// The gateway with a new, empty bucket of its own, for tests that look at
/// everything under `mss/` (the shared bucket holds other tests' machines).
fn own_bucket(tag: &str) -> Rgw {
    let mut rgw = rgw();
    rgw.bucket = unique(tag);
    let (code, body) = rgw.curl(&["-X", "PUT"], "");
    assert_eq!(code, 200, "creating bucket {}: {body}", rgw.bucket);
    rgw
}

/// The S3 settings of `rgw`, without a prefix: the default mss/<server id>/.
fn s3_settings_without_prefix(rgw: &Rgw, env: &mut TestEnv) {
    for (key, value) in s3_env(rgw, "x/").vars {
        if key.starts_with("MSS_BACKUP_S3_") && key != "MSS_BACKUP_S3_PREFIX" {
            env.set(&key, &value);
        }
    }
}

/// The server id in `env`'s cloud-data, which names its default prefix.
fn server_id(env: &TestEnv) -> String {
    fs::read_to_string(env.data_dir.join("data/server_id.txt"))
        .unwrap()
        .trim()
        .to_string()
}

/// Rows of a table, as text, for comparing databases by content.
fn table_rows(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
        .unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..columns)
            .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The day the VM is gone, run as the docs' runbook says, against the real
/// gateway in a bucket of its own: a fresh HOME with no cloud-data/ and only
/// the S3 settings lists the machine found in the bucket, restores its
/// newest backup (database content and every file equal), and the next
/// backup lands under the same prefix. With a second machine in the bucket
/// a new VM's restore is refused, naming both, and writes nothing; and
/// `status --fleet` shows every machine, marking a stale one and one with
/// no complete backup, exit 1.
#[test]
fn a_new_vm_restores_from_s3_and_the_fleet_shows_every_machine() {
    let rgw = own_bucket("fleet");
    let s3_vars = |env: &mut TestEnv| s3_settings_without_prefix(&rgw, env);

    // The machine that will be lost: backs up under mss/<its server id>/.
    let mut old = TestEnv::new();
    s3_vars(&mut old);
    let id = server_id(&old);
    old.backup_ok();
    let tree = crate::faults::data_tree(&old.data_dir);
    let trackpacks = table_rows(&old.db_path(), "trackpacks");

    // The new VM: the project, no cloud-data/, no backups, the S3 settings.
    let mut vm = TestEnv::empty();
    s3_vars(&mut vm);
    let listed = stdout(&vm.expect(&["list", "--target", "s3"], 0));
    assert!(
        listed.contains(&id) && listed.contains("1 backups"),
        "{listed}"
    );
    vm.expect(&["restore", "all", "--from", "s3:latest", "--dry-run"], 0);
    assert!(!vm.data_dir.exists(), "a dry run writes nothing");
    let out = vm.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert!(
        stderr(&out).contains(&format!("one machine's backups, {id}: restoring those")),
        "{}",
        stderr(&out)
    );
    assert_eq!(crate::faults::data_tree(&vm.data_dir), tree);
    assert_eq!(table_rows(&vm.db_path(), "trackpacks"), trackpacks);
    // server_id.txt came back: the next backup continues under the same prefix.
    vm.backup_ok();
    let prefix = format!("mss/{id}/");
    let archives: Vec<String> = rgw
        .keys(&prefix)
        .into_iter()
        .filter(|k| k.ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 2, "{archives:?}");

    // A second machine in the bucket: a new VM must choose.
    let mut other = TestEnv::new();
    s3_vars(&mut other);
    fs::write(other.data_dir.join("data/server_id.txt"), "venue-b\n").unwrap();
    other.backup_ok();
    let mut vm2 = TestEnv::empty();
    s3_vars(&mut vm2);
    let err = stderr(&vm2.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        78,
    ));
    assert!(
        err.contains("holds the backups of 2 machines")
            && err.contains(&id)
            && err.contains("venue-b")
            && err.contains("MSS_BACKUP_S3_PREFIX=mss/<id>/"),
        "{err}"
    );
    assert!(
        !vm2.data_dir.exists() && !vm2.archive_dir().exists(),
        "nothing written"
    );

    // A venue whose last backup is old, and one with no complete backup.
    rgw.put("mss/venue-old/mss-backup-2020-01-01_031500.tar.gz", "old");
    rgw.put(
        "mss/venue-old/mss-backup-2020-01-01_031500.tar.gz.sha256",
        "old",
    );
    rgw.put(
        "mss/venue-none/mss-backup-2020-01-02_031500.tar.gz",
        "no sidecar",
    );
    let prom = vm2.root.path().join("mss_backup.prom");
    vm2.set("MSS_BACKUP_METRICS_FILE", prom.to_str().unwrap());
    let out = vm2.run(&["status", "--fleet", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // One series per machine, in a file beside (never over) the backup's.
    assert!(
        !prom.exists(),
        "the backup's own metrics file is not touched"
    );
    let fleet = fs::read_to_string(vm2.root.path().join("mss_backup_fleet.prom")).unwrap();
    for (machine, stale) in [
        (id.as_str(), 0),
        ("venue-b", 0),
        ("venue-old", 1),
        ("venue-none", 1),
    ] {
        assert!(
            fleet.contains(&format!(
                "mss_backup_fleet_stale{{target=\"s3://{}\",machine=\"{machine}\"}} {stale}",
                rgw.bucket
            )),
            "{machine}: {fleet}"
        );
    }
    assert!(
        fleet.contains(&format!(
            "mss_backup_fleet_backups{{target=\"s3://{}\",machine=\"{id}\"}} 2",
            rgw.bucket
        )),
        "{fleet}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stale = |machine: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == machine)
            .unwrap_or_else(|| panic!("{machine} in {rows}"))["stale"]
            .clone()
    };
    assert_eq!(stale(&id), false);
    assert_eq!(stale("venue-b"), false);
    assert_eq!(stale("venue-old"), true);
    assert_eq!(stale("venue-none"), true);
    let text = stdout(&vm2.run(&["status", "--fleet"]));
    assert!(
        text.lines().any(|l| l.contains("venue-none")
            && l.contains("no complete backup")
            && l.contains("STALE")),
        "{text}"
    );
}

/// The same day on an encrypted bucket: the copies in S3 are age
/// ciphertext, and a new VM with the S3 settings and the identity file
/// finds the machine, decrypts and restores it whole.
#[test]
fn a_new_vm_restores_an_encrypted_bucket_with_the_identity() {
    let rgw = own_bucket("fleet-age");
    let s3_vars = |env: &mut TestEnv| s3_settings_without_prefix(&rgw, env);
    let mut old = TestEnv::new();
    s3_vars(&mut old);
    let (identity, public) = crate::encrypt::keygen(&old);
    old.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    old.backup_ok();
    let id = server_id(&old);
    let keys = rgw.keys(&format!("mss/{id}/"));
    assert!(keys.iter().any(|k| k.ends_with(".tar.gz.age")), "{keys:?}");
    let tree = crate::faults::data_tree(&old.data_dir);

    let mut vm = TestEnv::empty();
    s3_vars(&mut vm);
    vm.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    let listed = stdout(&vm.expect(&["list", "--target", "s3"], 0));
    assert!(
        listed.contains(&id) && listed.contains(".tar.gz.age"),
        "{listed}"
    );
    vm.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert_eq!(crate::faults::data_tree(&vm.data_dir), tree);
}
