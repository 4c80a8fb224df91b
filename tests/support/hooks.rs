//! The MSS service as a restore sees it: stop and start commands that
//! record their calls (and can end as the test says), and a health
//! endpoint.

use std::fs;
use std::path::{Path, PathBuf};

use super::TestEnv;
use super::http::HttpStub;

/// The fake MSS: stop and start scripts that append to `calls`, and a
/// health endpoint on 127.0.0.1 answering `status`.
pub struct Service {
    calls: PathBuf,
    health: HttpStub,
}

impl Service {
    pub fn install(env: &mut TestEnv, status: u16) -> Self {
        Self::install_with(env, status, "exit 0", "exit 0")
    }

    /// `stop_tail` and `start_tail` end the scripts (after the call is
    /// recorded), e.g. `exit 3`.
    pub fn install_with(env: &mut TestEnv, status: u16, stop_tail: &str, start_tail: &str) -> Self {
        let dir = env.root.path().join("service");
        fs::create_dir_all(&dir).unwrap();
        let calls = dir.join("calls");
        for (name, tail) in [("stop", stop_tail), ("start", start_tail)] {
            let script = dir.join(format!("{name}.sh"));
            fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"{name} $(pwd)\" >> '{}'\n{tail}\n",
                    calls.display()
                ),
            )
            .unwrap();
            env.set(
                &format!("MSS_BACKUP_{}_CMD", name.to_uppercase()),
                &format!("sh '{}'", script.display()),
            );
        }
        let health = HttpStub::start(status, "/api/trackpacks");
        env.set("MSS_BACKUP_HEALTH_URL", &health.url);
        Self { calls, health }
    }

    /// The recorded calls, as `stop`/`start` (checked to run in `dir`).
    pub fn calls(&self, dir: &Path) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((what, cwd)) if Path::new(cwd) == dir => what.to_string(),
                _ => line.to_string(),
            })
            .collect()
    }

    /// The health checks MSS got, as `METHOD PATH`.
    pub fn hits(&self) -> Vec<String> {
        self.health
            .requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}
