//! A night's backup costs what changed: the archive's gzip members follow
//! files, so an unchanged file is the same bytes in tonight's archive as in
//! last night's, and rsync sends about the change alone.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, Read};
use std::path::Path;

use crate::support::proxy::Proxy;
use crate::support::remote::Remote;
use crate::support::rgw::{rgw, s3_vars, unique_prefix};
use crate::support::*;

/// The archive's gzip members, as they are stored.
fn members(archive: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(archive).unwrap();
    let mut rest: &[u8] = &bytes;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let before = rest.len();
        let mut decoder = flate2::bufread::GzDecoder::new(&mut rest);
        std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
        drop(decoder);
        let used = before - rest.len();
        members.push(bytes[bytes.len() - before..bytes.len() - before + used].to_vec());
    }
    members
}

/// Adds an upload of `len` bytes that no other file shares, named to sort
/// in the middle of the others: before this layout, every member after it
/// would have changed.
fn new_upload(env: &TestEnv, len: usize) -> u64 {
    let uploads = env.data_dir.join("Sounds/uploads");
    let mut names: Vec<String> = fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let middle = &names[names.len() / 2];
    let name = format!("{}_night.wav", middle.trim_end_matches(".wav"));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 61) as u8
        })
        .collect();
    fs::write(uploads.join(name), &bytes).unwrap();
    bytes.len() as u64
}

#[test]
fn an_unchanged_file_is_the_same_gzip_members_in_the_next_backup() {
    let env = TestEnv::with_audio(24);
    env.backup_ok();
    let added = new_upload(&env, 3 << 20);
    env.backup_ok();
    let archives = env.archives();
    assert_eq!(archives.len(), 2, "{archives:?}");
    let old = members(&env.archive_dir().join(&archives[0]));
    let new = members(&env.archive_dir().join(&archives[1]));
    let old: HashSet<&Vec<u8>> = old.iter().collect();
    let total: usize = new.iter().map(Vec::len).sum();
    let fresh: usize = new.iter().filter(|m| !old.contains(m)).map(Vec::len).sum();
    // The new upload (it compresses to about half), the database, and the
    // small group around the upload's directory entry.
    let db = fs::metadata(env.db_path()).unwrap().len() as usize;
    assert!(
        fresh <= added as usize + db + (512 << 10),
        "{fresh} of {total} bytes of tonight's archive are new, for a {added}-byte upload"
    );
    assert!(
        fresh * 4 < total,
        "{fresh} of {total} bytes of tonight's archive are new"
    );
    // Still one standard gzip stream that GNU tar reads whole.
    let listed = tool("tar", &["-tzf", &archives[1]], &env.archive_dir());
    assert!(listed.contains("_night.wav"), "{listed}");
}

#[test]
fn rsync_sends_about_what_changed_overnight() {
    let mut env = TestEnv::with_audio(24);
    let remote = Remote::new(&mut env);
    env.backup_ok();
    new_upload(&env, 3 << 20);
    env.backup_ok();
    let archives = env.archives();
    let tonight = &archives[1];
    let size = fs::metadata(remote.dir.join(tonight)).unwrap().len();
    // rsync's own --stats figure, as the log keeps it.
    let log = fs::File::open(env.backup_dir.join("backup.log")).unwrap();
    let line = std::io::BufReader::new(log)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains(&format!("{tonight}: rsync sent")))
        .unwrap_or_else(|| panic!("no rsync figure for {tonight} in backup.log"));
    let literal: u64 = line
        .split("rsync sent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        literal * 4 < size,
        "rsync sent {literal} of {size} bytes: {line}"
    );
    // And what arrived is tonight's archive, byte for byte.
    let mut here = Vec::new();
    fs::File::open(env.archive_dir().join(tonight))
        .unwrap()
        .read_to_end(&mut here)
        .unwrap();
    assert_eq!(fs::read(remote.dir.join(tonight)).unwrap(), here);
}

#[test]
fn s3_builds_tonights_object_from_last_nights_and_sends_what_changed() {
    let rgw = rgw();
    let prefix = unique_prefix("night");
    // Where new bytes meet a copied run, opendal streams up to 5 MiB to
    // fill S3's smallest part: a data set of some size shows the rule.
    let mut env = TestEnv::with_audio(64);
    s3_vars(&rgw, &prefix, &mut env);
    // Every byte the client sends goes through the proxy and is counted.
    let proxy = Proxy::start(&rgw.endpoint);
    env.set("MSS_BACKUP_S3_ENDPOINT", &proxy.endpoint());
    env.backup_ok();
    let first_night = proxy.forwarded();
    new_upload(&env, 3 << 20);
    env.backup_ok();
    let tonight_sent = proxy.forwarded() - first_night;
    let archives = env.archives();
    let tonight = &archives[1];
    let local = env.archive_dir().join(tonight);
    let size = fs::metadata(&local).unwrap().len();
    let last_night = fs::metadata(env.archive_dir().join(&archives[0]))
        .unwrap()
        .len();
    assert!(
        first_night > last_night,
        "the first night sends it all: {first_night} of {last_night}"
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    println!("the client sent {tonight_sent} bytes for a {size}-byte archive");
    assert!(
        tonight_sent * 4 < size,
        "the client sent {tonight_sent} bytes for a {size}-byte archive: {log}"
    );
    assert!(
        log.contains(&format!("{tonight}: sent ")) && log.contains("the server copied the other"),
        "{log}"
    );
    // The object is tonight's archive, byte for byte, fetched by curl.
    let fetched = env.root.path().join("fetched.tar.gz");
    let sha = rgw.download(&format!("{prefix}{tonight}"), &fetched);
    assert_eq!(fs::read(&fetched).unwrap(), fs::read(&local).unwrap());
    let sidecar = fs::read_to_string(env.archive_dir().join(format!("{tonight}.sha256"))).unwrap();
    assert!(sidecar.starts_with(&sha), "{sidecar} vs {sha}");
    assert_eq!(
        rgw.header(&format!("{prefix}{tonight}"), "x-amz-meta-sha256"),
        sha
    );
    assert!(
        log.contains(&format!(
            "{}: sent in full: no earlier backup there",
            archives[0]
        )),
        "the first night says why it sent everything: {log}"
    );

    // A new VM, or last night's archive deleted here: nothing to compare
    // with, so the next night goes in full and says so, and is whole.
    fs::remove_file(&local).unwrap();
    fs::remove_file(env.archive_dir().join(format!("{tonight}.sha256"))).unwrap();
    let before = proxy.forwarded();
    env.backup_ok();
    let third = env.archives().pop().unwrap();
    let third_size = fs::metadata(env.archive_dir().join(&third)).unwrap().len();
    assert!(
        proxy.forwarded() - before > third_size,
        "with no basis here the whole archive is sent"
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(
        log.contains(&format!(
            "{third}: sent in full: {tonight} is no longer here"
        )),
        "{log}"
    );
    let fetched = env.root.path().join("third.tar.gz");
    rgw.download(&format!("{prefix}{third}"), &fetched);
    assert_eq!(
        fs::read(&fetched).unwrap(),
        fs::read(env.archive_dir().join(&third)).unwrap()
    );
}
