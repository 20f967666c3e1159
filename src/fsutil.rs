//! Crash-safe writes of state files and private directories.
//!
//! Invariant: a state file (config, authorized_keys, known_hosts, keys, the per-apply path lists
//! under `log/`) is either its old bytes or its new bytes, never a mix (`operations.log` is
//! append-only instead: see `oplog`): content goes to a temp file in the same directory
//! (created exclusively, mode set before any byte is written), is fsynced, renamed over the
//! target, and the directory is fsynced. Ownership of an existing file is kept when we can
//! (root editing another user's authorized_keys), and a symlinked path is written through to
//! the file it points at, so a dotfiles-managed `authorized_keys` link survives.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for private state directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode for private state files.
pub const FILE_MODE: u32 = 0o600;

/// Write `bytes` to `path` atomically with `mode` (see module docs).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    atomic_write_with(path, mode, |f| Ok(f.write_all(bytes)?))
}

/// [`atomic_write`] of what `write` writes to the (temporary) file, for content too large to
/// build in memory first (a plan, the hash cache). `write` should buffer its small writes.
pub fn atomic_write_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    write_atomically(path, mode, true, write)
}

/// [`atomic_write`] without the fsyncs: readers still see the old or the new content, never a
/// mix, but a crash may lose the new one. Only for files that are caches (`last-plan.json`,
/// checked by its digest when read) or scratch (rsync's file lists and dry-run markers in a
/// private [`ScratchDir`]), where an fsync costs time (tens to hundreds of milliseconds on a
/// busy disk) and buys nothing.
pub fn write_volatile(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomically(path, mode, false, |f| Ok(f.write_all(bytes)?))
}

/// [`write_volatile`] of what `write` writes (see [`atomic_write_with`]).
pub fn write_volatile_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    write_atomically(path, mode, false, write)
}

fn write_atomically(
    path: &Path,
    mode: u32,
    durable: bool,
    write: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    let path = resolve_symlink(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let existing = std::fs::metadata(&path).ok();
    let mut attempt = 0u32;
    let (tmp_path, mut file) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".offsync-tmp-{}-{attempt}", std::process::id()));
        let tmp_path = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp_path)
        {
            Ok(f) => break (tmp_path, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create a temporary file in {}", dir.display())
                });
            }
        }
    };
    let result = (|| -> Result<()> {
        // The umask may have narrowed `mode`; make it exact.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(meta) = &existing {
            // Keep the owner of a file we replace (root editing a user's authorized_keys). Only
            // root can change owners; for everybody else the file is already theirs.
            if meta.uid() != current_uid_of(&file)? {
                let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
            }
        }
        write(&mut file)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp_path, &path)?;
        if durable {
            sync_dir(&dir);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn current_uid_of(file: &File) -> Result<u32> {
    Ok(file.metadata()?.uid())
}

/// Follow a symlink at `path` (if any) so that we replace the file, not the link.
fn resolve_symlink(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("{} is a dangling symlink", path.display())),
        _ => Ok(path.to_path_buf()),
    }
}

/// fsync a directory so a rename in it is durable. Best effort: some filesystems refuse.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Create `dir` (and parents) with mode 0700 if missing; tighten an existing one that is group-
/// or world-accessible. Returns whether it was created.
pub fn ensure_private_dir(dir: &Path) -> Result<bool> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                    .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
            }
            Ok(false)
        }
        Ok(_) => anyhow::bail!("{} exists and is not a directory", dir.display()),
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
            Ok(true)
        }
    }
}

/// Create `dir` and any missing parents with exactly `mode` (set explicitly, so the process
/// umask — offsync runs with 077 — does not narrow it). Existing directories are left alone.
pub fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_all_mode(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create directory {}", dir.display())),
    }
}

/// Read a file that may not exist yet: `Ok(None)` when missing.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        atomic_write(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn atomic_write_goes_through_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::fs::write(&real, b"a").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        atomic_write(&link, b"b", 0o600).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"b");
    }

    #[test]
    fn stale_scratch_of_dead_processes_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above the kernel's pid_max limit of 2^22).
        let dead = dir.path().join("apply-99999999-0");
        let live = dir.path().join(format!("apply-{}-7", std::process::id()));
        let parent_pid = dir.path().join("cm-1-0");
        let other = dir.path().join("not-a-scratch");
        for d in [&dead, &live, &parent_pid, &other] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale_scratch(dir.path());
        assert!(!dead.exists());
        assert!(live.exists() && parent_pid.exists() && other.exists());
    }

    #[test]
    fn private_dir_is_created_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        assert!(ensure_private_dir(&p).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!ensure_private_dir(&p).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

/// A private scratch directory that is removed on drop. Its name carries the creating
/// process's id, so a directory left behind by a killed offsync is recognised and removed by
/// the next one that uses the same parent (see [`remove_stale_scratch`]).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Create a fresh, empty, 0700 directory under `parent` (created if missing).
    pub fn new(parent: &Path, prefix: &str) -> Result<ScratchDir> {
        ensure_private_dir(parent)?;
        static CLEANED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        {
            let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
            if !cleaned.iter().any(|p| p == parent) {
                remove_stale_scratch(parent);
                cleaned.push(parent.to_path_buf());
            }
        }
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Remove scratch directories (`PREFIX-PID-N`) in `parent` whose process no longer exists:
/// what a killed run left behind. A directory of a live process is never touched.
pub fn remove_stale_scratch(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit('-').nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 || pid == std::process::id() as i32 {
            continue;
        }
        let dead = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if dead && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Create `dir` with mode 0700 if missing (parents too); leave an existing directory's mode
/// alone (it is the operator's, e.g. a shared web root). Returns whether it was created.
pub fn ensure_private_dir_keep(dir: &Path) -> Result<bool> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => anyhow::bail!("{} exists and is not a directory", dir.display()),
        Err(_) => ensure_private_dir(dir),
    }
}
