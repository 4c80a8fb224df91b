//! The size goal of issue 18 on data the routing was not tuned on: an
//! archive is at most 1.02 × what `tar -czf` makes of the same tree, on
//! small trees of two generated mixes far from the calibrated one (drum
//! loops and one-shots, where ISA-L falls behind; and issue 18's own mix).
//! Sizes are deterministic (fixed seeds, libdeflate pinned by Cargo.lock,
//! Debian's ISA-L and gzip), so the bound is checked exactly, not timed.

use std::fs;
use std::path::Path;
use std::process::Command;

use mss_backup_core::archive::{self, ArchiveWriter, Section};
use mss_backup_core::gz::GzOptions;
use mss_backup_sample::{Mix, generate_mix};

/// What our archive writer makes of `dir`, in bytes: every listed entry,
/// and the database as the backup adds it (as a file of its own).
fn ours(dir: &Path) -> u64 {
    let listing = archive::list(dir).unwrap();
    let mut writer = ArchiveWriter::new(Vec::new(), GzOptions::default());
    let db = dir.join("data/sound_machine.db");
    let meta = fs::metadata(&db).unwrap();
    writer
        .add_file(Section::Database, "data/sound_machine.db", &db, &meta)
        .unwrap();
    for entry in &listing.entries {
        writer.add_entry(entry).unwrap();
    }
    let (out, _) = writer.finish().unwrap();
    out.len() as u64
}

fn tar_czf(dir: &Path, out: &Path) -> u64 {
    let status = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar -czf");
    fs::metadata(out).unwrap().len()
}

fn check(mix: &Mix, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cloud-data");
    generate_mix(&dir, mix, 24, seed).unwrap();
    let (ours, theirs) = (ours(&dir), tar_czf(&dir, &tmp.path().join("czf.tar.gz")));
    let ratio = ours as f64 / theirs as f64;
    eprintln!("{} seed {seed}: {ours} / {theirs} = {ratio:.4}", mix.name);
    assert!(
        ratio <= 1.02,
        "{} seed {seed}: {ours} bytes against tar -czf's {theirs}: {ratio:.4}",
        mix.name
    );
}

#[test]
fn size_goal_holds_on_a_drum_heavy_mix() {
    check(&Mix::STUDIO, 1);
}

#[test]
fn size_goal_holds_on_issue_18s_mix() {
    check(&Mix::UNSEEN, 7);
}
