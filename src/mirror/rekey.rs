//! `mirror rekey` as a plan and its execution: [`rekey_plan`] reads every generation and
//! decides what is rewritten; [`rekey`] executes that [`RekeyPlan`].
//!
//! Execution order, so that an interrupted rekey can always be finished by running it again:
//! 1. the next mirror key is stored, sealed to the recipients (`keys/mirror-key.next.age`),
//!    before any object uses it (a resumed rekey already has it; applies refuse to run
//!    while it exists);
//! 2. every distinct file content under the old key is re-encrypted once under the next key
//!    (contents already re-encrypted by the interrupted run are reused);
//! 3. every generation under the old key is rewritten under the next key, re-chained and
//!    signed by this controller; each records the digest it had before (`rekeyed_from`), so
//!    machines that remember the old chain accept the rewrite;
//! 4. the key file is replaced by the next key and the next-key file removed;
//! 5. the objects no generation references any more (the old key's) are deleted.
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
use super::snapshot::{self, SnapEntry, Snapshot};
use super::{KEY_FILE, Mirror, NEXT_KEY_FILE, WORKERS};

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
    /// Object paths present now that no generation references after the rekey (the old
    /// key's objects), deleted last.
    pub delete_objects: Vec<String>,
    /// Every generation, authenticated and validated, with its chain digest.
    snapshots: Vec<(Snapshot, String)>,
    /// The objects present when planning, id → stored size.
    present: HashMap<String, u64>,
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
    pub snapshots: usize,
    pub deleted_objects: usize,
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
        snapshots,
        present: index.sizes(),
    })
}

/// Execute `plan` on `mirror` (the same opened mirror it was planned on). Plaintext passes
/// through files in `scratch` (a private directory) between download and re-encryption.
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
    let new_ids = reencrypt(mirror, plan, next, scratch)?;
    mirror.store.flush()?;
    let keep = rewrite_snapshots(mirror, plan, next, &new_ids)?;
    mirror.store.put(KEY_FILE, next.seal(&mirror.recipients)?)?;
    mirror.store.delete(&[NEXT_KEY_FILE.to_string()])?;
    let stale: Vec<String> = plan
        .delete_objects
        .iter()
        .filter(|p| !keep.contains(p.rsplit('/').next().unwrap_or("")))
        .cloned()
        .collect();
    mirror.store.delete(&stale)?;
    Ok(Rekeyed {
        objects: new_ids.len(),
        snapshots: plan.generations.len(),
        deleted_objects: stale.len(),
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
    new_ids: &HashMap<String, (String, u64)>,
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
                e.stored_size = Some(*n);
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

/// Re-encrypt every content of `plan` under `next` (reusing objects already stored under
/// it); returns plaintext BLAKE3 → (new object id, stored size).
fn reencrypt(
    mirror: &Mirror,
    plan: &RekeyPlan,
    next: &MirrorKey,
    scratch: &Path,
) -> Result<HashMap<String, (String, u64)>> {
    let mut items: Vec<(&String, &SnapEntry)> = plan.contents.iter().collect();
    let counter = AtomicU64::new(0);
    let results = crate::parallel::parallel(
        &mut items,
        WORKERS,
        |(h, e)| -> Result<(String, (String, u64))> {
            let hash = content_hash(e)?;
            let new_id = next.object_id(&hash);
            let size = e.size.unwrap_or(0);
            if let Some(n) = plan.present.get(&new_id) {
                return Ok(((*h).clone(), (new_id, *n)));
            }
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let tmp = scratch.join(n.to_string());
            let mut f = fs_err::File::create(&tmp)?;
            mirror.fetch_into(e, &mut f)?;
            drop(f);
            let (_, stored) = mirror.store_file_with(next, &tmp, size, &hash)?;
            let _ = std::fs::remove_file(&tmp);
            Ok(((*h).clone(), (new_id, stored)))
        },
    );
    results.into_iter().collect()
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

    #[test]
    fn rekey_rewrites_every_generation_and_object_under_a_new_key() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A"), ("b", b"B")]));
        TestMirror::commit(&m, &t.source("2", &[("a", b"A"), ("c", b"C")]));
        let old_key = m.key.key_id();
        let old_ids = object_ids(&m);
        t.open(1).latest().unwrap();

        let plan = rekey_plan(&m).unwrap();
        assert!(!plan.resume);
        assert_eq!(plan.rewrite, [1, 2]);
        assert_eq!(plan.contents.len(), 3, "A, B and C once each");
        assert_eq!(plan.bytes(), 3);
        assert_eq!(plan.key_files, [NEXT_KEY_FILE, KEY_FILE]);
        assert_eq!(plan.delete_objects.len(), 3, "every old object");
        // Planning changed nothing.
        assert!(!t.root().join(NEXT_KEY_FILE).exists());
        assert_eq!(object_ids(&m), old_ids);

        let scratch = tempfile::tempdir().unwrap();
        let done = rekey(&m, &plan, scratch.path()).unwrap();
        assert_eq!(
            (done.objects, done.snapshots, done.deleted_objects),
            (3, 2, 3)
        );
        assert!(!t.root().join(NEXT_KEY_FILE).exists());

        // Reopened (same rollback state, which remembers the old chain): the rewrite is
        // accepted, under the new key, and no old object is left.
        let m = t.open(0);
        assert_ne!(m.key.key_id(), old_key);
        assert_eq!(m.key.key_id(), done.key_id);
        assert!(m.rekey_pending().is_none());
        let (latest, _) = m.latest().unwrap().unwrap();
        assert_eq!(latest.generation, 2);
        assert!(latest.rekeyed_from.is_some());
        assert_whole(&m);
        let new_ids = object_ids(&m);
        assert_eq!(new_ids.len(), 3);
        assert!(new_ids.is_disjoint(&old_ids));
        // The other writer, whose state also remembers the old chain, follows.
        assert_whole(&t.open(1));
    }

    /// A rekey interrupted after storing the next key and re-encrypting one content resumes:
    /// the plan says so, reuses that object, and finishes.
    #[test]
    fn an_interrupted_rekey_is_finished_by_the_next_one() {
        let t = TestMirror::new();
        let m = t.open(0);
        let src = t.source("1", &[("a", b"A"), ("b", b"B")]);
        TestMirror::commit(&m, &src);
        let next = MirrorKey::generate();
        m.store
            .put(NEXT_KEY_FILE, next.seal(&m.recipients).unwrap())
            .unwrap();
        let hash = *blake3::hash(b"A").as_bytes();
        let (reused, _) = m.store_file_with(&next, &src.join("a"), 1, &hash).unwrap();

        let m = t.open(0);
        assert!(m.rekey_pending().is_some());
        let plan = rekey_plan(&m).unwrap();
        assert!(plan.resume);
        assert_eq!(plan.key_files, [KEY_FILE]);
        assert!(
            plan.delete_objects.iter().all(|p| !p.ends_with(&reused)),
            "the object already under the next key stays"
        );
        assert_eq!(plan.delete_objects.len(), 2);
        let scratch = tempfile::tempdir().unwrap();
        let done = rekey(&m, &plan, scratch.path()).unwrap();
        assert_eq!(done.key_id, next.key_id());
        let m = t.open(0);
        assert_whole(&m);
        assert!(object_ids(&m).contains(&reused));
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
        rekey(&m, &plan, scratch.path()).unwrap();
        assert_whole(&t.open(0));
    }
}
