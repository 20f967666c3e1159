//! Publishing a generation: store the objects a plan needs, then write the next snapshot
//! create-only.
//!
//! A commit has two steps. [`prepare`] uploads every object the new generation references
//! (deduplicated against what the base generation and the store already hold, in batches that
//! bound memory) and assembles the snapshot in memory: nothing a reader sees has changed yet.
//! [`publish`] writes that snapshot with one create-only write. Two writers that prepared on
//! the same base generation both reach `publish`; the store lets exactly one create the
//! generation and tells the other ([`Published::Conflict`]), whose objects stay unreferenced
//! until `mirror prune`. The split is what lets a unit test interleave two writers exactly.
//!
//! Invariants: the new generation is the base generation with exactly the plan's paths
//! changed (excluded paths in the base are kept, target-only paths are dropped only when
//! deleting is allowed); a snapshot is published only after every object it references is
//! stored (and flushed, see [`Mirror::write_snapshot`]); a published generation is never
//! replaced.

use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::ObjectIndex;
use super::packs::{PACK_TARGET, PACK_THRESHOLD, PackSink};
use super::snapshot::{SnapEntry, SnapSource, Snapshot};
use super::{Mirror, SMALL_OBJECT};
use crate::plan::Categories;
use crate::plan::manifest::{Kind, Manifest};

/// One object to upload: object id, source path, size, BLAKE3.
type Upload = (String, (Vec<u8>, u64, [u8; 32]));

/// Stored objects by id: the stored size of a single object, `None` for a pack member.
type Known = HashMap<String, Option<u64>>;

/// `mirror prune`'s default `--min-age`: it never deletes anything younger.
pub const PRUNE_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// An apply reuses a stored object that no generation it builds on references (an orphan
/// of a killed or losing apply) only while it is younger than this; an older one is stored
/// again. A prune deletes only orphans older than its `--min-age` (default
/// [`PRUNE_MIN_AGE`]), so an orphan this young cannot be deleted between this apply's
/// listing and its publish unless the apply takes longer than the difference.
pub const REUSE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1800);

/// A generation ready to publish: every object it references is stored.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub snapshot: Snapshot,
    /// Paths written (added, modified or metadata-updated), sorted.
    pub changed: Vec<Vec<u8>>,
    /// Paths dropped from the base generation, sorted.
    pub deleted: Vec<Vec<u8>>,
}

/// How a create-only publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Published {
    /// This writer created the generation.
    Written,
    /// Another writer created that generation first; nothing of this commit is visible.
    Conflict,
}

/// Store what `changes` needs from `source` and assemble the generation after `base` (the
/// newest generation and its chain digest; `None`: the mirror is empty). `progress` gets the
/// plaintext bytes and the number of files uploaded so far (per object, as each is stored).
pub fn prepare(
    mirror: &Mirror,
    base: Option<&(Snapshot, String)>,
    source: &Manifest,
    changes: &Categories,
    delete: bool,
    progress: &(dyn Fn(crate::engine::Sent) + Sync),
) -> Result<Prepared> {
    let (base_gen, base_digest, mut entries) = match base {
        None => (0, None, BTreeMap::new()),
        Some((snap, digest)) => (snap.generation, Some(digest.clone()), owned_entries(snap)?),
    };
    // Objects already stored: those the base generation references, and (only when
    // something must be uploaded) whatever an interrupted apply left behind.
    let mut known: Known = entries
        .values()
        .filter_map(|e| Some((e.object.clone()?, e.stored_size)))
        .collect();
    let (mut changed, jobs) = missing_objects(mirror, source, changes, &mut known)?;
    known.extend(upload(mirror, &source.root, jobs, progress)?);
    for p in &changed {
        let e = &source.entries[p];
        let object = match &e.kind {
            Kind::File { hash, .. } => Some(stored(mirror, &known, hash)?),
            _ => None,
        };
        entries.insert(p.clone(), SnapEntry::from_entry(p, e, object));
    }
    let mut deleted = Vec::new();
    if delete {
        for pe in &changes.missing {
            let p = pe.raw_path();
            if entries.remove(&p).is_some() {
                deleted.push(p);
            }
        }
    }
    let snapshot = Snapshot::assemble(
        base_gen + 1,
        base_digest,
        SnapSource {
            path: source.root.display().to_string(),
            digest: source.digest_hex(),
        },
        mirror.key.key_id(),
        entries,
    );
    changed.sort();
    deleted.sort();
    Ok(Prepared {
        snapshot,
        changed,
        deleted,
    })
}

/// The object id and stored size of the content with BLAKE3 `hash`, which must be stored.
fn stored(mirror: &Mirror, known: &Known, hash: &[u8; 32]) -> Result<(String, Option<u64>)> {
    let id = mirror.key.object_id(hash);
    let n = *known
        .get(&id)
        .context("an object was not stored; run apply again")?;
    Ok((id, n))
}

/// Publish `prepared` with a create-only write.
pub fn publish(mirror: &Mirror, prepared: &Prepared) -> Result<Published> {
    if crate::interrupt::interrupted() {
        anyhow::bail!(
            "interrupted before the snapshot was written; the mirror still shows generation {}",
            prepared.snapshot.generation - 1
        );
    }
    Ok(if mirror.write_snapshot(&prepared.snapshot)? {
        Published::Written
    } else {
        Published::Conflict
    })
}

/// A generation's entries by exact path, to build the next one from.
fn owned_entries(snap: &Snapshot) -> Result<BTreeMap<Vec<u8>, SnapEntry>> {
    Ok(snap
        .entry_map()?
        .into_iter()
        .map(|(p, e)| (p, e.clone()))
        .collect())
}

/// Dedupe: the paths `changes` writes, and one upload per object they need that is not in
/// `known` (extended with what the store holds when anything is missing).
///
/// What the store holds beyond the base generation is reused only when it is younger than
/// [`REUSE_MAX_AGE`]: no kept generation references it, so a prune may delete it.
fn missing_objects(
    mirror: &Mirror,
    source: &Manifest,
    changes: &Categories,
    known: &mut Known,
) -> Result<(Vec<Vec<u8>>, Vec<Upload>)> {
    let mut wanted: BTreeMap<String, (Vec<u8>, u64, [u8; 32])> = BTreeMap::new();
    let mut changed = Vec::new();
    let c = changes;
    for pe in c.added.iter().chain(&c.modified).chain(&c.metadata) {
        let p = pe.raw_path();
        let e = source
            .entries
            .get(&p)
            .with_context(|| format!("{} vanished from the source", pe.path_text()))?;
        if let Kind::File { size, hash } = &e.kind {
            let id = mirror.key.object_id(hash);
            if !known.contains_key(&id) {
                wanted.entry(id).or_insert((p.clone(), *size, *hash));
            }
        }
        changed.push(p);
    }
    if !wanted.is_empty() {
        let packs = mirror.pack_index()?;
        let singles = ObjectIndex::load(&mirror.store)?;
        wanted.retain(|id, (_, size, _)| {
            if let Some(at) = packs.locate(id)
                && at.member.len == *size
                && packs.age_of(id).is_some_and(|a| a < REUSE_MAX_AGE)
            {
                known.insert(id.clone(), None);
                return false;
            }
            // Objects are written atomically (S3 PUT, temp file + rename locally), so a
            // leftover of an interrupted apply is whole; the size check only rejects what
            // cannot be an age file of that plaintext (tampering shows up in `verify --deep`).
            if let Some(o) = singles.get(id)
                && o.age < REUSE_MAX_AGE
                && super::crypto::plausible_len(*size, o.size)
            {
                known.insert(id.clone(), Some(o.size));
                return false;
            }
            true
        });
    }
    Ok((changed, wanted.into_iter().collect()))
}

/// Encrypt and store `jobs` (paths relative to `root`); returns what was stored, by id.
///
/// Files below [`PACK_THRESHOLD`] go into packs, in path order (a directory's files end up
/// together, so restoring part of the tree reads few packs); at most two packs are filled at
/// once, because each holds up to [`PACK_TARGET`] of ciphertext until its PUT. The others are
/// single objects, [`Mirror::uploads`] at once; memory stays bounded whatever the sizes: each
/// holds one ciphertext, so files over 1 MiB go at most four at a time, and multipart uploads
/// (one part buffer each) at most two at a time.
fn upload(
    mirror: &Mirror,
    root: &Path,
    jobs: Vec<Upload>,
    progress: &(dyn Fn(crate::engine::Sent) + Sync),
) -> Result<Known> {
    let (mut packed, rest): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .partition(|(_, (_, size, _))| *size < PACK_THRESHOLD);
    let (mut large, mut medium): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|(_, (_, size, _))| *size > SMALL_OBJECT);
    let done = AtomicU64::new(0);
    let done_bytes = AtomicU64::new(0);
    let report = |size: u64| {
        let bytes = done_bytes.fetch_add(size, Ordering::Relaxed) + size;
        progress(crate::engine::Sent {
            bytes,
            files: done.fetch_add(1, Ordering::Relaxed) + 1,
        });
    };
    let mut stored: Known = HashMap::new();
    if !packed.is_empty() {
        packed.sort_by(|a, b| a.1.0.cmp(&b.1.0));
        let mut groups: Vec<Vec<Upload>> = Vec::new();
        let mut fill = PACK_TARGET;
        for job in packed {
            let size = job.1.1 + 512;
            if fill + size > PACK_TARGET {
                groups.push(Vec::new());
                fill = 0;
            }
            fill += size;
            groups.last_mut().expect("a group was started").push(job);
        }
        mirror.mark_current_format()?;
        let sink = PackSink::new(&mirror.store, &mirror.key);
        let results = crate::parallel::parallel(&mut groups, mirror.uploads().min(2), |group| {
            let mut pack = sink.start()?;
            for (id, (p, size, hash)) in group.iter() {
                if crate::interrupt::interrupted() {
                    anyhow::bail!("interrupted");
                }
                let src = root.join(OsStr::from_bytes(p));
                let file = fs_err::File::open(&src)?;
                let mut hashing = HashingReader {
                    inner: file,
                    hasher: blake3::Hasher::new(),
                };
                pack.add_reader(id, *size, &mut hashing)
                    .map_err(|_| changed_error(&src))?;
                if hashing.hasher.finalize().as_bytes() != hash {
                    return Err(changed_error(&src));
                }
            }
            sink.store(pack)?;
            for (_, (_, size, _)) in group.iter() {
                report(*size);
            }
            Ok(group.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
        });
        for r in results {
            stored.extend(r?.into_iter().map(|id| (id, None)));
        }
        sink.finish()?;
        // The index loaded for the dedup predates these packs: a verification of this
        // generation through the same mirror must find them.
        mirror.reload_pack_index();
    }
    let n = mirror.uploads();
    for (batch, workers) in [(&mut medium, n.min(4)), (&mut large, n.min(2))] {
        let results = crate::parallel::parallel(batch, workers, |(id, (p, size, hash))| {
            if crate::interrupt::interrupted() {
                anyhow::bail!("interrupted");
            }
            let src = root.join(OsStr::from_bytes(p));
            let (got, n) = mirror.store_file(&src, *size, hash)?;
            debug_assert_eq!(&got, id);
            report(*size);
            Ok((got, n))
        });
        for r in results {
            let (id, n) = r?;
            stored.insert(id, Some(n));
        }
    }
    Ok(stored)
}

fn changed_error(src: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} changed while it was being uploaded; run `offsync plan` again",
        src.display()
    )
}

/// Hashes what passes through, so a file is read once to be both checked and packed.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What [`sign_latest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The mirror has no generation yet.
    Empty,
    /// The newest generation is already signed by this key.
    Already {
        generation: u64,
        by: ssh_key::PublicKey,
    },
    /// Generation `generation` (same files as `from`) was published, signed.
    Written { from: u64, generation: u64 },
    /// Another writer published generation `generation` first.
    Conflict { generation: u64 },
}

/// Sign a mirror written before snapshots were signed: publish, signed, a generation with the
/// same files as the (unsigned) newest one, which vouches for every older generation.
pub fn sign_latest(mirror: &Mirror) -> Result<Signed> {
    let Some((snap, digest)) = mirror.latest()? else {
        return Ok(Signed::Empty);
    };
    let (_, _, signed_by) = mirror.read_unverified(snap.generation)?;
    if let Some(by) = signed_by {
        return Ok(Signed::Already {
            generation: snap.generation,
            by,
        });
    }
    let next = Snapshot::assemble(
        snap.generation + 1,
        Some(digest),
        snap.source.clone(),
        mirror.key.key_id(),
        owned_entries(&snap)?,
    );
    let generation = next.generation;
    let prepared = Prepared {
        snapshot: next,
        changed: Vec::new(),
        deleted: Vec::new(),
    };
    Ok(match publish(mirror, &prepared)? {
        Published::Written => Signed::Written {
            from: snap.generation,
            generation,
        },
        Published::Conflict => Signed::Conflict { generation },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::prune;
    use crate::mirror::testutil::{TestMirror, object_ids};
    use std::num::NonZeroUsize;
    use std::time::Duration;

    /// The race `tests/it/mirror.rs` runs with two processes, made exact: two writers prepare
    /// on the same generation (both saw generation 1), then publish at the same moment.
    /// Exactly one create-only write succeeds, the published generation is the winner's
    /// byte for byte (never overwritten by the loser), and the loser's objects are exactly
    /// what a prune removes.
    #[test]
    fn two_writers_prepared_on_one_generation_exactly_one_publishes_and_none_overwrites() {
        let t = TestMirror::new();
        let (w0, w1) = (t.open(0), t.open(1));
        TestMirror::commit(&w0, &t.source("base", &[("shared", b"both keep this")]));
        let before = object_ids(&w0);
        let a = TestMirror::prepare(
            &w0,
            &t.source("a", &[("shared", b"both keep this"), ("a", b"only A")]),
        );
        let b = TestMirror::prepare(
            &w1,
            &t.source("b", &[("shared", b"both keep this"), ("b", b"only B")]),
        );
        assert_eq!((a.snapshot.generation, b.snapshot.generation), (2, 2));
        let barrier = std::sync::Barrier::new(2);
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                publish(&w0, &a).unwrap()
            });
            let tb = s.spawn(|| {
                barrier.wait();
                publish(&w1, &b).unwrap()
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let (winner, loser) = match (ra, rb) {
            (Published::Written, Published::Conflict) => (&a, &b),
            (Published::Conflict, Published::Written) => (&b, &a),
            other => panic!("exactly one publish must win, got {other:?}"),
        };
        // A fresh reader sees the winner's generation exactly, and nothing newer.
        let reader = t.open(1);
        assert_eq!(reader.generations().unwrap(), [1, 2]);
        let (latest, _) = reader.latest().unwrap().unwrap();
        assert_eq!(latest, winner.snapshot);
        // Publishing the loser again still cannot replace it.
        let sealed = std::fs::read(t.root().join("snapshots/0000000002.age")).unwrap();
        assert_eq!(publish(&reader, loser).unwrap(), Published::Conflict);
        assert_eq!(
            std::fs::read(t.root().join("snapshots/0000000002.age")).unwrap(),
            sealed
        );
        // The loser's own object is stored but unreferenced: prune plans exactly it.
        let loser_only: Vec<String> = object_ids(&reader)
            .into_iter()
            .filter(|id| !before.contains(id))
            .filter(|id| {
                !winner
                    .snapshot
                    .entries
                    .iter()
                    .any(|e| e.object.as_ref() == Some(id))
            })
            .collect();
        assert_eq!(loser_only.len(), 1);
        // It went into a pack of its own, which nothing references.
        let plan =
            prune::prune_plan(&reader, NonZeroUsize::new(1).unwrap(), Duration::ZERO, 0).unwrap();
        assert_eq!(plan.delete_packs.len(), 1);
        assert_eq!(plan.unreferenced_objects(), 1);
        assert!(plan.repack.is_empty() && plan.delete_objects.is_empty());
        let doomed = &plan.delete_packs[0].pack;
        let index = crate::mirror::packs::PackIndex::load(&reader.store, &reader.keys()).unwrap();
        let members: Vec<&String> = index
            .pack(doomed)
            .unwrap()
            .members
            .iter()
            .map(|m| &m.0)
            .collect();
        assert_eq!(members, loser_only.iter().collect::<Vec<_>>());
        prune::prune(&reader, &plan).unwrap();
        assert!(!object_ids(&reader).contains(&loser_only[0]));
        crate::mirror::check::check_objects(&reader, &latest, true).unwrap();
    }

    /// A reader that loaded the pack index before a newer generation was published (a
    /// long-running agent, say) finds the new generation's packed files: a miss reloads it.
    #[test]
    fn a_reader_with_an_older_pack_index_reads_a_newer_generation() {
        let t = TestMirror::new();
        let (w, r) = (t.open(0), t.open(1));
        TestMirror::commit(&w, &t.source("a", &[("x", b"first")]));
        assert!(
            r.pack_index()
                .unwrap()
                .locate(&object_of(&w, "x"))
                .is_some()
        );
        TestMirror::commit(&w, &t.source("b", &[("x", b"first"), ("y", b"second")]));
        let (snap, _) = r.latest().unwrap().unwrap();
        let y = snap.entries.iter().find(|e| e.path == "y").unwrap();
        let mut out = Vec::new();
        r.fetch_into(y, &mut out).unwrap();
        assert_eq!(out, b"second");
        // And the bulk path (restore, verify --deep) too.
        let r2 = t.open(1);
        TestMirror::commit(&w, &t.source("c", &[("z", b"third")]));
        r2.pack_index().unwrap();
        let (snap, _) = r2.latest().unwrap().unwrap();
        let files: Vec<&SnapEntry> = snap.entries.iter().filter(|e| e.kind == "file").collect();
        let got = std::sync::Mutex::new(Vec::new());
        r2.fetch_each(
            &files,
            4,
            |e| e,
            |_| Ok(Vec::new()),
            |e, v| {
                got.lock().unwrap().push((e.path.clone(), v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            got.into_inner().unwrap(),
            [("z".to_string(), b"third".to_vec())]
        );
    }

    /// An index written by a holder of the mirror key (a host) that claims a member is longer
    /// than the snapshot's file (up to the size of a pack it uploads, however huge) is not
    /// used: no byte of the pack is read, and the read fails naming the path.
    #[test]
    fn a_forged_index_cannot_make_a_reader_read_more_than_the_file() {
        use crate::mirror::packs::{PackIndex, PackSink};
        use std::sync::atomic::Ordering::Relaxed;
        let t = TestMirror::new();
        let w = t.open(0);
        TestMirror::commit(&w, &t.source("a", &[("x", b"small")]));
        let index = PackIndex::load(&w.store, &w.keys()).unwrap();
        let meta = index.packs.values().next().unwrap();
        let mut forged = meta.indexed.clone().unwrap();
        forged.members[0].2 = meta.stored_size - forged.members[0].1;
        let old: Vec<String> = index.indexes.keys().cloned().collect();
        PackSink::new(&w.store, &w.key)
            .write_index(vec![forged], old)
            .unwrap();
        w.reload_pack_index();
        let (snap, _) = w.latest().unwrap().unwrap();
        let x = snap.entries.iter().find(|e| e.path == "x").unwrap();
        let ranged = w.store.reads.ranged.load(Relaxed);
        let err = w.fetch_into(x, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("\"x\""), "{err:#}");
        assert_eq!(
            w.store.reads.ranged.load(Relaxed),
            ranged,
            "the pack was read"
        );
        let err = w
            .fetch_each(&[x], 2, |e| *e, |_| Ok(Vec::new()), |_, _| Ok(()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("\"x\""), "{err:#}");
    }

    fn object_of(m: &Mirror, path: &str) -> String {
        let (snap, _) = m.latest().unwrap().unwrap();
        snap.entries
            .iter()
            .find(|e| e.path == path)
            .and_then(|e| e.object.clone())
            .unwrap()
    }

    /// The [`REUSE_MAX_AGE`] rule: an unreferenced pack member (a losing apply's) is reused
    /// while its pack is young, and stored again once the pack is older than a prune may
    /// delete, whatever the listing says about it.
    #[test]
    fn an_orphan_member_is_reused_only_while_its_pack_is_young() {
        let t = TestMirror::new();
        let (w0, w1) = (t.open(0), t.open(1));
        TestMirror::commit(&w0, &t.source("base", &[("a", b"A")]));
        // A losing apply leaves B in a pack no generation references.
        let _lost = TestMirror::prepare(&w1, &t.source("lost", &[("a", b"A"), ("b", b"B")]));
        let packs = || {
            crate::mirror::packs::PackIndex::load(&w0.store, &w0.keys())
                .unwrap()
                .packs
                .into_iter()
                .map(|(name, m)| (name, m.age))
                .collect::<BTreeMap<_, _>>()
        };
        let before = packs();
        assert_eq!(before.len(), 2);
        // w0 loaded the pack index for its first commit: have it see w1's pack.
        w0.reload_pack_index();
        let young = TestMirror::prepare(&w0, &t.source("young", &[("a", b"A"), ("b", b"B")]));
        assert_eq!(packs().len(), 2, "the young orphan is reused");
        // Age every pack past REUSE_MAX_AGE (the listing's age is the file's mtime).
        let old = std::time::SystemTime::now() - REUSE_MAX_AGE - Duration::from_secs(60);
        for name in before.keys() {
            let path = t.root().join(crate::mirror::packs::pack_path(name));
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        w0.reload_pack_index();
        let again = TestMirror::prepare(&w0, &t.source("old", &[("a", b"A"), ("b", b"B")]));
        let after = packs();
        assert_eq!(after.len(), 3, "the old orphan is stored again");
        let new: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
        let index = crate::mirror::packs::PackIndex::load(&w0.store, &w0.keys()).unwrap();
        let b = young
            .snapshot
            .entries
            .iter()
            .find(|e| e.path == "b")
            .and_then(|e| e.object.clone())
            .unwrap();
        let members = &index.pack(new[0]).unwrap().members;
        assert_eq!(members.iter().map(|m| &m.0).collect::<Vec<_>>(), [&b]);
        assert_eq!(publish(&w0, &again).unwrap(), Published::Written);
        crate::mirror::check::check_objects(&w0, &again.snapshot, true).unwrap();
    }

    /// A commit changes exactly the planned paths, uploads each content once, and reuses what
    /// is stored.
    #[test]
    fn a_commit_dedupes_and_changes_only_the_planned_paths() {
        let t = TestMirror::new();
        let m = t.open(0);
        let src = t.source("s", &[("x", b"same"), ("y", b"same"), ("z", b"other")]);
        TestMirror::commit(&m, &src);
        assert_eq!(object_ids(&m).len(), 2, "one object per distinct content");
        std::fs::remove_file(src.join("y")).unwrap();
        std::fs::write(src.join("w"), b"same").unwrap();
        let p = TestMirror::prepare(&m, &src);
        assert_eq!(p.changed, [b"w".to_vec()]);
        assert_eq!(p.deleted, [b"y".to_vec()]);
        assert_eq!(publish(&m, &p).unwrap(), Published::Written);
        assert_eq!(object_ids(&m).len(), 2, "nothing new to upload");
        let (latest, _) = m.latest().unwrap().unwrap();
        let paths: Vec<&str> = latest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["w", "x", "z"]);
    }

    /// Uploads report plaintext bytes and files as each object is stored, once per distinct
    /// content.
    #[test]
    fn uploads_report_bytes_per_stored_object() {
        use crate::plan::diff::{TargetView, diff};
        let t = TestMirror::new();
        let m = t.open(0);
        let src = t.source("s", &[("x", b"12345"), ("y", b"12345"), ("z", b"abc")]);
        let (source, _) = crate::plan::manifest::build(
            &src,
            &crate::plan::excludes::Excludes::new(&[]).unwrap(),
            None,
        )
        .unwrap();
        let changes = diff(&source, &TargetView::Listing(Default::default()));
        let seen = std::sync::Mutex::new(Vec::new());
        prepare(&m, None, &source, &changes, true, &|s| {
            seen.lock().unwrap().push(s)
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|s| s.files);
        let last = seen.last().copied().unwrap();
        assert_eq!((last.bytes, last.files), (8, 2), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0].bytes < w[1].bytes), "{seen:?}");
    }
}
