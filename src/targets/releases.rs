//! The releases layout of `pull` (`--layout releases`): one directory per generation and a
//! `current` symlink that is switched atomically, so a service reading DEST/current never sees
//! two generations mixed, and a rollback is one rename.
//!
//! ```text
//! DEST/
//!   current -> releases/0000000007        relative symlink, replaced only by rename(2)
//!   releases/
//!     0000000006/  0000000007/            complete, verified releases (10-digit names)
//!     state.json                          digests of installed releases, the rollback hold
//!     .build-0000000008-PID-0/            a release being built (never a release name)
//!     .trash-0000000005-PID-0/            a release being removed
//!   .current.PID.tmp                      the new symlink, for an instant before its rename
//! ```
//!
//! Invariants:
//! - A directory named `releases/<10 digits>` exists only after its whole content was compared
//!   with the snapshot of that generation (a fresh hash of every file, no cache): a release
//!   is built under a `.build-GEN-PID-N` name, verified by the engine
//!   ([`Target::scan_after_apply`]), and only in [`Target::commit`] renamed to its release
//!   name — with `RENAME_NOREPLACE`, or `RENAME_EXCHANGE` when that name exists (a release left
//!   by a killed pull, or a current release that was changed by hand), so the name never
//!   disappears and never names a partial tree.
//! - `current` is switched only after that: a symlink made at `.current.PID.tmp` is renamed
//!   over it (`renameat` relative to DEST's descriptor), then DEST is fsynced. A killed pull
//!   leaves `current` at the old release; its `.build-`/`.trash-`/`.current.` leftovers carry
//!   the dead process's pid and are removed by the next pull or rollback.
//! - A release is built from the snapshot alone: unchanged files and symlinks are hard links to
//!   the current release's entries (`mirror::restore`, `linkat` without following links);
//!   added, modified and metadata-changed entries are downloaded fresh, so no shared inode is
//!   ever chmod'ed, touched or rewritten. A release that does not verify is removed (when the
//!   target is dropped) and never switched to.
//! - Paths only in the current release are DEST-only paths as in an in-place pull: without
//!   `--delete` the pull is refused; with it they are left out of the new release (the older
//!   release keeps them until it is pruned). Files at DEST's root (an in-place tree from
//!   before) are never touched.
//! - `state.json` (`offsync-releases/1`) is written atomically (`fsutil`): `releases` maps a
//!   release name to the manifest digest it verified with and when it was installed (the
//!   record is written before the release gets its name); `rolled_back_from` holds the
//!   generation a rollback left, and pulls of generations up to it do nothing until a newer
//!   one is published.

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ApplyOutcome, Target, TargetInfo};
use crate::mirror::Mirror;
use crate::mirror::restore::{self, NEW_DIR_MODE, Work};
use crate::mirror::snapshot::Snapshot;
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{self, Manifest};
use crate::source::Source;

/// The releases directory under DEST.
pub const RELEASES: &str = "releases";
/// The symlink services read through.
pub const CURRENT: &str = "current";
/// The state file in the releases directory.
pub const STATE: &str = "state.json";
const STATE_FORMAT: &str = "offsync-releases/1";

/// A release's directory name: the generation in 10 digits, like the snapshot names.
pub fn release_name(generation: u64) -> String {
    format!("{generation:010}")
}

/// The generation a release directory name stands for (exactly 10 digits).
pub fn parse_release_name(name: &str) -> Option<u64> {
    (name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// What `state.json` holds (see the module docs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub format: String,
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// The manifest digest the release verified with (`offsync manifest`'s digest of it).
    pub digest: String,
    /// When it was installed (RFC 3339).
    pub installed: String,
}

/// DEST in the releases layout.
#[derive(Debug, Clone)]
pub struct ReleaseDir {
    pub dest: PathBuf,
    releases: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, DIR_FLAGS, Mode::empty())
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The pid in a leftover's name `PREFIX-GEN-PID-N`, or in the temp file of an atomic write of
/// `state.json` (`.state.json.offsync-tmp-PID-N`) that a kill interrupted (`None`: not one of
/// ours).
fn leftover_pid(name: &str) -> Option<i32> {
    if !(name.starts_with(".build-")
        || name.starts_with(".trash-")
        || name.starts_with(".state.json.offsync-tmp-"))
    {
        return None;
    }
    name.rsplit('-').nth(1)?.parse().ok()
}

fn process_is_gone(pid: i32) -> bool {
    pid > 0
        && pid != std::process::id() as i32
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        )
}

/// Remove a tree this process owns, making its directories writable first when a read-only
/// one (a snapshot's 0555 directory) stops the removal. Symlinks are never followed (std's
/// `remove_dir_all` does not, and only real directories are chmod'ed). Only directories are
/// chmod'ed: they are never shared between releases, unlike files.
pub fn remove_tree(path: &Path) -> Result<()> {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    fn open_up(p: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

impl ReleaseDir {
    pub fn new(dest: &Path) -> ReleaseDir {
        ReleaseDir {
            dest: dest.to_path_buf(),
            releases: dest.join(RELEASES),
        }
    }

    pub fn release_path(&self, generation: u64) -> PathBuf {
        self.releases.join(release_name(generation))
    }

    /// `releases/GEN`, as `current` holds it and the output shows it.
    pub fn relative(generation: u64) -> String {
        format!("{RELEASES}/{}", release_name(generation))
    }

    fn state_path(&self) -> PathBuf {
        self.releases.join(STATE)
    }

    /// Whether DEST already uses this layout (its `current` is a symlink to `releases/GEN`):
    /// an in-place pull there would take `releases/` and `current` for DEST-only paths.
    pub fn in_use(dest: &Path) -> Option<u64> {
        let v = std::fs::read_link(dest.join(CURRENT)).ok()?;
        parse_current(v.to_str()?)
    }

    /// The generation `current` points at; `None` when there is no `current` yet. A `current`
    /// that is not a symlink to `releases/GEN` is an error naming the fix.
    pub fn current(&self) -> Result<Option<u64>> {
        let link = self.dest.join(CURRENT);
        match std::fs::symlink_metadata(&link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", link.display())),
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(crate::input_err!(
                    "{} exists and is not a symlink (an in-place tree with a `current` entry?); move it away or pull the releases layout into another directory",
                    link.display()
                ));
            }
            Ok(_) => {}
        }
        let v =
            std::fs::read_link(&link).with_context(|| format!("cannot read {}", link.display()))?;
        v.to_str().and_then(parse_current).map(Some).with_context(|| {
            format!(
                "{} points at {}, not at releases/GENERATION; remove it (the next pull makes it again) or point it at a release",
                link.display(),
                crate::sanitize::for_terminal(&v.to_string_lossy())
            )
        })
    }

    /// Complete releases, ascending (directories with a release name).
    pub fn releases(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.releases) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.releases.display()));
            }
        };
        for e in rd {
            let e = e?;
            if let Some(g) = e.file_name().to_str().and_then(parse_release_name)
                && e.file_type()?.is_dir()
            {
                out.push(g);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Create DEST and `releases/` (mode [`NEW_DIR_MODE`], like an in-place pull's DEST) and
    /// remove what killed pulls left behind.
    pub fn prepare(&self) -> Result<()> {
        crate::fsutil::create_dir_all_mode(&self.dest, NEW_DIR_MODE)?;
        match std::fs::symlink_metadata(&self.releases) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(crate::input_err!(
                    "{} exists and is not a directory; move it away or pull the releases layout into another directory",
                    self.releases.display()
                ));
            }
            Err(_) => crate::fsutil::create_dir_all_mode(&self.releases, NEW_DIR_MODE)?,
        }
        self.remove_leftovers();
        Ok(())
    }

    /// Remove `.build-`/`.trash-` directories, `state.json` temp files and `.current.PID.tmp`
    /// links of processes that no longer exist (a live pull's are never touched).
    fn remove_leftovers(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.releases) {
            for e in rd.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(leftover_pid)
                    && process_is_gone(pid)
                {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = remove_tree(&e.path());
                    } else {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.dest) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(".current.")?.strip_suffix(".tmp"))
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                if process_is_gone(pid) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Entries at DEST's root that are not part of the layout (an in-place tree from before).
    pub fn foreign_root_entries(&self) -> usize {
        std::fs::read_dir(&self.dest)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n != RELEASES
                            && n != CURRENT
                            && n != crate::plan::excludes::HOLDING_DIR
                            && !(n.starts_with(".current.") && n.ends_with(".tmp"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn load_state(&self) -> Result<State> {
        let path = self.state_path();
        match crate::fsutil::read_optional(&path)? {
            None => Ok(State {
                format: STATE_FORMAT.into(),
                ..State::default()
            }),
            Some(b) => serde_json::from_slice(&b).with_context(|| {
                format!(
                    "{} is not valid {STATE_FORMAT} JSON; fix it or remove it (it only holds digests for offline rollbacks and the rollback hold)",
                    path.display()
                )
            }),
        }
    }

    pub fn save_state(&self, state: &State) -> Result<()> {
        let mut s = state.clone();
        s.format = STATE_FORMAT.into();
        crate::fsutil::atomic_write(
            &self.state_path(),
            serde_json::to_string_pretty(&s)?.as_bytes(),
            crate::fsutil::FILE_MODE,
        )
    }

    /// Point `current` at `releases/GEN` atomically: a new symlink at `.current.PID.tmp` is
    /// renamed over `current` (relative to DEST's descriptor), then DEST is fsynced.
    pub fn switch(&self, generation: u64) -> Result<()> {
        let dir = open_dir(&self.dest)?;
        let tmp = format!(".current.{}.tmp", std::process::id());
        match unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", self.dest.join(&tmp).display()));
            }
        }
        symlinkat(Self::relative(generation).as_str(), &dir, tmp.as_str())
            .with_context(|| format!("cannot create {}", self.dest.join(&tmp).display()))?;
        if let Err(e) = renameat(&dir, tmp.as_str(), &dir, CURRENT) {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e).with_context(|| {
                format!(
                    "cannot switch {} to {}",
                    self.dest.join(CURRENT).display(),
                    Self::relative(generation)
                )
            });
        }
        nix::unistd::fsync(&dir).with_context(|| format!("cannot sync {}", self.dest.display()))?;
        Ok(())
    }

    /// Give the verified tree at `built` (in `releases/`) the name of release `generation`:
    /// renamed there, or exchanged with what has that name (which then sits at `built` and is
    /// removed). The release name never names anything but a complete tree.
    fn install(&self, built: &Path, generation: u64) -> Result<()> {
        let dir = open_dir(&self.releases)?;
        let from = built
            .file_name()
            .context("a build directory has a name")?
            .to_owned();
        let name = release_name(generation);
        // rustix makes the syscall itself, so this is the same on glibc and on musl (the
        // static release builds), whose libc wrappers nix does not offer.
        use rustix::fs::{RenameFlags, renameat_with};
        let flags = if self.release_path(generation).exists() {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        renameat_with(&dir, from.as_os_str(), &dir, name.as_str(), flags).with_context(|| {
            format!(
                "cannot rename {} to {}",
                built.display(),
                self.release_path(generation).display()
            )
        })?;
        nix::unistd::fsync(&dir)
            .with_context(|| format!("cannot sync {}", self.releases.display()))?;
        if flags == RenameFlags::EXCHANGE {
            remove_tree(built)?;
        }
        Ok(())
    }

    /// Remove release `generation`: renamed to a `.trash-` name first (so it leaves the list
    /// at once, and a killed removal is finished by the next pull), then deleted.
    pub fn remove_release(&self, generation: u64) -> Result<()> {
        let trash = self.releases.join(format!(
            ".trash-{}-{}-0",
            release_name(generation),
            std::process::id()
        ));
        std::fs::rename(self.release_path(generation), &trash).with_context(|| {
            format!("cannot remove {}", self.release_path(generation).display())
        })?;
        remove_tree(&trash)
    }

    /// Releases to prune so that `keep` remain: `current` always stays, then the newest of
    /// the others (so the one a rollback goes to stays whenever `keep` ≥ 2); the rest, oldest
    /// first.
    pub fn prune_plan(&self, keep: u64, current: u64) -> Result<Vec<u64>> {
        let others: Vec<u64> = self
            .releases()?
            .into_iter()
            .filter(|&g| g != current)
            .collect();
        let n = others
            .len()
            .saturating_sub(usize::try_from(keep.saturating_sub(1)).unwrap_or(usize::MAX));
        Ok(others[..n].to_vec())
    }
}

/// `releases/GEN` → GEN.
fn parse_current(v: &str) -> Option<u64> {
    parse_release_name(v.strip_prefix(RELEASES)?.strip_prefix('/')?)
}

/// The new release of a `pull --layout releases` as a [`Target`]: scanned as the current
/// release (what the plan compares the snapshot with), applied by building the new release
/// off to the side, verified there, and committed by naming it and switching `current`.
pub struct ReleaseTarget<'m> {
    info: TargetInfo,
    layout: ReleaseDir,
    generation: u64,
    current: Option<u64>,
    /// Hash cache of the current release (plans of an unchanged release read no content).
    cache: PathBuf,
    mirror: &'m Mirror,
    snapshot: &'m Snapshot,
    /// The release being built; removed on drop unless it was installed.
    building: Option<PathBuf>,
    /// The digest the built release verified with.
    verified_digest: Option<String>,
}

impl<'m> ReleaseTarget<'m> {
    /// Release `source`'s generation into `layout`, next to `current`. `home` is
    /// `$OFFSYNC_HOME` (hash caches).
    pub fn new(
        layout: &ReleaseDir,
        current: Option<u64>,
        home: &Path,
        source: &Source<'m>,
    ) -> Result<ReleaseTarget<'m>> {
        let Source::Snapshot {
            mirror, snapshot, ..
        } = source
        else {
            anyhow::bail!("a release is filled from a mirror snapshot, not from a tree");
        };
        let generation = snapshot.generation;
        let shown = layout.release_path(generation).display().to_string();
        Ok(ReleaseTarget {
            info: TargetInfo {
                name: shown.clone(),
                kind: crate::plan::TargetKind::Local,
                address: shown,
                host: crate::keys::hostname(),
                delete_allowed: true,
                exclude: Vec::new(),
            },
            layout: layout.clone(),
            generation,
            current,
            cache: manifest::cache_path(home, &layout.release_path(current.unwrap_or(generation))),
            mirror,
            snapshot,
            building: None,
            verified_digest: None,
        })
    }
}

impl Target for ReleaseTarget<'_> {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(
        &mut self,
        _source: &Manifest,
        excludes: &Excludes,
        _check: crate::plan::CheckMode,
    ) -> Result<TargetView> {
        let Some(c) = self.current else {
            return Ok(TargetView::Listing(Default::default()));
        };
        let (m, _) = manifest::build(&self.layout.release_path(c), excludes, Some(&self.cache))?;
        Ok(TargetView::Listing(m.entries))
    }

    /// The plan may show no work while the release still has to be made (a new generation
    /// with the current release's content).
    fn has_pending(&self) -> bool {
        self.current != Some(self.generation)
    }

    fn apply(
        &mut self,
        _source: &Manifest,
        _excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(crate::engine::Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        let build = self.layout.releases.join(format!(
            ".build-{}-{}-0",
            release_name(self.generation),
            std::process::id()
        ));
        if build.exists() {
            remove_tree(&build)?;
        }
        std::fs::DirBuilder::new()
            .create(&build)
            .with_context(|| format!("cannot create {}", build.display()))?;
        std::fs::set_permissions(&build, std::fs::Permissions::from_mode(NEW_DIR_MODE))?;
        self.building = Some(build.clone());
        let c = &plan.changes;
        // Everything that differs from the current release is downloaded (metadata changes
        // too: the current release's inode must keep its mode and mtime); every directory is
        // made new; the rest is linked.
        let fresh: std::collections::BTreeSet<Vec<u8>> = c
            .added
            .iter()
            .chain(&c.modified)
            .chain(&c.metadata)
            .map(|pe| pe.raw_path())
            .collect();
        let mut work = Work {
            link_from: self.current.map(|g| self.layout.release_path(g)),
            ..Work::default()
        };
        for e in &self.snapshot.entries {
            let p = e.raw_path()?;
            if e.kind == "dir" || fresh.contains(&p) || work.link_from.is_none() {
                work.write.push((p, e));
            } else {
                work.link.push((p, e));
            }
        }
        let done = restore::apply(self.mirror, &build, &work, super::local::WORKERS, progress)?;
        let mut changed: Vec<Vec<u8>> = fresh.into_iter().collect();
        changed.sort();
        let mut deleted: Vec<Vec<u8>> = if delete {
            c.missing.iter().map(|pe| pe.raw_path()).collect()
        } else {
            Vec::new()
        };
        deleted.sort();
        Ok(ApplyOutcome {
            changed,
            deleted,
            bytes: done.bytes,
            partial: false,
        })
    }

    /// The built release, every file hashed afresh (no cache: a hard link's content is
    /// proven, not assumed).
    fn scan_after_apply(
        &mut self,
        _source: &Manifest,
        excludes: &Excludes,
        _transferred: &[Vec<u8>],
    ) -> Result<TargetView> {
        let build = self.building.clone().context("the release was not built")?;
        let (m, _) = manifest::build(&build, excludes, None)?;
        self.verified_digest = Some(m.digest_hex());
        Ok(TargetView::Listing(m.entries))
    }

    fn commit(&mut self) -> Result<()> {
        let (Some(build), Some(digest)) = (self.building.clone(), self.verified_digest.clone())
        else {
            anyhow::bail!("the release was not verified; not switching to it");
        };
        let mut state = self.layout.load_state()?;
        state.releases.insert(
            release_name(self.generation),
            ReleaseRecord {
                digest,
                installed: crate::oplog::now(),
            },
        );
        if state.rolled_back_from.is_some_and(|h| h < self.generation) {
            state.rolled_back_from = None;
        }
        self.layout.save_state(&state)?;
        self.layout.install(&build, self.generation)?;
        self.building = None;
        self.layout.switch(self.generation)
    }
}

impl Drop for ReleaseTarget<'_> {
    /// A release that was not installed (failed, refused by verification, interrupted) goes.
    fn drop(&mut self) {
        if let Some(b) = self.building.take() {
            let _ = remove_tree(&b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_are_ten_digits() {
        assert_eq!(release_name(7), "0000000007");
        assert_eq!(parse_release_name("0000000007"), Some(7));
        for bad in [
            "7",
            "000000007",
            "00000000070",
            "000000000x",
            "state.json",
            "",
        ] {
            assert_eq!(parse_release_name(bad), None, "{bad}");
        }
        assert_eq!(parse_current("releases/0000000012"), Some(12));
        for bad in [
            "/abs/releases/0000000012",
            "releases/0000000012/",
            "releases/../0000000012",
            "0000000012",
        ] {
            assert_eq!(parse_current(bad), None, "{bad}");
        }
        assert_eq!(leftover_pid(".build-0000000003-4242-0"), Some(4242));
        assert_eq!(leftover_pid(".trash-0000000003-17-0"), Some(17));
        assert_eq!(leftover_pid("0000000003"), None);
        assert_eq!(leftover_pid(".state.json.offsync-tmp-4848-0"), Some(4848));
    }

    fn layout_with(gens: &[u64]) -> (tempfile::TempDir, ReleaseDir) {
        let t = tempfile::tempdir().unwrap();
        let l = ReleaseDir::new(&t.path().join("dest"));
        l.prepare().unwrap();
        for &g in gens {
            std::fs::create_dir(l.release_path(g)).unwrap();
        }
        (t, l)
    }

    #[test]
    fn pruning_keeps_current_and_the_newest_others() {
        let (_t, l) = layout_with(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(l.prune_plan(5, 6).unwrap(), vec![1]);
        assert_eq!(l.prune_plan(2, 6).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(l.prune_plan(1, 6).unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(l.prune_plan(10, 6).unwrap(), Vec::<u64>::new());
        // After a rollback current is not the newest: it still stays.
        assert_eq!(l.prune_plan(1, 3).unwrap(), vec![1, 2, 4, 5, 6]);
        assert_eq!(l.prune_plan(2, 3).unwrap(), vec![1, 2, 4, 5]);
    }

    #[test]
    fn switching_replaces_current_atomically_and_leaves_no_temporary_link() {
        let (_t, l) = layout_with(&[1, 2]);
        assert_eq!(l.current().unwrap(), None);
        l.switch(1).unwrap();
        assert_eq!(l.current().unwrap(), Some(1));
        l.switch(2).unwrap();
        assert_eq!(l.current().unwrap(), Some(2));
        assert_eq!(
            std::fs::read_link(l.dest.join(CURRENT)).unwrap(),
            PathBuf::from("releases/0000000002")
        );
        assert_eq!(l.foreign_root_entries(), 0, "no .current.*.tmp left");
        assert_eq!(ReleaseDir::in_use(&l.dest), Some(2));
    }

    #[test]
    fn a_current_that_is_not_a_release_link_is_named() {
        let (_t, l) = layout_with(&[]);
        std::os::unix::fs::symlink("/etc", l.dest.join(CURRENT)).unwrap();
        let e = format!("{:#}", l.current().unwrap_err());
        assert!(e.contains("not at releases/GENERATION"), "{e}");
        std::fs::remove_file(l.dest.join(CURRENT)).unwrap();
        std::fs::create_dir(l.dest.join(CURRENT)).unwrap();
        let e = format!("{:#}", l.current().unwrap_err());
        assert!(e.contains("not a symlink"), "{e}");
    }

    #[test]
    fn installing_over_an_existing_release_exchanges_it() {
        let (_t, l) = layout_with(&[3]);
        std::fs::write(l.release_path(3).join("old"), b"old").unwrap();
        let build = l.releases.join(".build-0000000003-1-0");
        std::fs::create_dir(&build).unwrap();
        std::fs::write(build.join("new"), b"new").unwrap();
        l.install(&build, 3).unwrap();
        assert!(l.release_path(3).join("new").exists());
        assert!(!l.release_path(3).join("old").exists());
        assert!(!build.exists());
    }

    #[test]
    fn read_only_trees_are_removed_and_leftovers_of_dead_processes_go() {
        let (_t, l) = layout_with(&[4]);
        let ro = l.release_path(4).join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("f"), b"x").unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        l.remove_release(4).unwrap();
        assert_eq!(l.releases().unwrap(), Vec::<u64>::new());
        let dead = l.releases.join(".build-0000000005-99999999-0");
        let live = l
            .releases
            .join(format!(".build-0000000005-{}-0", std::process::id()));
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&live).unwrap();
        std::os::unix::fs::symlink("x", l.dest.join(".current.99999999.tmp")).unwrap();
        // A kill during the atomic write of state.json leaves its temp file.
        let torn = l.releases.join(".state.json.offsync-tmp-99999999-0");
        std::fs::write(&torn, b"{").unwrap();
        l.prepare().unwrap();
        assert!(!dead.exists() && live.exists());
        assert!(!l.dest.join(".current.99999999.tmp").is_symlink());
        assert!(!torn.exists());
    }
}
