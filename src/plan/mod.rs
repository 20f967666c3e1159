//! The plan as a value: computed by `plan`, printed (text or JSON), saved with `--out`, and
//! executed unchanged by `apply`.
//!
//! Invariants: a plan holds no timestamps or durations; targets are sorted by name and
//! entries by path bytes, so the same source and target states give a byte-identical plan; its
//! `digest` is BLAKE3 over its canonical JSON without the digest itself. The JSON wire format
//! (`"format": "offsync-plan/1"`) is documented in the README and `offsync-plan(1)`:
//! a path is a UTF-8 string; a path that is not valid UTF-8 is shown lossily (U+FFFD) in
//! `path` and exactly, as lowercase hex of its bytes, in `path_hex`.

pub mod diff;
pub mod excludes;
pub mod manifest;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::sanitize;
use manifest::{Entry, Manifest};

/// Wire format name.
pub const FORMAT: &str = "offsync-plan/1";

/// What a path is. On the wire (plan JSON, snapshots): `file`, `dir`, `symlink`, and for
/// target-only entries `device` or `special`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Device,
    Special,
}

/// What kind of target a plan is for. On the wire: `ssh`, `mirror`, `local`, `memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// rsync over SSH through the forced `rrsync -wo DIR`.
    Ssh,
    /// An encrypted mirror (S3 or a directory).
    Mirror,
    /// A local directory (pull, restore).
    Local,
    /// In-memory (tests).
    Memory,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Ssh => "ssh",
            TargetKind::Mirror => "mirror",
            TargetKind::Local => "local",
            TargetKind::Memory => "memory",
        }
    }
}

/// How an SSH target's content is compared with the source when planning. On the wire:
/// `checksum` or `quick`. Mirrors and local directories always compare BLAKE3 content hashes
/// (the source's come from the hash cache) and have no mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    /// rsync `-c`: every file is read on both ends and compared by checksum. Finds every
    /// content difference, including a file changed on the target with its size and mtime
    /// kept.
    #[default]
    Checksum,
    /// rsync's default quick check: a file differs when its size or mtime differs (the
    /// target's content is not read). Blind to a change on the target that keeps both size
    /// and mtime; `offsync verify` still compares content.
    Quick,
}

impl CheckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckMode::Checksum => "checksum",
            CheckMode::Quick => "quick",
        }
    }

    /// How plan output says it.
    pub fn describe(self) -> &'static str {
        match self {
            CheckMode::Checksum => "content compared by checksum",
            CheckMode::Quick => "quick check: size and mtime on the target",
        }
    }
}

impl std::fmt::Display for CheckMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What apply does with a target's target-only ("extra") paths: config `extra:` (top level
/// and per target), `target add --extra`. On the wire (a target's `extra` in the plan JSON,
/// absent for the default `refuse`): `refuse`, `keep`, `delete`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ExtraPolicy {
    /// Target-only paths refuse the target unless the run deletes them (`--delete`).
    #[default]
    Refuse,
    /// Target-only paths stay: everything else is synced (rsync without `--delete`), and
    /// plan and verify list them as kept without failing. `--delete` still deletes them.
    Keep,
    /// Target-only paths are deleted as if `--delete` were given (the mass-delete guard
    /// still applies).
    Delete,
}

impl ExtraPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraPolicy::Refuse => "refuse",
            ExtraPolicy::Keep => "keep",
            ExtraPolicy::Delete => "delete",
        }
    }

    pub fn is_refuse(&self) -> bool {
        *self == ExtraPolicy::Refuse
    }

    /// What happens to the target-only paths when the run's `--delete` is `delete`: the
    /// flag deletes on every target of the run, `keep` included.
    pub fn with_flag(self, delete: bool) -> ExtraPolicy {
        if delete { ExtraPolicy::Delete } else { self }
    }
}

impl std::fmt::Display for ExtraPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One path in a category.
///
/// On the wire (`offsync-plan/1`): `path` (the path relative to the source root, lossy when
/// not UTF-8), `path_hex` (the exact bytes as hex, only when `path` is not valid UTF-8),
/// `kind`, and for files from the source `size` and `blake3` (lowercase hex). In memory the
/// path is its exact bytes and the hash its 32 bytes (a plan may name every file of a large
/// source); the text forms are made only while serialising.
///
/// 64 bytes and the path's allocation: `size` and `blake3` are kept without `Option`s (which
/// would cost 8 more bytes per entry), with flags saying whether they are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    path: Box<[u8]>,
    size: u64,
    blake3: [u8; 32],
    /// `file`, `dir` or `symlink` (`device`/`special` only for target-only entries).
    pub kind: EntryKind,
    has_size: bool,
    has_blake3: bool,
}

impl PlanEntry {
    pub fn bare(path: &[u8], kind: EntryKind) -> PlanEntry {
        PlanEntry::new(path.into(), kind, None, None)
    }

    pub fn from_entry(path: &[u8], e: &Entry) -> PlanEntry {
        PlanEntry::from_entry_owned(path.into(), e)
    }

    /// [`PlanEntry::bare`] taking the path's allocation.
    pub fn bare_owned(path: Box<[u8]>, kind: EntryKind) -> PlanEntry {
        PlanEntry::new(path, kind, None, None)
    }

    /// [`PlanEntry::from_entry`] taking the path's allocation.
    pub fn from_entry_owned(path: Box<[u8]>, e: &Entry) -> PlanEntry {
        match e.kind {
            manifest::Kind::File { size, hash } => {
                PlanEntry::new(path, e.entry_kind(), Some(size), Some(hash))
            }
            _ => PlanEntry::new(path, e.entry_kind(), None, None),
        }
    }

    fn new(
        path: Box<[u8]>,
        kind: EntryKind,
        size: Option<u64>,
        blake3: Option<[u8; 32]>,
    ) -> PlanEntry {
        PlanEntry {
            path,
            size: size.unwrap_or(0),
            blake3: blake3.unwrap_or([0; 32]),
            kind,
            has_size: size.is_some(),
            has_blake3: blake3.is_some(),
        }
    }

    /// Size in bytes (files from the source).
    pub fn size(&self) -> Option<u64> {
        self.has_size.then_some(self.size)
    }

    /// BLAKE3 of the source content (files from the source).
    pub fn blake3(&self) -> Option<&[u8; 32]> {
        self.has_blake3.then_some(&self.blake3)
    }

    /// The exact path bytes.
    pub fn path_bytes(&self) -> &[u8] {
        &self.path
    }

    /// The exact path bytes, owned.
    pub fn raw_path(&self) -> Vec<u8> {
        self.path.to_vec()
    }

    /// The path as text (lossy when not UTF-8), as in `path` on the wire.
    pub fn path_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// `blake3` as lowercase hex, as on the wire.
    pub fn blake3_hex(&self) -> Option<String> {
        self.blake3()
            .map(|h| blake3::Hash::from(*h).to_hex().to_string())
    }
}

impl Serialize for PlanEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let text = std::str::from_utf8(&self.path);
        let fields = 2
            + usize::from(text.is_err())
            + usize::from(self.has_size)
            + usize::from(self.has_blake3);
        let mut st = s.serialize_struct("PlanEntry", fields)?;
        match text {
            Ok(t) => st.serialize_field("path", t)?,
            Err(_) => {
                let (lossy, hex) = encode_path(&self.path);
                st.serialize_field("path", &lossy)?;
                st.serialize_field("path_hex", &hex)?;
            }
        }
        st.serialize_field("kind", &self.kind)?;
        if let Some(size) = self.size() {
            st.serialize_field("size", &size)?;
        }
        if let Some(h) = self.blake3() {
            st.serialize_field("blake3", blake3::Hash::from(*h).to_hex().as_str())?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for PlanEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<PlanEntry, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            path: String,
            #[serde(default)]
            path_hex: Option<String>,
            kind: EntryKind,
            #[serde(default)]
            size: Option<u64>,
            #[serde(default)]
            blake3: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        // A `path_hex` that is not hex leaves the text path. An entry not in the form offsync
        // writes (such a `path_hex`, uppercase hex) re-serialises differently, so its plan's
        // digest no longer matches and the plan is refused as modified.
        let path = match w.path_hex.as_deref().and_then(decode_hex) {
            Some(bytes) => bytes,
            None => w.path.into_bytes(),
        };
        let blake3 = match w.blake3 {
            None => None,
            Some(h) => Some(
                decode_hex(&h)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("blake3 {h:?} is not 64 hex digits"))
                    })?,
            ),
        };
        Ok(PlanEntry::new(
            path.into_boxed_slice(),
            w.kind,
            w.size,
            blake3,
        ))
    }
}

/// Lossy text plus exact hex (only when the bytes are not UTF-8).
pub fn encode_path(p: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(p) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(p).into_owned(),
            Some(p.iter().map(|b| format!("{b:02x}")).collect()),
        ),
    }
}

/// Bytes from lowercase or uppercase hex.
pub fn decode_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The four categories and the unchanged count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    pub added: Vec<PlanEntry>,
    pub modified: Vec<PlanEntry>,
    pub metadata: Vec<PlanEntry>,
    /// Target-only: would need an explicit delete.
    pub missing: Vec<PlanEntry>,
    pub unchanged: u64,
}

impl Categories {
    pub fn sort(&mut self) {
        for v in [
            &mut self.added,
            &mut self.modified,
            &mut self.metadata,
            &mut self.missing,
        ] {
            // Usually sorted already (diffs walk sorted sides): then no scratch space is needed.
            if !v.is_sorted_by(|a, b| a.path <= b.path) {
                v.sort_by(|a, b| a.path.cmp(&b.path));
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.modified.is_empty()
            && self.metadata.is_empty()
            && self.missing.is_empty()
    }
    pub fn summary(&self) -> Summary {
        Summary {
            added: self.added.len() as u64,
            modified: self.modified.len() as u64,
            metadata: self.metadata.len() as u64,
            missing: self.missing.len() as u64,
            unchanged: self.unchanged,
            bytes: self
                .added
                .iter()
                .chain(&self.modified)
                .filter_map(PlanEntry::size)
                .sum(),
        }
    }
}

/// Counts per category, and the bytes that added and modified files carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub added: u64,
    pub modified: u64,
    pub metadata: u64,
    pub missing: u64,
    pub unchanged: u64,
    pub bytes: u64,
}

/// One target's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub name: String,
    pub kind: TargetKind,
    /// Where it is (`user@host:/path`).
    pub address: String,
    /// The target accepts deletions (not linked with `--no-delete`).
    pub delete_allowed: bool,
    /// What apply does with target-only paths (`extra:`; absent: `refuse`). Part of the
    /// digest and of the staleness check: a saved plan keeps the policy it was made with.
    #[serde(default, skip_serializing_if = "ExtraPolicy::is_refuse")]
    pub extra: ExtraPolicy,
    /// Why the target could not be planned (then the categories are empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The typed kind of `error` (`unreachable`, `auth_failed`, `host_key_changed`,
    /// `not_confined`, …; see `error::ErrorKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<crate::error::ErrorKind>,
    /// The target's own exclude patterns (config `targets[].exclude`), in force after
    /// `source.excludes` for this target only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// How the target's content was compared (SSH targets; see [`CheckMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckMode>,
    /// A fingerprint of what the quick check (size, mtime, mode, type) saw on the target
    /// relative to the source: BLAKE3 of the sorted normalised itemize lines. `apply
    /// PLAN_FILE` compares it with a quick dry run and re-plans with checksums only when it
    /// changed (SSH targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A `releases` target (see `releases`): the release the plan compared the source with;
    /// apply uploads a new release and switches `current` to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleasePlan>,
    #[serde(flatten)]
    pub changes: Categories,
    pub summary: Summary,
    /// What apply will refuse or should make you look twice (the mass-delete guard); shown
    /// before apply asks anything. Not part of the staleness check of a saved plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TargetPlan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the target differs from the source in a way that counts: any change, except
    /// target-only paths on a target that keeps them (`extra: keep`).
    pub fn drifted(&self) -> bool {
        let c = &self.changes;
        !(c.added.is_empty()
            && c.modified.is_empty()
            && c.metadata.is_empty()
            && (c.missing.is_empty() || self.extra == ExtraPolicy::Keep))
    }

    /// Whether `other` plans the same work (warnings, which depend on flags, and the quick
    /// state fingerprint, which may change without changing the work, aside; the mode only
    /// when both record one — plans written before modes existed have none).
    pub fn same_work(&self, other: &TargetPlan) -> bool {
        let both_modes = self.check.is_some() && other.check.is_some();
        let strip = |t: &TargetPlan| TargetPlan {
            warnings: Vec::new(),
            state: None,
            check: if both_modes { t.check } else { None },
            ..t.clone()
        };
        strip(self) == strip(other)
    }
}

/// A `releases` target's part of a plan (JSON `"release"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePlan {
    /// The release `current` points at, proven by the dry run (its tag is there), which the
    /// source was compared with; `null`: no release of offsync's is live yet (the first
    /// release is uploaded whole).
    pub current: Option<String>,
    /// Releases kept after a switch, `current` included (`keep:`).
    pub keep: u32,
}

/// The source side of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
    pub excludes: Vec<String>,
    /// Devices, fifos and sockets that are never transferred.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Files and directories sent without their setuid/setgid bits (offsync never creates
    /// such files). Absent when empty, so plans without them are unchanged `offsync-plan/1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes_stripped: Vec<String>,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub source: SourceInfo,
    /// `plan --delete`: the target-only paths listed are to be deleted on every target, and
    /// `apply PLAN_FILE` deletes them without `--delete` again. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete: bool,
    pub targets: Vec<TargetPlan>,
    /// BLAKE3 of the canonical JSON of everything above.
    #[serde(default)]
    pub digest: String,
}

impl Plan {
    /// Assemble a plan (sorts everything and computes the digest).
    pub fn new(manifest: &Manifest, excludes: &[String], mut targets: Vec<TargetPlan>) -> Plan {
        for t in &mut targets {
            t.changes.sort();
            t.summary = t.changes.summary();
        }
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let mut plan = Plan {
            format: FORMAT.to_string(),
            source: SourceInfo {
                path: manifest.root.display().to_string(),
                digest: manifest.digest_hex(),
                files: manifest.file_count(),
                bytes: manifest.total_bytes(),
                excludes: excludes.to_vec(),
                skipped: manifest
                    .skipped
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
                modes_stripped: manifest
                    .modes_stripped
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
            },
            delete: false,
            targets,
            digest: String::new(),
        };
        plan.digest = plan.compute_digest();
        plan
    }

    /// This plan recording the run's `--delete` decision (digest recomputed).
    pub fn with_delete(mut self, delete: bool) -> Plan {
        self.delete = delete;
        self.reseal();
        self
    }

    /// Recompute the digest after changing the plan.
    pub fn reseal(&mut self) {
        self.digest = self.compute_digest();
    }

    /// What apply does with `t`'s target-only paths under this plan's decisions.
    pub fn extra_for(&self, t: &TargetPlan) -> ExtraPolicy {
        t.extra.with_flag(self.delete)
    }

    /// BLAKE3 of the compact JSON of the plan with an empty `digest`, streamed into the
    /// hasher (no copy of the plan, no JSON in memory).
    fn compute_digest(&self) -> String {
        #[derive(Serialize)]
        struct Unsigned<'a> {
            format: &'a str,
            source: &'a SourceInfo,
            #[serde(skip_serializing_if = "is_false")]
            delete: bool,
            targets: &'a [TargetPlan],
            digest: &'a str,
        }
        let mut hasher = blake3::Hasher::new();
        let mut w = std::io::BufWriter::with_capacity(16 * 1024, &mut hasher);
        serde_json::to_writer(
            &mut w,
            &Unsigned {
                format: &self.format,
                source: &self.source,
                delete: self.delete,
                targets: &self.targets,
                digest: "",
            },
        )
        .expect("a plan always serialises");
        w.flush().expect("hashing cannot fail");
        drop(w);
        hasher.finalize().to_hex().to_string()
    }

    pub fn has_changes(&self) -> bool {
        self.targets.iter().any(TargetPlan::has_changes)
    }

    pub fn has_errors(&self) -> bool {
        self.targets.iter().any(|t| t.error.is_some())
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out).expect("a plan always serialises");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// [`Plan::to_json`], written to `w` as it is produced (buffer `w`).
    pub fn write_json(&self, mut w: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut w, self)?;
        w.write_all(b"\n")
    }

    /// Read a saved plan, checking its format and digest.
    pub fn from_json(text: &str, origin: &str) -> Result<Plan> {
        let plan: Plan = serde_json::from_str(text)
            .with_context(|| format!("{origin} is not an offsync plan (JSON)"))?;
        plan.check(origin)?;
        Ok(plan)
    }

    /// Format and digest checks for a plan read from `origin`.
    fn check(&self, origin: &str) -> Result<()> {
        let plan = self;
        if plan.format != FORMAT {
            anyhow::bail!(
                "{origin} has format {:?}; this offsync reads {FORMAT}",
                plan.format
            );
        }
        if plan.compute_digest() != plan.digest {
            anyhow::bail!(
                "{origin} was modified after it was written (its digest does not match); plan again with --out"
            );
        }
        Ok(())
    }

    /// The human-readable plan (deterministic, like the JSON): every path, targets with
    /// identical work grouped, and the grand total line.
    pub fn to_text(&self) -> String {
        self.to_text_with(TextOptions::default())
    }

    /// [`Plan::to_text`] with other [`TextOptions`].
    pub fn to_text_with(&self, opts: TextOptions) -> String {
        let mut out = Vec::new();
        self.write_text_with(&mut out, opts)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("the text plan is UTF-8")
    }

    /// [`Plan::to_text`], written to `w` line by line (buffer `w`).
    pub fn write_text(&self, w: impl std::io::Write) -> std::io::Result<()> {
        self.write_text_with(w, TextOptions::default())
    }

    /// The text plan in the form `opts` asks for, written to `w` line by line (buffer `w`).
    ///
    /// Layout: the source line (and its notes); then one section per group of targets —
    /// a header naming the targets and their addresses, the body (every path, per-directory
    /// counts, or nothing for [`TextDetail::Summary`]), and each target's summary line
    /// (`NAME: N added, …`, kept as it always was for scripts that grep it), release line and
    /// warnings; then a blank line and the grand total (`Plan: N targets, …`).
    pub fn write_text_with(
        &self,
        mut w: impl std::io::Write,
        opts: TextOptions,
    ) -> std::io::Result<()> {
        let s = &mut w;
        writeln!(
            s,
            "source {}  ({} files, {}, digest {})",
            sanitize::for_terminal(&self.source.path),
            self.source.files,
            human_bytes(self.source.bytes),
            &self.source.digest[..16.min(self.source.digest.len())]
        )?;
        if !self.source.skipped.is_empty() {
            writeln!(
                s,
                "skipped (devices, fifos, sockets are never sent): {}",
                self.source
                    .skipped
                    .iter()
                    .map(|p| sanitize::for_terminal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if !self.source.modes_stripped.is_empty() {
            writeln!(
                s,
                "note: setuid/setgid bits are never sent; stripped from: {}",
                self.source
                    .modes_stripped
                    .iter()
                    .map(|p| sanitize::for_terminal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if self.delete {
            writeln!(
                s,
                "decided: --delete (the target-only paths listed are deleted on apply)"
            )?;
        }
        if opts.detail == TextDetail::Summary {
            // Counts only: one line per target (its errors and warnings too: they say what
            // apply will not do), no headers, no paths.
            if !self.targets.is_empty() {
                writeln!(s)?;
            }
            for t in &self.targets {
                match &t.error {
                    Some(e) => writeln!(s, "{}: error: {}", t.name, sanitize::for_terminal(e))?,
                    None => write_target_lines(s, t, false)?,
                }
            }
        } else {
            for group in self.groups(!opts.ungrouped) {
                write_group(s, &group, opts.detail, self.delete)?;
            }
        }
        writeln!(s)?;
        writeln!(s, "{}", self.total_line())
    }

    /// The targets in sections: each target with the first earlier one whose listing is the
    /// same ([`same_listing`]) when `group`, else each alone. Deterministic: targets are
    /// sorted by name, so groups come in the order of their first target's name, and the
    /// names within a group in name order.
    fn groups(&self, group: bool) -> Vec<Vec<&TargetPlan>> {
        let mut groups: Vec<Vec<&TargetPlan>> = Vec::new();
        for t in &self.targets {
            let home = if group {
                groups.iter_mut().find(|g| same_listing(g[0], t))
            } else {
                None
            };
            match home {
                Some(g) => g.push(t),
                None => groups.push(vec![t]),
            }
        }
        groups
    }

    /// `Plan: 3 targets, 442 to add, 1 to change, 0 metadata, 1 target-only (deleted only with
    /// --delete), 60.8 MiB to send; 1 target failed to plan`. Counts and bytes are summed
    /// over the targets that could be planned (a path added on three targets counts three:
    /// it is three transfers).
    pub fn total_line(&self) -> String {
        let planned = || self.targets.iter().filter(|t| t.error.is_none());
        let sum = |f: fn(&Summary) -> u64| planned().map(|t| f(&t.summary)).sum::<u64>();
        let n = self.targets.len();
        let failed = n - planned().count();
        let missing = sum(|m| m.missing);
        // What happens to the target-only paths: one policy for all of them, or the rule.
        let fates: std::collections::BTreeSet<ExtraPolicy> = planned()
            .filter(|t| t.summary.missing > 0)
            .map(|t| self.extra_for(t))
            .collect();
        let fate = match fates.iter().collect::<Vec<_>>().as_slice() {
            [] => "",
            [ExtraPolicy::Delete] => " (deleted on apply)",
            [ExtraPolicy::Keep] => " (kept: extra: keep)",
            _ => " (deleted only with --delete)",
        };
        let mut line = format!(
            "Plan: {n} {}, {} to add, {} to change, {} metadata, {missing} target-only{}, {} to send",
            plural(n as u64, "target", "targets"),
            sum(|m| m.added),
            sum(|m| m.modified),
            sum(|m| m.metadata),
            fate,
            human_bytes(sum(|m| m.bytes)),
        );
        if failed > 0 {
            line.push_str(&format!(
                "; {failed} {} failed to plan",
                plural(failed as u64, "target", "targets")
            ));
        }
        line
    }
}

/// How much of each target's work the text plan shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextDetail {
    /// Every path (`plan`, `apply`'s preview).
    #[default]
    Paths,
    /// Per-directory counts instead of paths (`plan --stat`; see [`STAT_DEPTH`]).
    Stat,
    /// Counts only: one line per target and the total (`plan --summary`).
    Summary,
}

/// How the text plan is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    pub detail: TextDetail,
    /// Every target in its own section even when its listing equals another's (the stale
    /// plan diff compares target by target, so a regrouping does not hide the change).
    pub ungrouped: bool,
}

/// `plan --stat` counts paths per directory up to this depth: `a/b/c/d.txt` and the
/// directory `a/b/c` count under `a/b/`, `a/x.txt` and the directory `a` under `a/`, and
/// `x.txt` under `./`.
pub const STAT_DEPTH: usize = 2;

fn is_false(b: &bool) -> bool {
    !*b
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// Whether two targets' sections would list the same thing: the same paths with the same
/// details in every category, the same comparison mode, release and warnings, and neither
/// failed. The unchanged count and the address may differ (each target keeps its own summary
/// line; the header names every address).
fn same_listing(a: &TargetPlan, b: &TargetPlan) -> bool {
    let (x, y) = (&a.changes, &b.changes);
    a.error.is_none()
        && b.error.is_none()
        && a.check == b.check
        && a.extra == b.extra
        && a.release == b.release
        && a.warnings == b.warnings
        // Counts first: lists of different lengths differ without a walk.
        && (a.summary.added, a.summary.modified, a.summary.metadata, a.summary.missing)
            == (b.summary.added, b.summary.modified, b.summary.metadata, b.summary.missing)
        && x.added == y.added
        && x.modified == y.modified
        && x.metadata == y.metadata
        && x.missing == y.missing
}

/// One section: header, body, then each target's own lines.
fn write_group(
    s: &mut dyn std::io::Write,
    group: &[&TargetPlan],
    detail: TextDetail,
    delete: bool,
) -> std::io::Result<()> {
    let t = group[0];
    let mut notes = Vec::new();
    if let Some(r) = &t.release {
        notes.push(match &r.current {
            Some(c) => format!(
                "releases: compared with current -> releases/{}",
                sanitize::for_terminal(c)
            ),
            None => "releases: no current release yet".to_string(),
        });
    }
    if let Some(c) = t.check {
        notes.push(c.describe().to_string());
    }
    if !t.extra.is_refuse() {
        notes.push(format!("extra: {}", t.extra));
    }
    let names = group
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut about = Vec::new();
    if group.len() > 1 {
        about.push(format!("{} targets", group.len()));
    }
    about.push(
        group
            .iter()
            .map(|t| sanitize::for_terminal(&t.address))
            .collect::<Vec<_>>()
            .join(", "),
    );
    about.extend(notes);
    writeln!(s, "\n{names} ({})", about.join("; "))?;
    if let Some(e) = &t.error {
        // Failed targets are never grouped.
        writeln!(s, "  error: {}", sanitize::for_terminal(e))?;
        writeln!(s, "{}: error", t.name)?;
        return Ok(());
    }
    match detail {
        TextDetail::Stat => write_stat(s, t)?,
        _ => write_paths(s, t, t.extra.with_flag(delete))?,
    }
    for t in group {
        write_target_lines(s, t, true)?;
    }
    Ok(())
}

/// Every path of `t`, one line each.
fn write_paths(
    s: &mut dyn std::io::Write,
    t: &TargetPlan,
    extra: ExtraPolicy,
) -> std::io::Result<()> {
    let line = |s: &mut dyn std::io::Write, mark: &str, e: &PlanEntry, note: &str| {
        let shown = sanitize::bytes_for_terminal(e.path_bytes());
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        match e.size() {
            Some(b) => writeln!(s, "  {mark} {shown}{slash}  ({}){note}", human_bytes(b)),
            None => writeln!(s, "  {mark} {shown}{slash}{note}"),
        }
    };
    for e in &t.changes.added {
        line(s, "+", e, "")?;
    }
    for e in &t.changes.modified {
        line(s, "~", e, "")?;
    }
    for e in &t.changes.metadata {
        line(s, "=", e, "  (mode/time only)")?;
    }
    let missing_note = match (t.release.is_some(), extra) {
        (true, ExtraPolicy::Delete) => "  (only in the current release; left out of the new one)",
        (true, _) => "  (only in the current release; left out of the new one only with --delete)",
        (false, ExtraPolicy::Delete) => "  (target-only; deleted on apply)",
        (false, ExtraPolicy::Keep) => "  (extra, kept)",
        (false, ExtraPolicy::Refuse) => "  (target-only; deleted only with --delete)",
    };
    for e in &t.changes.missing {
        line(s, "-", e, missing_note)?;
    }
    Ok(())
}

/// The directory a path counts under in `plan --stat` (see [`STAT_DEPTH`]); empty for the
/// top level.
fn stat_dir(e: &PlanEntry) -> &[u8] {
    let p = e.path_bytes();
    let dir = if e.kind == EntryKind::Dir {
        p
    } else {
        p.iter()
            .rposition(|&b| b == b'/')
            .map_or(&p[..0], |i| &p[..i])
    };
    let cut = dir
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .nth(STAT_DEPTH - 1)
        .map_or(dir.len(), |(i, _)| i);
    &dir[..cut]
}

/// `plan --stat`: per directory, `+added ~modified =metadata -target-only` and the bytes to
/// send, sorted by directory (path bytes); only directories with a change.
fn write_stat(s: &mut dyn std::io::Write, t: &TargetPlan) -> std::io::Result<()> {
    // [added, modified, metadata, missing, bytes]
    let mut dirs: std::collections::BTreeMap<&[u8], [u64; 5]> = Default::default();
    let c = &t.changes;
    for (i, list) in [&c.added, &c.modified, &c.metadata, &c.missing]
        .into_iter()
        .enumerate()
    {
        for e in list {
            let row = dirs.entry(stat_dir(e)).or_default();
            row[i] += 1;
            if i < 2 {
                row[4] += e.size().unwrap_or(0);
            }
        }
    }
    let rows: Vec<(String, [String; 5])> = dirs
        .into_iter()
        .map(|(d, n)| {
            let name = if d.is_empty() {
                "./".to_string()
            } else {
                format!("{}/", sanitize::bytes_for_terminal(d))
            };
            (
                name,
                [
                    format!("+{}", n[0]),
                    format!("~{}", n[1]),
                    format!("={}", n[2]),
                    format!("-{}", n[3]),
                    human_bytes(n[4]),
                ],
            )
        })
        .collect();
    let wn = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let wc: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r.1[i].len()).max().unwrap_or(0))
        .collect();
    for (name, cells) in &rows {
        writeln!(
            s,
            "  {name:<wn$}  {:<w0$} {:<w1$} {:<w2$} {:<w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = wc[0],
            w1 = wc[1],
            w2 = wc[2],
            w3 = wc[3],
            w4 = wc[4],
        )?;
    }
    Ok(())
}

/// A target's own lines: its summary line, what apply does to a releases target, its
/// warnings (`with_release_note`: not in `--summary`, which shows counts only).
fn write_target_lines(
    s: &mut dyn std::io::Write,
    t: &TargetPlan,
    with_release_note: bool,
) -> std::io::Result<()> {
    let m = &t.summary;
    writeln!(
        s,
        "{}: {} added, {} modified, {} metadata, {} missing, {} unchanged ({} to send)",
        t.name,
        m.added,
        m.modified,
        m.metadata,
        m.missing,
        m.unchanged,
        human_bytes(m.bytes)
    )?;
    if with_release_note && t.release.is_some() && t.has_changes() {
        writeln!(
            s,
            "{}: apply uploads a new release beside current (unchanged files hard-linked), verifies it, then switches current to it",
            t.name
        )?;
    }
    for w in &t.warnings {
        writeln!(s, "{}: warning: {}", t.name, sanitize::for_terminal(w))?;
    }
    Ok(())
}

/// The largest saved plan `apply PLAN_FILE` reads: 256 MiB. A plan entry takes about 200
/// bytes of JSON, so this leaves room for a million changed paths on each of several targets,
/// while `apply /dev/zero` (or a mistyped multi-gigabyte file) fails at once instead of
/// eating memory.
pub const PLAN_FILE_CAP: u64 = 256 << 20;

/// Read a saved plan (`apply PLAN_FILE`): at most [`PLAN_FILE_CAP`] bytes, UTF-8, an
/// `offsync-plan/1` document whose digest matches. Every failure is bad input (exit 64) that
/// names the file and the fix; nothing is read past the cap.
pub fn read_plan_file(path: &Path) -> Result<Plan> {
    read_plan_file_capped(path, PLAN_FILE_CAP)
}

impl Plan {
    /// See [`read_plan_file`].
    pub fn read_file(path: &Path) -> Result<Plan> {
        read_plan_file(path)
    }
    /// See [`read_plan_file_for`].
    pub fn read_file_for(path: &Path, source: Option<&str>) -> Result<Plan> {
        read_plan_file_for(path, source)
    }
}

/// [`read_plan_file`], and the plan must have been made for `source`, the source that
/// `config.yaml` names now: a plan of another source is refused before anything runs.
pub fn read_plan_file_for(path: &Path, source: Option<&str>) -> Result<Plan> {
    let plan = read_plan_file(path)?;
    if let Some(source) = source {
        // Plans record the canonical source path; compare like with like.
        let now = std::fs::canonicalize(source).unwrap_or_else(|_| Path::new(source).into());
        if Path::new(&plan.source.path) != now {
            return Err(crate::input_err!(
                "plan file {} was made for source {}, but config.yaml's source is {}; nothing was transferred; run `offsync plan --out FILE` again",
                path.display(),
                sanitize::for_terminal(&plan.source.path),
                now.display()
            ));
        }
    }
    Ok(plan)
}

fn read_plan_file_capped(path: &Path, cap: u64) -> Result<Plan> {
    let shown = path.display();
    let bad = |why: String| {
        crate::input_err!(
            "plan file {shown} {why}; pass a file written by `offsync plan --out FILE`"
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    // A regular file over the cap is refused without reading a byte (a sparse file can be
    // huge and cost nothing to create).
    if let Ok(m) = file.metadata()
        && m.is_file()
        && m.len() > cap
    {
        return Err(bad(format!(
            "is {} (over the {} limit for plans)",
            human_bytes(m.len()),
            human_bytes(cap)
        )));
    }
    let mut reader = std::io::BufReader::new(file).take(cap + 1);
    // A plan is a JSON object: anything else (a device such as /dev/zero, a binary file) is
    // refused at its first byte instead of after reading up to the cap.
    let mut text = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match reader.read(&mut b) {
            Ok(0) => return Err(bad("is empty".into())),
            Ok(_) if b[0].is_ascii_whitespace() => continue,
            Ok(_) if b[0] == b'{' => {
                text.push(b[0]);
                break;
            }
            Ok(_) => {
                return Err(bad(
                    "is not an offsync plan (it is not a JSON object)".into()
                ));
            }
            Err(e) => return Err(bad(format!("cannot be read ({e})"))),
        }
    }
    reader
        .read_to_end(&mut text)
        .map_err(|e| bad(format!("cannot be read ({e})")))?;
    if text.len() as u64 > cap {
        return Err(bad(format!(
            "is over the {} limit for plans",
            human_bytes(cap)
        )));
    }
    let text = String::from_utf8(text).map_err(|_| bad("is not UTF-8 text".into()))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        if e.is_eof() {
            bad("is truncated (the JSON ends early)".into())
        } else {
            bad(format!("is not an offsync plan ({e})"))
        }
    })?;
    plan.check(&format!("plan file {shown}"))
        .map_err(|e| crate::input_err!("{e:#}"))?;
    Ok(plan)
}

/// `1.5 MiB`-style sizes (exact bytes below 1 KiB).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sample() -> Plan {
        let mut entries = manifest::Entries::new();
        let e = |c: &[u8]| Entry {
            kind: manifest::Kind::File {
                size: c.len() as u64,
                hash: *blake3::hash(c).as_bytes(),
            },
            mode: 0o644,
            mtime_s: 1_700_000_000,
            mtime_ns: 0,
        };
        entries.insert(b"a.txt".to_vec(), e(b"a"));
        entries.insert(b"bad\xffname".to_vec(), e(b"b"));
        entries.insert(b"line\nbreak".to_vec(), e(b"c"));
        let m = Manifest {
            root: PathBuf::from("/srv/src"),
            digest: manifest::digest(&entries),
            entries,
            skipped: vec![],
            modes_stripped: vec![],
        };
        let listing = [(b"old".to_vec(), e(b"o"))].into_iter().collect();
        let mut changes = diff::diff(&m, &diff::TargetView::Listing(listing));
        changes.sort();
        let t = |name: &str| TargetPlan {
            name: name.into(),
            kind: TargetKind::Memory,
            address: format!("memory:{name}"),
            delete_allowed: true,
            extra: Default::default(),
            error: None,
            error_kind: None,
            excludes: Vec::new(),
            check: None,
            state: None,
            release: None,
            changes: changes.clone(),
            summary: Summary::default(),
            warnings: Vec::new(),
        };
        Plan::new(&m, &[".git/".into()], vec![t("web2"), t("web1")])
    }

    #[test]
    fn deterministic_and_sorted() {
        let a = sample();
        let b = sample();
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(a.targets[0].name, "web1");
        let back = Plan::from_json(&a.to_json(), "plan.json").unwrap();
        assert_eq!(back, a);
        let raw: Vec<Vec<u8>> = back.targets[0]
            .changes
            .added
            .iter()
            .map(|e| e.raw_path())
            .collect();
        assert!(raw.contains(&b"bad\xffname".to_vec()));
    }

    #[test]
    fn decisions_are_covered_by_the_digest() {
        let p = sample();
        let plain = p.to_json();
        assert!(!plain.contains("\"delete\"") && !plain.contains("\"extra\""));
        // Recorded, they are in the JSON and the digest; old plans (without them) still read.
        let mut d = p.clone().with_delete(true);
        d.targets[0].extra = ExtraPolicy::Keep;
        d.reseal();
        let json = d.to_json();
        assert!(json.contains("\"delete\": true") && json.contains("\"extra\": \"keep\""));
        assert_eq!(Plan::from_json(&json, "p").unwrap(), d);
        assert_ne!(d.digest, p.digest);
        for (from, to) in [
            ("\"delete\": true", "\"delete\": false"),
            ("\"extra\": \"keep\"", "\"extra\": \"delete\""),
        ] {
            let err = Plan::from_json(&json.replacen(from, to, 1), "p")
                .unwrap_err()
                .to_string();
            assert!(err.contains("modified after it was written"), "{err}");
        }
        // Removing the decision is tampering too.
        let stripped = json.replacen("  \"delete\": true,\n", "", 1);
        assert_ne!(stripped, json);
        assert!(Plan::from_json(&stripped, "p").is_err());
    }

    #[test]
    fn the_text_says_what_happens_to_target_only_paths() {
        let p = sample();
        assert!(
            p.to_text()
                .contains("- old  (target-only; deleted only with --delete)")
        );
        let d = p.clone().with_delete(true);
        let text = d.to_text();
        assert!(text.contains("decided: --delete"), "{text}");
        assert!(
            text.contains("- old  (target-only; deleted on apply)"),
            "{text}"
        );
        assert!(
            text.contains("1 target-only (deleted on apply)")
                || text.contains("2 target-only (deleted on apply)"),
            "{text}"
        );
        let mut k = p.clone();
        for t in &mut k.targets {
            t.extra = ExtraPolicy::Keep;
        }
        let text = k.to_text();
        assert!(
            text.contains("- old  (extra, kept)") && text.contains("extra: keep"),
            "{text}"
        );
        assert!(text.contains("(kept: extra: keep)"), "{text}");
        // A kept extra is not drift; anything else is.
        assert!(!k.targets[0].drifted() || !k.targets[0].changes.added.is_empty());
    }

    #[test]
    fn tampering_is_detected() {
        let json = sample().to_json().replace("\"old\"", "\"etc\"");
        let err = Plan::from_json(&json, "plan.json").unwrap_err().to_string();
        assert!(err.contains("modified after it was written"), "{err}");
    }

    #[test]
    fn plan_files_are_capped_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let json = sample().to_json();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let is_input = |e: &anyhow::Error| e.downcast_ref::<crate::error::InputError>().is_some();
        let good = write("good.json", json.as_bytes());
        assert_eq!(read_plan_file(&good).unwrap(), sample());
        // Exactly at the cap is fine; one byte over is not.
        let len = json.len() as u64;
        assert!(read_plan_file_capped(&good, len).is_ok());
        let cases: Vec<(std::path::PathBuf, u64, &str)> = vec![
            (good.clone(), len - 1, "limit"),
            (
                std::path::PathBuf::from("/dev/zero"),
                PLAN_FILE_CAP,
                "not a JSON object",
            ),
            (
                write("trunc.json", &json.as_bytes()[..len as usize / 2]),
                PLAN_FILE_CAP,
                "truncated",
            ),
            (
                write("latin1.json", b"{\"format\": \"\xff\"}"),
                PLAN_FILE_CAP,
                "UTF-8",
            ),
            (
                write("other.json", b"{\"format\": \"x\"}"),
                PLAN_FILE_CAP,
                "not an offsync plan",
            ),
            (write("empty.json", b""), PLAN_FILE_CAP, "empty"),
            (
                write("edited.json", json.replace("web1", "webX").as_bytes()),
                PLAN_FILE_CAP,
                "modified",
            ),
        ];
        for (p, cap, why) in cases {
            let err = read_plan_file_capped(&p, cap).unwrap_err();
            let msg = format!("{err:#}");
            assert!(is_input(&err), "{why}: exit 64 expected: {msg}");
            assert!(msg.contains(why), "{why}: {msg}");
            assert!(
                msg.contains(&p.display().to_string()),
                "names the file: {msg}"
            );
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn digest_is_blake3_of_the_compact_json_without_it() {
        // The streamed digest is the one plans have always carried: BLAKE3 of the compact JSON
        // of the plan with an empty `digest`.
        let p = sample();
        let mut copy = p.clone();
        copy.digest = String::new();
        let want = blake3::hash(&serde_json::to_vec(&copy).unwrap())
            .to_hex()
            .to_string();
        assert_eq!(p.digest, want);
    }

    #[test]
    fn entries_are_compact_and_serialise_as_before() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<PlanEntry>(), 64);
        let h = *blake3::hash(b"x").as_bytes();
        let e = PlanEntry::new(
            b"d\xffir/f".to_vec().into(),
            EntryKind::File,
            Some(7),
            Some(h),
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"path\":\"d\u{fffd}ir/f\",\"path_hex\":\"64ff69722f66\",\"kind\":\"file\",\"size\":7,\"blake3\":\"{}\"}}",
                blake3::Hash::from(h).to_hex()
            )
        );
        assert_eq!(serde_json::from_str::<PlanEntry>(&json).unwrap(), e);
        let bare = PlanEntry::bare(b"dir", EntryKind::Dir);
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"path":"dir","kind":"dir"}"#
        );
        assert_eq!((bare.size(), bare.blake3()), (None, None));
        let bad = r#"{"path":"f","kind":"file","blake3":"abc"}"#;
        let err = serde_json::from_str::<PlanEntry>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn snapshots() {
        let p = sample();
        insta::assert_snapshot!("plan_text", p.to_text());
        insta::assert_snapshot!("plan_json", p.to_json());
        // `offsync show` of a plan saved with `plan --delete` and a target with `extra: keep`.
        let mut d = p.with_delete(true);
        d.targets[1].extra = ExtraPolicy::Keep;
        d.reseal();
        insta::assert_snapshot!("plan_text_decided", d.to_text());
    }

    /// `sample` with a third target whose listing differs, and a failed fourth.
    fn mixed() -> Plan {
        let mut p = sample();
        let mut other = p.targets[0].clone();
        other.name = "web3".into();
        other.address = "memory:web3".into();
        other.changes.missing.clear();
        other.changes.modified.push(PlanEntry::new(
            b"deep/er/still/x.bin".to_vec().into(),
            EntryKind::File,
            Some(2048),
            Some([7; 32]),
        ));
        other
            .changes
            .metadata
            .push(PlanEntry::bare(b"deep/er", EntryKind::Dir));
        other.summary = other.changes.summary();
        let mut broken = p.targets[0].clone();
        broken.name = "web4".into();
        broken.address = "memory:web4".into();
        broken.changes = Categories::default();
        broken.summary = Summary::default();
        broken.error = Some("unreachable".into());
        p.targets.push(other);
        p.targets.push(broken);
        p
    }

    #[test]
    fn text_forms() {
        let p = mixed();
        let with = |detail, ungrouped| p.to_text_with(TextOptions { detail, ungrouped });
        insta::assert_snapshot!("plan_text_mixed", with(TextDetail::Paths, false));
        insta::assert_snapshot!("plan_text_summary", with(TextDetail::Summary, false));
        insta::assert_snapshot!("plan_text_stat", with(TextDetail::Stat, false));
        // Ungrouped: every target in its own section, as before grouping existed.
        let flat = with(TextDetail::Paths, true);
        assert!(!flat.contains("web1, web2"), "{flat}");
        assert_eq!(flat.matches("  + a.txt").count(), 3, "{flat}");
        assert!(
            flat.ends_with("\nPlan: 4 targets, 9 to add, 1 to change, 1 metadata, 2 target-only (deleted only with --delete), 2.0 KiB to send; 1 target failed to plan\n"),
            "{flat}"
        );
    }

    #[test]
    fn stat_directories_stop_at_two_levels() {
        let dir = |p: &[u8], kind| stat_dir(&PlanEntry::bare(p, kind)).to_vec();
        assert_eq!(dir(b"x.txt", EntryKind::File), b"");
        assert_eq!(dir(b"a", EntryKind::Dir), b"a");
        assert_eq!(dir(b"a/x.txt", EntryKind::File), b"a");
        assert_eq!(dir(b"a/b", EntryKind::Symlink), b"a");
        assert_eq!(dir(b"a/b", EntryKind::Dir), b"a/b");
        assert_eq!(dir(b"a/b/c", EntryKind::Dir), b"a/b");
        assert_eq!(dir(b"a/b/c/d.txt", EntryKind::File), b"a/b");
    }

    /// Three targets with the same 441 changed paths: about 441 lines, not 3 × 441.
    #[test]
    fn identical_targets_are_listed_once() {
        let mut p = sample();
        let t = &mut p.targets[0];
        t.changes.added = (0..441)
            .map(|i| PlanEntry::bare(format!("f{i:03}").as_bytes(), EntryKind::File))
            .collect();
        t.changes.missing.clear();
        t.summary = t.changes.summary();
        let one = p.targets[0].clone();
        p.targets = ["h1", "h2", "h3"]
            .iter()
            .map(|n| TargetPlan {
                name: (*n).into(),
                address: format!("memory:{n}"),
                ..one.clone()
            })
            .collect();
        let text = p.to_text();
        assert!(text.contains("\nh1, h2, h3 (3 targets; memory:h1, memory:h2, memory:h3)\n"));
        // source, blank, header, 441 paths, 3 summary lines, blank, total.
        assert_eq!(text.lines().count(), 441 + 8, "{text}");
        assert!(text.ends_with("\nPlan: 3 targets, 1323 to add, 0 to change, 0 metadata, 0 target-only, 0 B to send\n"), "{text}");
        let flat = p.to_text_with(TextOptions {
            ungrouped: true,
            ..Default::default()
        });
        assert!(
            flat.lines().count() > 3 * 441,
            "ungrouped lists every target"
        );
    }
}
