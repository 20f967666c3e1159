//! `$OFFSYNC_HOME/operations.log`: one JSON object per line, one line per target and apply.
//!
//! Keys are compatible with the Python offsync's log (`timestamp`, `host`, `operation`,
//! `files_changed`) and extended (`target`, `status`, `files_deleted`, `bytes`,
//! `duration_ms`, `source_digest`, `plan_digest`, `error`). Paths are strings; a non-UTF-8
//! path is written lossily with its bytes as hex in `files_changed_hex`/`files_deleted_hex`.
//! Invariant: the log is only appended to, under the controller lock, by rewriting it
//! atomically (temp + fsync + rename, 0600), so a crash never leaves half a line.

use anyhow::Result;
use serde::Serialize;
use std::path::Path;

use crate::fsutil;

/// How one target's operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Unchanged,
    Refused,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One log line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// UTC, RFC 3339 with milliseconds.
    pub timestamp: String,
    pub target: String,
    pub host: String,
    pub operation: String,
    pub status: Outcome,
    pub files_changed: Vec<String>,
    pub files_deleted: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_changed_hex: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_deleted_hex: Vec<String>,
    pub bytes: u64,
    pub duration_ms: u64,
    pub source_digest: String,
    pub plan_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The typed kind of `error` (see `error::ErrorKind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<crate::error::ErrorKind>,
    /// The apply failed part-way: `files_changed`/`files_deleted` are what the target
    /// reported before the failure (rsync's own lines), not what the plan intended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Split raw paths into display strings and, for non-UTF-8 ones, hex.
pub fn encode_paths(paths: &[Vec<u8>]) -> (Vec<String>, Vec<String>) {
    let mut text = Vec::with_capacity(paths.len());
    let mut hex = Vec::new();
    for p in paths {
        text.push(String::from_utf8_lossy(p).into_owned());
        if std::str::from_utf8(p).is_err() {
            hex.push(p.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    (text, hex)
}

/// Current UTC time for records.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Append records to the log at `path`.
pub fn append(path: &Path, records: &[Record]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut content = fsutil::read_optional(path)?.unwrap_or_default();
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    for r in records {
        content.extend_from_slice(serde_json::to_string(r)?.as_bytes());
        content.push(b'\n');
    }
    fsutil::atomic_write(path, &content, fsutil::FILE_MODE)
}
