//! How sizes and ages read on a terminal: `1.5 GiB`, `26h`. One place, so
//! `list`, `status`, `doctor` and `restore` say them the same way.

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

pub fn human_age(age: chrono::TimeDelta) -> String {
    let secs = age.num_seconds();
    match secs {
        s if s < 0 => "in the future (clock change?)".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// How a backup was made, in one line: why it was a full one, or what it
/// copied from the previous backup (the run's summary and `status`).
pub fn made_line(made: &mss_backup_core::reuse::Made) -> Option<String> {
    match (&made.full, &made.reused_from) {
        (Some(why), _) => Some(why.clone()),
        (None, Some(from)) => Some(format!(
            "{} unchanged files ({}) copied compressed from {from}",
            made.reused_files,
            human_bytes(made.reused_bytes)
        )),
        (None, None) => None,
    }
}
