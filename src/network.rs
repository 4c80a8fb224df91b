//! Waiting for the network before the offsite copies. The nightly timer
//! has `Persistent=true`, so after the VM was off the catch-up run starts
//! at boot, often before the network is up; a user unit cannot wait for
//! `network-online.target` (the user manager has no such unit). So the
//! backup is made locally as usual, and an offsite target whose preflight
//! fails because a name does not resolve or there is no route is asked
//! again, for at most `MSS_BACKUP_NETWORK_WAIT` (default 2m) shared by all
//! targets of the run; `backup.log` says what was waited for and how long.
//! Any other failure (a wrong key, a refused connection, a stick that is
//! not there) is reported at once, as before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mss_backup_core::{Target, TargetError};

/// How long a run waits for the network when nothing says otherwise:
/// enough for a VM's DHCP and DNS at boot, short enough to still finish.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// How often a waiting target is asked again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What an error says when the network is not up yet: a name that does
/// not resolve, or no route. Words from ssh (rsync) and from getaddrinfo
/// and the kernel (S3 through hyper).
const NETWORK_DOWN: [&str; 8] = [
    "Could not resolve hostname",
    "Temporary failure in name resolution",
    "Name or service not known",
    "No address associated with hostname",
    "failed to lookup address",
    "dns error",
    "No route to host",
    "Network is unreachable",
];

/// Whether `error` says the network is not up (rather than the target
/// refusing, or being misconfigured).
pub fn is_network_down(error: &TargetError) -> bool {
    let text = error.to_string();
    NETWORK_DOWN.iter().any(|words| text.contains(words))
}

/// One deadline for every target of a run: set when the first one finds
/// the network down, so two targets do not wait twice.
struct Budget {
    wait: Duration,
    deadline: Mutex<Option<Instant>>,
}

impl Budget {
    fn deadline(&self) -> Instant {
        let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *deadline.get_or_insert_with(|| Instant::now() + self.wait)
    }
}

/// The nightly run's way of asking an offsite target whether it can take
/// the backup ([`mss_backup_core::backup::Hooks::preflight`]): its
/// preflight, asked again while the network is down, for at most `wait`
/// shared by every target of the run.
pub struct NetworkWait {
    budget: Budget,
}

impl NetworkWait {
    pub fn new(wait: Duration) -> Self {
        Self {
            budget: Budget {
                wait,
                deadline: Mutex::new(None),
            },
        }
    }

    pub fn preflight(&self, target: &dyn Target) -> Result<(), TargetError> {
        let first = match target.preflight() {
            Err(e) if is_network_down(&e) && !self.budget.wait.is_zero() => e,
            other => return other,
        };
        let name = target.name();
        let clock = Instant::now();
        let deadline = self.budget.deadline();
        tracing::warn!(
            "offsite {name}: the network is not up ({first}); waiting up to {} s for it",
            deadline.saturating_duration_since(clock).as_secs()
        );
        let mut last = first;
        // Ctrl-C or `systemctl stop` ends the wait at once: the run then
        // reports the interruption (see mss_backup_core::interrupt).
        while Instant::now() < deadline && mss_backup_core::interrupt::received().is_none() {
            std::thread::sleep(RETRY_EVERY.min(deadline.saturating_duration_since(Instant::now())));
            match target.preflight() {
                Err(e) if is_network_down(&e) => last = e,
                other => {
                    tracing::info!(
                        "offsite {name}: waited {} s for the network; it is up",
                        clock.elapsed().as_secs()
                    );
                    return other;
                }
            }
        }
        tracing::error!(
            "offsite {name}: waited {} s for the network; still down",
            clock.elapsed().as_secs()
        );
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(reason: &str) -> TargetError {
        TargetError::Unavailable {
            target: "s3://bucket/mss/".to_string(),
            reason: reason.to_string(),
        }
    }

    #[test]
    fn tells_a_network_that_is_not_up_from_a_target_that_refuses() {
        for down in [
            "cannot find host nas (ssh: Could not resolve hostname nas: Temporary failure in name resolution)",
            "cannot reach s3.example.com (dns error: failed to lookup address information: Name or service not known)",
            "cannot reach nas (connect to host nas port 22: Network is unreachable); check the network",
        ] {
            assert!(is_network_down(&unavailable(down)), "{down}");
        }
        for refused in [
            "S3 denied access (AccessDenied): check that the key may read, write and delete",
            "cannot connect to nas: connection refused (Connection refused)",
            "USB target /media/stick is not mounted",
        ] {
            assert!(!is_network_down(&unavailable(refused)), "{refused}");
        }
    }
}
