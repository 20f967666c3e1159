//! A local directory as a [`Target`]: what `pull` and `mirror restore` write into, fed by a
//! mirror snapshot ([`Source::Snapshot`]).
//!
//! With it, pull and restore are the same engine as apply: `engine::plan_all` plans the
//! directory against the snapshot, `engine::apply_all` refuses DEST-only paths without
//! `--delete`, applies the mass-delete guard, writes exactly the planned entries and verifies
//! with a fresh scan, and the command logs the same record. The writing itself is
//! `mirror::restore` (verified before it is renamed into place, never through a symlink).
//!
//! Invariants: `scan` lists DEST through the hash cache with the plan's excludes (offsync's
//! holding directory among them); `apply` writes only the plan's added, modified and metadata
//! entries and deletes only its `missing` ones, and only when told to.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

use super::{ApplyOutcome, Target, TargetInfo};
use crate::mirror::restore::{self, Work};
use crate::mirror::{Mirror, snapshot::Snapshot};
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{self, Manifest};
use crate::source::Source;

/// How many files a restore writes at once.
pub const WORKERS: usize = 8;

pub struct LocalTarget<'m> {
    info: TargetInfo,
    dest: PathBuf,
    cache: PathBuf,
    mirror: &'m Mirror,
    snapshot: &'m Snapshot,
    keep_special_modes: bool,
    /// A symlink in DEST pointing outside it stops the plan (pull); otherwise it is listed as
    /// a symlink and replaced (`mirror restore --force`). Never followed either way.
    refuse_escaping_links: bool,
}

impl<'m> LocalTarget<'m> {
    /// Replace symlinks in DEST that point outside it instead of refusing them.
    pub fn replacing_escaping_links(mut self) -> Self {
        self.refuse_escaping_links = false;
        self
    }

    /// DEST (absolute; created by the caller), filled from `source`, which must be a mirror
    /// snapshot. `cache` is the hash cache for DEST.
    pub fn new(dest: &Path, cache: PathBuf, source: &Source<'m>) -> Result<LocalTarget<'m>> {
        let Source::Snapshot {
            mirror,
            snapshot,
            keep_special_modes,
            ..
        } = source
        else {
            anyhow::bail!("a local directory is filled from a mirror snapshot, not from a tree");
        };
        let (mirror, snapshot, keep_special_modes) = (*mirror, *snapshot, *keep_special_modes);
        let shown = dest.display().to_string();
        Ok(LocalTarget {
            info: TargetInfo {
                name: shown.clone(),
                kind: crate::plan::TargetKind::Local,
                address: shown,
                host: crate::keys::hostname(),
                delete_allowed: true,
                exclude: Vec::new(),
            },
            dest: dest.to_path_buf(),
            cache,
            mirror,
            snapshot,
            keep_special_modes,
            refuse_escaping_links: true,
        })
    }
}

impl Target for LocalTarget<'_> {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(
        &mut self,
        _source: &Manifest,
        excludes: &Excludes,
        _check: crate::plan::CheckMode,
    ) -> Result<TargetView> {
        if !self.dest.exists() {
            return Ok(TargetView::Listing(Default::default()));
        }
        let (m, _) = if self.refuse_escaping_links {
            manifest::build(&self.dest, excludes, Some(&self.cache))?
        } else {
            manifest::build_destination(&self.dest, excludes, Some(&self.cache))?
        };
        let mut listing = m.entries;
        // The walk drops setuid/setgid/sticky bits (a source never sends them); a restore that
        // keeps them must see them, or DEST would never verify.
        if self.keep_special_modes {
            use std::os::unix::ffi::OsStrExt;
            use std::os::unix::fs::PermissionsExt;
            for p in &m.modes_stripped {
                let path = self.dest.join(std::ffi::OsStr::from_bytes(p));
                if let (Some(e), Ok(meta)) = (listing.get_mut(p), std::fs::symlink_metadata(path)) {
                    e.mode = meta.permissions().mode() & 0o7777;
                }
            }
        }
        Ok(TargetView::Listing(listing))
    }

    fn apply(
        &mut self,
        _source: &Manifest,
        _excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(crate::engine::Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        let map = self.snapshot.entry_map()?;
        let pick = |v: &[crate::plan::PlanEntry]| -> Result<Vec<_>> {
            v.iter()
                .map(|pe| {
                    let p = pe.raw_path();
                    let e = *map
                        .get(&p)
                        .context("a planned path is not in the snapshot")?;
                    Ok((p, e))
                })
                .collect()
        };
        let c = &plan.changes;
        let mut write = pick(&c.added)?;
        write.extend(pick(&c.modified)?);
        let work = Work {
            write,
            metadata: pick(&c.metadata)?,
            delete: if delete {
                c.missing.iter().map(|pe| pe.raw_path()).collect()
            } else {
                Vec::new()
            },
            keep_special_modes: self.keep_special_modes,
            ..Work::default()
        };
        let done = restore::apply(self.mirror, &self.dest, &work, WORKERS, progress)?;
        Ok(ApplyOutcome {
            changed: done.changed,
            deleted: done.deleted,
            bytes: done.bytes,
            partial: false,
        })
    }
}
