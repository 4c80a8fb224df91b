//! What makes a crate a target plugin: its kind's name (the word of
//! `--target KIND`, `--from KIND:NAME`, `copy KIND` and the variable
//! prefix), the setting that switches it on, its own settings table, the
//! outside variables it reads, its typed configuration (plain serde data
//! the binary extracts from the operator's settings) and how that becomes a
//! [`Target`]. The binary keeps one list of plugins and derives from it
//! every place a target shows up: the command line, `config`, `doctor`, the
//! man page and the docs' settings reference. Adding a target is its crate
//! and one entry in that list.
//!
//! Core still knows no configuration format: a plugin's `Config` is any
//! `Deserialize`; the binary fills it from figment, with every value a
//! string exactly as written (`0123` stays `0123`), and names the variable
//! or file key in any error.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::setting::Setting;
use crate::target::Target;

/// What a plugin may use besides its own settings.
pub struct BuildContext<'a> {
    /// `$HOME`, for `~/` in paths.
    pub home: &'a Path,
    /// `cloud-data/` (the server id lives there).
    pub data_dir: &'a Path,
    /// One of the plugin's [`TargetPlugin::OUTSIDE_VARS`], from the process
    /// environment or else the environment file; `None` when unset or empty.
    pub outside_var: &'a dyn Fn(&str) -> Option<String>,
    /// The kind's retention setting is [`TargetPlugin::RETENTION_BY_STORAGE`]'s
    /// word: the storage expires old backups itself, nothing is deleted here.
    pub retention_by_storage: bool,
}

/// A target built from its settings.
pub struct Built {
    pub target: Box<dyn Target>,
    /// Where, when the target's name alone does not say it: an S3
    /// endpoint, shown as `s3://bucket/prefix/ at http://host:port`.
    pub at: Option<String>,
    /// What `mss-backup config` shows after the target's name, secrets
    /// left out: `label "MSS1", required`.
    pub description: String,
}

/// A setting the plugin refused: which (its key, `usb_label`; `None` when
/// no single setting is at fault) and why, in words that say the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: Option<&'static str>,
    pub reason: String,
}

impl Invalid {
    pub fn of(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key: Some(key),
            reason: reason.into(),
        }
    }
}

/// A kind of offsite target.
pub trait TargetPlugin {
    /// `usb`: the command-line word and the key prefix (`usb_path`).
    const KIND: &'static str;
    /// The key whose setting switches the target on (`usb_path`); without
    /// it, any other key of the kind is a configuration error.
    const SWITCH: &'static str;
    /// What to set [`Self::SWITCH`] to, for the message when it is unset.
    const HINT: &'static str;
    /// Every key of the kind, `KIND_retention` included (retention is
    /// applied by core, the same for every target).
    const SETTINGS: &'static [Setting];
    /// Variables outside `MSS_BACKUP_*` the plugin reads (`AWS_PROFILE`).
    const OUTSIDE_VARS: &'static [&'static str] = &[];
    /// The word `KIND_retention` may take instead of a count when the
    /// storage can expire backups itself (S3's `bucket`, for a key that
    /// cannot delete), and what it means, for messages.
    const RETENTION_BY_STORAGE: Option<(&'static str, &'static str)> = None;
    /// For a kind that can hold several machines' backups (each under
    /// `mss/<server id>/`): the key that chooses one (S3's `s3_prefix`).
    const MACHINE_PREFIX: Option<&'static str> = None;
    /// Those of [`Self::OUTSIDE_VARS`] that are secrets, never printed.
    const OUTSIDE_SECRETS: &'static [&'static str] = &[];
    /// The kind's settings, keys without the `KIND_` prefix; unknown keys
    /// must be refused (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned;

    fn build(config: Self::Config, context: &BuildContext) -> Result<Built, Invalid>;
}

/// `~/x` and `~` against `home`; the result must be absolute.
pub fn absolute_path(value: &str, home: &Path) -> Result<PathBuf, String> {
    let expanded = match value.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if value == "~" => home.to_path_buf(),
        None => PathBuf::from(value),
    };
    if expanded.is_absolute() {
        Ok(expanded)
    } else {
        Err("it must be an absolute path (like /home/mss/backups/mss)".to_string())
    }
}
