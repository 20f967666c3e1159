//! Error policy and exit codes.
//!
//! Library code returns typed errors where a caller branches on them (an external command that
//! failed, bad user input) and `anyhow` elsewhere. `lib.rs` prints the error chain once, on one
//! line, and maps it to one of the documented exit codes below. Error messages name the input
//! that was wrong and the fix; they never contain secrets (keys are never part of argv or text).

use std::process::ExitCode;

/// Documented exit codes (see `offsync(1)`, section EXIT STATUS).
pub mod exit {
    /// Success; for `--detailed-exitcode` and `verify`: nothing to change.
    pub const OK: u8 = 0;
    /// An error: a command, a target, or the environment failed.
    pub const FAILURE: u8 = 1;
    /// `--detailed-exitcode` / `verify`: changes are pending (never used for errors).
    pub const CHANGES: u8 = 2;
    /// The command line or an input value was wrong (EX_USAGE); nothing was changed.
    pub const USAGE: u8 = 64;
    /// Interrupted by Ctrl-C (128 + SIGINT). SIGTERM gives 143 and SIGHUP 129: always
    /// 128 + the signal (see `interrupt::exit_code`).
    pub const INTERRUPTED: u8 = 130;
}

/// Bad input given by the user: a flag value, a pasted key, a login. Always exit 64, and always
/// raised before any file is touched.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Build an [`InputError`] wrapped in `anyhow`, formatted like `format!`.
#[macro_export]
macro_rules! input_err {
    ($($arg:tt)*) => { ::anyhow::Error::new($crate::error::InputError(format!($($arg)*))) };
}

/// Map an error chain to its exit code.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.downcast_ref::<InputError>().is_some() {
            return ExitCode::from(exit::USAGE);
        }
        if let Some(crate::process::ProcessError::Interrupted { .. }) = cause.downcast_ref() {
            return ExitCode::from(crate::interrupt::exit_code());
        }
    }
    ExitCode::from(exit::FAILURE)
}
