//! Progress bars at a terminal: core reports bytes through its `Progress`
//! trait, and this module draws them with indicatif on stderr: what is
//! being done, bytes done of the total, the rate and the time left. Only
//! when stderr is a terminal and `--quiet` was not given: the nightly timer,
//! pipes and cron get nothing (no escape codes in the journal or a mail).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mss_backup_core::progress::{NoProgress, Phase, Progress};

/// `--quiet`, a global flag: set once when the command line is parsed.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Records `--quiet` for the whole process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Bars on stderr if it is a terminal and not `--quiet`; else nothing.
pub fn for_stderr() -> Box<dyn Progress> {
    if !quiet() && std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(NoProgress)
    }
}

/// One bar per phase, each left on screen when done as a record of it.
#[derive(Default)]
pub struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(current) = self.current.lock()
            && let Some(bar) = current.as_ref()
        {
            f(bar);
        }
    }
}

const TEMPLATE: &str =
    "{prefix:>22} [{bar:28}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}  ETA {eta}";

impl Progress for Bars {
    fn start(&self, phase: Phase<'_>, total_bytes: u64) {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(shorten(&phase.to_string(), 22));
        // Redrawn while a target that reports no bytes is copying, so the
        // rate and elapsed time still move.
        bar.enable_steady_tick(Duration::from_millis(250));
        if let Ok(mut current) = self.current.lock() {
            if let Some(old) = current.take() {
                old.finish();
            }
            *current = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|bar| bar.inc(bytes));
    }

    fn finish(&self) {
        if let Ok(mut current) = self.current.lock()
            && let Some(bar) = current.take()
        {
            bar.finish();
        }
    }
}

/// Long target names (`s3://bucket/prefix/`) cut to fit the column.
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_phase_names_are_cut_to_the_column() {
        assert_eq!(shorten("Archiving", 22), "Archiving");
        let cut = shorten("Copying to s3://a-very-long-bucket-name/mss/", 22);
        assert_eq!(cut.chars().count(), 22);
        assert!(cut.ends_with('…'));
    }
}
