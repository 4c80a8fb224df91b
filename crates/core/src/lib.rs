//! `mss-backup-core` is the archiver behind mss-backup, the backup tool of
//! MSS (the sound-machine server). It turns `cloud-data/` into one standard
//! tar.gz with checksums while MSS keeps running, verifies archives, applies
//! retention, holds the one-run-at-a-time lock and records each run's status.
//! It knows no concrete target, no configuration format and no async
//! runtime: targets plug in through [`target::Target`].

pub mod archive;
pub mod backup;
pub mod delta;
pub mod drill;
pub mod durable;
pub mod gz;
pub mod inflate;
pub mod interrupt;
pub mod inventory;
mod isal;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod name;
pub mod plugin;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod reuse;
pub mod seal;
pub mod setting;
pub mod snapshot;
pub mod status;
pub mod target;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;

pub use name::ArtifactName;
pub use retention::RetentionPolicy;
pub use setting::Setting;
pub use target::{Artifact, Exposure, Machine, Target, TargetError};
