//! The engine's only view of a destination: the [`Target`] trait.
//!
//! Invariants: a target never decides *what* to change — it describes itself ([`Target::scan`])
//! and executes exactly the [`TargetPlan`] it is given ([`Target::apply`]); deletions happen
//! only for paths in the plan's `missing` list and only when the caller allows them. SSH
//! targets and mirrors implement the trait; [`build`] is the one factory; `memory` is an
//! in-memory target for fast engine tests.

pub mod local;
pub mod memory;
pub mod mirror;
pub mod releases;
pub mod ssh;

use anyhow::Result;

use crate::config::{Config, TargetSpec};
use crate::context::Context;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;
use crate::plan::{CheckMode, ReleasePlan, TargetPlan};
use crate::releases::Layout;

/// Static facts about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: String,
    pub kind: crate::plan::TargetKind,
    /// Where it is, for people (`user@host:/path`).
    pub address: String,
    /// Host name for the operations log.
    pub host: String,
    /// The target accepts deletions.
    pub delete_allowed: bool,
    /// The target's own exclude patterns (config `targets[].exclude`), applied after the
    /// run's: the engine plans, applies and verifies it against the source without them.
    pub exclude: Vec<String>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Paths written (added, modified or metadata-updated), sorted.
    pub changed: Vec<Vec<u8>>,
    /// Paths deleted, sorted.
    pub deleted: Vec<Vec<u8>>,
    /// Bytes of file content the plan sent.
    pub bytes: u64,
    /// The apply failed part-way: `changed` and `deleted` are what the target reported before
    /// the failure (rsync's own lines), not the plan.
    pub partial: bool,
}

/// What switching a `releases` target to its new release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The release `current` now points at.
    pub id: String,
    /// When the switch completed (rsync's rename was confirmed).
    pub at: std::time::SystemTime,
    /// Old releases deleted after the switch.
    pub pruned: Vec<String>,
    /// Why releases beyond `keep:` stay (a `--no-delete` target), or why pruning failed
    /// (the switch itself succeeded).
    pub note: Option<String>,
}

/// An apply that failed after it may have changed the target: the error, and what is known to
/// have changed (the engine logs it instead of claiming nothing changed).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PartialApply {
    pub outcome: ApplyOutcome,
    pub kind: crate::error::ErrorKind,
    message: String,
}

impl PartialApply {
    pub fn new(outcome: ApplyOutcome, error: anyhow::Error) -> PartialApply {
        PartialApply {
            outcome,
            kind: crate::error::ErrorKind::of(&error),
            message: format!("{error:#}"),
        }
    }
}

/// A destination the engine can plan, apply and verify.
pub trait Target: Send {
    fn info(&self) -> &TargetInfo;
    /// Describe the target relative to `source` (excluded paths never appear), comparing
    /// content as `check` says (targets without modes always compare content hashes).
    fn scan(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        check: CheckMode,
    ) -> Result<TargetView>;
    /// The comparison mode plans use for this target (`check:` in config, `--check`); `None`
    /// for targets that have no modes (mirrors and local directories compare BLAKE3 hashes,
    /// the source's from the hash cache).
    fn check_mode(&self) -> Option<CheckMode> {
        None
    }
    /// Override the configured mode (`--check`); ignored by targets without modes.
    fn set_check(&mut self, _check: CheckMode) {}
    /// Limit the transfer rate (`apply --bwlimit`, rsync's syntax); ignored by targets that
    /// do not send through rsync (mirrors, local directories).
    fn set_bwlimit(&mut self, _rate: &str) {}
    /// The quick-check fingerprint of the last scan (`TargetPlan::state`), if the target has
    /// one.
    fn scanned_state(&self) -> Option<String> {
        None
    }
    /// A fresh quick-check fingerprint, made cheaply (SSH: one dry run that compares size
    /// and mtime, reading no file content). `None`: the target has no check cheaper than a
    /// scan.
    fn quick_state(&mut self, _source: &Manifest, _excludes: &Excludes) -> Result<Option<String>> {
        Ok(None)
    }
    /// The target right after `apply` wrote `transferred` (source paths), for verification.
    /// Default: a full content scan. SSH targets compare the transferred paths by checksum
    /// and prove the rest unchanged with the quick check.
    fn scan_after_apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        _transferred: &[Vec<u8>],
    ) -> Result<TargetView> {
        self.scan(source, excludes, CheckMode::Checksum)
    }
    /// Get ready (SSH: connect and prove confinement) while the source is being hashed; a
    /// failure is kept and reported by the first real operation.
    fn prepare(&mut self) {}
    /// Called once before a plan is applied, even an empty one (SSH targets write their
    /// marker here the first time).
    fn before_apply(&mut self) -> Result<()> {
        Ok(())
    }
    /// Make exactly the changes in `plan`; delete the plan's `missing` paths only if `delete`.
    /// A failure after the target may have changed is a [`PartialApply`] error.
    fn apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(crate::engine::Sent) + Sync),
    ) -> Result<ApplyOutcome>;
    /// Work the plan does not show: the apply must run (and commit) even when no path
    /// differs. A release target whose generation is not `current` yet has to be built and
    /// switched to even when its content equals the current release's.
    fn has_pending(&self) -> bool {
        false
    }
    /// Make a verified apply visible. The engine calls it only after `apply` succeeded and the
    /// verification (when the policy asks for one) found no difference; a failure fails the
    /// apply. Default: nothing (the other targets write in place). A release directory
    /// (`targets::releases`) switches its `current` symlink here.
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// Check the target's own storage after a scan (mirrors: every referenced object exists
    /// with the right size; `deep`: download, decrypt and re-hash them). SSH targets have
    /// nothing beyond the scan, whose checksums already cover content.
    fn check(&mut self, _deep: bool) -> Result<()> {
        Ok(())
    }
    /// How the target holds the tree (SSH targets may use `releases`).
    fn layout(&self) -> Layout {
        Layout::InPlace
    }
    /// The release the last scan compared the source with (`releases` layout).
    fn scanned_release(&self) -> Option<ReleasePlan> {
        None
    }
    /// Name the release the next `apply` uploads (`releases` layout; the same id on every
    /// target of one apply).
    fn set_release_id(&mut self, _id: &str, _plan_digest: &str) {}
    /// Switch `current` to the release the last `apply` uploaded and verified, atomically,
    /// then prune releases beyond `keep:` (`releases` layout).
    fn switch(&mut self) -> Result<Switched> {
        anyhow::bail!(
            "{} does not use the releases layout; there is nothing to switch",
            self.info().name
        )
    }
    /// Release connections (also done on drop).
    fn close(&mut self) {}
}

/// Build the targets named in `names` (all when empty): SSH targets then mirrors, in config
/// order.
pub fn build(ctx: &Context, config: &Config, names: &[String]) -> Result<Vec<Box<dyn Target>>> {
    let mut out: Vec<Box<dyn Target>> = Vec::new();
    for spec in config.select(names)? {
        out.push(match spec {
            TargetSpec::Ssh(t) => {
                let name = t.name();
                let target = ssh::SshTarget::from_config(ctx, t, config.check_for(&name, None))?;
                Box::new(match config.layout_for(&name) {
                    crate::releases::Layout::InPlace => target,
                    crate::releases::Layout::Releases => {
                        target.with_releases(config.keep_for(&name))?
                    }
                })
            }
            TargetSpec::Mirror(m) => Box::new(mirror::MirrorTarget::from_config(ctx, m)?),
        });
    }
    if out.is_empty() {
        anyhow::bail!(
            "no targets configured; add one with `offsync target add USER@HOST --path DIR` or `offsync mirror add NAME URL`"
        );
    }
    Ok(out)
}
