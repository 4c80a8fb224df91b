//! `cargo xtask bench --night`: what a night costs. A full backup, then a
//! night's change (one new upload with content of its own, its name sorted
//! into the middle of the others), then the nightly backup, against what
//! `restic backup` needs for the same change and what rsync sends of
//! tonight's archive against last night's (`--fuzzy`, rsync's own
//! `--stats`), and what reaches S3 (the real gateway on 127.0.0.1, bytes
//! counted by a proxy in front of it) when tonight's archive is copied
//! there after last night's. Each round starts from a fresh copy of the
//! data.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bench::{Sample, measure, median};

/// One round's figures.
struct Night {
    full: Sample,
    nightly: Sample,
    restic: Option<Sample>,
    archive: u64,
    literal: u64,
    /// Bytes the client sent to S3 for tonight's archive.
    s3_sent: Option<u64>,
}

pub fn night(
    bin: &Path,
    data: &Path,
    work: &Path,
    rounds: usize,
    with_s3: bool,
) -> Result<(), String> {
    let has_restic = crate::services::ensure_packages(&["restic", "rsync"])
        .map(|()| true)
        .unwrap_or_else(|e| {
            eprintln!("xtask: no restic ({e}): the night runs without it");
            false
        });
    // S3: the real gateway of the tests, behind a proxy that counts what
    // the client sends; without Ceph the night runs without S3.
    let rgw = with_s3
        .then(|| {
            crate::services::Rgw::start(work)
                .map_err(|e| eprintln!("xtask: no S3 gateway ({e}): the night runs without S3"))
                .ok()
        })
        .flatten();
    let s3 = rgw.as_ref().and_then(|rgw| {
        use crate::services::Service;
        let vars: std::collections::BTreeMap<String, String> = rgw.env().into_iter().collect();
        let proxy = CountingProxy::start(vars.get("MSS_TEST_S3_ENDPOINT")?).ok()?;
        let mut env = Vec::new();
        for (ours, theirs) in [
            ("BUCKET", "BUCKET"),
            ("REGION", "REGION"),
            ("ACCESS_KEY_ID", "ACCESS_KEY_ID"),
            ("SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY"),
        ] {
            env.push((
                format!("MSS_BACKUP_S3_{ours}"),
                vars.get(&format!("MSS_TEST_S3_{theirs}"))?.clone(),
            ));
        }
        env.push(("MSS_BACKUP_S3_ENDPOINT".into(), proxy.endpoint.clone()));
        Some((proxy, env))
    });
    let mut nights = Vec::new();
    for round in 0..rounds {
        let root = work.join("night");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let copy = root.join("cloud-data");
        sh(&format!("cp -a {} {}", data.display(), copy.display()))?;
        let backups = root.join("backups");
        let env = vec![
            ("HOME".to_string(), root.display().to_string()),
            (
                "MSS_BACKUP_DATA_DIR".to_string(),
                copy.display().to_string(),
            ),
            ("MSS_BACKUP_DIR".to_string(), backups.display().to_string()),
        ];
        let repo = root.join("restic");
        let restic_env = vec![
            ("RESTIC_REPOSITORY".to_string(), repo.display().to_string()),
            ("RESTIC_PASSWORD".to_string(), "bench".to_string()),
            (
                "RESTIC_CACHE_DIR".to_string(),
                root.join("restic-cache").display().to_string(),
            ),
        ];
        let b = bin.display();
        let full = measure(&format!("{b} 2>/dev/null"), &env)?;
        if has_restic {
            sh_env("restic init -q && restic backup -q .", &restic_env, &copy)?;
        }
        new_upload(&copy, 6 << 20, round as u64)?;
        // Names are by the second: tonight's must not be last night's.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let nightly = measure(&format!("{b} 2>/dev/null"), &env)?;
        let restic = if has_restic {
            Some(measure(
                &format!("cd {} && restic backup -q .", copy.display()),
                &restic_env,
            )?)
        } else {
            None
        };
        let archives = archives(&backups.join("archive"))?;
        let [last_night, tonight] = archives.as_slice() else {
            return Err(format!("expected two backups, found {archives:?}"));
        };
        let remote = root.join("remote");
        fs::create_dir_all(&remote).map_err(|e| e.to_string())?;
        fs::copy(
            last_night,
            remote.join(last_night.file_name().unwrap_or_default()),
        )
        .map_err(|e| e.to_string())?;
        let stats = output(&format!(
            "rsync --fuzzy --no-whole-file --stats {} {}/",
            tonight.display(),
            remote.display()
        ))?;
        let literal = figure(&stats, "Literal data:")
            .ok_or_else(|| format!("no literal data figure in rsync's stats: {stats}"))?;
        let archive = fs::metadata(tonight).map(|m| m.len()).unwrap_or(0);
        // Last night's archive goes to S3 first (untimed), then tonight's,
        // built there from last night's: what that sends is counted.
        let s3_sent = match &s3 {
            Some((proxy, vars)) => {
                let mut env = env.clone();
                env.extend(vars.iter().cloned());
                env.push((
                    "MSS_BACKUP_S3_PREFIX".into(),
                    format!("bench-night-{round}-{}/", std::process::id()),
                ));
                let copy_to_s3 = |archive: &Path| {
                    sh_env(
                        &format!("{b} copy s3 {} >/dev/null 2>&1", archive.display()),
                        &env,
                        &root,
                    )
                };
                copy_to_s3(last_night)?;
                let before = proxy.sent();
                copy_to_s3(tonight)?;
                Some(proxy.sent() - before)
            }
            None => None,
        };
        eprintln!(
            "xtask: night {}: full {:.2}s, nightly {:.2}s{}, rsync literal {literal} of {archive}{}",
            round + 1,
            full.wall,
            nightly.wall,
            restic.map_or(String::new(), |r| format!(", restic {:.2}s", r.wall)),
            s3_sent.map_or(String::new(), |s| format!(", S3 sent {s}"))
        );
        nights.push(Night {
            full,
            nightly,
            restic,
            archive,
            literal,
            s3_sent,
        });
        let _ = fs::remove_dir_all(&root);
    }
    report(&nights);
    if let Some(mut rgw) = rgw {
        use crate::services::Service;
        rgw.stop();
    }
    Ok(())
}

/// A TCP proxy on 127.0.0.1 that counts the bytes clients send through it.
struct CountingProxy {
    endpoint: String,
    sent: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(upstream: &str) -> Result<Self, String> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || pipe(client_in, server_out, Some(&counter)));
                std::thread::spawn(move || pipe(server, client, None));
            }
        });
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            sent,
        })
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either closes, counting into `count`.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(count) = count {
            count.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn report(nights: &[Night]) {
    let m = |f: &dyn Fn(&Night) -> f64| median(nights.iter().map(f));
    let nightly = m(&|n| n.nightly.wall);
    println!();
    println!(
        "a night: one new 6 MiB upload sorted mid-way (median of {} rounds)",
        nights.len()
    );
    println!("{:<44} {:>9}", "figure", "value");
    println!("{:<44} {:>8.2}s", "full backup, wall", m(&|n| n.full.wall));
    println!("{:<44} {:>8.2}s", "nightly backup, wall", nightly);
    println!(
        "{:<44} {:>8.2}s",
        "nightly backup, CPU",
        m(&|n| n.nightly.cpu)
    );
    println!(
        "{:<44} {:>9.3}",
        "nightly / full (wall)",
        m(&|n| n.nightly.wall / n.full.wall.max(1e-9))
    );
    if nights.iter().all(|n| n.restic.is_some()) {
        let restic = m(&|n| n.restic.map_or(0.0, |r| r.wall));
        println!(
            "{:<44} {:>8.2}s",
            "restic backup of the change, wall", restic
        );
        println!(
            "{:<44} {:>9.3}",
            "nightly / restic (wall)",
            m(&|n| n.nightly.wall / n.restic.map_or(1.0, |r| r.wall).max(1e-9))
        );
    }
    println!(
        "{:<44} {:>8.1}%",
        "rsync literal data / archive",
        m(&|n| 100.0 * n.literal as f64 / n.archive.max(1) as f64)
    );
    println!(
        "{:<44} {:>6.1} MiB",
        "nightly backup, peak RSS",
        m(&|n| n.nightly.rss_kib as f64) / 1024.0
    );
    if nights.iter().all(|n| n.s3_sent.is_some()) {
        println!(
            "{:<44} {:>8.1}%",
            "bytes sent to S3 / archive",
            m(&|n| 100.0 * n.s3_sent.unwrap_or(0) as f64 / n.archive.max(1) as f64)
        );
    }
}

/// A WAV-like file of `len` bytes no other file shares, named to sort
/// into the middle of the uploads.
fn new_upload(data: &Path, len: usize, seed: u64) -> Result<(), String> {
    let uploads = data.join("Sounds/uploads");
    let mut names: Vec<String> = fs::read_dir(&uploads)
        .map_err(|e| format!("cannot read {}: {e}", uploads.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let middle = names.get(names.len() / 2).cloned().unwrap_or_default();
    let name = format!("{}_night.wav", middle.trim_end_matches(".wav"));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Quiet audio: small values, so it compresses like a recording.
            (state >> 59) as u8
        })
        .collect();
    fs::write(uploads.join(name), bytes).map_err(|e| e.to_string())
}

fn archives(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".tar.gz") && !n.contains("latest"))
        })
        .collect();
    names.sort();
    Ok(names)
}

fn figure(stats: &str, label: &str) -> Option<u64> {
    stats.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(label)?;
        rest.trim().split(' ').next()?.replace(',', "").parse().ok()
    })
}

fn sh(script: &str) -> Result<(), String> {
    sh_env(script, &[], Path::new("."))
}

fn sh_env(script: &str, env: &[(String, String)], dir: &Path) -> Result<(), String> {
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{script}` failed"))
    }
}

fn output(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
