//! Operations: monitoring pings to a real HTTP server on 127.0.0.1, the
//! Prometheus metrics file, progress bars only at a terminal (`script`
//! gives the run a real pty), `backup --json`, completions and the man page
//! checked by bash and man, and `doctor`.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::support::http::HttpStub;
use crate::support::terminal::on_a_terminal;
use crate::support::*;

fn log_text(env: &TestEnv) -> String {
    fs::read_to_string(env.backup_dir.join("backup.log")).unwrap()
}

#[test]
fn a_good_run_pings_start_then_success_and_never_shows_the_secret() {
    let mut env = TestEnv::new();
    let server = HttpStub::start(200, "/ping/0f3e-secret-uuid");
    env.set("MSS_BACKUP_PING_URL", &server.url);
    env.backup_ok();
    let requests = server.requests();
    let paths: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("GET", "/ping/0f3e-secret-uuid/start"),
            ("GET", "/ping/0f3e-secret-uuid")
        ]
    );
    let log = log_text(&env);
    assert!(log.contains("success ping sent"), "{log}");
    assert!(!log.contains("secret-uuid"), "the path is a secret: {log}");
    let config = stdout(&env.expect(&["config"], 0));
    assert!(!config.contains("secret-uuid"), "{config}");
    assert!(config.contains("/…"), "{config}");
}

#[test]
fn a_failed_run_pings_fail_with_the_error_in_the_body() {
    let mut env = TestEnv::new();
    let server = HttpStub::start(200, "/ping/0f3e-secret-uuid");
    env.set("MSS_BACKUP_PING_URL", &format!("{}/", server.url));
    fs::remove_file(env.db_path()).unwrap();
    env.expect(&[], 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].path, "/ping/0f3e-secret-uuid/start");
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].path, "/ping/0f3e-secret-uuid/fail");
    assert!(
        requests[1].body.contains("Database not found"),
        "the body is the run's log tail: {}",
        requests[1].body
    );
    assert!(
        requests[1].body.contains("backup started"),
        "{}",
        requests[1].body
    );
}

#[test]
fn a_lock_held_run_sends_no_ping() {
    let mut env = TestEnv::new();
    let server = HttpStub::start(200, "/ping/0f3e-secret-uuid");
    env.set("MSS_BACKUP_PING_URL", &server.url);
    fs::create_dir_all(&env.backup_dir).unwrap();
    let lock = hold_lock(&env);
    env.expect(&[], 75);
    drop(lock);
    assert_eq!(server.requests(), []);
}

#[test]
fn an_unreachable_or_failing_monitor_never_fails_the_backup() {
    let mut env = TestEnv::new();
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.set(
        "MSS_BACKUP_PING_URL",
        &format!("http://127.0.0.1:{port}/0f3e-secret-uuid"),
    );
    let out = env.backup_ok();
    assert_eq!(env.status()["status"], "success");
    let log = log_text(&env);
    assert!(
        log.contains(&format!(
            "the start ping to http://127.0.0.1:{port}/…/start failed"
        )),
        "{log}"
    );
    assert!(log.contains("the success ping to"), "{log}");
    assert!(!log.contains("secret-uuid"), "{log}");
    assert!(
        stderr(&out).contains("warning: the start ping"),
        "{}",
        stderr(&out)
    );

    // A server error is retried (three tries per ping), then logged.
    let server = HttpStub::start(500, "/ping/0f3e-secret-uuid");
    env.set("MSS_BACKUP_PING_URL", &server.url);
    env.backup_ok();
    let requests = server.requests();
    let starts = requests
        .iter()
        .filter(|r| r.path.ends_with("/start"))
        .count();
    assert_eq!(starts, 3, "{requests:?}");
    assert_eq!(requests.len(), 6, "{requests:?}");
    assert!(log_text(&env).contains("HTTP status 500"));

    // A 4xx (a wrong or deleted check) will not mend itself: one try per
    // ping, logged, and the backup still a success.
    let server = HttpStub::start(404, "/ping/0f3e-secret-uuid");
    env.set("MSS_BACKUP_PING_URL", &server.url);
    env.backup_ok();
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "start and success, once each: {requests:?}"
    );
    assert!(log_text(&env).contains("HTTP status 404"));

    env.set("MSS_BACKUP_PING_URL", "hc-ping.com/0f3e-secret-uuid");
    let out = env.expect(&[], 78);
    assert!(
        stderr(&out).contains("MSS_BACKUP_PING_URL"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("secret-uuid"), "{}", stderr(&out));
}

/// The exposition format, checked line by line: comments are HELP or TYPE,
/// every sample's metric has a TYPE, names and label syntax are valid and
/// values are numbers. Returns (name with labels, value) pairs.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut typed = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap();
            let name = words.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            if kind == "TYPE" {
                assert_eq!(words.next(), Some("gauge"), "{line}");
                typed.push(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with("{target=\"") && labels.ends_with("\"}"),
                "{line}"
            );
        }
        assert!(typed.iter().any(|t| t == name), "no TYPE for {name}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.push((series.to_string(), value));
    }
    samples
}

fn metric(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

#[test]
fn the_metrics_file_describes_the_last_run_for_node_exporter() {
    let mut env = TestEnv::new();
    let textfile_dir = env.root.path().join("node-exporter");
    fs::create_dir(&textfile_dir).unwrap();
    let path = textfile_dir.join("mss_backup.prom");
    env.set("MSS_BACKUP_METRICS_FILE", path.to_str().unwrap());
    env.backup_ok();
    assert_eq!(mode(&path), 0o644, "node_exporter's user must read it");
    let samples = parse_metrics(&fs::read_to_string(&path).unwrap());
    let status = env.status();
    assert_eq!(metric(&samples, "mss_backup_last_run_success"), Some(1.0));
    assert_eq!(
        metric(&samples, "mss_backup_last_archive_size_bytes"),
        status["size_bytes"].as_f64()
    );
    assert_eq!(
        metric(&samples, "mss_backup_last_archive_files"),
        status["files"].as_f64()
    );
    assert_eq!(
        metric(&samples, "mss_backup_target_success{target=\"local\"}"),
        Some(1.0)
    );
    let finished = chrono::DateTime::parse_from_rfc3339(status["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp() as f64;
    let success = metric(&samples, "mss_backup_last_success_timestamp_seconds");
    assert_eq!(success, Some(finished));
    assert!(metric(&samples, "mss_backup_last_run_duration_seconds").unwrap() > 0.0);
    // Only the file itself in the directory: no temp file left behind.
    assert_eq!(fs::read_dir(&textfile_dir).unwrap().count(), 1);

    // A failed run: status 0, the last success kept.
    fs::remove_file(env.db_path()).unwrap();
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains("Database not found"),
        "{}",
        stderr(&out)
    );
    let samples = parse_metrics(&fs::read_to_string(&path).unwrap());
    assert_eq!(metric(&samples, "mss_backup_last_run_success"), Some(0.0));
    assert_eq!(
        metric(&samples, "mss_backup_last_success_timestamp_seconds"),
        success
    );
    assert_eq!(metric(&samples, "mss_backup_last_archive_files"), Some(0.0));

    env.set(
        "MSS_BACKUP_METRICS_FILE",
        textfile_dir.join("mss_backup.txt").to_str().unwrap(),
    );
    let out = env.expect(&[], 78);
    assert!(stderr(&out).contains(".prom"), "{}", stderr(&out));
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_a_warning_only() {
    let mut env = TestEnv::new();
    let path = env.root.path().join("missing-dir/mss_backup.prom");
    env.set("MSS_BACKUP_METRICS_FILE", path.to_str().unwrap());
    let out = env.backup_ok();
    assert!(
        stderr(&out).contains("cannot write the metrics file"),
        "{}",
        stderr(&out)
    );
    assert!(log_text(&env).contains("cannot write the metrics file"));
}

#[test]
fn progress_bars_show_at_a_terminal_only() {
    let env = TestEnv::new();
    let at_a_terminal = |args: &str| {
        let (code, screen) = on_a_terminal(&env, args, "");
        assert_eq!(code, 0, "{args}: {screen}");
        screen
    };
    let screen = at_a_terminal("backup");
    for phase in ["Archiving", "Reading back"] {
        assert!(screen.contains(phase), "{phase} bar missing: {screen}");
    }
    assert!(screen.contains("MiB/"), "bytes done of the total: {screen}");
    assert!(screen.contains("Backup OK"), "{screen}");
    let screen = at_a_terminal("verify");
    assert!(screen.contains("Verifying"), "{screen}");

    let quiet = at_a_terminal("--quiet backup");
    assert!(!quiet.contains("Archiving"), "{quiet}");
    assert!(
        !quiet.contains("Backup OK"),
        "--quiet drops the summary: {quiet}"
    );

    let piped = env.backup_ok();
    let text = stderr(&piped) + &stdout(&piped);
    assert!(!text.contains("Archiving"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no escape codes in a pipe: {text:?}"
    );
    assert!(text.contains("Backup OK"), "{text}");
}

#[test]
fn backup_json_prints_the_status_document() {
    let env = TestEnv::new();
    let out = env.expect(&["backup", "--json"], 0);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, env.status());
    assert_eq!(printed["status"], "success");
    assert!(stderr(&out).contains("Backup OK"), "{}", stderr(&out));
}

#[test]
fn completions_and_the_man_page_are_generated_and_accepted() {
    let env = TestEnv::empty();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&env.expect(&["completions", shell], 0));
        for word in ["doctor", "restore", "schedule", "max-age"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    let bash = env.root.path().join("mss-backup.bash");
    fs::write(&bash, env.expect(&["completions", "bash"], 0).stdout).unwrap();
    tool("bash", &["-n", bash.to_str().unwrap()], env.root.path());

    let page = env.expect(&["man"], 0).stdout;
    assert!(page.starts_with(b".ie") || page.starts_with(b".TH"), "roff");
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man (Debian package man-db) must be installed");
    man.stdin.take().unwrap().write_all(&page).unwrap();
    let out = man.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "man or groff warned");
    let text = stdout(&out);
    for word in [
        "NAME",
        "SYNOPSIS",
        "EXIT STATUS",
        "MSS_BACKUP_PING_URL",
        "doctor",
    ] {
        assert!(
            text.contains(word),
            "{word} missing from the man page:\n{text}"
        );
    }
}

/// The variables a text names: `MSS_BACKUP_X` and the `AWS_*` ones.
fn variables(text: &str, prefixes: &[&str]) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for prefix in prefixes {
        for (at, _) in text.match_indices(prefix) {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > prefix.len() && !name.ends_with('_') {
                found.insert(name);
            }
        }
    }
    found
}

/// The man page and docs/configuration.md are both written from the
/// settings table in the code: the docs' table must be exactly what the
/// binary generates now, and the man page must name the same settings, so
/// a setting added to the code and not to the docs (or the reverse) fails.
#[test]
fn docs_configuration_holds_the_generated_settings_reference() {
    let env = TestEnv::new();
    let generated = stdout(&env.expect(&["config", "reference"], 0));
    let docs = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let in_docs = docs
        .split("<!-- settings reference: generated by `mss-backup config reference` -->\n")
        .nth(1)
        .and_then(|rest| rest.split("<!-- end of settings reference -->").next())
        .expect("docs/configuration.md holds the reference between its markers");
    assert_eq!(
        in_docs, generated,
        "docs/configuration.md is out of date: paste `mss-backup config reference` between its markers"
    );

    let page = stdout(&env.expect(&["man"], 0));
    let environment = page
        .split(".SH ENVIRONMENT")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .expect("an ENVIRONMENT section");
    let in_man = variables(&environment.replace("\\-", "-"), &["MSS_BACKUP_"]);
    let mut in_table = variables(&generated, &["MSS_BACKUP_"]);
    in_table.insert("MSS_BACKUP_CONFIG".to_string());
    assert!(in_man.len() >= 35, "{in_man:?}");
    assert_eq!(in_man, in_table, "man page (left) and docs table (right)");
    assert!(
        environment.contains("AWS_SECRET_ACCESS_KEY"),
        "{environment}"
    );
}

/// `config init`: every setting commented, 0600, never over an existing
/// file, and a line taken out of its comment is in force.
#[test]
fn config_init_writes_a_private_starting_file_once() {
    let env = TestEnv::new();
    let out = env.expect(&["config", "init"], 0);
    let path = env.home.join(".config/mss-backup/config.toml");
    assert!(stdout(&out).contains(&format!("Wrote {} (0600)", path.display())));
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    for key in [
        "# retention = 7",
        "# s3_bucket = ",
        "# usb_path = ",
        "# ping_url = ",
    ] {
        assert!(text.contains(key), "{key} in:\n{text}");
    }
    assert!(
        !text.contains("deflate"),
        "environment-only settings stay out"
    );
    // As written, it changes nothing: `config` loads it.
    env.expect(&["config"], 0);

    // A second init leaves the operator's file alone.
    let edited = text.replace("# retention = 7", "retention = 4");
    fs::write(&path, &edited).unwrap();
    let err = stderr(&env.expect(&["config", "init"], 78));
    assert!(err.contains("already exists and is left as it is"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), edited);
    let config = stdout(&env.expect(&["config"], 0));
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("retention") && l.contains(" 4 ")),
        "{config}"
    );
}

/// Holds the run lock the way a running backup does: an exclusive flock
/// on the lock file, with a pid and a start time in it.
fn hold_lock(env: &TestEnv) -> File {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(env.backup_dir.join(".lock"))
        .unwrap();
    file.lock().unwrap();
    (&file)
        .write_all(b"4242 2026-02-11T03:15:00+01:00\n")
        .unwrap();
    file
}

#[test]
fn doctor_passes_a_good_set_up_and_says_what_is_wrong_otherwise() {
    let env = TestEnv::new();
    env.backup_ok();
    env.expect(&["schedule", "install"], 0);
    let out = env.expect(&["doctor"], 0);
    let text = stdout(&out);
    for name in [
        "config",
        "env file",
        "data",
        "database",
        "free space",
        "lock",
        "timer",
        "last run",
    ] {
        assert!(doctor_line(&text, name).starts_with('✓'), "{name}: {text}");
    }
    assert!(doctor_line(&text, "database").contains("quick_check ok"));

    // Held lock: said so, and not a failure (a run is in progress).
    let lock = hold_lock(&env);
    let text = stdout(&env.expect(&["doctor"], 0));
    let line = doctor_line(&text, "lock");
    assert!(
        line.starts_with('!') && line.contains("held by pid 4242"),
        "{line}"
    );
    drop(lock);

    // An env file others can read fails the check.
    let env_file = env.home.join(".config/mss-backup/env");
    fs::set_permissions(&env_file, fs::Permissions::from_mode(0o644)).unwrap();
    let text = stdout(&env.expect(&["doctor"], 1));
    assert!(
        doctor_line(&text, "env file").contains("chmod 600"),
        "{text}"
    );
}

#[test]
fn doctor_fails_without_the_database_and_notes_a_missing_timer() {
    let env = TestEnv::new();
    fs::remove_file(env.db_path()).unwrap();
    let out = env.expect(&["doctor"], 1);
    let text = stdout(&out);
    let line = doctor_line(&text, "database");
    assert!(
        line.starts_with('✗') && line.contains("Database not found"),
        "{line}"
    );
    // Not installed yet is a note: the README runs doctor before it.
    let line = doctor_line(&text, "timer");
    assert!(
        line.starts_with('!') && line.contains("mss-backup schedule install"),
        "{line}"
    );
    assert!(doctor_line(&text, "lock").starts_with('✓'), "{text}");
    assert!(text.contains("1 check failed"), "{text}");

    let mut env = env;
    env.set("MSS_BACKUP_RETENTION", "0");
    let out = env.expect(&["doctor"], 78);
    assert!(doctor_line(&stdout(&out), "config").starts_with('✗'));
}
