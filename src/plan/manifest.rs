//! The source manifest: every entry under the source, with metadata and BLAKE3 hashes.
//!
//! Invariants:
//! - the walk is deterministic: entries are keyed by their relative path bytes in a
//!   `BTreeMap`, so iteration order is byte order whatever the filesystem returns;
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

use anyhow::{Context as _, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::excludes::Excludes;
use crate::fsutil;

/// Files at least this big are hashed with memory maps on all cores.
const MMAP_THRESHOLD: u64 = 1 << 20;

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

/// The whole source.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root: PathBuf,
    /// Relative path bytes (no leading `./`, no trailing `/`) → entry.
    pub entries: BTreeMap<Vec<u8>, Entry>,
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
    let hashed_so_far = std::sync::atomic::AtomicU64::new(0);
    let root = std::fs::canonicalize(root)
        .with_context(|| format!("source {} does not exist; fix `source:` in config.yaml or run `offsync init --source DIR`", root.display()))?;
    if !root.is_dir() {
        anyhow::bail!("source {} is not a directory", root.display());
    }
    let walked = walk(&root, excludes, refuse_escaping)?;
    let cache = cache_path
        .map(|p| Cache::load(p, &root))
        .unwrap_or_default();

    let mut stats = Stats::default();
    let hashed: Vec<Result<(usize, [u8; 32], bool)>> = walked
        .files
        .par_iter()
        .enumerate()
        .map(|(i, f)| {
            if let Some(h) = cache.lookup(&f.rel, &f.stamp) {
                return Ok((i, h, false));
            }
            let h = hash_file(
                &root.join(std::ffi::OsStr::from_bytes(&f.rel)),
                f.stamp.size,
            )?;
            let done = hashed_so_far.fetch_add(f.stamp.size, std::sync::atomic::Ordering::Relaxed);
            progress(done + f.stamp.size);
            Ok((i, h, true))
        })
        .collect();
    let mut entries = walked.entries;
    let mut new_cache = Cache::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for r in hashed {
        let (i, hash, fresh) = r?;
        let f = &walked.files[i];
        stats.files += 1;
        stats.bytes += f.stamp.size;
        if fresh {
            stats.hashed_files += 1;
            stats.hashed_bytes += f.stamp.size;
        }
        if now - f.stamp.ctime_s.max(f.stamp.mtime_s) >= 2 {
            new_cache
                .entries
                .insert(f.rel.clone(), (f.stamp.clone(), hash));
        }
        entries.insert(
            f.rel.clone(),
            Entry {
                kind: Kind::File {
                    size: f.stamp.size,
                    hash,
                },
                mode: f.mode,
                mtime_s: f.stamp.mtime_s,
                mtime_ns: f.stamp.mtime_ns,
            },
        );
    }
    if let Some(p) = cache_path
        && new_cache.entries != cache.entries
    {
        // A cache that cannot be written only costs time on the next run.
        let _ = new_cache.save(p, &root);
    }
    let digest = digest(&entries);
    Ok((
        Manifest {
            root,
            entries,
            skipped: walked.skipped,
            modes_stripped: walked.modes_stripped,
            digest,
        },
        stats,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_s: i64,
    mtime_ns: u32,
    ino: u64,
    ctime_s: i64,
    ctime_ns: u32,
}

struct WalkedFile {
    rel: Vec<u8>,
    mode: u32,
    stamp: Stamp,
}

struct Walked {
    entries: BTreeMap<Vec<u8>, Entry>,
    files: Vec<WalkedFile>,
    skipped: Vec<Vec<u8>>,
    modes_stripped: Vec<Vec<u8>>,
}

fn walk(root: &Path, excludes: &Excludes, refuse_escaping: bool) -> Result<Walked> {
    let mut out = Walked {
        entries: BTreeMap::new(),
        files: Vec::new(),
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
        if ft.is_dir() {
            out.entries.insert(
                rel_bytes,
                Entry {
                    kind: Kind::Dir,
                    mode,
                    mtime_s,
                    mtime_ns,
                },
            );
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path())?;
            if escapes(rel, &target) {
                escaping.push(format!(
                    "{} -> {}",
                    crate::sanitize::bytes_for_terminal(&rel_bytes),
                    crate::sanitize::bytes_for_terminal(target.as_os_str().as_bytes())
                ));
            }
            out.entries.insert(
                rel_bytes,
                Entry {
                    kind: Kind::Symlink {
                        target: target.as_os_str().as_bytes().to_vec(),
                    },
                    mode: 0o777,
                    mtime_s,
                    mtime_ns,
                },
            );
        } else if ft.is_file() {
            out.files.push(WalkedFile {
                rel: rel_bytes,
                mode,
                stamp: Stamp {
                    size: meta.len(),
                    mtime_s,
                    mtime_ns,
                    ino: meta.ino(),
                    ctime_s: meta.ctime(),
                    ctime_ns: meta.ctime_nsec() as u32,
                },
            });
        } else {
            out.skipped.push(rel_bytes);
        }
    }
    out.modes_stripped.sort();
    if refuse_escaping && !escaping.is_empty() {
        anyhow::bail!(
            "symlinks in the source point outside it (absolute or `..` past the root): {}; make them relative and inside the source, or exclude them",
            escaping.join(", ")
        );
    }
    Ok(out)
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
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hasher
            .update_mmap_rayon(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    } else {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// BLAKE3 over the canonical encoding of the entries.
pub fn digest(entries: &BTreeMap<Vec<u8>, Entry>) -> [u8; 32] {
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
/// file is detected and ignored.
#[derive(Debug, Default)]
struct Cache {
    entries: BTreeMap<Vec<u8>, (Stamp, [u8; 32])>,
}

const CACHE_MAGIC: &[u8] = b"offsync-hash-cache/1\n";

impl Cache {
    fn lookup(&self, rel: &[u8], stamp: &Stamp) -> Option<[u8; 32]> {
        match self.entries.get(rel) {
            Some((s, h)) if s == stamp => Some(*h),
            _ => None,
        }
    }

    fn load(path: &Path, root: &Path) -> Cache {
        std::fs::read(path)
            .ok()
            .and_then(|b| Self::decode(&b, root))
            .unwrap_or_default()
    }

    fn decode(b: &[u8], root: &Path) -> Option<Cache> {
        if b.len() < 32 {
            return None;
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut r = Reader(body.strip_prefix(CACHE_MAGIC)?);
        let root_bytes = r.bytes()?;
        if root_bytes != root.as_os_str().as_bytes() {
            return None; // another source's cache
        }
        let n = r.u64()?;
        let mut entries = BTreeMap::new();
        for _ in 0..n {
            let rel = r.bytes()?.to_vec();
            let stamp = Stamp {
                size: r.u64()?,
                mtime_s: r.u64()? as i64,
                mtime_ns: r.u64()? as u32,
                ino: r.u64()?,
                ctime_s: r.u64()? as i64,
                ctime_ns: r.u64()? as u32,
            };
            let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
            entries.insert(rel, (stamp, hash));
        }
        r.0.is_empty().then_some(Cache { entries })
    }

    fn save(&self, path: &Path, root: &Path) -> Result<()> {
        let mut b = CACHE_MAGIC.to_vec();
        let put = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
        let root_bytes = root.as_os_str().as_bytes();
        put(&mut b, root_bytes.len() as u64);
        b.extend_from_slice(root_bytes);
        put(&mut b, self.entries.len() as u64);
        for (rel, (s, h)) in &self.entries {
            put(&mut b, rel.len() as u64);
            b.extend_from_slice(rel);
            for v in [
                s.size,
                s.mtime_s as u64,
                s.mtime_ns as u64,
                s.ino,
                s.ctime_s as u64,
                s.ctime_ns as u64,
            ] {
                put(&mut b, v);
            }
            b.extend_from_slice(h);
        }
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        if let Some(parent) = path.parent() {
            fsutil::ensure_private_dir(parent)?;
        }
        fsutil::atomic_write(path, &b, fsutil::FILE_MODE)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
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
        let keys: Vec<&[u8]> = m.entries.keys().map(|k| k.as_slice()).collect();
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
}
