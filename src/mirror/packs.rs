//! Packed storage of `offsync-mirror/2`: which small objects live in which pack, read from the
//! mirror's index objects, and the upload side that fills packs and writes those indexes.
//! The pack format itself is [`super::pack`]; the design is `docs/mirror-v2.md`.
//!
//! Invariants:
//! - snapshots never name a location, only object ids; where an id is stored is answered here
//!   (a pack member, found through the index) or by `objects/<id[0..2]>/<id>` (large objects,
//!   and every object of a `/1` mirror). A repack or an upgrade therefore rewrites index
//!   objects, never a signed generation;
//! - an index object is written only after every pack it describes is stored, so an index
//!   never points at a pack that was never written; a pack without an index (an apply killed
//!   between the two) is an orphan that prune deletes after `--min-age`;
//! - index objects are MAC'd under the mirror key and name its key id, so nobody without the
//!   mirror key can forge one; they are not signed and not trusted beyond that: every member
//!   read checks the tar header's name and length and the snapshot's BLAKE3, so a lying index
//!   can only make a read fail;
//! - an index object that a newer one `supersedes` is ignored (prune writes the new index
//!   before it deletes the old packs and the old index);
//! - a location whose pack is not listed is ignored when the index is loaded, so a pack prune
//!   deleted is never offered for dedup.

use anyhow::{Context as _, Result, anyhow, ensure};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::crypto::MirrorKey;
use super::pack::{Member, PackInfo, PackWriter};
use super::store::Store;
use crate::sanitize;

/// Files smaller than this are packed; larger ones stay single objects (docs/mirror-v2.md).
pub const PACK_THRESHOLD: u64 = 1 << 20;
/// A pack is closed once its plaintext reaches this size.
pub const PACK_TARGET: u64 = 16 << 20;
/// An index object is written after this many packs (and at the end of an upload).
const PACKS_PER_INDEX: usize = 32;
/// The index format name.
const INDEX_FORMAT: &str = "offsync-mirror-index/1";

/// Where pack `p` is stored.
pub fn pack_path(p: &str) -> String {
    format!("packs/{}/{p}", &p[..2])
}

/// Where index object `i` is stored.
pub fn index_path(i: &str) -> String {
    format!("index/{}/{i}.age", &i[..2])
}

/// A fresh random name for a pack or an index object (64 hex characters): names carry no
/// information and two writers never pick the same one.
pub fn random_name() -> String {
    let mut b = [0u8; 32];
    getrandom_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom_bytes(out: &mut [u8]) {
    getrandom::getrandom(out).expect("the operating system's random source works");
}

/// One pack as an index object describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    /// The pack's name (`packs/<p[0..2]>/<p>`).
    pub pack: String,
    /// Its stored (encrypted) size.
    pub stored_size: u64,
    /// The ciphertext before the first STREAM chunk, hex: a member read is one range GET.
    pub header: String,
    /// `[object id, plaintext offset of the data, length]`, in archive order.
    pub members: Vec<(String, u64, u64)>,
}

impl IndexedPack {
    pub fn from_info(pack: &str, info: &PackInfo) -> IndexedPack {
        IndexedPack {
            pack: pack.to_string(),
            stored_size: info.stored_len,
            header: info.header.iter().map(|b| format!("{b:02x}")).collect(),
            members: info
                .members
                .iter()
                .map(|m| (m.id.clone(), m.offset, m.len))
                .collect(),
        }
    }

    pub fn header_bytes(&self) -> Result<Vec<u8>> {
        crate::plan::decode_hex(&self.header).context("an index entry has an invalid header")
    }
}

/// The plaintext of an index object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub format: String,
    pub key_id: String,
    /// Index objects (names) this one replaces: their packs were repacked or deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    pub packs: Vec<IndexedPack>,
}

fn mac_input(json: &[u8]) -> Vec<u8> {
    let mut m = INDEX_FORMAT.as_bytes().to_vec();
    m.push(0);
    m.extend_from_slice(json);
    m
}

impl IndexFile {
    pub fn new(key: &MirrorKey, packs: Vec<IndexedPack>, supersedes: Vec<String>) -> IndexFile {
        IndexFile {
            format: INDEX_FORMAT.to_string(),
            key_id: key.key_id(),
            supersedes,
            packs,
        }
    }

    /// `json`, a newline, `mac <hex>`: the MAC (under the mirror key) covers the JSON.
    pub fn seal(&self, key: &MirrorKey) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self)?;
        let mut pt = json.clone();
        pt.extend_from_slice(format!("\nmac {}\n", key.mac(&mac_input(&json))).as_bytes());
        key.encrypt(&pt)
    }

    /// Decrypt and authenticate index object `name` with `key`, and check what it says.
    pub fn open(key: &MirrorKey, name: &str, sealed: &[u8]) -> Result<IndexFile> {
        let pt = key
            .decrypt(sealed)
            .map_err(|e| anyhow!("index object {name} does not decrypt ({e})"))?;
        let bad = |why: &str| {
            anyhow!(
                "index object {name} {why}; it was tampered with, or written under another key: run `offsync verify --deep` on the controller"
            )
        };
        let text = std::str::from_utf8(&pt).map_err(|_| bad("is not text"))?;
        let (json, mac) = text
            .trim_end_matches('\n')
            .rsplit_once("\nmac ")
            .ok_or_else(|| bad("has no MAC"))?;
        if key.mac(&mac_input(json.as_bytes())) != mac {
            return Err(bad("fails its MAC"));
        }
        let f: IndexFile = serde_json::from_str(json).map_err(|_| bad("is not an index"))?;
        if f.format != INDEX_FORMAT {
            return Err(bad(&format!(
                "has the unknown format {:?}",
                sanitize::for_terminal(&f.format)
            )));
        }
        if f.key_id != key.key_id() {
            return Err(bad("names another mirror key"));
        }
        for p in &f.packs {
            ensure!(is_name(&p.pack), bad("names an invalid pack"));
            for (id, offset, len) in &p.members {
                ensure!(
                    is_name(id) && *offset >= 512 && offset.saturating_add(*len) <= p.stored_size,
                    bad("has an invalid member")
                );
            }
        }
        ensure!(
            f.supersedes.iter().all(|s| is_name(s)),
            bad("names an invalid index")
        );
        Ok(f)
    }
}

/// 64 lowercase hex characters.
pub fn is_name(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a packed object is: its pack and its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedAt {
    pub pack: String,
    pub member: Member,
}

/// A listed pack.
#[derive(Debug, Clone)]
pub struct PackMeta {
    pub stored_size: u64,
    /// Time since it was written.
    pub age: Duration,
    /// The index data of the pack (header, members), when an index describes it.
    pub indexed: Option<IndexedPack>,
    /// The index object that describes it.
    pub index: Option<String>,
    /// The mirror key it is encrypted to (that index object's key id).
    pub key_id: Option<String>,
}

/// Every pack and index object of a mirror, loaded once.
#[derive(Debug, Default)]
pub struct PackIndex {
    /// Listed packs by name.
    pub packs: HashMap<String, PackMeta>,
    /// Object id → where it is (first location found; every one is in `packs`).
    by_id: HashMap<String, PackedAt>,
    /// Listed index objects by name, with their age: what is live (not superseded).
    pub indexes: HashMap<String, Duration>,
    /// Index objects another one supersedes (still listed: a prune was interrupted).
    pub superseded: HashSet<String>,
    /// Every live (not superseded) index object: the packs it names, listed or not. A prune
    /// that supersedes one re-lists the packs it does not delete.
    pub contents: HashMap<String, Vec<String>>,
    /// Packs a live index object names that `packs/` did not list: stored after the listing
    /// (a concurrent apply), or deleted by a prune that had not yet deleted the index.
    pub unlisted: HashMap<String, IndexedPack>,
}

impl PackIndex {
    /// List `packs/` and `index/` and read every index object (in parallel), each with `key`
    /// or, during a rekey, `next`.
    pub fn load(store: &Store, keys: &[&MirrorKey]) -> Result<PackIndex> {
        let mut out = PackIndex::default();
        for m in store.list("packs")? {
            let name = m.path.rsplit('/').next().unwrap_or("").to_string();
            if is_name(&name) && m.path == pack_path(&name) {
                out.packs.insert(
                    name,
                    PackMeta {
                        stored_size: m.size,
                        age: m.age,
                        indexed: None,
                        index: None,
                        key_id: None,
                    },
                );
            }
        }
        let mut names: Vec<(String, Duration)> = store
            .list("index")?
            .into_iter()
            .filter_map(|m| {
                let name = m.path.rsplit('/').next()?.strip_suffix(".age")?.to_string();
                (is_name(&name) && m.path == index_path(&name)).then_some((name, m.age))
            })
            .collect();
        names.sort();
        let results = crate::parallel::parallel(&mut names, super::WORKERS, |(name, _)| {
            let path = index_path(name);
            let Some(sealed) = store.get(&path)? else {
                return Ok(None); // deleted since the listing (a prune finished)
            };
            let mut last = None;
            for k in keys {
                match IndexFile::open(k, &path, &sealed) {
                    Ok(f) => return Ok(Some(f)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| anyhow!("no key to open {path}")))
        });
        let mut files = Vec::new();
        for ((name, age), r) in names.into_iter().zip(results) {
            if let Some(f) = r? {
                out.superseded.extend(f.supersedes.iter().cloned());
                out.indexes.insert(name.clone(), age);
                files.push((name, f));
            }
        }
        for (name, f) in files {
            if out.superseded.contains(&name) {
                continue;
            }
            out.contents.insert(
                name.clone(),
                f.packs.iter().map(|p| p.pack.clone()).collect(),
            );
            for p in f.packs {
                let Some(meta) = out.packs.get_mut(&p.pack) else {
                    // Deleted by a prune whose index is not yet gone, or stored after the
                    // listing: not a location, but kept for a prune's re-listing.
                    out.unlisted.entry(p.pack.clone()).or_insert(p);
                    continue;
                };
                if meta.stored_size != p.stored_size || meta.indexed.is_some() {
                    continue;
                }
                for (id, offset, len) in &p.members {
                    out.by_id.entry(id.clone()).or_insert_with(|| PackedAt {
                        pack: p.pack.clone(),
                        member: Member {
                            id: id.clone(),
                            offset: *offset,
                            len: *len,
                        },
                    });
                }
                meta.indexed = Some(p);
                meta.index = Some(name.clone());
                meta.key_id = Some(f.key_id.clone());
            }
        }
        Ok(out)
    }

    /// Where object `id` is packed, if it is.
    pub fn locate(&self, id: &str) -> Option<&PackedAt> {
        self.by_id.get(id)
    }

    /// Every packed object id with its length and its pack's age.
    pub fn ids(&self) -> impl Iterator<Item = (&String, &PackedAt)> {
        self.by_id.iter()
    }

    /// The indexed data of pack `p`.
    pub fn pack(&self, p: &str) -> Option<&IndexedPack> {
        self.packs.get(p)?.indexed.as_ref()
    }

    /// The age of the pack holding `id`.
    pub fn age_of(&self, id: &str) -> Option<Duration> {
        let at = self.by_id.get(id)?;
        self.packs.get(&at.pack).map(|m| m.age)
    }
}

/// Fills packs from many threads and writes an index object after every
/// [`PACKS_PER_INDEX`] packs and at [`PackSink::finish`]. A pack is stored with one PUT; its
/// members are known (and may be referenced) only once an index naming it is stored.
pub struct PackSink<'a> {
    store: &'a Store,
    key: &'a MirrorKey,
    pending: Mutex<Vec<IndexedPack>>,
}

impl<'a> PackSink<'a> {
    pub fn new(store: &'a Store, key: &'a MirrorKey) -> PackSink<'a> {
        PackSink {
            store,
            key,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// A writer for one new pack, buffering its ciphertext (at most [`PACK_TARGET`] plus one
    /// member below [`PACK_THRESHOLD`], so the buffer is sized once and never doubles).
    pub fn start(&self) -> Result<PackWriter<Vec<u8>>> {
        let cap = (PACK_TARGET + PACK_THRESHOLD) as usize;
        let cap = cap + cap / 64 + 4096;
        PackWriter::new(self.key, Vec::with_capacity(cap))
    }

    /// Store a finished pack; its members become findable with the next index object.
    /// Returns the pack's stored size.
    pub fn store(&self, pack: PackWriter<Vec<u8>>) -> Result<u64> {
        let (bytes, info) = pack.finish()?;
        let stored = info.stored_len;
        let name = random_name();
        self.store.put_object(&pack_path(&name), bytes)?;
        let full = {
            let mut p = self.pending.lock().expect("pack sink lock");
            p.push(IndexedPack::from_info(&name, &info));
            if p.len() >= PACKS_PER_INDEX {
                std::mem::take(&mut *p)
            } else {
                Vec::new()
            }
        };
        if !full.is_empty() {
            self.write_index(full, Vec::new())?;
        }
        Ok(stored)
    }

    /// Write the index of every pack stored since the last index object.
    pub fn finish(&self) -> Result<()> {
        let rest = std::mem::take(&mut *self.pending.lock().expect("pack sink lock"));
        if !rest.is_empty() {
            self.write_index(rest, Vec::new())?;
        }
        Ok(())
    }

    /// Write one index object for every pack stored since the last index object and `extra`
    /// (packs already stored and indexed elsewhere), replacing the index objects `supersedes`:
    /// what a prune writes once its new packs are stored.
    pub fn finish_superseding(
        &self,
        extra: Vec<IndexedPack>,
        supersedes: Vec<String>,
    ) -> Result<String> {
        let mut packs = std::mem::take(&mut *self.pending.lock().expect("pack sink lock"));
        packs.extend(extra);
        self.write_index(packs, supersedes)
    }

    /// Write one index object describing `packs` (already stored), replacing `supersedes`.
    pub fn write_index(&self, packs: Vec<IndexedPack>, supersedes: Vec<String>) -> Result<String> {
        let name = random_name();
        let sealed = IndexFile::new(self.key, packs, supersedes).seal(self.key)?;
        // The packs must be durable before an index names them (a local mirror syncs once).
        self.store.flush()?;
        self.store.put_object(&index_path(&name), sealed)?;
        Ok(name)
    }
}

/// Packs verified contents that arrive from many threads in any order (a rekey or an upgrade
/// reading packs and objects with [`super::Mirror::fetch_each`]) into new packs through a
/// [`PackSink`]. One pack is filled at a time; a full pack is stored while the next fills, and
/// a second full pack waits (holding up the filling) until the first is stored, so at most two
/// packs are held, as in an apply's upload slot.
pub struct PackFiller<'a> {
    sink: PackSink<'a>,
    filling: Mutex<Option<PackWriter<Vec<u8>>>>,
    storing: Mutex<()>,
    /// Ids in packs stored so far (indexed at the latest by [`PackFiller::finish`]).
    stored: Mutex<Vec<String>>,
}

impl<'a> PackFiller<'a> {
    pub fn new(store: &'a Store, key: &'a MirrorKey) -> PackFiller<'a> {
        PackFiller {
            sink: PackSink::new(store, key),
            filling: Mutex::new(None),
            storing: Mutex::new(()),
            stored: Mutex::new(Vec::new()),
        }
    }

    /// Add object `id` with (verified) content `data`; stores the pack once it is full.
    pub fn add(&self, id: &str, data: &[u8]) -> Result<()> {
        let full = {
            let mut slot = self.filling.lock().expect("pack filler lock");
            let pack = match slot.as_mut() {
                Some(p) => p,
                None => slot.insert(self.sink.start()?),
            };
            pack.add(id, data)?;
            if pack.len() < PACK_TARGET {
                return Ok(());
            }
            let full = slot.take().expect("a pack is being filled");
            // Taken while the filling is still held: no third pack starts before one is stored.
            let turn = self.storing.lock().expect("pack filler lock");
            (full, turn)
        };
        let (pack, _turn) = full;
        self.store(pack)
    }

    fn store(&self, pack: PackWriter<Vec<u8>>) -> Result<()> {
        let ids: Vec<String> = pack.members().iter().map(|m| m.id.clone()).collect();
        self.sink.store(pack)?;
        self.stored.lock().expect("pack filler lock").extend(ids);
        Ok(())
    }

    /// Store the last pack and write the index of every stored pack; returns the ids now
    /// indexed. Call it also after an error, so what was packed is found by the next run.
    pub fn finish(self) -> Result<Vec<String>> {
        let last = self.filling.lock().expect("pack filler lock").take();
        let stored = match last.filter(|p| !p.is_empty()) {
            Some(p) => self.store(p),
            None => Ok(()),
        };
        // Index what was stored even when the last pack failed.
        self.sink.finish()?;
        stored?;
        Ok(self.stored.into_inner().expect("pack filler lock"))
    }
}
