//! `diff(source, target_view) -> Categories`: the pure heart of planning. No I/O.
//!
//! A target describes itself in one of two ways: as the differences it found itself (SSH
//! targets: rsync's dry run compared both sides by checksum; the SSH target translates its
//! itemized lines into [`Change`]s), or as a full listing (mirrors, local directories and the
//! in-memory test target). Both map to the same categories, with sizes and hashes always
//! taken from the source manifest. This module knows nothing about rsync.

use std::borrow::Cow;

use super::manifest::{Entries, Kind, Manifest};
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
    Listing(Entries),
}

/// Compare the source with a target view.
pub fn diff(source: &Manifest, view: &TargetView) -> Categories {
    match view {
        TargetView::Changes(changes) => diff_changes(source, Cow::Borrowed(changes)),
        TargetView::Listing(listing) => diff_listing(source, listing),
    }
}

/// [`diff`], consuming the view: the paths a target reported move into the plan's entries
/// instead of being copied (a first plan of a large source names every path once, so this
/// saves a copy of every path while both exist). The result is the same as [`diff`]'s.
pub fn diff_into(source: &Manifest, view: TargetView) -> Categories {
    match view {
        TargetView::Changes(changes) => diff_changes(source, Cow::Owned(changes)),
        TargetView::Listing(listing) => diff_listing(source, &listing),
    }
}

/// A category of [`Categories`].
#[derive(Debug, Clone, Copy)]
enum Cat {
    Added,
    Modified,
    Metadata,
    Missing,
}

/// Where a diff puts its entries. A diff runs twice: first only counting per category, then
/// filling vectors of exactly that size — a first plan of a large source names every path,
/// and vectors grown by doubling would hold up to twice that (and copy it) on the way.
struct Sink {
    counts: Option<[usize; 4]>,
    c: Categories,
}

impl Sink {
    fn push(&mut self, cat: Cat, entry: impl FnOnce() -> PlanEntry) {
        match &mut self.counts {
            Some(n) => n[cat as usize] += 1,
            None => {
                let c = &mut self.c;
                match cat {
                    Cat::Added => &mut c.added,
                    Cat::Modified => &mut c.modified,
                    Cat::Metadata => &mut c.metadata,
                    Cat::Missing => &mut c.missing,
                }
                .push(entry());
            }
        }
    }

    /// Run `diff` (which returns the unchanged count) counting, then filling.
    fn collect(mut diff: impl FnMut(&mut Sink) -> u64) -> Categories {
        let mut sink = Sink {
            counts: Some([0; 4]),
            c: Categories::default(),
        };
        diff(&mut sink);
        let [added, modified, metadata, missing] = sink.counts.take().unwrap_or_default();
        let c = &mut sink.c;
        c.added.reserve_exact(added);
        c.modified.reserve_exact(modified);
        c.metadata.reserve_exact(metadata);
        c.missing.reserve_exact(missing);
        let unchanged = diff(&mut sink);
        sink.c.unchanged = unchanged;
        sink.c
    }
}

/// Reports owned (`diff_into`) give their paths to the plan entries; borrowed ones are copied.
fn diff_changes(source: &Manifest, mut changes: Cow<'_, [Change]>) -> Categories {
    // Group the reports by path (a stable sort of their indices: 4 bytes each, and the reports
    // of one path stay in the order the target gave them).
    let n = u32::try_from(changes.len()).expect("fewer than 4 billion changes");
    let mut order: Vec<u32> = (0..n).collect();
    order.sort_by(|&a, &b| changes[a as usize].path.cmp(&changes[b as usize].path));
    Sink::collect(|sink| {
        let mut touched = 0u64;
        let mut g = 0;
        while g < order.len() {
            let first = order[g] as usize;
            let mut end = g + 1;
            while end < order.len() && changes[order[end] as usize].path == changes[first].path {
                end += 1;
            }
            // One decision per path: a deletion followed by a creation is a type change
            // (modified).
            let mut state: Option<(ChangeKind, EntryKind)> = None;
            for it in order[g..end].iter().map(|&i| &changes[i as usize]) {
                let merged = match (state, it.change) {
                    (Some((ChangeKind::TargetOnly, _)), ChangeKind::Created)
                    | (Some((ChangeKind::Created, _)), ChangeKind::TargetOnly) => {
                        ChangeKind::Content
                    }
                    (Some((ChangeKind::Content, _)), _) => ChangeKind::Content,
                    (_, c) => c,
                };
                let kind = if it.change == ChangeKind::TargetOnly {
                    state.map_or(it.kind, |(_, k)| k)
                } else {
                    it.kind
                };
                state = Some((merged, kind));
            }
            g = end;
            let Some((change, kind)) = state else {
                continue;
            };
            let in_source = source.entries.get(&changes[first].path);
            let cat = match change {
                ChangeKind::TargetOnly if in_source.is_none() => Cat::Missing,
                // rsync deletes then re-creates: the source still has it, so it is modified.
                ChangeKind::TargetOnly | ChangeKind::Content => Cat::Modified,
                ChangeKind::Created => Cat::Added,
                ChangeKind::Metadata => Cat::Metadata,
            };
            sink.push(cat, || {
                // Later groups never look at this path again: an owned one can be given away.
                let path: Box<[u8]> = match &mut changes {
                    Cow::Owned(v) => std::mem::take(&mut v[first].path).into_boxed_slice(),
                    Cow::Borrowed(v) => v[first].path.as_slice().into(),
                };
                match in_source {
                    Some(e) => PlanEntry::from_entry_owned(path, e),
                    None => PlanEntry::bare_owned(path, kind),
                }
            });
            if in_source.is_some() {
                touched += 1;
            }
        }
        (source.entries.len() as u64).saturating_sub(touched)
    })
}

fn diff_listing(source: &Manifest, listing: &Entries) -> Categories {
    Sink::collect(|sink| {
        let mut unchanged = 0;
        // Both sides are sorted by path: walk them together.
        let mut theirs = listing.iter().peekable();
        for (path, s) in &source.entries {
            while let Some((p, t)) = theirs.next_if(|(p, _)| *p < path) {
                sink.push(Cat::Missing, || PlanEntry::bare(p, t.entry_kind()));
            }
            let entry = || PlanEntry::from_entry(path, s);
            match theirs.next_if(|(p, _)| *p == path) {
                None => sink.push(Cat::Added, entry),
                Some((_, t)) => {
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
                        sink.push(Cat::Modified, entry);
                    } else if !same_meta {
                        sink.push(Cat::Metadata, entry);
                    } else {
                        unchanged += 1;
                    }
                }
            }
        }
        for (p, t) in theirs {
            sink.push(Cat::Missing, || PlanEntry::bare(p, t.entry_kind()));
        }
        unchanged
    })
}

#[cfg(test)]
mod tests {
    use super::super::manifest::Entry;
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
        let entries: Entries = entries.into_iter().map(|(p, e)| (p.to_vec(), e)).collect();
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
        let names = |v: &Vec<PlanEntry>| {
            v.iter()
                .map(|e| e.path_text().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.added), ["new"]);
        assert_eq!(names(&c.modified), ["changed", "typechange"]);
        assert_eq!(names(&c.metadata), ["mode"]);
        assert_eq!(names(&c.missing), ["gone"]);
        assert_eq!(c.unchanged, 1);
        assert_eq!(c.added[0].size(), Some(1));
        assert_eq!(
            c.added[0].blake3_hex().as_deref(),
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
        let listing: Entries = [
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
        assert_eq!(c.missing[0].path_bytes(), b"z");
    }

    #[test]
    fn reports_of_one_path_merge_wherever_they_are() {
        let m = manifest(vec![
            (b"a", file(b"a", 0o644, 1)),
            (b"t", file(b"t", 0o644, 1)),
            (b"u", file(b"u", 0o644, 1)),
        ]);
        let ch = |p: &str, change, kind| Change {
            path: p.as_bytes().to_vec(),
            change,
            kind,
        };
        use ChangeKind::*;
        // rsync lists deletions of a directory's content before its other items.
        let changes = vec![
            ch("t", TargetOnly, EntryKind::Dir),
            ch("gone", TargetOnly, EntryKind::Dir),
            ch("a", Created, EntryKind::File),
            ch("u", Metadata, EntryKind::File),
            ch("t", Created, EntryKind::File),
            ch("u", Content, EntryKind::File),
        ];
        let view = TargetView::Changes(changes);
        let c = diff(&m, &view);
        let names = |v: &Vec<PlanEntry>| {
            v.iter()
                .map(|e| (e.path_text().into_owned(), e.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.added), [("a".into(), EntryKind::File)]);
        assert_eq!(
            names(&c.modified),
            [
                ("t".to_string(), EntryKind::File),
                ("u".into(), EntryKind::File)
            ]
        );
        assert_eq!(names(&c.missing), [("gone".into(), EntryKind::Dir)]);
        assert!(c.metadata.is_empty());
        assert_eq!(c.unchanged, 0);
        // Consuming the view gives the same plan (the paths move instead of being copied).
        assert_eq!(diff_into(&m, view.clone()), c);
        let listing: Entries = [(b"a".to_vec(), file(b"x", 0o644, 1))]
            .into_iter()
            .collect();
        let view = TargetView::Listing(listing);
        assert_eq!(diff_into(&m, view.clone()), diff(&m, &view));
    }
}
