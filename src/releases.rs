//! The `releases` layout of SSH targets: each apply uploads a complete tree to
//! `releases/<id>/` beside the live one, verifies it, and only then switches the `current`
//! symlink to it atomically; `rollback` switches `current` back.
//!
//! On the target (inside the directory `link --path` allowed; the key still runs nothing but
//! `rrsync -wo`):
//!
//! ```text
//! DIR/.offsync-marker-<m>        the target marker (see `marker`)
//! DIR/current -> releases/<id>   switched by pushing a changed symlink: rsync's receiver
//!                                writes `.current.<pid>` and renames it over `current`
//! DIR/releases/<id>/             one complete tree per release; unchanged files are hard
//!                                links to the previous release (`--link-dest`)
//! DIR/releases/<id>/.offsync-marker-<m>, .offsync-release-<id>
//!                                the marker and the release's own tag, so one dry run into
//!                                `current/` proves both which directory it is and which
//!                                release `current` points at (nothing can be read back)
//! ```
//!
//! Invariants:
//! - a release directory is written only before it is switched to, and never after: every
//!   later apply writes a new directory, so a reader that resolved `current` once sees one
//!   release's files, whole;
//! - `current` is switched only to a release that verified, and only with one rename;
//! - pruning deletes only releases this controller recorded, never the one `current` points
//!   at, and only on targets that allow deletes;
//! - the record (`$OFFSYNC_HOME/releases/<target>.json`) is written atomically after each
//!   step that changed the target, so a killed run leaves at worst an unrecorded release
//!   directory that `offsync releases` shows as unknown.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::fsutil;

/// How many releases a target keeps when `keep:` is not set.
pub const DEFAULT_KEEP: u32 = 5;

/// Name prefix of a release's tag file (`.offsync-release-<id>`, at the release's root).
pub const TAG_PREFIX: &str = ".offsync-release-";

/// The symlink that names the live release.
pub const CURRENT: &str = "current";

/// The directory that holds the releases.
pub const RELEASES_DIR: &str = "releases";

/// How an SSH target holds the tree (`layout:` in config.yaml).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The directory is the tree, updated file by file
    #[default]
    InPlace,
    /// `releases/<id>/` trees and a `current` symlink switched atomically
    Releases,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::InPlace => "in-place",
            Layout::Releases => "releases",
        }
    }
}

/// When targets switch to their new release (`apply --switch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SwitchMode {
    /// Upload and verify on every target first; switch them all only if every selected target
    /// verified (none switches otherwise).
    #[default]
    Together,
    /// Switch each target as soon as its own release verified.
    Each,
}

/// The tag file name of release `id`.
pub fn tag_name(id: &str) -> String {
    format!("{TAG_PREFIX}{id}")
}

/// The relative directory of release `id` on the target (`releases/<id>`).
pub fn release_dir(id: &str) -> String {
    format!("{RELEASES_DIR}/{id}")
}

/// A new release id: sortable by time (UTC, to the millisecond), then the first 8 hex digits
/// of the plan digest, e.g. `20261128T083012.345Z-ab12cd34`.
pub fn new_id(plan_digest: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let digest: String = plan_digest
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("{}-{digest}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Whether `id` is a name offsync could have made (and can safely put in a path and an rsync
/// argument): 1–64 of `[0-9A-Za-z._-]`, not starting with `.` or `-`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What this controller recorded about one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    /// When the upload started (RFC 3339, UTC).
    pub created: String,
    pub source_digest: String,
    pub plan_digest: String,
    /// Files and bytes in the release.
    pub files: u64,
    pub bytes: u64,
    /// Bytes that were not hard links to the previous release (about what the release adds
    /// to the target's disk use).
    pub sent_bytes: u64,
    /// `verified` (can be switched to) or `failed` (never switched to; pruned next time).
    pub state: ReleaseState,
    /// `current` pointed at it at some time (a release that verified on one target while
    /// another failed a `--switch together` apply never was): rollback goes back to such
    /// releases only, unless named with `--to`.
    #[serde(default)]
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    Verified,
    Failed,
}

/// `$OFFSYNC_HOME/releases/<target>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// The release `current` was last switched to by this controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Oldest first.
    #[serde(default)]
    pub releases: Vec<Release>,
}

fn records_path(home: &Path, target: &str) -> PathBuf {
    home.join("releases").join(format!("{target}.json"))
}

impl Records {
    /// The records of `target` (empty when none were written).
    pub fn load(home: &Path, target: &str) -> Result<Records> {
        let path = records_path(home, target);
        let Some(bytes) = fsutil::read_optional(&path)? else {
            return Ok(Records::default());
        };
        let mut r: Records = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a release record offsync can read; move it aside (offsync releases then lists what the target holds as unknown)",
                path.display()
            )
        })?;
        r.releases.retain(|x| valid_id(&x.id));
        r.releases.sort_by(|a, b| a.id.cmp(&b.id));
        if r.current.as_deref().is_some_and(|c| !valid_id(c)) {
            r.current = None;
        }
        Ok(r)
    }

    /// Write atomically (0600, in a 0700 directory).
    pub fn save(&self, home: &Path, target: &str) -> Result<()> {
        fsutil::ensure_private_dir(&home.join("releases"))?;
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        fsutil::atomic_write(&records_path(home, target), &text, fsutil::FILE_MODE)
    }

    /// Forget `target` (target remove).
    pub fn forget(home: &Path, target: &str) -> Result<()> {
        match std::fs::remove_file(records_path(home, target)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn find(&self, id: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.id == id)
    }

    /// Add or replace the record of `r.id`.
    pub fn upsert(&mut self, r: Release) {
        self.releases.retain(|x| x.id != r.id);
        self.releases.push(r);
        self.releases.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// The release that was live before `current` (by id, i.e. by time), the default target
    /// of `rollback`.
    pub fn previous(&self) -> Option<&Release> {
        let current = self.current.as_deref()?;
        self.releases
            .iter()
            .rev()
            .filter(|r| r.state == ReleaseState::Verified && r.live)
            .find(|r| r.id.as_str() < current)
    }

    /// Record that `current` now points at `id`.
    pub fn set_current(&mut self, id: &str) {
        self.current = Some(id.to_string());
        if let Some(r) = self.releases.iter_mut().find(|r| r.id == id) {
            r.live = true;
        }
    }

    /// The releases to delete so that `keep` remain: every release that never went live
    /// (failed, or verified but not switched to), and the oldest live ones beyond `keep`
    /// (counting `current`, which is always kept).
    pub fn prunable(&self, keep: u32) -> Vec<String> {
        let current = self.current.as_deref();
        let mut kept = usize::from(current.is_some());
        let mut out = Vec::new();
        for r in self.releases.iter().rev() {
            if Some(r.id.as_str()) == current {
                continue;
            }
            if r.state == ReleaseState::Verified && r.live && kept < keep as usize {
                kept += 1;
                continue;
            }
            out.push(r.id.clone());
        }
        out.sort();
        out
    }

    /// About how much of the target's disk the recorded releases use: the first release in
    /// full, each later one what it did not hard-link.
    pub fn approx_disk_use(&self) -> u64 {
        self.releases
            .iter()
            .enumerate()
            .map(|(i, r)| if i == 0 { r.bytes } else { r.sent_bytes })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(id: &str, state: ReleaseState) -> Release {
        Release {
            id: id.into(),
            created: String::new(),
            source_digest: String::new(),
            plan_digest: String::new(),
            files: 1,
            bytes: 100,
            sent_bytes: 10,
            state,
            live: state == ReleaseState::Verified,
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_safe() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 8, 30, 12)
            .unwrap();
        let a = new_id("ab12cd34ef", t);
        assert_eq!(a, "20261128T083012.000Z-ab12cd34");
        let b = new_id("00", t + chrono::Duration::milliseconds(5));
        assert!(a < b);
        assert!(valid_id(&a) && valid_id(&b));
        for bad in ["", ".x", "-x", "a/b", "a b", "..", &"x".repeat(65), "a\n"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn pruning_keeps_current_and_the_newest() {
        let mut r = Records::default();
        for id in ["r1", "r2", "r3", "r4", "r5", "r6"] {
            r.upsert(rel(id, ReleaseState::Verified));
        }
        r.upsert(rel("r35", ReleaseState::Failed));
        r.upsert(Release {
            live: false,
            ..rel("r55", ReleaseState::Verified)
        });
        r.set_current("r6");
        assert_eq!(r.prunable(3), ["r1", "r2", "r3", "r35", "r55"]);
        assert_eq!(r.prunable(1), ["r1", "r2", "r3", "r35", "r4", "r5", "r55"]);
        // After a rollback to r2: r2 stays, plus the newest others.
        r.current = Some("r2".into());
        assert_eq!(r.prunable(3), ["r1", "r3", "r35", "r4", "r55"]);
        assert!(!r.prunable(1).contains(&"r2".to_string()));
        assert_eq!(r.previous().unwrap().id, "r1");
        r.current = Some("r6".into());
        assert_eq!(r.previous().unwrap().id, "r5", "r55 never went live");
    }

    #[test]
    fn records_round_trip_with_tight_modes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Records::load(d.path(), "t").unwrap(), Records::default());
        let mut r = Records::default();
        r.upsert(rel("r1", ReleaseState::Verified));
        r.current = Some("r1".into());
        r.save(d.path(), "t").unwrap();
        assert_eq!(Records::load(d.path(), "t").unwrap(), r);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.path().join("releases")), 0o700);
        assert_eq!(mode(&d.path().join("releases/t.json")), 0o600);
        std::fs::write(d.path().join("releases/t.json"), b"{").unwrap();
        let e = Records::load(d.path(), "t").unwrap_err();
        assert!(format!("{e:#}").contains("move it aside"), "{e:#}");
    }
}
