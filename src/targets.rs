//! Which offsite targets are switched on, decided from settings alone (so
//! environment variables enable them, no code changes). Each target crate
//! owns its `Config`; this module only maps settings onto them. A target is
//! on when its main setting is (`MSS_BACKUP_USB_PATH`,
//! `MSS_BACKUP_RSYNC_DEST`, `MSS_BACKUP_S3_BUCKET`); a companion setting
//! without it is a configuration error, because a target the operator
//! meant to switch on must never be silently off.

use mss_backup_core::backup::Destination;
use mss_backup_core::{RetentionPolicy, Target};
use mss_backup_target_rsync::RsyncTarget;
use mss_backup_target_usb::UsbTarget;

use crate::config::{ConfigError, Settings, var_name};

/// A kind of offsite target: the word that names it on the command line
/// (`list --target KIND`, `copy KIND`, `restore --from KIND:NAME`), the
/// setting that switches it on, and how to build it from the settings.
/// Commands find a kind here and never name one themselves.
pub struct Kind {
    pub name: &'static str,
    /// The key whose setting switches it on (`usb_path`).
    pub switch: &'static str,
    /// What to set it to, for the message when it is not set.
    pub hint: &'static str,
    build: fn(&Settings) -> Result<Option<Enabled>, ConfigError>,
}

/// Every kind of offsite target, in the order the nightly run copies to
/// them.
pub const KINDS: [Kind; 3] = [
    Kind {
        name: "usb",
        switch: "usb_path",
        hint: "the stick's mount point, like /media/backup-stick",
        build: usb,
    },
    Kind {
        name: "rsync",
        switch: "rsync_dest",
        hint: "[user@]host:/path, like backup@nas:/srv/mss",
        build: rsync,
    },
    Kind {
        name: "s3",
        switch: "s3_bucket",
        hint: "the bucket that holds the backups",
        build: s3,
    },
];

/// The kind named `name`, if there is one.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names `--target`, `copy` and `--from` accept.
pub fn kind_names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|k| k.name)
}

impl Kind {
    /// This kind's target as configured, or a configuration error saying
    /// which setting switches it on (`what` says what asked for it).
    pub fn enabled(&self, settings: &Settings, what: &str) -> Result<Enabled, ConfigError> {
        (self.build)(settings)?.ok_or_else(|| {
            ConfigError(format!(
                "{what} needs the {} target: {} is not set (set it to {})",
                self.name,
                var_name(self.switch),
                self.hint
            ))
        })
    }
}

/// An enabled target, with how `mss-backup config` describes it.
pub struct Enabled {
    pub destination: Destination,
    /// `usb:/media/stick (keeps 3 by MSS_BACKUP_USB_RETENTION, label "MSS1")`.
    pub description: String,
}

/// The offsite targets enabled in `settings`, each with its retention, in
/// the order they get each backup: USB, rsync, S3.
pub fn offsite(settings: &Settings) -> Result<Vec<Destination>, ConfigError> {
    Ok(enabled(settings)?
        .into_iter()
        .map(|e| e.destination)
        .collect())
}

/// One line per enabled offsite target for `mss-backup config`, secrets
/// redacted (none of USB's or rsync's settings is secret).
pub fn describe(settings: &Settings) -> Result<Vec<String>, ConfigError> {
    Ok(enabled(settings)?
        .into_iter()
        .map(|e| e.description)
        .collect())
}

fn enabled(settings: &Settings) -> Result<Vec<Enabled>, ConfigError> {
    let mut targets = Vec::new();
    for kind in &KINDS {
        targets.extend((kind.build)(settings)?);
    }
    Ok(targets)
}

/// The USB target, when `MSS_BACKUP_USB_PATH` is set.
fn usb(settings: &Settings) -> Result<Option<Enabled>, ConfigError> {
    let Some(path) = settings.path("usb_path")? else {
        require_main(
            "usb_path",
            &["usb_label", "usb_retention", "usb_required"],
            settings,
        )?;
        return Ok(None);
    };
    let label = settings.string("usb_label")?;
    if let (Some(label), Some(raw)) = (&label, settings.raw("usb_label")?) {
        mss_backup_target_usb::validate_label(label)
            .map_err(|e| ConfigError(format!("{} is not valid: {e}", raw.what)))?;
    }
    let retention = retention(settings, "usb_retention")?;
    let mut description = format!("usb:{} ({}", path.display(), retention.1);
    if let Some(label) = &label {
        description.push_str(&format!(", label {label:?}"));
    }
    let required = settings.flag("usb_required")?.unwrap_or(false);
    if required {
        description.push_str(", required");
    }
    description.push(')');
    let target = UsbTarget::new(mss_backup_target_usb::Config {
        path,
        label,
        required,
    });
    Ok(Some(Enabled {
        destination: Destination {
            target: Box::new(target),
            retention: retention.0,
        },
        description,
    }))
}

/// The rsync-over-SSH target, when `MSS_BACKUP_RSYNC_DEST` is set.
fn rsync(settings: &Settings) -> Result<Option<Enabled>, ConfigError> {
    let Some(dest) = settings.string("rsync_dest")? else {
        require_main("rsync_dest", &["rsync_rsh", "rsync_retention"], settings)?;
        return Ok(None);
    };
    let rsh = settings.string("rsync_rsh")?;
    let target = RsyncTarget::new(mss_backup_target_rsync::Config { dest, rsh }).map_err(|e| {
        let key = match e {
            mss_backup_target_rsync::ConfigError::Dest(_) => "rsync_dest",
            mss_backup_target_rsync::ConfigError::Rsh(_) => "rsync_rsh",
        };
        let what = settings
            .raw(key)
            .ok()
            .flatten()
            .map_or_else(|| var_name(key), |raw| raw.what);
        ConfigError(format!("{what} is not valid: {e}"))
    })?;
    let retention = retention(settings, "rsync_retention")?;
    let description = format!(
        "{} ({}, remote shell: {})",
        target.name(),
        retention.1,
        target.shell_command()
    );
    Ok(Some(Enabled {
        destination: Destination {
            target: Box::new(target),
            retention: retention.0,
        },
        description,
    }))
}

/// The S3 target, when `MSS_BACKUP_S3_BUCKET` is set. Keys come from
/// `MSS_BACKUP_S3_ACCESS_KEY_ID`/`MSS_BACKUP_S3_SECRET_ACCESS_KEY`, else from
/// the standard `AWS_*` variables (or `AWS_PROFILE`); they are never printed.
fn s3(settings: &Settings) -> Result<Option<Enabled>, ConfigError> {
    let Some(bucket) = settings.string("s3_bucket")? else {
        require_main(
            "s3_bucket",
            &[
                "s3_endpoint",
                "s3_region",
                "s3_prefix",
                "s3_retention",
                "s3_access_key_id",
                "s3_secret_access_key",
                "s3_virtual_host_style",
                "s3_use_instance_metadata",
                "s3_timeout",
                "s3_checksum",
            ],
            settings,
        )?;
        return Ok(None);
    };
    // The standard AWS variables, from the process or the environment file.
    let aws_var = |name: &str| settings.outside_var(name);
    let mss_id = settings.string("s3_access_key_id")?;
    let mss_secret = settings.string("s3_secret_access_key")?;
    let (access_key_id, secret_access_key, session_token, key_source) =
        if mss_id.is_some() || mss_secret.is_some() {
            (
                mss_id,
                mss_secret,
                None,
                mss_backup_target_s3::KeySource::Mss,
            )
        } else {
            (
                aws_var("AWS_ACCESS_KEY_ID"),
                aws_var("AWS_SECRET_ACCESS_KEY"),
                aws_var("AWS_SESSION_TOKEN"),
                mss_backup_target_s3::KeySource::AwsEnv,
            )
        };
    let timeout = match settings.raw("s3_timeout")? {
        Some(raw) => Some(parse_timeout(&raw.value).ok_or_else(|| {
            ConfigError(format!(
                "{} is not valid: use a number of seconds, like 120 (or with a unit: 5m)",
                raw.what
            ))
        })?),
        None => None,
    };
    let config = mss_backup_target_s3::Config {
        bucket,
        endpoint: settings.string("s3_endpoint")?,
        region: settings.string("s3_region")?,
        prefix: settings.string("s3_prefix")?,
        server_id_file: Some(
            settings
                .data_dir
                .join(mss_backup_core::archive::SERVER_ID_PATH),
        ),
        access_key_id,
        secret_access_key,
        session_token,
        key_source,
        profile: aws_var("AWS_PROFILE"),
        use_instance_metadata: settings.flag("s3_use_instance_metadata")?.unwrap_or(false),
        virtual_host_style: settings.flag("s3_virtual_host_style")?.unwrap_or(false),
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
    // `bucket`: a key without delete; its lifecycle rule does retention.
    let by_bucket = settings
        .raw("s3_retention")?
        .is_some_and(|raw| raw.value.trim() == "bucket");
    let checksum = match settings.raw("s3_checksum")? {
        Some(raw) => mss_backup_target_s3::Checksum::parse(&raw.value)
            .map_err(|e| ConfigError(format!("{} is not valid: {e}", raw.what)))?,
        None => None,
    };
    let target = config
        .build_with_checksum(checksum)
        .map_err(|e| ConfigError(e.to_string()))?
        .leave_retention_to_bucket(by_bucket);
    let retention = if by_bucket {
        let local = RetentionPolicy {
            keep: settings.retention,
        };
        (local, "retention left to the bucket".to_string())
    } else {
        retention(settings, "s3_retention").map_err(|e| {
            ConfigError(format!(
                "{} (or `bucket`: never delete, a lifecycle rule expires them)",
                e.0
            ))
        })?
    };
    let description = format!(
        "{} at {} ({}, {keys}, {style})",
        target.name(),
        target.endpoint(),
        retention.1
    );
    Ok(Some(Enabled {
        destination: Destination {
            target: Box::new(target),
            retention: retention.0,
        },
        description,
    }))
}

/// `120` (seconds), or with a unit: `90s`, `5m`.
fn parse_timeout(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    let duration = match value.parse::<u64>() {
        Ok(seconds) => std::time::Duration::from_secs(seconds),
        Err(_) => crate::commands::parse_duration(value)?,
    };
    (!duration.is_zero()).then_some(duration)
}

/// A target's own retention, or the local one, and words for it.
fn retention(settings: &Settings, key: &str) -> Result<(RetentionPolicy, String), ConfigError> {
    Ok(match settings.count(key)? {
        Some(keep) => (
            RetentionPolicy { keep },
            format!("keeps {keep}, from {}", settings.origin(key)),
        ),
        None => (
            RetentionPolicy {
                keep: settings.retention,
            },
            format!("keeps {}, as local", settings.retention),
        ),
    })
}

/// Fails when a companion of `main` is set without it.
fn require_main(main: &str, companions: &[&str], settings: &Settings) -> Result<(), ConfigError> {
    for key in companions {
        if let Some(raw) = settings.raw(key)? {
            let main = var_name(main);
            return Err(ConfigError(format!(
                "{} is set but {main} is not, so that target would be off (set {main}, or unset {})",
                raw.origin, raw.origin
            )));
        }
    }
    Ok(())
}
