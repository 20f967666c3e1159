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

/// Why a target could not be planned, applied or verified — the typed `error_kind` of plan
/// JSON and `operations.log` records, next to the human message, so a script can tell "host
/// key changed" from "unreachable" from "not confined" without parsing English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host cannot be reached: refused, timed out, no route, name not resolved.
    Unreachable,
    /// The target refused offsync's key.
    AuthFailed,
    /// The host offers another key than the pinned one.
    HostKeyChanged,
    /// No pinned host key matches.
    HostKeyUnknown,
    /// rrsync is not in force for the key, or it allows another directory than the linked one.
    NotConfined,
    /// rrsync refused an operation (deletes on a `--no-delete` target, its lock, an option).
    RefusedByRrsync,
    /// The forced command cannot run rrsync, or the linked directory is gone.
    RrsyncBroken,
    /// The target's disk (or quota) is full.
    DiskFull,
    /// rsync failed for another reason (its message says which).
    RsyncFailed,
    /// Target-only paths need `--delete`.
    NeedsDelete,
    /// The mass-delete guard refused (see `--max-delete`).
    MassDelete,
    /// The target was linked with `--no-delete`.
    DeleteDisabled,
    /// `overwrite: false` and files differ.
    OverwriteDisabled,
    /// The target did not match the source after the transfer.
    VerificationFailed,
    /// A `releases` target's new release verified but was not switched to, because another
    /// target of an `apply --switch together` did not verify (or the switch itself failed).
    NotSwitched,
    /// The source changed while it was being sent.
    SourceChanged,
    /// A saved plan no longer matches.
    StalePlan,
    /// A signal stopped the work.
    Interrupted,
    /// A mirror could not be read or written (store, key, snapshot).
    Mirror,
    /// Anything else: local I/O, state files.
    Io,
}

impl ErrorKind {
    /// The kind recorded in `err`'s chain ([`TargetError`], an interrupted process), else
    /// [`ErrorKind::Io`].
    pub fn of(err: &anyhow::Error) -> ErrorKind {
        for cause in err.chain() {
            if let Some(t) = cause.downcast_ref::<TargetError>() {
                return t.kind;
            }
            if let Some(crate::process::ProcessError::Interrupted { .. }) = cause.downcast_ref() {
                return ErrorKind::Interrupted;
            }
        }
        if crate::interrupt::interrupted() {
            ErrorKind::Interrupted
        } else {
            ErrorKind::Io
        }
    }
}

/// A target's failure with its [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TargetError {
    /// An `anyhow::Error` carrying `kind`.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(TargetError {
            kind,
            message: message.into(),
        })
    }
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
