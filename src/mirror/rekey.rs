//! `mirror rekey` as a plan and its execution: [`rekey_plan`] reads every generation and
//! decides what is rewritten; [`rekey`] executes that [`RekeyPlan`].
//!
//! Object ids are keyed by the mirror key, so a rekey renames every content. Execution order,
//! so that an interrupted rekey can always be finished by running it again:
//! 1. the next mirror key is stored, sealed to the recipients (`keys/mirror-key.next.age`),
//!    before any object uses it (a resumed rekey already has it; applies refuse to run
//!    while it exists);
//! 2. every distinct file content under the old key is written once under the next key:
//!    contents below [`PACK_THRESHOLD`] into new packs (members named by their new ids, with
//!    new index objects under the next key), larger ones as single objects. Old packs are
//!    read once each (streamed, or one ranged read per member when only a few are needed),
//!    never re-downloaded per member. A content whose new id is already stored — a single
//!    object, or a member of a pack that an index under the next key describes — is reused:
//!    that is how a resumed rekey skips what the interrupted one finished (a next-key pack
//!    whose index was never written is not trusted, its contents are written again, and
//!    the orphan is deleted with the old packs);
//! 3. every generation under the old key is rewritten under the next key, re-chained and
//!    signed by this controller; each records the digest it had before (`rekeyed_from`), so
//!    machines that remember the old chain accept the rewrite;
//! 4. the old key's objects, packs and index objects (and orphans), as listed when planning,
//!    are deleted: no generation references them any more. This comes *before* the key
//!    swap, because once the next key is the only key an old index object could not be
//!    opened, and every reader loading the index would fail on it;
//! 5. the key file is replaced by the next key and the next-key file removed.
//!
//! The generations are read before step 1; right after it they are listed again, and a
//! generation published in between stops the rekey (run it again: it resumes and includes
//! that generation).

use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::crypto::MirrorKey;
use super::index::ObjectIndex;
use super::packs::{self, PACK_THRESHOLD, PackFiller};
use super::snapshot::{self, SnapEntry, Snapshot};
use super::{KEY_FILE, Mirror, NEXT_KEY_FILE, WORKERS};

/// Stored objects by id: the stored size of a single object, `None` for a pack member.
type Stored = HashMap<String, Option<u64>>;

/// Plaintext BLAKE3 → (object id under the next key, stored size of a single object).
type NewIds = HashMap<String, (String, Option<u64>)>;

/// What a rekey rewrites.
#[derive(Debug, Clone)]
pub struct RekeyPlan {
    /// Finishing an interrupted rekey: the next key is already stored.
    pub resume: bool,
    /// Every generation, ascending; all are under the new key afterwards.
    pub generations: Vec<u64>,
    /// Generations still under the old key: rewritten, re-chained and re-signed.
    pub rewrite: Vec<u64>,
    /// Distinct file contents (by plaintext BLAKE3) under the old key, each with one entry
    /// that has it: re-encrypted once each.
    pub contents: BTreeMap<String, SnapEntry>,
    /// Key files written: the key file is replaced (and, unless resuming, the next-key file
    /// written first); the next-key file is deleted at the end.
    pub key_files: Vec<&'static str>,
    /// Single-object paths present now that no generation references after the rekey (the
    /// old key's objects), deleted last.
    pub delete_objects: Vec<String>,
    /// Pack paths present now that no index under the next key describes (the old key's
    /// packs, and orphans), deleted last.
    pub delete_packs: Vec<String>,
    /// Index object paths present now that are not under the next key, deleted last.
    pub delete_indexes: Vec<String>,
    /// Every generation, authenticated and validated, with its chain digest.
    snapshots: Vec<(Snapshot, String)>,
    /// What was stored when planning, by id (only next-key ids matter).
    present: Stored,
}

impl RekeyPlan {
    /// Plaintext bytes to re-encrypt.
    pub fn bytes(&self) -> u64 {
        self.contents.values().filter_map(|e| e.size).sum()
    }
}

/// What [`rekey`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    /// Distinct contents now under the new key (re-encrypted or reused).
    pub objects: usize,
    /// Of those, contents written into new packs by this run.
    pub packed: usize,
    pub snapshots: usize,
    /// Single objects deleted.
    pub deleted_objects: usize,
    /// Packs and index objects deleted.
    pub deleted_packs: usize,
    pub deleted_indexes: usize,
    pub key_id: String,
}

/// Plan a rekey of `mirror` (opened as a writer). A fresh rekey first checks the newest
/// generation (rollback, writer); an interrupted one cannot walk its half-rewritten chain,
/// so each generation is read authenticated (MAC, any signature) and validated on its own.
pub fn rekey_plan(mirror: &Mirror) -> Result<RekeyPlan> {
    let next = mirror.rekey_pending();
    if next.is_none() {
        mirror.latest()?;
    }
    let generations = mirror.generations()?;
    let snapshots: Vec<(Snapshot, String)> = generations
        .iter()
        .map(|g| {
            let (s, d, _) = mirror.read_unverified(*g)?;
            s.validate(&snapshot::snapshot_path(*g))?;
            Ok((s, d))
        })
        .collect::<Result<_>>()?;
    let index = ObjectIndex::load(&mirror.store)?;
    // Read afresh: the execution streams the old packs through this same loaded index.
    mirror.reload_pack_index();
    let packed = mirror.pack_index()?;
    let next_id = next.map(MirrorKey::key_id);
    let mut contents: BTreeMap<String, SnapEntry> = BTreeMap::new();
    let mut rewrite = Vec::new();
    // Objects some generation references after the rekey. Without a next key yet, the new
    // objects do not exist, so only generations already under it keep theirs.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for (s, _) in &snapshots {
        if Some(&s.key_id) == next_id.as_ref() {
            keep.extend(s.entries.iter().filter_map(|e| e.object.clone()));
            continue;
        }
        rewrite.push(s.generation);
        for e in s.entries.iter().filter(|e| e.kind == "file") {
            let h = e.blake3.clone().unwrap_or_default();
            if let (Some(k), Ok(hash)) = (next, content_hash(e)) {
                keep.insert(k.object_id(&hash));
            }
            contents.entry(h).or_insert_with(|| e.clone());
        }
    }
    let mut key_files = Vec::new();
    if next.is_none() {
        key_files.push(NEXT_KEY_FILE);
    }
    key_files.push(KEY_FILE);
    // Packs and index objects under the next key are what an interrupted run finished; every
    // other pack (the old key's, or an orphan without an index) goes.
    let next_pack = |m: &packs::PackMeta| next_id.is_some() && m.key_id == next_id;
    let live_indexes: BTreeSet<&String> = packed
        .packs
        .values()
        .filter(|m| next_pack(m))
        .filter_map(|m| m.index.as_ref())
        .collect();
    let mut delete_packs: Vec<String> = packed
        .packs
        .iter()
        .filter(|(_, m)| !next_pack(m))
        .map(|(p, _)| packs::pack_path(p))
        .collect();
    delete_packs.sort();
    let mut delete_indexes: Vec<String> = packed
        .indexes
        .keys()
        .filter(|i| !live_indexes.contains(i))
        .map(|i| packs::index_path(i))
        .collect();
    delete_indexes.sort();
    let mut present: Stored = index
        .sizes()
        .into_iter()
        .map(|(id, n)| (id, Some(n)))
        .collect();
    for (id, at) in packed.ids() {
        if packed.packs.get(&at.pack).is_some_and(next_pack) {
            present.insert(id.clone(), None);
        }
    }
    Ok(RekeyPlan {
        resume: next.is_some(),
        generations,
        rewrite,
        contents,
        key_files,
        delete_objects: index
            .iter()
            .filter(|o| !keep.contains(&o.id))
            .map(|o| o.path.clone())
            .collect(),
        delete_packs,
        delete_indexes,
        snapshots,
        present,
    })
}

/// Execute `plan` on `mirror` (the same opened mirror it was planned on). Plaintext of
/// large objects passes through files in `scratch` (a private directory) between download
/// and re-encryption.
pub fn rekey(mirror: &Mirror, plan: &RekeyPlan, scratch: &Path) -> Result<Rekeyed> {
    mirror.signer().context("a writer has a signing key")?;
    let fresh;
    let next = match mirror.rekey_pending() {
        Some(k) if plan.resume => k,
        None if !plan.resume => {
            fresh = MirrorKey::generate();
            mirror
                .store
                .put(NEXT_KEY_FILE, fresh.seal(&mirror.recipients)?)?;
            &fresh
        }
        _ => anyhow::bail!("the rekey plan was made for another state of the mirror"),
    };
    let now = mirror.generations()?;
    if now != plan.generations {
        anyhow::bail!(
            "{} changed while the rekey was planned (generations {:?}, now {:?}); run the rekey again to finish it",
            mirror.store.display(),
            plan.generations,
            now
        );
    }
    let (new_ids, packed) = reencrypt(mirror, plan, next, scratch)?;
    mirror.store.flush()?;
    let keep = rewrite_snapshots(mirror, plan, next, &new_ids)?;
    let stale: Vec<String> = plan
        .delete_objects
        .iter()
        .filter(|p| !keep.contains(p.rsplit('/').next().unwrap_or("")))
        .cloned()
        .collect();
    mirror.store.delete(&stale)?;
    mirror.store.delete(&plan.delete_packs)?;
    mirror.store.delete(&plan.delete_indexes)?;
    mirror.store.put(KEY_FILE, next.seal(&mirror.recipients)?)?;
    mirror.store.delete(&[NEXT_KEY_FILE.to_string()])?;
    Ok(Rekeyed {
        objects: new_ids.len(),
        packed,
        snapshots: plan.generations.len(),
        deleted_objects: stale.len(),
        deleted_packs: plan.delete_packs.len(),
        deleted_indexes: plan.delete_indexes.len(),
        key_id: next.key_id(),
    })
}

/// Rewrite every generation still under the old key under `next`, pointing at the
/// re-encrypted objects (`new_ids`), re-chained and signed by this controller; each records
/// the digest it had before. Returns every object some generation references afterwards.
fn rewrite_snapshots(
    mirror: &Mirror,
    plan: &RekeyPlan,
    next: &MirrorKey,
    new_ids: &NewIds,
) -> Result<BTreeSet<String>> {
    let signer = mirror.signer().context("a writer has a signing key")?;
    let mut prev: Option<String> = None;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for (s, old_digest) in &plan.snapshots {
        let mut s = s.clone();
        if s.key_id != next.key_id() {
            for e in s.entries.iter_mut().filter(|e| e.kind == "file") {
                let (id, n) = new_ids
                    .get(e.blake3.as_deref().unwrap_or(""))
                    .context("an object was not re-encrypted")?;
                e.object = Some(id.clone());
                e.stored_size = *n;
            }
            s.key_id = next.key_id();
            s.rekeyed_from = Some(old_digest.clone());
            s.previous = prev.clone();
            let pt = s.to_plaintext(next, Some(signer))?;
            mirror
                .store
                .put(&snapshot::snapshot_path(s.generation), next.encrypt(&pt)?)?;
            prev = Some(snapshot::chain_digest(&pt));
        } else {
            prev = Some(old_digest.clone());
        }
        keep.extend(s.entries.iter().filter_map(|e| e.object.clone()));
    }
    Ok(keep)
}

/// Write every content of `plan` under `next` (reusing what is already stored under it):
/// small ones into packs, large ones as single objects. Returns plaintext BLAKE3 → (new
/// object id, stored size of a single object), and how many contents were packed.
fn reencrypt(
    mirror: &Mirror,
    plan: &RekeyPlan,
    next: &MirrorKey,
    scratch: &Path,
) -> Result<(NewIds, usize)> {
    let mut out = HashMap::new();
    let mut small: Vec<(&SnapEntry, String)> = Vec::new();
    let mut large: Vec<(&String, &SnapEntry, [u8; 32])> = Vec::new();
    for (h, e) in &plan.contents {
        let hash = content_hash(e)?;
        let new_id = next.object_id(&hash);
        if let Some(n) = plan.present.get(&new_id) {
            out.insert(h.clone(), (new_id, *n));
        } else if e.size.unwrap_or(0) < PACK_THRESHOLD {
            small.push((e, new_id));
        } else {
            large.push((h, e, hash));
        }
    }
    let packed = small.len();
    if !small.is_empty() {
        // The marker names /2 before the mirror holds packs a /1 reader cannot read.
        mirror.mark_current_format()?;
        let filler = PackFiller::new(&mirror.store, next);
        let read = mirror.fetch_each(
            &small,
            WORKERS,
            |(e, _)| e,
            |(e, _)| Ok(Vec::with_capacity(e.size.unwrap_or(0) as usize)),
            |(_, id), bytes| filler.add(id, &bytes),
        );
        // The packs stored so far are indexed even after an error: a rerun reuses them.
        let indexed = filler.finish();
        read?;
        indexed?;
        for (e, id) in small {
            out.insert(e.blake3.clone().unwrap_or_default(), (id, None));
        }
    }
    let counter = AtomicU64::new(0);
    let results = crate::parallel::parallel(
        &mut large,
        WORKERS.min(4),
        |(h, e, hash)| -> Result<(String, (String, Option<u64>))> {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let tmp = scratch.join(n.to_string());
            let mut f = fs_err::File::create(&tmp)?;
            mirror.fetch_into(e, &mut f)?;
            drop(f);
            let (new_id, stored) = mirror.store_file_with(next, &tmp, e.size.unwrap_or(0), hash)?;
            let _ = std::fs::remove_file(&tmp);
            Ok(((*h).clone(), (new_id, Some(stored))))
        },
    );
    for r in results {
        let (h, v) = r?;
        out.insert(h, v);
    }
    Ok((out, packed))
}

/// The plaintext BLAKE3 of a file entry.
fn content_hash(e: &SnapEntry) -> Result<[u8; 32]> {
    e.to_entry().and_then(|en| match en.kind {
        crate::plan::manifest::Kind::File { hash, .. } => Ok(hash),
        _ => anyhow::bail!("not a file"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::check::check_objects;
    use crate::mirror::packs::{PackIndex, PackSink};
    use crate::mirror::testutil::{TestMirror, object_ids};

    /// Every generation readable, chained and complete under the mirror's current key.
    fn assert_whole(m: &Mirror) {
        let first = m.generations().unwrap()[0];
        m.walk_verified(first, |s, _| {
            assert_eq!(s.key_id, m.key.key_id());
            check_objects(m, s, true)
        })
        .unwrap();
    }

    /// Stored paths under `dir` of the mirror (`packs`, `index`, `objects`).
    fn listed(t: &TestMirror, dir: &str) -> BTreeSet<String> {
        let m = t.open(0);
        m.store
            .list(dir)
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect()
    }

    /// 1 MiB + 1 bytes: above the pack threshold, so a single object.
    fn big() -> Vec<u8> {
        (0..PACK_THRESHOLD + 1).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn rekey_rewrites_every_generation_pack_and_object_under_a_new_key() {
        let t = TestMirror::new();
        let m = t.open(0);
        let big = big();
        TestMirror::commit(
            &m,
            &t.source("1", &[("a", b"A"), ("b", b"B"), ("big", &big)]),
        );
        TestMirror::commit(
            &m,
            &t.source("2", &[("a", b"A"), ("c", b"C"), ("big", &big)]),
        );
        let old_key = m.key.key_id();
        let old_ids = object_ids(&m);
        let (old_packs, old_indexes) = (listed(&t, "packs"), listed(&t, "index"));
        assert_eq!(
            (old_packs.len(), old_indexes.len()),
            (2, 2),
            "one pack per apply"
        );
        t.open(1).latest().unwrap();

        let plan = rekey_plan(&m).unwrap();
        assert!(!plan.resume);
        assert_eq!(plan.rewrite, [1, 2]);
        assert_eq!(plan.contents.len(), 4, "A, B, C and the big file once each");
        assert_eq!(plan.bytes(), 3 + big.len() as u64);
        assert_eq!(plan.key_files, [NEXT_KEY_FILE, KEY_FILE]);
        assert_eq!(plan.delete_objects.len(), 1, "the big file's old object");
        assert_eq!(
            plan.delete_packs.iter().cloned().collect::<BTreeSet<_>>(),
            old_packs
        );
        assert_eq!(
            plan.delete_indexes.iter().cloned().collect::<BTreeSet<_>>(),
            old_indexes
        );
        // Planning changed nothing.
        assert!(!t.root().join(NEXT_KEY_FILE).exists());
        assert_eq!(object_ids(&m), old_ids);

        let scratch = tempfile::tempdir().unwrap();
        let done = rekey(&m, &plan, scratch.path()).unwrap();
        assert_eq!(
            (done.objects, done.packed, done.snapshots),
            (4, 3, 2),
            "{done:?}"
        );
        assert_eq!(
            (
                done.deleted_objects,
                done.deleted_packs,
                done.deleted_indexes
            ),
            (1, 2, 2)
        );
        assert!(!t.root().join(NEXT_KEY_FILE).exists());

        // Reopened (same rollback state, which remembers the old chain): the rewrite is
        // accepted, under the new key, and no old object, pack or index is left.
        let m = t.open(0);
        assert_ne!(m.key.key_id(), old_key);
        assert_eq!(m.key.key_id(), done.key_id);
        assert!(m.rekey_pending().is_none());
        let (latest, _) = m.latest().unwrap().unwrap();
        assert_eq!(latest.generation, 2);
        assert!(latest.rekeyed_from.is_some());
        for e in latest.entries.iter().filter(|e| e.kind == "file") {
            // Only the big file is a single object; packed entries name no stored size.
            assert_eq!(e.stored_size.is_some(), e.path == "big", "{e:?}");
        }
        assert_whole(&m);
        let new_ids = object_ids(&m);
        assert_eq!(new_ids.len(), 4);
        assert!(new_ids.is_disjoint(&old_ids));
        let (new_packs, new_indexes) = (listed(&t, "packs"), listed(&t, "index"));
        assert_eq!(
            (new_packs.len(), new_indexes.len()),
            (1, 1),
            "A, B and C in one pack"
        );
        assert!(new_packs.is_disjoint(&old_packs) && new_indexes.is_disjoint(&old_indexes));
        let index = PackIndex::load(&m.store, &m.keys()).unwrap();
        assert_eq!(index.ids().count(), 3);
        // The other writer, whose state also remembers the old chain, follows.
        assert_whole(&t.open(1));
    }

    /// A rekey interrupted after storing the next key, one pack with its index (content A)
    /// and one pack whose index it never wrote (content B) resumes: the plan reuses the
    /// indexed pack, writes B again, and deletes the orphan with the old key's packs.
    #[test]
    fn an_interrupted_rekey_is_finished_by_the_next_one() {
        let t = TestMirror::new();
        let m = t.open(0);
        let src = t.source("1", &[("a", b"A"), ("b", b"B")]);
        TestMirror::commit(&m, &src);
        let old_packs = listed(&t, "packs");
        let next = MirrorKey::generate();
        m.store
            .put(NEXT_KEY_FILE, next.seal(&m.recipients).unwrap())
            .unwrap();
        let id = |c: &[u8]| next.object_id(blake3::hash(c).as_bytes());
        let sink = PackSink::new(&m.store, &next);
        let mut pack = sink.start().unwrap();
        pack.add(&id(b"A"), b"A").unwrap();
        sink.store(pack).unwrap();
        sink.finish().unwrap();
        let done_pack = listed(&t, "packs")
            .difference(&old_packs)
            .next()
            .cloned()
            .unwrap();
        let mut orphan = sink.start().unwrap();
        orphan.add(&id(b"B"), b"B").unwrap();
        let (bytes, _) = orphan.finish().unwrap();
        let orphan = packs::pack_path(&packs::random_name());
        m.store.put_object(&orphan, bytes).unwrap();

        let m = t.open(0);
        assert!(m.rekey_pending().is_some());
        let plan = rekey_plan(&m).unwrap();
        assert!(plan.resume);
        assert_eq!(plan.key_files, [KEY_FILE]);
        assert!(
            !plan.delete_packs.contains(&done_pack),
            "the indexed next-key pack stays"
        );
        assert!(
            plan.delete_packs.contains(&orphan),
            "the unindexed one goes"
        );
        assert_eq!(plan.delete_packs.len(), 2, "the orphan and the old pack");
        assert_eq!(plan.delete_indexes.len(), 1, "the old index");
        let scratch = tempfile::tempdir().unwrap();
        let done = rekey(&m, &plan, scratch.path()).unwrap();
        assert_eq!(done.key_id, next.key_id());
        assert_eq!(
            (done.objects, done.packed),
            (2, 1),
            "A reused, B packed again"
        );
        let m = t.open(0);
        assert_whole(&m);
        let left = listed(&t, "packs");
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&done_pack) && !left.contains(&orphan));
        assert!(object_ids(&m).contains(&id(b"A")));
    }

    /// A generation published between the plan and the execution stops the rekey with the
    /// next key stored; running it again resumes and includes that generation.
    #[test]
    fn rekey_stops_when_a_generation_appears_after_the_plan_and_resumes() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A")]));
        let plan = rekey_plan(&m).unwrap();
        TestMirror::commit(&t.open(1), &t.source("2", &[("a", b"A"), ("b", b"B")]));
        let scratch = tempfile::tempdir().unwrap();
        let err = rekey(&m, &plan, scratch.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("run the rekey again"),
            "{err:#}"
        );
        assert!(t.root().join(NEXT_KEY_FILE).exists());

        let m = t.open(0);
        let plan = rekey_plan(&m).unwrap();
        assert!(plan.resume);
        assert_eq!(plan.rewrite, [1, 2]);
        assert_eq!(plan.delete_packs.len(), 2, "both applies' packs");
        rekey(&m, &plan, scratch.path()).unwrap();
        let m = t.open(0);
        assert_whole(&m);
        assert_eq!(listed(&t, "packs").len(), 1);
        assert_eq!(listed(&t, "index").len(), 1);
    }

    /// The small single objects of a `/1` mirror go into packs under the new key.
    #[test]
    fn rekey_packs_the_small_single_objects_of_a_v1_mirror() {
        let t = TestMirror::new();
        let m = t.open(0);
        let src = t.source("1", &[("a", b"A"), ("b", b"B")]);
        for (p, c) in [("a", b"A"), ("b", b"B")] {
            m.store_file(&src.join(p), 1, blake3::hash(c).as_bytes())
                .unwrap();
        }
        TestMirror::commit(&m, &src);
        m.store
            .put(crate::mirror::MARKER, b"offsync-mirror/1\n".to_vec())
            .unwrap();
        assert_eq!(
            (listed(&t, "objects").len(), listed(&t, "packs").len()),
            (2, 0)
        );
        let m = t.open(0);
        assert_eq!(m.format(), 1);
        let plan = rekey_plan(&m).unwrap();
        assert_eq!(plan.delete_objects.len(), 2);
        let scratch = tempfile::tempdir().unwrap();
        let done = rekey(&m, &plan, scratch.path()).unwrap();
        assert_eq!((done.packed, done.deleted_objects), (2, 2));
        assert_eq!(
            (listed(&t, "objects").len(), listed(&t, "packs").len()),
            (0, 1)
        );
        let m = t.open(0);
        assert_eq!(m.format(), crate::mirror::FORMAT);
        assert_whole(&m);
    }

    /// An old pack is read once however many of its members are rewritten: the rekey of a
    /// pack of many members makes one GET of it, never one ranged read per member.
    #[test]
    fn each_old_pack_is_read_once() {
        let t = TestMirror::new();
        let m = t.open(0);
        let files: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| (format!("f{i:02}"), format!("content {i}").into_bytes()))
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        TestMirror::commit(&m, &t.source("1", &refs));
        assert_eq!(listed(&t, "packs").len(), 1);
        let plan = rekey_plan(&m).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        rekey(&m, &plan, scratch.path()).unwrap();
        let reads = &m.store.reads;
        assert_eq!(reads.ranged.load(Ordering::Relaxed), 0, "{reads:?}");
        assert_eq!(reads.whole.load(Ordering::Relaxed), 1, "{reads:?}");
        assert_whole(&t.open(0));
    }
}
