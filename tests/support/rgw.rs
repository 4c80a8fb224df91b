//! The S3 target's far side: Ceph's RADOS Gateway that `cargo xtask
//! test` starts, read with curl's own SigV4 signing (not with the code
//! under test), and environments that back up to it.

use std::fs;
use std::process::Command;

use mss_backup_target_s3::{Config, KeySource};

use super::*;

/// The gateway `cargo xtask test` started.
pub struct Rgw {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

pub fn rgw() -> Rgw {
    Rgw {
        endpoint: service_var("MSS_TEST_S3_ENDPOINT"),
        region: service_var("MSS_TEST_S3_REGION"),
        bucket: service_var("MSS_TEST_S3_BUCKET"),
        key_id: service_var("MSS_TEST_S3_ACCESS_KEY_ID"),
        secret: service_var("MSS_TEST_S3_SECRET_ACCESS_KEY"),
    }
}

/// A key prefix no other test (or earlier run) uses: `t/TAG-PID-N-NANOS/`.
pub fn unique_prefix(tag: &str) -> String {
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
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
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
    pub fn curl(&self, args: &[&str], url_path: &str) -> (u16, String) {
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
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (code, body) = self.curl(&[], &format!("?list-type=2&prefix={}", encode(prefix)));
        assert_eq!(code, 200, "listing {prefix}: {body}");
        let mut keys = xml_values(&body, "Key");
        keys.sort();
        keys
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self, prefix: &str) -> Vec<String> {
        let (code, body) = self.curl(&[], &format!("?prefix={}&uploads=", encode(prefix)));
        assert_eq!(code, 200, "listing uploads under {prefix}: {body}");
        xml_values(&body, "Key")
    }

    /// The response headers of a HEAD, lower-cased names.
    pub fn head(&self, key: &str) -> Vec<(String, String)> {
        let (code, headers) = self.curl(&["-I"], &format!("/{key}"));
        assert_eq!(code, 200, "HEAD {key}: {headers}");
        headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    pub fn header(&self, key: &str, name: &str) -> String {
        self.head(key)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("HEAD {key}: no {name} header"))
    }

    pub fn get(&self, key: &str) -> String {
        let (code, body) = self.curl(&[], &format!("/{key}"));
        assert_eq!(code, 200, "GET {key}: {body}");
        body
    }

    /// Downloads the object `key` into `dest` with curl (not with the
    /// code under test) and returns its sha256 by `sha256sum`.
    pub fn download(&self, key: &str, dest: &std::path::Path) -> String {
        let (code, body) = self.curl(&["-o", dest.to_str().unwrap()], &format!("/{key}"));
        assert_eq!(code, 200, "GET {key}: {body}");
        let dir = dest.parent().unwrap();
        let sum = tool("sha256sum", &[dest.to_str().unwrap()], dir);
        sum.split_whitespace().next().unwrap().to_string()
    }

    pub fn put(&self, key: &str, body: &str) {
        let (code, answer) = self.curl(&["-X", "PUT", "--data-binary", body], &format!("/{key}"));
        assert_eq!(code, 200, "PUT {key}: {answer}");
    }

    /// The S3 target as the binary would build it, for library-level checks.
    pub fn target(&self, prefix: &str) -> mss_backup_target_s3::S3Target {
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
pub fn s3_env(rgw: &Rgw, prefix: &str) -> TestEnv {
    let mut env = TestEnv::new();
    s3_vars(rgw, prefix, &mut env);
    env
}

/// Points `env`'s S3 target at the gateway under `prefix`.
pub fn s3_vars(rgw: &Rgw, prefix: &str, env: &mut TestEnv) {
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
}

/// The status entry of the target whose name starts with `s3://`.
pub fn s3_status(env: &TestEnv) -> serde_json::Value {
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
pub fn newest_local(env: &TestEnv) -> (String, String, u64) {
    let name = env.archives().pop().expect("a local backup");
    let sidecar = fs::read_to_string(env.archive_dir().join(format!("{name}.sha256"))).unwrap();
    let sha = sidecar.split_whitespace().next().unwrap().to_string();
    let size = fs::metadata(env.archive_dir().join(&name)).unwrap().len();
    (name, sha, size)
}

/// Asserts nothing the operator can see holds `secret`.
pub fn assert_no_secret(env: &TestEnv, outputs: &[&std::process::Output], secret: &str) {
    for out in outputs {
        assert!(!stdout(out).contains(secret), "secret in stdout");
        assert!(!stderr(out).contains(secret), "secret in stderr");
    }
    for file in ["backup.log", "last_backup.json"] {
        let text = fs::read_to_string(env.backup_dir.join(file)).unwrap_or_default();
        assert!(!text.contains(secret), "secret in {file}");
    }
}

/// The gateway with a new, empty bucket of its own, for tests that look at
/// everything under `mss/` (the shared bucket holds other tests' machines).
pub fn own_bucket(tag: &str) -> Rgw {
    let mut rgw = rgw();
    rgw.bucket = unique(tag);
    let (code, body) = rgw.curl(&["-X", "PUT"], "");
    assert_eq!(code, 200, "creating bucket {}: {body}", rgw.bucket);
    rgw
}

/// The S3 settings of `rgw`, without a prefix: the default mss/<server id>/.
pub fn s3_settings_without_prefix(rgw: &Rgw, env: &mut TestEnv) {
    s3_vars(rgw, "", env);
    env.unset("MSS_BACKUP_S3_PREFIX");
}

/// The server id in `env`'s cloud-data, which names its default prefix.
pub fn server_id(env: &TestEnv) -> String {
    fs::read_to_string(env.data_dir.join("data/server_id.txt"))
        .unwrap()
        .trim()
        .to_string()
}
