//! Configuration: built-in defaults < optional TOML file < `MSS_BACKUP_*`
//! environment variables < command-line flags, merged with figment. Every
//! value is read as the exact string the operator wrote (figment's own env
//! provider would turn `0123` into 123 and `true` into a bool, which breaks
//! labels, bucket names and secrets); each setting is then parsed here, so
//! a bad value is reported with the variable that holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// Prefix of every environment variable we read.
pub const ENV_PREFIX: &str = "MSS_BACKUP_";
/// The variable naming the optional TOML file (not a setting itself).
pub const CONFIG_VAR: &str = "MSS_BACKUP_CONFIG";

/// A configuration problem: one line naming the setting and the fix.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Settings given as command-line flags (the highest layer), by key
/// (`dir`, `retention`, ...).
pub type Overrides = BTreeMap<&'static str, String>;

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub retention: usize,
    /// Where each value came from, by setting name, for `mss-backup config`.
    pub origins: BTreeMap<&'static str, String>,
    /// The TOML file that was read, if any.
    pub file: Option<PathBuf>,
}

/// One setting: its key in the TOML file and figment, and its variable.
struct Key {
    key: &'static str,
    var: &'static str,
    flag: &'static str,
}

const PROJECT_DIR: Key = Key {
    key: "project_dir",
    var: "MSS_BACKUP_PROJECT_DIR",
    flag: "--project-dir",
};
const DATA_DIR: Key = Key {
    key: "data_dir",
    var: "MSS_BACKUP_DATA_DIR",
    flag: "--data-dir",
};
const DIR: Key = Key {
    key: "dir",
    var: "MSS_BACKUP_DIR",
    flag: "--backup-dir",
};
const RETENTION: Key = Key {
    key: "retention",
    var: "MSS_BACKUP_RETENTION",
    flag: "--retention",
};

/// Default number of backups kept.
pub const DEFAULT_RETENTION: usize = 7;

/// The process environment, as a map we can also build in tests.
pub type Env = BTreeMap<String, String>;

/// Reads the process environment (non-UTF-8 values are left out).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Settings {
    /// Resolves the configuration from `env`, the optional file, and flags.
    pub fn load(
        env: &Env,
        flags: &Overrides,
        config_flag: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let home = env
            .get("HOME")
            .filter(|h| h.starts_with('/'))
            .map(PathBuf::from)
            .ok_or_else(|| ConfigError("HOME is not set to an absolute path (mss-backup finds its default directories there; set HOME)".into()))?;

        let (file, file_required) = match (config_flag, env.get(CONFIG_VAR)) {
            (Some(path), _) => (Some(path.to_path_buf()), true),
            (None, Some(path)) => (Some(PathBuf::from(path)), true),
            (None, None) => (Some(home.join(".config/mss-backup/config.toml")), false),
        };
        let file = match file {
            Some(path) if path.is_file() => Some(path),
            Some(path) if file_required => {
                return Err(ConfigError(format!(
                    "Config file {} not found (create it, or unset {CONFIG_VAR})",
                    path.display()
                )));
            }
            _ => None,
        };

        let mut figment = Figment::new();
        if let Some(path) = &file {
            figment = figment.merge(Toml::file(path));
        }
        let figment = figment.merge(Layer::env(env)).merge(Layer::flags(flags));

        let mut origins = BTreeMap::new();
        let mut get = |key: &Key| -> Result<Option<String>, ConfigError> {
            let value = match figment.find_value(key.key) {
                Ok(value) => value,
                Err(_) => {
                    origins.insert(key.key, "default".to_string());
                    return Ok(None);
                }
            };
            let origin = origin_of(&figment, key);
            origins.insert(key.key, origin.clone());
            scalar_string(&value).map(Some).ok_or_else(|| {
                ConfigError(format!(
                    "{origin} must be a single value, not a list or table"
                ))
            })
        };

        let project_dir = match get(&PROJECT_DIR)? {
            Some(v) => absolute_path(&v, &home, &describe(&figment, &PROJECT_DIR, &v))?,
            None => home.join("Projects/sound-machine"),
        };
        let data_dir = match get(&DATA_DIR)? {
            Some(v) => absolute_path(&v, &home, &describe(&figment, &DATA_DIR, &v))?,
            None => project_dir.join("cloud-data"),
        };
        let backup_dir = match get(&DIR)? {
            Some(v) => absolute_path(&v, &home, &describe(&figment, &DIR, &v))?,
            None => home.join("backups/mss"),
        };
        let retention = match get(&RETENTION)? {
            Some(v) => parse_retention(&v, &describe(&figment, &RETENTION, &v))?,
            None => DEFAULT_RETENTION,
        };
        Ok(Settings {
            project_dir,
            data_dir,
            backup_dir,
            retention,
            origins,
            file,
        })
    }

    /// Where a setting's value came from, in words (`MSS_BACKUP_DIR`,
    /// `dir in /home/mss/.config/mss-backup/config.toml`, `--retention`,
    /// `default`).
    pub fn origin(&self, key: &str) -> &str {
        self.origins
            .get(key)
            .map(String::as_str)
            .unwrap_or("default")
    }
}

/// The retention count: a whole number of at least 1.
pub fn parse_retention(value: &str, what: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ConfigError(format!(
            "{what} is not valid: it must be a whole number of backups to keep, at least 1 (unset it for the default {DEFAULT_RETENTION})"
        ))),
    }
}

fn absolute_path(value: &str, home: &Path, what: &str) -> Result<PathBuf, ConfigError> {
    let expanded = match value.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if value == "~" => home.to_path_buf(),
        None => PathBuf::from(value),
    };
    if expanded.is_absolute() {
        Ok(expanded)
    } else {
        Err(ConfigError(format!(
            "{what} is not valid: it must be an absolute path (like /home/mss/backups/mss)"
        )))
    }
}

/// `MSS_BACKUP_RETENTION=0` or `retention = 0 in FILE`, for messages.
fn describe(figment: &Figment, key: &Key, value: &str) -> String {
    match figment.find_metadata(key.key).map(|m| &m.name) {
        Some(name) if name == ENV_NAME => format!("{}={value}", key.var),
        Some(name) if name == FLAGS_NAME => format!("{} {value}", key.flag),
        _ => format!("{} = {value:?} in {}", key.key, file_of(figment, key)),
    }
}

fn origin_of(figment: &Figment, key: &Key) -> String {
    match figment.find_metadata(key.key).map(|m| &m.name) {
        Some(name) if name == ENV_NAME => key.var.to_string(),
        Some(name) if name == FLAGS_NAME => key.flag.to_string(),
        _ => format!("{} in {}", key.key, file_of(figment, key)),
    }
}

fn file_of(figment: &Figment, key: &Key) -> String {
    figment
        .find_metadata(key.key)
        .and_then(|m| m.source.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "the config file".to_string())
}

/// A scalar config value as the string the operator wrote.
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string()))
            .or_else(|| n.to_f64().map(|n| n.to_string())),
        Value::Empty(..) | Value::Dict(..) | Value::Array(..) => None,
    }
}

const ENV_NAME: &str = "environment variable";
const FLAGS_NAME: &str = "command-line flag";

/// A layer of exact strings: `MSS_BACKUP_S3_BUCKET=0123` stays `"0123"`.
struct Layer {
    name: &'static str,
    values: Dict,
}

impl Layer {
    /// `MSS_BACKUP_*` variables; keys are the lower-cased rest of the name.
    fn env(env: &Env) -> Self {
        let values = env
            .iter()
            .filter(|(k, _)| k.as_str() != CONFIG_VAR)
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                (!key.is_empty()).then(|| (key, Value::from(v.clone())))
            })
            .collect();
        Self {
            name: ENV_NAME,
            values,
        }
    }

    fn flags(flags: &Overrides) -> Self {
        let values = flags
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.clone())))
            .collect();
        Self {
            name: FLAGS_NAME,
            values,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}
