//! Everything beside the uploads: export bundles (zips of uploads, which do
//! not shrink again), the WAL-mode SQLite database and the logs.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::audio::Wav;
use crate::{RATE, Rng, TRACKPACKS};

/// Appends little-endian integers given as (value, width in bytes).
pub(crate) fn put(buf: &mut Vec<u8>, fields: &[(u32, usize)]) {
    for &(value, width) in fields {
        buf.extend_from_slice(&value.to_le_bytes()[..width]);
    }
}

/// Three bundles of copies of the smallest uploads, all within `budget` bytes so
/// they stay a side dish however big the tree is.
pub(crate) fn export_bundles(wavs: &[Wav], mut budget: u64) -> Vec<Vec<&Wav>> {
    let mut smallest: Vec<&Wav> = wavs.iter().collect();
    smallest.sort_by_key(|w| w.size);
    let mut picked = Vec::new();
    for wav in smallest {
        if picked.len() == 9 || (wav.size > budget && !picked.is_empty()) {
            break;
        }
        budget = budget.saturating_sub(wav.size);
        picked.push(wav);
    }
    // Bundles wrap around the picks, so a tiny tree still gets full ones.
    (0..3)
        .map(|i| {
            (0..picked.len().min(3))
                .map(|k| picked[(i * 3 + k) % picked.len()])
                .collect()
        })
        .collect()
}

/// A trackpack export bundle: a zip of deflated entries, as zip tools make them, so
/// that like the real exports (gzip -6 ratio 1.00) it does not shrink again. Entries
/// are the smallest uploads, so holding one in memory keeps memory flat.
pub(crate) fn write_zip(path: &Path, uploads: &Path, entries: &[&Wav]) -> io::Result<u64> {
    // A fixed timestamp (2024-03-01 12:00) keeps the bundles byte-identical.
    const DOS_TIME: u32 = 12 << 11;
    const DOS_DATE: u32 = ((2024 - 1980) << 9) | (3 << 5) | 1;
    let too_big = |_| io::Error::other("sample zip beyond 4 GiB");
    let mut out = BufWriter::new(File::create(path)?);
    let (mut central, mut offset) = (Vec::new(), 0u64);
    for wav in entries {
        let name = format!("sounds/{}", wav.name);
        let size = u32::try_from(wav.size).map_err(too_big)?;
        let raw = fs::read(uploads.join(&wav.name))?;
        if raw.len() as u64 != wav.size {
            return Err(io::Error::other(format!(
                "{} changed while zipping",
                wav.name
            )));
        }
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflate.write_all(&raw)?;
        let packed = deflate.finish()?;
        let packed_size = u32::try_from(packed.len()).map_err(too_big)?;
        // The part shared by the local and the central directory header.
        let mut common = Vec::new();
        put(
            &mut common,
            &[
                (20, 2), // version needed: 2.0
                (0, 2),  // flags
                (8, 2),  // method: deflated
                (DOS_TIME, 2),
                (DOS_DATE, 2),
                (wav.crc, 4),
                (packed_size, 4),
                (size, 4),
                (name.len() as u32, 2),
                (0, 2), // extra field length
            ],
        );

        let mut local = b"PK\x03\x04".to_vec();
        local.extend_from_slice(&common);
        local.extend_from_slice(name.as_bytes());
        out.write_all(&local)?;
        out.write_all(&packed)?;

        central.extend_from_slice(b"PK\x01\x02");
        put(&mut central, &[(0x031e, 2)]); // made by Unix, spec 3.0: the mode counts
        central.extend_from_slice(&common);
        let at = u32::try_from(offset).map_err(too_big)?;
        put(
            &mut central,
            &[
                (0, 2), // comment length
                (0, 2), // disk number
                (0, 2), // internal attributes
                (0o100_644 << 16, 4),
                (at, 4),
            ],
        );
        central.extend_from_slice(name.as_bytes());
        offset += local.len() as u64 + packed.len() as u64;
    }
    out.write_all(&central)?;
    let mut end = b"PK\x05\x06".to_vec();
    let count = entries.len() as u32;
    put(
        &mut end,
        &[
            (0, 2), // this disk
            (0, 2), // disk of the central directory
            (count, 2),
            (count, 2), // in total
            (u32::try_from(central.len()).map_err(too_big)?, 4),
            (u32::try_from(offset).map_err(too_big)?, 4),
            (0, 2), // comment length
        ],
    );
    out.write_all(&end)?;
    out.flush()?;
    Ok(offset + central.len() as u64 + end.len() as u64)
}

const SCHEMA: &str = "
CREATE TABLE trackpacks(id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    created_at TEXT);
CREATE TABLE sounds(id INTEGER PRIMARY KEY, trackpack_id INTEGER REFERENCES trackpacks(id),
    file_name TEXT NOT NULL, duration_ms INTEGER, sample_rate INTEGER);
CREATE INDEX sounds_by_trackpack ON sounds(trackpack_id);
CREATE TABLE button_mappings(id INTEGER PRIMARY KEY, trackpack_id INTEGER, button INTEGER,
    sound_id INTEGER);
CREATE TABLE waveforms(sound_id INTEGER PRIMARY KEY REFERENCES sounds(id), peaks BLOB NOT NULL);
CREATE TABLE play_history(id INTEGER PRIMARY KEY, played_at TEXT NOT NULL, sound_id INTEGER,
    button INTEGER, source TEXT, detail TEXT);
";

/// Writes the database and returns its files: SQLite normally removes the WAL on close.
pub(crate) fn write_db(
    path: &Path,
    wavs: &[Wav],
    seed: u64,
    history_rows: u32,
) -> io::Result<Vec<PathBuf>> {
    let files = ["", "-wal", "-shm"].map(|suffix| {
        let mut name = OsString::from(path.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    });
    // A stale -wal or -shm next to a fresh database would be replayed into it.
    for file in &files {
        match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let sqlite = || -> rusqlite::Result<()> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "user_version", 3)?;
        let tx = conn.transaction()?;
        fill_db(&tx, wavs, &mut Rng::new(seed, 5), history_rows)?;
        tx.commit()?;
        conn.close().map_err(|(_, e)| e)
    };
    sqlite().map_err(io::Error::other)?;
    Ok(files.into_iter().filter(|f| f.exists()).collect())
}

fn fill_db(
    db: &Connection,
    wavs: &[Wav],
    rng: &mut Rng,
    history_rows: u32,
) -> rusqlite::Result<()> {
    db.execute_batch(SCHEMA)?;
    let mut insert = db.prepare("INSERT INTO trackpacks VALUES (?1, ?2, ?3, ?4)")?;
    for (i, (name, description)) in TRACKPACKS.iter().enumerate() {
        let created = stamp(i as u64 * 4 * 86_400 + rng.below(86_400));
        insert.execute(params![i + 1, name, description, created])?;
    }
    let mut insert = db.prepare("INSERT INTO sounds VALUES (?1, ?2, ?3, ?4, ?5)")?;
    let mut peaks = db.prepare("INSERT INTO waveforms VALUES (?1, ?2)")?;
    for (i, wav) in wavs.iter().enumerate() {
        let ms = wav.frames * 1000 / u64::from(RATE);
        insert.execute(params![i + 1, i % TRACKPACKS.len() + 1, wav.name, ms, RATE])?;
        // A drawn-not-measured waveform overview: a smooth walk, like real peak data.
        let mut level = 128i64;
        let blob: Vec<u8> = (0..256)
            .map(|_| {
                level = (level + rng.below(17) as i64 - 8).clamp(0, 255);
                level as u8
            })
            .collect();
        peaks.execute(params![i + 1, blob])?;
    }
    let mut insert = db.prepare(
        "INSERT INTO button_mappings (trackpack_id, button, sound_id) VALUES (?1, ?2, ?3)",
    )?;
    for pack in 0..TRACKPACKS.len() {
        // Buttons play sounds of their own trackpack, or of any if it has none.
        let (first, step) = if pack < wavs.len() {
            (pack, TRACKPACKS.len())
        } else {
            (0, 1)
        };
        for (button, sound) in (first..wavs.len()).step_by(step).take(8).enumerate() {
            insert.execute(params![pack + 1, button + 1, sound + 1])?;
        }
    }
    let mut insert = db.prepare("INSERT INTO play_history VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    let mut secs = 60 * 86_400;
    for id in 1..=history_rows {
        secs += rng.below(600);
        let (button, sound) = (rng.between(1, 8), rng.below(wavs.len() as u64) + 1);
        let sound = (!wavs.is_empty()).then_some(sound);
        let source = rng.pick(&["remote:living-room", "app:ios", "app:android", "web"]);
        let detail = format!(
            "volume={} fade_in_ms={} latency_ms={} result=ok",
            rng.between(20, 100),
            rng.pick(&[0, 250, 500, 1000]),
            rng.between(3, 40)
        );
        insert.execute(params![id, stamp(secs), sound, button, source, detail])?;
    }
    Ok(())
}

/// `secs` after 2024-01-01 00:00:00 as ISO 8601, wrapping within the (leap) year.
fn stamp(secs: u64) -> String {
    const DAYS: [u64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let (mut day, mut month) = (secs / 86_400 % 366, 0);
    while day >= DAYS[month] {
        day -= DAYS[month];
        month += 1;
    }
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("2024-{:02}-{:02}T{h:02}:{m:02}:{s:02}", month + 1, day + 1)
}

/// Log lines from `secs` on until `bytes` are reached; returns the text and the end time.
pub(crate) fn log_text(rng: &mut Rng, wavs: &[Wav], mut secs: u64, bytes: usize) -> (String, u64) {
    let mut text = String::with_capacity(bytes + 200);
    while text.len() < bytes {
        secs += rng.below(45);
        let sound = wavs
            .get(rng.below(wavs.len() as u64) as usize)
            .map_or("-", |w| &w.name);
        let (a, b, c) = (rng.between(1, 8), rng.between(1, 12), rng.between(1, 60));
        let line = match rng.below(10) {
            0..=3 => format!("INFO  mss::player: button {a} -> {sound} (trackpack {b})"),
            4 | 5 => format!("INFO  mss::http: GET /api/trackpacks/{b} 200 {c}ms"),
            6 => format!("DEBUG mss::audio: mixer queue {} frames", c * 64),
            7 => format!("INFO  mss::sync: cloud sync ok, {a} changes"),
            8 => format!("WARN  mss::bt: remote reconnecting (rssi -{} dBm)", 40 + c),
            _ => format!("INFO  mss::db: wal checkpoint, {} pages", a * b),
        };
        text += &format!("{}.{:03}Z {line}\n", stamp(secs), rng.below(1000));
    }
    (text, secs)
}

/// Export bundles of up to three uploads each, taken in turn from a stride
/// through the uploads, until `budget` bytes of zips are written; returns
/// their paths. Entries are deflated, so a zip is never bigger than its
/// uploads and the budget holds within a few headers.
pub(crate) fn write_zips_within(
    exports: &Path,
    uploads: &Path,
    wavs: &[Wav],
    budget: u64,
) -> io::Result<Vec<PathBuf>> {
    let (mut written, mut paths) = (0u64, Vec::new());
    // A stride coprime to most counts spreads the picks over all kinds.
    let order = (0..wavs.len()).map(|i| &wavs[(i * 7 + 3) % wavs.len()]);
    let mut bundle: Vec<&Wav> = Vec::new();
    let mut reserved = 0;
    for wav in order {
        if written + reserved + wav.size > budget {
            continue;
        }
        reserved += wav.size;
        bundle.push(wav);
        if bundle.len() == 3 {
            let path = exports.join(format!("trackpack_{:02}_export.zip", paths.len() + 1));
            written += write_zip(&path, uploads, &bundle)?;
            (reserved, bundle) = (0, Vec::new());
            paths.push(path);
        }
    }
    if !bundle.is_empty() {
        let path = exports.join(format!("trackpack_{:02}_export.zip", paths.len() + 1));
        write_zip(&path, uploads, &bundle)?;
        paths.push(path);
    }
    Ok(paths)
}
