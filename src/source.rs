//! The source side of a sync: a local tree (what `plan`/`apply` push) or a mirror snapshot
//! (what `pull` and `mirror restore` bring into a directory). Either way the engine plans
//! against its [`Manifest`]; the target that receives it knows how to get the content (rsync
//! reads a tree, `targets::local` decrypts a snapshot's objects).
//!
//! Invariant: a snapshot source's manifest is the validated, signature-checked snapshot with
//! setuid/setgid/sticky bits stripped unless the caller keeps them explicitly.

use anyhow::Result;
use std::path::PathBuf;

use crate::mirror::Mirror;
use crate::mirror::snapshot::Snapshot;
use crate::plan::manifest::Manifest;

pub enum Source<'m> {
    /// The controller's source directory, hashed (see `session`).
    Tree(Manifest),
    /// A mirror generation.
    Snapshot {
        mirror: &'m Mirror,
        snapshot: &'m Snapshot,
        manifest: Manifest,
        keep_special_modes: bool,
    },
}

impl<'m> Source<'m> {
    /// `snapshot` of `mirror` as a source; `keep_special_modes` keeps setuid/setgid/sticky.
    pub fn snapshot(
        mirror: &'m Mirror,
        snapshot: &'m Snapshot,
        keep_special_modes: bool,
    ) -> Result<Source<'m>> {
        let manifest =
            snapshot.to_manifest_with(PathBuf::from(mirror.store.display()), keep_special_modes)?;
        Ok(Source::Snapshot {
            mirror,
            snapshot,
            manifest,
            keep_special_modes,
        })
    }

    /// Keep only the paths `keep` selects (`mirror restore --include`).
    pub fn retain(&mut self, keep: impl Fn(&[u8]) -> bool) {
        let m = match self {
            Source::Tree(m) => m,
            Source::Snapshot { manifest, .. } => manifest,
        };
        m.entries.retain(|p, _| keep(p));
        m.modes_stripped.retain(|p| keep(p));
        m.digest = crate::plan::manifest::digest(&m.entries);
    }

    /// What the engine plans against.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Source::Tree(m) => m,
            Source::Snapshot { manifest, .. } => manifest,
        }
    }
}
