//! Writing snapshot entries into a local directory (`mirror restore`, `pull`).
//!
//! Invariants: file contents are downloaded into a holding directory inside DEST
//! (`.~tmp~`, excluded from every plan), decrypted, hashed and compared with the snapshot,
//! given their mode and mtime, and only then renamed into place; on any failure the holding
//! directory is removed, so no partially written file ever sits at a final path. Directory
//! modes are applied last, deepest first, so a read-only directory never blocks its
//! children.

use anyhow::{Context as _, Result};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::Mirror;
use super::snapshot::SnapEntry;
use crate::rsync::HOLDING_DIR;

/// What to do in DEST.
#[derive(Default)]
pub struct Work<'a> {
    /// Entries whose content (or type) must be written.
    pub write: Vec<(Vec<u8>, &'a SnapEntry)>,
    /// Entries that only need mode/mtime.
    pub metadata: Vec<(Vec<u8>, &'a SnapEntry)>,
    /// Paths to remove.
    pub delete: Vec<Vec<u8>>,
}

/// What was done.
#[derive(Debug, Default)]
pub struct Done {
    pub changed: Vec<Vec<u8>>,
    pub deleted: Vec<Vec<u8>>,
    pub bytes: u64,
}

fn rel(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
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

/// The mode a restored entry gets: the snapshot's, without setuid/setgid bits (offsync never
/// creates such files, whatever an older snapshot holds). Always set explicitly, so the
/// process umask never changes what a restore produces.
fn applied_mode(e: &SnapEntry) -> u32 {
    e.mode & 0o7777 & !crate::plan::manifest::SETID_BITS
}

fn set_file_meta(path: &Path, e: &SnapEntry) -> Result<()> {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(applied_mode(e)))?;
    let f = fs_err::File::open(path)?;
    f.file()
        .set_modified(mtime(e))
        .with_context(|| format!("cannot set the mtime of {}", path.display()))
}

/// Remove whatever is at `path` unless it is a directory we keep (returns false then).
fn clear_for(path: &Path, want_dir: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() && want_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir(path).with_context(|| {
            format!(
                "{} is a non-empty directory on this side but not in the snapshot; move it away first",
                path.display()
            )
        }),
        Ok(_) if want_dir => Ok(fs_err::remove_file(path)?),
        Ok(_) => Ok(()),
    }
}

/// Carry out `work` in `dest` with `workers` parallel downloads.
pub fn apply(
    mirror: &Mirror,
    dest: &Path,
    work: &Work,
    workers: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Done> {
    let holding = dest.join(HOLDING_DIR);
    if holding.exists() {
        fs_err::remove_dir_all(&holding)?;
    }
    fs_err::create_dir_all(&holding)?;
    crate::fsutil::ensure_private_dir(&holding)?;
    let result = apply_inner(mirror, dest, &holding, work, workers, progress);
    let _ = std::fs::remove_dir_all(&holding);
    result
}

fn apply_inner(
    mirror: &Mirror,
    dest: &Path,
    holding: &Path,
    work: &Work,
    workers: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Done> {
    let mut done = Done::default();
    // Deletions first, deepest first, so a directory that becomes a file can be replaced.
    let mut deletes = work.delete.clone();
    deletes.sort_by(|a, b| b.cmp(a));
    for p in &deletes {
        let full = dest.join(rel(p));
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                if std::fs::remove_dir(&full).is_ok() {
                    done.deleted.push(p.clone());
                }
            }
            Ok(_) => {
                fs_err::remove_file(&full)?;
                done.deleted.push(p.clone());
            }
            Err(_) => {}
        }
    }
    // Directories, parents first.
    let mut dirs: Vec<&(Vec<u8>, &SnapEntry)> =
        work.write.iter().filter(|(_, e)| e.kind == "dir").collect();
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, _) in &dirs {
        let full = dest.join(rel(p));
        clear_for(&full, true)?;
        crate::fsutil::create_dir_all_mode(&full, NEW_DIR_MODE)?;
        done.changed.push(p.clone());
    }
    // Files and symlinks, in parallel: download into the holding dir, verify, rename.
    let mut items: Vec<&(Vec<u8>, &SnapEntry)> =
        work.write.iter().filter(|(_, e)| e.kind != "dir").collect();
    let counter = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let results = crate::engine::parallel(&mut items, workers, |(p, e)| -> Result<()> {
        if crate::interrupt::interrupted() {
            anyhow::bail!("interrupted");
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let tmp = holding.join(format!("{n}"));
        let full = dest.join(rel(p));
        if let Some(parent) = full.parent() {
            crate::fsutil::create_dir_all_mode(parent, NEW_DIR_MODE)?;
        }
        if e.kind == "symlink" {
            let target = super::snapshot::SnapEntry::to_entry(e)?;
            let crate::plan::manifest::Kind::Symlink { target } = target.kind else {
                unreachable!("kind checked above")
            };
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &tmp)?;
        } else {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            mirror.fetch_into(e, &mut f)?;
            drop(f);
            set_file_meta(&tmp, e)?;
            bytes.fetch_add(e.size.unwrap_or(0), Ordering::Relaxed);
        }
        clear_for(&full, false)?;
        fs_err::rename(&tmp, &full)?;
        progress(counter.load(Ordering::Relaxed));
        Ok(())
    });
    for r in results {
        r?;
    }
    done.changed.extend(items.iter().map(|(p, _)| p.clone()));
    for (p, e) in &work.metadata {
        let full = dest.join(rel(p));
        if e.kind == "file" {
            set_file_meta(&full, e)?;
        } else if e.kind == "dir" {
            fs_err::set_permissions(&full, std::fs::Permissions::from_mode(applied_mode(e)))?;
        }
        done.changed.push(p.clone());
    }
    // Directory modes last, deepest first.
    for (p, e) in dirs.iter().rev() {
        let full: PathBuf = dest.join(rel(p));
        fs_err::set_permissions(&full, std::fs::Permissions::from_mode(applied_mode(e)))?;
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
    fn restored_modes_never_carry_setuid_or_setgid() {
        let entry = |mode: u32| -> SnapEntry {
            serde_json::from_value(serde_json::json!({
                "path": "a", "kind": "file", "mode": mode, "mtime_s": 0, "mtime_ns": 0
            }))
            .unwrap()
        };
        assert_eq!(applied_mode(&entry(0o4755)), 0o755);
        assert_eq!(applied_mode(&entry(0o2775)), 0o775);
        assert_eq!(applied_mode(&entry(0o1777)), 0o1777);
        assert_eq!(applied_mode(&entry(0o100644)), 0o644);
    }
}
