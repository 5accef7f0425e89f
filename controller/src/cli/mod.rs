//! The `rollgate` command line besides `controller`: the gate used without a Rollout
//! (`gate replay`, `gate eval`, `gate bench`).
//!
//! Exit codes are shared by every command that reports a verdict; see `Exit`.

pub mod gate;
pub mod gate_file;
pub mod rollout;
pub mod view;

use std::process::ExitCode;

/// What a verdict command's exit code means (documented in `--help` and `docs/cli.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Promoted, passed, or the awaited condition reached.
    Pass = 0,
    /// Rolled back or failed.
    Fail = 1,
    /// The timeout passed first.
    Timeout = 2,
    /// Paused for a person, or no verdict from the evidence available.
    Inconclusive = 3,
    /// Bad usage, unreadable input, or no connection.
    Usage = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The exit codes, for `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 passed/promoted, 1 failed/rolled back, 2 timeout, \
3 inconclusive or paused for a person, 4 usage, input or connection error.";

/// The largest gate or ReleaseGate file the CLI reads.
pub const MAX_GATE_FILE: u64 = 1 << 20;
/// The largest replay (series) file the CLI reads.
pub const MAX_SERIES_FILE: u64 = 256 << 20;

/// Reads a UTF-8 file of at most `limit` bytes; a larger one (or an endless one such as
/// `/dev/zero`) is refused without reading past the limit.
pub fn read_bounded(path: &std::path::Path, limit: u64) -> Result<String, FileError> {
    use std::io::Read;
    let at = || path.display().to_string();
    let read = |source| FileError::Read { path: at(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { path: at(), limit });
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotText { path: at() })
}

/// An input file the CLI cannot use.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than the {limit} bytes allowed for this input")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: not UTF-8 text")]
    NotText { path: String },
}

/// Runs a command's future on a single-threaded runtime (a CLI command does one thing at a time).
pub fn block_on(command: impl std::future::Future<Output = Exit>) -> Exit {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(command),
        Err(e) => {
            eprintln!("rollgate: starting the async runtime: {e}");
            Exit::Usage
        }
    }
}

/// Output formats of the verdict commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}
