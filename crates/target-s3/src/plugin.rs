//! The S3 kind as a plugin: the settings an operator writes
//! (`MSS_BACKUP_S3_*`, or the standard `AWS_*` variables for the keys),
//! turned into the target's [`Config`].

use std::fmt;
use std::time::Duration;

use mss_backup_core::plugin::{BuildContext, Built, Invalid, TargetPlugin};
use mss_backup_core::setting::{Setting, parse_duration};
use serde::Deserialize;

use crate::{Checksum, Config, KeySource, OUTSIDE_VARS, SETTINGS};

/// The S3 kind: `MSS_BACKUP_S3_*`, `--target s3`, `copy s3`.
pub struct S3;

/// What the operator sets, keys without `s3_`. Never printed whole: the
/// `Debug` below leaves the keys out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub use_instance_metadata: bool,
    #[serde(default)]
    pub virtual_host_style: bool,
    pub timeout: Option<String>,
    pub checksum: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TargetPlugin for S3 {
    const KIND: &'static str = "s3";
    const SWITCH: &'static str = "s3_bucket";
    const HINT: &'static str = "the bucket that holds the backups";
    const SETTINGS: &'static [Setting] = SETTINGS;
    const OUTSIDE_VARS: &'static [&'static str] = OUTSIDE_VARS;
    const RETENTION_BY_STORAGE: Option<(&'static str, &'static str)> =
        Some(("bucket", "never delete, a lifecycle rule expires them"));
    const MACHINE_PREFIX: Option<&'static str> = Some("s3_prefix");
    const OUTSIDE_SECRETS: &'static [&'static str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];
    type Config = S3Settings;

    /// Keys come from `MSS_BACKUP_S3_ACCESS_KEY_ID` and
    /// `MSS_BACKUP_S3_SECRET_ACCESS_KEY`, else from the standard `AWS_*`
    /// variables (or `AWS_PROFILE`); they are never printed.
    fn build(settings: S3Settings, context: &BuildContext) -> Result<Built, Invalid> {
        let aws_var = context.outside_var;
        let (access_key_id, secret_access_key, session_token, key_source) =
            if settings.access_key_id.is_some() || settings.secret_access_key.is_some() {
                (
                    settings.access_key_id,
                    settings.secret_access_key,
                    None,
                    KeySource::Mss,
                )
            } else {
                (
                    aws_var("AWS_ACCESS_KEY_ID"),
                    aws_var("AWS_SECRET_ACCESS_KEY"),
                    aws_var("AWS_SESSION_TOKEN"),
                    KeySource::AwsEnv,
                )
            };
        let timeout = settings
            .timeout
            .as_deref()
            .map(|value| {
                parse_timeout(value).ok_or_else(|| {
                    Invalid::of(
                        "s3_timeout",
                        "use a number of seconds, like 120 (or with a unit: 5m)",
                    )
                })
            })
            .transpose()?;
        let config = Config {
            bucket: settings.bucket,
            endpoint: settings.endpoint,
            region: settings.region,
            prefix: settings.prefix,
            server_id_file: Some(
                context
                    .data_dir
                    .join(mss_backup_core::archive::SERVER_ID_PATH),
            ),
            access_key_id,
            secret_access_key,
            session_token,
            key_source,
            profile: aws_var("AWS_PROFILE"),
            use_instance_metadata: settings.use_instance_metadata,
            virtual_host_style: settings.virtual_host_style,
            timeout,
        };
        let keys = match (&config.access_key_id, &config.profile) {
            (Some(_), _) => format!("keys from {}", config.key_source.variables().0),
            (None, Some(profile)) => format!("keys of AWS_PROFILE {profile}"),
            (None, None) => "keys from the instance role".to_string(),
        };
        let style = if config.virtual_host_style {
            "virtual-host style"
        } else {
            "path style"
        };
        let checksum = match settings.checksum.as_deref() {
            Some(value) => Checksum::parse(value).map_err(|e| Invalid::of("s3_checksum", e))?,
            None => None,
        };
        let target = config
            .build_with_checksum(checksum)
            .map_err(|e| Invalid {
                key: None,
                reason: e.to_string(),
            })?
            .leave_retention_to_bucket(context.retention_by_storage);
        Ok(Built {
            at: Some(target.endpoint().to_string()),
            description: format!("{keys}, {style}"),
            target: Box::new(target),
        })
    }
}

/// `120` (seconds), or with a unit: `90s`, `5m`.
fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let duration = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => parse_duration(value)?,
    };
    (!duration.is_zero()).then_some(duration)
}
