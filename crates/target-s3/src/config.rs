//! The S3 target's settings, as plain data: what each variable means, which
//! keys sign the requests, and [`Config::build`], which checks it all before
//! any network call and makes the opendal operator. A `Debug` that never
//! prints a key lives here too, beside the fields it hides.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use mss_backup_core::setting::{Setting, Shown};
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_REGION, DEFAULT_TIMEOUT, MACHINES_ROOT, S3Target};

/// The S3 target's settings; `s3_bucket` switches it on.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "s3_bucket",
        value: "BUCKET",
        default: "off",
        help: "the bucket (it must exist): switches the S3 target on",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_endpoint",
        value: "URL",
        default: "the AWS S3 endpoint",
        help: "`https://…` or `http://…` of an S3-compatible server, e.g. `https://s3.eu-central-003.backblazeb2.com`",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_region",
        value: "REGION",
        default: DEFAULT_REGION,
        help: "the region requests are signed for",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_prefix",
        value: "PREFIX",
        default: "mss/<server id>/",
        help: "where in the bucket, the id read from `cloud-data/data/server_id.txt`",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_retention",
        value: "N|bucket",
        default: "the local retention",
        help: "backups kept under the prefix; `bucket`: never delete, the bucket's lifecycle rule expires them (a key without delete, see docs/s3-append-only.md)",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_access_key_id",
        value: "KEY",
        default: "the `AWS_*` variables",
        help: "the keys; else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else `AWS_PROFILE` (never printed)",
        shown: Shown::Secret,
    },
    Setting {
        key: "s3_secret_access_key",
        value: "SECRET",
        default: "the `AWS_*` variables",
        help: "the keys; else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else `AWS_PROFILE` (never printed)",
        shown: Shown::Secret,
    },
    Setting {
        key: "s3_virtual_host_style",
        value: "true|false",
        default: "false",
        help: "`true`: `https://BUCKET.host/key` instead of path style `https://host/BUCKET/key`",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_use_instance_metadata",
        value: "true|false",
        default: "false",
        help: "`true`: also the cloud instance's role (the whole AWS credential chain)",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_timeout",
        value: "SECONDS",
        default: "120",
        help: "seconds (or `90s`, `5m`) one request, or one 8 MiB part, may take before it is retried",
        shown: Shown::Plain,
    },
    Setting {
        key: "s3_checksum",
        value: "crc32c|off",
        default: "off",
        help: "`crc32c`: an integrity checksum with every upload and part, which AWS requires on a bucket with Object Lock (see docs/s3-append-only.md)",
        shown: Shown::Plain,
    },
];

/// The standard AWS variables the S3 target also reads (outside our prefix),
/// which the nightly run must see too.
pub const OUTSIDE_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// An integrity checksum sent with every upload and part
/// (`MSS_BACKUP_S3_CHECKSUM`). AWS refuses uploads to a bucket with Object
/// Lock without one; other servers ignore or check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// `x-amz-checksum-crc32c`, the one opendal sends for multipart
    /// uploads too (it refuses MD5 there).
    Crc32c,
}

impl Checksum {
    /// `crc32c`, or `off` (and empty) for none; anything else is refused
    /// with the words to use.
    pub fn parse(value: &str) -> Result<Option<Checksum>, String> {
        match value.trim() {
            "crc32c" => Ok(Some(Checksum::Crc32c)),
            "off" | "" => Ok(None),
            other => Err(format!(
                "{other:?} is not a checksum mss-backup can send (use crc32c, or off)"
            )),
        }
    }
}

/// Retries of a failed request, with exponential backoff and jitter
/// (1 s, 2 s, 4 s).
const RETRIES: usize = 3;

/// Which variables the access keys came from, so messages name the ones to
/// fix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySource {
    /// `MSS_BACKUP_S3_ACCESS_KEY_ID` / `MSS_BACKUP_S3_SECRET_ACCESS_KEY`.
    #[default]
    Mss,
    /// The standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`.
    AwsEnv,
}

impl KeySource {
    /// The access key id's and the secret's variable names.
    pub fn variables(self) -> (&'static str, &'static str) {
        match self {
            KeySource::Mss => (
                "MSS_BACKUP_S3_ACCESS_KEY_ID",
                "MSS_BACKUP_S3_SECRET_ACCESS_KEY",
            ),
            KeySource::AwsEnv => ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        }
    }
}

/// Where backups go and how to sign in. Plain data; [`Config::build`]
/// checks it and makes the target. The `Debug` output never shows a key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The bucket (`MSS_BACKUP_S3_BUCKET`). It must exist: mss-backup never
    /// creates buckets.
    pub bucket: String,
    /// The server, e.g. `https://s3.eu-central-003.backblazeb2.com` or
    /// `http://127.0.0.1:7480` (`MSS_BACKUP_S3_ENDPOINT`); `None` for AWS S3.
    pub endpoint: Option<String>,
    /// The region requests are signed for (`MSS_BACKUP_S3_REGION`); `None`
    /// for [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// The key prefix backups are stored under, like `mss/vm1/`
    /// (`MSS_BACKUP_S3_PREFIX`). `None` for `mss/<server id>/`, the id read
    /// from [`Config::server_id_file`].
    pub prefix: Option<String>,
    /// MSS's `cloud-data/data/server_id.txt`, which names the default
    /// prefix. When it is missing the target fails rather than share a
    /// prefix (and its retention) with another machine.
    pub server_id_file: Option<PathBuf>,
    /// Access key id; used with `secret_access_key`.
    pub access_key_id: Option<String>,
    /// Secret access key. Never printed.
    pub secret_access_key: Option<String>,
    /// Session token for temporary keys (`AWS_SESSION_TOKEN`). Never printed.
    pub session_token: Option<String>,
    /// Which variables the keys came from, for messages.
    #[serde(default)]
    pub key_source: KeySource,
    /// An AWS profile (`AWS_PROFILE`) whose keys opendal loads from
    /// `~/.aws/config` and `~/.aws/credentials`, when no keys are given.
    pub profile: Option<String>,
    /// Let opendal use the whole AWS credential chain, including the cloud
    /// instance-metadata service (`MSS_BACKUP_S3_USE_INSTANCE_METADATA`).
    /// Off by default, so that missing keys fail at once instead of after
    /// calls to a metadata address that does not exist off the cloud.
    #[serde(default)]
    pub use_instance_metadata: bool,
    /// Virtual-host addressing (`https://BUCKET.host/key`) instead of the
    /// default path style (`https://host/BUCKET/key`), which every
    /// S3-compatible server understands
    /// (`MSS_BACKUP_S3_VIRTUAL_HOST_STYLE`).
    #[serde(default)]
    pub virtual_host_style: bool,
    /// How long one request, or one part of an upload, may take before it
    /// is retried (`MSS_BACKUP_S3_TIMEOUT`, default [`DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("server_id_file", &self.server_id_file)
            .field("access_key_id", &hidden(&self.access_key_id))
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("key_source", &self.key_source)
            .field("profile", &self.profile)
            .field("use_instance_metadata", &self.use_instance_metadata)
            .field("virtual_host_style", &self.virtual_host_style)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A setting that cannot work, found before any network call. Each names
/// the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("MSS_BACKUP_S3_BUCKET is not a bucket name: {0}")]
    Bucket(String),
    #[error("MSS_BACKUP_S3_ENDPOINT is not valid: {0}")]
    Endpoint(String),
    #[error("MSS_BACKUP_S3_PREFIX is not valid: {0}")]
    Prefix(String),
    #[error("{set} is set but {missing} is not (set both, or neither)")]
    HalfKey {
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "no S3 credentials: set MSS_BACKUP_S3_ACCESS_KEY_ID and MSS_BACKUP_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; on a cloud instance with a role, MSS_BACKUP_S3_USE_INSTANCE_METADATA=true)"
    )]
    NoCredentials,
    #[error("the S3 settings were refused: {0}")]
    Rejected(String),
    #[error("cannot start the S3 client: {0}")]
    Runtime(String),
}

/// How to sign requests, decided once from the config.
enum Signing {
    Keys,
    Profile,
    Chain,
}

impl Config {
    /// Checks the settings and makes the target. Fails early, naming the
    /// variable, when something cannot work (no credentials at all, half a
    /// key pair, a malformed endpoint or prefix); never touches the network.
    /// A missing server id file is not an error here: the target then
    /// fails its preflight, so the local backup still happens.
    pub fn build(self) -> Result<S3Target, ConfigError> {
        self.build_with_checksum(None)
    }

    /// [`Config::build`], sending `checksum` with every upload and part.
    pub fn build_with_checksum(self, checksum: Option<Checksum>) -> Result<S3Target, ConfigError> {
        if self.bucket.is_empty() || self.bucket.contains(['/', ' ']) {
            return Err(ConfigError::Bucket(format!(
                "{:?} (a bucket name has no slashes or spaces)",
                self.bucket
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint)?;
        }
        let signing = self.signing()?;
        let prefix = match &self.prefix {
            Some(prefix) => Ok(normalize_prefix(prefix).map_err(ConfigError::Prefix)?),
            None => self.prefix_from_server_id(),
        };
        let region = self.region.as_deref().unwrap_or(DEFAULT_REGION);
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);

        // Without the `auto-register-services` feature nothing installs
        // opendal's HTTP transport before `main`; every request would fail
        // with "default HTTP transport is not installed".
        opendal::install_default();
        let mut builder = opendal::services::S3::default()
            .bucket(&self.bucket)
            .region(region);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint.trim_end_matches('/'));
        }
        if self.virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        match checksum {
            Some(Checksum::Crc32c) => builder = builder.checksum_algorithm("crc32c"),
            None => {}
        }
        if !self.use_instance_metadata {
            builder = builder.disable_ec2_metadata();
        }
        match signing {
            Signing::Keys => {
                if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
                    builder = builder.access_key_id(id).secret_access_key(secret);
                }
                if let Some(token) = &self.session_token {
                    builder = builder.session_token(token);
                }
                // The keys are all there is: no reading of AWS_* variables
                // or ~/.aws behind the operator's back.
                builder = builder.disable_config_load();
            }
            Signing::Profile => {
                if let Some(profile) = &self.profile {
                    builder = builder.profile(profile);
                }
            }
            Signing::Chain => {}
        }
        let transport = opendal::HttpTransporter::new(crate::transport::Transport(
            opendal::HttpTransporter::default(),
        ));
        let operator = Operator::new(builder)
            .map_err(|e| ConfigError::Rejected(e.to_string()))?
            .with_context(opendal::OperationContext::new().with_http_transport(transport))
            .layer(
                TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            // After the timeout layer: each attempt gets its own deadline.
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(RETRIES)
                    .with_min_delay(Duration::from_secs(1))
                    .with_max_delay(Duration::from_secs(10)),
            );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mss-backup-s3")
            .enable_all()
            .build()
            .map_err(|e| ConfigError::Runtime(e.to_string()))?;

        let label = match &prefix {
            Ok(prefix) => format!("s3://{}/{prefix}", self.bucket),
            Err(_) => format!("s3://{}", self.bucket),
        };
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => format!("AWS S3 ({region})"),
        };
        let (key_id_var, secret_var) = match signing {
            Signing::Keys => self.key_source.variables(),
            Signing::Profile => ("the keys of AWS_PROFILE", "the keys of AWS_PROFILE"),
            Signing::Chain => (
                "the instance's role credentials",
                "the instance's role credentials",
            ),
        };
        Ok(S3Target {
            label,
            region: region.to_string(),
            bucket: self.bucket,
            endpoint,
            prefix,
            key_id_var,
            secret_var,
            timeout,
            retention_by_bucket: false,
            operator,
            runtime: std::sync::Arc::new(runtime),
        })
    }

    fn signing(&self) -> Result<Signing, ConfigError> {
        let (id_var, secret_var) = self.key_source.variables();
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), Some(_)) => Ok(Signing::Keys),
            (Some(_), None) => Err(ConfigError::HalfKey {
                set: id_var,
                missing: secret_var,
            }),
            (None, Some(_)) => Err(ConfigError::HalfKey {
                set: secret_var,
                missing: id_var,
            }),
            (None, None) if self.use_instance_metadata => Ok(Signing::Chain),
            (None, None) if self.profile.is_some() => Ok(Signing::Profile),
            (None, None) => Err(ConfigError::NoCredentials),
        }
    }

    /// `mss/<server id>/`, or why there is none.
    fn prefix_from_server_id(&self) -> Result<String, String> {
        let Some(file) = &self.server_id_file else {
            return Err(
                "no S3 prefix: set MSS_BACKUP_S3_PREFIX (like mss/vm1/), since there is no server id to name one"
                    .to_string(),
            );
        };
        let text = fs::read_to_string(file).map_err(|e| {
            format!(
                "no S3 prefix: the server id file {} cannot be read ({e}); backups are kept under mss/<server id>/ so machines sharing a bucket stay apart (set MSS_BACKUP_S3_PREFIX to choose one)",
                file.display()
            )
        })?;
        let id = text.trim();
        let usable = !id.is_empty()
            && id != "."
            && id != ".."
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !usable {
            return Err(format!(
                "no S3 prefix: the server id in {} ({id:?}) cannot name one (letters, digits, '-', '_' and '.' only); set MSS_BACKUP_S3_PREFIX",
                file.display()
            ));
        }
        Ok(format!("{MACHINES_ROOT}{id}/"))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let Some(rest) = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
    else {
        return Err(ConfigError::Endpoint(format!(
            "{endpoint:?} must start with https:// or http:// (like https://s3.example.com)"
        )));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(ConfigError::Endpoint(format!("{endpoint:?} has no host")));
    }
    if host.contains('@') {
        // Keys belong in their own variables, where they are never printed.
        return Err(ConfigError::Endpoint(
            "it must not hold a user or password (put the keys in MSS_BACKUP_S3_ACCESS_KEY_ID and MSS_BACKUP_S3_SECRET_ACCESS_KEY)".to_string(),
        ));
    }
    Ok(())
}

/// `mss/vm1` -> `mss/vm1/`; `/` -> the bucket's root.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad_part = trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..");
    if bad_part || trimmed.chars().any(char::is_control) {
        return Err(format!(
            "{prefix:?} (use a plain path like mss/vm1/: no empty, . or .. parts)"
        ));
    }
    Ok(format!("{trimmed}/"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config for tests, with keys that must never be printed.
    pub(crate) fn config() -> Config {
        Config {
            bucket: "backups".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: None,
            prefix: Some("mss/test".into()),
            server_id_file: None,
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("0123456789".into()),
            session_token: Some("token-secret".into()),
            key_source: KeySource::Mss,
            profile: None,
            use_instance_metadata: false,
            virtual_host_style: false,
            timeout: None,
        }
    }

    #[test]
    fn debug_never_shows_keys() {
        let text = format!("{:?}", config());
        for secret in ["AKIDEXAMPLE", "0123456789", "token-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("backups"), "{text}");
        let target = config().build().unwrap();
        let text = format!("{target:?}");
        assert!(!text.contains("0123456789"), "{text}");
    }

    #[test]
    fn missing_credentials_fail_at_once_naming_the_variables() {
        let mut c = config();
        c.access_key_id = None;
        c.secret_access_key = None;
        let started = std::time::Instant::now();
        let err = c.build().unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(err.contains("MSS_BACKUP_S3_ACCESS_KEY_ID"), "{err}");
        assert!(err.contains("AWS_PROFILE"), "{err}");

        let mut c = config();
        c.secret_access_key = None;
        c.key_source = KeySource::AwsEnv;
        let err = c.build().unwrap_err().to_string();
        assert_eq!(
            err,
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not (set both, or neither)"
        );
    }

    #[test]
    fn prefixes_are_normalized_or_refused() {
        assert_eq!(normalize_prefix("mss/vm1").unwrap(), "mss/vm1/");
        assert_eq!(normalize_prefix("/mss/vm1/").unwrap(), "mss/vm1/");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        for bad in ["mss//vm1", "mss/../x", "a/./b"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_must_be_urls_without_passwords() {
        for (endpoint, word) in [
            ("s3.example.com", "must start with"),
            ("https://", "no host"),
            ("https://key:secret@s3.example.com", "user or password"),
        ] {
            let mut c = config();
            c.endpoint = Some(endpoint.into());
            let err = c.build().unwrap_err().to_string();
            assert!(err.contains(word), "{endpoint}: {err}");
            assert!(!err.contains("secret@"), "{err}");
        }
    }
}
