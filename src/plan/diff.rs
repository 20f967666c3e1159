//! `diff(source, target_view) -> Categories`: the pure heart of planning. No I/O.
//!
//! A target describes itself in one of two ways: as rsync's itemized dry-run output (SSH
//! targets: rsync already compared both sides by checksum), or as a full listing (mirrors and
//! the in-memory test target). Both map to the same categories, with sizes and hashes always
//! taken from the source manifest.

use std::collections::BTreeMap;

use super::manifest::{Entry, Kind, Manifest};
use super::{Categories, PlanEntry};
use crate::itemize::{Item, ItemChange, ItemKind};

/// What the target looks like, as far as the plan is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetView {
    /// rsync's itemized changes from a `--checksum --delete` dry run.
    Itemized(Vec<Item>),
    /// Every entry on the target (excluded paths already left out).
    Listing(BTreeMap<Vec<u8>, Entry>),
}

/// Compare the source with a target view.
pub fn diff(source: &Manifest, view: &TargetView) -> Categories {
    match view {
        TargetView::Itemized(items) => diff_itemized(source, items),
        TargetView::Listing(listing) => diff_listing(source, listing),
    }
}

fn entry_for(source: &Manifest, path: &[u8], kind: ItemKind) -> PlanEntry {
    match source.entries.get(path) {
        Some(e) => PlanEntry::from_entry(path, e),
        None => PlanEntry::bare(path, item_kind_name(kind)),
    }
}

fn item_kind_name(k: ItemKind) -> &'static str {
    match k {
        ItemKind::File => "file",
        ItemKind::Dir => "dir",
        ItemKind::Symlink => "symlink",
        ItemKind::Device => "device",
        ItemKind::Special => "special",
    }
}

fn diff_itemized(source: &Manifest, items: &[Item]) -> Categories {
    // One decision per path: a deletion followed by a creation is a type change (modified).
    let mut by_path: BTreeMap<&[u8], (ItemChange, ItemKind)> = BTreeMap::new();
    for it in items {
        let merged = match (by_path.get(it.path.as_slice()), it.change) {
            (_, ItemChange::Unchanged) => continue,
            (Some((ItemChange::Deleting, _)), ItemChange::Created)
            | (Some((ItemChange::Created, _)), ItemChange::Deleting) => ItemChange::Content,
            (Some((prev, _)), _) if *prev == ItemChange::Content => ItemChange::Content,
            (_, c) => c,
        };
        let kind = if it.change == ItemChange::Deleting {
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
            ItemChange::Deleting if !in_source => {
                c.missing.push(PlanEntry::bare(path, item_kind_name(kind)))
            }
            ItemChange::Deleting => {
                // rsync deletes then re-creates: the source still has it, so it is modified.
                c.modified.push(entry_for(source, path, kind));
            }
            ItemChange::Created => c.added.push(entry_for(source, path, kind)),
            ItemChange::Content => c.modified.push(entry_for(source, path, kind)),
            ItemChange::Metadata => c.metadata.push(entry_for(source, path, kind)),
            ItemChange::Unchanged => continue,
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
            c.missing.push(PlanEntry::bare(path, t.kind_name()));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::itemize::parse_output;
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
    fn itemized_categories() {
        let m = manifest(vec![
            (b"new", file(b"n", 0o644, 1)),
            (b"changed", file(b"c", 0o644, 1)),
            (b"mode", file(b"m", 0o600, 1)),
            (b"same", file(b"s", 0o644, 1)),
            (b"typechange", file(b"t", 0o644, 1)),
        ]);
        let out = b"<f+++++++++ new\n<fc.t...... changed\n.f...p..... mode\n*deleting   gone\n*deleting   typechange\n<f+++++++++ typechange\ncreated directory /proc/self/fd/4/x\n";
        let (items, _) = parse_output(out);
        let c = diff(&m, &TargetView::Itemized(items));
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
