//! The one list of offsite target kinds, and how a kind's settings become
//! its target. Each target crate is a plugin (`mss_backup_core::plugin`):
//! it owns its settings table, its typed `Config` and its `build()`. This
//! module extracts that `Config` through figment from the kind's settings,
//! every value a string exactly as written, and turns any refusal into a
//! one-line error naming the variable or file key that held the value.
//! Everything else that knows the kinds (the command line, `config`,
//! `doctor`, the man page, `schedule install`) reads [`KINDS`].
//!
//! A target is on when its switch is set (`MSS_BACKUP_USB_PATH`,
//! `MSS_BACKUP_RSYNC_DEST`, `MSS_BACKUP_S3_BUCKET`); another setting of the
//! kind without it is a configuration error, because a target the operator
//! meant to switch on must never be silently off.

use std::collections::BTreeMap;

use figment::Figment;
use figment::error::Kind as FigmentKind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use mss_backup_core::RetentionPolicy;
use mss_backup_core::backup::Destination;
use mss_backup_core::plugin::{BuildContext, Invalid, TargetPlugin};
use mss_backup_core::setting::Setting;
use mss_backup_target_rsync::Rsync;
use mss_backup_target_s3::S3;
use mss_backup_target_usb::Usb;

use crate::config::{ConfigError, Raw, Settings, var_name};

/// A kind of offsite target, as the rest of the binary sees it.
pub struct Kind {
    /// The word that names it: `list --target KIND`, `copy KIND`,
    /// `restore --from KIND:NAME`, `schedule install --drill KIND`.
    pub name: &'static str,
    /// The key whose setting switches it on (`usb_path`).
    pub switch: &'static str,
    /// What to set it to, for the message when it is not set.
    pub hint: &'static str,
    pub settings: &'static [Setting],
    /// Variables outside `MSS_BACKUP_*` it reads (`AWS_*`), and which of
    /// those are secrets.
    pub outside_vars: &'static [&'static str],
    pub outside_secrets: &'static [&'static str],
    /// The key that chooses one machine's backups where the kind holds
    /// several (`s3_prefix`).
    pub machine_prefix: Option<&'static str>,
    build: fn(&Settings) -> Result<Option<Enabled>, ConfigError>,
}

const fn plugin<P: TargetPlugin>() -> Kind {
    Kind {
        name: P::KIND,
        switch: P::SWITCH,
        hint: P::HINT,
        settings: P::SETTINGS,
        outside_vars: P::OUTSIDE_VARS,
        outside_secrets: P::OUTSIDE_SECRETS,
        machine_prefix: P::MACHINE_PREFIX,
        build: build::<P>,
    }
}

/// Every kind of offsite target, in the order the nightly run copies to
/// them. Adding a target is its crate and one line here.
pub const KINDS: [Kind; 3] = [plugin::<Usb>(), plugin::<Rsync>(), plugin::<S3>()];

/// The kind named `name`, if there is one.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The kinds that can hold several machines' backups, with the key that
/// chooses one.
pub fn shared_kinds() -> impl Iterator<Item = (&'static Kind, &'static str)> {
    KINDS
        .iter()
        .filter_map(|k| k.machine_prefix.map(|key| (k, key)))
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
    /// `usb:/media/stick (keeps 3, from MSS_BACKUP_USB_RETENTION, label "MSS1")`.
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
/// left out by each plugin.
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

/// The target of plugin `P`, when its switch is set: its settings
/// extracted into `P::Config`, built, and given its retention.
fn build<P: TargetPlugin>(settings: &Settings) -> Result<Option<Enabled>, ConfigError> {
    let prefix = format!("{}_", P::KIND);
    let retention_key = format!("{}retention", prefix);
    let mut set: BTreeMap<&'static str, Raw> = BTreeMap::new();
    for setting in P::SETTINGS {
        if let Some(raw) = settings.raw(setting.key)? {
            if raw.value.is_empty() {
                return Err(ConfigError(format!(
                    "{} is empty (set a value, or unset it)",
                    raw.origin
                )));
            }
            set.insert(setting.key, raw);
        }
    }
    if !set.contains_key(P::SWITCH) {
        if let Some(raw) = set.values().next() {
            let main = var_name(P::SWITCH);
            return Err(ConfigError(format!(
                "{} is set but {main} is not, so that target would be off (set {main}, or unset {})",
                raw.origin, raw.origin
            )));
        }
        return Ok(None);
    }
    // Retention is core's, the same for every kind; the rest is the
    // plugin's, keyed without the prefix, each value the string written.
    let fields: Dict = set
        .iter()
        .filter(|(key, _)| **key != retention_key)
        .map(|(key, raw)| {
            let field = key.strip_prefix(&prefix).unwrap_or(key);
            (field.to_string(), Value::from(raw.value.clone()))
        })
        .collect();
    let refused = |key: Option<&str>, reason: String| match key.and_then(|k| set.get(k)) {
        Some(raw) => ConfigError(format!("{} is not valid: {reason}", raw.what)),
        None => ConfigError(reason),
    };
    let config: P::Config = Figment::from(Serialized::defaults(fields))
        .extract_lossy()
        .map_err(|e| {
            let key = e.path.first().map(|field| format!("{prefix}{field}"));
            let reason = match &e.kind {
                FigmentKind::InvalidType(_, expected) if expected == "a boolean" => {
                    "use true or false".to_string()
                }
                kind => kind.to_string(),
            };
            refused(key.as_deref(), reason)
        })?;
    // A word instead of a count: the storage expires backups itself.
    let by_storage = P::RETENTION_BY_STORAGE.filter(|(word, _)| {
        set.get(retention_key.as_str())
            .is_some_and(|raw| raw.value.trim() == *word)
    });
    let outside_var = |name: &str| settings.outside_var(name);
    let context = BuildContext {
        home: &settings.home,
        data_dir: &settings.data_dir,
        outside_var: &outside_var,
        retention_by_storage: by_storage.is_some(),
    };
    let built =
        P::build(config, &context).map_err(|Invalid { key, reason }| refused(key, reason))?;
    let (retention, kept) = match (by_storage, P::RETENTION_BY_STORAGE) {
        (Some((word, _)), _) => (
            RetentionPolicy {
                keep: settings.retention,
            },
            format!("retention left to the {word}"),
        ),
        (None, Some((word, meaning))) => retention(settings, &retention_key)
            .map_err(|e| ConfigError(format!("{} (or `{word}`: {meaning})", e.0)))?,
        (None, None) => retention(settings, &retention_key)?,
    };
    let mut description = built.target.name().to_string();
    if let Some(at) = &built.at {
        description.push_str(&format!(" at {at}"));
    }
    description.push_str(&format!(" ({kept}"));
    if !built.description.is_empty() {
        description.push_str(", ");
        description.push_str(&built.description);
    }
    description.push(')');
    Ok(Some(Enabled {
        destination: Destination {
            target: built.target,
            retention,
        },
        description,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, Overrides};

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let mut env: Env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOME".into(), "/home/mss".into());
        Settings::load(&env, &Overrides::new(), None).unwrap()
    }

    fn described(vars: &[(&str, &str)]) -> Result<Vec<String>, String> {
        describe(&settings(vars)).map_err(|e| e.0)
    }

    #[test]
    fn values_reach_the_plugin_exactly_as_written() {
        let lines = described(&[
            ("MSS_BACKUP_USB_PATH", "~/stick"),
            ("MSS_BACKUP_USB_LABEL", "0123"),
            ("MSS_BACKUP_USB_REQUIRED", "yes"),
        ])
        .unwrap();
        assert_eq!(
            lines,
            ["usb:/home/mss/stick (keeps 7, as local, label \"0123\", required)"]
        );
    }

    #[test]
    fn a_refused_value_names_the_variable_that_held_it() {
        let err = described(&[
            ("MSS_BACKUP_USB_PATH", "/media/stick"),
            ("MSS_BACKUP_USB_REQUIRED", "maybe"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            "MSS_BACKUP_USB_REQUIRED=maybe is not valid: use true or false"
        );
        let err = described(&[("MSS_BACKUP_USB_PATH", "stick")]).unwrap_err();
        assert!(
            err.starts_with("MSS_BACKUP_USB_PATH=stick is not valid: it must be an absolute path"),
            "{err}"
        );
        let err = described(&[("MSS_BACKUP_RSYNC_DEST", "nas")]).unwrap_err();
        assert!(
            err.starts_with("MSS_BACKUP_RSYNC_DEST=nas is not valid"),
            "{err}"
        );
        let err = described(&[
            ("MSS_BACKUP_S3_BUCKET", "b"),
            ("MSS_BACKUP_S3_TIMEOUT", "soon"),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("MSS_BACKUP_S3_TIMEOUT=soon is not valid"),
            "{err}"
        );
    }

    #[test]
    fn a_setting_without_its_switch_is_an_error_not_an_idle_target() {
        let err = described(&[("MSS_BACKUP_RSYNC_RSH", "ssh -p 2222")]).unwrap_err();
        assert_eq!(
            err,
            "MSS_BACKUP_RSYNC_RSH is set but MSS_BACKUP_RSYNC_DEST is not, so that target would be off (set MSS_BACKUP_RSYNC_DEST, or unset MSS_BACKUP_RSYNC_RSH)"
        );
    }

    /// A plugin whose `Config` lacks a key its table declares: the key is
    /// refused by name, never dropped.
    struct Narrow;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NarrowConfig {
        #[allow(dead_code)]
        path: String,
    }

    impl TargetPlugin for Narrow {
        const KIND: &'static str = "usb";
        const SWITCH: &'static str = "usb_path";
        const HINT: &'static str = "";
        const SETTINGS: &'static [Setting] = mss_backup_target_usb::SETTINGS;
        type Config = NarrowConfig;

        fn build(
            _: NarrowConfig,
            _: &BuildContext,
        ) -> Result<mss_backup_core::plugin::Built, Invalid> {
            unreachable!("the extraction refuses the label first")
        }
    }

    #[test]
    fn a_key_the_plugin_does_not_know_is_refused_by_name() {
        let s = settings(&[
            ("MSS_BACKUP_USB_PATH", "/media/stick"),
            ("MSS_BACKUP_USB_LABEL", "MSS1"),
        ]);
        let err = build::<Narrow>(&s).err().unwrap().0;
        assert!(
            err.starts_with("MSS_BACKUP_USB_LABEL=MSS1 is not valid"),
            "{err}"
        );
    }
}
