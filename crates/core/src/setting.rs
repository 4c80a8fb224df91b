//! The description of one setting, as plain data. Every crate that reads
//! settings declares its own in a `SETTINGS` table (the archiver here, each
//! target crate for its kind), and the binary joins those tables into the
//! one list that loading, `mss-backup config`, the man page, `schedule
//! install` and the check for misspelled names all read. A setting that is
//! not in a table cannot be set: a typo is an error, never a silent default.
//!
//! Core holds no values and knows no configuration format: a key here is the
//! lower-case name (`usb_path`); the variable is `MSS_BACKUP_` + upper case.

use std::time::Duration;

/// The prefix of every environment variable mss-backup reads.
pub const ENV_PREFIX: &str = "MSS_BACKUP_";

/// How `mss-backup config` and `schedule install` show a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// As written: paths, counts, names.
    Plain,
    /// Never shown: keys and passwords.
    Secret,
    /// A URL whose path is a secret (a Healthchecks ping URL): the host only.
    UrlPath,
    /// Public keys: only their number is shown.
    KeyCount,
}

/// One setting: its key, what it takes, its default in words, one line of
/// help, and how its value may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key: `usb_path`.
    pub key: &'static str,
    /// What it takes, for the reference: `PATH`, `N`, `true|false`.
    pub value: &'static str,
    /// The default in words (`7`, `off`, `the local retention`).
    pub default: &'static str,
    /// One line: what it does.
    pub help: &'static str,
    pub shown: Shown,
}

impl Setting {
    /// The environment variable: `usb_path` -> `MSS_BACKUP_USB_PATH`.
    pub fn var(&self) -> String {
        var_name(self.key)
    }

    pub fn is_secret(&self) -> bool {
        self.shown == Shown::Secret
    }
}

/// `26h`, `90m`, `2d`, `45s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

/// The environment variable for a key: `usb_path` -> `MSS_BACKUP_USB_PATH`.
pub fn var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The settings the archiver itself reads from the environment (developer
/// knobs that never come from the TOML file belong here too, so that
/// setting them is not taken for a typo).
pub const SETTINGS: &[Setting] = &[Setting {
    key: "deflate",
    value: "auto|isal|libdeflate",
    default: "auto",
    help: "environment only, for benchmarks: `libdeflate` compresses audio with libdeflate even where ISA-L is installed",
    shown: Shown::Plain,
}];

/// Settings read from the process environment only, never from the TOML
/// file: core reads them where the configuration never reaches (a key in
/// the file would be silently ignored, so loading refuses it).
pub const ENV_ONLY: &[&str] = &["deflate"];

/// The known key closest to `unknown` (a likely typo), if any is close.
/// Closeness is the edit distance, allowing about one slip per four letters.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    known
        .into_iter()
        .map(|key| (strsim::damerau_levenshtein(&unknown, key), key))
        .filter(|(distance, key)| *distance <= 1 + key.len().max(unknown.len()) / 4)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_setting_they_meant() {
        let known = ["retention", "usb_path", "usb_label", "s3_bucket", "dir"];
        assert_eq!(closest("retenton", known), Some("retention"));
        assert_eq!(closest("usb_pth", known), Some("usb_path"));
        assert_eq!(closest("S3_BUKET", known), Some("s3_bucket"));
        assert_eq!(closest("colour_scheme", known), None);
        assert_eq!(var_name("usb_path"), "MSS_BACKUP_USB_PATH");
    }
}
