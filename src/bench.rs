//! `ccsync bench` (feature `sim`): runs the `ccsync-bench` binary of the workspace's `bench/`
//! crate, found next to this executable, with the arguments as given, and exits with its code.
//! The bench is its own crate because it uses the product's rooms (queue, auth, publish, ...):
//! the product cannot depend on it, so the command is forwarded like `cargo foo` → `cargo-foo`.

use std::ffi::OsString;
use std::process::ExitCode;

/// `ccsync bench` arguments: everything after `bench`, `--help` included, goes to `ccsync-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The bench's arguments (`ccsync bench --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

/// Run `ccsync-bench ARGS...` and return its exit code.
pub(crate) async fn run(args: &BenchArgs) -> Result<ExitCode, crate::cli::BoxError> {
    let exe = std::env::current_exe()?;
    let bench = exe.with_file_name(format!("ccsync-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        return Err(format!(
            "ccsync bench needs the ccsync-bench binary next to ccsync ({}): build it with \
             `cargo build --workspace` or `cargo build -p ccsync-bench` (same profile as ccsync)",
            bench.display()
        )
        .into());
    }
    let status = tokio::process::Command::new(&bench)
        .args(&args.args)
        .status()
        .await
        .map_err(|e| format!("cannot start {}: {e}", bench.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
