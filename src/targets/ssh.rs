//! SSH targets: rsync through the forced `rrsync -wo DIR`, over one connection per target.
//!
//! Invariants: the first operation opens an ssh ControlMaster; every rsync (plan dry run,
//! transfer, verification) rides on it, so plan + apply + verify costs one SSH connection and
//! one authentication. The destination is always the relative `user@host:`. A failure is
//! explained from rsync's exit code and rrsync's `error:` text (see `rsync::Diagnosis`).
//!
//! Confinement is proven on every connection before anything is listed, written or deleted:
//! a read through the new connection must be refused by rrsync (a key line that lost its
//! forced command would let it through), and every dry run carries the target's marker (see
//! `marker`), so a forced command that now allows another directory is refused too.
//!
//! Deletions: only the planned target-only paths, topmost first (a directory goes with its
//! planned content), bounded by rsync's `--max-delete`; what was really deleted is read from
//! rsync's own `*deleting` lines, also when a transfer fails part-way.

use anyhow::{Context as _, Result};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ApplyOutcome, PartialApply, Target, TargetInfo};
use crate::config::TargetConfig;
use crate::context::Context;
use crate::engine::Sent;
use crate::error::{ErrorKind, TargetError};
use crate::fsutil::{self, ScratchDir};
use crate::itemize::{self, ItemChange, ItemKind};
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::diff::{Change, ChangeKind};
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;
use crate::plan::{CheckMode, EntryKind};
use crate::process::{Background, Cmd};
use crate::releases::{self, Layout, Records};
use crate::rsync::{self, Diagnosis};
use crate::ssh::{self, Login, SshFailure, SshSettings};
use crate::{marker, sanitize};

/// How long to wait for rrsync's single-run lock, held by the server side of a run that was
/// just killed (its connection is going away, but sshd may not have noticed yet).
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// How long the confinement probe runs alone before the dry run beside it starts (see
/// `SshTarget::dry_run`).
const PROBE_HEAD_START: Duration = Duration::from_millis(60);

pub struct SshTarget {
    info: TargetInfo,
    login: Login,
    port: Option<u16>,
    settings: SshSettings,
    home: PathBuf,
    scratch_root: PathBuf,
    master: Option<Background>,
    socket_dir: Option<ScratchDir>,
    /// The marker id recorded for this target (`None`: not written yet).
    marker: Option<String>,
    /// `apply --bwlimit RATE`: rsync's rate limit for the runs that send content.
    bwlimit: Option<String>,
    /// The id a dry run used while no marker is recorded; the first apply writes it.
    pending_marker: String,
    /// How plans compare content (`check:`, `--check`).
    check: CheckMode,
    /// The quick-check fingerprint of the last scan.
    state: Option<String>,
    /// An apply to this target completed before (see `marker::was_applied`).
    applied: bool,
    /// Confinement was proven on the open connection (see `judge_probe`).
    proven: bool,
    /// Why `prepare` could not connect, for the first operation to report.
    early_error: Option<anyhow::Error>,
    /// The `releases` layout's state (`None`: in-place).
    releases: Option<ReleaseState>,
}

/// What an SSH target in the `releases` layout knows (see `releases`).
struct ReleaseState {
    keep: u32,
    records: Records,
    /// What the last dry run into `current/` proved: `Some(Some(id))` current is the recorded
    /// release `id`; `Some(None)` current is not (yet) a release of offsync's; `None`: not
    /// scanned yet.
    current: Option<Option<String>>,
    /// `current/` holds the marker: it is a release written for this target (perhaps by
    /// another controller), so unchanged files can be hard-linked from it.
    current_is_ours: bool,
    /// The release the next apply uploads, and the plan digest it comes from.
    next: Option<(String, String)>,
    /// The release the last apply uploaded, waiting for its verification and switch.
    uploaded: Option<String>,
}

impl SshTarget {
    pub fn from_config(ctx: &Context, t: &TargetConfig, check: CheckMode) -> Result<SshTarget> {
        let name = t.name();
        let login_text = match (t.resolved_user(), t.resolved_host()) {
            (Some(u), Some(h)) if h.contains(':') => format!("{u}@[{h}]"),
            (Some(u), Some(h)) => format!("{u}@{h}"),
            (None, Some(h)) => h,
            _ => anyhow::bail!("target {name} in config.yaml has no user@host; fix `login:`"),
        };
        let login =
            Login::parse(&login_text).with_context(|| format!("target {name} in config.yaml"))?;
        Ok(SshTarget {
            info: TargetInfo {
                name,
                kind: crate::plan::TargetKind::Ssh,
                address: format!("{login}:{}", t.remote_path),
                host: login.host.clone(),
                delete_allowed: !t.no_delete,
                exclude: t.exclude.clone(),
            },
            login,
            port: t.port,
            settings: SshSettings::new(&ctx.key_path(), &ctx.known_hosts_path())
                .with_options(&t.ssh_options),
            home: ctx.home.clone(),
            scratch_root: ctx.home.join("tmp"),
            master: None,
            socket_dir: None,
            marker: marker::load(&ctx.home, &t.name())?,
            bwlimit: None,
            pending_marker: marker::new_id(),
            check,
            state: None,
            applied: marker::was_applied(&ctx.home, &t.name()),
            early_error: None,
            proven: false,
            releases: None,
        })
    }

    /// Use the `releases` layout (see `releases`), keeping `keep` releases.
    pub fn with_releases(mut self, keep: u32) -> Result<SshTarget> {
        self.releases = Some(ReleaseState {
            keep,
            records: Records::load(&self.home, &self.info.name)?,
            current: None,
            current_is_ours: false,
            next: None,
            uploaded: None,
        });
        Ok(self)
    }

    /// Open the ControlMaster if it is not open yet.
    fn connect(&mut self) -> Result<()> {
        if let Some(e) = self.early_error.take() {
            return Err(e);
        }
        if let Some(m) = &mut self.master {
            if m.exited().is_none() {
                return Ok(());
            }
            self.master = None;
        }
        let dir = ScratchDir::new(&socket_parent()?, "cm")?;
        let socket = dir.path().join("s");
        let stderr = dir.path().join("err");
        let mut bg = Cmd::new("ssh")
            .args(ssh::master_argv(
                &self.settings,
                &self.login,
                self.port,
                &socket,
            ))
            .spawn_background(&stderr)?;
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(self.settings.connect_timeout) + 20);
        loop {
            if socket.exists() {
                break;
            }
            if let Some(status) = bg.exited() {
                let err = bg.stderr();
                let text = String::from_utf8_lossy(&err);
                let failure = SshFailure::from_stderr(&text);
                let why = failure
                    .as_ref()
                    .map(|f| f.explain_for(&self.info.name))
                    .unwrap_or_else(|| {
                        format!(
                            "ssh exited with {status}: {}",
                            crate::sanitize::stderr_tail(&err, 2)
                        )
                    });
                return Err(TargetError::error(
                    failure.map_or(ErrorKind::Unreachable, |f| f.kind()),
                    format!("cannot connect to {}: {why}", self.login),
                ));
            }
            if Instant::now() > deadline {
                return Err(TargetError::error(
                    ErrorKind::Unreachable,
                    format!(
                        "cannot connect to {}: ssh did not finish connecting in time",
                        self.login
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.settings.control_path = Some(socket);
        self.master = Some(bg);
        self.socket_dir = Some(dir);
        self.proven = false;
        Ok(())
    }

    /// Connect, and prove confinement on the connection before anything is written.
    fn connect_proven(&mut self) -> Result<()> {
        self.connect()?;
        if self.proven {
            return Ok(());
        }
        let out = self.probe()?;
        self.judge_probe(out)
    }

    /// The confinement probe: a read through the connection, which rrsync must refuse. Cheap
    /// (one session, nothing listed).
    fn probe(&self) -> Result<crate::process::Output> {
        self.probe_with(true)
    }

    /// The probe; `wait_for_lock: false` returns at once when it meets rrsync's lock.
    fn probe_with(&self, wait_for_lock: bool) -> Result<crate::process::Output> {
        let scratch = ScratchDir::new(&self.scratch_root, "confined")?;
        let argv = rsync::probe_pull_argv(&self.rsh(), &self.login.rsync_dest(), scratch.path());
        if wait_for_lock {
            self.rsync(argv)
        } else {
            Ok(Cmd::new("rsync")
                .args(crate::ui::rsync_verbosity())
                .args(&argv)
                .output()?)
        }
    }

    /// Judge the probe's output: a refused read proves rrsync is in force (the connection is
    /// then closed on failure). A probe that only met rrsync's lock (held by a dry run that
    /// ran beside it) is run again, alone.
    fn judge_probe(&mut self, out: crate::process::Output) -> Result<()> {
        let out = if Diagnosis::from_output(out.code(), &out.stderr) == Diagnosis::Locked {
            self.probe()?
        } else {
            out
        };
        match self.check_confined(&out) {
            Ok(()) => {
                self.proven = true;
                Ok(())
            }
            Err(e) => {
                self.close();
                Err(e)
            }
        }
    }

    /// Whether the probe's output proves confinement: rrsync refused the read.
    fn check_confined(&self, out: &crate::process::Output) -> Result<()> {
        let d = Diagnosis::from_output(out.code(), &out.stderr);
        if d == Diagnosis::ReadRefused {
            return Ok(());
        }
        if let Diagnosis::Ssh(_) | Diagnosis::PathMissing | Diagnosis::RrsyncBroken(_) = d {
            return Err(d.error(""));
        }
        Err(TargetError::error(
            ErrorKind::NotConfined,
            format!(
                "the key is not confined on {}: a read was not refused ({}), so rrsync is not in force for offsync's key; nothing was listed or changed there; run `offsync link` on the target",
                self.login,
                d.explain()
            ),
        ))
    }

    /// `argv` of a run that sends content, with `--bwlimit` when one was set (dry runs, the
    /// marker and the switch move next to nothing and are not limited).
    fn limited(&self, mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
        if let Some(rate) = &self.bwlimit {
            argv.insert(0, format!("--bwlimit={rate}").into());
        }
        argv
    }

    /// Run rsync (over the open connection), waiting a little while rrsync's single-run lock
    /// is held by the server side of a killed run.
    fn rsync(&self, argv: Vec<std::ffi::OsString>) -> Result<crate::process::Output> {
        self.rsync_streaming(argv, &mut |_| {})
    }

    /// [`Self::rsync`], handing each stdout line to `on_line` as it arrives.
    fn rsync_streaming(
        &self,
        argv: Vec<std::ffi::OsString>,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> Result<crate::process::Output> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(100);
        loop {
            let out = Cmd::new("rsync")
                .args(crate::ui::rsync_verbosity())
                .args(&argv)
                .output_records(on_line)?;
            if out.success()
                || Diagnosis::from_output(out.code(), &out.stderr) != Diagnosis::Locked
                || Instant::now() + pause > deadline
            {
                return Ok(out);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The marker id dry runs send: the recorded one, or the one the first apply will write.
    fn marker_id(&self) -> &str {
        self.marker.as_deref().unwrap_or(&self.pending_marker)
    }

    /// Write the marker if none is recorded yet, then record it.
    fn ensure_marker(&mut self) -> Result<()> {
        if self.marker.is_some() {
            return Ok(());
        }
        self.connect_proven()?;
        let id = self.pending_marker.clone();
        marker::push(
            &self.home,
            &self.info.name,
            &id,
            &self.rsh(),
            &self.login.rsync_dest(),
            &|argv| self.rsync(argv),
        )?;
        self.marker = Some(id);
        Ok(())
    }

    /// Remember that the target holds content (see `marker::was_applied`).
    fn note_content(&mut self) -> Result<()> {
        if !self.applied {
            marker::note_applied(&self.home, &self.info.name)?;
            self.applied = true;
        }
        Ok(())
    }

    fn rsh(&self) -> String {
        self.settings.rsync_rsh(self.port)
    }

    /// One whole-tree dry run (`checksum`: `-c`) into the tree the plan compares with (the
    /// root, or `current/` for `releases` targets), its itemized lines parsed as they stream.
    /// The marker rides along (see `marker`); a missing one refuses the target. Returns the
    /// items, without the marker and without deletions rsync will not really make.
    fn dry_run(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        checksum: bool,
    ) -> Result<Vec<itemize::Item>> {
        if self.releases.is_some() {
            return self.release_dry_run(source, excludes, checksum);
        }
        let dest = self.login.rsync_dest();
        self.dry_run_into(source, excludes, checksum, &dest, &[])
            .map(|(items, _)| items)
    }

    /// A dry run into `dest` with the marker and the files named in `tags` riding along;
    /// returns the items (without marker and tags) and the tags the target lacks. Proves
    /// confinement first on a new connection (see below).
    fn dry_run_into(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        checksum: bool,
        dest: &str,
        tags: &[String],
    ) -> Result<(Vec<itemize::Item>, Vec<String>)> {
        self.beside_probe(|this| this.dry_run_items(source, excludes, checksum, dest, tags))
    }

    /// Run `op` on the connection (opened if needed), proving confinement first when the
    /// connection is new. Nothing `op` returns is used unless the probe proves rrsync in
    /// force, so a new connection's probe runs beside `op` (both are sessions of rrsync,
    /// each costing a Python start-up and round trips). rrsync allows one run per directory
    /// at a time: the probe holds that lock for milliseconds, so `op` starts a moment later
    /// (and waits if it still meets the lock); a probe that meets `op`'s lock is run again
    /// after it. `op` must not change the target (it may run before confinement is known).
    fn beside_probe<R: Send>(&mut self, op: impl FnOnce(&Self) -> Result<R> + Send) -> Result<R> {
        self.connect()?;
        if self.proven {
            return op(self);
        }
        let (probe, result) = std::thread::scope(|s| {
            let this = &*self;
            let probe = s.spawn(move || this.probe_with(false));
            std::thread::sleep(PROBE_HEAD_START);
            let result = op(this);
            (probe.join(), result)
        });
        let probe = match probe {
            Ok(p) => p?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.judge_probe(probe)?;
        result
    }

    /// [`Self::dry_run_into`] on a connection (the caller proves confinement). A missing
    /// marker at the root refuses the target; below it (a `releases` target's `current/`,
    /// which may not exist yet) it is reported among the missing names for the caller.
    fn dry_run_items(
        &self,
        source: &Manifest,
        excludes: &Excludes,
        checksum: bool,
        dest: &str,
        tags: &[String],
    ) -> Result<(Vec<itemize::Item>, Vec<String>)> {
        let marker_dir = ScratchDir::new(&self.scratch_root, "dry")?;
        let marker_id = self.marker_id().to_string();
        let marker_name = marker::file_name(&marker_id);
        marker::write_source(marker_dir.path(), &marker_id)?;
        for t in tags {
            fsutil::write_volatile(&marker_dir.path().join(t), b"", 0o644)?;
        }
        let mut names = vec![marker_name.clone()];
        names.extend(tags.iter().cloned());
        let mut items = Vec::new();
        let mut other = Vec::new();
        let out = self.rsync_streaming(
            rsync::dry_run_argv(
                &self.rsh(),
                &source.root,
                Some(rsync::MarkerSource {
                    dir: marker_dir.path(),
                    names: &names,
                }),
                dest,
                checksum,
                self.info.delete_allowed,
                &excludes.rsync_args(),
            ),
            &mut |line| match itemize::parse_line(line) {
                Some(i) => items.push(i),
                None => other.push(line.to_vec()),
            },
        )?;
        if !out.success() {
            return Err(Diagnosis::from_output(out.code(), &out.stderr).error(""));
        }
        // Present, the marker (and a tag) shows at most as a time change (each dry run makes
        // a fresh one).
        let created = |name: &str| {
            items
                .iter()
                .any(|i| i.path == name.as_bytes() && i.change == ItemChange::Created)
        };
        let marker_missing = created(&marker_name);
        let missing_tags: Vec<String> = tags.iter().filter(|t| created(t)).cloned().collect();
        items.retain(|i| !names.iter().any(|n| i.path == n.as_bytes()));
        let at_root = dest == self.login.rsync_dest();
        if at_root && marker_missing && self.marker.is_some() {
            return Err(self.marker_missing_error());
        }
        // A target-only directory that still holds excluded files stays (rsync protects
        // them); its dry-run `*deleting dir/` line is not what will happen.
        let kept = itemize::undeletable(&other);
        if !kept.is_empty() {
            items.retain(|i| {
                i.change != ItemChange::Deleting
                    || !kept.iter().any(|k| is_same_or_ancestor(&i.path, k))
            });
        }
        let mut missing = missing_tags;
        if marker_missing && !at_root {
            missing.push(marker_name);
        }
        Ok((items, missing))
    }

    fn marker_missing_error(&self) -> anyhow::Error {
        TargetError::error(
            ErrorKind::NotConfined,
            format!(
                "the key is not confined to the linked directory on {}: the marker file offsync wrote there is missing, so the forced command now allows another directory (or the directory was replaced); nothing was listed or changed; run `offsync link` there again, or, if the new directory is intended, `offsync target remove {name}` and `offsync target add` again",
                self.login,
                name = self.info.name
            ),
        )
    }

    /// A checksum dry run over exactly `paths` (what a transfer just wrote) into `dest`.
    fn check_listed_in(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        paths: &[Vec<u8>],
        dest: &str,
    ) -> Result<Vec<itemize::Item>> {
        let scratch = ScratchDir::new(&self.scratch_root, "verify")?;
        let files_from = scratch.path().join("files");
        fsutil::write_volatile(&files_from, &nul_list(paths)?, fsutil::FILE_MODE)?;
        let mut items = Vec::new();
        let out = self.rsync_streaming(
            rsync::listed_check_argv(
                &self.rsh(),
                &source.root,
                dest,
                &files_from,
                &excludes.rsync_args(),
            ),
            &mut |line| {
                if let Some(i) = itemize::parse_line(line) {
                    items.push(i)
                }
            },
        )?;
        if !out.success() {
            return Err(Diagnosis::from_output(out.code(), &out.stderr).error("verification"));
        }
        Ok(items)
    }

    /// One transfer run of `paths` (see `rsync::TransferKind`); streams rsync's itemized
    /// lines into `sent` and `deleted`, and its progress lines, on top of what earlier runs
    /// sent (`done`, which ends up including this run), into `progress`. Returns the output
    /// (the caller judges the exit).
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        source: &Manifest,
        excludes: &Excludes,
        paths: &[Vec<u8>],
        kind: rsync::TransferKind,
        max_delete: usize,
        sent: &mut std::collections::BTreeSet<Vec<u8>>,
        deleted: &mut std::collections::BTreeSet<Vec<u8>>,
        done: &mut Sent,
        progress: &(dyn Fn(Sent) + Sync),
    ) -> Result<crate::process::Output> {
        let scratch = ScratchDir::new(&self.scratch_root, "apply")?;
        let files_from = scratch.path().join("files");
        fsutil::write_volatile(&files_from, &nul_list(paths)?, fsutil::FILE_MODE)?;
        // Every source path is new here: send the tree rather than a list naming all of it.
        let whole_tree = kind == rsync::TransferKind::Fresh && paths.len() == source.entries.len();
        let mut run = RunProgress::after(*done);
        let out = self.rsync_streaming(
            self.limited(rsync::transfer_argv(
                &self.rsh(),
                &source.root,
                &self.login.rsync_dest(),
                (!whole_tree).then_some(files_from.as_path()),
                kind,
                max_delete,
                &excludes.rsync_args(),
            )),
            &mut |line| {
                if let Some(item) = itemize::parse_line(line) {
                    if item.change == ItemChange::Deleting {
                        deleted.insert(item.path);
                    } else {
                        sent.insert(item.path);
                    }
                } else {
                    run.line(line, progress);
                }
            },
        );
        *done = run.total();
        out
    }
}

/// One rsync run's progress lines turned into a target's cumulative progress: what earlier
/// runs of the same apply sent, plus this run's figures (rsync counts each run from zero).
struct RunProgress {
    before: Sent,
    run: Sent,
}

impl RunProgress {
    fn after(before: Sent) -> RunProgress {
        RunProgress {
            before,
            run: Sent::default(),
        }
    }

    /// Take `line` if it is a progress line (anything else is ignored) and report the total.
    /// Figures never go back: a line without a file count keeps the last one.
    fn line(&mut self, line: &[u8], progress: &(dyn Fn(Sent) + Sync)) {
        if let Some(p) = rsync::parse_progress(line) {
            self.run = Sent {
                bytes: p.bytes.max(self.run.bytes),
                files: p.files.unwrap_or(0).max(self.run.files),
            };
            progress(self.total());
        }
    }

    fn total(&self) -> Sent {
        self.before + self.run
    }
}

/// What `offsync releases` learns about one target: the record, checked against the target.
#[derive(Debug, Clone)]
pub struct Listing {
    pub records: Records,
    /// Recorded releases the target no longer has.
    pub missing: Vec<String>,
    /// Release directories on the target that this controller did not record (only found on
    /// targets that allow deletes: the listing needs rsync's `--delete` dry run).
    pub unknown: Vec<String>,
    /// The release `current` points at, as proven by its tag (`None`: no release of
    /// offsync's, or one this controller did not record).
    pub current: Option<String>,
    /// `current` exists on the target.
    pub current_exists: bool,
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    pub from: Option<String>,
    pub to: String,
    /// The source digest `to` was made from.
    pub source_digest: String,
    pub at: std::time::SystemTime,
    /// The release's content was compared with the source by checksum (possible only when
    /// the source is still what that release was made from); otherwise only its tag was.
    pub content_verified: bool,
}

impl SshTarget {
    fn rel(&self) -> &ReleaseState {
        self.releases
            .as_ref()
            .expect("only called for releases targets")
    }

    fn rel_mut(&mut self) -> &mut ReleaseState {
        self.releases
            .as_mut()
            .expect("only called for releases targets")
    }

    /// Whether this target uses the `releases` layout.
    pub fn is_releases(&self) -> bool {
        self.releases.is_some()
    }

    /// `user@host:<rel>/`.
    fn dest_in(&self, rel: &str) -> String {
        format!("{}{rel}/", self.login.rsync_dest())
    }

    /// The tags of every verified recorded release.
    fn recorded_tags(&self) -> Vec<String> {
        self.rel()
            .records
            .releases
            .iter()
            .filter(|r| r.state == releases::ReleaseState::Verified)
            .map(|r| releases::tag_name(&r.id))
            .collect()
    }

    /// The plan's dry run for a `releases` target: into `current/`, with the marker and the
    /// tag of every recorded release riding along, which proves in the same run that
    /// `current` is a release written for this target and which one. When `current/` lacks
    /// the marker (no release yet, or not offsync's), the root's marker is checked instead
    /// and every source path is new: the first release is uploaded whole.
    fn release_dry_run(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        checksum: bool,
    ) -> Result<Vec<itemize::Item>> {
        let tags = self.recorded_tags();
        let dest = self.dest_in(releases::CURRENT);
        let (items, missing) = self.dry_run_into(source, excludes, checksum, &dest, &tags)?;
        let marker_name = marker::file_name(self.marker_id());
        if !missing.contains(&marker_name) {
            let current = tags
                .iter()
                .find(|t| !missing.contains(t))
                .and_then(|t| t.strip_prefix(releases::TAG_PREFIX))
                .map(str::to_string);
            let rel = self.rel_mut();
            rel.current = Some(current);
            rel.current_is_ours = true;
            return Ok(items);
        }
        self.check_root_marker()?;
        let rel = self.rel_mut();
        rel.current = Some(None);
        rel.current_is_ours = false;
        Ok(all_created(source))
    }

    /// Prove that the root holds the recorded marker (one tiny dry run); nothing to prove
    /// before the first apply wrote one.
    fn check_root_marker(&self) -> Result<()> {
        if self.marker.is_none() {
            return Ok(());
        }
        let missing = self.tags_missing(&self.login.rsync_dest(), &[])?;
        if !missing.is_empty() {
            return Err(self.marker_missing_error());
        }
        Ok(())
    }

    /// Which of the marker and `tags` the directory `dest` lacks (a dry run that sends only
    /// those empty files).
    fn tags_missing(&self, dest: &str, tags: &[String]) -> Result<Vec<String>> {
        let dir = ScratchDir::new(&self.scratch_root, "tags")?;
        let marker_name = marker::file_name(self.marker_id());
        let mut names = vec![marker_name];
        names.extend(tags.iter().cloned());
        for n in &names {
            fsutil::write_volatile(&dir.path().join(n), b"", 0o644)?;
        }
        let mut created = Vec::new();
        let mut argv: Vec<std::ffi::OsString> = ["-n", "-i", "-r", "-O", "--out-format=%i %n"]
            .map(Into::into)
            .to_vec();
        argv.extend(["-e".into(), self.rsh().into()]);
        let mut d = dir.path().as_os_str().to_os_string();
        d.push("/");
        argv.push(d);
        argv.push(dest.into());
        let out = self.rsync_streaming(argv, &mut |line| {
            if let Some(i) = itemize::parse_line(line)
                && i.change == ItemChange::Created
            {
                created.push(i.path);
            }
        })?;
        if !out.success() {
            return Err(Diagnosis::from_output(out.code(), &out.stderr).error(""));
        }
        Ok(names
            .into_iter()
            .filter(|n| created.iter().any(|c| c == n.as_bytes()))
            .collect())
    }

    /// The fingerprint suffix that ties a quick state to the release `current` is.
    fn release_state_suffix(&self) -> String {
        match &self.releases {
            Some(r) => match &r.current {
                Some(Some(id)) => format!(":{id}"),
                _ => ":-".to_string(),
            },
            None => String::new(),
        }
    }

    /// Upload the plan's release (see `rsync::release_upload_argv`): the whole tree into
    /// `releases/<id>/`, unchanged files hard-linked from `current`, then the planned
    /// content changes the quick-check upload linked instead of sending. Nothing live
    /// changes; the release is recorded (as failed until it verifies) before anything is
    /// sent, so a killed upload is pruned later.
    fn upload_release(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        self.connect_proven()?;
        self.ensure_marker()?;
        let (id, plan_digest) = self
            .rel()
            .next
            .clone()
            .context("internal: no release id was set for this apply")?;
        let c = &plan.changes;
        let changed = written_paths(plan);
        nul_list(&changed)?;
        let record = releases::Release {
            id: id.clone(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            source_digest: source.digest_hex(),
            plan_digest,
            files: source.file_count(),
            bytes: source.total_bytes(),
            sent_bytes: 0,
            state: releases::ReleaseState::Failed,
            live: false,
        };
        self.rel_mut().records.upsert(record.clone());
        self.save_records()?;

        let extra = ScratchDir::new(&self.scratch_root, "release")?;
        marker::write_source(extra.path(), self.marker_id())?;
        fsutil::write_volatile(&extra.path().join(releases::tag_name(&id)), b"", 0o644)?;
        let ours = [marker::file_name(self.marker_id()), releases::tag_name(&id)];
        let dest = self.dest_in(&releases::release_dir(&id));
        let link = self.rel().current_is_ours.then_some("/current");
        let mut sent = std::collections::BTreeSet::new();
        let mut run = RunProgress::after(Sent::default());
        let out = self.rsync_streaming(
            self.limited(rsync::release_upload_argv(
                &self.rsh(),
                &source.root,
                rsync::MarkerSource {
                    dir: extra.path(),
                    names: &ours,
                },
                &dest,
                link,
                &excludes.rsync_args(),
            )),
            &mut |line| {
                // Every file rsync transferred (`<f…` on this sending side) was written whole
                // from the source: a same-size file with a new mtime (`<f..t……`) too, which
                // is not hard-linked and must not be sent again by the fix-up below.
                if matches!(line.first(), Some(b'<' | b'>'))
                    && let Some(i) = itemize::parse_line(line)
                    && i.kind == ItemKind::File
                    && !ours.iter().any(|n| i.path == n.as_bytes())
                {
                    sent.insert(i.path);
                } else {
                    run.line(line, progress);
                }
            },
        )?;
        if !out.success() {
            return Err(
                Diagnosis::from_output(out.code(), &out.stderr).error(&format!(
                    "uploading release {id} failed (current is unchanged)"
                )),
            );
        }
        // Content the plan found changed but whose size and mtime matched current's: the
        // upload hard-linked the old file. Send those whole.
        let fixup: Vec<(Vec<u8>, u64)> = c
            .modified
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| (e.raw_path(), e.size().unwrap_or(0)))
            .filter(|(p, _)| !sent.contains(p))
            .collect();
        let (fixup, sizes): (Vec<Vec<u8>>, Vec<u64>) = fixup.into_iter().unzip();
        if !fixup.is_empty() {
            let scratch = ScratchDir::new(&self.scratch_root, "apply")?;
            let files_from = scratch.path().join("files");
            fsutil::write_volatile(&files_from, &nul_list(&fixup)?, fsutil::FILE_MODE)?;
            let out = self.rsync(self.limited(rsync::release_fixup_argv(
                &self.rsh(),
                &source.root,
                &dest,
                &files_from,
                &excludes.rsync_args(),
            )))?;
            if !out.success() {
                return Err(
                    Diagnosis::from_output(out.code(), &out.stderr).error(&format!(
                        "uploading release {id} failed (current is unchanged)"
                    )),
                );
            }
            // A few files, sent whole: reported when the run is over.
            run.before = run.before
                + Sent {
                    bytes: sizes.iter().sum(),
                    files: sizes.len() as u64,
                };
            progress(run.total());
            sent.extend(fixup);
        }
        let sent_bytes = sent
            .iter()
            .filter_map(|p| source.entries.get(p.as_slice()))
            .map(|e| match e.kind {
                crate::plan::manifest::Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        self.rel_mut().records.upsert(releases::Release {
            sent_bytes,
            ..record
        });
        self.save_records()?;
        self.rel_mut().uploaded = Some(id);
        self.note_content()?;
        let deleted = if delete {
            c.missing.iter().map(|e| e.raw_path()).collect()
        } else {
            Vec::new()
        };
        Ok(ApplyOutcome {
            bytes: plan.summary.bytes,
            changed,
            deleted,
            partial: false,
        })
    }

    /// Verify the release the last apply uploaded: what was sent by checksum, the rest by
    /// the quick check, the marker and its tag present. A release that verifies is recorded
    /// as such (the only state a switch or rollback accepts).
    fn verify_release(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        transferred: &[Vec<u8>],
    ) -> Result<TargetView> {
        let id = self
            .rel()
            .uploaded
            .clone()
            .context("internal: no release was uploaded")?;
        let dest = self.dest_in(&releases::release_dir(&id));
        let tags = [releases::tag_name(&id)];
        let mut items = Vec::new();
        let everything = transferred.len() == source.entries.len();
        if !everything && !transferred.is_empty() {
            items.extend(self.check_listed_in(source, excludes, transferred, &dest)?);
        }
        let (tree, missing) = self.dry_run_into(source, excludes, everything, &dest, &tags)?;
        if !missing.is_empty() {
            return Err(TargetError::error(
                ErrorKind::VerificationFailed,
                format!(
                    "release {id} on {} lacks {}; it was not switched to",
                    self.login,
                    missing.join(" and ")
                ),
            ));
        }
        items.extend(tree);
        let mut changes = changes_from_items(items);
        changes.sort_by(|a, b| (&a.path, a.change).cmp(&(&b.path, b.change)));
        changes.dedup();
        if changes.is_empty() {
            let rel = self.rel_mut();
            if let Some(r) = rel.records.find(&id).cloned() {
                rel.records.upsert(releases::Release {
                    state: releases::ReleaseState::Verified,
                    ..r
                });
            }
            self.save_records()?;
        }
        Ok(TargetView::Changes(changes))
    }

    fn save_records(&self) -> Result<()> {
        self.rel().records.save(&self.home, &self.info.name)
    }

    /// Point `current` at `releases/<id>` with one rsync of the symlink (the receiver renames
    /// it over `current`), deleting the releases in `prune` in the same run, after the switch
    /// (rsync works through its sorted list: `current` comes before `releases/…`). Returns
    /// when the switch was reported (the itemized line of `current` arrives as it happens),
    /// and how the pruning went: a failure there does not undo or fail the switch.
    fn switch_to(&self, id: &str, prune: &[String]) -> Result<(std::time::SystemTime, Result<()>)> {
        let scratch = ScratchDir::new(&self.scratch_root, "switch")?;
        let root = scratch.path().join("root");
        std::fs::create_dir_all(root.join(releases::RELEASES_DIR))?;
        let value = releases::release_dir(id);
        std::os::unix::fs::symlink(&value, root.join(releases::CURRENT))?;
        let current = self.rel().records.current.as_deref();
        let mut list = vec![releases::CURRENT.as_bytes().to_vec()];
        list.extend(
            prune
                .iter()
                .filter(|p| {
                    releases::valid_id(p) && p.as_str() != id && Some(p.as_str()) != current
                })
                .map(|p| releases::release_dir(p).into_bytes()),
        );
        let files_from = scratch.path().join("files");
        fsutil::write_volatile(&files_from, &nul_list(&list)?, fsutil::FILE_MODE)?;
        let expected = format!("{} -> {value}", releases::CURRENT);
        let mut switched_at = None;
        let mut other = Vec::new();
        let out = self.rsync_streaming(
            rsync::switch_argv(
                &self.rsh(),
                &root,
                &self.login.rsync_dest(),
                &files_from,
                list.len() > 1,
            ),
            &mut |line| match itemize::parse_line(line) {
                Some(i) if i.kind == ItemKind::Symlink && i.path == expected.as_bytes() => {
                    switched_at = Some(std::time::SystemTime::now());
                }
                Some(i) if i.change == ItemChange::Deleting || i.kind == ItemKind::Dir => {}
                Some(i) => other.push(i.path),
                None => {}
            },
        )?;
        if let Some(p) = other.first() {
            anyhow::bail!(
                "switching current to {value}: rsync reported something else ({})",
                sanitize::bytes_for_terminal(p)
            );
        }
        let Some(at) = switched_at else {
            // Nothing reported: either `current` already pointed there (exit 0) or the run
            // failed before it got to it.
            if out.success() {
                return Ok((std::time::SystemTime::now(), Ok(())));
            }
            return Err(Diagnosis::from_output(out.code(), &out.stderr)
                .error(&format!("switching current to {value} failed")));
        };
        let pruned = if out.success() {
            Ok(())
        } else {
            Err(Diagnosis::from_output(out.code(), &out.stderr).error(""))
        };
        Ok((at, pruned))
    }

    /// The releases to delete after switching to the uploaded one (`keep:`), or why none
    /// are deleted on this target (`--no-delete`).
    fn prune_plan(&self) -> (Vec<String>, Option<String>) {
        let keep = self.rel().keep;
        let ids = self.rel().records.prunable(keep);
        if ids.is_empty() || self.info.delete_allowed {
            return (ids, None);
        }
        let note = format!(
            "{} release(s) beyond keep: {keep} stay on this target: it was linked with --no-delete, so offsync cannot delete them (remove {} there by hand); the recorded releases use about {} of its disk",
            ids.len(),
            ids.iter()
                .map(|i| releases::release_dir(i))
                .collect::<Vec<_>>()
                .join(", "),
            crate::plan::human_bytes(self.rel().records.approx_disk_use())
        );
        (Vec::new(), Some(note))
    }

    /// `offsync releases`: the record, checked against the target with one dry run of the
    /// root's names (and, when `current` is not the recorded release, one more into
    /// `current/` to find which release it is).
    pub fn list_releases(&mut self) -> Result<Listing> {
        self.connect_proven()?;
        let records = self.rel().records.clone();
        let scratch = ScratchDir::new(&self.scratch_root, "list")?;
        let root = scratch.path().join("root");
        std::fs::create_dir_all(root.join(releases::RELEASES_DIR))?;
        let marker_name = marker::file_name(self.marker_id());
        fsutil::write_volatile(&root.join(&marker_name), b"", 0o644)?;
        for r in &records.releases {
            std::fs::create_dir_all(root.join(releases::release_dir(&r.id)))?;
        }
        let value = match &records.current {
            Some(id) => releases::release_dir(id),
            None => format!("{}/.none", releases::RELEASES_DIR),
        };
        std::os::unix::fs::symlink(&value, root.join(releases::CURRENT))?;
        let mut items = Vec::new();
        let mut other = Vec::new();
        let out = self.rsync_streaming(
            rsync::releases_listing_argv(
                &self.rsh(),
                &root,
                &marker_name,
                &self.login.rsync_dest(),
                self.info.delete_allowed,
            ),
            &mut |line| match itemize::parse_line(line) {
                Some(i) => items.push(i),
                None => other.push(line.to_vec()),
            },
        )?;
        if !out.success() {
            return Err(Diagnosis::from_output(out.code(), &out.stderr).error(""));
        }
        if self.marker.is_some()
            && items
                .iter()
                .any(|i| i.path == marker_name.as_bytes() && i.change == ItemChange::Created)
        {
            return Err(self.marker_missing_error());
        }
        let in_releases = |p: &[u8]| -> Option<String> {
            let name = p.strip_prefix(b"releases/")?;
            (!name.is_empty() && !name.contains(&b'/'))
                .then(|| String::from_utf8_lossy(name).into_owned())
        };
        let mut missing = Vec::new();
        let mut unknown = Vec::new();
        let mut current_line = None;
        for i in &items {
            match (i.kind, i.change) {
                (ItemKind::Symlink, _) => current_line = Some(i.change),
                (ItemKind::Dir, ItemChange::Created) => missing.extend(in_releases(&i.path)),
                (_, ItemChange::Deleting) => unknown.extend(in_releases(&i.path)),
                _ => {}
            }
        }
        unknown.extend(
            itemize::undeletable(&other)
                .iter()
                .filter_map(|p| in_releases(p)),
        );
        unknown.sort();
        unknown.dedup();
        let current_exists = current_line != Some(ItemChange::Created);
        let current = if current_line.is_none() {
            records.current.clone()
        } else if current_exists {
            // `current` points elsewhere: find which recorded release by its tag.
            let tags = self.recorded_tags();
            let missing_tags = self.tags_missing(&self.dest_in(releases::CURRENT), &tags)?;
            if missing_tags.contains(&marker_name) {
                None
            } else {
                tags.iter()
                    .find(|t| !missing_tags.contains(t))
                    .and_then(|t| t.strip_prefix(releases::TAG_PREFIX))
                    .map(str::to_string)
            }
        } else {
            None
        };
        Ok(Listing {
            records,
            missing,
            unknown,
            current,
            current_exists,
        })
    }

    /// `offsync rollback`: switch `current` back to `to` (default: the verified release
    /// before the current one) with one rsync of the symlink, after proving that release is
    /// on the target; then prove `current` is it (its tag), and compare its content with the
    /// source by checksum when the source is still what it was made from.
    pub fn rollback(
        &mut self,
        to: Option<&str>,
        source: Option<(&Manifest, &Excludes)>,
    ) -> Result<RolledBack> {
        let records = &self.rel().records;
        let from = records.current.clone();
        let to = match to {
            Some(id) => {
                let Some(r) = records.find(id) else {
                    return Err(crate::input_err!(
                        "{id:?} is not a release recorded for target {}; see `offsync releases`",
                        self.info.name
                    ));
                };
                if r.state != releases::ReleaseState::Verified {
                    return Err(crate::input_err!(
                        "release {id} never verified, so it cannot be switched to; pick another with `offsync releases`"
                    ));
                }
                id.to_string()
            }
            None => match (&from, records.previous()) {
                (None, _) => anyhow::bail!(
                    "this controller has not switched {} to a release yet; name the release with --to ID (see `offsync releases`)",
                    self.info.name
                ),
                (Some(_), None) => anyhow::bail!(
                    "there is no older verified release to roll back to on {}; see `offsync releases`",
                    self.info.name
                ),
                (Some(_), Some(p)) => p.id.clone(),
            },
        };
        // The release must be there, whole enough to carry its tag and the marker, before
        // `current` may point at it (this also proves the directory on a new connection).
        let release_dest = self.dest_in(&releases::release_dir(&to));
        let tag = [releases::tag_name(&to)];
        let there = self.beside_probe(|this| this.tags_missing(&release_dest, &tag))?;
        if !there.is_empty() {
            // Without the marker it may not even be the linked directory: say so first.
            if there.contains(&marker::file_name(self.marker_id())) {
                self.check_root_marker()?;
            }
            anyhow::bail!(
                "release {to} is no longer on {} (pruned or removed by hand); nothing was changed",
                self.info.name
            );
        }
        let (at, _) = self.switch_to(&to, &[])?;
        self.rel_mut().records.set_current(&to);
        self.save_records()?;
        // What `current` points at now carries `to`'s tag.
        let current_dest = self.dest_in(releases::CURRENT);
        if !self.tags_missing(&current_dest, &tag)?.is_empty() {
            return Err(TargetError::error(
                ErrorKind::VerificationFailed,
                format!(
                    "after the switch, current on {} is not release {to}",
                    self.info.name
                ),
            ));
        }
        let made_from = self
            .rel()
            .records
            .find(&to)
            .map(|r| r.source_digest.clone())
            .unwrap_or_default();
        let mut content_verified = false;
        if let Some((m, ex)) = source
            && made_from == m.digest_hex()
        {
            let (items, _) = self.dry_run_into(m, ex, true, &current_dest, &[])?;
            if !changes_from_items(items).is_empty() {
                return Err(TargetError::error(
                    ErrorKind::VerificationFailed,
                    format!(
                        "current on {} points at release {to}, but its content differs from the source it was made from",
                        self.info.name
                    ),
                ));
            }
            content_verified = true;
        }
        Ok(RolledBack {
            from,
            to,
            source_digest: made_from,
            at,
            content_verified,
        })
    }
}

/// The paths a plan writes (added, modified, metadata), sorted.
fn written_paths(plan: &TargetPlan) -> Vec<Vec<u8>> {
    let c = &plan.changes;
    let mut changed: Vec<Vec<u8>> = c
        .added
        .iter()
        .chain(&c.modified)
        .chain(&c.metadata)
        .map(|e| e.raw_path())
        .collect();
    changed.sort();
    changed
}

/// Every source path as created: what a dry run into an empty tree shows.
fn all_created(source: &Manifest) -> Vec<itemize::Item> {
    source
        .entries
        .iter()
        .map(|(path, e)| itemize::Item {
            change: ItemChange::Created,
            kind: match e.kind {
                crate::plan::manifest::Kind::File { .. } => ItemKind::File,
                crate::plan::manifest::Kind::Dir => ItemKind::Dir,
                crate::plan::manifest::Kind::Symlink { .. } => ItemKind::Symlink,
            },
            path: path.to_vec(),
            quick: *b"+++++++++",
        })
        .collect()
}

/// Paths as rsync's `--files-from --from0` list, each checked with [`listable`].
fn nul_list(paths: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut list = Vec::with_capacity(paths.iter().map(|p| p.len() + 1).sum());
    for p in paths {
        if !listable(p) {
            anyhow::bail!(
                "the plan names an unsafe path {:?}; refusing to transfer",
                sanitize::bytes_for_terminal(p)
            );
        }
        list.extend_from_slice(p);
        list.push(0);
    }
    Ok(list)
}

/// Whether a quick dry run is exactly what a checksum dry run would say: every source path
/// is missing on the target, so no content could be compared (target-only paths look the
/// same in both modes).
fn nothing_to_compare(items: &[itemize::Item], source: &Manifest) -> bool {
    let created = items
        .iter()
        .filter(|i| i.change == ItemChange::Created)
        .count();
    items
        .iter()
        .all(|i| matches!(i.change, ItemChange::Created | ItemChange::Deleting))
        && created == source.entries.len()
}

/// Sockets live in a short private directory: a Unix socket path must fit in ~104 bytes,
/// which `$OFFSYNC_HOME/tmp/…` may not.
fn socket_parent() -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    let dir = PathBuf::from("/tmp").join(format!("offsync-{uid}"));
    fsutil::ensure_private_dir(&dir)?;
    let meta = std::fs::symlink_metadata(&dir)?;
    if meta.uid() != uid || !meta.is_dir() {
        anyhow::bail!(
            "{} belongs to someone else; remove it (it holds offsync's ssh sockets)",
            dir.display()
        );
    }
    Ok(dir)
}

impl Target for SshTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn set_bwlimit(&mut self, rate: &str) {
        self.bwlimit = Some(rate.to_string());
    }

    fn scan(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        check: CheckMode,
    ) -> Result<TargetView> {
        self.state = None;
        if let Some(r) = &mut self.releases {
            r.current = None;
        }
        // A target never applied to is probably empty: there the quick check reads nothing
        // and says exactly what `-c` would, while `-c` makes the sending side read the whole
        // source first. Anything else seen there falls back to the checksum run.
        if check == CheckMode::Checksum && !self.applied {
            let items = self.dry_run(source, excludes, false)?;
            if nothing_to_compare(&items, source) {
                self.state = Some(itemize::quick_state(&items) + &self.release_state_suffix());
                return Ok(TargetView::Changes(changes_from_items(items)));
            }
            self.note_content()?;
        }
        let items = self.dry_run(source, excludes, check == CheckMode::Checksum)?;
        self.state = Some(itemize::quick_state(&items) + &self.release_state_suffix());
        Ok(TargetView::Changes(changes_from_items(items)))
    }

    fn check_mode(&self) -> Option<CheckMode> {
        Some(self.check)
    }

    fn set_check(&mut self, check: CheckMode) {
        self.check = check;
    }

    fn scanned_state(&self) -> Option<String> {
        self.state.clone()
    }

    fn quick_state(&mut self, source: &Manifest, excludes: &Excludes) -> Result<Option<String>> {
        let items = self.dry_run(source, excludes, false)?;
        Ok(Some(
            itemize::quick_state(&items) + &self.release_state_suffix(),
        ))
    }

    fn scan_after_apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        transferred: &[Vec<u8>],
    ) -> Result<TargetView> {
        if self.releases.is_some() {
            return self.verify_release(source, excludes, transferred);
        }
        // Everything was written (a first apply): one whole-tree checksum run covers both
        // halves below, and rsync walks the tree faster than a list naming all of it.
        if transferred.len() == source.entries.len() {
            let items = self.dry_run(source, excludes, true)?;
            return Ok(TargetView::Changes(changes_from_items(items)));
        }
        // What was written is compared by content; everything else only has to be as the
        // plan found it, which the quick check proves for size, mtime, mode and type.
        let mut items = if transferred.is_empty() {
            Vec::new()
        } else {
            let dest = self.login.rsync_dest();
            self.check_listed_in(source, excludes, transferred, &dest)?
        };
        items.extend(self.dry_run(source, excludes, false)?);
        let mut changes = changes_from_items(items);
        changes.sort_by(|a, b| (&a.path, a.change).cmp(&(&b.path, b.change)));
        changes.dedup();
        Ok(TargetView::Changes(changes))
    }

    fn prepare(&mut self) {
        if let Err(e) = self.connect() {
            self.early_error = Some(e);
        }
    }

    fn before_apply(&mut self) -> Result<()> {
        self.ensure_marker()
    }

    fn apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        if self.releases.is_some() {
            return self.upload_release(source, excludes, plan, delete, progress);
        }
        self.connect_proven()?;
        self.ensure_marker()?;
        let c = &plan.changes;
        let changed = written_paths(plan);
        let planned_deletes: std::collections::BTreeSet<Vec<u8>> = if delete {
            c.missing.iter().map(|e| e.raw_path()).collect()
        } else {
            Default::default()
        };
        let listed_deletes = topmost_deletions(&planned_deletes, source);
        if changed.is_empty() && listed_deletes.is_empty() {
            return Ok(ApplyOutcome {
                bytes: 0,
                ..Default::default()
            });
        }
        // New paths go first, straight to their final names (nothing there to replace, so
        // nothing to hold back); then, held back together, everything that replaces or
        // updates an existing path, and the deletions. A new path that replaces a target-only
        // tree (a file where a directory was), or lies below a path whose type changes, waits
        // for that change.
        let modified: std::collections::BTreeSet<Vec<u8>> =
            c.modified.iter().map(|e| e.raw_path()).collect();
        let missing: std::collections::BTreeSet<Vec<u8>> =
            c.missing.iter().map(|e| e.raw_path()).collect();
        let (fresh, mut replacing): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            c.added.iter().map(|e| e.raw_path()).partition(|p| {
                !ancestors(p).any(|a| modified.contains(a))
                    && !missing
                        .range(p.clone()..)
                        .take_while(|m| m.starts_with(p))
                        .any(|m| is_same_or_ancestor(p, m))
            });
        replacing.extend(c.modified.iter().chain(&c.metadata).map(|e| e.raw_path()));
        replacing.extend(listed_deletes.iter().cloned());
        replacing.sort();
        // Every path is checked before anything runs.
        nul_list(&fresh)?;
        nul_list(&replacing)?;
        // A modified path may replace a directory, which is one more deletion than listed.
        let max_delete = if planned_deletes.is_empty() {
            0
        } else {
            planned_deletes.len() + c.modified.len()
        };
        let mut sent = std::collections::BTreeSet::new();
        let mut deleted = std::collections::BTreeSet::new();
        let mut done = Sent::default();
        let mut out = None;
        if !fresh.is_empty() {
            out = Some(self.transfer(
                source,
                excludes,
                &fresh,
                rsync::TransferKind::Fresh,
                0,
                &mut sent,
                &mut deleted,
                &mut done,
                progress,
            )?);
        }
        // Nothing that replaces starts after a failed first run.
        if out.as_ref().is_none_or(|o| o.success()) && !replacing.is_empty() {
            out = Some(self.transfer(
                source,
                excludes,
                &replacing,
                rsync::TransferKind::Replacing,
                max_delete,
                &mut sent,
                &mut deleted,
                &mut done,
                progress,
            )?);
        }
        let out = out.expect("there was something to transfer");
        let deleted: Vec<Vec<u8>> = deleted.into_iter().collect();
        // Deleting `gone/a` while `gone/` itself stays (it keeps excluded files) makes the
        // sender miss the implied parent dirs in the source: rsync warns and exits 24 after
        // doing exactly what was asked. Only that case is accepted; any other vanished file
        // (the source changed during the transfer) stays a failure.
        let ok = out.success()
            || (out.code() == Some(24)
                && only_vanished_parents(&out.stderr, &source.root, &listed_deletes));
        let unplanned: Vec<&Vec<u8>> = deleted
            .iter()
            .filter(|p| !planned_deletes.contains(*p))
            .collect();
        if !ok {
            let d = Diagnosis::from_output(out.code(), &out.stderr);
            // Exit 24 that is not the benign case above: name every line rsync wrote, so the
            // vanished file is visible (the usual two-line tail ends with rsync's summary).
            let d = match (out.code(), d) {
                (Some(24), Diagnosis::Other(code, _)) => {
                    Diagnosis::Other(code, sanitize::stderr_tail(&out.stderr, 8))
                }
                (_, d) => d,
            };
            let sent: Vec<Vec<u8>> = sent.into_iter().collect();
            return Err(PartialApply::new(
                ApplyOutcome {
                    bytes: 0,
                    changed: sent,
                    deleted,
                    partial: true,
                },
                d.error("transfer failed"),
            )
            .into());
        }
        if !unplanned.is_empty() {
            let first = sanitize::bytes_for_terminal(unplanned[0]);
            return Err(PartialApply::new(
                ApplyOutcome {
                    bytes: plan.summary.bytes,
                    changed,
                    deleted: deleted.clone(),
                    partial: false,
                },
                anyhow::anyhow!(
                    "rsync deleted {} path(s) that were not in the plan (they appeared on the target after planning), first {first:?}; every deleted path is in the log",
                    unplanned.len()
                ),
            )
            .into());
        }
        self.note_content()?;
        Ok(ApplyOutcome {
            bytes: plan.summary.bytes,
            changed,
            deleted,
            partial: false,
        })
    }

    fn layout(&self) -> Layout {
        if self.releases.is_some() {
            Layout::Releases
        } else {
            Layout::InPlace
        }
    }

    fn scanned_release(&self) -> Option<crate::plan::ReleasePlan> {
        let r = self.releases.as_ref()?;
        Some(crate::plan::ReleasePlan {
            current: r.current.clone().flatten(),
            keep: r.keep,
        })
    }

    fn set_release_id(&mut self, id: &str, plan_digest: &str) {
        if let Some(r) = &mut self.releases {
            r.next = Some((id.to_string(), plan_digest.to_string()));
        }
    }

    fn switch(&mut self) -> Result<super::Switched> {
        let id = self
            .rel_mut()
            .uploaded
            .take()
            .context("internal: no verified release to switch to")?;
        // What `keep:` leaves once `current` is the new release.
        let before = self.rel().records.current.clone();
        self.rel_mut().records.set_current(&id);
        let (prune, mut note) = self.prune_plan();
        self.rel_mut().records.current = before.clone();
        // The release that was current is deleted only once the switch is confirmed (with
        // `keep: 1`): deleted in the switching run, a failed switch could leave `current`
        // pointing at nothing.
        let (later, now): (Vec<String>, Vec<String>) =
            prune.into_iter().partition(|p| Some(p) == before.as_ref());
        let (at, mut pruning) = self.switch_to(&id, &now)?;
        let mut prune = now;
        if pruning.is_ok() && !later.is_empty() {
            self.rel_mut().records.set_current(&id);
            pruning = self.switch_to(&id, &later).map(|(_, p)| p).and_then(|p| p);
            prune.extend(later);
        }
        let rel = self.rel_mut();
        rel.records.set_current(&id);
        let pruned = match pruning {
            Ok(()) => {
                rel.records.releases.retain(|r| !prune.contains(&r.id));
                prune
            }
            Err(e) => {
                note = Some(format!("pruning old releases failed: {e:#}"));
                Vec::new()
            }
        };
        if let Err(e) = self.save_records() {
            note = Some(format!("switched, but the release record: {e:#}"));
        }
        Ok(super::Switched {
            id,
            at,
            pruned,
            note,
        })
    }

    fn close(&mut self) {
        if let (Some(mut m), Some(sock)) = (self.master.take(), self.settings.control_path.take()) {
            // Ask the master to exit cleanly; stop() kills it if it does not.
            let _ = Cmd::new("ssh")
                .args([
                    "-o",
                    &format!("ControlPath={}", ssh::ssh_config_value(&sock)),
                    "-O",
                    "exit",
                    "--",
                    &self.login.host,
                ])
                .output();
            m.stop();
        }
        self.socket_dir = None;
    }
}

impl Drop for SshTarget {
    fn drop(&mut self) {
        self.close();
    }
}

/// The planned deletions to list for rsync: those with no planned-deleted ancestor (rsync
/// deletes a listed directory with its content) and no ancestor that the source has as a
/// non-directory (replacing that ancestor removes them).
fn topmost_deletions(
    planned: &std::collections::BTreeSet<Vec<u8>>,
    source: &Manifest,
) -> Vec<Vec<u8>> {
    planned
        .iter()
        .filter(|p| {
            !ancestors(p).any(|a| {
                planned.contains(a)
                    || source
                        .entries
                        .get(a)
                        .is_some_and(|e| !matches!(e.kind, crate::plan::manifest::Kind::Dir))
            })
        })
        .cloned()
        .collect()
}

/// rsync's itemized lines in the engine's terms (unchanged items are left out).
fn changes_from_items(items: Vec<itemize::Item>) -> Vec<Change> {
    items
        .into_iter()
        .filter_map(|i| {
            let change = match i.change {
                ItemChange::Deleting => ChangeKind::TargetOnly,
                ItemChange::Created => ChangeKind::Created,
                ItemChange::Content => ChangeKind::Content,
                ItemChange::Metadata => ChangeKind::Metadata,
                ItemChange::Unchanged => return None,
            };
            let kind = match i.kind {
                ItemKind::File => EntryKind::File,
                ItemKind::Dir => EntryKind::Dir,
                ItemKind::Symlink => EntryKind::Symlink,
                ItemKind::Device => EntryKind::Device,
                ItemKind::Special => EntryKind::Special,
            };
            Some(Change {
                path: i.path,
                change,
                kind,
            })
        })
        .collect()
}

/// Whether rsync's stderr holds nothing but its warnings about listed deletions whose parent
/// directories do not exist in the source (see the transfer in `apply`).
fn only_vanished_parents(stderr: &[u8], source_root: &Path, listed: &[Vec<u8>]) -> bool {
    let root = source_root.as_os_str().as_bytes();
    let expected = |rel: &[u8]| {
        let rel = itemize::unescape(rel);
        listed
            .iter()
            .any(|d| *d == rel || ancestors(d).any(|a| a == rel.as_slice()))
    };
    let mut any = false;
    for line in stderr.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        any = true;
        let fine = if let Some(rest) = line.strip_prefix(b"file has vanished: \"") {
            rest.strip_suffix(b"\"")
                .and_then(|p| p.strip_prefix(root))
                .and_then(|p| p.strip_prefix(b"/"))
                .is_some_and(expected)
        } else if let Some(rel) =
            line.strip_prefix(b"WARNING: parent dir is absent in the file list: ")
        {
            expected(rel)
        } else {
            line.starts_with(b"rsync warning: some files vanished before they could be transferred")
        };
        if !fine {
            return false;
        }
    }
    any
}

/// The proper ancestors of a relative path, nearest first (`a/b/c` → `a/b`, `a`).
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = p.len();
    std::iter::from_fn(move || {
        let i = p[..end].iter().rposition(|&b| b == b'/')?;
        end = i;
        Some(&p[..i])
    })
}

fn is_same_or_ancestor(a: &[u8], of: &[u8]) -> bool {
    a == of || ancestors(of).any(|x| x == a)
}

/// Whether a path is safe to hand to rsync's file list (no NUL; relative; no `..`).
pub fn listable(p: &[u8]) -> bool {
    !p.is_empty()
        && !p.contains(&0)
        && !p.starts_with(b"/")
        && !Path::new(std::ffi::OsStr::from_bytes(p))
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn itemized_lines_become_changes() {
        let out = b"<f+++++++++ new\n<fc.t...... changed\n.f...p..... mode\n*deleting   gone\n*deleting   typechange/\n<f+++++++++ typechange\n.f          same\ncreated directory /proc/self/fd/4/x\n";
        let (items, _) = itemize::parse_output(out);
        let c = changes_from_items(items);
        let got: Vec<(&[u8], ChangeKind, EntryKind)> = c
            .iter()
            .map(|c| (c.path.as_slice(), c.change, c.kind))
            .collect();
        assert_eq!(
            got,
            [
                (&b"new"[..], ChangeKind::Created, EntryKind::File),
                (b"changed", ChangeKind::Content, EntryKind::File),
                (b"mode", ChangeKind::Metadata, EntryKind::File),
                (b"gone", ChangeKind::TargetOnly, EntryKind::File),
                (b"typechange", ChangeKind::TargetOnly, EntryKind::Dir),
                (b"typechange", ChangeKind::Created, EntryKind::File),
            ]
        );
    }

    #[test]
    fn ancestors_nearest_first() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, [&b"a/b"[..], &b"a"[..]]);
        assert_eq!(ancestors(b"top").count(), 0);
        assert!(is_same_or_ancestor(b"a", b"a/b"));
        assert!(is_same_or_ancestor(b"a/b", b"a/b"));
        assert!(!is_same_or_ancestor(b"a/b", b"a"));
        assert!(!is_same_or_ancestor(b"a/b", b"a/bc"));
    }

    #[test]
    fn vanished_parents_of_listed_deletions_are_benign() {
        let listed = vec![b"gone/a.txt".to_vec(), b"gone/sub/c.txt".to_vec()];
        let root = Path::new("/src dir");
        let ok = b"file has vanished: \"/src dir/gone\"\nfile has vanished: \"/src dir/gone/sub\"\nWARNING: parent dir is absent in the file list: gone/sub\nrsync warning: some files vanished before they could be transferred (code 24) at main.c(1394) [sender=3.5.0]\n";
        assert!(only_vanished_parents(ok, root, &listed));
        let changed_source = b"file has vanished: \"/src dir/app.js\"\nrsync warning: some files vanished before they could be transferred (code 24)\n";
        assert!(!only_vanished_parents(changed_source, root, &listed));
        assert!(!only_vanished_parents(b"", root, &listed));
        assert!(!only_vanished_parents(
            b"rsync: write failed\n",
            root,
            &listed
        ));
    }

    #[test]
    fn only_topmost_deletions_are_listed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"now a file").unwrap();
        let ex = Excludes::new(&[]).unwrap();
        let (m, _) = crate::plan::manifest::build(d.path(), &ex, None).unwrap();
        let planned: BTreeSet<Vec<u8>> = [
            "old",
            "old/f2",
            "old/sub",
            "old/sub/f1",
            "oldish",
            "x/a",
            "x/deep",
            "x/deep/d",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        assert_eq!(
            topmost_deletions(&planned, &m),
            vec![b"old".to_vec(), b"oldish".to_vec()]
        );
    }
}
