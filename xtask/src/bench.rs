//! `cargo xtask bench`: how fast and how lean a backup is, as ratios
//! against the standard tools on the same data in the same run. Commands
//! run interleaved (A B C A B C ...) so a busy machine slows all of them
//! alike; the median of each is reported. Wall time, CPU (user + system)
//! and peak RSS come from the kernel (`wait4`), sizes from the outputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{run, workspace_root};

struct Options {
    size_mib: u64,
    rounds: usize,
    /// The archive size against `tar -czf` per mix and seed: the mixes.
    mixes: Vec<String>,
    seeds: Vec<u64>,
    /// Size of each mix's data set.
    mix_mib: u64,
    /// Only the sizes by mix, no timed rounds.
    sizes_only: bool,
    /// Only the night scenario (see `night.rs`).
    night_only: bool,
    /// The night without the S3 gateway (a 4 GiB night outgrows its
    /// in-memory store).
    no_s3: bool,
}

/// The mixes and seeds measured by default: every named mix (see
/// `mss-backup-sample --list`), two seeds each, small enough to run beside
/// the timed rounds.
const MIXES: &[&str] = &[
    "calibrated",
    "unseen",
    "sleep",
    "studio",
    "voice",
    "exports",
];
const SEEDS: &[u64] = &[2026, 7];

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        size_mib: 400,
        rounds: 3,
        mixes: Vec::new(),
        seeds: Vec::new(),
        mix_mib: 100,
        sizes_only: false,
        night_only: false,
        no_s3: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--size-mib" => options.size_mib = value("--size-mib")?,
            "--rounds" => options.rounds = value("--rounds")?.max(1) as usize,
            "--mix-mib" => options.mix_mib = value("--mix-mib")?.max(1),
            "--seed" => options.seeds.push(value("--seed")?),
            "--mix" => options
                .mixes
                .push(it.next().ok_or("--mix takes a mix name")?.clone()),
            "--sizes-only" => options.sizes_only = true,
            "--night" => options.night_only = true,
            "--no-s3" => options.no_s3 = true,
            other => {
                return Err(format!(
                    "unknown bench option {other} (use --size-mib N, --rounds N, --mix NAME, --seed N, --mix-mib N, --sizes-only, --night, --no-s3)"
                ));
            }
        }
    }
    if options.mixes.is_empty() {
        options.mixes = MIXES.iter().map(|m| m.to_string()).collect();
    }
    if options.seeds.is_empty() {
        options.seeds = SEEDS.to_vec();
    }
    Ok(options)
}

/// One measured run of a command.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
    pub rss_kib: u64,
    pub size: u64,
}

/// A command under test and how to find its output.
struct Case {
    label: &'static str,
    /// Run untimed before each run (removing the last run's output).
    setup: String,
    shell: String,
    env: Vec<(String, String)>,
    /// The file the command writes (its size is reported); removed first.
    output: Option<PathBuf>,
    samples: Vec<Sample>,
}

pub fn bench(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    // The reference tools: GNU tar and gzip, ISA-L's igzip, pigz.
    crate::services::ensure_packages(&["tar", "gzip", "isal", "pigz"])?;
    run(
        "cargo",
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "mss-backup",
            "-p",
            "mss-backup-sample",
        ],
        &[],
    )?;
    let root = workspace_root();
    let target = target_dir(&root);
    let bin = target.join("release/mss-backup");
    let generator = target.join("release/mss-backup-sample");
    if options.sizes_only {
        let sizes = sizes_by_mix(&bin, &generator, &target, &options)?;
        report_sizes(&sizes, options.mix_mib);
        return Ok(());
    }
    let data = dataset(&generator, &target, "calibrated", options.size_mib, 2026)?;
    let work = target.join("bench-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    if options.night_only {
        return crate::night::night(&bin, &data, &work, options.rounds, !options.no_s3);
    }
    // Every command reads the data from the page cache, the first one of
    // the first round too: read it all once, untimed. (Through `cat`: GNU
    // tar skips reading files when it sees its archive is /dev/null.)
    let warm = format!("tar -cf - -C {} . | cat > /dev/null", data.display());
    let warmed = Command::new("sh").args(["-c", &warm]).status();
    if !warmed.is_ok_and(|s| s.success()) {
        return Err(format!("`{warm}` failed"));
    }
    let has = |tool: &str| which(tool);
    let d = data.display();
    let w = work.display();
    let b = bin.display();
    let ours_dir = work.join("ours");
    let ours_env = vec![
        ("HOME".to_string(), work.display().to_string()),
        (
            "MSS_BACKUP_DATA_DIR".to_string(),
            data.display().to_string(),
        ),
        ("MSS_BACKUP_DIR".to_string(), ours_dir.display().to_string()),
        ("MSS_BACKUP_RETENTION".to_string(), "1".to_string()),
    ];
    let mut backup = vec![Case {
        label: "mss-backup",
        setup: format!("rm -rf {w}/ours"),
        shell: format!("{b} 2>/dev/null"),
        env: ours_env.clone(),
        output: None,
        samples: Vec::new(),
    }];
    // Where ISA-L is installed mss-backup uses it for audio: the same
    // backup with libdeflate only shows what that is worth.
    let libdeflate_dir = work.join("ours-libdeflate");
    if has("igzip") {
        let mut env = ours_env.clone();
        env.retain(|(k, _)| k != "MSS_BACKUP_DIR");
        env.push((
            "MSS_BACKUP_DIR".to_string(),
            libdeflate_dir.display().to_string(),
        ));
        env.push(("MSS_BACKUP_DEFLATE".to_string(), "libdeflate".to_string()));
        backup.push(Case {
            label: "mss-backup, libdeflate only",
            setup: format!("rm -rf {w}/ours-libdeflate"),
            shell: format!("{b} 2>/dev/null"),
            env,
            output: None,
            samples: Vec::new(),
        });
    }
    // Offsite copies encrypted with age: the same backup, encrypted once.
    // MSS_BACKUP_ENCRYPT_LOCAL makes the local archive the encrypted one,
    // so no offsite target is needed, and the fsync of the encrypted file
    // is counted too (offsite-only encryption skips it): the dearer path.
    let age_dir = work.join("ours-age");
    let public = keygen(&bin, &work.join("bench-age-identity.txt"))?;
    let age_recipient = public.clone();
    let mut env = ours_env.clone();
    env.retain(|(k, _)| k != "MSS_BACKUP_DIR");
    env.extend([
        ("MSS_BACKUP_DIR".to_string(), age_dir.display().to_string()),
        ("MSS_BACKUP_ENCRYPT_RECIPIENTS".to_string(), public),
        ("MSS_BACKUP_ENCRYPT_LOCAL".to_string(), "true".to_string()),
    ]);
    backup.push(Case {
        label: AGE_CASE,
        setup: format!("rm -rf {w}/ours-age"),
        shell: format!("{b} 2>/dev/null"),
        env,
        output: None,
        samples: Vec::new(),
    });
    // What issue 9's "at most 10%" is about: offsite copies encrypted, the
    // encrypted file made beside the post-write check. As root, a bind
    // mount in the work dir serves as the USB stick, for a plain copy and
    // an encrypted one.
    let _stick = if is_root() {
        let stick = BindMount::new(&work.join("usb"))?;
        for (label, encrypt) in [(USB_CASE, false), (USB_AGE_CASE, true)] {
            let dir = work.join(if encrypt { "ours-usb-age" } else { "ours-usb" });
            let mut env = ours_env.clone();
            env.retain(|(k, _)| k != "MSS_BACKUP_DIR");
            env.extend([
                ("MSS_BACKUP_DIR".to_string(), dir.display().to_string()),
                (
                    "MSS_BACKUP_USB_PATH".to_string(),
                    stick.path.display().to_string(),
                ),
            ]);
            if encrypt {
                env.push((
                    "MSS_BACKUP_ENCRYPT_RECIPIENTS".to_string(),
                    age_recipient.clone(),
                ));
            }
            backup.push(Case {
                label,
                setup: format!(
                    "rm -rf {d} {s}/mss-backup",
                    d = dir.display(),
                    s = stick.path.display()
                ),
                shell: format!("{b} 2>/dev/null"),
                env,
                output: None,
                samples: Vec::new(),
            });
        }
        Some(stick)
    } else {
        eprintln!("xtask: not root, so no USB rows (they need a bind mount)");
        None
    };
    backup.push(Case {
        label: "tar -czf",
        setup: String::new(),
        shell: format!("tar -czf {w}/tar-czf.tar.gz -C {d} ."),
        env: Vec::new(),
        output: Some(work.join("tar-czf.tar.gz")),
        samples: Vec::new(),
    });
    if has("igzip") {
        backup.push(Case {
            label: "tar -cf - | igzip -2 -T 2",
            setup: String::new(),
            shell: format!("tar -cf - -C {d} . | igzip -2 -T 2 > {w}/igzip.tar.gz"),
            env: Vec::new(),
            output: Some(work.join("igzip.tar.gz")),
            samples: Vec::new(),
        });
    }
    if has("pigz") {
        backup.push(Case {
            label: "tar -I 'pigz -1'",
            setup: String::new(),
            shell: format!("tar -I 'pigz -1' -cf {w}/pigz.tar.gz -C {d} ."),
            env: Vec::new(),
            output: Some(work.join("pigz.tar.gz")),
            samples: Vec::new(),
        });
    }
    eprintln!(
        "xtask: {} rounds on {} MiB of audio ({})",
        options.rounds,
        options.size_mib,
        data.display()
    );
    measure_rounds(&mut backup, options.rounds)?;
    let latest = |dir: &Path| {
        fs::read_link(dir.join("archive/mss-backup-latest.tar.gz"))
            .map(|name| dir.join("archive").join(name))
            .map_err(|e| format!("mss-backup made no archive in {}: {e}", dir.display()))
    };
    let archive = latest(&ours_dir)?;
    let age_archive = fs::read_link(age_dir.join("archive/mss-backup-latest.tar.gz.age"))
        .map(|name| age_dir.join("archive").join(name))
        .map_err(|e| format!("mss-backup made no encrypted archive: {e}"))?;
    for case in &mut backup {
        let archive = match case.label {
            "mss-backup" => latest(&ours_dir)?,
            "mss-backup, libdeflate only" => latest(&libdeflate_dir)?,
            AGE_CASE => age_archive.clone(),
            _ => continue,
        };
        let size = fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
        for s in &mut case.samples {
            s.size = size;
        }
    }

    let a = archive.display();
    let mut read = vec![Case {
        label: "mss-backup verify",
        setup: String::new(),
        shell: format!("{b} verify {a} >/dev/null"),
        env: ours_env.clone(),
        output: None,
        samples: Vec::new(),
    }];
    read.push(Case {
        label: "tar -xzOf (gzip)",
        setup: String::new(),
        shell: format!("tar -xzOf {a} >/dev/null"),
        env: Vec::new(),
        output: None,
        samples: Vec::new(),
    });
    if has("igzip") {
        read.push(Case {
            label: "tar -I igzip -xOf",
            setup: String::new(),
            shell: format!("tar -I igzip -xOf {a} >/dev/null"),
            env: Vec::new(),
            output: None,
            samples: Vec::new(),
        });
    }
    let restore_dir = work.join("restore");
    read.push(Case {
        label: "tar -xzf ... data/sound_machine.db",
        setup: format!("rm -rf {r} && mkdir -p {r}", r = restore_dir.display()),
        shell: format!(
            "tar -xzf {a} -C {r} data/sound_machine.db",
            r = restore_dir.display()
        ),
        env: Vec::new(),
        output: None,
        samples: Vec::new(),
    });
    measure_rounds(&mut read, options.rounds)?;

    println!();
    println!(
        "data: {} ({} MiB of audio, {} bytes in all)",
        data.display(),
        options.size_mib,
        dir_bytes(&data)
    );
    report("backup", &backup);
    report("read back", &read);
    crate::night::night(&bin, &data, &work, options.rounds, !options.no_s3)?;
    let sizes = sizes_by_mix(&bin, &generator, &target, &options)?;
    report_sizes(&sizes, options.mix_mib);
    Ok(())
}

/// The sizes of one mix and seed's archives.
struct MixSizes {
    mix: String,
    seed: u64,
    data: u64,
    ours: u64,
    /// CPU seconds of the backup: its instructions are what the routing
    /// costs, but time on a loaded machine is only a hint.
    ours_cpu: f64,
    tar_czf: u64,
    igzip: Option<u64>,
}

/// Backs up each mix and seed once with mss-backup, `tar -czf` and (where
/// installed) igzip -2: sizes are deterministic, so one run each tells.
fn sizes_by_mix(
    bin: &Path,
    generator: &Path,
    target: &Path,
    options: &Options,
) -> Result<Vec<MixSizes>, String> {
    let work = target.join("bench-work/mixes");
    let mut all = Vec::new();
    for mix in &options.mixes {
        for &seed in &options.seeds {
            let data = dataset(generator, target, mix, options.mix_mib, seed)?;
            let _ = fs::remove_dir_all(&work);
            fs::create_dir_all(&work)
                .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
            let (d, w) = (data.display(), work.display());
            let env = vec![
                ("HOME".to_string(), w.to_string()),
                ("MSS_BACKUP_DATA_DIR".to_string(), d.to_string()),
                ("MSS_BACKUP_DIR".to_string(), format!("{w}/ours")),
                ("MSS_BACKUP_RETENTION".to_string(), "1".to_string()),
            ];
            let ours = measure(&format!("{} 2>/dev/null", bin.display()), &env)?;
            let archive = fs::read_link(work.join("ours/archive/mss-backup-latest.tar.gz"))
                .map(|name| work.join("ours/archive").join(name))
                .map_err(|e| format!("mss-backup made no archive of {mix} seed {seed}: {e}"))?;
            let size = |path: &Path| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            measure(&format!("tar -czf {w}/tar-czf.tar.gz -C {d} ."), &[])?;
            let igzip = if which("igzip") {
                measure(
                    &format!("tar -cf - -C {d} . | igzip -2 -T 2 > {w}/igzip.tar.gz"),
                    &[],
                )?;
                Some(size(&work.join("igzip.tar.gz")))
            } else {
                None
            };
            let sizes = MixSizes {
                mix: mix.clone(),
                seed,
                data: dir_bytes(&data),
                ours: size(&archive),
                ours_cpu: ours.cpu,
                tar_czf: size(&work.join("tar-czf.tar.gz")),
                igzip,
            };
            eprintln!(
                "xtask: {mix} seed {seed}: mss-backup / tar -czf = {:.4}",
                sizes.ours as f64 / sizes.tar_czf.max(1) as f64
            );
            all.push(sizes);
        }
    }
    let _ = fs::remove_dir_all(&work);
    Ok(all)
}

fn report_sizes(sizes: &[MixSizes], mix_mib: u64) {
    println!();
    println!("archive size by mix ({mix_mib} MiB each; goal: mss-backup / tar -czf <= 1.02)");
    println!(
        "{:<12} {:>6} {:>13} {:>13} {:>13} {:>13} {:>9} {:>9} {:>8}",
        "mix",
        "seed",
        "data bytes",
        "mss-backup",
        "tar -czf",
        "igzip -2",
        "ours/czf",
        "igzip/czf",
        "cpu s"
    );
    for s in sizes {
        let czf = s.tar_czf.max(1) as f64;
        let (igzip, igzip_ratio) = match s.igzip {
            Some(b) => (b.to_string(), format!("{:.4}", b as f64 / czf)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<12} {:>6} {:>13} {:>13} {:>13} {:>13} {:>9.4} {:>9} {:>8.2}",
            s.mix,
            s.seed,
            s.data,
            s.ours,
            s.tar_czf,
            igzip,
            s.ours as f64 / czf,
            igzip_ratio,
            s.ours_cpu
        );
    }
}

fn measure_rounds(cases: &mut [Case], rounds: usize) -> Result<(), String> {
    for round in 0..rounds {
        for case in cases.iter_mut() {
            if let Some(out) = &case.output {
                let _ = fs::remove_file(out);
            }
            // Outside the timing, like the removal above: with ext4's
            // `discard`, freeing the last run's archive costs the next
            // fsync, which only mss-backup makes.
            if !case.setup.is_empty() {
                let done = Command::new("sh").args(["-c", &case.setup]).status();
                if !done.is_ok_and(|s| s.success()) {
                    return Err(format!("`{}` failed", case.setup));
                }
            }
            let mut sample = measure(&case.shell, &case.env)?;
            if let Some(out) = &case.output {
                sample.size = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            }
            eprintln!(
                "xtask: round {} {:<36} {:>7.2}s wall {:>7.2}s cpu {:>7} KiB",
                round + 1,
                case.label,
                sample.wall,
                sample.cpu,
                sample.rss_kib
            );
            case.samples.push(sample);
        }
    }
    Ok(())
}

pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn report(title: &str, cases: &[Case]) {
    let Some(ours) = cases.first() else { return };
    let base_wall = median(ours.samples.iter().map(|s| s.wall));
    let base_size = median(ours.samples.iter().map(|s| s.size as f64));
    println!();
    println!("{title} (median of {} rounds)", ours.samples.len());
    println!(
        "{:<36} {:>9} {:>9} {:>10} {:>13} {:>11} {:>11}",
        "command",
        "wall s",
        "cpu s",
        "peak RSS",
        "output bytes",
        "ours/this wall",
        "ours/this size"
    );
    for case in cases {
        let wall = median(case.samples.iter().map(|s| s.wall));
        let cpu = median(case.samples.iter().map(|s| s.cpu));
        let rss = median(case.samples.iter().map(|s| s.rss_kib as f64));
        let size = median(case.samples.iter().map(|s| s.size as f64));
        let size_ratio = if size > 0.0 && base_size > 0.0 {
            format!("{:.3}", base_size / size)
        } else {
            "-".to_string()
        };
        println!(
            "{:<36} {:>9.2} {:>9.2} {:>7.1} MiB {:>13} {:>11.3} {:>11}",
            case.label,
            wall,
            cpu,
            rss / 1024.0,
            size as u64,
            base_wall / wall.max(1e-9),
            size_ratio
        );
    }
}

/// Runs `sh -c shell` and reads its wall time, CPU time and peak RSS
/// (the largest of the shell and the processes it waited for).
pub fn measure(shell: &str, env: &[(String, String)]) -> Result<Sample, String> {
    // Every command starts with nothing left to write, untimed: the outputs
    // of the ones before (hundreds of MB each, which tar never fsyncs) would
    // otherwise be flushed during this one's fsyncs and counted against it.
    let _ = Command::new("sync").status();
    let started = Instant::now();
    let child = Command::new("sh")
        .args(["-c", shell])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unwaited child; status and usage are valid
    // pointers. std's Child is never waited on afterwards.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    if rc != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("`{shell}` failed (status {status})"));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_kib: usage.ru_maxrss as u64,
        size: 0,
    })
}

/// The label of the encrypted backup's case.
const AGE_CASE: &str = "mss-backup + age (encrypted)";
const USB_CASE: &str = "mss-backup, copy to USB";
const USB_AGE_CASE: &str = "mss-backup + age, copy to USB";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A directory bind-mounted on itself (so it is a mount point, as the USB
/// target requires), unmounted on drop.
struct BindMount {
    path: PathBuf,
}

impl BindMount {
    fn new(path: &Path) -> Result<Self, String> {
        fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let p = path.display().to_string();
        run("mount", &["--bind", &p, &p], &[])?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// `mss-backup keygen PATH` (replacing an older one): the public key.
fn keygen(bin: &Path, path: &Path) -> Result<String, String> {
    let _ = fs::remove_file(path);
    let out = Command::new(bin)
        .arg("keygen")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !public.starts_with("age1") {
        return Err(format!("mss-backup keygen failed: {}", out.status));
    }
    Ok(public)
}

/// Cargo's target dir: `CARGO_TARGET_DIR` if set (so a second checkout or
/// engineer can bench without waiting for the first one's build lock),
/// else `target/` in the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Bumped whenever `crates/sample` generates different bytes, so a cached data
/// set of an older generator is never measured by mistake.
const DATA_VERSION: u32 = 3;

/// The generated data set of `mix` at `seed`, cached under
/// `<target>/bench-data`. The calibrated mix at seed 2026 keeps the path it
/// always had.
fn dataset(
    generator: &Path,
    target: &Path,
    mix: &str,
    size_mib: u64,
    seed: u64,
) -> Result<PathBuf, String> {
    let name = if mix == "calibrated" && seed == 2026 {
        format!("{size_mib}mib-v{DATA_VERSION}")
    } else {
        format!("{mix}-{size_mib}mib-seed{seed}-v{DATA_VERSION}")
    };
    let dir = target.join("bench-data").join(name);
    let data = dir.join("cloud-data");
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(data);
    }
    let _ = fs::remove_dir_all(&dir);
    eprintln!(
        "xtask: generating a {size_mib} MiB data set ({mix}, seed {seed}) in {}",
        data.display()
    );
    let status = Command::new(generator)
        .arg(&data)
        .args(["--mix", mix, "--size-mib", &size_mib.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", generator.display()))?;
    if !status.success() {
        return Err(format!("generating the {mix} data set failed"));
    }
    fs::write(&marker, b"").map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(data)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
