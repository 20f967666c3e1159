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
use std::fmt::Write as _;
use std::io::Read as _;
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

/// One path in a category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The path relative to the source root (lossy when not UTF-8).
    pub path: String,
    /// The exact bytes as hex, only when `path` is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `file`, `dir` or `symlink` (`device`/`special` only for target-only entries).
    pub kind: EntryKind,
    /// Size in bytes (files from the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// BLAKE3 of the source content (files from the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

impl PlanEntry {
    pub fn bare(path: &[u8], kind: EntryKind) -> PlanEntry {
        let (path, path_hex) = encode_path(path);
        PlanEntry {
            path,
            path_hex,
            kind,
            size: None,
            blake3: None,
        }
    }

    pub fn from_entry(path: &[u8], e: &Entry) -> PlanEntry {
        let mut p = PlanEntry::bare(path, e.entry_kind());
        if let manifest::Kind::File { size, .. } = e.kind {
            p.size = Some(size);
            p.blake3 = e.hash_hex();
        }
        p
    }

    /// The exact path bytes.
    pub fn raw_path(&self) -> Vec<u8> {
        match &self.path_hex {
            Some(h) => decode_hex(h).unwrap_or_else(|| self.path.as_bytes().to_vec()),
            None => self.path.as_bytes().to_vec(),
        }
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
            v.sort_by_key(PlanEntry::raw_path);
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
                .filter_map(|e| e.size)
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
    /// Why the target could not be planned (then the categories are empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The typed kind of `error` (`unreachable`, `auth_failed`, `host_key_changed`,
    /// `not_confined`, …; see `error::ErrorKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<crate::error::ErrorKind>,
    /// How the target's content was compared (SSH targets; see [`CheckMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckMode>,
    /// A fingerprint of what the quick check (size, mtime, mode, type) saw on the target
    /// relative to the source: BLAKE3 of the sorted normalised itemize lines. `apply
    /// PLAN_FILE` compares it with a quick dry run and re-plans with checksums only when it
    /// changed (SSH targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
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
            targets,
            digest: String::new(),
        };
        plan.digest = plan.compute_digest();
        plan
    }

    fn compute_digest(&self) -> String {
        let mut copy = self.clone();
        copy.digest = String::new();
        let bytes = serde_json::to_vec(&copy).expect("a plan always serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }

    pub fn has_changes(&self) -> bool {
        self.targets.iter().any(TargetPlan::has_changes)
    }

    pub fn has_errors(&self) -> bool {
        self.targets.iter().any(|t| t.error.is_some())
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan always serialises");
        s.push('\n');
        s
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

    /// The human-readable plan (deterministic, like the JSON).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "source {}  ({} files, {}, digest {})",
            sanitize::for_terminal(&self.source.path),
            self.source.files,
            human_bytes(self.source.bytes),
            &self.source.digest[..16.min(self.source.digest.len())]
        );
        if !self.source.skipped.is_empty() {
            let _ = writeln!(
                s,
                "skipped (devices, fifos, sockets are never sent): {}",
                self.source
                    .skipped
                    .iter()
                    .map(|p| sanitize::for_terminal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !self.source.modes_stripped.is_empty() {
            let _ = writeln!(
                s,
                "note: setuid/setgid bits are never sent; stripped from: {}",
                self.source
                    .modes_stripped
                    .iter()
                    .map(|p| sanitize::for_terminal(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for t in &self.targets {
            let _ = match t.check {
                Some(c) => writeln!(
                    s,
                    "\n{} ({}; {})",
                    t.name,
                    sanitize::for_terminal(&t.address),
                    c.describe()
                ),
                None => writeln!(s, "\n{} ({})", t.name, sanitize::for_terminal(&t.address)),
            };
            if let Some(e) = &t.error {
                let _ = writeln!(s, "  error: {}", sanitize::for_terminal(e));
                let _ = writeln!(s, "{}: error", t.name);
                continue;
            }
            let line = |s: &mut String, mark: &str, e: &PlanEntry, note: &str| {
                let shown = sanitize::bytes_for_terminal(&e.raw_path());
                let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
                let size = e
                    .size
                    .map(|b| format!("  ({})", human_bytes(b)))
                    .unwrap_or_default();
                let _ = writeln!(s, "  {mark} {shown}{slash}{size}{note}");
            };
            for e in &t.changes.added {
                line(&mut s, "+", e, "");
            }
            for e in &t.changes.modified {
                line(&mut s, "~", e, "");
            }
            for e in &t.changes.metadata {
                line(&mut s, "=", e, "  (mode/time only)");
            }
            for e in &t.changes.missing {
                line(
                    &mut s,
                    "-",
                    e,
                    "  (target-only; deleted only with --delete)",
                );
            }
            let m = &t.summary;
            let _ = writeln!(
                s,
                "{}: {} added, {} modified, {} metadata, {} missing, {} unchanged ({} to send)",
                t.name,
                m.added,
                m.modified,
                m.metadata,
                m.missing,
                m.unchanged,
                human_bytes(m.bytes)
            );
            for w in &t.warnings {
                let _ = writeln!(s, "{}: warning: {}", t.name, sanitize::for_terminal(w));
            }
        }
        s
    }
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
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn sample() -> Plan {
        let mut entries = BTreeMap::new();
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
        let listing = BTreeMap::from([(b"old".to_vec(), e(b"o"))]);
        let mut changes = diff::diff(&m, &diff::TargetView::Listing(listing));
        changes.sort();
        let t = |name: &str| TargetPlan {
            name: name.into(),
            kind: TargetKind::Memory,
            address: format!("memory:{name}"),
            delete_allowed: true,
            error: None,
            error_kind: None,
            check: None,
            state: None,
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
    fn snapshots() {
        let p = sample();
        insta::assert_snapshot!("plan_text", p.to_text());
        insta::assert_snapshot!("plan_json", p.to_json());
    }
}
