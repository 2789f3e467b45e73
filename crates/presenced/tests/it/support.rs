//! Shared fixtures: temporary configurations, the real binary, and an HTTP client.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStderr, Command},
};

/// How long a test waits for the server to report its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Every `rc_*` limit besides `rc_presence` raised far beyond what a test does, for servers
/// whose tests create many rooms, joins, logins and messages quickly. A test of a limit
/// overlays its own section (an empty one restores the defaults).
pub(crate) const RAISED_LIMITS: &str = "rc_login:
  address: {per_second: 10000, burst_count: 100000}
  account: {per_second: 10000, burst_count: 100000}
  failed_attempts: {per_second: 10000, burst_count: 100000}
rc_registration: {per_second: 10000, burst_count: 100000}
rc_joins:
  local: {per_second: 10000, burst_count: 100000}
  remote: {per_second: 10000, burst_count: 100000}
rc_joins_per_room: {per_second: 10000, burst_count: 100000}
rc_room_creation: {per_second: 10000, burst_count: 100000}
rc_message: {per_second: 10000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 10000, burst_count: 100000}
  per_user: {per_second: 10000, burst_count: 100000}
  per_issuer: {per_second: 10000, burst_count: 100000}
";

/// A minimal configuration listening on an ephemeral loopback port.
pub(crate) fn config_yaml(extra: &str) -> String {
    format!(
        "server_name: test
listeners:
  - port: 0
    type: http
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [client]}}]
database: {{name: sqlite3, args: {{database: presenced.db}}}}
{extra}"
    )
}

/// A fresh directory holding configuration files.
pub(crate) struct Workspace {
    dir: TempDir,
}

impl Workspace {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` in the workspace and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A command running the real binary in the workspace directory.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_presenced"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs the binary to completion: (exit code, stdout, stderr).
    pub(crate) async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = tokio::time::timeout(STARTUP_TIMEOUT, self.command(args).output())
            .await
            .expect("the command did not finish")
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        let code = output
            .status
            .code()
            .unwrap_or_else(|| panic!("presenced ended by {}; stderr:\n{stderr}", output.status));
        (code, String::from_utf8(output.stdout).unwrap(), stderr)
    }
}

/// The real server, started on ephemeral ports.
pub(crate) struct RunningBinary {
    pub(crate) child: Child,
    pub(crate) addrs: Vec<String>,
    stderr: ChildStderr,
}

impl RunningBinary {
    /// Starts the binary with `config` and waits until it has printed its addresses.
    pub(crate) async fn start(workspace: &Workspace, config: &Path) -> Self {
        Self::start_with(workspace, config, &[]).await
    }

    /// [`Self::start`] with more command-line options (`--log-level`, ...).
    pub(crate) async fn start_with(workspace: &Workspace, config: &Path, args: &[&str]) -> Self {
        let config = config.to_str().unwrap();
        let mut all = vec!["-c", config, "--print-listen-addrs"];
        all.extend_from_slice(args);
        let mut child = workspace.command(&all).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        // One line per socket; the test configs bind a single address.
        let line = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line())
            .await
            .expect("no address printed in time")
            .unwrap();
        match line {
            Some(line) => {
                let addr = line
                    .strip_prefix("listening on ")
                    .expect("unexpected stdout line");
                addrs.push(addr.to_owned());
            }
            None => {
                let mut stderr_text = String::new();
                let mut stderr = stderr;
                stderr.read_to_string(&mut stderr_text).await.unwrap();
                panic!("the server exited before listening; stderr:\n{stderr_text}");
            }
        }
        Self {
            child,
            addrs,
            stderr,
        }
    }

    /// `http://ADDR` of the first listener.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// Sends `signal` (e.g. `TERM`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("already exited").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit: (exit code, stderr).
    pub(crate) async fn wait(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(STARTUP_TIMEOUT, self.child.wait())
            .await
            .expect("the server did not exit")
            .unwrap();
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).await.unwrap();
        (status.code(), stderr)
    }
}
