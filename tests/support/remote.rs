//! The rsync target's far side: a directory of its own on the test sshd
//! that `cargo xtask test` starts, and the variables that point at it.

use std::fs;
use std::path::PathBuf;

use super::*;

/// A directory of its own on the test sshd's side, and the variables that
/// point the rsync target at it.
pub struct Remote {
    /// The remote directory, seen through the local filesystem.
    pub dir: PathBuf,
}

impl Remote {
    pub fn new(env: &mut TestEnv) -> Self {
        let dir = PathBuf::from(service_var("MSS_TEST_SSH_ROOT")).join(unique("t"));
        let dest = format!(
            "{}@{}:{}",
            service_var("MSS_TEST_SSH_USER"),
            service_var("MSS_TEST_SSH_HOST"),
            dir.display()
        );
        env.set("MSS_BACKUP_RSYNC_DEST", &dest);
        env.set(
            "MSS_BACKUP_RSYNC_RSH",
            &rsh("ssh", &service_var("MSS_TEST_SSH_KEY")),
        );
        Self { dir }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A remote shell command for the test sshd with `key`.
pub fn rsh(program: &str, key: &str) -> String {
    rsh_to_port(program, key, &service_var("MSS_TEST_SSH_PORT"))
}

pub fn rsh_to_port(program: &str, key: &str, port: &str) -> String {
    let hosts = match std::env::var("MSS_TEST_SSH_KNOWN_HOSTS") {
        Ok(file) if !file.is_empty() => format!("-o UserKnownHostsFile={file}"),
        _ => "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null".to_string(),
    };
    format!("{program} -p {port} -i {key} -o IdentitiesOnly=yes {hosts}")
}
