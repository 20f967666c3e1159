//! `mirror prune` as a plan and its execution (rustic's `prune_plan()` → `prune(plan)`):
//! [`prune_plan`] decides, reading only, which generations go, which single objects and packs
//! no kept generation references, which packs are repacked and which index objects go; the
//! command shows that [`PrunePlan`] and [`prune`] executes exactly it (docs/mirror-v2.md,
//! "Prune").
//!
//! Safety rules (the same whether the plan is executed at once or later):
//! - the newest `keep` generations stay, and every object any of them references (walked
//!   through the verified chain, so an untrusted newest generation stops the prune);
//! - nothing younger than `min_age` is deleted or repacked (single objects, packs, index
//!   objects whose packs are gone): an apply may still be uploading it and about to publish a
//!   generation that references it. An apply reuses an unreferenced object only while it is
//!   younger than [`REUSE_MAX_AGE`](super::commit::REUSE_MAX_AGE), below the default
//!   `min_age`, so what a prune touches is never what an apply is reusing;
//! - a repack copies each referenced member byte for byte under its id (snapshots name ids,
//!   never locations, so no generation is rewritten) after checking its BLAKE3 and size
//!   against a snapshot entry; a pack with any member that fails, or that lacks a member its
//!   index lists, is neither repacked nor deleted;
//! - before the index that drops old locations is written, [`prune`] lists the generations
//!   again: a pack with any member a generation published since the plan references (a
//!   concurrent apply that reused it) is neither deleted nor dropped from the index, and such
//!   single objects are kept;
//! - locations disappear only through an index object that `supersedes` older ones, and it
//!   is written (and flushed) after every new pack it or an earlier index lists, and before
//!   any pack or index object is deleted. A superseded index object's packs that this prune
//!   does not delete are re-listed in the new one (whether or not `packs/` listed them: a
//!   concurrent apply may have stored one after the listing), so superseding never loses a
//!   location; an index object is superseded whole, never edited;
//! - an index object whose packs are all gone is deleted only when older than `min_age` (its
//!   packs were then listed, if they exist) and only if none of them was spared; superseded
//!   index objects are deleted at any age (their superseder already lists what they did).

use anyhow::{Context as _, Result, ensure};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::Mirror;
use super::index::ObjectIndex;
use super::pack::{self, PackWriter};
use super::packs::{self, IndexedPack, PACK_TARGET, PackIndex, PackSink};
use super::snapshot;

/// `--max-unused`'s default, in percent of the stored bytes (restic's is 5 %; repacking costs
/// a download and an upload per pack, so a little more waste is accepted).
pub const DEFAULT_MAX_UNUSED: u8 = 10;

/// More live index objects than this are consolidated into one.
pub const MAX_INDEXES: usize = 64;

/// One single object a prune deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoomedObject {
    pub id: String,
    /// Path relative to the mirror root.
    pub path: String,
    /// Stored size.
    pub size: u64,
}

/// How much of a pack the kept generations still use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackUse {
    /// The pack's name (`packs/<p[0..2]>/<p>`).
    pub pack: String,
    pub stored_size: u64,
    /// Tar bytes (header and padded data) of the members the kept generations reference.
    pub live_bytes: u64,
    /// Tar bytes of the other members (an unindexed pack: its stored size).
    pub dead_bytes: u64,
    /// Unreferenced members (an unindexed pack's are unknown: 0).
    pub dead_members: usize,
    /// Referenced members this pack is the location of: what a repack copies.
    pub live: Vec<String>,
    /// Whether an index object lists it (an unindexed one is an orphan of a killed apply).
    pub indexed: bool,
}

/// Object id → (BLAKE3 hex, size) of every object the kept generations reference.
pub type Live = BTreeMap<String, (String, u64)>;

/// What a prune deletes, repacks and keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// Generations kept (the newest `keep`), ascending.
    pub keep: Vec<u64>,
    /// Generations deleted, ascending.
    pub delete_generations: Vec<u64>,
    /// Single objects no kept generation references, older than `min_age`.
    pub delete_objects: Vec<DoomedObject>,
    /// Packs older than `min_age` with no referenced member, or unindexed.
    pub delete_packs: Vec<PackUse>,
    /// Packs older than `min_age` with both kinds of member, emptiest first, until the unused
    /// share is at most `max_unused`.
    pub repack: Vec<PackUse>,
    /// Live index objects the new index object supersedes: those naming a repacked pack, or
    /// all of them when more than [`MAX_INDEXES`] would remain.
    pub rewrite_indexes: Vec<String>,
    /// Index objects deleted without a successor: superseded ones, and those whose packs are
    /// all gone (older than `min_age`).
    pub delete_indexes: Vec<String>,
    /// The packs each index object in `rewrite_indexes`, and each not superseded one in
    /// `delete_indexes`, names.
    pub index_packs: BTreeMap<String, Vec<String>>,
    /// The index entries of those packs, to re-list the ones that stay.
    pub entries: BTreeMap<String, IndexedPack>,
    /// Unreferenced objects (single or packed) kept because they are younger than `min_age`.
    pub young_unreferenced_objects: usize,
    /// Referenced objects found in no index and no single object (the mirror is damaged):
    /// while there are any, packs no index lists are kept, since they may hold them.
    pub missing_objects: usize,
    /// Stored bytes of the packs and single objects that stay, before the repack.
    pub total_bytes: u64,
    /// Unused bytes in packs older than `min_age` that stay, before and after the repack.
    pub unused_bytes: u64,
    pub unused_after: u64,
    pub min_age: Duration,
    /// `--max-unused`, percent.
    pub max_unused: u8,
    /// What the kept generations reference: what a repack checks each copied member against.
    pub live: Live,
}

impl PrunePlan {
    /// Stored bytes of the single objects and packs deleted outright.
    pub fn delete_bytes(&self) -> u64 {
        self.delete_objects.iter().map(|o| o.size).sum::<u64>()
            + self.delete_packs.iter().map(|p| p.stored_size).sum::<u64>()
    }

    /// Bytes a repack frees, about: the unused tar bytes of the repacked packs.
    pub fn repack_bytes(&self) -> u64 {
        self.repack.iter().map(|p| p.dead_bytes).sum()
    }

    /// The unused share (percent) before and after the repack.
    pub fn unused_shares(&self) -> (f64, f64) {
        let share = |part: u64, total: u64| part as f64 * 100.0 / total.max(1) as f64;
        (
            share(self.unused_bytes, self.total_bytes),
            share(
                self.unused_after,
                self.total_bytes.saturating_sub(self.repack_bytes()),
            ),
        )
    }

    /// Unreferenced objects removed: single objects and the dead members of the packs.
    pub fn unreferenced_objects(&self) -> usize {
        self.delete_objects.len()
            + self
                .delete_packs
                .iter()
                .chain(&self.repack)
                .map(|p| p.dead_members)
                .sum::<usize>()
    }

    /// Whether executing the plan changes anything.
    pub fn is_empty(&self) -> bool {
        self.delete_generations.is_empty()
            && self.delete_objects.is_empty()
            && self.delete_packs.is_empty()
            && self.repack.is_empty()
            && self.rewrite_indexes.is_empty()
            && self.delete_indexes.is_empty()
    }
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub generations: usize,
    /// Unreferenced objects removed (single objects and dead pack members).
    pub objects: usize,
    /// Stored bytes freed (deleted minus what the repack wrote).
    pub bytes: u64,
    /// Planned objects and packs kept because a generation published since the plan
    /// references them.
    pub spared: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub indexes_deleted: usize,
    /// Packs not repacked because a member failed its check (path: why); they are kept.
    pub damaged: Vec<String>,
}

/// A member's bytes in the tar stream: its header and its data padded to 512.
fn footprint(len: u64) -> u64 {
    512 + len.div_ceil(512) * 512
}

/// Plan a prune keeping the newest `keep` generations and the objects they reference,
/// repacking until at most `max_unused` percent of the stored bytes are unused.
pub fn prune_plan(
    mirror: &Mirror,
    keep: NonZeroUsize,
    min_age: Duration,
    max_unused: u8,
) -> Result<PrunePlan> {
    if mirror.rekey_pending().is_some() {
        anyhow::bail!(
            "a rekey of {} was interrupted; finish it with `offsync mirror rekey NAME` before pruning",
            mirror.store.display()
        );
    }
    mirror.latest()?;
    let gens = mirror.generations()?;
    let cut = gens.len().saturating_sub(keep.get());
    let (old, kept) = gens.split_at(cut);
    let live = match kept.first() {
        Some(&first) => live_from(mirror, first)?,
        None => Live::new(),
    };
    let mut young = 0usize;
    let mut total = 0u64;
    let mut delete_objects = Vec::new();
    let singles = ObjectIndex::load(&mirror.store)?;
    for o in singles.iter() {
        if live.contains_key(&o.id) {
            total += o.size;
        } else if o.age < min_age {
            young += 1;
            total += o.size;
        } else {
            delete_objects.push(DoomedObject {
                id: o.id.clone(),
                path: o.path.clone(),
                size: o.size,
            });
        }
    }
    let index = PackIndex::load(&mirror.store, &mirror.keys())?;
    // A referenced object in no index and no single object may be in a pack no index lists
    // (an index object lost or wrongly superseded): then no unindexed pack is deleted.
    let missing = live
        .keys()
        .filter(|id| index.locate(id).is_none() && singles.get(id).is_none())
        .count();
    let mut names: Vec<&String> = index.packs.keys().collect();
    names.sort();
    let mut delete_packs = Vec::new();
    let mut candidates = Vec::new();
    let mut unused = 0u64;
    for name in names {
        let meta = &index.packs[name];
        let old = meta.age >= min_age;
        let mut u = PackUse {
            pack: name.clone(),
            stored_size: meta.stored_size,
            live_bytes: 0,
            dead_bytes: 0,
            dead_members: 0,
            live: Vec::new(),
            indexed: meta.indexed.is_some(),
        };
        let Some(p) = &meta.indexed else {
            if old && missing == 0 {
                u.dead_bytes = meta.stored_size;
                delete_packs.push(u);
            } else {
                total += meta.stored_size;
            }
            continue;
        };
        for (id, _, len) in &p.members {
            // A copy of an object that is also packed elsewhere is live only where reads
            // find it; the other copies are unused.
            if live.contains_key(id) && index.locate(id).is_some_and(|at| &at.pack == name) {
                u.live.push(id.clone());
                u.live_bytes += footprint(*len);
            } else {
                u.dead_bytes += footprint(*len);
                u.dead_members += 1;
            }
        }
        if !old {
            young += u.dead_members;
            total += meta.stored_size;
        } else if u.live.is_empty() {
            delete_packs.push(u);
        } else {
            total += meta.stored_size;
            if u.dead_members > 0 {
                unused += u.dead_bytes;
                candidates.push(u);
            }
        }
    }
    // Emptiest first: the least live data copied per unused byte freed.
    candidates.sort_by(|a, b| {
        let share = |p: &PackUse| (p.live_bytes as u128, (p.live_bytes + p.dead_bytes) as u128);
        let ((la, ta), (lb, tb)) = (share(a), share(b));
        (la * tb).cmp(&(lb * ta)).then_with(|| a.pack.cmp(&b.pack))
    });
    let (unused_before, total_before) = (unused, total);
    let mut repack = Vec::new();
    for c in candidates {
        if unused * 100 <= u64::from(max_unused) * total {
            break;
        }
        unused -= c.dead_bytes;
        total = total.saturating_sub(c.dead_bytes);
        repack.push(c);
    }
    let (rewrite_indexes, delete_indexes) = plan_indexes(&index, &delete_packs, &repack, min_age);
    let mut index_packs = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for name in rewrite_indexes.iter().chain(&delete_indexes) {
        let Some(packs) = index.contents.get(name) else {
            continue; // superseded: deleted whatever it names
        };
        for p in packs {
            let entry = index
                .packs
                .get(p)
                .and_then(|m| m.indexed.as_ref())
                .or_else(|| index.unlisted.get(p));
            if let Some(e) = entry {
                entries.insert(p.clone(), e.clone());
            }
        }
        index_packs.insert(name.clone(), packs.clone());
    }
    Ok(PrunePlan {
        keep: kept.to_vec(),
        delete_generations: old.to_vec(),
        delete_objects,
        delete_packs,
        repack,
        rewrite_indexes,
        delete_indexes,
        index_packs,
        entries,
        young_unreferenced_objects: young,
        missing_objects: missing,
        total_bytes: total_before,
        unused_bytes: unused_before,
        unused_after: unused,
        min_age,
        max_unused,
        live,
    })
}

/// Which live index objects a new one supersedes (those naming a repacked pack; all of them
/// when more than [`MAX_INDEXES`] would remain) and which index objects are deleted outright.
fn plan_indexes(
    index: &PackIndex,
    delete_packs: &[PackUse],
    repack: &[PackUse],
    min_age: Duration,
) -> (Vec<String>, Vec<String>) {
    let repacked: HashSet<&str> = repack.iter().map(|p| p.pack.as_str()).collect();
    let gone: HashSet<&str> = delete_packs
        .iter()
        .map(|p| p.pack.as_str())
        .chain(repacked.iter().copied())
        .collect();
    let mut rewrite = BTreeSet::new();
    let mut delete = BTreeSet::new();
    let mut live = 0usize;
    for (name, age) in &index.indexes {
        let Some(packs) = index.contents.get(name) else {
            delete.insert(name.clone()); // superseded
            continue;
        };
        live += 1;
        if packs.iter().any(|p| repacked.contains(p.as_str())) {
            rewrite.insert(name.clone());
        } else if *age >= min_age
            && packs
                .iter()
                .all(|p| gone.contains(p.as_str()) || !index.packs.contains_key(p))
        {
            delete.insert(name.clone());
        }
    }
    let deleted_live = delete
        .iter()
        .filter(|n| index.contents.contains_key(*n))
        .count();
    let remaining = live - rewrite.len() - deleted_live + usize::from(!rewrite.is_empty());
    if remaining > MAX_INDEXES {
        rewrite = index
            .contents
            .keys()
            .filter(|n| !delete.contains(*n))
            .cloned()
            .collect();
    }
    (rewrite.into_iter().collect(), delete.into_iter().collect())
}

/// Execute `plan`: copy the live members of the packs it repacks into new packs, list the
/// generations again and spare what a generation published since the plan references, write
/// the index object that supersedes the rewritten ones, then delete generations, packs,
/// single objects and index objects, in that order.
pub fn prune(mirror: &Mirror, plan: &PrunePlan) -> Result<Pruned> {
    let sink = PackSink::new(&mirror.store, &mirror.key);
    let mut done = Pruned::default();
    let mut written = 0u64;
    let mut current: Option<PackWriter<Vec<u8>>> = None;
    let mut copied: Vec<&PackUse> = Vec::new();
    for p in &plan.repack {
        if crate::interrupt::interrupted() {
            anyhow::bail!("interrupted before anything was deleted");
        }
        match copy_live(mirror, &sink, &mut current, p, &plan.live, &mut done) {
            Ok(n) => {
                written += n;
                copied.push(p);
            }
            Err(e) => done
                .damaged
                .push(format!("{}: {e:#}", packs::pack_path(&p.pack))),
        }
    }
    if let Some(w) = current.take().filter(|w| !w.is_empty()) {
        written += sink.store(w)?;
        done.packs_written += 1;
    }

    // A generation published since the plan may reference what the plan calls unused: an
    // apply that reused it. What it references stays, and stays indexed.
    let newest_planned = plan.keep.last().copied().unwrap_or(0);
    let newer = mirror
        .generations()?
        .into_iter()
        .find(|&g| g > newest_planned);
    let still_needed: BTreeSet<String> = match newer {
        Some(g) => live_from(mirror, g)?.into_keys().collect(),
        None => BTreeSet::new(),
    };
    let fresh = match still_needed.is_empty() {
        true => None,
        false => Some(PackIndex::load(&mirror.store, &mirror.keys())?),
    };
    let needed = |pack: &str| {
        fresh
            .as_ref()
            .and_then(|f| f.pack(pack))
            .is_some_and(|p| p.members.iter().any(|(id, ..)| still_needed.contains(id)))
    };
    let mut removed: Vec<&PackUse> = Vec::new();
    for p in plan.delete_packs.iter().chain(copied.iter().copied()) {
        if needed(&p.pack) {
            done.spared += 1;
        } else {
            removed.push(p);
        }
    }
    let (spared, doomed): (Vec<&DoomedObject>, Vec<&DoomedObject>) = plan
        .delete_objects
        .iter()
        .partition(|o| still_needed.contains(&o.id));
    done.spared += spared.len();
    let gone: HashSet<&str> = removed.iter().map(|p| p.pack.as_str()).collect();

    // The new index: the new packs, and every pack the superseded index objects name that
    // stays. Only after it is stored do old locations go.
    let mut drop_indexes: Vec<String> = Vec::new();
    if plan.rewrite_indexes.is_empty() {
        sink.finish()?;
    } else {
        let mut seen = HashSet::new();
        let survivors: Vec<IndexedPack> = plan
            .rewrite_indexes
            .iter()
            .flat_map(|i| plan.index_packs.get(i).into_iter().flatten())
            .filter(|p| !gone.contains(p.as_str()) && seen.insert(p.as_str()))
            .filter_map(|p| plan.entries.get(p).cloned())
            .collect();
        // Index objects already superseded are superseded again, so deleting the index that
        // superseded them (now or later) cannot bring them back.
        let mut supersedes = plan.rewrite_indexes.clone();
        supersedes.extend(
            plan.delete_indexes
                .iter()
                .filter(|i| !plan.index_packs.contains_key(*i))
                .cloned(),
        );
        sink.finish_superseding(survivors, supersedes)?;
        drop_indexes.extend(plan.rewrite_indexes.iter().cloned());
    }
    // An index whose packs were all to go stays if one of them was spared or not repacked.
    let planned: HashSet<&str> = plan
        .delete_packs
        .iter()
        .chain(&plan.repack)
        .map(|p| p.pack.as_str())
        .collect();
    drop_indexes.extend(
        plan.delete_indexes
            .iter()
            .filter(|i| {
                plan.index_packs.get(*i).is_none_or(|ps| {
                    ps.iter()
                        .all(|p| gone.contains(p.as_str()) || !planned.contains(p.as_str()))
                })
            })
            .cloned(),
    );

    let names: Vec<String> = plan
        .delete_generations
        .iter()
        .map(|g| snapshot::snapshot_path(*g))
        .collect();
    mirror.store.delete(&names)?;
    let paths: Vec<String> = removed
        .iter()
        .map(|p| packs::pack_path(&p.pack))
        .chain(doomed.iter().map(|o| o.path.clone()))
        .collect();
    mirror.store.delete(&paths)?;
    let index_paths: Vec<String> = drop_indexes.iter().map(|i| packs::index_path(i)).collect();
    mirror.store.delete(&index_paths)?;

    // This mirror's own cached index names packs that are gone now.
    mirror.reload_pack_index();
    done.generations = names.len();
    done.objects = doomed.len() + removed.iter().map(|p| p.dead_members).sum::<usize>();
    let freed = doomed.iter().map(|o| o.size).sum::<u64>()
        + removed.iter().map(|p| p.stored_size).sum::<u64>();
    done.bytes = freed.saturating_sub(written);
    done.packs_deleted = removed.len();
    done.packs_repacked = removed.iter().filter(|p| !p.live.is_empty()).count();
    done.indexes_deleted = index_paths.len();
    Ok(done)
}

/// Copy the live members of pack `p` into `current` (a new pack, stored once it is full),
/// each checked against what the snapshots say first. Returns the stored bytes of the new
/// packs it completed. An error leaves `p` as it is; members already copied are duplicates.
fn copy_live(
    mirror: &Mirror,
    sink: &PackSink,
    current: &mut Option<PackWriter<Vec<u8>>>,
    p: &PackUse,
    live: &Live,
    done: &mut Pruned,
) -> Result<u64> {
    let mut want: HashSet<&str> = p.live.iter().map(String::as_str).collect();
    let mut written = 0u64;
    let reader = mirror.store.reader(&packs::pack_path(&p.pack))?;
    pack::read_members(&mirror.key, reader, |m, data| {
        if !want.remove(m.id.as_str()) {
            return Ok(());
        }
        let (blake3, size) = live.get(&m.id).context("a live member is referenced")?;
        let mut bytes = Vec::with_capacity(m.len.min(*size) as usize);
        // At most one byte more than the snapshot's size: a member whose tar header claims
        // more (a forged pack) fails the check below without being read into memory.
        data.take(m.len.min(*size + 1)).read_to_end(&mut bytes)?;
        ensure!(
            bytes.len() as u64 == *size && blake3::hash(&bytes).to_hex().as_str() == blake3,
            "object {} does not match the snapshot's BLAKE3 and size",
            m.id
        );
        let w = match current {
            Some(w) => w,
            None => current.insert(sink.start()?),
        };
        w.add(&m.id, &bytes)?;
        if w.len() >= PACK_TARGET {
            let full = current.take().expect("a pack is being filled");
            written += sink.store(full)?;
            done.packs_written += 1;
        }
        Ok(())
    })?;
    ensure!(
        want.is_empty(),
        "{} referenced object(s) its index lists are not in it",
        want.len()
    );
    Ok(written)
}

/// Every object referenced by generation `from` and the generations after it, with the
/// content its snapshot entry names.
fn live_from(mirror: &Mirror, from: u64) -> Result<Live> {
    let mut live = Live::new();
    mirror.walk_verified(from, |s, _| {
        for e in &s.entries {
            if let Some(o) = &e.object {
                // An entry without a hash still keeps its object; nothing copies it unchecked.
                live.entry(o.clone())
                    .or_insert_with(|| (e.blake3.clone().unwrap_or_default(), e.size.unwrap_or(0)));
            }
        }
        Ok(())
    })?;
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::check::check_objects;
    use crate::mirror::commit::{self, Published};
    use crate::mirror::testutil::{TestMirror, object_ids};

    fn n(k: usize) -> NonZeroUsize {
        NonZeroUsize::new(k).unwrap()
    }

    /// Incompressible-looking content, different per `seed`.
    fn content(seed: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut i = 0u64;
        while out.len() < len {
            let h = blake3::hash(format!("{seed}/{i}").as_bytes());
            out.extend_from_slice(h.as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// `count` files `f00…` of 20 KiB, from `start`.
    fn files(start: usize, count: usize) -> Vec<(String, Vec<u8>)> {
        (start..start + count)
            .map(|i| (format!("f{i:02}"), content(i, 20 << 10)))
            .collect()
    }

    fn source(t: &TestMirror, name: &str, files: &[(String, Vec<u8>)]) -> std::path::PathBuf {
        let v: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        t.source(name, &v)
    }

    /// Stored bytes and count of the packs in the mirror's directory.
    fn packs_on_disk(t: &TestMirror) -> (u64, usize) {
        let mut bytes = 0;
        let mut count = 0;
        for d in std::fs::read_dir(t.root().join("packs")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                bytes += f.unwrap().metadata().unwrap().len();
                count += 1;
            }
        }
        (bytes, count)
    }

    fn index_objects(t: &TestMirror) -> usize {
        std::fs::read_dir(t.root().join("index"))
            .map(|r| {
                r.map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Every file of the newest generation reads back, through a fresh reader.
    fn check_latest(t: &TestMirror) {
        let m = t.open(1);
        let (latest, _) = m.latest().unwrap().unwrap();
        check_objects(&m, &latest, true).unwrap();
    }

    #[test]
    fn prune_plans_then_deletes_old_generations_and_only_their_objects() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A"), ("b", b"B")]));
        TestMirror::commit(&m, &t.source("2", &[("a", b"A"), ("c", b"C")]));
        TestMirror::commit(&m, &t.source("3", &[("c", b"C"), ("d", b"D")]));
        let ids = object_ids(&m);
        assert_eq!(ids.len(), 4);

        // Everything unreferenced is young: the plan keeps it, and says so.
        let young = prune_plan(&m, n(2), Duration::from_secs(3600), 0).unwrap();
        assert_eq!(
            (young.keep.as_slice(), young.delete_generations.as_slice()),
            (&[2, 3][..], &[1][..])
        );
        assert!(young.delete_packs.is_empty() && young.repack.is_empty());
        assert_eq!(young.young_unreferenced_objects, 1);

        // B shares generation 1's pack with A, which generation 2 still references: with
        // --max-unused 100 the pack stays as it is.
        let lazy = prune_plan(&m, n(2), Duration::ZERO, 100).unwrap();
        assert!(lazy.repack.is_empty() && lazy.delete_packs.is_empty());
        assert!(lazy.unused_bytes > 0);

        let plan = prune_plan(&m, n(2), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.repack.len(), 1, "generation 1's pack");
        assert_eq!(plan.unreferenced_objects(), 1, "only B");
        assert_eq!(plan.repack[0].live.len(), 1);
        assert_eq!(plan.rewrite_indexes.len(), 1);
        assert_eq!(plan.unused_after, 0);
        // Planning changed nothing.
        assert_eq!(m.generations().unwrap(), [1, 2, 3]);
        assert_eq!(object_ids(&m), ids);

        let done = prune(&m, &plan).unwrap();
        assert_eq!(
            (
                done.generations,
                done.objects,
                done.spared,
                done.packs_repacked
            ),
            (1, 1, 0, 1)
        );
        assert!(done.damaged.is_empty());
        assert_eq!(m.generations().unwrap(), [2, 3]);
        let left = object_ids(&m);
        assert_eq!(left.len(), 3);
        assert!(left.is_subset(&ids));
        // What is kept still walks, verifies and decrypts.
        let r = t.open(1);
        r.walk_verified(2, |s, _| check_objects(&r, s, true))
            .unwrap();
        // Nothing left to prune: the superseded index object went with its pack.
        assert!(prune_plan(&m, n(2), Duration::ZERO, 0).unwrap().is_empty());
        assert_eq!(index_objects(&t), 3);
    }

    /// The case: half of the files deleted, prune repacks and frees about half.
    #[test]
    fn prune_after_deleting_half_of_the_files_repacks_and_frees_space() {
        let t = TestMirror::new();
        let m = t.open(0);
        let all = files(0, 40);
        TestMirror::commit(&m, &source(&t, "s", &all));
        TestMirror::commit(&m, &source(&t, "s", &all[..20]));
        let (before, packs_before) = packs_on_disk(&t);
        assert_eq!(packs_before, 1);
        // At the default 10 % a half-unused pack is repacked.
        let plan = prune_plan(&m, n(1), Duration::ZERO, DEFAULT_MAX_UNUSED).unwrap();
        assert_eq!(plan.repack.len(), 1);
        let (before_share, after_share) = plan.unused_shares();
        assert!((45.0..55.0).contains(&before_share), "{plan:?}");
        assert_eq!(after_share, 0.0);
        let done = prune(&m, &plan).unwrap();
        assert_eq!(
            (done.objects, done.packs_repacked, done.packs_written),
            (20, 1, 1)
        );
        let (after, packs_after) = packs_on_disk(&t);
        assert_eq!(packs_after, 1);
        assert!(after < before * 52 / 100, "{before} → {after}");
        assert_eq!(done.bytes, before - after);
        assert_eq!(object_ids(&m).len(), 20);
        check_latest(&t);
    }

    /// The plan lists the pack of an apply that has uploaded but not yet published; when that
    /// apply publishes before the plan is executed, prune spares it.
    #[test]
    fn prune_never_deletes_what_a_generation_published_after_the_plan_references() {
        let t = TestMirror::new();
        let (w0, w1) = (t.open(0), t.open(1));
        TestMirror::commit(&w0, &t.source("1", &[("a", b"A")]));
        let pending = TestMirror::prepare(&w1, &t.source("2", &[("a", b"A"), ("b", b"B")]));
        let plan = prune_plan(&w0, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.delete_packs.len(), 1, "B's pack, not yet referenced");
        assert_eq!(plan.unreferenced_objects(), 1);
        assert_eq!(commit::publish(&w1, &pending).unwrap(), Published::Written);
        let done = prune(&w0, &plan).unwrap();
        assert_eq!((done.packs_deleted, done.spared), (0, 1));
        let (latest, _) = w0.latest().unwrap().unwrap();
        assert_eq!(latest.generation, 2);
        check_latest(&t);
    }

    /// An apply reuses an unreferenced member of a young pack; a prune (here with --min-age 0,
    /// so it may touch that pack) planned before the apply publishes must not repack it away.
    #[test]
    fn a_member_a_concurrent_apply_reused_survives_a_repack() {
        let t = TestMirror::new();
        let (w0, w1) = (t.open(0), t.open(1));
        TestMirror::commit(&w0, &t.source("1", &[("a", b"A"), ("b", b"B")]));
        TestMirror::commit(&w0, &t.source("2", &[("a", b"A")]));
        let packs = packs_on_disk(&t).1;
        let pending = TestMirror::prepare(&w1, &t.source("3", &[("a", b"A"), ("b", b"B")]));
        assert_eq!(packs_on_disk(&t).1, packs, "B was reused, not uploaded");
        let plan = prune_plan(&w0, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.repack.len(), 1, "generation 1's pack: A used, B not");
        assert_eq!(commit::publish(&w1, &pending).unwrap(), Published::Written);
        let done = prune(&w0, &plan).unwrap();
        assert_eq!((done.packs_deleted, done.spared), (0, 1));
        check_latest(&t);
        // The copy of A the spared repack made is a duplicate: the next prune removes one of
        // the two, and then nothing is left to do.
        let again = prune_plan(&w0, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(again.unreferenced_objects(), 1, "{again:?}");
        prune(&w0, &again).unwrap();
        check_latest(&t);
        assert!(prune_plan(&w0, n(1), Duration::ZERO, 0).unwrap().is_empty());
    }

    /// A reader that loaded the pack index before a repack finds the moved objects: a read of
    /// a pack that is gone loads the index again. Never other bytes.
    #[test]
    fn a_restore_that_loaded_the_index_before_a_repack_still_reads_every_file() {
        let t = TestMirror::new();
        let m = t.open(0);
        let all = files(0, 12);
        TestMirror::commit(&m, &source(&t, "s", &all));
        TestMirror::commit(&m, &source(&t, "s", &all[..6]));
        let reader = t.open(1);
        let (latest, _) = reader.latest().unwrap().unwrap();
        let stale = reader.pack_index().unwrap();
        let plan = prune_plan(&m, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.repack.len(), 1);
        prune(&m, &plan).unwrap();
        let old = &plan.repack[0].pack;
        assert!(
            stale.packs.contains_key(old),
            "the reader still has the old index"
        );
        let files: Vec<&crate::mirror::snapshot::SnapEntry> =
            latest.entries.iter().filter(|e| e.kind == "file").collect();
        // One at a time (a ranged read of the vanished pack) …
        for (e, (_, want)) in files.iter().zip(&all) {
            let mut got = Vec::new();
            reader.fetch_into(e, &mut got).unwrap();
            assert_eq!(&got, want, "{}", e.path);
        }
        // … and all at once (streaming the vanished pack), on a reader with the stale index.
        let reader = t.open(1);
        reader.latest().unwrap();
        let _ = reader.pack_index().unwrap();
        std::fs::remove_dir_all(t.root().join("packs")).unwrap();
        let gone = reader.fetch_each(&files, 2, |e| e, |_| Ok(Vec::new()), |_, _| Ok(()));
        assert!(gone.is_err(), "no pack left: an error, not other bytes");
    }

    /// Orphans go (an unindexed pack of a killed apply, a superseded index object, an index
    /// whose pack is gone), and more than [`MAX_INDEXES`] index objects become one.
    #[test]
    fn prune_deletes_orphans_and_consolidates_many_index_objects() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A")]));
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        let (pack, meta) = index.packs.iter().next().unwrap();
        let entry = meta.indexed.clone().unwrap();
        // A pack no index lists (an apply killed between the pack and its index).
        let sink = PackSink::new(&m.store, &m.key);
        let mut w = sink.start().unwrap();
        w.add(&"0".repeat(64), b"orphan").unwrap();
        let (bytes, _) = w.finish().unwrap();
        let orphan = packs::random_name();
        m.store
            .put_object(&packs::pack_path(&orphan), bytes)
            .unwrap();
        // An index naming a pack that is gone, and 70 more copies of the real one's entry.
        let mut ghost = entry.clone();
        ghost.pack = packs::random_name();
        sink.write_index(vec![ghost], Vec::new()).unwrap();
        for _ in 0..70 {
            sink.write_index(vec![entry.clone()], Vec::new()).unwrap();
        }
        assert_eq!(index_objects(&t), 72);
        let young = prune_plan(&m, n(1), Duration::from_secs(3600), 0).unwrap();
        assert!(young.delete_packs.is_empty() && young.delete_indexes.is_empty());
        let plan = prune_plan(&m, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.delete_packs.len(), 1);
        assert!(!plan.delete_packs[0].indexed);
        assert_eq!(plan.delete_indexes.len(), 1, "the ghost's");
        assert_eq!(plan.rewrite_indexes.len(), 71, "consolidated");
        prune(&m, &plan).unwrap();
        assert_eq!(index_objects(&t), 1);
        assert_eq!(packs_on_disk(&t).1, 1);
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        assert_eq!(index.pack(pack), Some(&entry), "re-listed unchanged");
        check_latest(&t);
        assert!(prune_plan(&m, n(1), Duration::ZERO, 0).unwrap().is_empty());
    }

    /// An apply may store a pack after prune listed `packs/` and index it before prune
    /// listed `index/`. When prune supersedes that index object (here: consolidation), the
    /// new one still lists the pack prune never saw.
    #[test]
    fn superseding_keeps_a_pack_stored_after_the_listing() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A")]));
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        let entry = index
            .packs
            .values()
            .next()
            .unwrap()
            .indexed
            .clone()
            .unwrap();
        let sink = PackSink::new(&m.store, &m.key);
        for _ in 0..MAX_INDEXES {
            sink.write_index(vec![entry.clone()], Vec::new()).unwrap();
        }
        let mut w = sink.start().unwrap();
        w.add(&"c".repeat(64), b"late").unwrap();
        let (bytes, info) = w.finish().unwrap();
        let late = packs::random_name();
        sink.write_index(vec![IndexedPack::from_info(&late, &info)], Vec::new())
            .unwrap();
        // (At --min-age 0 that index, naming only a pack not listed, would count as one
        // whose packs are gone: the min-age rule is what protects it.)
        let plan = prune_plan(&m, n(1), Duration::from_secs(3600), 0).unwrap();
        assert_eq!(plan.rewrite_indexes.len(), MAX_INDEXES + 2, "consolidated");
        // The pack lands after the plan's listing (its index was already there).
        m.store.put_object(&packs::pack_path(&late), bytes).unwrap();
        prune(&m, &plan).unwrap();
        assert_eq!(index_objects(&t), 1);
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        assert!(index.pack(&late).is_some(), "still indexed");
        assert!(index.locate(&"c".repeat(64)).is_some());
    }

    /// With its index object lost, a pack holding referenced objects looks like an orphan;
    /// prune sees that referenced objects are missing and keeps every unindexed pack.
    #[test]
    fn unindexed_packs_are_kept_while_referenced_objects_are_missing() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A")]));
        std::fs::remove_dir_all(t.root().join("index")).unwrap();
        let plan = prune_plan(&m, n(1), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.missing_objects, 1);
        assert!(plan.delete_packs.is_empty(), "{plan:?}");
        prune(&m, &plan).unwrap();
        assert_eq!(packs_on_disk(&t).1, 1);
    }

    /// A pack whose referenced member does not decrypt or does not match is neither repacked
    /// nor deleted, and stays indexed; the prune says so.
    #[test]
    fn a_damaged_pack_is_kept_and_reported() {
        let t = TestMirror::new();
        let m = t.open(0);
        let all = files(0, 4);
        TestMirror::commit(&m, &source(&t, "s", &all));
        TestMirror::commit(&m, &source(&t, "s", &all[..2]));
        let plan = prune_plan(&m, n(1), Duration::ZERO, 0).unwrap();
        let path = t.root().join(packs::pack_path(&plan.repack[0].pack));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let done = prune(&m, &plan).unwrap();
        assert_eq!(done.damaged.len(), 1, "{done:?}");
        assert_eq!(done.packs_deleted, 0);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        assert!(index.pack(&plan.repack[0].pack).is_some(), "still indexed");
    }
}
