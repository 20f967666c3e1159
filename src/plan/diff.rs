//! `diff(source, target_view) -> Categories`: the pure heart of planning. No I/O.
//!
//! A target describes itself in one of two ways: as the differences it found itself (SSH
//! targets: rsync's dry run compared both sides by checksum; the SSH target translates its
//! itemized lines into [`Change`]s), or as a full listing (mirrors, local directories and the
//! in-memory test target). Both map to the same categories, with sizes and hashes always
//! taken from the source manifest. This module knows nothing about rsync.

use std::collections::BTreeMap;

use super::manifest::{Entry, Kind, Manifest};
use super::{Categories, EntryKind, PlanEntry};

/// What a target reported about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Only on the target: a delete would remove it.
    TargetOnly,
    /// Missing on the target.
    Created,
    /// Content differs (for symlinks, the link target; or the type).
    Content,
    /// Only attributes differ.
    Metadata,
}

/// One difference a target found, for a path relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub change: ChangeKind,
    pub kind: EntryKind,
}

/// What the target looks like, as far as the plan is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetView {
    /// The differences the target found itself (paths not named are unchanged).
    Changes(Vec<Change>),
    /// Every entry on the target (excluded paths already left out).
    Listing(BTreeMap<Vec<u8>, Entry>),
}

/// Compare the source with a target view.
pub fn diff(source: &Manifest, view: &TargetView) -> Categories {
    match view {
        TargetView::Changes(changes) => diff_changes(source, changes),
        TargetView::Listing(listing) => diff_listing(source, listing),
    }
}

fn entry_for(source: &Manifest, path: &[u8], kind: EntryKind) -> PlanEntry {
    match source.entries.get(path) {
        Some(e) => PlanEntry::from_entry(path, e),
        None => PlanEntry::bare(path, kind),
    }
}

fn diff_changes(source: &Manifest, changes: &[Change]) -> Categories {
    // One decision per path: a deletion followed by a creation is a type change (modified).
    let mut by_path: BTreeMap<&[u8], (ChangeKind, EntryKind)> = BTreeMap::new();
    for it in changes {
        let merged = match (by_path.get(it.path.as_slice()), it.change) {
            (Some((ChangeKind::TargetOnly, _)), ChangeKind::Created)
            | (Some((ChangeKind::Created, _)), ChangeKind::TargetOnly) => ChangeKind::Content,
            (Some((prev, _)), _) if *prev == ChangeKind::Content => ChangeKind::Content,
            (_, c) => c,
        };
        let kind = if it.change == ChangeKind::TargetOnly {
            by_path.get(it.path.as_slice()).map_or(it.kind, |(_, k)| *k)
        } else {
            it.kind
        };
        by_path.insert(&it.path, (merged, kind));
    }
    let mut c = Categories::default();
    let mut touched = 0u64;
    for (path, (change, kind)) in by_path {
        let in_source = source.entries.contains_key(path);
        match change {
            ChangeKind::TargetOnly if !in_source => c.missing.push(PlanEntry::bare(path, kind)),
            ChangeKind::TargetOnly => {
                // rsync deletes then re-creates: the source still has it, so it is modified.
                c.modified.push(entry_for(source, path, kind));
            }
            ChangeKind::Created => c.added.push(entry_for(source, path, kind)),
            ChangeKind::Content => c.modified.push(entry_for(source, path, kind)),
            ChangeKind::Metadata => c.metadata.push(entry_for(source, path, kind)),
        }
        if in_source {
            touched += 1;
        }
    }
    c.unchanged = (source.entries.len() as u64).saturating_sub(touched);
    c
}

fn diff_listing(source: &Manifest, listing: &BTreeMap<Vec<u8>, Entry>) -> Categories {
    let mut c = Categories::default();
    for (path, s) in &source.entries {
        match listing.get(path) {
            None => c.added.push(PlanEntry::from_entry(path, s)),
            Some(t) => {
                let same_content = match (&s.kind, &t.kind) {
                    (Kind::File { size: a, hash: ha }, Kind::File { size: b, hash: hb }) => {
                        a == b && ha == hb
                    }
                    (Kind::Dir, Kind::Dir) => true,
                    (Kind::Symlink { target: a }, Kind::Symlink { target: b }) => a == b,
                    _ => false,
                };
                let same_meta = match s.kind {
                    Kind::Dir => s.mode == t.mode,
                    Kind::Symlink { .. } => true,
                    Kind::File { .. } => s.mode == t.mode && s.mtime_s == t.mtime_s,
                };
                if !same_content {
                    c.modified.push(PlanEntry::from_entry(path, s));
                } else if !same_meta {
                    c.metadata.push(PlanEntry::from_entry(path, s));
                } else {
                    c.unchanged += 1;
                }
            }
        }
    }
    for (path, t) in listing {
        if !source.entries.contains_key(path) {
            c.missing.push(PlanEntry::bare(path, t.entry_kind()));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(content: &[u8], mode: u32, mtime: i64) -> Entry {
        Entry {
            kind: Kind::File {
                size: content.len() as u64,
                hash: *blake3::hash(content).as_bytes(),
            },
            mode,
            mtime_s: mtime,
            mtime_ns: 0,
        }
    }

    fn manifest(entries: Vec<(&[u8], Entry)>) -> Manifest {
        let entries: BTreeMap<Vec<u8>, Entry> =
            entries.into_iter().map(|(p, e)| (p.to_vec(), e)).collect();
        let digest = super::super::manifest::digest(&entries);
        Manifest {
            root: PathBuf::from("/src"),
            entries,
            skipped: vec![],
            modes_stripped: vec![],
            digest,
        }
    }

    #[test]
    fn reported_changes_categories() {
        let m = manifest(vec![
            (b"new", file(b"n", 0o644, 1)),
            (b"changed", file(b"c", 0o644, 1)),
            (b"mode", file(b"m", 0o600, 1)),
            (b"same", file(b"s", 0o644, 1)),
            (b"typechange", file(b"t", 0o644, 1)),
        ]);
        let ch = |p: &str, change, kind| Change {
            path: p.as_bytes().to_vec(),
            change,
            kind,
        };
        use ChangeKind::*;
        let changes = vec![
            ch("new", Created, EntryKind::File),
            ch("changed", Content, EntryKind::File),
            ch("mode", Metadata, EntryKind::File),
            ch("gone", TargetOnly, EntryKind::File),
            ch("typechange", TargetOnly, EntryKind::Dir),
            ch("typechange", Created, EntryKind::File),
        ];
        let c = diff(&m, &TargetView::Changes(changes));
        let names = |v: &Vec<PlanEntry>| v.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.added), ["new"]);
        assert_eq!(names(&c.modified), ["changed", "typechange"]);
        assert_eq!(names(&c.metadata), ["mode"]);
        assert_eq!(names(&c.missing), ["gone"]);
        assert_eq!(c.unchanged, 1);
        assert_eq!(c.added[0].size, Some(1));
        assert_eq!(
            c.added[0].blake3.as_deref(),
            Some(blake3::hash(b"n").to_hex().as_str())
        );
    }

    #[test]
    fn listing_categories() {
        let m = manifest(vec![
            (b"a", file(b"a", 0o644, 1)),
            (b"b", file(b"b", 0o644, 1)),
            (b"c", file(b"c", 0o644, 1)),
            (b"d", file(b"d", 0o644, 1)),
        ]);
        let listing: BTreeMap<Vec<u8>, Entry> = [
            (b"b".to_vec(), file(b"B", 0o644, 1)),
            (b"c".to_vec(), file(b"c", 0o644, 2)),
            (b"d".to_vec(), file(b"d", 0o644, 1)),
            (b"z".to_vec(), file(b"z", 0o644, 1)),
        ]
        .into_iter()
        .collect();
        let c = diff(&m, &TargetView::Listing(listing));
        assert_eq!(
            (
                c.added.len(),
                c.modified.len(),
                c.metadata.len(),
                c.missing.len(),
                c.unchanged
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(c.missing[0].path, "z");
    }
}
