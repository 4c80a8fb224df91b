//! The one list of settings: the binary's own below, then the archiver's
//! and each target crate's tables, in that order. Loading checks every key
//! against it (so a misspelled variable or TOML key is an error that names
//! the setting it resembles), and `config`, `schedule install` and the man
//! page are written from it, so a setting cannot exist in the code and be
//! missing from what the operator reads.

use mss_backup_core::setting::{self, Setting, Shown};

use crate::targets::KINDS;

/// The settings the binary reads itself: directories, retention, the
/// restore hooks, monitoring, encryption and the timer.
const GENERAL: &[Setting] = &[
    Setting {
        key: "project_dir",
        value: "DIR",
        default: "~/Projects/sound-machine",
        help: "the MSS project (for `docker compose ps` and git in the inventory) (flag `--project-dir`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "data_dir",
        value: "DIR",
        default: "<project>/cloud-data",
        help: "what is backed up (flag `--data-dir`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "dir",
        value: "DIR",
        default: "~/backups/mss",
        help: "archive dir, status, log, lock (flag `--backup-dir`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "retention",
        value: "N",
        default: "7",
        help: "backups kept (at least 1) (flag `--retention`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "shrink_guard",
        value: "FRACTION|off",
        default: "0.5",
        help: "a backup with under this fraction of the previous one's files or bytes is a warning, and the previous backup is kept beyond retention until a backup holds as much again; `0.25` or `25%`, or `off`",
        shown: Shown::Plain,
    },
    Setting {
        key: "full_every",
        value: "DURATION|0",
        default: "7d",
        help: "a backup reads and compresses every file again when the last full one is this old (`0`: every backup); in between, files unchanged since the previous backup are copied from it still compressed. `mss-backup --full` asks for one now",
        shown: Shown::Plain,
    },
    Setting {
        key: "allow_other_owner",
        value: "true|false",
        default: "false",
        help: "`true`: run even though the backup dir belongs to another user (otherwise refused, exit 78)",
        shown: Shown::Plain,
    },
    Setting {
        key: "stop_cmd",
        value: "COMMAND",
        default: "docker compose down",
        help: "restore: stops MSS (`sh -c`, in the project dir)",
        shown: Shown::Plain,
    },
    Setting {
        key: "start_cmd",
        value: "COMMAND",
        default: "docker compose up -d",
        help: "restore: starts MSS again",
        shown: Shown::Plain,
    },
    Setting {
        key: "health_url",
        value: "URL",
        default: "http://localhost:8080/api/trackpacks",
        help: "restore: must answer 2xx once MSS is back (`http://` only)",
        shown: Shown::Plain,
    },
    Setting {
        key: "health_timeout",
        value: "SECONDS",
        default: "120",
        help: "restore: seconds (or `90s`, `3m`) MSS gets to answer",
        shown: Shown::Plain,
    },
    Setting {
        key: "encrypt_recipients",
        value: "KEYS",
        default: "off",
        help: "comma-separated `age1…` (from `mss-backup keygen` or `age-keygen`) or `ssh-ed25519 …`/`ssh-rsa …` public keys: every offsite copy is encrypted with age (see [Encryption](encryption.md))",
        shown: Shown::KeyCount,
    },
    Setting {
        key: "encrypt_recipients_file",
        value: "FILE",
        default: "off",
        help: "the same from a recipients file in age's format (one key per line, `#` comments); not together with the above",
        shown: Shown::Plain,
    },
    Setting {
        key: "encrypt_local",
        value: "true|false",
        default: "false",
        help: "`true`: the local backups are encrypted too (`NAME.tar.gz.age`, link `mss-backup-latest.tar.gz.age`)",
        shown: Shown::Plain,
    },
    Setting {
        key: "identity_file",
        value: "FILE",
        default: "none",
        help: "verify/restore: the age identity file (or unencrypted ssh private key) that opens encrypted backups",
        shown: Shown::Plain,
    },
    Setting {
        key: "random_delay",
        value: "DURATION",
        default: "none",
        help: "`schedule install`: the timer's `RandomizedDelaySec=` (e.g. `15m`), so many VMs do not all start at 03:15",
        shown: Shown::Plain,
    },
    Setting {
        key: "network_wait",
        value: "DURATION",
        default: "2m",
        help: "how long the offsite copies wait for the network when a host does not resolve or has no route (the catch-up run at boot may start before the network is up); `0s` fails at once",
        shown: Shown::Plain,
    },
    Setting {
        key: "ping_url",
        value: "URL",
        default: "off",
        help: "Healthchecks-style URL, e.g. `https://hc-ping.com/UUID`: pinged at the start, on success and on failure (see [Monitoring](operations.md#monitoring)); its path is treated as a secret",
        shown: Shown::UrlPath,
    },
    Setting {
        key: "metrics_file",
        value: "FILE.prom",
        default: "off",
        help: "a `.prom` file for node_exporter's textfile collector, e.g. `/var/lib/prometheus/node-exporter/mss_backup.prom`",
        shown: Shown::Plain,
    },
];

/// Every setting, in the order the reference lists them.
pub fn settings() -> impl Iterator<Item = &'static Setting> {
    [GENERAL, setting::SETTINGS]
        .into_iter()
        .chain(KINDS.iter().map(|kind| kind.settings))
        .flatten()
}

/// The setting with this key.
pub fn find(key: &str) -> Option<&'static Setting> {
    settings().find(|s| s.key == key)
}

/// The known key closest to a misspelled one.
pub fn closest(key: &str) -> Option<&'static str> {
    setting::closest(key, settings().map(|s| s.key))
}

/// Variables outside our prefix that some target reads (`AWS_*`), which the
/// nightly run needs as much as the settings.
pub fn outside_vars() -> impl Iterator<Item = &'static str> {
    KINDS
        .iter()
        .flat_map(|kind| kind.outside_vars.iter().copied())
}

/// A value as `config` and `schedule install` may print it: secrets hidden,
/// a ping URL's secret path left out, public keys counted. `name` is a key
/// (`s3_bucket`) or a variable (`MSS_BACKUP_S3_BUCKET`, `AWS_PROFILE`).
pub fn shown_value(name: &str, value: &str) -> String {
    let key = name
        .strip_prefix(setting::ENV_PREFIX)
        .map_or_else(|| name.to_string(), str::to_ascii_lowercase);
    let shown = match find(&key) {
        Some(setting) => setting.shown,
        None if KINDS.iter().any(|k| k.outside_secrets.contains(&name)) => Shown::Secret,
        None => Shown::Plain,
    };
    match shown {
        Shown::Plain => value.to_string(),
        Shown::Secret => "(set, hidden)".to_string(),
        Shown::UrlPath => crate::monitor::redact(value),
        Shown::KeyCount => {
            let n = value.split(',').filter(|k| !k.trim().is_empty()).count();
            format!("({n} key{} set, hidden)", if n == 1 { "" } else { "s" })
        }
    }
}
