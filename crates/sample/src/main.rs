//! `mss-backup-sample DIR [--mix NAME] [--size-mib N] [--seed N]`: writes a
//! sample `cloud-data/` tree of a named mix, for the benchmark
//! (`cargo xtask bench`) and for measuring by hand. `--list` names the mixes.

use std::path::PathBuf;
use std::process::ExitCode;

use mss_backup_sample::{MIXES, Mix, generate_mix};

const USAGE: &str = "usage: mss-backup-sample DIR [--mix NAME] [--size-mib N] [--seed N] | --list";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mss-backup-sample: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (mut dir, mut mix, mut size_mib, mut seed) = (None, &Mix::CALIBRATED, 8, 1);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(format!("{name} takes a number ({USAGE})"))
        };
        match arg.as_str() {
            "--size-mib" => size_mib = number("--size-mib")?,
            "--seed" => seed = number("--seed")?,
            "--mix" => {
                let name = it.next().unwrap_or_default();
                mix = Mix::named(&name).ok_or_else(|| {
                    let names: Vec<&str> = MIXES.iter().map(|m| m.name).collect();
                    format!("no mix named {name:?}: use one of {}", names.join(", "))
                })?;
            }
            "--list" => {
                for mix in MIXES {
                    println!("{:<12} {}", mix.name, mix.about);
                }
                return Ok(());
            }
            other if !other.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other:?} ({USAGE})")),
        }
    }
    let dir = dir.ok_or(USAGE)?;
    let summary = generate_mix(&dir, mix, size_mib, seed)
        .map_err(|e| format!("cannot generate sample data in {}: {e}", dir.display()))?;
    println!(
        "{} files, {} bytes, {} WAVs ({} mix, seed {seed}) in {}",
        summary.files,
        summary.bytes,
        summary.wavs,
        mix.name,
        dir.display()
    );
    Ok(())
}
