//! `$OFFSYNC_HOME/operations.log`: one JSON object per line, one line per target and apply
//! (or `pull`, or `mirror restore`).
//!
//! Keys are compatible with the Python offsync's log (`timestamp`, `host`, `operation`,
//! `files_changed`) and extended (`target`, `status`, `files_changed_count`, `files_deleted`,
//! `files_deleted_count`, `bytes`, `duration_ms`, `source_digest`, `plan_digest`, `error`,
//! `error_kind`, `partial`, `paths_file`). Paths are strings; a non-UTF-8 path is written
//! lossily, with its bytes as hex in `files_changed_hex`/`files_deleted_hex` (in the same
//! order as the non-UTF-8 paths appear in the list).
//!
//! Bounded records: a line lists at most [`MAX_PATHS`] paths per list; the `*_count` keys
//! always hold the full numbers. When a list was cut, the complete lists go to a per-apply
//! file `$OFFSYNC_HOME/log/<timestamp>-<target>-<plan digest prefix>.json` ([`PathsFile`],
//! 0600 in a 0700 directory, written atomically *before* the line that names it), and the
//! record names it in `paths_file`, relative to `$OFFSYNC_HOME`. Small applies stay
//! self-contained.
//!
//! Invariant: the log is JSON Lines and is only ever appended to, never read back or rewritten
//! by a writer. One [`append`] writes all its lines as one buffer with a single `write_all`
//! on an `O_APPEND` descriptor, then `fdatasync`s: its cost does not depend on the size of
//! the log, and concurrent appenders on a local filesystem do not interleave within a line.
//! The file is 0600 whatever the umask (a looser existing file is tightened). A crash or a
//! full disk can leave a torn last line without its `\n`; the next append first writes a `\n`
//! so the torn bytes stay on a line of their own. Readers ([`read`], [`read_values`],
//! [`History`]) therefore skip lines that do not parse.
//!
//! Rotation: an append that finds the log at or past [`Rotation::max_bytes`] (16 MiB) first
//! renames it to `operations.log.1`, shifting `.1` → `.2` … and dropping the oldest past
//! [`Rotation::keep`] (5 rotated files, so about 96 MiB of history), then appends to a new
//! file. Size check, renames and append happen under an exclusive `flock` on
//! `operations.log.lock`, so two appenders (an apply and a host's `pull`, or two processes
//! racing) can neither rotate twice nor write into a file that is being renamed away: every
//! record lands whole in exactly one file. Readers ([`History::open`]) take the same lock
//! shared just long enough to open every file, so they see a consistent set (an fd keeps
//! its inode across a later rename). Paths files under `log/` are never deleted by rotation:
//! a record in `operations.log.3` still names a readable file. A writer of an older offsync
//! (no lock) still appends whole lines through `O_APPEND`; at worst its line lands in the
//! file just rotated to `.1`, where readers find it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil;

/// The most paths a record lists per list (`files_changed`, `files_deleted`).
pub const MAX_PATHS: usize = 100;

/// The directory of per-apply path files, relative to the log's directory (`$OFFSYNC_HOME`).
pub const PATHS_DIR: &str = "log";

/// How one target's operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, RFC 3339 with milliseconds.
    pub timestamp: String,
    pub target: String,
    pub host: String,
    pub operation: String,
    pub status: Outcome,
    /// The first [`MAX_PATHS`] changed paths, sorted (all of them in `paths_file` when cut).
    pub files_changed: Vec<String>,
    /// How many paths changed, listed or not.
    pub files_changed_count: u64,
    /// The first [`MAX_PATHS`] deleted paths, sorted (all of them in `paths_file` when cut).
    pub files_deleted: Vec<String>,
    /// How many paths were deleted, listed or not.
    pub files_deleted_count: u64,
    /// Hex of the non-UTF-8 paths among `files_changed`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_changed_hex: Vec<String>,
    /// Hex of the non-UTF-8 paths among `files_deleted`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_deleted_hex: Vec<String>,
    pub bytes: u64,
    pub duration_ms: u64,
    pub source_digest: String,
    pub plan_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The typed kind of `error` (see `error::ErrorKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<crate::error::ErrorKind>,
    /// The apply failed part-way: `files_changed`/`files_deleted` are what the target
    /// reported before the failure (rsync's own lines), not what the plan intended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The [`PathsFile`] with the complete lists, relative to `$OFFSYNC_HOME`
    /// (`log/….json`); only when a list was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths_file: Option<String>,
    /// A `releases` target: the release this operation uploaded (apply) or switched to
    /// (rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// A `releases` target: `current` was switched to `release` (UTC, RFC 3339 with
    /// milliseconds); absent when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<String>,
    /// A `releases` target: the old releases deleted after the switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

impl Record {
    /// A record stamped now, with no paths, bytes, digests or error: callers fill in what
    /// their operation has (`Record { bytes, ..Record::new(…) }`).
    pub fn new(target: String, host: String, operation: String, status: Outcome) -> Record {
        Record {
            timestamp: now(),
            target,
            host,
            operation,
            status,
            files_changed: Vec::new(),
            files_changed_count: 0,
            files_deleted: Vec::new(),
            files_deleted_count: 0,
            files_changed_hex: Vec::new(),
            files_deleted_hex: Vec::new(),
            bytes: 0,
            duration_ms: 0,
            source_digest: String::new(),
            plan_digest: String::new(),
            error: None,
            error_kind: None,
            partial: false,
            paths_file: None,
            release: None,
            switched_at: None,
            pruned: Vec::new(),
        }
    }
}

impl Record {
    /// Set the bounded lists, their `*_hex` lists and the counts from the complete (sorted)
    /// `changed` and `deleted` lists. Returns the complete lists when either was cut, for
    /// [`append`] to write next to the log.
    pub fn set_paths(&mut self, changed: &[Vec<u8>], deleted: &[Vec<u8>]) -> Option<PathsFile> {
        let head = |p: &[Vec<u8>]| encode_paths(&p[..p.len().min(MAX_PATHS)]);
        (self.files_changed, self.files_changed_hex) = head(changed);
        (self.files_deleted, self.files_deleted_hex) = head(deleted);
        self.files_changed_count = changed.len() as u64;
        self.files_deleted_count = deleted.len() as u64;
        self.paths_file = None;
        if changed.len() <= MAX_PATHS && deleted.len() <= MAX_PATHS {
            return None;
        }
        let (files_changed, files_changed_hex) = encode_paths(changed);
        let (files_deleted, files_deleted_hex) = encode_paths(deleted);
        Some(PathsFile {
            target: self.target.clone(),
            timestamp: self.timestamp.clone(),
            operation: self.operation.clone(),
            files_changed,
            files_changed_hex,
            files_deleted,
            files_deleted_hex,
        })
    }
}

/// The complete path lists of one record whose lists were cut: `$OFFSYNC_HOME/log/….json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathsFile {
    pub target: String,
    /// The record's `timestamp`.
    pub timestamp: String,
    pub operation: String,
    pub files_changed: Vec<String>,
    pub files_changed_hex: Vec<String>,
    pub files_deleted: Vec<String>,
    pub files_deleted_hex: Vec<String>,
}

/// A record to append, with the complete lists its lists were cut from (if they were).
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Record,
    pub paths: Option<PathsFile>,
}

impl Entry {
    /// `record` with its path lists and counts set from the complete `changed` and `deleted`
    /// lists (see [`Record::set_paths`]).
    pub fn new(mut record: Record, changed: &[Vec<u8>], deleted: &[Vec<u8>]) -> Entry {
        let paths = record.set_paths(changed, deleted);
        Entry { record, paths }
    }
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
    timestamp(chrono::Utc::now())
}

/// `at` as the log writes times (UTC, RFC 3339 with milliseconds).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Append one line per entry to the log at `log` (see the module docs): first the paths file
/// of each entry whose lists were cut (in `log`'s directory, under [`PATHS_DIR`]), then every
/// line in one write. A paths file that cannot be written does not cost its line: the record
/// is appended without `paths_file` (its counts still tell what happened) and the error is
/// returned afterwards.
pub fn append(log: &Path, entries: Vec<Entry>) -> Result<()> {
    append_with(log, entries, Rotation::from_env())
}

/// [`append`] with an explicit rotation policy.
pub fn append_with(log: &Path, entries: Vec<Entry>, rotation: Rotation) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let home = dir_of(log);
    let mut failed = None;
    let mut records = Vec::with_capacity(entries.len());
    for Entry { mut record, paths } in entries {
        if let Some(paths) = paths {
            match write_paths_file(&home, &record, &paths) {
                Ok(rel) => record.paths_file = Some(rel),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        records.push(record);
    }
    append_records_with(log, &records, rotation)?;
    failed.map_or(Ok(()), Err)
}

/// Append `records` as they are (their lists already bounded): one `write_all` of whole lines
/// on an `O_APPEND` descriptor, then `fdatasync`. The existing content is never read, except
/// its last byte (to isolate a torn line), and never rewritten. Rotates first when the log
/// is past [`Rotation::from_env`]'s size.
pub fn append_records(log: &Path, records: &[Record]) -> Result<()> {
    append_records_with(log, records, Rotation::from_env())
}

/// [`append_records`] with an explicit rotation policy.
pub fn append_records_with(log: &Path, records: &[Record], rotation: Rotation) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    // Byte 0 is room for the `\n` that ends a torn last line; skipped when not needed.
    let mut buf = vec![b'\n'];
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    let _lock =
        lock_log(log, true).with_context(|| format!("cannot lock {}", lock_path(log).display()))?;
    rotate_if_needed(log, rotation).with_context(|| format!("cannot rotate {}", log.display()))?;
    append_lines(log, &buf).with_context(|| format!("cannot append to {}", log.display()))
}

/// When the log rotates (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// An append that finds the log at least this large rotates it first.
    pub max_bytes: u64,
    /// Rotated files kept (`operations.log.1` … `.keep`); at least 1.
    pub keep: u32,
}

/// The size past which the log rotates: 16 MiB, some 30 000 records of small applies.
pub const ROTATE_BYTES: u64 = 16 << 20;

/// Rotated files kept: with [`ROTATE_BYTES`], about 96 MiB of history in all.
pub const ROTATE_KEEP: u32 = 5;

/// Overrides [`ROTATE_BYTES`] (a number of bytes; tests and very small disks).
pub const ROTATE_BYTES_ENV: &str = "OFFSYNC_LOG_ROTATE_BYTES";

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_bytes: ROTATE_BYTES,
            keep: ROTATE_KEEP,
        }
    }
}

impl Rotation {
    /// The default, with `max_bytes` from [`ROTATE_BYTES_ENV`] when it holds a number > 0.
    pub fn from_env() -> Rotation {
        let mut r = Rotation::default();
        if let Some(n) = std::env::var(ROTATE_BYTES_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            r.max_bytes = n;
        }
        r
    }
}

/// `operations.log.lock` next to `log`: the lock appenders (exclusive) and readers (shared,
/// while opening) take.
pub fn lock_path(log: &Path) -> PathBuf {
    sibling(log, "lock")
}

/// `operations.log.N`, the `n`th newest rotated file.
pub fn rotated_path(log: &Path, n: u32) -> PathBuf {
    sibling(log, &n.to_string())
}

fn sibling(log: &Path, suffix: &str) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    log.with_file_name(name)
}

/// Take the log's lock: exclusive (creating the lock file 0600) for appenders; shared for
/// readers, who go without when the lock file cannot be opened (a read-only home, or a log
/// no locking appender ever wrote).
fn lock_log(log: &Path, exclusive: bool) -> std::io::Result<Option<std::fs::File>> {
    let path = lock_path(log);
    if exclusive {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(fsutil::FILE_MODE)
            .open(&path)?;
        file.lock()?;
        Ok(Some(file))
    } else {
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(None);
        };
        file.lock_shared()?;
        Ok(Some(file))
    }
}

/// Under the exclusive lock: when `log` is at least `rotation.max_bytes`, shift the rotated
/// files up by one (dropping the one past `keep`) and rename `log` to `log.1`. Each rename is
/// atomic; the lock keeps appenders and readers from seeing the set half-shifted.
fn rotate_if_needed(log: &Path, rotation: Rotation) -> std::io::Result<bool> {
    let len = match std::fs::symlink_metadata(log) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Ok(false), // `append_lines` reports what it is
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len < rotation.max_bytes {
        return Ok(false);
    }
    let keep = rotation.keep.max(1);
    for n in (1..keep).rev() {
        match std::fs::rename(rotated_path(log, n), rotated_path(log, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(log, rotated_path(log, 1))?;
    fsutil::sync_dir(&dir_of(log));
    Ok(true)
}

/// Write `buf[1..]` (whole lines) at the end of `path`, or all of `buf` when the file does not
/// end with `\n`.
fn append_lines(path: &Path, buf: &[u8]) -> Result<()> {
    let (mut file, created) = open_append(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!("not a regular file");
    }
    if created || meta.permissions().mode() & 0o077 != 0 {
        // The umask may have narrowed a new file; an old one may be too open.
        file.set_permissions(std::fs::Permissions::from_mode(fsutil::FILE_MODE))?;
    }
    let len = meta.len();
    let torn = len > 0 && {
        let mut last = [0u8];
        file.read_exact_at(&mut last, len - 1)?;
        last[0] != b'\n'
    };
    file.write_all(if torn { buf } else { &buf[1..] })?;
    file.sync_data()?;
    if created {
        fsutil::sync_dir(&dir_of(path));
    }
    Ok(())
}

/// Open `path` for appending (and reading its last byte), creating it 0600 if missing.
/// Returns whether it was created.
fn open_append(path: &Path) -> std::io::Result<(std::fs::File, bool)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).append(true);
    match opts
        .clone()
        .create_new(true)
        .mode(fsutil::FILE_MODE)
        .open(path)
    {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((opts.open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `paths` atomically to a new file under `home/log/` and return its name relative to
/// `home`: `log/<timestamp without colons>-<target>-<plan digest prefix>.json`.
fn write_paths_file(home: &Path, record: &Record, paths: &PathsFile) -> Result<String> {
    let dir = home.join(PATHS_DIR);
    fsutil::ensure_private_dir(&dir)?;
    let mut stem = format!(
        "{}-{}",
        name_part(&record.timestamp.replace(':', ""), 40),
        name_part(&record.target, 64)
    );
    if !record.plan_digest.is_empty() {
        stem = format!("{stem}-{}", name_part(&record.plan_digest, 12));
    }
    let mut name = format!("{stem}.json");
    let mut n = 1;
    while std::fs::symlink_metadata(dir.join(&name)).is_ok() {
        n += 1;
        name = format!("{stem}-{n}.json");
    }
    let mut bytes = serde_json::to_vec(paths)?;
    bytes.push(b'\n');
    fsutil::atomic_write(&dir.join(&name), &bytes, fsutil::FILE_MODE)?;
    Ok(format!("{PATHS_DIR}/{name}"))
}

/// `s` cut to `max` characters, with everything but ASCII letters, digits, `.`, `-` and `_`
/// replaced by `_`: safe in a file name.
fn name_part(s: &str, max: usize) -> String {
    let part: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if part.is_empty() || part.starts_with('.') {
        format!("_{part}")
    } else {
        part
    }
}

/// Every line of the log at `path` that parses as a JSON object, oldest first; none when
/// there is no log. Torn lines and other garbage are skipped.
pub fn read_values(path: &Path) -> Result<Vec<serde_json::Value>> {
    let content = fsutil::read_optional(path)?.unwrap_or_default();
    Ok(content
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(serde_json::Value::is_object)
        .collect())
}

/// Every record of the log at `path`, oldest first; none when there is no log. Lines that do
/// not parse as a [`Record`] (torn lines, the Python offsync's records) are skipped. Records
/// written before the counts existed get their lists' lengths as counts.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    Ok(read_values(path)?
        .into_iter()
        .filter_map(record_from_value)
        .collect())
}

fn record_from_value(mut v: serde_json::Value) -> Option<Record> {
    let obj = v.as_object_mut()?;
    for (list, count) in [
        ("files_changed", "files_changed_count"),
        ("files_deleted", "files_deleted_count"),
    ] {
        if !obj.contains_key(count) {
            let n = obj.get(list)?.as_array()?.len();
            obj.insert(count.to_string(), n.into());
        }
    }
    serde_json::from_value(v).ok()
}

/// The current log and its rotated files, opened together (newest first), for reading
/// backwards: `offsync log` and `offsync status` stop as soon as they have what they need, so
/// their cost depends on how far back they look, not on the size of the history.
pub struct History {
    files: Vec<(PathBuf, std::fs::File, u64)>,
}

/// One line of the history, as stored (without its `\n`).
#[derive(Debug, Clone)]
pub struct Line {
    /// The file it is in (`operations.log`, `operations.log.1`, …).
    pub path: PathBuf,
    /// Index into [`History`]'s files (0: the current log).
    pub file: usize,
    /// Byte offset of the line in its file.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl History {
    /// Open `log` and `log.1`, `log.2`, … (as many as exist in a row) under the shared lock,
    /// so a concurrent rotation cannot make a record appear twice or not at all. Missing
    /// files are no error: no log is an empty history. Each file is read up to its length
    /// now; records appended later are not seen.
    pub fn open(log: &Path) -> Result<History> {
        let _lock = lock_log(log, false)
            .with_context(|| format!("cannot lock {}", lock_path(log).display()))?;
        let mut files = Vec::new();
        for n in 0..=1000u32 {
            let path = if n == 0 {
                log.to_path_buf()
            } else {
                rotated_path(log, n)
            };
            match std::fs::File::open(&path) {
                Ok(f) => {
                    let len = f.metadata()?.len();
                    files.push((path, f, len));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if n > 0 {
                        break;
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot open {}", path.display()));
                }
            }
        }
        Ok(History { files })
    }

    /// The files opened, newest first.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _, _)| p.as_path())
    }

    /// Every non-empty line, newest first (the current file from its end, then `.1`, …).
    pub fn newest_first(&self) -> impl Iterator<Item = std::io::Result<Line>> + '_ {
        self.files
            .iter()
            .enumerate()
            .flat_map(|(i, (path, file, len))| {
                RevLines::new(file, *len).map(move |r| {
                    r.map(|(offset, bytes)| Line {
                        path: path.clone(),
                        file: i,
                        offset,
                        bytes,
                    })
                })
            })
            .filter(|r| !matches!(r, Ok(l) if l.bytes.is_empty()))
    }

    /// The 1-based line number of `line` in its file (counts the newlines before it: only
    /// called for the rare line worth a warning).
    pub fn line_number(&self, line: &Line) -> std::io::Result<u64> {
        let file = &self.files[line.file].1;
        let mut buf = vec![0u8; 1 << 16];
        let (mut at, mut count) = (0u64, 0u64);
        while at < line.offset {
            let want = buf.len().min((line.offset - at) as usize);
            let got = file.read_at(&mut buf[..want], at)?;
            if got == 0 {
                break;
            }
            count += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
            at += got as u64;
        }
        Ok(count + 1)
    }
}

/// The lines of the first `len` bytes of a file, last first, read in 64 KiB blocks from the
/// end: memory is one block plus the longest line.
struct RevLines<'a> {
    file: &'a std::fs::File,
    /// Where `buf` starts in the file: everything before is unread.
    pos: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<'a> RevLines<'a> {
    const BLOCK: u64 = 1 << 16;

    fn new(file: &'a std::fs::File, len: u64) -> RevLines<'a> {
        RevLines {
            file,
            pos: len,
            buf: Vec::new(),
            done: len == 0,
        }
    }
}

impl Iterator for RevLines<'_> {
    type Item = std::io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(i) = self.buf.iter().rposition(|b| *b == b'\n') {
                let line = self.buf.split_off(i + 1);
                self.buf.truncate(i);
                return Some(Ok((self.pos + i as u64 + 1, line)));
            }
            if self.pos == 0 {
                self.done = true;
                return Some(Ok((0, std::mem::take(&mut self.buf))));
            }
            let n = self.pos.min(Self::BLOCK);
            let mut block = vec![0u8; n as usize];
            if let Err(e) = self.file.read_exact_at(&mut block, self.pos - n) {
                self.done = true;
                return Some(Err(e));
            }
            self.pos -= n;
            block.extend_from_slice(&self.buf);
            self.buf = block;
        }
    }
}

/// The complete lists of `record` when they were cut: its `paths_file`, read from below
/// `home` (the log's directory). `None` for a self-contained record.
pub fn read_paths(home: &Path, record: &Record) -> Result<Option<PathsFile>> {
    let Some(rel) = &record.paths_file else {
        return Ok(None);
    };
    let rel_path = Path::new(rel);
    let inside = rel_path.starts_with(PATHS_DIR)
        && rel_path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside {
        anyhow::bail!("paths_file {rel:?} is not below {PATHS_DIR}/");
    }
    let path = home.join(rel_path);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a paths file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn record(target: &str) -> Record {
        Record {
            bytes: 1,
            duration_ms: 2,
            source_digest: "s".repeat(64),
            plan_digest: "ab12cd34".repeat(8),
            ..Record::new(
                target.to_string(),
                "host".to_string(),
                "apply".to_string(),
                Outcome::Ok,
            )
        }
    }

    fn entry(target: &str, changed: &[Vec<u8>], deleted: &[Vec<u8>]) -> Entry {
        Entry::new(record(target), changed, deleted)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn append_adds_lines_after_the_old_bytes_without_replacing_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let mut old = Vec::new();
        for i in 0..1000 {
            old.extend_from_slice(format!("{{\"old\":{i}}}\n").as_bytes());
        }
        std::fs::write(&log, &old).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        let inode = std::fs::metadata(&log).unwrap().ino();
        append(&log, vec![entry("t1", &[b"a".to_vec()], &[])]).unwrap();
        append(&log, vec![entry("t2", &[], &[]), entry("t3", &[], &[])]).unwrap();
        let now = std::fs::read(&log).unwrap();
        assert_eq!(&now[..old.len()], &old[..], "the old bytes are untouched");
        assert_eq!(
            std::fs::metadata(&log).unwrap().ino(),
            inode,
            "not replaced"
        );
        let new: Vec<&[u8]> = now[old.len()..].split(|b| *b == b'\n').collect();
        assert_eq!(new.len(), 4, "three lines and the final newline");
        let recs = read(&log).unwrap();
        let targets: Vec<&str> = recs.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["t1", "t2", "t3"]);
        assert_eq!(recs[0].files_changed, ["a"]);
        assert_eq!(recs[0].files_changed_count, 1);
        assert_eq!(read_values(&log).unwrap().len(), 1003);
    }

    /// The existing log is a sparse file of 4 GiB: an append that read or copied it would take
    /// seconds and gigabytes; an O(1) one touches only its last byte and the end.
    #[test]
    fn append_never_reads_the_existing_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        std::fs::write(&log, b"{\"first\":1}\n").unwrap();
        let size = 4u64 << 30;
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(size - 1).unwrap();
        f.write_all_at(b"\n", size - 1).unwrap();
        drop(f);
        let t = std::time::Instant::now();
        let no_rotation = Rotation {
            max_bytes: u64::MAX,
            keep: 1,
        };
        append_with(&log, vec![entry("t1", &[], &[])], no_rotation).unwrap();
        let took = t.elapsed();

        let meta = std::fs::metadata(&log).unwrap();
        let line = serde_json::to_vec(&read_tail_record(&log, size)).unwrap();
        assert_eq!(meta.len(), size + line.len() as u64 + 1);
        assert!(
            meta.blocks() < 1024,
            "no hole was filled: {} blocks",
            meta.blocks()
        );
        let f = std::fs::File::open(&log).unwrap();
        let mut head = [0u8; 12];
        f.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"{\"first\":1}\n");
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        // Past the rotation size, the same log is renamed away, not copied: just as cheap.
        let t = std::time::Instant::now();
        append(&log, vec![entry("t2", &[], &[])]).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(
            std::fs::metadata(rotated_path(&log, 1)).unwrap().len(),
            meta.len()
        );
        assert_eq!(read(&log).unwrap()[0].target, "t2");
    }

    fn read_tail_record(log: &Path, from: u64) -> Record {
        let f = std::fs::File::open(log).unwrap();
        let len = f.metadata().unwrap().len();
        let mut tail = vec![0u8; (len - from) as usize];
        f.read_exact_at(&mut tail, from).unwrap();
        assert_eq!(tail.last(), Some(&b'\n'));
        serde_json::from_slice(&tail[..tail.len() - 1]).unwrap()
    }

    #[test]
    fn a_torn_last_line_is_isolated_and_skipped_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        append(&log, vec![entry("t1", &[], &[])]).unwrap();
        let mut torn = std::fs::read(&log).unwrap();
        let whole = torn.len();
        torn.extend_from_slice(b"{\"timestamp\":\"2025-01-0");
        std::fs::write(&log, &torn).unwrap();
        append(&log, vec![entry("t2", &[], &[])]).unwrap();
        let content = std::fs::read(&log).unwrap();
        let lines: Vec<&[u8]> = content[..content.len() - 1]
            .split(|b| *b == b'\n')
            .collect();
        assert_eq!(lines.len(), 3, "{}", String::from_utf8_lossy(&content));
        assert_eq!(
            lines[1], b"{\"timestamp\":\"2025-01-0",
            "the torn bytes alone"
        );
        assert_eq!(&content[..whole], &torn[..whole]);
        let targets: Vec<String> = read(&log).unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["t1", "t2"]);
        assert_eq!(read_values(&log).unwrap().len(), 2);
        // A log that ends cleanly gets no blank line.
        append(&log, vec![entry("t3", &[], &[])]).unwrap();
        let again = std::fs::read(&log).unwrap();
        assert!(!again.windows(2).any(|w| w == b"\n\n"));
    }

    #[test]
    fn the_log_is_0600_under_umask_022_and_a_looser_one_is_tightened() {
        use nix::sys::stat::{Mode, umask};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        // 022 is the usual default, so other tests running meanwhile are not affected.
        let before = umask(Mode::from_bits_truncate(0o022));
        let r = append(&log, vec![entry("t1", &[], &[])]);
        umask(before);
        r.unwrap();
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        append(&log, vec![entry("t1", &[], &[])]).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(read(&log).unwrap().len(), 2);
    }

    #[test]
    fn records_of_up_to_max_paths_stay_self_contained() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let changed: Vec<Vec<u8>> = (0..MAX_PATHS).map(|i| format!("f{i:03}").into()).collect();
        let deleted = vec![b"gone".to_vec(), b"bad-\xff".to_vec()];
        let e = entry("t1", &changed, &deleted);
        assert!(e.paths.is_none());
        append(&log, vec![e]).unwrap();
        let r = &read(&log).unwrap()[0];
        assert_eq!(r.files_changed.len(), MAX_PATHS);
        assert_eq!(r.files_changed_count, MAX_PATHS as u64);
        assert_eq!(r.files_deleted, ["gone", "bad-\u{fffd}"]);
        assert_eq!(r.files_deleted_hex, ["6261642dff"]);
        assert_eq!(r.files_deleted_count, 2);
        assert_eq!(r.paths_file, None);
        assert!(read_paths(dir.path(), r).unwrap().is_none());
        assert!(!dir.path().join(PATHS_DIR).exists(), "no log/ directory");
        let v = &read_values(&log).unwrap()[0];
        assert!(v.get("paths_file").is_none(), "{v}");
        assert_eq!(v["files_changed_count"], MAX_PATHS);
        assert_eq!(v["files_deleted_count"], 2);
    }

    #[test]
    fn long_lists_are_cut_and_the_paths_file_holds_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        // Non-UTF-8 paths among the first MAX_PATHS and beyond them.
        let mut changed: Vec<Vec<u8>> = (0..250).map(|i| format!("d/f{i:04}").into()).collect();
        changed[3] = b"d/f0003-\xfe".to_vec();
        changed[200] = b"d/f0200-\xff\xfe".to_vec();
        let deleted: Vec<Vec<u8>> = (0..120).map(|i| format!("old/o{i:04}").into()).collect();
        append(
            &log,
            vec![
                entry("web/prod 1", &changed, &deleted),
                entry("t2", &changed[..1], &[]),
            ],
        )
        .unwrap();
        let recs = read(&log).unwrap();
        let r = &recs[0];
        assert_eq!(r.files_changed.len(), MAX_PATHS);
        assert_eq!(r.files_changed_count, 250);
        assert_eq!(r.files_changed[3], "d/f0003-\u{fffd}");
        assert_eq!(r.files_changed_hex, ["642f66303030332dfe"]);
        assert_eq!(r.files_deleted.len(), MAX_PATHS);
        assert_eq!(r.files_deleted_count, 120);
        assert_eq!(recs[1].files_changed_count, 1);
        assert_eq!(recs[1].paths_file, None);

        let rel = r.paths_file.as_deref().unwrap();
        assert!(rel.starts_with("log/") && rel.ends_with(".json"), "{rel}");
        let name = rel.strip_prefix("log/").unwrap();
        assert!(
            !name.contains(':') && !name.contains(' ') && !name.contains('/'),
            "{name}"
        );
        assert!(name.contains("-web_prod_1-ab12cd34ab12"), "{name}");
        assert_eq!(mode(&dir.path().join(PATHS_DIR)), 0o700);
        assert_eq!(mode(&dir.path().join(rel)), 0o600);

        let full = read_paths(dir.path(), r).unwrap().unwrap();
        assert_eq!(full.target, "web/prod 1");
        assert_eq!(full.timestamp, r.timestamp);
        assert_eq!(full.operation, "apply");
        assert_eq!(full.files_changed.len(), 250);
        assert_eq!(full.files_deleted.len(), 120);
        assert!(full.files_deleted_hex.is_empty());
        // Round trip: the UTF-8 paths as text, the others from their hex, in order.
        let mut hex = full.files_changed_hex.iter();
        let back: Vec<Vec<u8>> = full
            .files_changed
            .iter()
            .zip(&changed)
            .map(|(text, orig)| {
                if std::str::from_utf8(orig).is_ok() {
                    text.clone().into_bytes()
                } else {
                    unhex(hex.next().unwrap())
                }
            })
            .collect();
        assert_eq!(back, changed);
        assert!(hex.next().is_none());
        let deleted_back: Vec<Vec<u8>> = full
            .files_deleted
            .iter()
            .map(|s| s.clone().into_bytes())
            .collect();
        assert_eq!(deleted_back, deleted);

        // A second cut record of the same target in the same millisecond gets its own file.
        let mut again = entry("web/prod 1", &changed, &[]);
        again.record.timestamp = r.timestamp.clone();
        append(&log, vec![again]).unwrap();
        let third = &read(&log).unwrap()[2];
        assert_ne!(third.paths_file, r.paths_file);
        assert_eq!(
            read_paths(dir.path(), third)
                .unwrap()
                .unwrap()
                .files_changed
                .len(),
            250
        );
    }

    #[test]
    fn a_paths_file_outside_log_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x.json", "/etc/passwd", "log/../../x", "other/x.json"] {
            let mut r = record("t1");
            r.paths_file = Some(bad.to_string());
            assert!(read_paths(dir.path(), &r).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_written_before_the_counts_read_with_their_list_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let mut old = serde_json::to_value(record("t1")).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("files_changed_count");
        obj.remove("files_deleted_count");
        obj.insert("files_changed".into(), serde_json::json!(["a", "b"]));
        let python = serde_json::json!({"timestamp": "x", "host": "h", "operation": "push",
            "files_changed": ["a"]});
        std::fs::write(&log, format!("{old}\n{python}\nnot json\n")).unwrap();
        let recs = read(&log).unwrap();
        assert_eq!(recs.len(), 1, "the Python record is not a Record");
        assert_eq!(recs[0].files_changed_count, 2);
        assert_eq!(recs[0].files_deleted_count, 0);
        assert_eq!(read_values(&log).unwrap().len(), 2);
        assert!(read(&dir.path().join("missing")).unwrap().is_empty());
    }

    fn targets_newest_first(log: &Path) -> Vec<String> {
        let h = History::open(log).unwrap();
        h.newest_first()
            .map(|l| {
                let l = l.unwrap();
                serde_json::from_slice::<Record>(&l.bytes).unwrap().target
            })
            .collect()
    }

    #[test]
    fn the_log_rotates_past_its_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let line = serde_json::to_vec(&record("t0000")).unwrap().len() as u64 + 1;
        // Three records per file: the fourth append finds the log at 3 lines and rotates.
        let rot = Rotation {
            max_bytes: 3 * line,
            keep: 2,
        };
        for i in 0..10 {
            append_records_with(&log, &[record(&format!("t{i:04}"))], rot).unwrap();
        }
        let lines = |p: &Path| std::fs::read(p).unwrap().split(|b| *b == b'\n').count() - 1;
        assert_eq!(lines(&log), 1, "t0009");
        assert_eq!(lines(&rotated_path(&log, 1)), 3, "t0006..t0008");
        assert_eq!(lines(&rotated_path(&log, 2)), 3, "t0003..t0005");
        assert!(!rotated_path(&log, 3).exists(), "keep: 2");
        assert_eq!(mode(&lock_path(&log)), 0o600);
        let want: Vec<String> = (3..10).rev().map(|i| format!("t{i:04}")).collect();
        assert_eq!(targets_newest_first(&log), want);
        // Below the size, nothing moves.
        let before = std::fs::read(rotated_path(&log, 1)).unwrap();
        append_records_with(&log, &[record("t0010")], rot).unwrap();
        assert_eq!(std::fs::read(rotated_path(&log, 1)).unwrap(), before);
        assert_eq!(lines(&log), 2);
    }

    #[test]
    fn paths_files_of_rotated_records_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let rot = Rotation {
            max_bytes: 1,
            keep: 2,
        };
        let changed: Vec<Vec<u8>> = (0..150).map(|i| format!("f{i:04}").into()).collect();
        append_with(&log, vec![entry("big", &changed, &[])], rot).unwrap();
        for t in ["t1", "t2"] {
            append_with(&log, vec![entry(t, &[], &[])], rot).unwrap();
        }
        let h = History::open(&log).unwrap();
        let lines: Vec<Line> = h.newest_first().map(Result::unwrap).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].path, rotated_path(&log, 2));
        let big: Record = serde_json::from_slice(&lines[2].bytes).unwrap();
        let full = read_paths(dir.path(), &big).unwrap().unwrap();
        assert_eq!(full.files_changed.len(), 150);
    }

    /// Appenders on many threads (each with its own descriptors, so the `flock`s really
    /// compete) and a tiny rotation size: every record is in exactly one file, whole.
    #[test]
    fn concurrent_appenders_lose_no_record_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let rot = Rotation {
            max_bytes: 4096,
            keep: 1000,
        };
        let (threads, per) = (8, 150);
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..per {
                        let mut r = record(&format!("w{t}-{i:04}"));
                        // Records of different sizes, so rotations fall mid-stream.
                        r.error = Some("x".repeat((t * 37 + i * 11) % 300));
                        append_records_with(log, &[r], rot).unwrap();
                    }
                });
            }
        });
        let files = History::open(&log).unwrap().paths().count();
        assert!(files > 20, "rotated: {files} files");
        let mut seen = targets_newest_first(&log);
        // Each writer's records come out newest first, in its own order.
        for t in 0..threads {
            let mine: Vec<&String> = seen
                .iter()
                .filter(|n| n.starts_with(&format!("w{t}-")))
                .collect();
            let want: Vec<String> = (0..per).rev().map(|i| format!("w{t}-{i:04}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "writer {t}");
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), threads * per, "no record lost or doubled");
        for p in History::open(&log).unwrap().paths() {
            if p != log {
                let len = std::fs::metadata(p).unwrap().len();
                assert!(len >= rot.max_bytes, "{} rotated early: {len}", p.display());
            }
        }
    }

    #[test]
    fn reading_backwards_spans_blocks_and_keeps_torn_lines_apart() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        // Lines longer than a block, and a last line without its newline.
        let mut content = Vec::new();
        let mut want = Vec::new();
        for i in 0..50 {
            let line = format!("{i}:{}", "y".repeat(i * 7919 % 150_000));
            content.extend_from_slice(line.as_bytes());
            content.push(b'\n');
            want.push(line.into_bytes());
        }
        content.extend_from_slice(b"\n\ntorn");
        want.push(b"torn".to_vec());
        std::fs::write(&log, &content).unwrap();
        let h = History::open(&log).unwrap();
        let got: Vec<Line> = h.newest_first().map(Result::unwrap).collect();
        want.reverse();
        assert_eq!(
            got.iter().map(|l| l.bytes.clone()).collect::<Vec<_>>(),
            want
        );
        assert_eq!(h.line_number(&got[0]).unwrap(), 53, "after two empty lines");
        assert_eq!(h.line_number(&got[1]).unwrap(), 50);
        assert_eq!(h.line_number(&got[50]).unwrap(), 1);
        assert_eq!(
            got[1].offset as usize,
            content.len() - 4 - 2 - want[1].len() - 1
        );
        assert!(
            History::open(&dir.path().join("none"))
                .unwrap()
                .newest_first()
                .next()
                .is_none()
        );
    }

    /// `cargo test --lib oplog::tests::bench -- --ignored --nocapture`: one record with 100k
    /// changed paths appended to a growing log, as `engine::log_all` does.
    #[test]
    #[ignore]
    fn bench_append_100k_changed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operations.log");
        let paths: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("site/assets/dir{:03}/file-{i:06}.html", i % 997).into_bytes())
            .collect();
        for round in 0..5 {
            let t = std::time::Instant::now();
            let e = entry("t1", &paths, &[]);
            let built = t.elapsed();
            let t = std::time::Instant::now();
            append_records(&log, std::slice::from_ref(&e.record)).unwrap();
            let line_only = t.elapsed();
            let t = std::time::Instant::now();
            append(&log, vec![e]).unwrap();
            eprintln!(
                "round {round}: build {built:?}; the bounded line alone {line_only:?}; paths \
                 file + line {:?}; log {} bytes",
                t.elapsed(),
                std::fs::metadata(&log).unwrap().len()
            );
        }
        let small = entry("t1", &paths[..3], &[]);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            append(&log, vec![small.clone()]).unwrap();
            eprintln!("small record: {:?}", t.elapsed());
        }
    }
}
