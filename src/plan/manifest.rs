//! The source manifest: every entry under the source, with metadata and BLAKE3 hashes.
//!
//! Invariants:
//! - the walk is deterministic: entries are keyed by their relative path bytes and kept
//!   sorted ([`Entries`]), so iteration order is byte order whatever the filesystem returns;
//! - regular files carry size, mode, mtime and BLAKE3; symlinks carry their target and are
//!   never followed; a symlink that escapes the source (absolute, or `..` past the root) stops
//!   the manifest with an error naming every such path; devices, fifos and sockets are skipped
//!   and listed (rsync without `-D` skips them too);
//! - setuid and setgid bits (`0o6000`) are stripped from every mode, and the paths that had
//!   them are listed in `modes_stripped`: offsync never creates such files on a target or in a
//!   mirror (rsync gets `--chmod=ug-s`, see `rsync::COMMON`), so the manifest describes what
//!   targets will hold;
//! - hashes come from the cache only when path, size, mtime (ns), inode and ctime all match an
//!   entry the cache wrote more than two seconds after the file last changed (a file modified
//!   within the same clock tick as the cache write would otherwise look unchanged); a cache
//!   that is corrupt, foreign or of another format is ignored and rebuilt;
//! - the digest is BLAKE3 over a canonical, length-prefixed encoding of all entries, and so
//!   identifies a source state in plans and logs.
//!
//! Memory (a plan of 100,000 files must stay small): entries live in flat sorted vectors
//! with all paths in one buffer ([`Entries`]), no allocation per path or hash; the walk's
//! extra stat fields sit in a side table only while the manifest is built; the hash cache is
//! streamed from and to its file (looked up by binary search in the sorted entries), never
//! held as a second map.

use anyhow::{Context as _, Result};
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::excludes::Excludes;
use crate::fsutil;

/// Files at least this big are hashed on all cores, [`HASH_CHUNK`] bytes at a time.
const PARALLEL_THRESHOLD: u64 = 1 << 20;

/// Read size for hashing a large file. Reading into one reused buffer, not mapping the file,
/// keeps memory flat: mapped pages count towards RSS (a 400 MB file hashed right after it was
/// written peaked at 432 MB), and a cold file is read sequentially with readahead instead of
/// page-faulted in by several threads at once. 4 MiB gives BLAKE3's rayon split enough to
/// spread over the cores. Measured on a 1 GiB file (README, Performance, Mirrors): RSS 1 GiB →
/// 18 MB; as fast as the map when cached, about 0.1 s slower per GiB when not.
const HASH_CHUNK: usize = 4 << 20;

/// What a manifest entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, hash: [u8; 32] },
    Dir,
    Symlink { target: Vec<u8> },
}

/// One entry of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
}

impl Entry {
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        }
    }
    pub fn hash_hex(&self) -> Option<String> {
        match &self.kind {
            Kind::File { hash, .. } => Some(blake3::Hash::from(*hash).to_hex().to_string()),
            _ => None,
        }
    }
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::File { .. } => "file",
            Kind::Dir => "dir",
            Kind::Symlink { .. } => "symlink",
        }
    }

    pub fn entry_kind(&self) -> super::EntryKind {
        match self.kind {
            Kind::File { .. } => super::EntryKind::File,
            Kind::Dir => super::EntryKind::Dir,
            Kind::Symlink { .. } => super::EntryKind::Symlink,
        }
    }
}

/// Entries keyed by relative path bytes, in byte order, each path once: the map planning
/// needs, in three flat vectors. All paths sit back to back in one buffer, so an entry costs
/// its 64 bytes, 8 for where its path ends, and the path's own bytes — no allocation per path
/// (a source of 100,000 files is about 9 MB). Lookups are binary searches; inserting a path
/// that sorts last is amortised O(1), any other insert or remove shifts the vectors (fine for
/// the few that tests and mirrors make).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// Every path's bytes, back to back, in order.
    paths: Vec<u8>,
    /// Where each path ends in `paths` (it starts where the previous one ends).
    ends: Vec<usize>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(p, e)| (String::from_utf8_lossy(p), e)))
            .finish()
    }
}

impl Entries {
    pub fn new() -> Entries {
        Entries::default()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// The path of entry `i`.
    fn path(&self, i: usize) -> &[u8] {
        &self.paths[self.start(i)..self.ends[i]]
    }

    /// Append without checking the order (the walk sorts afterwards, see `sort_walked`).
    fn push_unordered(&mut self, path: &[u8], entry: Entry) {
        self.paths.extend_from_slice(path);
        self.ends.push(self.paths.len());
        self.entries.push(entry);
    }

    fn is_sorted(&self) -> bool {
        (1..self.len()).all(|i| self.path(i - 1) < self.path(i))
    }

    fn find(&self, path: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path(mid).cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get<Q: AsRef<[u8]> + ?Sized>(&self, path: &Q) -> Option<&Entry> {
        self.find(path.as_ref()).ok().map(|i| &self.entries[i])
    }
    pub fn get_mut<Q: AsRef<[u8]> + ?Sized>(&mut self, path: &Q) -> Option<&mut Entry> {
        self.find(path.as_ref()).ok().map(|i| &mut self.entries[i])
    }
    pub fn contains_key<Q: AsRef<[u8]> + ?Sized>(&self, path: &Q) -> bool {
        self.find(path.as_ref()).is_ok()
    }

    /// Insert or replace (returning the old entry), keeping the order.
    pub fn insert(&mut self, path: Vec<u8>, entry: Entry) -> Option<Entry> {
        if self.is_empty() || self.path(self.len() - 1) < path.as_slice() {
            self.push_unordered(&path, entry);
            return None;
        }
        match self.find(&path) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i], entry)),
            Err(i) => {
                let start = self.start(i);
                self.paths.splice(start..start, path.iter().copied());
                self.ends.insert(i, start + path.len());
                for end in &mut self.ends[i + 1..] {
                    *end += path.len();
                }
                self.entries.insert(i, entry);
                None
            }
        }
    }

    pub fn remove<Q: AsRef<[u8]> + ?Sized>(&mut self, path: &Q) -> Option<Entry> {
        let i = self.find(path.as_ref()).ok()?;
        let (start, end) = (self.start(i), self.ends[i]);
        self.paths.drain(start..end);
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= end - start;
        }
        Some(self.entries.remove(i))
    }

    /// Keep the entries `keep` accepts (it may change them), in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &mut Entry) -> bool) {
        let (mut kept, mut kept_bytes, mut start) = (0, 0, 0);
        for i in 0..self.len() {
            let end = self.ends[i];
            if keep(&self.paths[start..end], &mut self.entries[i]) {
                self.paths.copy_within(start..end, kept_bytes);
                kept_bytes += end - start;
                self.ends[kept] = kept_bytes;
                self.entries.swap(kept, i);
                kept += 1;
            }
            start = end;
        }
        self.paths.truncate(kept_bytes);
        self.ends.truncate(kept);
        self.entries.truncate(kept);
    }

    /// In path order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            entries: self,
            range: 0..self.len(),
        }
    }
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&[u8], &mut Entry)> {
        let (paths, ends) = (&self.paths, &self.ends);
        self.entries.iter_mut().enumerate().map(move |(i, e)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            (&paths[start..ends[i]], e)
        })
    }
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.iter().map(|(p, _)| p)
    }
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter()
    }
}

/// [`Entries::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    entries: &'a Entries,
    range: std::ops::Range<usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a Entry);
    fn next(&mut self) -> Option<Self::Item> {
        let i = self.range.next()?;
        Some((self.entries.path(i), &self.entries.entries[i]))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let i = self.range.next_back()?;
        Some((self.entries.path(i), &self.entries.entries[i]))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Entries {
    type Item = (&'a [u8], &'a Entry);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<Q: AsRef<[u8]> + ?Sized> std::ops::Index<&Q> for Entries {
    type Output = Entry;
    fn index(&self, path: &Q) -> &Entry {
        self.get(path).expect("no entry for this path")
    }
}

/// Like a map's: for a path given twice, the last entry wins. Sorted input (a snapshot's
/// listing) is taken as it comes; anything else is sorted once at the end.
impl FromIterator<(Vec<u8>, Entry)> for Entries {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Entry)>>(iter: I) -> Entries {
        let mut out = Entries::new();
        let mut rest: Vec<(Vec<u8>, Entry)> = Vec::new();
        for (p, e) in iter {
            if rest.is_empty() && (out.is_empty() || out.path(out.len() - 1) < p.as_slice()) {
                out.push_unordered(&p, e);
            } else {
                rest.push((p, e));
            }
        }
        if rest.is_empty() {
            return out;
        }
        let mut all: Vec<(Vec<u8>, Entry)> = out.into_iter().chain(rest).collect();
        // Stable, so that of equal paths the one given last stays last.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        // `dedup_by` drops the later of two equal neighbours: move its entry into the kept one.
        all.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        let mut out = Entries::new();
        for (p, e) in all {
            out.push_unordered(&p, e);
        }
        out
    }
}

impl IntoIterator for Entries {
    type Item = (Vec<u8>, Entry);
    type IntoIter = IntoIter;
    fn into_iter(self) -> IntoIter {
        IntoIter {
            paths: self.paths,
            ends: self.ends.into_iter(),
            entries: self.entries.into_iter(),
            start: 0,
        }
    }
}

/// [`Entries`]' owning iterator.
#[derive(Debug)]
pub struct IntoIter {
    paths: Vec<u8>,
    ends: std::vec::IntoIter<usize>,
    entries: std::vec::IntoIter<Entry>,
    start: usize,
}

impl Iterator for IntoIter {
    type Item = (Vec<u8>, Entry);
    fn next(&mut self) -> Option<Self::Item> {
        let (end, e) = (self.ends.next()?, self.entries.next()?);
        let p = self.paths[self.start..end].to_vec();
        self.start = end;
        Some((p, e))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for IntoIter {}

/// The whole source.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root: PathBuf,
    /// Relative path bytes (no leading `./`, no trailing `/`) → entry.
    pub entries: Entries,
    /// Devices, fifos and sockets that were skipped.
    pub skipped: Vec<Vec<u8>>,
    /// Entries whose setuid/setgid bits were dropped from `mode` (sorted by path bytes).
    pub modes_stripped: Vec<Vec<u8>>,
    pub digest: [u8; 32],
}

/// The mode bits offsync never transfers: setuid and setgid.
pub const SETID_BITS: u32 = 0o6000;

/// Hashing statistics, for progress and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

impl Manifest {
    pub fn digest_hex(&self) -> String {
        blake3::Hash::from(self.digest).to_hex().to_string()
    }
    pub fn file_count(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| !matches!(e.kind, Kind::Dir))
            .count() as u64
    }
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(Entry::size).sum()
    }
}

/// Walk the source and hash it. `cache_path` is where hashes are remembered (`None`: no cache).
pub fn build(
    root: &Path,
    excludes: &Excludes,
    cache_path: Option<&Path>,
) -> Result<(Manifest, Stats)> {
    build_with_progress(root, excludes, cache_path, &|_| {})
}

/// [`build`] for a directory being written to rather than read from (`mirror restore
/// --force`): a symlink pointing outside it is listed as a symlink (never followed), so the
/// plan replaces it, instead of being refused as a source's would be.
pub fn build_destination(
    root: &Path,
    excludes: &Excludes,
    cache_path: Option<&Path>,
) -> Result<(Manifest, Stats)> {
    build_inner(root, excludes, cache_path, &|_| {}, false)
}

/// [`build`], calling `progress` with the number of bytes hashed so far (from any thread).
pub fn build_with_progress(
    root: &Path,
    excludes: &Excludes,
    cache_path: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Manifest, Stats)> {
    build_inner(root, excludes, cache_path, progress, true)
}

fn build_inner(
    root: &Path,
    excludes: &Excludes,
    cache_path: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
    refuse_escaping: bool,
) -> Result<(Manifest, Stats)> {
    let root = std::fs::canonicalize(root)
        .with_context(|| format!("source {} does not exist; fix `source:` in config.yaml or run `offsync init --source DIR`", root.display()))?;
    if !root.is_dir() {
        anyhow::bail!("source {} is not a directory", root.display());
    }
    let mut walked = walk(&root, excludes, refuse_escaping)?;
    let cached = cache_path.and_then(|p| cache::apply(p, &root, &mut walked));
    hash_missing(&root, &mut walked, progress)?;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut stats = Stats::default();
    let (mut eligible, mut eligible_hits) = (0u64, 0u64);
    for (e, x) in walked.entries.values().zip(&walked.extra) {
        let Kind::File { size, .. } = e.kind else {
            continue;
        };
        stats.files += 1;
        stats.bytes += size;
        if !x.cached {
            stats.hashed_files += 1;
            stats.hashed_bytes += size;
        }
        if x.cacheable(e, now) {
            eligible += 1;
            eligible_hits += u64::from(x.cached);
        }
    }
    // The cache is rewritten unless it holds exactly the cacheable files, all of which it
    // answered (then every record would be written back unchanged).
    let old = cached.unwrap_or(0);
    if let Some(p) = cache_path
        && !(eligible == old && eligible_hits == old)
    {
        // A cache that cannot be written only costs time on the next run.
        let _ = cache::save(p, &root, &walked, eligible, now);
    }
    let Walked {
        entries,
        extra,
        skipped,
        modes_stripped,
    } = walked;
    drop(extra);
    let digest = digest(&entries);
    Ok((
        Manifest {
            root,
            entries,
            skipped,
            modes_stripped,
            digest,
        },
        stats,
    ))
}

/// Hash, on all cores, every file the cache did not answer. Of several failures, the one of
/// the first path is reported.
fn hash_missing(root: &Path, walked: &mut Walked, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
    let hashed_so_far = std::sync::atomic::AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<(usize, anyhow::Error)>);
    let Entries {
        paths,
        ends,
        entries,
    } = &mut walked.entries;
    let (paths, ends) = (&*paths, &*ends);
    entries
        .par_iter_mut()
        .zip(walked.extra.par_iter())
        .enumerate()
        .for_each(|(i, (e, x))| {
            let Kind::File { size, hash } = &mut e.kind else {
                return;
            };
            if x.cached {
                return;
            }
            let rel = &paths[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
            match hash_file(&root.join(std::ffi::OsStr::from_bytes(rel)), *size) {
                Ok(h) => {
                    *hash = h;
                    let done = hashed_so_far.fetch_add(*size, std::sync::atomic::Ordering::Relaxed);
                    progress(done + *size);
                }
                Err(err) => {
                    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if first.as_ref().is_none_or(|(j, _)| i < *j) {
                        *first = Some((i, err));
                    }
                }
            }
        });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, err)) => Err(err),
        None => Ok(()),
    }
}

/// What the hash cache compares beyond the entry's own size and mtime.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    ino: u64,
    ctime_s: i64,
    ctime_ns: u32,
    /// The hash came from the cache.
    cached: bool,
}

impl Extra {
    /// Whether the cache may remember this file: it last changed at least two seconds ago.
    fn cacheable(&self, e: &Entry, now: i64) -> bool {
        now - self.ctime_s.max(e.mtime_s) >= 2
    }
}

/// The walk: entries sorted by path, with their [`Extra`] at the same index.
struct Walked {
    entries: Entries,
    extra: Vec<Extra>,
    skipped: Vec<Vec<u8>>,
    modes_stripped: Vec<Vec<u8>>,
}

fn walk(root: &Path, excludes: &Excludes, refuse_escaping: bool) -> Result<Walked> {
    let mut out = Walked {
        entries: Entries::new(),
        extra: Vec::new(),
        skipped: Vec::new(),
        modes_stripped: Vec::new(),
    };
    let mut escaping = Vec::new();
    let ex = excludes.clone();
    let root_owned = root.to_path_buf();
    // standard_filters(false): no .gitignore, hidden-file or VCS rules — only ours, or files
    // would vanish from the push silently.
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.as_bytes().cmp(b.as_bytes()))
        .filter_entry(move |e| {
            let Ok(rel) = e.path().strip_prefix(&root_owned) else {
                return true;
            };
            rel.as_os_str().is_empty()
                || !ex.is_excluded(rel, e.file_type().is_some_and(|t| t.is_dir()))
        })
        .build();
    for item in walker {
        let item = item.with_context(|| format!("cannot walk {}", root.display()))?;
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        if rel.as_os_str().is_empty() {
            continue;
        }
        let rel_bytes = rel.as_os_str().as_bytes().to_vec();
        let meta = std::fs::symlink_metadata(item.path())
            .with_context(|| format!("cannot stat {}", item.path().display()))?;
        let ft = meta.file_type();
        let mut mode = meta.permissions().mode() & 0o7777;
        if mode & SETID_BITS != 0 && (ft.is_dir() || ft.is_file()) {
            mode &= !SETID_BITS;
            out.modes_stripped.push(rel_bytes.clone());
        }
        let (mtime_s, mtime_ns) = (meta.mtime(), meta.mtime_nsec() as u32);
        let mut extra = Extra::default();
        let (kind, mode) = if ft.is_dir() {
            (Kind::Dir, mode)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path())?;
            if escapes(rel, &target) {
                escaping.push(format!(
                    "{} -> {}",
                    crate::sanitize::bytes_for_terminal(&rel_bytes),
                    crate::sanitize::bytes_for_terminal(target.as_os_str().as_bytes())
                ));
            }
            let target = target.into_os_string().into_vec();
            (Kind::Symlink { target }, 0o777)
        } else if ft.is_file() {
            extra = Extra {
                ino: meta.ino(),
                ctime_s: meta.ctime(),
                ctime_ns: meta.ctime_nsec() as u32,
                cached: false,
            };
            let size = meta.len();
            (
                Kind::File {
                    size,
                    hash: [0; 32],
                },
                mode,
            )
        } else {
            out.skipped.push(rel_bytes);
            continue;
        };
        out.entries.push_unordered(
            &rel_bytes,
            Entry {
                kind,
                mode,
                mtime_s,
                mtime_ns,
            },
        );
        out.extra.push(extra);
    }
    out.modes_stripped.sort();
    if refuse_escaping && !escaping.is_empty() {
        anyhow::bail!(
            "symlinks in the source point outside it (absolute or `..` past the root): {}; make them relative and inside the source, or exclude them",
            escaping.join(", ")
        );
    }
    sort_walked(&mut out);
    Ok(out)
}

/// Put the walk into path byte order. The walk is depth-first with siblings sorted, which is
/// almost byte order (`a/x` comes before `a.txt`, whose `.` sorts before `/`). The paths are
/// copied once in the new order; entries and their extras are permuted in place.
fn sort_walked(w: &mut Walked) {
    let e = &mut w.entries;
    if e.is_sorted() {
        return;
    }
    let n = u32::try_from(e.len()).expect("fewer than 4 billion entries");
    let mut order: Vec<u32> = (0..n).collect();
    // Paths are unique, so an unstable sort is deterministic (and needs no scratch buffer).
    order.sort_unstable_by(|&a, &b| e.path(a as usize).cmp(e.path(b as usize)));
    let mut paths = Vec::with_capacity(e.paths.len());
    let mut ends = Vec::with_capacity(e.ends.len());
    for &i in &order {
        paths.extend_from_slice(e.path(i as usize));
        ends.push(paths.len());
    }
    (e.paths, e.ends) = (paths, ends);
    // Position i gets the entry now at order[i]: follow each cycle once, marking it done.
    for start in 0..order.len() {
        let mut cur = start;
        loop {
            let next = order[cur] as usize;
            order[cur] = cur as u32;
            if next == start || next == cur {
                break;
            }
            e.entries.swap(cur, next);
            w.extra.swap(cur, next);
            cur = next;
        }
    }
    debug_assert!(e.is_sorted());
}

/// Whether a symlink at `rel` pointing to `target` leaves the source.
fn escapes(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    // Depth of the link's directory below the root.
    let mut depth = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

fn hash_file(path: &Path, size: u64) -> Result<[u8; 32]> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let chunk = if size >= PARALLEL_THRESHOLD {
        HASH_CHUNK
    } else {
        64 << 10
    };
    hash_reader(&mut f, chunk).with_context(|| format!("cannot read {}", path.display()))
}

/// BLAKE3 of everything `r` yields, read `chunk` bytes at a time. Chunks of [`HASH_CHUNK`]
/// are hashed on all cores while a second thread reads the next one into the other of two
/// buffers, so a large file costs two buffers of memory and about the longer of reading and
/// hashing, not their sum.
fn hash_reader(r: &mut (dyn Read + Send), chunk: usize) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    if chunk < HASH_CHUNK {
        let mut buf = vec![0u8; chunk];
        loop {
            let n = read_full(r, &mut buf)?;
            hasher.update(&buf[..n]);
            if n < buf.len() {
                return Ok(*hasher.finalize().as_bytes());
            }
        }
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        empty_tx
            .send(vec![0u8; chunk])
            .expect("the receiver is alive");
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> std::io::Result<()> {
            // Ends when the file does (dropping `full_tx` ends the hashing loop) or when the
            // hashing side is gone.
            while let Ok(mut buf) = empty_rx.recv() {
                let n = read_full(r, &mut buf)?;
                let last = n < buf.len();
                if full_tx.send((buf, n)).is_err() || last {
                    break;
                }
            }
            Ok(())
        });
        for (buf, n) in full_rx {
            hasher.update_rayon(&buf[..n]);
            // Fails only once the reader has finished; the buffer is then just dropped.
            let _ = empty_tx.send(buf);
        }
        reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    Ok(*hasher.finalize().as_bytes())
}

/// Fill `buf` from `r` (reads may come back short, which would narrow the parallel split);
/// returns the bytes read, less than `buf.len()` only at the end of `r`.
fn read_full(r: &mut (dyn Read + Send), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// BLAKE3 over the canonical encoding of the entries.
pub fn digest(entries: &Entries) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"offsync-manifest/1\0");
    for (path, e) in entries {
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path);
        h.update(&e.mode.to_le_bytes());
        h.update(&e.mtime_s.to_le_bytes());
        match &e.kind {
            Kind::File { size, hash } => {
                h.update(b"f");
                h.update(&size.to_le_bytes());
                h.update(hash);
            }
            Kind::Dir => {
                h.update(b"d");
            }
            Kind::Symlink { target } => {
                h.update(b"l");
                h.update(&(target.len() as u64).to_le_bytes());
                h.update(target);
            }
        }
    }
    *h.finalize().as_bytes()
}

/// The hash cache: a binary file with a trailing BLAKE3 of its content, so a torn or edited
/// file is detected and ignored. Layout: magic, the source root (length-prefixed), the record
/// count, then per file in path byte order: path (length-prefixed), size, mtime s, mtime ns,
/// inode, ctime s, ctime ns (each a little-endian u64), and the 32-byte hash.
///
/// The file is streamed, not loaded: each record is looked up in the sorted walk and its hash
/// taken when the stamp matches; only when the trailing checksum also matches are those hashes
/// kept (otherwise they are all hashed again).
mod cache {
    use super::*;

    const MAGIC: &[u8] = b"offsync-hash-cache/1\n";

    /// Take the hashes `path` knows into `walked` (marking them `cached`). `Some(records)` when
    /// the cache is intact and of this root; `None` (and nothing taken) otherwise.
    pub(super) fn apply(path: &Path, root: &Path, walked: &mut Walked) -> Option<u64> {
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let body = len.checked_sub(32)?;
        let mut r = HashingReader {
            inner: BufReader::with_capacity(64 * 1024, file),
            hasher: blake3::Hasher::new(),
            left: body,
        };
        let records = read_records(&mut r, root, walked);
        let mut sum = [0u8; 32];
        let intact = records.is_some()
            && r.left == 0
            && r.inner.read_exact(&mut sum).is_ok()
            && r.hasher.finalize() == blake3::Hash::from(sum);
        if !intact {
            for x in &mut walked.extra {
                x.cached = false;
            }
            return None;
        }
        records
    }

    fn read_records(r: &mut HashingReader, root: &Path, walked: &mut Walked) -> Option<u64> {
        let mut magic = [0u8; MAGIC.len()];
        r.take(&mut magic)?;
        if magic != MAGIC {
            return None;
        }
        let mut buf = Vec::new();
        r.bytes(&mut buf)?;
        if buf != root.as_os_str().as_bytes() {
            return None; // another source's cache
        }
        let n = r.u64()?;
        for _ in 0..n {
            r.bytes(&mut buf)?;
            let (size, mtime_s, mtime_ns) = (r.u64()?, r.u64()? as i64, r.u64()? as u32);
            let (ino, ctime_s, ctime_ns) = (r.u64()?, r.u64()? as i64, r.u64()? as u32);
            let mut h = [0u8; 32];
            r.take(&mut h)?;
            let Ok(i) = walked.entries.find(&buf) else {
                continue;
            };
            let e = &mut walked.entries.entries[i];
            let x = &mut walked.extra[i];
            if let Kind::File { size: s, hash } = &mut e.kind
                && (*s, e.mtime_s, e.mtime_ns) == (size, mtime_s, mtime_ns)
                && (x.ino, x.ctime_s, x.ctime_ns) == (ino, ctime_s, ctime_ns)
            {
                *hash = h;
                x.cached = true;
            }
        }
        Some(n)
    }

    /// Reads the cache body, hashing what it reads; never reads past the body.
    struct HashingReader {
        inner: BufReader<std::fs::File>,
        hasher: blake3::Hasher,
        left: u64,
    }

    impl HashingReader {
        fn take(&mut self, buf: &mut [u8]) -> Option<()> {
            self.left = self.left.checked_sub(buf.len() as u64)?;
            self.inner.read_exact(buf).ok()?;
            self.hasher.update(buf);
            Some(())
        }
        fn u64(&mut self) -> Option<u64> {
            let mut b = [0u8; 8];
            self.take(&mut b)?;
            Some(u64::from_le_bytes(b))
        }
        fn bytes(&mut self, buf: &mut Vec<u8>) -> Option<()> {
            let n = self.u64()?;
            if n > self.left {
                return None;
            }
            buf.resize(usize::try_from(n).ok()?, 0);
            self.take(buf)
        }
    }

    /// Write the cache of every cacheable file (`records` of them) in `walked`.
    pub(super) fn save(
        path: &Path,
        root: &Path,
        walked: &Walked,
        records: u64,
        now: i64,
    ) -> Result<()> {
        if let Some(parent) = path.parent() {
            fsutil::ensure_private_dir(parent)?;
        }
        fsutil::atomic_write_with(path, fsutil::FILE_MODE, |file| {
            let mut w = HashingWriter {
                inner: BufWriter::with_capacity(64 * 1024, file),
                hasher: blake3::Hasher::new(),
            };
            let root = root.as_os_str().as_bytes();
            w.put(MAGIC)?;
            w.u64(root.len() as u64)?;
            w.put(root)?;
            w.u64(records)?;
            for ((rel, e), x) in walked.entries.iter().zip(&walked.extra) {
                let Kind::File { size, hash } = &e.kind else {
                    continue;
                };
                if !x.cacheable(e, now) {
                    continue;
                }
                w.u64(rel.len() as u64)?;
                w.put(rel)?;
                for v in [
                    *size,
                    e.mtime_s as u64,
                    e.mtime_ns as u64,
                    x.ino,
                    x.ctime_s as u64,
                    x.ctime_ns as u64,
                ] {
                    w.u64(v)?;
                }
                w.put(hash)?;
            }
            let sum = w.hasher.finalize();
            w.inner.write_all(sum.as_bytes())?;
            w.inner.flush()?;
            Ok(())
        })
    }

    struct HashingWriter<W: Write> {
        inner: W,
        hasher: blake3::Hasher,
    }

    impl<W: Write> HashingWriter<W> {
        fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
            self.hasher.update(b);
            self.inner.write_all(b)
        }
        fn u64(&mut self, v: u64) -> std::io::Result<()> {
            self.put(&v.to_le_bytes())
        }
    }
}

/// Where the hash cache of `source` lives under `home`.
pub fn cache_path(home: &Path, source: &Path) -> PathBuf {
    let id = blake3::hash(source.as_os_str().as_bytes()).to_hex();
    home.join("cache").join(format!("hashes-{}.bin", &id[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ex() -> Excludes {
        Excludes::new(&[]).unwrap()
    }

    /// A reader that returns at most `max` bytes per read, as pipes and some filesystems do.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Chunked hashing is BLAKE3 of the whole content at every size around a chunk boundary,
    /// through a file (small and parallel paths) and through short reads.
    #[test]
    fn chunked_hash_equals_blake3_of_the_whole_file_around_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let c = HASH_CHUNK;
        let data: Vec<u8> = (0..3 * c + 5).map(|i| (i * 7 + i / 4093) as u8).collect();
        let sizes = [
            0,
            1,
            64 << 10,
            (1 << 20) - 1,
            1 << 20,
            c - 1,
            c,
            c + 1,
            3 * c + 5,
        ];
        for n in sizes {
            let want = *blake3::hash(&data[..n]).as_bytes();
            let p = dir.path().join("f");
            std::fs::write(&p, &data[..n]).unwrap();
            assert_eq!(hash_file(&p, n as u64).unwrap(), want, "file of {n} bytes");
            let mut short = Trickle(&data[..n], 1 << 20 | 17);
            assert_eq!(
                hash_reader(&mut short, c).unwrap(),
                want,
                "short reads, {n} bytes"
            );
        }
    }

    fn set_old_mtime(p: &Path) {
        // Make files look older than the racy window so the cache records them.
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn walks_hashes_and_excludes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/.git")).unwrap();
        std::fs::write(r.join("a/x.txt"), b"hello").unwrap();
        std::fs::write(r.join("a/.git/HEAD"), b"ref").unwrap();
        std::fs::write(r.join("skip.log"), b"log").unwrap();
        std::os::unix::fs::symlink("x.txt", r.join("a/link")).unwrap();
        let ex = Excludes::new(&["*.log".to_string()]).unwrap();
        let (m, _) = build(r, &ex, None).unwrap();
        let keys: Vec<&[u8]> = m.entries.keys().collect();
        assert_eq!(keys, [&b"a"[..], b"a/link", b"a/x.txt"]);
        assert_eq!(
            m.entries[&b"a/x.txt"[..]].hash_hex().unwrap(),
            blake3::hash(b"hello").to_hex().to_string()
        );
        assert!(
            matches!(&m.entries[&b"a/link"[..]].kind, Kind::Symlink { target } if target == b"x.txt")
        );
    }

    #[test]
    fn setuid_and_setgid_bits_are_stripped_and_listed() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::create_dir(r.join("shared")).unwrap();
        set(&r.join("shared"), 0o2775);
        for (name, m) in [
            ("suid", 0o4755),
            ("sgid", 0o2755),
            ("plain", 0o755),
            ("sticky", 0o1755),
        ] {
            std::fs::write(r.join(name), b"x").unwrap();
            set(&r.join(name), m);
        }
        let (m, _) = build(r, &no_ex(), None).unwrap();
        let mode = |p: &[u8]| m.entries[p].mode;
        assert_eq!(mode(b"suid"), 0o755);
        assert_eq!(mode(b"sgid"), 0o755);
        assert_eq!(mode(b"plain"), 0o755);
        assert_eq!(mode(b"sticky"), 0o1755);
        assert_eq!(mode(b"shared"), 0o775);
        assert_eq!(
            m.modes_stripped,
            [b"sgid".to_vec(), b"shared".to_vec(), b"suid".to_vec()]
        );
    }

    #[test]
    fn escaping_symlinks_are_all_listed() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir(r.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../x", r.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("../ok", r.join("sub/fine")).unwrap();
        let err = build(r, &no_ex(), None).unwrap_err().to_string();
        assert!(err.contains("abs -> /etc/passwd"), "{err}");
        assert!(err.contains("sub/up -> ../../x"), "{err}");
        assert!(!err.contains("sub/fine"), "{err}");
    }

    #[test]
    fn cache_skips_rehash_and_detects_changes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..5 {
            let p = src.join(format!("f{i}"));
            std::fs::write(&p, format!("content {i}")).unwrap();
            set_old_mtime(&p);
        }
        let cache = d.path().join("cache/c.bin");
        // set_modified changed the ctime to now: wait out the racy window once.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let (m1, s1) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s1.hashed_files, 5);
        let (m2, s2) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s2.hashed_files, 0, "warm cache answers everything");
        assert_eq!(m1.digest, m2.digest);
        // Same size, content changed: mtime/ctime differ, so it is re-hashed.
        std::fs::write(src.join("f1"), b"content X").unwrap();
        let (m3, s3) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s3.hashed_files, 1);
        assert_ne!(m3.digest, m2.digest);
        // A corrupt cache is ignored, not trusted.
        let mut bytes = std::fs::read(&cache).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&cache, &bytes).unwrap();
        let (m4, s4) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s4.hashed_files, 5);
        assert_eq!(m4.digest, m3.digest);
    }

    #[test]
    fn escape_rules() {
        assert!(escapes(Path::new("a"), Path::new("/x")));
        assert!(escapes(Path::new("a"), Path::new("../x")));
        assert!(!escapes(Path::new("d/a"), Path::new("../x")));
        assert!(escapes(Path::new("d/a"), Path::new("y/../../../x")));
        assert!(!escapes(Path::new("d/a"), Path::new("./y")));
    }

    #[test]
    fn walk_is_in_byte_order_and_the_cache_follows_it() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        // Depth-first, `a/x` would come before `a.txt` (`.` sorts before `/`).
        std::fs::create_dir_all(src.join("a/sub")).unwrap();
        let files = ["a/x", "a/sub/y", "a.txt", "a-b", "a0", "b"];
        for f in files {
            let p = src.join(f);
            std::fs::write(&p, f.as_bytes()).unwrap();
            set_old_mtime(&p);
        }
        let cache = d.path().join("cache/c.bin");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let (m1, s1) = build(&src, &no_ex(), Some(&cache)).unwrap();
        let keys: Vec<&[u8]> = m1.entries.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), files.len() + 2);
        assert_eq!(s1.hashed_files, files.len() as u64);
        let (m2, s2) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s2.hashed_files, 0, "every file answered by the cache");
        for f in files {
            let want = blake3::hash(f.as_bytes()).to_hex().to_string();
            assert_eq!(m2.entries[f.as_bytes()].hash_hex().unwrap(), want, "{f}");
        }
        assert_eq!(m1.digest, m2.digest);
        // Same size and mtime, new content: only the ctime (and the walk's order) tells.
        let p = src.join("a.txt");
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"A.TXT").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let (m3, s3) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s3.hashed_files, 1);
        assert_eq!(
            m3.entries[b"a.txt".as_slice()].hash_hex().unwrap(),
            blake3::hash(b"A.TXT").to_hex().to_string()
        );
    }

    #[test]
    fn cache_is_rewritten_only_when_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..3 {
            let p = src.join(format!("f{i}"));
            std::fs::write(&p, format!("{i}")).unwrap();
            set_old_mtime(&p);
        }
        let cache = d.path().join("cache/c.bin");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        build(&src, &no_ex(), Some(&cache)).unwrap();
        let first = ino(&cache);
        build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(ino(&cache), first, "unchanged cache is not rewritten");
        std::fs::remove_file(src.join("f1")).unwrap();
        build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_ne!(ino(&cache), first, "a file fewer: rewritten");
        // A cache cut short is ignored (everything hashed again) and rebuilt.
        let bytes = std::fs::read(&cache).unwrap();
        std::fs::write(&cache, &bytes[..bytes.len() - 40]).unwrap();
        let (_, s) = build(&src, &no_ex(), Some(&cache)).unwrap();
        assert_eq!(s.hashed_files, 2);
        assert_eq!(std::fs::read(&cache).unwrap(), bytes);
        // Another root's cache is not used.
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::copy(&cache, d.path().join("cache/o.bin")).unwrap();
        let (_, s) = build(&src, &no_ex(), Some(&d.path().join("cache/o.bin"))).unwrap();
        assert_eq!(s.hashed_files, 0, "same root: used");
        std::fs::copy(src.join("f0"), other.join("f0")).unwrap();
        let (_, s) = build(&other, &no_ex(), Some(&d.path().join("cache/o.bin"))).unwrap();
        assert_eq!(s.hashed_files, 1, "another root: ignored");
    }

    fn entry(mode: u32) -> Entry {
        Entry {
            kind: Kind::Dir,
            mode,
            mtime_s: 0,
            mtime_ns: 0,
        }
    }

    #[test]
    fn entries_from_unsorted_input_keep_the_last_of_a_path() {
        let e: Entries = [
            (b"b".to_vec(), entry(1)),
            (b"a".to_vec(), entry(2)),
            (b"b".to_vec(), entry(3)),
            (b"a/x".to_vec(), entry(4)),
        ]
        .into_iter()
        .collect();
        let got: Vec<(&[u8], u32)> = e.iter().map(|(p, e)| (p, e.mode)).collect();
        assert_eq!(got, [(&b"a"[..], 2), (b"a/x", 4), (b"b", 3)]);
        let owned: Vec<(Vec<u8>, u32)> = e.clone().into_iter().map(|(p, e)| (p, e.mode)).collect();
        assert_eq!(owned[1], (b"a/x".to_vec(), 4));
        assert_eq!(e[b"b".as_slice()].mode, 3);
        assert!(format!("{e:?}").contains("\"a/x\""));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, u32),
        Remove(Vec<u8>),
        /// Keep entries whose mode is not divisible by this; add 1000 to the others' modes.
        Retain(u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let path = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'/')], 0..4);
        prop_oneof![
            4 => (path.clone(), 0u32..50).prop_map(|(p, m)| Op::Insert(p, m)),
            1 => path.prop_map(Op::Remove),
            1 => (2u32..5).prop_map(Op::Retain),
        ]
    }

    proptest::proptest! {
        /// `Entries` behaves like the `BTreeMap` it replaces.
        #[test]
        fn entries_match_a_btreemap(ops in proptest::collection::vec(op(), 0..60)) {
            use std::collections::BTreeMap;
            let mut model: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            let mut e = Entries::new();
            for op in ops {
                match op {
                    Op::Insert(p, m) => {
                        proptest::prop_assert_eq!(e.insert(p.clone(), entry(m)), model.insert(p, entry(m)));
                    }
                    Op::Remove(p) => {
                        proptest::prop_assert_eq!(e.remove(&p), model.remove(&p));
                    }
                    Op::Retain(k) => {
                        let f = |_: &[u8], x: &mut Entry| {
                            let keep = !x.mode.is_multiple_of(k);
                            if keep {
                                x.mode += 1000;
                            }
                            keep
                        };
                        e.retain(f);
                        model.retain(|p, x| f(p, x));
                    }
                }
                let want: Vec<(&[u8], &Entry)> = model.iter().map(|(p, x)| (p.as_slice(), x)).collect();
                let got: Vec<(&[u8], &Entry)> = e.iter().collect();
                proptest::prop_assert_eq!(&got, &want);
                proptest::prop_assert_eq!(e.len(), model.len());
                for p in model.keys() {
                    proptest::prop_assert!(e.contains_key(p));
                    proptest::prop_assert_eq!(e.get(p), model.get(p));
                }
                proptest::prop_assert!(!e.contains_key(b"zz"));
                let rebuilt: Entries = model.clone().into_iter().collect();
                proptest::prop_assert_eq!(&rebuilt, &e);
                let back: Vec<(Vec<u8>, Entry)> = e.clone().into_iter().collect();
                proptest::prop_assert_eq!(back, model.clone().into_iter().collect::<Vec<_>>());
            }
        }
    }
}
