//! Writing snapshot entries into a local directory (`mirror restore`, `pull`).
//!
//! Invariants: file contents are downloaded into a holding directory inside DEST
//! (`.~tmp~`, excluded from every plan), decrypted, hashed and compared with the snapshot,
//! given their mode and mtime, and only then renamed into place; on any failure the holding
//! directory is removed, so no partially written file ever sits at a final path. Directory
//! modes are applied last, deepest first, so a read-only directory never blocks its
//! children.
//!
//! Nothing here follows a symlink inside DEST, whoever made it: DEST is opened once, and every
//! parent directory is opened from it one component at a time with
//! `openat(O_DIRECTORY | O_NOFOLLOW)`; creation, replacement and removal use `mkdirat`,
//! `renameat`, `symlinkat` and `unlinkat` relative to those descriptors, and modes and mtimes
//! are set on descriptors opened with `O_NOFOLLOW`. A symlink planted anywhere in DEST — before
//! the plan or between plan and write — makes the write fail with its path named; it never
//! redirects it. (The snapshot itself was validated on read: clean relative paths, every
//! parent a directory entry, see [`super::snapshot::Snapshot::validate`].)
//!
//! Hard links (`Work::link`, the releases layout of `pull`): an unchanged entry of the previous
//! release is linked with `linkat` without `AT_SYMLINK_FOLLOW` (a symlink is linked as itself),
//! both parents reached as above, and only when the entry there is of the snapshot's kind. A
//! linked inode is shared with the older release, so it is never given a mode or an mtime
//! here: entries whose metadata changes are written fresh, like new content.
//!
//! Modes: only permission bits are restored; setuid, setgid and sticky bits are stripped
//! unless the caller asks to keep them (`mirror restore --keep-special-modes`).

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::Mirror;
use super::snapshot::{SPECIAL_BITS, SnapEntry};
use crate::plan::excludes::HOLDING_DIR;

/// What to do in DEST.
#[derive(Default)]
pub struct Work<'a> {
    /// Entries whose content (or type) must be written.
    pub write: Vec<(Vec<u8>, &'a SnapEntry)>,
    /// Entries that only need mode/mtime.
    pub metadata: Vec<(Vec<u8>, &'a SnapEntry)>,
    /// Paths to remove.
    pub delete: Vec<Vec<u8>>,
    /// Restore setuid/setgid/sticky bits as the snapshot has them (default: strip them).
    pub keep_special_modes: bool,
    /// Files and symlinks to hard-link from the tree at `link_from` instead of downloading
    /// them: the unchanged entries of the previous release (`pull --layout releases`). Their
    /// inode is shared, so nothing here ever changes its mode, mtime or content; an entry
    /// that cannot be linked is downloaded instead.
    pub link: Vec<(Vec<u8>, &'a SnapEntry)>,
    /// The tree `link` entries come from, walked like DEST: nothing below it is followed.
    pub link_from: Option<PathBuf>,
}

/// What was done.
#[derive(Debug, Default)]
pub struct Done {
    pub changed: Vec<Vec<u8>>,
    pub deleted: Vec<Vec<u8>>,
    pub bytes: u64,
}

fn mtime(e: &SnapEntry) -> SystemTime {
    if e.mtime_s >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(e.mtime_s as u64, e.mtime_ns)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(e.mtime_s.unsigned_abs())
            + Duration::from_nanos(e.mtime_ns.into())
    }
}

/// Mode of a directory a restore creates that the snapshot does not describe (DEST itself,
/// parents of `--include`d paths): what `mkdir` gives under the usual umask 022, set
/// explicitly because offsync runs with umask 077. Directories in the snapshot get their own
/// mode at the end.
pub const NEW_DIR_MODE: u32 = 0o755;

/// The mode a restored entry gets: the snapshot's permission bits, without setuid, setgid
/// and sticky unless `keep_special`. Always set explicitly, so the process umask never
/// changes what a restore produces.
fn applied_mode(e: &SnapEntry, keep_special: bool) -> u32 {
    let mode = e.mode & 0o7777;
    if keep_special {
        mode
    } else {
        mode & !SPECIAL_BITS
    }
}

/// A file being downloaded into the holding directory, by its name there.
struct Holding {
    tmp: String,
    f: std::fs::File,
}

impl std::io::Write for Holding {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.f.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

/// DEST, opened once; every path below it is resolved without following symlinks.
struct Dest {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn name_of(c: &[u8]) -> &OsStr {
    OsStr::from_bytes(c)
}

impl Dest {
    fn open(path: &Path) -> Result<Dest> {
        // DEST itself is what the user named (it may be a symlink they chose); nothing below
        // it is followed.
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Dest {
            fd,
            path: path.to_path_buf(),
        })
    }

    fn show(&self, rel: &[u8]) -> String {
        crate::sanitize::bytes_for_terminal(self.path.join(name_of(rel)).as_os_str().as_bytes())
    }

    fn through_link(&self, rel: &[u8]) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is a symlink or not a directory; refusing to write through it (nothing outside {} is touched); move it away and try again",
            self.show(rel),
            crate::sanitize::bytes_for_terminal(self.path.as_os_str().as_bytes())
        )
    }

    /// Open the parent directory of `rel` (a validated relative path) without following any
    /// symlink, creating missing directories (mode [`NEW_DIR_MODE`]) when `create`. Returns the
    /// parent and the last component, or `None` when a parent is missing and `!create`.
    fn parent<'p>(&self, rel: &'p [u8], create: bool) -> Result<Option<(OwnedFd, &'p [u8])>> {
        let (dirs, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let mut cur = self.fd.try_clone()?;
        let mut done = 0usize;
        if !dirs.is_empty() {
            for c in dirs.split(|&b| b == b'/') {
                done += c.len() + usize::from(done > 0);
                let here = &dirs[..done];
                cur = match openat(&cur, name_of(c), DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) if create => {
                        match mkdirat(&cur, name_of(c), Mode::from_bits_truncate(0o700)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => {
                                return Err(e)
                                    .with_context(|| format!("cannot create {}", self.show(here)));
                            }
                        }
                        let fd = openat(&cur, name_of(c), DIR_FLAGS, Mode::empty())
                            .map_err(|_| self.through_link(here))?;
                        set_mode(&fd, NEW_DIR_MODE).with_context(|| {
                            format!("cannot set the mode of {}", self.show(here))
                        })?;
                        fd
                    }
                    Err(Errno::ENOENT) => return Ok(None),
                    Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(self.through_link(here)),
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot open {}", self.show(here)));
                    }
                };
            }
        }
        Ok(Some((cur, name)))
    }
}

fn set_mode(fd: &OwnedFd, mode: u32) -> std::io::Result<()> {
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(std::io::Error::from)
}

/// What is at `name` in `dir`, without following a symlink (`None`: nothing).
fn kind_at(dir: &OwnedFd, name: &[u8]) -> Result<Option<SFlag>> {
    match fstatat(dir, name_of(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Make room for a non-directory at `name`: an empty directory there is removed (a non-empty
/// one is an error); files and symlinks are replaced by the rename itself.
fn clear_for_file(dest: &Dest, dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<()> {
    if kind_at(dir, name)? == Some(SFlag::S_IFDIR) {
        unlinkat(dir, name_of(name), UnlinkatFlags::RemoveDir).map_err(|_| {
            anyhow::anyhow!(
                "{} is a non-empty directory on this side but not in the snapshot; move it away first",
                dest.show(rel)
            )
        })?;
    }
    Ok(())
}

/// Open the existing entry `name` in `dir` for metadata changes without following a symlink,
/// checking that it is what the snapshot says.
fn open_existing(
    dest: &Dest,
    dir: &OwnedFd,
    name: &[u8],
    rel: &[u8],
    want_dir: bool,
) -> Result<std::fs::File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name_of(name), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(dest.through_link(rel)),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", dest.show(rel))),
    };
    let f = std::fs::File::from(fd);
    let ft = f.metadata()?.file_type();
    if (want_dir && !ft.is_dir()) || (!want_dir && !ft.is_file()) {
        anyhow::bail!(
            "{} changed type since it was planned; run again",
            dest.show(rel)
        );
    }
    Ok(f)
}

/// Hard-link `rel` from the tree `src` into `dest` (see the module docs): both parents are
/// reached without following a symlink, the entry in `src` must be of `e`'s kind, and the
/// link is made to the entry itself, never to what a symlink points at.
fn link_one(src: &Dest, dest: &Dest, rel: &[u8], e: &SnapEntry) -> Result<()> {
    let (from_dir, name) = src
        .parent(rel, false)?
        .with_context(|| format!("{} is gone", src.show(rel)))?;
    let want = if e.kind == "symlink" {
        SFlag::S_IFLNK
    } else {
        SFlag::S_IFREG
    };
    if kind_at(&from_dir, name)? != Some(want) {
        anyhow::bail!("{} is not a {}", src.show(rel), e.kind);
    }
    let (to_dir, to_name) = dest.parent(rel, true)?.context("parents are created")?;
    nix::unistd::linkat(
        &from_dir,
        name_of(name),
        &to_dir,
        name_of(to_name),
        AtFlags::empty(),
    )
    .with_context(|| format!("cannot link {}", dest.show(rel)))
}

/// Carry out `work` in `dest` with `workers` parallel downloads.
pub fn apply(
    mirror: &Mirror,
    dest: &Path,
    work: &Work,
    workers: usize,
    progress: &(dyn Fn(crate::engine::Sent) + Sync),
) -> Result<Done> {
    let root = Dest::open(dest)?;
    let holding_path = dest.join(HOLDING_DIR);
    // Whatever sits at the holding name (a leftover, or a planted symlink) is removed without
    // following it (std's remove_dir_all never follows links).
    match kind_at(&root.fd, HOLDING_DIR.as_bytes())? {
        Some(SFlag::S_IFDIR) => fs_err::remove_dir_all(&holding_path)?,
        Some(_) => unlinkat(&root.fd, HOLDING_DIR, UnlinkatFlags::NoRemoveDir)?,
        None => {}
    }
    mkdirat(&root.fd, HOLDING_DIR, Mode::from_bits_truncate(0o700))
        .with_context(|| format!("cannot create {}", holding_path.display()))?;
    let holding = openat(&root.fd, HOLDING_DIR, DIR_FLAGS, Mode::empty())
        .with_context(|| format!("cannot open {}", holding_path.display()))?;
    let result = apply_inner(mirror, &root, &holding, work, workers, progress);
    drop(holding);
    let _ = std::fs::remove_dir_all(&holding_path);
    result
}

fn apply_inner(
    mirror: &Mirror,
    dest: &Dest,
    holding: &OwnedFd,
    work: &Work,
    workers: usize,
    progress: &(dyn Fn(crate::engine::Sent) + Sync),
) -> Result<Done> {
    let keep = work.keep_special_modes;
    let mut done = Done::default();
    // Deletions first, deepest first, so a directory that becomes a file can be replaced.
    let mut deletes = work.delete.clone();
    deletes.sort_by(|a, b| b.cmp(a));
    for p in &deletes {
        let Some((dir, name)) = dest.parent(p, false)? else {
            continue;
        };
        match kind_at(&dir, name)? {
            // A directory that still holds something (excluded files) stays.
            Some(SFlag::S_IFDIR)
                if unlinkat(&dir, name_of(name), UnlinkatFlags::RemoveDir).is_ok() =>
            {
                done.deleted.push(p.clone());
            }
            Some(SFlag::S_IFDIR) => {}
            Some(_) => {
                unlinkat(&dir, name_of(name), UnlinkatFlags::NoRemoveDir)
                    .with_context(|| format!("cannot delete {}", dest.show(p)))?;
                done.deleted.push(p.clone());
            }
            None => {}
        }
    }
    // Directories, parents first.
    let mut dirs: Vec<&(Vec<u8>, &SnapEntry)> =
        work.write.iter().filter(|(_, e)| e.kind == "dir").collect();
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, _) in &dirs {
        let (dir, name) = dest.parent(p, true)?.context("parents are created")?;
        match kind_at(&dir, name)? {
            Some(SFlag::S_IFDIR) => {}
            other => {
                if other.is_some() {
                    // A file or a symlink where the snapshot has a directory: the entry itself
                    // goes (never what a symlink points to).
                    unlinkat(&dir, name_of(name), UnlinkatFlags::NoRemoveDir)
                        .with_context(|| format!("cannot replace {}", dest.show(p)))?;
                }
                mkdirat(&dir, name_of(name), Mode::from_bits_truncate(0o700))
                    .with_context(|| format!("cannot create {}", dest.show(p)))?;
                let fd = openat(&dir, name_of(name), DIR_FLAGS, Mode::empty())
                    .map_err(|_| dest.through_link(p))?;
                set_mode(&fd, NEW_DIR_MODE)?;
            }
        }
        done.changed.push(p.clone());
    }
    // Hard links from the previous release; what cannot be linked (another filesystem, the
    // link limit, an entry that changed since the plan) is downloaded with the rest.
    let mut fallback: Vec<(Vec<u8>, &SnapEntry)> = Vec::new();
    if let Some(from) = &work.link_from {
        let src = Dest::open(from)?;
        for (p, e) in &work.link {
            if crate::interrupt::interrupted() {
                anyhow::bail!("interrupted");
            }
            if link_one(&src, dest, p, e).is_err() {
                fallback.push((p.clone(), *e));
            }
        }
    }
    // Files and symlinks, in parallel: download into the holding dir, verify, rename.
    let mut items: Vec<&(Vec<u8>, &SnapEntry)> =
        work.write.iter().filter(|(_, e)| e.kind != "dir").collect();
    items.extend(fallback.iter());
    let counter = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let files = AtomicU64::new(0);
    // Moves a finished holding entry into place and reports it (per file, once in place).
    let place = |tmp: &str, p: &Vec<u8>| -> Result<()> {
        let (dir, name) = dest.parent(p, true)?.context("parents are created")?;
        clear_for_file(dest, &dir, name, p)?;
        renameat(holding, tmp, &dir, name_of(name))
            .with_context(|| format!("cannot move {} into place", dest.show(p)))?;
        progress(crate::engine::Sent {
            bytes: bytes.load(Ordering::Relaxed),
            files: files.load(Ordering::Relaxed),
        });
        Ok(())
    };
    let (mut links, regular): (Vec<_>, Vec<_>) = items
        .iter()
        .copied()
        .partition(|(_, e)| e.kind == "symlink");
    let results = crate::parallel::parallel(&mut links, workers, |(p, e)| -> Result<()> {
        if crate::interrupt::interrupted() {
            anyhow::bail!("interrupted");
        }
        let tmp = format!("{}", counter.fetch_add(1, Ordering::Relaxed));
        let target = super::snapshot::SnapEntry::to_entry(e)?;
        let crate::plan::manifest::Kind::Symlink { target } = target.kind else {
            unreachable!("kind checked above")
        };
        symlinkat(OsStr::from_bytes(&target), holding, tmp.as_str())
            .context("cannot create a symlink in the holding directory")?;
        place(&tmp, p)
    });
    for r in results {
        r?;
    }
    // File contents: the mirror reads each pack once and hands over verified bytes.
    mirror.fetch_each(
        &regular,
        workers,
        |(_, e)| e,
        |_| -> Result<Holding> {
            let tmp = format!("{}", counter.fetch_add(1, Ordering::Relaxed));
            let fd = openat(
                holding,
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .context("cannot create a file in the holding directory")?;
            Ok(Holding {
                tmp,
                f: std::fs::File::from(fd),
            })
        },
        |(p, e), Holding { tmp, f }| -> Result<()> {
            f.set_permissions(std::fs::Permissions::from_mode(applied_mode(e, keep)))?;
            f.set_modified(mtime(e))
                .with_context(|| format!("cannot set the mtime of {}", dest.show(p)))?;
            drop(f);
            bytes.fetch_add(e.size.unwrap_or(0), Ordering::Relaxed);
            files.fetch_add(1, Ordering::Relaxed);
            place(&tmp, p)
        },
    )?;
    done.changed.extend(items.iter().map(|(p, _)| p.clone()));
    for (p, e) in &work.metadata {
        if e.kind == "symlink" {
            done.changed.push(p.clone());
            continue;
        }
        let (dir, name) = dest
            .parent(p, false)?
            .with_context(|| format!("{} vanished since it was planned", dest.show(p)))?;
        let f = open_existing(dest, &dir, name, p, e.kind == "dir")?;
        f.set_permissions(std::fs::Permissions::from_mode(applied_mode(e, keep)))?;
        if e.kind == "file" {
            f.set_modified(mtime(e))
                .with_context(|| format!("cannot set the mtime of {}", dest.show(p)))?;
        }
        done.changed.push(p.clone());
    }
    // Directory modes last, deepest first.
    for (p, e) in dirs.iter().rev() {
        let (dir, name) = dest
            .parent(p, false)?
            .with_context(|| format!("{} vanished during the restore", dest.show(p)))?;
        let f = open_existing(dest, &dir, name, p, true)?;
        f.set_permissions(std::fs::Permissions::from_mode(applied_mode(e, keep)))?;
    }
    done.changed.sort();
    done.deleted.sort();
    done.bytes = bytes.load(Ordering::Relaxed);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_modes_never_carry_special_bits_unless_asked() {
        let entry = |mode: u32| -> SnapEntry {
            serde_json::from_value(serde_json::json!({
                "path": "a", "kind": "file", "mode": mode, "mtime_s": 0, "mtime_ns": 0
            }))
            .unwrap()
        };
        assert_eq!(applied_mode(&entry(0o4755), false), 0o755);
        assert_eq!(applied_mode(&entry(0o2775), false), 0o775);
        assert_eq!(applied_mode(&entry(0o1777), false), 0o777);
        assert_eq!(applied_mode(&entry(0o100644), false), 0o644);
        assert_eq!(applied_mode(&entry(0o4755), true), 0o4755);
        assert_eq!(applied_mode(&entry(0o1777), true), 0o1777);
    }

    /// The race the plan cannot see: a symlink planted in DEST after the plan. Walking to a
    /// parent never follows it, whether it is the first component or a deeper one, and
    /// nothing is created at its target.
    #[test]
    fn parents_are_never_reached_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(dest.join("real/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("evil")).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("real/sub/evil")).unwrap();
        std::fs::write(dest.join("file"), b"x").unwrap();
        let d = Dest::open(&dest).unwrap();
        for rel in [
            &b"evil/planted"[..],
            b"evil/new/deeper",
            b"real/sub/evil/planted",
            b"file/planted",
        ] {
            for create in [true, false] {
                let err = d
                    .parent(rel, create)
                    .err()
                    .unwrap_or_else(|| panic!("{} was reached", String::from_utf8_lossy(rel)));
                assert!(
                    format!("{err:#}").contains("symlink or not a directory"),
                    "{err:#}"
                );
            }
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Real directories are walked, missing ones created only when asked.
        assert!(d.parent(b"real/sub/x", false).unwrap().is_some());
        assert!(d.parent(b"new/x", false).unwrap().is_none());
        assert!(d.parent(b"new/deeper/x", true).unwrap().is_some());
        assert!(dest.join("new/deeper").is_dir());
    }

    /// Writing a file whose final name is a symlink replaces the link, never its target.
    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir_all(dest.join(HOLDING_DIR)).unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dest.join("name")).unwrap();
        let d = Dest::open(&dest).unwrap();
        let holding = openat(&d.fd, HOLDING_DIR, DIR_FLAGS, Mode::empty()).unwrap();
        std::fs::write(dest.join(HOLDING_DIR).join("0"), b"new").unwrap();
        let (dir, name) = d.parent(b"name", true).unwrap().unwrap();
        clear_for_file(&d, &dir, name, b"name").unwrap();
        renameat(&holding, "0", &dir, name_of(name)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(dest.join("name")).unwrap(), b"new");
        assert!(!dest.join("name").is_symlink());
    }
}
