//! The backend-neutral engine: plan, apply and verify any [`Target`]s, in parallel.
//!
//! Invariants: `plan_all` is `scan` + the pure `diff` per target; `apply_one` executes exactly
//! the `TargetPlan` it is given, refuses target-only deletions unless allowed (and above the
//! mass-delete limit, see [`mass_delete`]), verifies with a fresh scan afterwards, and only
//! then lets the target make the result visible ([`Target::commit`]: a pull's new release
//! becomes `current`); a failing target never stops the others; an apply that fails part-way reports what the
//! target said changed, never "nothing".

use anyhow::{Context as _, Result};
use std::borrow::Cow;
use std::time::Instant;

use crate::error::ErrorKind;
use crate::plan::diff;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;
use crate::plan::{Categories, CheckMode, EntryKind, ExtraPolicy, Plan, Summary, TargetPlan};
use crate::releases::{Layout, SwitchMode};
use crate::targets::{ApplyOutcome, PartialApply, Switched, Target, TargetInfo};

pub use crate::parallel::parallel;

/// Plan one target: scan it and diff against the source. Errors become part of the plan.
/// `check` overrides the target's configured comparison mode.
pub fn plan_one(
    t: &mut dyn Target,
    source: &Manifest,
    excludes: &Excludes,
    check: Option<CheckMode>,
) -> TargetPlan {
    let info = t.info().clone();
    let configured = t.check_mode();
    let mode = check.or(configured).unwrap_or_default();
    let scope = scoped(&info, source, excludes);
    let source = scope.as_ref().map_or(source, |(m, _)| m.as_ref());
    let scanned = crate::ui::phase(&format!("planning {}", info.name), || {
        let (_, excludes) = scope.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        t.scan(source, excludes, mode)
    });
    let (changes, error, error_kind) = match scanned {
        Ok(view) => (diff::diff_into(source, view), None, None),
        Err(e) => (
            Categories::default(),
            Some(format!("{e:#}")),
            Some(ErrorKind::of(&e)),
        ),
    };
    let (state, release) = if error.is_none() {
        (t.scanned_state(), t.scanned_release())
    } else {
        (None, None)
    };
    TargetPlan {
        name: info.name,
        kind: info.kind,
        address: info.address,
        delete_allowed: info.delete_allowed,
        extra: Default::default(),
        error,
        error_kind,
        excludes: info.exclude,
        check: configured.map(|_| mode),
        state,
        release,
        summary: Summary::default(),
        changes,
        warnings: Vec::new(),
    }
}

/// Plan every target in parallel; `max_delete` is the limit given by flag or config (see
/// [`mass_delete`]), which the plan warns about.
pub fn plan_all(
    targets: &mut [Box<dyn Target + '_>],
    source: &Manifest,
    excludes: &Excludes,
    workers: usize,
    max_delete: Option<u64>,
) -> Vec<TargetPlan> {
    parallel(targets, workers, |t| {
        let mut p = plan_one(t.as_mut(), source, excludes, None);
        if let Some(w) = mass_delete(&p, source.file_count(), max_delete) {
            p.warnings.push(w);
        }
        p
    })
}

/// Check a plan made earlier (a saved plan, or one the user took time to confirm) against
/// the targets as they are now, as cheaply as that can be proven: a target whose quick-check
/// fingerprint ([`TargetPlan::state`]) is unchanged keeps its planned part — no second
/// checksum pass; any other target is planned again with the mode it was planned with (the
/// caller compares the work). Targets the plan does not cover are planned normally.
pub fn recheck_all(
    targets: &mut [Box<dyn Target + '_>],
    source: &Manifest,
    excludes: &Excludes,
    earlier: &Plan,
    workers: usize,
    max_delete: Option<u64>,
) -> Vec<TargetPlan> {
    parallel(targets, workers, |t| {
        let name = t.info().name.clone();
        let before = earlier.targets.iter().find(|p| p.name == name);
        // A target that could not be planned had no plan to apply: it stays failed.
        if let Some(b) = before.filter(|b| b.error.is_some()) {
            return b.clone();
        }
        // The fingerprint only speaks for the same source, filters and target settings.
        let comparable = |b: &TargetPlan| {
            b.state.is_some()
                && earlier.source.digest == source.digest_hex()
                && earlier.source.excludes == excludes.patterns()
                && b.address == t.info().address
                && b.delete_allowed == t.info().delete_allowed
                && b.excludes == t.info().exclude
        };
        let mut p = match before {
            Some(b) if comparable(b) => match scoped(t.info(), source, excludes)
                .and_then(|(source, excludes)| t.quick_state(&source, &excludes))
            {
                Ok(Some(now)) if Some(&now) == b.state.as_ref() => TargetPlan {
                    warnings: Vec::new(),
                    ..b.clone()
                },
                Ok(_) => plan_one(t.as_mut(), source, excludes, b.check),
                Err(e) => failed_plan(t.info(), &e),
            },
            Some(b) => plan_one(t.as_mut(), source, excludes, b.check),
            None => plan_one(t.as_mut(), source, excludes, None),
        };
        if p.error.is_none()
            && let Some(w) = mass_delete(&p, source.file_count(), max_delete)
        {
            p.warnings.push(w);
        }
        p
    })
}

/// The source and excludes as target `info` sees them: its own `exclude:` patterns after the
/// run's, and the source entries they hide left out (digest recomputed), so that plan, apply
/// and verify of that target never see those paths on either side. Borrowed unchanged for a
/// target without patterns of its own.
fn scoped<'a>(
    info: &TargetInfo,
    source: &'a Manifest,
    excludes: &'a Excludes,
) -> Result<(Cow<'a, Manifest>, Cow<'a, Excludes>)> {
    if info.exclude.is_empty() {
        return Ok((Cow::Borrowed(source), Cow::Borrowed(excludes)));
    }
    let excludes = excludes
        .with(&info.exclude)
        .with_context(|| format!("target {}: exclude", info.name))?;
    let mut m = source.clone();
    m.entries
        .retain(|p, e| !excludes.hides(p, e.entry_kind() == crate::plan::EntryKind::Dir));
    m.modes_stripped.retain(|p| m.entries.contains_key(p));
    m.skipped.retain(|p| !excludes.hides(p, false));
    m.digest = crate::plan::manifest::digest(&m.entries);
    Ok((Cow::Owned(m), Cow::Owned(excludes)))
}

/// The plan of a target that could not be scanned.
fn failed_plan(info: &TargetInfo, e: &anyhow::Error) -> TargetPlan {
    TargetPlan {
        error: Some(format!("{e:#}")),
        error_kind: Some(ErrorKind::of(e)),
        ..empty_plan(info)
    }
}

/// A target's plan with no changes (and no error).
pub fn empty_plan(info: &TargetInfo) -> TargetPlan {
    TargetPlan {
        name: info.name.clone(),
        kind: info.kind,
        address: info.address.clone(),
        delete_allowed: info.delete_allowed,
        extra: Default::default(),
        error: None,
        error_kind: None,
        excludes: info.exclude.clone(),
        check: None,
        state: None,
        release: None,
        summary: Summary::default(),
        changes: Categories::default(),
        warnings: Vec::new(),
    }
}

/// The mass-delete guard (like rsync's and rclone's `--max-delete`): why deleting this plan's
/// target-only paths needs an explicit limit, or `None` when it is within bounds. With a
/// limit (`--max-delete N`, config `max_delete:`), more than N deletions are refused. Without
/// one, deleting more than half of the paths on the target, or anything at all when the source
/// has no files (an unmounted or wiped source), is refused.
pub fn mass_delete(
    plan: &TargetPlan,
    source_files: u64,
    max_delete: Option<u64>,
) -> Option<String> {
    let n = plan.changes.missing.len() as u64;
    if n == 0 {
        return None;
    }
    let allow = format!("pass --max-delete {n} (or set `max_delete:` in config.yaml) to allow it");
    match max_delete {
        Some(limit) if n > limit => Some(format!(
            "would delete {n} path(s), more than the limit of {limit}; {allow}"
        )),
        Some(_) => None,
        None if source_files == 0 => Some(format!(
            "the source has no files, and {n} path(s) would be deleted (everything on the target); {allow}"
        )),
        None => {
            let c = &plan.changes;
            let on_target = c.unchanged + (c.modified.len() + c.metadata.len()) as u64 + n;
            (n * 2 > on_target).then(|| {
                format!(
                    "would delete {n} of the {on_target} path(s) on the target (more than half); {allow}"
                )
            })
        }
    }
}

/// How applying one target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Unchanged,
    Refused(ErrorKind, String),
    Failed(ErrorKind, String),
    Interrupted,
}

impl Status {
    /// A failure with the kind found in `err`'s chain.
    pub fn failed(err: &anyhow::Error) -> Status {
        Status::Failed(ErrorKind::of(err), format!("{err:#}"))
    }

    /// The wire name (`operations.log`, `apply --json`).
    pub fn name(&self) -> crate::oplog::Outcome {
        use crate::oplog::Outcome;
        match self {
            Status::Ok => Outcome::Ok,
            Status::Unchanged => Outcome::Unchanged,
            Status::Refused(..) => Outcome::Refused,
            Status::Failed(..) => Outcome::Failed,
            Status::Interrupted => Outcome::Interrupted,
        }
    }
    pub fn error(&self) -> Option<String> {
        match self {
            Status::Refused(_, e) | Status::Failed(_, e) => Some(e.clone()),
            Status::Interrupted => Some("interrupted by a signal".into()),
            _ => None,
        }
    }
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Status::Refused(k, _) | Status::Failed(k, _) => Some(*k),
            Status::Interrupted => Some(ErrorKind::Interrupted),
            _ => None,
        }
    }
    pub fn is_success(&self) -> bool {
        matches!(self, Status::Ok | Status::Unchanged)
    }

    /// A refusal or failure as an error (with its kind) prefixed by `what`; `None` otherwise.
    pub fn to_error(&self, what: &str) -> Option<anyhow::Error> {
        match self {
            Status::Refused(kind, msg) | Status::Failed(kind, msg) => Some(
                crate::error::TargetError::error(*kind, format!("{what}: {msg}")),
            ),
            _ => None,
        }
    }
}

/// The result of applying one target.
#[derive(Debug, Clone)]
pub struct ApplyResult {
    pub status: Status,
    pub outcome: ApplyOutcome,
    pub duration_ms: u64,
    /// A `releases` target: the release this apply uploaded (verified or not).
    pub release: Option<String>,
    /// A `releases` target: the switch to the new release, when it happened.
    pub switched: Option<Switched>,
}

impl ApplyResult {
    /// A target with nothing to do (not contacted).
    pub fn unchanged() -> ApplyResult {
        ApplyResult::of(Status::Unchanged, ApplyOutcome::default(), Instant::now())
    }

    fn of(status: Status, outcome: ApplyOutcome, start: Instant) -> ApplyResult {
        ApplyResult {
            status,
            outcome,
            duration_ms: start.elapsed().as_millis() as u64,
            release: None,
            switched: None,
        }
    }
}

/// Policy for one apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyPolicy {
    /// Target-only files may be deleted (`--delete` or `delete: true`).
    pub delete: bool,
    /// Modified files may be overwritten (`overwrite:` in config).
    pub overwrite: bool,
    /// Verify after the transfer (`verify:` in config).
    pub verify: bool,
    /// The mass-delete limit (`--max-delete`, `max_delete:`); see [`mass_delete`].
    pub max_delete: Option<u64>,
    /// Files in the source (for the mass-delete guard).
    pub source_files: u64,
    /// Target-only paths are left alone: neither refused nor deleted, and not a difference
    /// when verifying (`mirror restore --force` into a directory with other files).
    pub keep_extra: bool,
    /// When `releases` targets switch to their new release (`--switch`).
    pub switch: SwitchMode,
}

impl ApplyPolicy {
    /// The policy for one target: its `extra:` decides what its target-only paths need —
    /// `delete` deletes them as `--delete` does, `keep` leaves them (unless this run deletes,
    /// `--delete` or a saved plan's `delete`: that decision covers every target of the run).
    pub fn for_target(&self, tp: &TargetPlan) -> ApplyPolicy {
        match tp.extra.with_flag(self.delete) {
            ExtraPolicy::Delete => ApplyPolicy {
                delete: true,
                ..*self
            },
            ExtraPolicy::Keep => ApplyPolicy {
                keep_extra: true,
                ..*self
            },
            ExtraPolicy::Refuse => *self,
        }
    }
}

/// Whether `p` asks for any work under `policy` (target-only paths count unless kept).
pub fn has_work(p: &TargetPlan, policy: &ApplyPolicy) -> bool {
    let c = &p.changes;
    !(c.added.is_empty()
        && c.modified.is_empty()
        && c.metadata.is_empty()
        && (c.missing.is_empty() || policy.keep_extra))
}

/// Why `policy` refuses `plan` before anything is sent, if it does.
pub fn refusal(plan: &TargetPlan, policy: &ApplyPolicy) -> Option<(ErrorKind, String)> {
    let missing = if policy.keep_extra {
        0
    } else {
        plan.changes.missing.len()
    };
    if missing > 0 && !policy.delete {
        return Some((
            ErrorKind::NeedsDelete,
            format!(
                "{missing} target-only path(s) would need deleting; nothing was changed on this target; review the plan and pass --delete to delete exactly them"
            ),
        ));
    }
    // Leaving a path out of a new release deletes nothing on the target (the previous
    // release keeps it), so `--no-delete` does not stand in the way there.
    if missing > 0 && !plan.delete_allowed && plan.release.is_none() {
        return Some((
            ErrorKind::DeleteDisabled,
            format!(
                "{missing} target-only path(s), but this target was linked with --no-delete; remove them there by hand, link again without --no-delete, or set `extra: keep` for this target to leave them"
            ),
        ));
    }
    if missing > 0
        && let Some(why) = mass_delete(plan, policy.source_files, policy.max_delete)
    {
        return Some((
            ErrorKind::MassDelete,
            format!("{why}; nothing was changed on this target"),
        ));
    }
    if !policy.overwrite && !plan.changes.modified.is_empty() {
        return Some((
            ErrorKind::OverwriteDisabled,
            format!(
                "{} file(s) differ on the target and `overwrite: false` is set in config.yaml; nothing was changed on this target",
                plan.changes.modified.len()
            ),
        ));
    }
    None
}

/// How far one target's transfer got: bytes of file content and files whose content was
/// sent so far (metadata-only changes move neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub files: u64,
}

impl Sent {
    /// What the plan says a target's transfer will send: the sizes and number of the files
    /// whose content is added or modified.
    pub fn planned(plan: &TargetPlan) -> Sent {
        let c = &plan.changes;
        c.added
            .iter()
            .chain(&c.modified)
            .filter(|e| e.kind == EntryKind::File)
            .fold(Sent::default(), |t, e| Sent {
                bytes: t.bytes + e.size().unwrap_or(0),
                files: t.files + 1,
            })
    }
}

impl std::ops::Add for Sent {
    type Output = Sent;
    fn add(self, o: Sent) -> Sent {
        Sent {
            bytes: self.bytes + o.bytes,
            files: self.files + o.files,
        }
    }
}

/// What a target's `apply` reports its transfer progress to (cumulative figures, from any
/// thread).
pub type OnSent<'a> = &'a (dyn Fn(Sent) + Sync);

/// A step of one target's apply, as progress reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sending content (rsync, or mirror uploads/downloads).
    Upload,
    /// Checking the target against the source after the transfer.
    Verify,
    /// Making what verified visible (a mirror's generation, a local target's tree).
    Commit,
    /// Pointing `current` at the new release.
    Switch,
    /// The target is finished, whatever its status.
    Done,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Upload => "upload",
            Phase::Verify => "verify",
            Phase::Commit => "commit",
            Phase::Switch => "switch",
            Phase::Done => "done",
        }
    }
}

/// Progress of transfers, per target (the terminal's bars, JSON events, or nothing).
pub trait Progress: Sync {
    /// The apply is about to start on these targets, each planned to send `total`.
    fn start(&self, _targets: &[(String, Sent)]) {}
    /// A target starts sending `total`.
    fn begin(&self, target: &str, total: Sent) -> Box<dyn TargetProgress>;
}

/// One target's progress.
pub trait TargetProgress: Send + Sync {
    /// A new phase starts (the transfer's figures are kept).
    fn phase(&self, _phase: Phase) {}
    /// The transfer got this far (cumulative).
    fn update(&self, sent: Sent);
    /// The target is finished.
    fn finish(&self);
}

impl TargetProgress for () {
    fn update(&self, _: Sent) {}
    fn finish(&self) {}
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Sent) -> Box<dyn TargetProgress> {
        Box::new(())
    }
}

/// Apply `plan` to `t` exactly, then verify.
pub fn apply_one(
    t: &mut dyn Target,
    source: &Manifest,
    excludes: &Excludes,
    plan: &TargetPlan,
    policy: ApplyPolicy,
    progress: &dyn TargetProgress,
) -> ApplyResult {
    let start = Instant::now();
    let policy = policy.for_target(plan);
    let status = |s| ApplyResult::of(s, ApplyOutcome::default(), start);
    if let Some(e) = &plan.error {
        return status(Status::Failed(
            plan.error_kind.unwrap_or(ErrorKind::Io),
            e.clone(),
        ));
    }
    if crate::interrupt::interrupted() {
        return status(Status::Interrupted);
    }
    let (source, excludes) = match scoped(t.info(), source, excludes) {
        Ok(scope) => scope,
        Err(e) => return status(Status::failed(&e)),
    };
    let (source, excludes) = (source.as_ref(), excludes.as_ref());
    if let Err(e) = t.before_apply() {
        return status(Status::failed(&e));
    }
    if !has_work(plan, &policy) && !t.has_pending() {
        return status(Status::Unchanged);
    }
    if let Some((kind, why)) = refusal(plan, &policy) {
        return status(Status::Refused(kind, why));
    }
    if crate::interrupt::interrupted() {
        return status(Status::Interrupted);
    }
    let delete = policy.delete && !policy.keep_extra;
    let name = t.info().name.clone();
    progress.phase(Phase::Upload);
    let applied = crate::ui::phase(&format!("transfer {name}"), || {
        t.apply(source, excludes, plan, delete, &|s| progress.update(s))
    });
    let outcome = match applied {
        Ok(o) => o,
        Err(e) => {
            let partial = e.downcast_ref::<PartialApply>();
            let mut msg = format!("{e:#}");
            let kind = partial.map_or_else(|| ErrorKind::of(&e), |p| p.kind);
            if let Some(p) = partial
                && p.outcome.partial
            {
                msg.push_str(&format!(
                    " (before it failed, rsync reported {} path(s) sent and {} deleted; sent files may not be in place yet; run `offsync plan` to see what is left)",
                    p.outcome.changed.len(),
                    p.outcome.deleted.len()
                ));
            }
            return ApplyResult::of(
                if crate::interrupt::interrupted() {
                    Status::Interrupted
                } else {
                    Status::Failed(kind, msg)
                },
                partial.map(|p| p.outcome.clone()).unwrap_or_default(),
                start,
            );
        }
    };
    let mut result = ApplyResult::of(Status::Ok, outcome, start);
    if policy.verify {
        progress.phase(Phase::Verify);
        let verified = crate::ui::phase(&format!("verification {name}"), || {
            verify_after(t, source, excludes, &result.outcome.changed)
        });
        result.status = match verified {
            Ok(after) if !has_work(&after, &policy) => Status::Ok,
            Ok(after) => Status::Failed(
                ErrorKind::VerificationFailed,
                format!(
                    "did not verify after the transfer: {} added, {} modified, {} metadata, {} missing still differ",
                    after.summary.added,
                    after.summary.modified,
                    after.summary.metadata,
                    after.summary.missing
                ),
            ),
            Err(e) => Status::Failed(ErrorKind::of(&e), format!("verification failed: {e:#}")),
        };
    }
    // Only what verified is ever made visible (see the module docs).
    if result.status == Status::Ok {
        progress.phase(Phase::Commit);
    }
    if result.status == Status::Ok
        && let Err(e) = crate::ui::phase(&format!("commit {name}"), || t.commit())
    {
        result.status = Status::failed(&e);
    }
    result.duration_ms = start.elapsed().as_millis() as u64;
    result
}

/// Apply every target's part of `plan` in parallel (each exactly, then verified); a failing
/// target never stops the others. Connections are closed as each target finishes. A signal
/// that arrives turns whatever did not complete into [`Status::Interrupted`].
///
/// `releases` targets upload and verify a new release (one id for all of them); then, with
/// [`SwitchMode::Each`], each switches as soon as its release verified; with
/// [`SwitchMode::Together`], they switch only after every target of the apply succeeded, and
/// none does otherwise (their status becomes [`ErrorKind::NotSwitched`]).
pub fn apply_all(
    targets: &mut [Box<dyn Target + '_>],
    source: &Manifest,
    excludes: &Excludes,
    plan: &Plan,
    policy: ApplyPolicy,
    workers: usize,
    progress: &dyn Progress,
) -> Vec<(TargetInfo, ApplyResult)> {
    let release_id = crate::releases::new_id(&plan.digest, chrono::Utc::now());
    let together = policy.switch == SwitchMode::Together;
    progress.start(
        &plan
            .targets
            .iter()
            .map(|tp| (tp.name.clone(), Sent::planned(tp)))
            .collect::<Vec<_>>(),
    );
    let bars: Vec<(String, Box<dyn TargetProgress>)> = targets
        .iter()
        .map(|t| {
            let name = t.info().name.clone();
            let total = plan
                .targets
                .iter()
                .find(|p| p.name == name)
                .map(Sent::planned)
                .unwrap_or_default();
            let bar = progress.begin(&name, total);
            (name, bar)
        })
        .collect();
    let bar_of = |name: &str| -> &dyn TargetProgress {
        bars.iter()
            .find(|(n, _)| n == name)
            .map_or(&() as &dyn TargetProgress, |(_, b)| b.as_ref())
    };
    let mut results = parallel(targets, workers, |t| {
        let name = t.info().name.clone();
        let releases = t.layout() == Layout::Releases;
        if releases {
            t.set_release_id(&release_id, &plan.digest);
        }
        let mut r = match plan.targets.iter().find(|p| p.name == name) {
            None => ApplyResult::of(
                Status::Failed(
                    ErrorKind::StalePlan,
                    "the plan does not cover this target".into(),
                ),
                ApplyOutcome::default(),
                Instant::now(),
            ),
            Some(tp) => apply_one(t.as_mut(), source, excludes, tp, policy, bar_of(&name)),
        };
        // A release was uploaded when the apply got as far as sending (`Ok`, or a failed
        // verification): it is recorded either way, and switched to only when `Ok`.
        let uploaded = releases
            && (r.status == Status::Ok
                || matches!(r.status, Status::Failed(ErrorKind::VerificationFailed, _)));
        if uploaded {
            r.release = Some(release_id.clone());
        }
        let pending = releases && r.status == Status::Ok;
        if pending && !together {
            bar_of(&name).phase(Phase::Switch);
            switch_one(t.as_mut(), &mut r);
        }
        if !(pending && together) {
            bar_of(&name).finish();
        }
        if !(pending && together) {
            t.close();
        }
        if crate::interrupt::interrupted() && !r.status.is_success() {
            r.status = Status::Interrupted;
        }
        (t.info().clone(), r)
    });
    if together {
        let failed: Vec<String> = results
            .iter()
            .filter(|(_, r)| !r.status.is_success())
            .map(|(i, _)| i.name.clone())
            .collect();
        let mut slots: Vec<(&mut Box<dyn Target + '_>, &mut ApplyResult)> = targets
            .iter_mut()
            .zip(results.iter_mut().map(|(_, r)| r))
            .collect();
        parallel(&mut slots, workers, |(t, r)| {
            if t.layout() != Layout::Releases || r.status != Status::Ok {
                return;
            }
            let bar = bar_of(&t.info().name);
            if crate::interrupt::interrupted() {
                r.status = Status::Interrupted;
            } else if failed.is_empty() {
                bar.phase(Phase::Switch);
                switch_one(t.as_mut(), r);
            } else {
                r.status = Status::Failed(
                    ErrorKind::NotSwitched,
                    format!(
                        "release {} was uploaded and verified but not switched to, because {} did not succeed (--switch together); current is unchanged; apply again, or use --switch each",
                        r.release.as_deref().unwrap_or("?"),
                        failed.join(", ")
                    ),
                );
            }
            bar.finish();
            t.close();
        });
    }
    results
}

/// Switch `t` to the release its apply just verified, recording the outcome in `r`.
fn switch_one(t: &mut dyn Target, r: &mut ApplyResult) {
    let start = Instant::now();
    let name = t.info().name.clone();
    match crate::ui::phase(&format!("switch {name}"), || t.switch()) {
        Ok(s) => r.switched = Some(s),
        Err(e) => {
            r.status = Status::Failed(
                ErrorKind::NotSwitched,
                format!(
                    "release {} verified, but switching current to it failed: {e:#}",
                    r.release.as_deref().unwrap_or("?")
                ),
            )
        }
    }
    r.duration_ms += start.elapsed().as_millis() as u64;
}

/// The spread between the first and the last switch of `results`, when more than one
/// target switched.
pub fn switch_spread(results: &[(TargetInfo, ApplyResult)]) -> Option<std::time::Duration> {
    let times: Vec<std::time::SystemTime> = results
        .iter()
        .filter_map(|(_, r)| r.switched.as_ref().map(|s| s.at))
        .collect();
    let first = times.iter().min()?;
    let last = times.iter().max()?;
    (times.len() > 1).then(|| last.duration_since(*first).unwrap_or_default())
}

/// The `operations.log` record of one target's apply (or pull, or restore), with its path
/// lists bounded (the complete lists ride along for the paths file when they were cut).
pub fn log_record(
    operation: &str,
    info: &TargetInfo,
    r: &ApplyResult,
    plan: &Plan,
) -> crate::oplog::Entry {
    use crate::oplog;
    let record = oplog::Record {
        bytes: r.outcome.bytes,
        duration_ms: r.duration_ms,
        source_digest: plan.source.digest.clone(),
        plan_digest: plan.digest.clone(),
        error: r.status.error(),
        error_kind: r.status.kind(),
        partial: r.outcome.partial,
        paths_file: None,
        release: r.release.clone(),
        switched_at: r
            .switched
            .as_ref()
            .map(|s| oplog::timestamp(chrono::DateTime::<chrono::Utc>::from(s.at))),
        pruned: r
            .switched
            .as_ref()
            .map(|s| s.pruned.clone())
            .unwrap_or_default(),
        ..oplog::Record::new(
            info.name.clone(),
            info.host.clone(),
            operation.to_string(),
            r.status.name(),
        )
    };
    oplog::Entry::new(record, &r.outcome.changed, &r.outcome.deleted)
}

/// One target planned against a source, then applied and logged: the whole of `pull` and
/// `mirror restore` (a local directory fed by a snapshot), with the same rules as `apply`.
pub struct Single<'t> {
    targets: Vec<Box<dyn Target + 't>>,
    excludes: Excludes,
    pub plan: Plan,
}

impl<'t> Single<'t> {
    /// Plan `target` against `source` (offsync's default excludes only).
    pub fn plan(
        target: Box<dyn Target + 't>,
        source: &Manifest,
        max_delete: Option<u64>,
    ) -> Result<Single<'t>> {
        let excludes = Excludes::new(&[])?;
        let mut targets = vec![target];
        let plans = plan_all(&mut targets, source, &excludes, 1, max_delete);
        let plan = Plan::new(source, excludes.patterns(), plans);
        Ok(Single {
            targets,
            excludes,
            plan,
        })
    }

    /// The target's part of the plan.
    pub fn target_plan(&self) -> &TargetPlan {
        &self.plan.targets[0]
    }

    /// Apply the plan under `policy` (reporting to `progress`), append the record to `log`
    /// as `operation`, and return the result.
    pub fn apply(
        mut self,
        source: &Manifest,
        policy: ApplyPolicy,
        log: &std::path::Path,
        operation: &str,
        progress: &dyn Progress,
    ) -> Result<ApplyResult> {
        let mut results = apply_all(
            &mut self.targets,
            source,
            &self.excludes,
            &self.plan,
            policy,
            1,
            progress,
        );
        log_all(log, operation, &results, &self.plan)?;
        Ok(results.remove(0).1)
    }
}

/// Append one record per target of `results` to the operations log at `log` (and, for a
/// record whose path lists were cut, its paths file under `log`'s directory).
pub fn log_all(
    log: &std::path::Path,
    operation: &str,
    results: &[(TargetInfo, ApplyResult)],
    plan: &Plan,
) -> Result<()> {
    let entries: Vec<crate::oplog::Entry> = results
        .iter()
        .map(|(i, r)| log_record(operation, i, r, plan))
        .collect();
    crate::oplog::append(log, entries).map_err(|e| e.context("cannot write operations.log"))
}

/// A fresh whole-tree content comparison of one target (`offsync verify`: checksum mode
/// whatever the configured one), plus the target's storage check (`deep`: mirrors re-read
/// all content).
pub fn verify_one(
    t: &mut dyn Target,
    source: &Manifest,
    excludes: &Excludes,
    deep: bool,
) -> Result<TargetPlan> {
    let mut p = plan_one(t, source, excludes, Some(CheckMode::Checksum));
    if let Some(e) = p.error.take() {
        return Err(crate::error::TargetError::error(
            p.error_kind.unwrap_or(ErrorKind::Io),
            e,
        ));
    }
    t.check(deep)?;
    p.changes.sort();
    p.summary = p.changes.summary();
    Ok(p)
}

/// The verification right after an apply that wrote `transferred`: see
/// [`Target::scan_after_apply`] (SSH: those paths by checksum, the rest by the quick check),
/// plus the target's storage check.
fn verify_after(
    t: &mut dyn Target,
    source: &Manifest,
    excludes: &Excludes,
    transferred: &[Vec<u8>],
) -> Result<TargetPlan> {
    let view = t.scan_after_apply(source, excludes, transferred)?;
    t.check(false)?;
    let mut p = TargetPlan {
        changes: diff::diff_into(source, view),
        ..empty_plan(t.info())
    };
    p.changes.sort();
    p.summary = p.changes.summary();
    Ok(p)
}

/// Verify every target in parallel: each one's differences (or error) as a plan.
pub fn verify_all(
    targets: &mut [Box<dyn Target + '_>],
    source: &Manifest,
    excludes: &Excludes,
    workers: usize,
    deep: bool,
) -> Plan {
    let plans = parallel(targets, workers, |t| {
        let info = t.info().clone();
        let p = match verify_one(t.as_mut(), source, excludes, deep) {
            Ok(p) => p,
            Err(e) => failed_plan(&info, &e),
        };
        t.close();
        p
    });
    Plan::new(source, excludes.patterns(), plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::memory::MemoryTarget;

    fn source() -> (tempfile::TempDir, Manifest, Excludes) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a"), b"alpha").unwrap();
        std::fs::write(d.path().join("sub/b"), b"beta").unwrap();
        let ex = Excludes::new(&["*.tmp".to_string()]).unwrap();
        let (m, _) = crate::plan::manifest::build(d.path(), &ex, None).unwrap();
        (d, m, ex)
    }

    const ALL: ApplyPolicy = ApplyPolicy {
        delete: false,
        overwrite: true,
        verify: true,
        max_delete: None,
        source_files: 2,
        keep_extra: false,
        switch: SwitchMode::Together,
    };

    #[test]
    fn apply_then_verify_in_memory() {
        let (_d, m, ex) = source();
        let mut targets: Vec<Box<dyn Target>> = vec![
            Box::new(MemoryTarget::new("m1", true)),
            Box::new(MemoryTarget::new("m2", true)),
        ];
        let plans = Plan::new(&m, ex.patterns(), plan_all(&mut targets, &m, &ex, 2, None));
        assert_eq!(plans.targets[0].summary.added, 3);
        for (t, p) in targets.iter_mut().zip(&plans.targets) {
            let r = apply_one(t.as_mut(), &m, &ex, p, ALL, &());
            assert_eq!(r.status, Status::Ok, "{:?}", r.status);
            assert_eq!(r.outcome.changed.len(), 3);
        }
        let again = Plan::new(&m, ex.patterns(), plan_all(&mut targets, &m, &ex, 2, None));
        assert!(!again.has_changes());
    }

    #[test]
    fn target_only_files_need_delete() {
        let (_d, m, ex) = source();
        let mut t = MemoryTarget::new("m", true);
        let extra = m.entries[&b"a"[..]].clone();
        t.files
            .insert(b"extra".to_vec(), (extra.clone(), b"alpha".to_vec()));
        t.files
            .insert(b"keep.tmp".to_vec(), (extra, b"alpha".to_vec()));
        let mut p = plan_one(&mut t, &m, &ex, None);
        p.summary = p.changes.summary();
        assert_eq!(p.summary.missing, 1, "excluded keep.tmp is not reported");
        let r = apply_one(&mut t, &m, &ex, &p, ALL, &());
        assert!(matches!(
            r.status,
            Status::Refused(ErrorKind::NeedsDelete, _)
        ));
        assert!(
            t.files.contains_key(&b"extra"[..]),
            "nothing changed on refusal"
        );
        assert!(!t.files.contains_key(&b"a"[..]));
        // The target's only path is the one to delete: over the default mass-delete limit.
        let r = apply_one(
            &mut t,
            &m,
            &ex,
            &p,
            ApplyPolicy {
                delete: true,
                ..ALL
            },
            &(),
        );
        assert!(
            matches!(r.status, Status::Refused(ErrorKind::MassDelete, ref s) if s.contains("--max-delete 1")),
            "{:?}",
            r.status
        );
        assert!(t.files.contains_key(&b"extra"[..]));
        let r = apply_one(
            &mut t,
            &m,
            &ex,
            &p,
            ApplyPolicy {
                delete: true,
                max_delete: Some(1),
                ..ALL
            },
            &(),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.outcome.deleted, vec![b"extra".to_vec()]);
        assert!(
            t.files.contains_key(&b"keep.tmp"[..]),
            "excluded paths are never deleted"
        );
    }

    fn plan_with(missing: usize, unchanged: u64) -> TargetPlan {
        let mut p = TargetPlan {
            name: "t".into(),
            kind: crate::plan::TargetKind::Memory,
            address: "m".into(),
            delete_allowed: true,
            extra: Default::default(),
            error: None,
            error_kind: None,
            excludes: Vec::new(),
            check: None,
            state: None,
            release: None,
            changes: Categories::default(),
            summary: Summary::default(),
            warnings: Vec::new(),
        };
        p.changes.unchanged = unchanged;
        for i in 0..missing {
            p.changes.missing.push(crate::plan::PlanEntry::bare(
                format!("x{i}").as_bytes(),
                crate::plan::EntryKind::File,
            ));
        }
        p
    }

    #[test]
    fn mass_delete_guard() {
        // Half or less of the target: fine by default; more than half: refused.
        assert_eq!(mass_delete(&plan_with(5, 5), 10, None), None);
        let w = mass_delete(&plan_with(6, 5), 10, None).unwrap();
        assert!(
            w.contains("6 of the 11") && w.contains("--max-delete 6"),
            "{w}"
        );
        // An empty source: any delete is refused.
        let w = mass_delete(&plan_with(1, 100), 0, None).unwrap();
        assert!(w.contains("no files"), "{w}");
        // An explicit limit replaces the default rule, both ways.
        assert_eq!(mass_delete(&plan_with(6, 5), 10, Some(6)), None);
        assert_eq!(mass_delete(&plan_with(1, 0), 0, Some(1)), None);
        assert!(mass_delete(&plan_with(4, 100), 10, Some(3)).is_some());
        assert_eq!(mass_delete(&plan_with(0, 0), 0, None), None);
    }

    #[test]
    fn extra_policy_decides_per_target() {
        let (_d, m, ex) = source();
        let extra = m.entries[&b"a"[..]].clone();
        let target = || {
            let mut t = MemoryTarget::new("m", true);
            t.files
                .insert(b"extra".to_vec(), (extra.clone(), b"alpha".to_vec()));
            t
        };
        // keep: the rest is synced, the extra stays, and the apply verifies.
        let mut t = target();
        let mut p = plan_one(&mut t, &m, &ex, None);
        p.extra = crate::plan::ExtraPolicy::Keep;
        let r = apply_one(&mut t, &m, &ex, &p, ALL, &());
        assert_eq!(r.status, Status::Ok, "{:?}", r.status);
        assert!(t.files.contains_key(&b"extra"[..]) && t.files.contains_key(&b"a"[..]));
        assert!(r.outcome.deleted.is_empty());
        // keep, but the run deletes (`--delete`): deleted.
        let mut t = target();
        let r = apply_one(
            &mut t,
            &m,
            &ex,
            &p,
            ApplyPolicy {
                delete: true,
                max_delete: Some(5),
                ..ALL
            },
            &(),
        );
        assert_eq!(r.status, Status::Ok, "{:?}", r.status);
        assert!(!t.files.contains_key(&b"extra"[..]));
        // delete: as `--delete`, the mass-delete guard included.
        let mut t = target();
        p.extra = crate::plan::ExtraPolicy::Delete;
        let r = apply_one(
            &mut t,
            &m,
            &ex,
            &p,
            ApplyPolicy {
                max_delete: Some(5),
                ..ALL
            },
            &(),
        );
        assert_eq!(r.status, Status::Ok, "{:?}", r.status);
        assert_eq!(r.outcome.deleted, vec![b"extra".to_vec()]);
        let mut t = target();
        let r = apply_one(&mut t, &m, &ex, &p, ALL, &());
        assert!(
            matches!(r.status, Status::Refused(ErrorKind::MassDelete, _)),
            "{:?}",
            r.status
        );
    }

    #[test]
    fn no_delete_targets_refuse() {
        let (_d, m, ex) = source();
        let mut t = MemoryTarget::new("m", false);
        let e = m.entries[&b"a"[..]].clone();
        t.files.insert(b"extra".to_vec(), (e, vec![]));
        let p = plan_one(&mut t, &m, &ex, None);
        let r = apply_one(
            &mut t,
            &m,
            &ex,
            &p,
            ApplyPolicy {
                delete: true,
                ..ALL
            },
            &(),
        );
        assert!(
            matches!(r.status, Status::Refused(ErrorKind::DeleteDisabled, ref s) if s.contains("--no-delete"))
        );
    }
}
