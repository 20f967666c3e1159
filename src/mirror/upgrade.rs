//! `mirror upgrade` as a plan and its execution: converts an `offsync-mirror/1` mirror (one
//! object per content) to `/2` in place by packing its small objects. [`upgrade_plan`] reads
//! only; [`upgrade`] executes that [`UpgradePlan`]. The design is `docs/mirror-v2.md`,
//! "Migration from `/1`".
//!
//! Order, so that every step can be interrupted and finished by running the upgrade again:
//! 1. the marker becomes `offsync-mirror/2` before the first pack is written (an older
//!    offsync then refuses the mirror instead of finding packed objects "missing");
//! 2. the single objects below [`PACK_THRESHOLD`] that a generation references are read
//!    (each verified against the BLAKE3 of a snapshot entry) and packed under the same ids;
//! 3. index objects describing the new packs are written;
//! 4. only then are the singles that an index now covers deleted.
//!
//! A rerun skips ids an index already covers and deletes the singles left behind by an
//! interrupted run. Safe beside applies, which deduplicate on ids found in either place (a
//! generation names ids, never locations, so nothing signed is rewritten), and beside prune,
//! whose `--min-age` keeps the new packs and which deletes only what no generation
//! references; the upgrade deletes only singles whose id it has just found indexed.

use anyhow::Result;
use std::collections::BTreeMap;

use super::index::ObjectIndex;
use super::packs::{PACK_THRESHOLD, PackFiller};
use super::snapshot::{self, SnapEntry};
use super::{FORMAT, Mirror, WORKERS};

/// What an upgrade does.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// The format the marker names now.
    pub format: u32,
    /// Single objects to pack: id → one entry that references it (its BLAKE3 and size),
    /// sorted by that entry's path so a directory's files share packs.
    pub pack: Vec<(String, SnapEntry)>,
    /// Single objects an index already covers (an interrupted upgrade's), deleted.
    pub delete: Vec<String>,
}

impl UpgradePlan {
    /// Plaintext bytes to pack.
    pub fn bytes(&self) -> u64 {
        self.pack.iter().filter_map(|(_, e)| e.size).sum()
    }

    /// Whether executing the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.format >= FORMAT && self.pack.is_empty() && self.delete.is_empty()
    }
}

/// What [`upgrade`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// The marker was rewritten to the current format.
    pub marked: bool,
    /// Objects packed, and their plaintext bytes.
    pub packed: usize,
    pub bytes: u64,
    /// Single objects deleted (now in packs).
    pub deleted: usize,
}

/// Plan the upgrade of `mirror`: the small single objects a generation references (every
/// generation present, walked through the verified chain).
pub fn upgrade_plan(mirror: &Mirror) -> Result<UpgradePlan> {
    if mirror.rekey_pending().is_some() {
        anyhow::bail!(
            "a rekey of {} was interrupted; finish it with `offsync mirror rekey` first (it packs the mirror too)",
            mirror.store.display()
        );
    }
    let mut wanted: BTreeMap<String, SnapEntry> = BTreeMap::new();
    match mirror.generations()?.first() {
        Some(&first) => mirror.walk_verified(first, |s, _| {
            for e in s.entries.iter().filter(|e| e.kind == "file") {
                if let (Some(id), Some(size)) = (&e.object, e.size)
                    && size < PACK_THRESHOLD
                {
                    wanted.entry(id.clone()).or_insert_with(|| e.clone());
                }
            }
            Ok(())
        })?,
        None => {
            mirror.latest()?;
        }
    }
    let singles = ObjectIndex::load(&mirror.store)?;
    mirror.reload_pack_index();
    let packs = mirror.pack_index()?;
    let mut pack = Vec::new();
    let mut delete = Vec::new();
    for (id, e) in wanted {
        let Some(o) = singles.get(&id) else {
            continue; // already packed (or missing: `verify` names it)
        };
        if packs
            .locate(&id)
            .is_some_and(|at| Some(at.member.len) == e.size)
        {
            delete.push(o.path.clone());
        } else {
            pack.push((id, e));
        }
    }
    pack.sort_by(|a, b| (&a.1.path, &a.1.path_hex).cmp(&(&b.1.path, &b.1.path_hex)));
    Ok(UpgradePlan {
        format: mirror.format(),
        pack,
        delete,
    })
}

/// Execute `plan` on `mirror` (the same opened mirror it was planned on).
pub fn upgrade(mirror: &Mirror, plan: &UpgradePlan) -> Result<Upgraded> {
    let marked = mirror.format() < FORMAT;
    mirror.mark_current_format()?;
    let mut delete = plan.delete.clone();
    if !plan.pack.is_empty() {
        let filler = PackFiller::new(&mirror.store, &mirror.key);
        let read = mirror.fetch_each(
            &plan.pack,
            WORKERS,
            |(_, e)| e,
            |(_, e)| Ok(Vec::with_capacity(e.size.unwrap_or(0) as usize)),
            |(id, _), bytes| filler.add(id, &bytes),
        );
        // Index what was packed even after an error, so the rerun finds it.
        let indexed = filler.finish();
        read?;
        let indexed = indexed?;
        // Only singles an index now covers go.
        delete.extend(indexed.iter().map(|id| snapshot::object_path(id)));
    }
    mirror.store.delete(&delete)?;
    Ok(Upgraded {
        marked,
        packed: plan.pack.len(),
        bytes: plan.bytes(),
        deleted: delete.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::check::check_objects;
    use crate::mirror::testutil::{TestMirror, object_ids};
    use crate::mirror::{MARKER, packs::PackIndex};

    /// A `/1` mirror: marker `/1`, and every content a single object, as `/1` wrote them,
    /// in a generation committed through the real path. Returns the generation's files.
    fn v1_mirror(t: &TestMirror) -> Vec<(&'static str, Vec<u8>)> {
        let files: Vec<(&'static str, Vec<u8>)> = vec![
            ("a", b"A".to_vec()),
            ("d/b", b"B".to_vec()),
            ("d/also-a", b"A".to_vec()),
            ("big", (0..PACK_THRESHOLD + 7).map(|i| i as u8).collect()),
        ];
        let m = t.open(0);
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
        let src = t.source("1", &refs);
        // Store every content as a `/1` single object first: the apply then finds them all
        // and packs nothing.
        for (p, c) in &files {
            let hash = *blake3::hash(c).as_bytes();
            m.store_file(&src.join(p), c.len() as u64, &hash).unwrap();
        }
        TestMirror::commit(&m, &src);
        m.store
            .put(
                MARKER,
                b"offsync-mirror/1\nAn offsync encrypted mirror.\n".to_vec(),
            )
            .unwrap();
        assert!(t.root().join("packs").read_dir().is_err(), "no pack yet");
        files
    }

    fn singles(m: &Mirror) -> usize {
        ObjectIndex::load(&m.store).unwrap().iter().count()
    }

    fn assert_whole(m: &Mirror) {
        let first = m.generations().unwrap()[0];
        m.walk_verified(first, |s, _| check_objects(m, s, true))
            .unwrap();
    }

    #[test]
    fn upgrade_packs_the_small_singles_then_deletes_them_and_a_rerun_has_nothing_to_do() {
        let t = TestMirror::new();
        let files = v1_mirror(&t);
        let m = t.open(0);
        assert_eq!(m.format(), 1);
        let ids_before = object_ids(&m);
        assert_eq!(singles(&m), 3, "A, B and the big file");

        let plan = upgrade_plan(&m).unwrap();
        assert_eq!(plan.format, 1);
        assert_eq!(plan.pack.len(), 2, "A and B, not the big file");
        assert_eq!(plan.bytes(), 2);
        assert!(plan.delete.is_empty());
        // Planning changed nothing.
        assert_eq!(singles(&m), 3);
        assert_eq!(t.open(0).format(), 1);

        let done = upgrade(&m, &plan).unwrap();
        assert_eq!(
            done,
            Upgraded {
                marked: true,
                packed: 2,
                bytes: 2,
                deleted: 2
            }
        );
        let m = t.open(0);
        assert_eq!(m.format(), FORMAT);
        assert_eq!(singles(&m), 1, "only the big file is a single object");
        assert_eq!(object_ids(&m), ids_before, "the same ids, now packed");
        let packs = PackIndex::load(&m.store, &m.keys()).unwrap();
        assert_eq!(packs.ids().count(), 2);
        assert_whole(&m);
        // Restorable byte for byte.
        let (latest, _) = m.latest().unwrap().unwrap();
        for (p, c) in &files {
            let e = latest.entries.iter().find(|e| e.path == *p).unwrap();
            let mut got = Vec::new();
            m.fetch_into(e, &mut got).unwrap();
            assert_eq!(&got, c, "{p}");
        }

        let again = upgrade_plan(&m).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    /// An upgrade interrupted after its index was written, before the singles were
    /// deleted: the rerun packs nothing again and deletes the leftovers.
    #[test]
    fn an_interrupted_upgrade_is_finished_by_the_next_one() {
        let t = TestMirror::new();
        v1_mirror(&t);
        let m = t.open(0);
        let plan = upgrade_plan(&m).unwrap();
        // The run that was interrupted: everything but the deletes.
        let partial = UpgradePlan {
            pack: plan.pack.clone(),
            ..plan.clone()
        };
        let filler = PackFiller::new(&m.store, &m.key);
        m.mark_current_format().unwrap();
        for (id, e) in &partial.pack {
            let mut v = Vec::new();
            m.fetch_into(e, &mut v).unwrap();
            filler.add(id, &v).unwrap();
        }
        filler.finish().unwrap();
        assert_eq!(singles(&m), 3);

        let m = t.open(0);
        let plan = upgrade_plan(&m).unwrap();
        assert!(plan.pack.is_empty(), "{plan:?}");
        assert_eq!(plan.delete.len(), 2);
        let done = upgrade(&m, &plan).unwrap();
        assert_eq!((done.marked, done.packed, done.deleted), (false, 0, 2));
        let m = t.open(0);
        assert_eq!(singles(&m), 1);
        assert_eq!(t.root().join("packs").read_dir().unwrap().count(), 1);
        assert_whole(&m);
    }

    /// An apply prepared on the `/1` generation (its base names A's single object, so it
    /// uploads only the new content) and published after the upgrade moved A into a pack:
    /// every generation stays whole, because generations name ids, never locations.
    #[test]
    fn an_apply_that_straddles_the_upgrade_publishes_a_whole_generation() {
        let t = TestMirror::new();
        v1_mirror(&t);
        let m = t.open(0);
        let plan = upgrade_plan(&m).unwrap();
        let w = t.open(1);
        let src = t.source("2", &[("a", b"A"), ("c", b"C")]);
        let prepared = TestMirror::prepare(&w, &src);
        upgrade(&m, &plan).unwrap();
        assert_eq!(
            crate::mirror::commit::publish(&w, &prepared).unwrap(),
            crate::mirror::commit::Published::Written
        );
        let m = t.open(0);
        assert_eq!(m.generations().unwrap(), [1, 2]);
        assert_whole(&m);
    }

    /// A single whose content does not match the snapshot's BLAKE3 is not packed, the run
    /// fails naming it, and no single is deleted.
    #[test]
    fn a_changed_single_stops_the_upgrade_and_nothing_is_deleted() {
        let t = TestMirror::new();
        v1_mirror(&t);
        let m = t.open(0);
        let plan = upgrade_plan(&m).unwrap();
        // Swap A's object for B's: both decrypt, but A's holds the wrong content.
        let (a, b) = (&plan.pack[0].0, &plan.pack[1].0);
        let root = t.root();
        std::fs::copy(
            root.join(snapshot::object_path(b)),
            root.join(snapshot::object_path(a)),
        )
        .unwrap();
        let err = upgrade(&m, &plan).unwrap_err();
        assert!(format!("{err:#}").contains("tampered"), "{err:#}");
        assert_eq!(singles(&t.open(0)), 3, "nothing deleted");
    }
}
