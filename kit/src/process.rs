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

/// The product's example binary `examples/<name>.rs`, built first (incrementally, once per name
/// and process): `cargo test --test NAME` does not build examples, and a stale binary would test
/// old code. It is built in the profile of the running test (debug or release), into the target
/// directory the test runs from.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the running test's path");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a target directory");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|n| n == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "--quiet", "-p", "ccsync", "--example", name];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        // The workspace root: this crate's parent directory.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("kit/ sits in the workspace root");
        let status = std::process::Command::new(cargo)
            .args(&args)
            .current_dir(root)
            .status()
            .unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
        assert!(status.success(), "building examples/{name}.rs failed");
        built.push(name.to_string());
    }
    let p = dir.join("examples").join(name);
    assert!(p.exists(), "{} missing", p.display());
    p
}
