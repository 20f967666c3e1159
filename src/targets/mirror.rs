//! An encrypted mirror as a [`Target`]: scanning reads the newest snapshot (one download plus
//! a rollback check), applying stores the missing objects and then writes the next
//! generation create-only.
//!
//! Invariants: apply builds the new generation from the generation it scanned, changing
//! exactly the plan's paths (excluded paths in the old generation are kept, target-only
//! paths are dropped only when deleting is allowed); if another writer created that
//! generation first, this apply fails without touching it and its stored objects stay
//! unreferenced until `mirror prune`.

use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ApplyOutcome, Target, TargetInfo};
use crate::config::MirrorConfig;
use crate::context::Context;
use crate::mirror::snapshot::{self, SnapEntry, SnapSource, Snapshot};
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror};
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{Kind, Manifest};

/// Parallel uploads/downloads per mirror.
pub const WORKERS: usize = 16;

/// One object to upload: source path, size, BLAKE3.
type Upload = (Vec<u8>, u64, [u8; 32]);

pub struct MirrorTarget {
    info: TargetInfo,
    location: Location,
    s3: S3Settings,
    home: std::path::PathBuf,
    /// Other trusted writers (config.yaml).
    writers: Vec<String>,
    mirror: Option<Mirror>,
    /// The generation the last scan saw (`None`: the mirror is empty).
    base: Option<(Snapshot, String)>,
    scanned: bool,
}

impl MirrorTarget {
    pub fn from_config(ctx: &Context, m: &MirrorConfig) -> Result<MirrorTarget> {
        let location = Location::parse(&m.url)?;
        Ok(MirrorTarget {
            info: TargetInfo {
                name: m.name.clone(),
                kind: crate::plan::TargetKind::Mirror,
                address: location.url(),
                host: match &location {
                    Location::S3 { bucket, .. } => format!("s3:{bucket}"),
                    Location::Local(_) => "local".into(),
                },
                delete_allowed: true,
            },
            location,
            s3: S3Settings {
                endpoint: m.endpoint.clone(),
                region: m.region.clone(),
            },
            home: ctx.home.clone(),
            writers: m.writers.clone(),
            mirror: None,
            base: None,
            scanned: false,
        })
    }

    /// Open the mirror with this controller's identity (once).
    pub fn mirror(&mut self) -> Result<&Mirror> {
        if self.mirror.is_none() {
            let store = Store::open(&self.location, &self.s3, false)?;
            let idp = mirror::identity_path(&self.home);
            if !idp.exists() {
                return Err(crate::input_err!(
                    "{} is missing: this controller has no age identity; run `offsync mirror add {} {}` to create it (or copy the identity that opens this mirror there)",
                    idp.display(),
                    self.info.name,
                    self.location.url()
                ));
            }
            let ids = mirror::crypto::read_identity_file(&idp)?;
            // This controller writes the mirror: it signs what it publishes, accepts its own
            // and its co-writers' signatures, and may migrate a never-signed mirror.
            let trust = mirror::controller_trust(&self.home, &self.info.name, &self.writers, true)?;
            let m = Mirror::open(store, &ids, &self.home.join("mirror-state"))?
                .with_trust(trust)
                .with_signer(mirror::own_signing_key(&self.home)?);
            if m.rekey_pending().is_some() {
                anyhow::bail!(
                    "a rekey of {} was interrupted; finish it with `offsync mirror rekey {}` before applying",
                    self.location.url(),
                    self.info.name
                );
            }
            self.mirror = Some(m);
        }
        Ok(self.mirror.as_ref().expect("opened above"))
    }

    /// The mirror side of `target check`, changing nothing: the credentials and the bucket
    /// work, this controller's identity opens the mirror key, the newest generation
    /// decrypts, passes its MAC, its writer signature and the rollback check, every object it references is
    /// present with its size, and the store accepts a create-only write. Returns the newest
    /// generation (`None`: the mirror is empty).
    pub fn probe(&mut self) -> Result<Option<&Snapshot>> {
        self.scan_base()?;
        let m = self.mirror.as_ref().expect("opened by scan_base");
        if let Some((snap, _)) = &self.base {
            check_objects(m, snap, false)?;
        }
        m.probe_write()?;
        Ok(self.base.as_ref().map(|(s, _)| s))
    }

    fn scan_base(&mut self) -> Result<()> {
        let base = self.mirror()?.latest()?;
        self.base = base;
        self.scanned = true;
        Ok(())
    }
}

impl Target for MirrorTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(&mut self, _source: &Manifest, excludes: &Excludes) -> Result<TargetView> {
        self.scan_base()?;
        let listing = match &self.base {
            None => BTreeMap::new(),
            Some((snap, _)) => snap
                .listing()?
                .into_iter()
                .filter(|(p, e)| !excludes.hides(p, e.kind_name() == "dir"))
                .collect(),
        };
        Ok(TargetView::Listing(listing))
    }

    fn apply(
        &mut self,
        source: &Manifest,
        _excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ApplyOutcome> {
        if !self.scanned {
            self.scan_base()?;
        }
        let (base_gen, base_digest, mut entries) = match &self.base {
            None => (0, None, BTreeMap::new()),
            Some((snap, digest)) => (
                snap.generation,
                Some(digest.clone()),
                snap.entry_map()?
                    .into_iter()
                    .map(|(p, e)| (p, e.clone()))
                    .collect::<BTreeMap<Vec<u8>, SnapEntry>>(),
            ),
        };
        let mirror = self.mirror()?;
        // Objects already stored: those the base generation references, and (only when
        // something must be uploaded) whatever an interrupted apply left behind.
        let mut known: HashMap<String, u64> = entries
            .values()
            .filter_map(|e| Some((e.object.clone()?, e.stored_size?)))
            .collect();
        let c = &plan.changes;
        let mut wanted: BTreeMap<String, Upload> = BTreeMap::new();
        let mut changed = Vec::new();
        for pe in c.added.iter().chain(&c.modified).chain(&c.metadata) {
            let p = pe.raw_path();
            let e = source
                .entries
                .get(&p)
                .with_context(|| format!("{} vanished from the source", pe.path))?;
            if let Kind::File { size, hash } = &e.kind {
                let id = mirror.key.object_id(hash);
                if !known.contains_key(&id) {
                    wanted.entry(id).or_insert((p.clone(), *size, *hash));
                }
            }
            changed.push(p);
        }
        if !wanted.is_empty() {
            for m in mirror.store.list("objects")? {
                if let Some(id) = m.path.rsplit('/').next() {
                    known.insert(id.to_string(), m.size);
                }
            }
            // Objects are written atomically (S3 PUT, temp file + rename locally), so a
            // leftover of an interrupted apply is whole; the size check only rejects what
            // cannot be an age file of that plaintext (tampering shows up in `verify --deep`).
            wanted.retain(|id, (_, size, _)| {
                !known
                    .get(id)
                    .is_some_and(|n| mirror::crypto::plausible_len(*size, *n))
            });
        }
        let mut jobs: Vec<(String, Upload)> = wanted.into_iter().collect();
        // Memory stays bounded whatever the sizes: each small upload holds one ciphertext,
        // so files over 1 MiB go four at a time, and multipart uploads (one part buffer
        // each) two at a time; everything else sixteen at a time.
        let (mut large, rest): (Vec<_>, Vec<_>) = jobs
            .drain(..)
            .partition(|(_, (_, size, _))| *size > mirror::SMALL_OBJECT);
        let (mut medium, mut small): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(_, (_, size, _))| *size > 1 << 20);
        let done = AtomicU64::new(0);
        let root = source.root.clone();
        let mut stored: HashMap<String, u64> = HashMap::new();
        for (batch, workers) in [(&mut small, WORKERS), (&mut medium, 4), (&mut large, 2)] {
            let results = crate::engine::parallel(batch, workers, |(id, (p, size, hash))| {
                if crate::interrupt::interrupted() {
                    anyhow::bail!("interrupted");
                }
                let src = root.join(OsStr::from_bytes(p));
                let (got, n) = mirror.store_file(&src, *size, hash)?;
                debug_assert_eq!(&got, id);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok((got, n))
            });
            for r in results {
                let (id, n) = r?;
                stored.insert(id, n);
            }
        }
        for (id, n) in stored {
            known.insert(id, n);
        }
        for p in &changed {
            let e = &source.entries[p];
            let object = match &e.kind {
                Kind::File { hash, .. } => {
                    let id = mirror.key.object_id(hash);
                    let n = *known
                        .get(&id)
                        .context("an object was not stored; run apply again")?;
                    Some((id, n))
                }
                _ => None,
            };
            entries.insert(p.clone(), SnapEntry::from_entry(p, e, object));
        }
        let mut deleted = Vec::new();
        if delete {
            for pe in &c.missing {
                let p = pe.raw_path();
                if entries.remove(&p).is_some() {
                    deleted.push(p);
                }
            }
        }
        let snap = Snapshot::assemble(
            base_gen + 1,
            base_digest,
            SnapSource {
                path: source.root.display().to_string(),
                digest: source.digest_hex(),
            },
            mirror.key.key_id(),
            entries,
        );
        if crate::interrupt::interrupted() {
            anyhow::bail!(
                "interrupted before the snapshot was written; the mirror still shows generation {base_gen}"
            );
        }
        snapshot_barrier();
        if !mirror.write_snapshot(&snap)? {
            anyhow::bail!(
                "another apply wrote generation {} of {} first; nothing of this apply is visible (its objects are harmless and `mirror prune` removes them); run `offsync plan` again",
                base_gen + 1,
                self.location.url()
            );
        }
        self.scanned = false;
        changed.sort();
        deleted.sort();
        Ok(ApplyOutcome {
            changed,
            deleted,
            bytes: plan.summary.bytes,
            partial: false,
        })
    }

    fn check(&mut self, deep: bool) -> Result<()> {
        if !self.scanned {
            self.scan_base()?;
        }
        let Some((snap, _)) = self.base.clone() else {
            return Ok(());
        };
        let mirror = self.mirror()?;
        check_objects(mirror, &snap, deep)
    }
}

/// For the concurrency test only: with `OFFSYNC_TEST_SNAPSHOT_BARRIER=DIR:N`, an apply about to
/// write its snapshot registers in DIR and waits (at most 60 s) until N applies have. Two
/// applies then always write a snapshot for the same generation, however the scheduler
/// staggers their starts; without it the test could see one finish before the other scanned.
fn snapshot_barrier() {
    let Some(spec) = std::env::var_os("OFFSYNC_TEST_SNAPSHOT_BARRIER") else {
        return;
    };
    let spec = spec.to_string_lossy();
    let Some((dir, n)) = spec.rsplit_once(':') else {
        return;
    };
    let (dir, n) = (std::path::Path::new(dir), n.parse::<usize>().unwrap_or(1));
    let _ = std::fs::write(dir.join(std::process::id().to_string()), b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(dir).map_or(0, |d| d.count()) < n
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Check that every object `snap` references exists with the right size; with `deep`, also
/// download, decrypt and re-hash each one. Errors name the paths.
pub fn check_objects(mirror: &Mirror, snap: &Snapshot, deep: bool) -> Result<()> {
    let present: HashMap<String, u64> = mirror
        .store
        .list("objects")?
        .into_iter()
        .filter_map(|m| Some((m.path.rsplit('/').next()?.to_string(), m.size)))
        .collect();
    let mut problems = Vec::new();
    let mut files: Vec<&SnapEntry> = Vec::new();
    for e in snap.entries.iter().filter(|e| e.kind == "file") {
        let (Some(id), Some(size)) = (&e.object, e.stored_size) else {
            problems.push(format!("{:?} has no object", e.path));
            continue;
        };
        match present.get(id) {
            None => problems.push(format!(
                "{:?}: object {} is missing",
                e.path,
                snapshot::object_path(id)
            )),
            Some(n) if *n != size => problems.push(format!(
                "{:?}: object {} has {n} bytes, the snapshot says {size}",
                e.path,
                snapshot::object_path(id)
            )),
            Some(_) => files.push(e),
        }
    }
    if deep {
        let results = crate::engine::parallel(&mut files, WORKERS, |e| {
            mirror.fetch_into(e, &mut std::io::sink())
        });
        for r in results {
            if let Err(e) = r {
                problems.push(format!("{e:#}"));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(10);
    anyhow::bail!(
        "generation {} of {}: {n} problem(s): {}{}",
        snap.generation,
        mirror.store.display(),
        problems.join("; "),
        if n > 10 { "; …" } else { "" }
    )
}
