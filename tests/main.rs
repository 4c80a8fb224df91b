//! Integration tests: the real `mss-backup` binary, run the way an operator
//! or the nightly timer runs it, on fixture data generated here (a real
//! WAL-mode SQLite database, WAVs, zips, text). One test binary, one module
//! per area.

mod support;

mod backup;
mod claims;
mod cli;
mod conformance;
mod drills;
mod encrypt;
mod faults;
mod install;
mod integrity;
mod interrupt;
mod mistakes;
mod network;
mod night;
mod operator;
mod ops;
mod owner;
mod restore;
mod reuse;
mod rsync_stall;
mod s3;
mod s3_lock;
mod s3_requests;
mod s3_restore;
mod schedule;
mod targets;
