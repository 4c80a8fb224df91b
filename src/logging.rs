//! `backup.log`: the full, timestamped history of every run, appended
//! through tracing. The terminal gets a short summary from the commands
//! instead, so nothing here writes to stderr.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use mss_backup_core::status::LOG_FILE;
use tracing_subscriber::filter::LevelFilter;

/// Appends INFO and above to `<backup dir>/backup.log` (0600).
pub fn to_backup_log(backup_dir: &Path) -> std::io::Result<()> {
    mss_backup_core::durable::create_private_dir(backup_dir)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(backup_dir.join(LOG_FILE))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .with_max_level(LevelFilter::INFO)
        .try_init();
    Ok(())
}
