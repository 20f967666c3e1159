//! An in-memory target for engine tests: a listing plus file contents, no I/O on its side.
//! It reads the source directory when applying, like rsync would.

use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

use super::{ApplyOutcome, Target, TargetInfo};
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{Entry, Manifest};

pub struct MemoryTarget {
    info: TargetInfo,
    /// Path → entry; file contents are kept next to it.
    pub files: BTreeMap<Vec<u8>, (Entry, Vec<u8>)>,
}

impl MemoryTarget {
    pub fn new(name: &str, delete_allowed: bool) -> MemoryTarget {
        MemoryTarget {
            info: TargetInfo {
                name: name.to_string(),
                kind: crate::plan::TargetKind::Memory,
                address: format!("memory:{name}"),
                host: "memory".into(),
                delete_allowed,
                exclude: Vec::new(),
            },
            files: BTreeMap::new(),
        }
    }
}

impl Target for MemoryTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(
        &mut self,
        _source: &Manifest,
        excludes: &Excludes,
        _check: crate::plan::CheckMode,
    ) -> Result<TargetView> {
        let listing = self
            .files
            .iter()
            .filter(|(p, (e, _))| !excludes.hides(p, e.entry_kind() == crate::plan::EntryKind::Dir))
            .map(|(p, (e, _))| (p.clone(), e.clone()))
            .collect();
        Ok(TargetView::Listing(listing))
    }

    fn apply(
        &mut self,
        source: &Manifest,
        _excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(crate::engine::Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        let mut out = ApplyOutcome {
            bytes: plan.summary.bytes,
            ..Default::default()
        };
        let c = &plan.changes;
        let mut sent = crate::engine::Sent::default();
        let content = c.added.iter().chain(&c.modified).map(|e| (e, true));
        for (e, content_changes) in content.chain(c.metadata.iter().map(|e| (e, false))) {
            let p = e.raw_path();
            let entry = source
                .entries
                .get(&p)
                .with_context(|| format!("{} vanished from the source", e.path_text()))?;
            let content = if entry.entry_kind() == crate::plan::EntryKind::File {
                std::fs::read(source.root.join(std::ffi::OsStr::from_bytes(&p)))?
            } else {
                Vec::new()
            };
            if content_changes && entry.entry_kind() == crate::plan::EntryKind::File {
                sent = sent
                    + crate::engine::Sent {
                        bytes: content.len() as u64,
                        files: 1,
                    };
            }
            self.files.insert(p.clone(), (entry.clone(), content));
            out.changed.push(p);
            progress(sent);
        }
        if delete {
            for e in &c.missing {
                let p = e.raw_path();
                self.files.remove(&p);
                out.deleted.push(p);
            }
        }
        out.changed.sort();
        out.deleted.sort();
        Ok(out)
    }
}
