//! `ccsync` processes: finding the binary, starting a subcommand, stopping it as an orchestrator
//! does (SIGTERM), free ports for their listeners.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bound, then released for a process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The `ccsync` binary for a caller that is not one of the root package's integration tests
/// (those have `env!("CARGO_BIN_EXE_ccsync")`): `CCSYNC_BIN` when set, else `ccsync` next to the
/// running executable (Cargo builds both into the same target directory).
pub fn ccsync_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("CCSYNC_BIN").filter(|b| !b.is_empty()) {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bin = exe.with_file_name(format!("ccsync{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        return Err(format!(
            "no ccsync binary at {}: build it with `cargo build -p ccsync` (same profile) or set \
             CCSYNC_BIN",
            bin.display()
        ));
    }
    Ok(bin)
}

/// `bin subcommand` (or `wrap bin subcommand`, e.g. under a profiler) as its own OS process: no
/// stdin, stdout discarded, stderr inherited, killed when the handle drops. The caller adds the
/// environment and spawns.
pub fn ccsync_command(bin: &Path, wrap: Option<&str>, subcommand: &str) -> Command {
    let mut cmd = match wrap {
        Some(wrap) => {
            let mut c = Command::new(wrap);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg(subcommand)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// SIGTERM `child` and wait up to `limit` for it to exit; None if it is still running then.
pub async fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    tokio::time::timeout(limit, child.wait())
        .await
        .ok()
        .map(|r| r.expect("wait for a child process"))
}
