//! Configuration: built-in defaults < optional TOML file < `MSS_BACKUP_*`
//! environment variables < command-line flags, merged with figment. Every
//! value is read as the exact string the operator wrote (figment's own env
//! provider would turn `0123` into 123 and `true` into a bool, which breaks
//! labels, bucket names and secrets); each setting is then parsed here, so
//! a bad value is reported with the variable that holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
pub use mss_backup_core::setting::parse_duration;

pub use mss_backup_core::setting::{ENV_PREFIX, var_name};

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
    pub home: PathBuf,
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub retention: usize,
    /// The TOML file that was read, if any.
    pub file: Option<PathBuf>,
    /// The environment file the nightly timer reads, if present.
    pub env_file: Option<PathBuf>,
    env_file_vars: Env,
    process_env: Env,
    figment: Figment,
}

/// One setting's value exactly as written, with words for messages.
#[derive(Debug, Clone)]
pub struct Raw {
    pub value: String,
    /// Where it came from: `MSS_BACKUP_DIR`, `dir in FILE`, `--backup-dir`.
    pub origin: String,
    /// The setting as the operator wrote it: `MSS_BACKUP_RETENTION=0`.
    pub what: String,
}

/// Command-line flags that set a key, for messages.
const FLAGS: [(&str, &str); 4] = [
    ("project_dir", "--project-dir"),
    ("data_dir", "--data-dir"),
    ("dir", "--backup-dir"),
    ("retention", "--retention"),
];

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

        let env_file_path = home.join(ENV_FILE);
        let env_file_text = match std::fs::read_to_string(&env_file_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // An env file that exists but cannot be read would silently
            // drop every setting the nightly run has: never guess.
            Err(e) => {
                return Err(ConfigError(format!(
                    "cannot read {}: {e} (run mss-backup as the user who ran `schedule install`, or fix the file's owner)",
                    env_file_path.display()
                )));
            }
        };
        let env_file_vars = match &env_file_text {
            Some(text) => parse_env_file(text).map_err(|line| {
                ConfigError(format!(
                    "{} line {line} is not KEY=VALUE (fix it, or run `mss-backup schedule install` again)",
                    env_file_path.display()
                ))
            })?,
            None => Env::new(),
        };
        let env_file = env_file_text.is_some().then_some(env_file_path);
        if let (Some(path), Some(text)) = (&env_file, &env_file_text) {
            check_env_names(&env_file_vars, Some((path, text)))?;
        }
        check_env_names(env, None)?;

        // One meaning everywhere: the nightly run gets MSS_BACKUP_CONFIG from
        // the env file through systemd, so a manual run takes it from there
        // too when the shell does not set it.
        let config_var = env
            .get(CONFIG_VAR)
            .map(|v| (v, CONFIG_VAR.to_string()))
            .or_else(|| {
                let path = env_file.as_deref()?;
                let value = env_file_vars.get(CONFIG_VAR)?;
                Some((value, format!("{CONFIG_VAR} in {}", path.display())))
            });
        let (file, named_by) = match (config_flag, config_var) {
            (Some(path), _) => (path.to_path_buf(), Some("--config".to_string())),
            (None, Some((path, origin))) => (PathBuf::from(path), Some(origin)),
            (None, None) => (home.join(DEFAULT_CONFIG_FILE), None),
        };
        let file = match named_by {
            _ if file.is_file() => Some(file),
            Some(origin) => {
                return Err(ConfigError(format!(
                    "Config file {} not found (create it, or fix {origin})",
                    file.display()
                )));
            }
            None => None,
        };

        let mut figment = Figment::new();
        if let Some(path) = &file {
            let toml = Toml::file_exact(path);
            let data = toml.data().map_err(|e| toml_error(path, &e))?;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for key in data.values().flat_map(|dict| dict.keys()) {
                check_file_key(key, path, &text)?;
            }
            figment = figment.merge(toml);
        }
        let figment = figment
            .merge(Layer::env_file(&env_file_vars, env_file.as_deref()))
            .merge(Layer::env(env, &env_file_vars))
            .merge(Layer::flags(flags));
        let mut settings = Settings {
            project_dir: PathBuf::new(),
            data_dir: PathBuf::new(),
            backup_dir: PathBuf::new(),
            retention: DEFAULT_RETENTION,
            home,
            file,
            env_file,
            env_file_vars,
            process_env: env.clone(),
            figment,
        };
        settings.project_dir = settings
            .path("project_dir")?
            .unwrap_or_else(|| settings.home.join("Projects/sound-machine"));
        settings.data_dir = settings
            .path("data_dir")?
            .unwrap_or_else(|| settings.project_dir.join("cloud-data"));
        settings.backup_dir = settings
            .path("dir")?
            .unwrap_or_else(|| settings.home.join("backups/mss"));
        settings.retention = settings.count("retention")?.unwrap_or(DEFAULT_RETENTION);
        Ok(settings)
    }

    /// A setting by key (`retention`, `usb_path`), exactly as written.
    pub fn raw(&self, key: &str) -> Result<Option<Raw>, ConfigError> {
        // A key read here but missing from the registry could be set by no
        // operator (loading refuses it as a typo) and would be missing from
        // the man page: every test run trips over it at once.
        debug_assert!(
            crate::registry::find(key).is_some(),
            "setting {key} is read but not in src/registry.rs"
        );
        let Ok(value) = self.figment.find_value(key) else {
            return Ok(None);
        };
        let var = var_name(key);
        let flag = FLAGS.iter().find(|(k, _)| *k == key).map(|(_, f)| *f);
        let metadata = self.figment.find_metadata(key);
        let name = metadata.map(|m| m.name.to_string());
        let file = metadata
            .and_then(|m| m.source.as_ref())
            .map(|s| s.to_string())
            .unwrap_or_else(|| "the config file".to_string());
        let origin = match name.as_deref() {
            Some(ENV_NAME) => var.clone(),
            Some(ENV_FILE_NAME) => format!("{var} in {file}"),
            Some(FLAGS_NAME) => flag.unwrap_or(key).to_string(),
            _ => format!("{key} in {file}"),
        };
        let value = scalar_string(&value).ok_or_else(|| {
            ConfigError(format!(
                "{origin} must be a single value, not a list or table"
            ))
        })?;
        let what = match name.as_deref() {
            Some(ENV_NAME) => format!("{var}={value}"),
            Some(ENV_FILE_NAME) => format!("{var}={value} in {file}"),
            Some(FLAGS_NAME) => format!("{} {value}", flag.unwrap_or(key)),
            _ => format!("{key} = {value:?} in {file}"),
        };
        Ok(Some(Raw {
            value,
            origin,
            what,
        }))
    }

    /// Where a setting's value came from, in words (`MSS_BACKUP_DIR`,
    /// `dir in /home/mss/.config/mss-backup/config.toml`, `--retention`,
    /// `default`).
    pub fn origin(&self, key: &str) -> String {
        match self.raw(key) {
            Ok(Some(raw)) => raw.origin,
            _ => "default".to_string(),
        }
    }

    /// Every key set in any layer (file, env file, environment, flags).
    pub fn keys(&self) -> Vec<String> {
        self.figment
            .data()
            .ok()
            .and_then(|mut profiles| profiles.remove(&Profile::Default))
            .map(|dict| dict.into_keys().collect())
            .unwrap_or_default()
    }

    /// The variables of the environment file, as it was read.
    pub fn env_file_vars(&self) -> &Env {
        &self.env_file_vars
    }

    /// A variable outside our prefix (`AWS_ACCESS_KEY_ID`, ...): the
    /// process environment first, then the environment file.
    pub fn outside_var(&self, name: &str) -> Option<String> {
        self.process_env
            .get(name)
            .or_else(|| self.env_file_vars.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    /// A non-empty string setting, exactly as written.
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key)? {
            Some(raw) if raw.value.is_empty() => Err(ConfigError(format!(
                "{} is empty (set a value, or unset it)",
                raw.origin
            ))),
            Some(raw) => Ok(Some(raw.value)),
            None => Ok(None),
        }
    }

    /// An absolute path setting (`~/` is expanded).
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        self.raw(key)?
            .map(|raw| absolute_path(&raw.value, &self.home, &raw.what))
            .transpose()
    }

    /// A count of backups to keep (at least 1).
    pub fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.raw(key)?
            .map(|raw| parse_retention(&raw.value, &raw.what))
            .transpose()
    }

    /// A yes/no setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.raw(key)?
            .map(|raw| match raw.value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError(format!(
                    "{} is not valid: use true or false",
                    raw.what
                ))),
            })
            .transpose()
    }
}

/// The TOML file read when neither `--config` nor `MSS_BACKUP_CONFIG`
/// names one, relative to HOME.
pub const DEFAULT_CONFIG_FILE: &str = ".config/mss-backup/config.toml";

/// A TOML syntax error as one line: the file, the line and column, and what
/// the parser expected. Figment would otherwise report it only when a value
/// is looked up, which is how a typo once dropped every setting.
fn toml_error(path: &Path, e: &figment::Error) -> ConfigError {
    let text = match &e.kind {
        figment::error::Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().unwrap_or("syntax error");
    let place = head.strip_prefix("TOML parse error at ").unwrap_or(head);
    let what: Vec<&str> = lines
        .filter(|l| !l.starts_with('|') && !l.contains(" | ") && !l.ends_with(" |"))
        .collect();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(": {}", what.join("; "))
    };
    ConfigError(format!(
        "Config file {} is not valid TOML at {place}{what} (fix that line, then run again)",
        path.display()
    ))
}

/// Why an unknown name is an error, and the fix.
fn unknown(name: &str, place: &str, suggestion: Option<String>, fix: &str) -> ConfigError {
    match suggestion {
        Some(known) => ConfigError(format!(
            "{name}{place} is not a setting: did you mean {known}? ({fix})"
        )),
        None => ConfigError(format!(
            "{name}{place} is not a setting ({fix}; `mss-backup man` lists every setting)"
        )),
    }
}

/// Every `MSS_BACKUP_*` name in the environment (or, with its path and
/// text, in the env file) must be a setting: a misspelled variable would
/// otherwise be ignored, and its setting silently left at its default.
fn check_env_names(vars: &Env, env_file: Option<(&Path, &str)>) -> Result<(), ConfigError> {
    for name in vars.keys() {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        if name == CONFIG_VAR || crate::registry::find(&key).is_some() {
            continue;
        }
        let suggestion = crate::registry::closest(&key).map(var_name);
        return Err(match env_file {
            Some((path, text)) => {
                let line = line_of(text, |l| l.trim_start().starts_with(&format!("{name}=")));
                unknown(
                    name,
                    &format!(" in {}{line}", path.display()),
                    suggestion,
                    "fix the name, or delete that line",
                )
            }
            None => unknown(
                name,
                "",
                suggestion,
                &format!("fix the name, or remove it: unset {name}"),
            ),
        });
    }
    Ok(())
}

/// A key of the TOML file must be a setting (see `check_env_names`).
fn check_file_key(key: &str, path: &Path, text: &str) -> Result<(), ConfigError> {
    let env_only = mss_backup_core::setting::ENV_ONLY.contains(&key);
    if crate::registry::find(key).is_some() && !env_only {
        return Ok(());
    }
    let line = line_of(text, |l| {
        let l = l
            .trim_start()
            .trim_start_matches('[')
            .trim_start_matches('"');
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '"', '.']))
    });
    if env_only {
        return Err(ConfigError(format!(
            "{key} in {}{line} is read from the environment only (delete that line; set {} instead)",
            path.display(),
            var_name(key)
        )));
    }
    Err(unknown(
        key,
        &format!(" in {}{line}", path.display()),
        crate::registry::closest(key).map(str::to_string),
        "fix the key, or delete that line; keys are flat, like retention = 14",
    ))
}

/// ` line N` for the first line that matches, or nothing.
fn line_of(text: &str, matches: impl Fn(&str) -> bool) -> String {
    text.lines()
        .position(matches)
        .map(|i| format!(" line {}", i + 1))
        .unwrap_or_default()
}

/// Default of `MSS_BACKUP_SHRINK_GUARD`: a backup holding under half of
/// the previous one's files or bytes is flagged.
pub const DEFAULT_SHRINK_GUARD: f64 = 0.5;

/// The shrink guard's fraction: a number above 0 and at most 1 (`0.5`), or
/// a percentage (`50%`); `off` (or `0`) switches it off (`None`).
pub fn parse_shrink_guard(value: &str, what: &str) -> Result<Option<f64>, ConfigError> {
    let value = value.trim().to_ascii_lowercase();
    if matches!(value.as_str(), "off" | "false" | "no" | "0") {
        return Ok(None);
    }
    let parsed = match value.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => value.parse::<f64>(),
    };
    match parsed {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(Some(f)),
        _ => Err(ConfigError(format!(
            "{what} is not valid: use a fraction of the previous backup like 0.5 (or 50%), or off (unset it for the default {DEFAULT_SHRINK_GUARD})"
        ))),
    }
}

/// `MSS_BACKUP_FULL_EVERY`: a duration (`7d`, `36h`), or `0` for a full
/// backup every time.
pub fn parse_full_every(value: &str, what: &str) -> Result<Duration, ConfigError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(value).ok_or_else(|| {
        ConfigError(format!(
            "{what} is not valid: use a duration like 7d or 36h, or 0 for a full backup every time (unset it for the default 7d)"
        ))
    })
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
    mss_backup_core::plugin::absolute_path(value, home)
        .map_err(|reason| ConfigError(format!("{what} is not valid: {reason}")))
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
const ENV_FILE_NAME: &str = "environment file";

/// The environment file `schedule install` writes for the systemd service,
/// relative to HOME. Manual runs read it too, so they back up to the same
/// targets as the nightly run.
pub const ENV_FILE: &str = ".config/mss-backup/env";

/// Parses `KEY=VALUE` lines (values bare, 'single' or "double" quoted);
/// `Err(line number)` for a malformed line.
pub fn parse_env_file(text: &str) -> Result<Env, usize> {
    let mut vars = Env::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(i + 1)?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(i + 1);
        }
        let value = unquote(value.trim()).ok_or(i + 1)?;
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

fn unquote(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return Some(inner.to_string());
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Some(value.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// One `KEY=VALUE` line that `parse_env_file` and systemd's
/// `EnvironmentFile=` both read back as exactly `value`; `None` for a value
/// with a line break, which neither can hold.
pub fn env_file_line(key: &str, value: &str) -> Option<String> {
    if value.contains(['\n', '\r']) {
        return None;
    }
    if !value.contains('\'') {
        return Some(format!("{key}='{value}'\n"));
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Some(format!("{key}=\"{escaped}\"\n"))
}
const FLAGS_NAME: &str = "command-line flag";

/// A layer of exact strings: `MSS_BACKUP_S3_BUCKET=0123` stays `"0123"`.
struct Layer {
    name: &'static str,
    source: Option<PathBuf>,
    values: Dict,
}

impl Layer {
    /// `MSS_BACKUP_*` lines of the environment file.
    fn env_file(vars: &Env, path: Option<&Path>) -> Self {
        let mut layer = Self::env(vars, &Env::new());
        layer.name = ENV_FILE_NAME;
        layer.source = path.map(Path::to_path_buf);
        layer
    }

    /// `MSS_BACKUP_*` variables; keys are the lower-cased rest of the name.
    /// A variable the env file sets to the same value is left to the env
    /// file's layer: under the nightly timer systemd exports every line of
    /// it, and `config` should say the value came from the file either way.
    fn env(env: &Env, env_file: &Env) -> Self {
        let values = env
            .iter()
            .filter(|(k, _)| k.as_str() != CONFIG_VAR)
            .filter(|(k, v)| env_file.get(*k) != Some(*v))
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                (!key.is_empty()).then(|| (key, Value::from(v.clone())))
            })
            .collect();
        Self {
            name: ENV_NAME,
            source: None,
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
            source: None,
            values,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.source {
            Some(path) => Metadata::from(self.name, figment::Source::File(path.clone())),
            None => Metadata::named(self.name),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env: Env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOME".into(), "/home/mss".into());
        Settings::load(&env, &Overrides::new(), None)
    }

    #[test]
    fn values_load_exactly_as_written() {
        let s = load(&[
            ("MSS_BACKUP_S3_BUCKET", "0123"),
            ("MSS_BACKUP_USB_LABEL", "true"),
            ("MSS_BACKUP_S3_SECRET_ACCESS_KEY", "1e10"),
        ])
        .unwrap();
        assert_eq!(s.string("s3_bucket").unwrap().as_deref(), Some("0123"));
        assert_eq!(s.string("usb_label").unwrap().as_deref(), Some("true"));
        assert_eq!(
            s.string("s3_secret_access_key").unwrap().as_deref(),
            Some("1e10")
        );
        assert_eq!(s.backup_dir, PathBuf::from("/home/mss/backups/mss"));
        assert_eq!(
            s.data_dir,
            PathBuf::from("/home/mss/Projects/sound-machine/cloud-data")
        );
    }

    #[test]
    fn env_file_lines_read_back_exactly() {
        for value in ["plain", "0123", "it's", "a\"b\\c$d`e", "", "sp ace"] {
            let line = env_file_line("MSS_BACKUP_X", value).unwrap();
            let parsed = parse_env_file(&line).unwrap();
            assert_eq!(
                parsed.get("MSS_BACKUP_X").map(String::as_str),
                Some(value),
                "{line}"
            );
        }
        assert_eq!(env_file_line("K", "two\nlines"), None);
        assert_eq!(parse_env_file("# comment\n\nNOT A LINE"), Err(3));
    }

    #[test]
    fn full_every_takes_durations_and_zero() {
        assert_eq!(
            parse_full_every("7d", "x").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_full_every("0", "x").unwrap(), Duration::ZERO);
        for bad in ["7", "weekly", "-1d", ""] {
            let err = parse_full_every(bad, "MSS_BACKUP_FULL_EVERY=v").unwrap_err();
            assert!(
                err.0
                    .starts_with("MSS_BACKUP_FULL_EVERY=v is not valid: use a duration"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn shrink_guard_takes_fractions_percentages_and_off() {
        assert_eq!(parse_shrink_guard("0.5", "x").unwrap(), Some(0.5));
        assert_eq!(parse_shrink_guard("25%", "x").unwrap(), Some(0.25));
        assert_eq!(parse_shrink_guard("off", "x").unwrap(), None);
        for bad in ["1.5", "-0.1", "half", ""] {
            let err = parse_shrink_guard(bad, "MSS_BACKUP_SHRINK_GUARD=v").unwrap_err();
            assert!(
                err.0.starts_with("MSS_BACKUP_SHRINK_GUARD=v is not valid"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = load(&[("MSS_BACKUP_USB_RETENTION", "0")])
            .unwrap()
            .count("usb_retention")
            .unwrap_err();
        assert!(
            err.0.starts_with("MSS_BACKUP_USB_RETENTION=0 is not valid"),
            "{err}"
        );
        let err = load(&[("MSS_BACKUP_S3_USE_INSTANCE_METADATA", "maybe")])
            .unwrap()
            .flag("s3_use_instance_metadata")
            .unwrap_err();
        assert!(
            err.0.contains("MSS_BACKUP_S3_USE_INSTANCE_METADATA=maybe"),
            "{err}"
        );
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "retention = 10\nstop_cmd = \"docker compose stop mss\n",
        )
        .unwrap();
        let mut env = Env::new();
        env.insert("HOME".into(), "/home/mss".into());
        let err = Settings::load(&env, &Overrides::new(), Some(&path)).unwrap_err();
        assert!(
            err.0.starts_with(&format!(
                "Config file {} is not valid TOML at line 2, column",
                path.display()
            )),
            "{err}"
        );
        assert_eq!(err.0.lines().count(), 1, "{err}");
    }

    #[test]
    fn unknown_names_are_refused_with_the_closest_setting() {
        let err = load(&[("MSS_BACKUP_USB_LABLE", "x")]).unwrap_err();
        assert!(
            err.0.starts_with(
                "MSS_BACKUP_USB_LABLE is not a setting: did you mean MSS_BACKUP_USB_LABEL?"
            ),
            "{err}"
        );
        assert!(load(&[("MSS_BACKUP_CONFIG_X", "x")]).is_err());
        assert!(load(&[("MSS_BACKUP_DEFLATE", "libdeflate")]).is_ok());
    }
}
