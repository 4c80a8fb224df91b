//! S3-compatible object storage as an mss-backup target: AWS S3, Ceph RGW,
//! Garage, MinIO, Backblaze B2, Wasabi, anything that speaks the S3 API,
//! through opendal's `s3` service. This is the only crate that knows tokio
//! and opendal: [`S3Target`] owns a small runtime and blocks on it, so the
//! [`Target`] trait stays synchronous for everyone else.
//!
//! Backups live under a prefix (by default `mss/<server id>/`), so several
//! MSS machines can share a bucket and no machine's retention ever lists or
//! deletes another's backups. The archive is streamed from disk in a
//! multipart upload with a fixed part size and bounded concurrency, so
//! memory stays flat however big it is; an upload that fails is aborted, so
//! no object ever appears under a backup's name half-written. The sha256
//! travels with the archive as object metadata (`x-amz-meta-sha256`), and
//! the `.sha256` sidecar is uploaded only once the archive is there with
//! the right size: as on disk, the sidecar marks a complete backup.

mod plugin;
mod remote_error;

pub use plugin::{S3, S3Settings};

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mss_backup_core::progress::{NoProgress, Progress};
use mss_backup_core::setting::{Setting, Shown};
use mss_backup_core::{Artifact, ArtifactName, Target, TargetError, durable, target};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Buffer, ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use crate::remote_error::{Place, describe};

/// Size of one part of a multipart upload, and of one ranged read when
/// downloading. An upload holds [`CONCURRENT_PARTS`] + 2 of these in
/// memory (the parts in flight, the next one, the one being read), so
/// about 32 MiB whatever the archive's size; S3 allows 10,000 parts, so
/// archives up to 80 GiB fit.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at the same time.
pub const CONCURRENT_PARTS: usize = 2;
/// Default for [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Region used when none is configured (opendal cannot build without one;
/// most S3-compatible servers accept any name).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The user metadata key the archive's sha256 is stored under (sent as
/// `x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// Where each machine's backups live by default: `mss/<server id>/`.
pub const MACHINES_ROOT: &str = "mss/";

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
        default: "AWS S3",
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
        value: "N",
        default: "the local retention",
        help: "backups kept under the prefix",
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
/// How long aborting a failed upload may take, retries included.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);
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
        let operator = Operator::new(builder)
            .map_err(|e| ConfigError::Rejected(e.to_string()))?
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

/// The complete backups among object names: ours, with their sidecar,
/// oldest first.
fn complete_backups(names: &BTreeSet<String>) -> Vec<ArtifactName> {
    let mut backups: Vec<ArtifactName> = names
        .iter()
        .filter_map(|n| ArtifactName::parse(n))
        .filter(|n| names.contains(&n.sidecar_name()))
        .collect();
    backups.sort_unstable();
    backups
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

/// An S3 bucket and prefix holding `NAME.tar.gz` + `NAME.tar.gz.sha256`
/// pairs.
pub struct S3Target {
    label: String,
    bucket: String,
    /// For messages: the endpoint, or `AWS S3 (region)`.
    endpoint: String,
    region: String,
    /// `mss/vm1/` (or empty for the bucket's root), or why there is none.
    prefix: Result<String, String>,
    key_id_var: &'static str,
    secret_var: &'static str,
    timeout: Duration,
    operator: Operator,
    /// Shared with the same target at another machine's prefix.
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("label", &self.label)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed, before it is worded for the operator.
enum Failure {
    Remote(opendal::Error),
    Local { what: String, source: io::Error },
    Integrity(String),
}

impl From<opendal::Error> for Failure {
    fn from(e: opendal::Error) -> Self {
        Failure::Remote(e)
    }
}

fn local(what: impl Into<String>) -> impl FnOnce(io::Error) -> Failure {
    let what = what.into();
    move |source| Failure::Local { what, source }
}

impl S3Target {
    /// The key prefix backups are under (`mss/vm1/`), or the reason there
    /// is none (the server id file is missing).
    pub fn prefix(&self) -> Result<&str, TargetError> {
        self.prefix
            .as_deref()
            .map_err(|reason| TargetError::Unavailable {
                target: self.label.clone(),
                reason: reason.clone(),
            })
    }

    /// The same bucket and keys at another prefix (another machine's).
    pub fn at_prefix(&self, prefix: &str) -> S3Target {
        S3Target {
            label: format!("s3://{}/{prefix}", self.bucket),
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            prefix: Ok(prefix.to_string()),
            key_id_var: self.key_id_var,
            secret_var: self.secret_var,
            timeout: self.timeout,
            operator: self.operator.clone(),
            runtime: std::sync::Arc::clone(&self.runtime),
        }
    }

    /// Each machine under [`MACHINES_ROOT`] with its complete backups.
    async fn machines_async(&self) -> Result<Vec<mss_backup_core::Machine>, Failure> {
        let entries = self.operator.list(MACHINES_ROOT).await?;
        let mut machines = Vec::new();
        for entry in entries.iter().filter(|e| e.metadata().mode().is_dir()) {
            let Some(id) = entry
                .path()
                .strip_prefix(MACHINES_ROOT)
                .map(|rest| rest.trim_end_matches('/'))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            else {
                continue;
            };
            let prefix = format!("{MACHINES_ROOT}{id}/");
            let backups = complete_backups(&self.names_under(&prefix).await?);
            let newest_size = match backups.last() {
                Some(newest) => self
                    .operator
                    .stat(&format!("{prefix}{}", newest.file_name()))
                    .await
                    .ok()
                    .map(|m| m.content_length()),
                None => None,
            };
            machines.push(mss_backup_core::Machine {
                id: id.to_string(),
                backups,
                newest_size,
            });
        }
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(machines)
    }

    /// The endpoint as messages name it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error(&self, action: impl Into<String>, failure: Failure) -> TargetError {
        let target = self.label.clone();
        match failure {
            Failure::Remote(e) => {
                let prefix = self.prefix.as_deref().unwrap_or_default();
                let described = describe(
                    &e,
                    &Place {
                        endpoint: &self.endpoint,
                        bucket: &self.bucket,
                        region: &self.region,
                        prefix,
                        key_id_var: self.key_id_var,
                        secret_var: self.secret_var,
                        timeout: self.timeout,
                    },
                );
                // The S3 error document's fields (code, message, request id)
                // for the log, never the request or its headers.
                tracing::warn!(target = %self.label, kind = %e.kind(), "S3 error: {}", e.message());
                if described.unavailable {
                    TargetError::Unavailable {
                        target,
                        reason: described.message,
                    }
                } else {
                    TargetError::Failed {
                        target,
                        action: action.into(),
                        detail: described.message,
                    }
                }
            }
            Failure::Local { what, source } => TargetError::Failed {
                target,
                action: action.into(),
                detail: format!("{what}: {source}"),
            },
            Failure::Integrity(detail) => TargetError::Integrity {
                target,
                name: action.into(),
                detail,
            },
        }
    }

    /// Every object name directly under the prefix.
    async fn names_under(&self, prefix: &str) -> Result<BTreeSet<String>, Failure> {
        let dir = if prefix.is_empty() { "/" } else { prefix };
        let entries = self.operator.list(dir).await?;
        Ok(entries
            .iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| e.name().to_string())
            .collect())
    }

    /// Streams `file` to `key` in parts of [`PART_SIZE`], at most
    /// [`CONCURRENT_PARTS`] in flight; aborts the upload on any error so
    /// that nothing appears under `key`. Each part handed to the upload
    /// counts as progress.
    async fn upload(
        &self,
        file: &Path,
        key: &str,
        sha256: &str,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let mut input = File::open(file).map_err(local(format!("opening {}", file.display())))?;
        let mut writer = self
            .operator
            .writer_with(key)
            .chunk(PART_SIZE)
            .concurrent(CONCURRENT_PARTS)
            .user_metadata([(SHA256_METADATA.to_string(), sha256.to_string())])
            .await?;
        let sent = async {
            loop {
                let part =
                    read_part(&mut input).map_err(local(format!("reading {}", file.display())))?;
                if part.is_empty() {
                    break;
                }
                let len = part.len() as u64;
                writer.write(Buffer::from(part)).await?;
                progress.advance(len);
            }
            writer.close().await?;
            Ok::<_, Failure>(())
        }
        .await;
        if sent.is_err() {
            // Worth one bounded try: when the server is gone, the abort
            // fails too, and waiting out its retries helps no one.
            let aborted = tokio::time::timeout(ABORT_TIMEOUT, writer.abort()).await;
            if !matches!(aborted, Ok(Ok(()))) {
                // The parts stay invisible (no object under the name) until
                // the bucket's lifecycle rule removes them.
                tracing::warn!(target = %self.label, key, "could not abort the failed upload");
            }
        }
        sent
    }

    async fn put_async(
        &self,
        artifact: &Artifact,
        prefix: &str,
        progress: &dyn Progress,
    ) -> Result<(), (String, Failure)> {
        let file_name = artifact.name.file_name();
        let key = format!("{prefix}{file_name}");
        let sidecar_key = format!("{prefix}{}", artifact.name.sidecar_name());
        let uploading = format!("uploading {file_name}");
        self.upload(&artifact.archive, &key, &artifact.sha256, progress)
            .await
            .map_err(|f| (uploading.clone(), f))?;
        // Check what arrived before the sidecar marks it complete (the
        // completion ETag of a multipart upload says nothing on some
        // servers, so ask for the size).
        let checked = async {
            let meta = self.operator.stat(&key).await?;
            if meta.content_length() != artifact.size {
                return Err(Failure::Integrity(format!(
                    "S3 holds {} bytes, the archive has {}",
                    meta.content_length(),
                    artifact.size
                )));
            }
            match meta.user_metadata().and_then(|m| m.get(SHA256_METADATA)) {
                Some(stored) if stored != artifact.sha256 => {
                    return Err(Failure::Integrity(format!(
                        "S3 metadata says sha256 {stored}, the archive has {}",
                        artifact.sha256
                    )));
                }
                Some(_) => {}
                None => tracing::warn!(target = %self.label, key, "the server did not keep the sha256 metadata"),
            }
            let sidecar = fs::read(&artifact.sidecar)
                .map_err(local(format!("reading {}", artifact.sidecar.display())))?;
            self.operator.write(&sidecar_key, sidecar).await?;
            Ok(())
        }
        .await;
        if let Err(failure) = checked {
            // Best effort: an archive without a sidecar is never listed, but
            // it should not linger either.
            let _ = self.operator.delete(&key).await;
            let action = match failure {
                Failure::Integrity(_) => file_name,
                _ => uploading,
            };
            return Err((action, failure));
        }
        Ok(())
    }

    /// Downloads the sidecar and then the archive to the hidden paths that
    /// [`target::fetch_checked`] hands over; it checks and names them.
    async fn fetch_async(
        &self,
        name: &ArtifactName,
        prefix: &str,
        archive: &Path,
        sidecar: &Path,
    ) -> Result<(), (String, Failure)> {
        let file_name = name.file_name();
        let downloading = format!("downloading {file_name}");
        let fail = |f: Failure| (downloading.clone(), f);
        let sidecar_key = format!("{prefix}{}", name.sidecar_name());
        let bytes = self
            .operator
            .read(&sidecar_key)
            .await
            .map_err(|e| fail(e.into()))?
            .to_vec();
        write_private(sidecar, &bytes).map_err(fail)?;
        self.download(&format!("{prefix}{file_name}"), archive)
            .await
            .map_err(fail)
    }

    /// Downloads `key` into the new file `partial` in ranged reads of
    /// [`PART_SIZE`], fsynced.
    async fn download(&self, key: &str, partial: &Path) -> Result<(), Failure> {
        let size = self.operator.stat(key).await?.content_length();
        let reader = self.operator.reader(key).await?;
        let _ = fs::remove_file(partial);
        let mut out = durable::create_new_private(partial)
            .map_err(local(format!("creating {}", partial.display())))?;
        let mut offset = 0;
        while offset < size {
            mss_backup_core::interrupt::check()
                .map_err(local(format!("writing {}", partial.display())))?;
            let end = size.min(offset + PART_SIZE as u64);
            let buffer = reader.read(offset..end).await?;
            if buffer.is_empty() {
                return Err(Failure::Integrity(format!(
                    "the object ended after {offset} of {size} bytes"
                )));
            }
            for chunk in buffer {
                out.write_all(&chunk)
                    .map_err(local(format!("writing {}", partial.display())))?;
                offset += chunk.len() as u64;
            }
        }
        out.sync_all()
            .map_err(local(format!("syncing {}", partial.display())))
    }
}

/// Reads up to [`PART_SIZE`] bytes (less only at the end of the file).
fn read_part(input: &mut File) -> io::Result<Vec<u8>> {
    // A stop signal ends the upload here, which then aborts it.
    mss_backup_core::interrupt::check()?;
    let mut part = Vec::with_capacity(PART_SIZE);
    input.take(PART_SIZE as u64).read_to_end(&mut part)?;
    Ok(part)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let _ = fs::remove_file(path);
    let mut file =
        durable::create_new_private(path).map_err(local(format!("creating {}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(local(format!("writing {}", path.display())))
}

impl Target for S3Target {
    fn name(&self) -> &str {
        &self.label
    }

    /// Lists the prefix: proves the endpoint answers, the keys are
    /// accepted and the bucket exists, before a large upload starts.
    fn preflight(&self) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        self.runtime
            .block_on(self.names_under(prefix))
            .map(|_| ())
            .map_err(|f| self.error(format!("listing {prefix}"), f))
    }

    fn put(&self, artifact: &Artifact) -> Result<(), TargetError> {
        self.put_with_progress(artifact, &NoProgress)
    }

    fn put_with_progress(
        &self,
        artifact: &Artifact,
        progress: &dyn Progress,
    ) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        self.runtime
            .block_on(self.put_async(artifact, prefix, progress))
            .map_err(|(action, f)| self.error(action, f))
    }

    fn knows_machine(&self) -> bool {
        self.prefix.is_ok()
    }

    fn machines(&self) -> Option<Result<Vec<mss_backup_core::Machine>, TargetError>> {
        Some(
            self.runtime
                .block_on(self.machines_async())
                .map_err(|f| self.error(format!("listing {MACHINES_ROOT}"), f)),
        )
    }

    fn for_machine(&self, id: &str) -> Option<Box<dyn Target>> {
        Some(Box::new(self.at_prefix(&format!("{MACHINES_ROOT}{id}/"))))
    }

    fn list(&self) -> Result<Vec<ArtifactName>, TargetError> {
        let prefix = self.prefix()?;
        let names = self
            .runtime
            .block_on(self.names_under(prefix))
            .map_err(|f| self.error(format!("listing {prefix}"), f))?;
        Ok(complete_backups(&names))
    }

    /// Downloads the sidecar and the archive into `dest_dir` through hidden
    /// files, which [`target::fetch_checked`] checks against each other
    /// before it names them (the sidecar first).
    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError> {
        let prefix = self.prefix()?;
        target::fetch_checked(&self.label, name, dest_dir, |archive, sidecar| {
            self.runtime
                .block_on(self.fetch_async(name, prefix, archive, sidecar))
                .map_err(|(action, f)| match f {
                    Failure::Remote(e) if e.kind() == ErrorKind::NotFound => {
                        TargetError::NotFound {
                            target: self.label.clone(),
                            name: name.file_name(),
                        }
                    }
                    f => self.error(action, f),
                })
        })
    }

    /// Deletes the archive first. A backup half deleted is then a lone
    /// sidecar: never listed, a few bytes. The other way round it would be
    /// a lone archive, never listed either, so never deleted, and billed
    /// for good.
    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        let prefix = self.prefix()?;
        for file in [name.file_name(), name.sidecar_name()] {
            let key = format!("{prefix}{file}");
            self.runtime
                .block_on(self.operator.delete(&key))
                .map_err(|e| self.error(format!("deleting {file}"), e.into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
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
    fn the_default_prefix_comes_from_the_server_id() {
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("server_id.txt");
        let mut c = config();
        c.prefix = None;
        c.server_id_file = Some(id_file.clone());
        let target = c.clone().build().unwrap();
        let err = target.preflight().unwrap_err().to_string();
        assert!(err.contains("server id file"), "{err}");
        assert!(err.contains("MSS_BACKUP_S3_PREFIX"), "{err}");
        assert_eq!(target.name(), "s3://backups");

        fs::write(&id_file, "  9f2c-vm1\n").unwrap();
        let target = c.clone().build().unwrap();
        assert_eq!(target.prefix().unwrap(), "mss/9f2c-vm1/");
        assert_eq!(target.name(), "s3://backups/mss/9f2c-vm1/");

        fs::write(&id_file, "a/b").unwrap();
        let err = c.build().unwrap().prefix().unwrap_err().to_string();
        assert!(err.contains("cannot name one"), "{err}");
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
