//! `mss-backup usb init PATH LABEL`: labels a stick, so that only that
//! stick is ever filled or pruned (`MSS_BACKUP_USB_LABEL`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use mss_backup_target_usb::{Labelled, MARKER_FILE, UsbError};

use crate::config::ConfigError;

/// `mss-backup usb init PATH LABEL`.
pub fn init(path: &Path, label: &str) -> Result<ExitCode> {
    match mss_backup_target_usb::init(path, label) {
        Ok(Labelled::New) => println!(
            "Labelled the stick at {} as {label:?} ({}/{MARKER_FILE}). Use it with MSS_BACKUP_USB_PATH={} MSS_BACKUP_USB_LABEL={label}",
            path.display(),
            path.display(),
            path.display()
        ),
        Ok(Labelled::Already) => println!(
            "The stick at {} is already labelled {label:?}",
            path.display()
        ),
        Err(e @ UsbError::BadLabel { .. }) => return Err(ConfigError(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
