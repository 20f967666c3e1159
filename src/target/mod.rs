//! The engine's only view of a destination: the [`Target`] trait.
//!
//! Invariants: a target never decides *what* to change — it describes itself ([`Target::scan`])
//! and executes exactly the [`TargetPlan`] it is given ([`Target::apply`]); deletions happen
//! only for paths in the plan's `missing` list and only when the caller allows them. SSH
//! targets and mirrors implement the trait; [`build`] is the one factory; `memory` is an
//! in-memory target for fast engine tests.

pub mod memory;
pub mod ssh;

use anyhow::Result;

use crate::config::{Config, TargetConfig};
use crate::context::Context;
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;

/// Static facts about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: String,
    /// `ssh`, `mirror`, `memory`.
    pub kind: String,
    /// Where it is, for people (`user@host:/path`).
    pub address: String,
    /// Host name for the operations log.
    pub host: String,
    /// The target accepts deletions.
    pub delete_allowed: bool,
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
}

/// A destination the engine can plan, apply and verify.
pub trait Target: Send {
    fn info(&self) -> &TargetInfo;
    /// Describe the target relative to `source` (excluded paths never appear).
    fn scan(&mut self, source: &Manifest, excludes: &Excludes) -> Result<TargetView>;
    /// Make exactly the changes in `plan`; delete the plan's `missing` paths only if `delete`.
    fn apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &dyn Fn(u64),
    ) -> Result<ApplyOutcome>;
    /// Release connections (also done on drop).
    fn close(&mut self) {}
}

/// Build the targets named in `names` (all when empty), in config order.
pub fn build(ctx: &Context, config: &Config, names: &[String]) -> Result<Vec<Box<dyn Target>>> {
    let selected: Vec<&TargetConfig> = if names.is_empty() {
        config.targets.iter().collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            match config.find_target(n) {
                Some(t) => v.push(t),
                None => {
                    let known: Vec<String> = config.targets.iter().map(|t| t.name()).collect();
                    return Err(crate::input_err!(
                        "no target named {:?}; known targets: {}",
                        crate::sanitize::for_terminal(n),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        v
    };
    if selected.is_empty() {
        anyhow::bail!(
            "no targets configured; add one with `offsync target add USER@HOST --path DIR`"
        );
    }
    selected
        .into_iter()
        .map(|t| Ok(Box::new(ssh::SshTarget::from_config(ctx, t)?) as Box<dyn Target>))
        .collect()
}
