//! The fault matrix (issue 8): a backup tool is judged on its worst night,
//! so these tests break things on purpose and check that nothing is lost.
//! `kill -9` of a backup at random offsets and at named points, `kill -9`
//! of a restore at each step, a disk that fills mid-backup, unreadable and
//! vanishing files, a database written thousands of times a second, a
//! shrinking `cloud-data/`, two backups in one second and a clock set
//! back, hostile and damaged archives (a property test), and the security
//! rules (modes under a permissive umask, no secret in any output, another
//! user's backup dir, a symlinked `archive/`).
//!
//! Named kill points are hit exactly with `strace`'s fault injection
//! (`-e inject=SYSCALL:signal=SIGKILL:when=N`, optionally `-P PATH`), so the
//! process dies at the entry of a known system call, not after a guessed
//! delay. Random kill points use delays drawn from a seeded generator; the
//! seed is printed and `MSS_FAULTS_SEED` replays it. Fixed clocks use
//! Debian's `faketime`; another user is `nobody` through `setpriv`. These
//! tests run as root (mounts, chown), as CI does.
//!
//! `cargo xtask faults` sets `MSS_FAULTS_LONG=1`: more kill points, 20
//! backups under the database writer, more property cases.

mod clock;
mod database;
mod disk;
mod hostile;
mod kill_backup;
mod kill_restore;
mod security;
mod shrink;
