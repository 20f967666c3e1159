//! `offsync pull URL DEST`: a host brings DEST up to date from a mirror's newest snapshot.
//!
//! The roles of plan/apply are mirrored: the snapshot is the source, DEST the target. The same
//! rules hold: the plan is printed first, DEST-only paths are deleted only with `--delete`
//! (otherwise the pull is refused and nothing changes), every file is verified before it is
//! moved into place, DEST is compared with the snapshot again afterwards, and a record goes
//! to `$OFFSYNC_HOME/operations.log`. Only read access to the mirror is needed.
//!
//! Trust: a host holds the mirror key (it is a recipient) but no writer key, so a snapshot is
//! used only when its newest generation is signed by a writer this host trusts: keys from
//! `--trust`/`OFFSYNC_TRUSTED_WRITERS`, this machine's own controller key and the configured
//! writers of a mirror with the same URL (when it is also a controller), and keys pinned on a
//! first pull. Pinning is never silent: it needs `--trust-on-first-use` or a typed `yes`, and
//! happens only while nothing else is trusted. Every snapshot is validated before DEST is
//! touched, and writes never follow a symlink inside DEST (see `mirror::restore`).
//!
//! Layouts (`--layout`): `in-place` (the default) updates DEST itself. `releases` builds each
//! generation as DEST/releases/GEN and switches the DEST/current symlink atomically once the
//! new release verified (see `targets::releases` for the layout and its invariants). It is
//! the same engine with a [`ReleaseTarget`] as the target: the plan compares the snapshot with
//! the release `current` points at (with nothing when there is none yet), the same DEST-only
//! rules apply (`--delete` leaves such paths out of the new release), and the record goes to
//! `operations.log` as `pull URL`. Output: a line `new release releases/GEN, current
//! releases/OLD` (on stderr with `--json`, so that stdout stays one `offsync-plan/1` document,
//! whose target `name` and `address` are DEST/releases/GEN), the plan, then `ok …` (not with
//! `--json`) or `nothing to do`, and `pruned …` for releases beyond `--keep` (stderr with
//! `--json`). An in-place pull into a DEST that uses the releases layout is refused: it would
//! take `releases/` and `current` for DEST-only paths.
//!
//! `--rollback [--to GEN]` switches `current` to the release before it (or to GEN) after
//! verifying that release: against the mirror's snapshot of its generation when the mirror
//! can provide it (through the hash cache, like a plan), otherwise against the manifest
//! digest recorded in `releases/state.json` when it was installed (a walk of the release
//! through the hash cache). A release that does not verify is never switched to. The rollback
//! is logged as `pull-rollback URL` (a verification failure too), and pulls of generations up
//! to the one rolled back from do nothing until a newer one is published (`rolled_back_from`
//! in `state.json`; `--rollback --to GEN` moves forward again). No release to roll back to:
//! exit 1, nothing changed.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::PullArgs;
use crate::config::Config;
use crate::context::Context;
use crate::engine::{ApplyPolicy, Single, Status};
use crate::error::exit;
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror, Trust};
use crate::plan::manifest;
use crate::releases::Layout;
use crate::source::Source;
use crate::targets::local::LocalTarget;
use crate::targets::releases::{ReleaseDir, ReleaseTarget, release_name};
use crate::{fsutil, input_err, lock};

/// Open the mirror at `args.url` with this host's identities and trusted writers.
pub fn open_mirror(ctx: &Context, args: &PullArgs) -> Result<Mirror> {
    let location = Location::parse(args.url())?;
    let ids = super::mirror::identities(ctx, args.identity.as_deref())?;
    let store = open_store(args)?;
    let trust = host_trust(ctx, args, &location)?;
    fsutil::ensure_private_dir_keep(&ctx.home)?;
    Ok(Mirror::open(store, &ids, &ctx.home.join("mirror-state"))?.with_trust(trust))
}

/// The store at `args.url`, opened for reading (no request is made yet).
pub fn open_store(args: &PullArgs) -> Result<Store> {
    Store::open(
        &Location::parse(args.url())?,
        &S3Settings {
            endpoint: args.s3.endpoint.clone(),
            region: args.s3.region.clone(),
        },
        false,
    )
}

/// The mirror and its newest verified snapshot; an empty mirror is an error (nothing to pull).
fn open_latest(
    ctx: &Context,
    args: &PullArgs,
) -> Result<(Mirror, crate::mirror::snapshot::Snapshot)> {
    let mirror = open_mirror(ctx, args)?;
    let Some((snap, _)) = mirror.latest()? else {
        anyhow::bail!(
            "{} has no snapshot yet; nothing to pull",
            mirror.store.display()
        );
    };
    Ok((mirror, snap))
}

/// Releases kept by default (`--keep`).
const DEFAULT_KEEP: u64 = 5;

/// What one pull did: for the exit status, the agent loop and the hook (see `agent`).
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// The exit status a one-shot `pull` returns.
    pub code: u8,
    /// The generation pulled (the mirror's newest).
    pub generation: u64,
    /// Its manifest digest (what plans and logs call `source_digest`).
    pub source_digest: String,
    /// DEST changed (in-place) or DEST/current was switched (releases).
    pub changed: bool,
    /// Layout releases: the release DEST/current points at afterwards.
    pub release: Option<std::path::PathBuf>,
    /// A signal stopped the pull (`code` is 128 + the signal).
    pub interrupted: bool,
    /// Layout releases: nothing was pulled because this host was rolled back from this
    /// generation (or a newer one).
    pub held: bool,
}

pub fn run(ctx: &Context, mut args: PullArgs) -> Result<ExitCode> {
    if let Some(file) = args.config.clone() {
        crate::agent::config::PullConfig::load(&file)?.apply_to(&mut args)?;
    }
    if let Some(kind) = args.print_systemd_unit {
        return crate::agent::systemd::print(&args, kind);
    }
    let (dest, releases) = resolve(&args)?;
    if args.rollback {
        return rollback(ctx, &args, &dest);
    }
    if args.watch {
        return crate::agent::watch(ctx, &args, &dest, releases);
    }
    crate::agent::once(ctx, &args, &dest, releases)
}

/// DEST (absolute) and whether it uses the releases layout, after checking the flags that
/// depend on each other. Bad input: exit 64 before anything is read or written.
pub fn resolve(args: &PullArgs) -> Result<(std::path::PathBuf, bool)> {
    let (Some(url), Some(dest)) = (args.url.as_deref(), args.dest.as_deref()) else {
        return Err(input_err!(
            "pull needs the mirror URL and DEST: pass them as arguments, or set `mirror:` and `dest:` in the --config file"
        ));
    };
    Location::parse(url)?;
    let dest = crate::context::absolute(dest)?;
    if dest.exists() && !dest.is_dir() {
        return Err(input_err!("{} is not a directory", dest.display()));
    }
    let releases = match args.layout {
        Some(Layout::Releases) => true,
        Some(Layout::InPlace) if args.rollback => {
            return Err(input_err!(
                "--rollback needs the releases layout; drop --layout in-place"
            ));
        }
        Some(Layout::InPlace) => false,
        None => args.rollback,
    };
    if !releases && args.keep.is_some() {
        return Err(input_err!(
            "--keep applies only to --layout releases; add --layout releases or drop --keep"
        ));
    }
    if !releases && args.rollback_on_hook_failure {
        return Err(input_err!(
            "--rollback-on-hook-failure needs --layout releases (an in-place DEST has no previous release to switch back to); add --layout releases or drop it"
        ));
    }
    if args.interval.is_some() && !args.watch {
        return Err(input_err!(
            "--interval applies only to --watch; add --watch or drop --interval"
        ));
    }
    Ok((dest, releases))
}

/// One pull of the mirror's newest generation into `dest` (validated by [`resolve`]): what a
/// one-shot `pull` does, and what every cycle of `pull --watch` that found a new generation
/// does. Prints the plan and the result lines; the hook and the status file are the caller's.
pub fn pull_once(ctx: &Context, args: &PullArgs, dest: &Path, releases: bool) -> Result<Pulled> {
    if releases {
        return pull_release(ctx, args, dest);
    }
    if let Some(g) = ReleaseDir::in_use(dest) {
        return Err(input_err!(
            "{} uses the releases layout (current -> {}); pass --layout releases (an in-place pull would take releases/ and current for DEST-only paths)",
            dest.display(),
            ReleaseDir::relative(g)
        ));
    }
    let (mirror, snap) = open_latest(ctx, args)?;
    let _lock = if args.dry_run {
        None
    } else {
        crate::fsutil::create_dir_all_mode(dest, crate::mirror::restore::NEW_DIR_MODE)?;
        Some(lock::acquire(&ctx.home)?)
    };
    crate::interrupt::install();
    let source = Source::snapshot(&mirror, &snap, false)?;
    let cache = manifest::cache_path(&ctx.home, dest);
    let manifest = source.manifest();
    let mut pulled = Pulled {
        generation: snap.generation,
        source_digest: manifest.digest_hex(),
        ..Default::default()
    };
    let single = Single::plan(
        Box::new(LocalTarget::new(dest, cache, &source)?),
        manifest,
        args.max_delete,
    )?;
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; nothing was changed");
        return Ok(interrupted(pulled));
    }
    if args.json {
        crate::out!("{}", single.plan.to_json())?;
    } else {
        crate::out!("{}", single.plan.to_text())?;
    }
    let tp = single.target_plan();
    if let Some(e) = &tp.error {
        anyhow::bail!("{}: {}", dest.display(), e);
    }
    if args.dry_run || !tp.has_changes() {
        pulled.code = if tp.has_changes() && args.detailed_exitcode {
            exit::CHANGES
        } else {
            exit::OK
        };
        return Ok(pulled);
    }
    let policy = pull_policy(args, manifest);
    let r = single.apply(
        manifest,
        policy,
        &ctx.home.join("operations.log"),
        &format!("pull {}", mirror.store.display()),
        crate::ui::transfer_progress(args.json).as_ref(),
    )?;
    if r.status == Status::Interrupted {
        eprintln!("offsync: interrupted; the pull was logged as interrupted");
        return Ok(interrupted(pulled));
    }
    if let Some(e) = r.status.to_error(&dest.display().to_string()) {
        return Err(e);
    }
    if !args.json {
        crate::outln!(
            "\nok  {}  {} changed, {} deleted, {}, verified (generation {})",
            dest.display(),
            r.outcome.changed.len(),
            r.outcome.deleted.len(),
            crate::plan::human_bytes(r.outcome.bytes),
            snap.generation
        )?;
    }
    pulled.changed = true;
    pulled.code = changed_code(args);
    Ok(pulled)
}

/// `pulled`, stopped by a signal.
fn interrupted(pulled: Pulled) -> Pulled {
    Pulled {
        code: crate::interrupt::exit_code(),
        interrupted: true,
        ..pulled
    }
}

/// The exit status of a pull that changed DEST.
fn changed_code(args: &PullArgs) -> u8 {
    if args.detailed_exitcode {
        exit::CHANGES
    } else {
        exit::OK
    }
}

/// `pull --layout releases` (see the module docs and `targets::releases`).
/// The same policy as apply, by construction: DEST-only paths need --delete, the mass-delete
/// guard holds, and DEST (or the new release) is verified against the snapshot afterwards.
fn pull_policy(args: &PullArgs, manifest: &manifest::Manifest) -> ApplyPolicy {
    ApplyPolicy {
        delete: args.delete,
        overwrite: true,
        verify: true,
        max_delete: args.max_delete,
        source_files: manifest.file_count(),
        keep_extra: false,
        switch: Default::default(),
    }
}

fn pull_release(ctx: &Context, args: &PullArgs, dest: &Path) -> Result<Pulled> {
    let layout = ReleaseDir::new(dest);
    let keep = args.keep.unwrap_or(DEFAULT_KEEP);
    // A `current` that is not ours is named before anything is read or created.
    let current = if dest.is_dir() {
        layout.current()?
    } else {
        None
    };
    let (mirror, snap) = open_latest(ctx, args)?;
    let _lock = if args.dry_run {
        None
    } else {
        let lock = lock::acquire(&ctx.home)?;
        layout.prepare()?;
        Some(lock)
    };
    let current = match current {
        Some(c) if !layout.release_path(c).is_dir() => {
            eprintln!(
                "warning: {}/current points at {}, which is missing; the new release is built from the snapshot alone",
                dest.display(),
                ReleaseDir::relative(c)
            );
            None
        }
        c => c,
    };
    let generation = snap.generation;
    let mut pulled = Pulled {
        generation,
        release: current.map(|c| layout.release_path(c)),
        ..Default::default()
    };
    let state = layout.load_state()?;
    if let (Some(h), Some(c)) = (state.rolled_back_from, current)
        && generation <= h
    {
        crate::outln!(
            "nothing to do: this host was rolled back from generation {h} and generation {generation} is the newest; {}/current stays at {} until a newer generation is published (`--rollback --to {generation}` switches by hand)",
            dest.display(),
            ReleaseDir::relative(c)
        )?;
        pulled.held = true;
        return Ok(pulled);
    }
    crate::interrupt::install();
    let source = Source::snapshot(&mirror, &snap, false)?;
    let manifest = source.manifest();
    let target = ReleaseTarget::new(&layout, current, &ctx.home, &source)?;
    let single = Single::plan(Box::new(target), manifest, args.max_delete)?;
    pulled.source_digest = manifest.digest_hex();
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; nothing was changed");
        return Ok(interrupted(pulled));
    }
    let mut head = vec![match current {
        Some(c) if c == generation => format!("release {} is current", ReleaseDir::relative(c)),
        Some(c) => format!(
            "new release {}, current {}",
            ReleaseDir::relative(generation),
            ReleaseDir::relative(c)
        ),
        None => format!(
            "new release {}, no current release yet",
            ReleaseDir::relative(generation)
        ),
    }];
    let foreign = if current.is_none() {
        layout.foreign_root_entries()
    } else {
        0
    };
    if foreign > 0 {
        head.push(format!(
            "note: {foreign} entries at the root of {} (an in-place tree?) are left alone; remove them yourself once services use {}/current",
            dest.display(),
            dest.display()
        ));
    }
    if args.json {
        for l in &head {
            eprintln!("{l}");
        }
        crate::out!("{}", single.plan.to_json())?;
    } else {
        for l in &head {
            crate::outln!("{l}")?;
        }
        crate::out!("{}", single.plan.to_text())?;
    }
    let tp = single.target_plan();
    if let Some(e) = &tp.error {
        anyhow::bail!("{}: {}", dest.display(), e);
    }
    if current == Some(generation) && !tp.has_changes() {
        if !args.json {
            crate::outln!(
                "\nnothing to do: {}/current -> {} matches generation {generation}",
                dest.display(),
                ReleaseDir::relative(generation)
            )?;
        }
        return Ok(pulled);
    }
    if args.dry_run {
        pulled.code = changed_code(args);
        return Ok(pulled);
    }
    let policy = pull_policy(args, manifest);
    let r = single.apply(
        manifest,
        policy,
        &ctx.home.join("operations.log"),
        &format!("pull {}", mirror.store.display()),
        crate::ui::transfer_progress(args.json).as_ref(),
    )?;
    let unchanged = match current {
        Some(c) => format!(
            "{}/current still points at {}",
            dest.display(),
            ReleaseDir::relative(c)
        ),
        None => format!("{}/current was not made", dest.display()),
    };
    if r.status == Status::Interrupted {
        eprintln!("offsync: interrupted; the pull was logged as interrupted; {unchanged}");
        return Ok(interrupted(pulled));
    }
    if let Some(e) = r
        .status
        .to_error(&layout.release_path(generation).display().to_string())
    {
        return Err(e.context(unchanged));
    }
    if !args.json {
        crate::outln!(
            "\nok  {}/current -> {}  {} changed, {} left out, {}, verified (generation {})",
            dest.display(),
            ReleaseDir::relative(generation),
            r.outcome.changed.len(),
            r.outcome.deleted.len(),
            crate::plan::human_bytes(r.outcome.bytes),
            generation
        )?;
    }
    let pruned = prune(ctx, &layout, keep, generation)?;
    if !pruned.is_empty() {
        let line = format!(
            "pruned {} (keeping {keep})",
            pruned
                .iter()
                .map(|&g| ReleaseDir::relative(g))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if args.json {
            eprintln!("{line}");
        } else {
            crate::outln!("{line}")?;
        }
    }
    pulled.changed = true;
    pulled.release = Some(layout.release_path(generation));
    pulled.code = changed_code(args);
    Ok(pulled)
}

/// Remove the releases beyond `keep` (see [`ReleaseDir::prune_plan`]), their hash caches and
/// their records in `state.json`. A release that cannot be removed is a warning: the pull
/// itself succeeded.
fn prune(ctx: &Context, layout: &ReleaseDir, keep: u64, current: u64) -> Result<Vec<u64>> {
    let mut pruned = Vec::new();
    for g in layout.prune_plan(keep, current)? {
        match layout.remove_release(g) {
            Ok(()) => {
                let _ =
                    std::fs::remove_file(manifest::cache_path(&ctx.home, &layout.release_path(g)));
                pruned.push(g);
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    if !pruned.is_empty() {
        let mut state = layout.load_state()?;
        for g in &pruned {
            state.releases.remove(&release_name(*g));
        }
        layout.save_state(&state)?;
    }
    Ok(pruned)
}

/// A release checked before a rollback switches to it.
struct Checked {
    plan: crate::plan::Plan,
    /// Why it does not match, if it does not.
    mismatch: Option<String>,
    /// What it was compared with, for the output.
    against: String,
}

/// Compare release `generation` with the mirror's snapshot of it, or, when the mirror cannot
/// provide that, with the digest recorded when it was installed (see the module docs).
fn check_release(
    ctx: &Context,
    args: &PullArgs,
    layout: &ReleaseDir,
    generation: u64,
    info: &crate::targets::TargetInfo,
) -> Result<Checked> {
    let release = layout.release_path(generation);
    let cache = manifest::cache_path(&ctx.home, &release);
    let excludes = crate::plan::excludes::Excludes::new(&[])?;
    let from_mirror = open_mirror(ctx, args).and_then(|m| {
        let (snap, _) = m.verified(generation)?;
        Ok((m, snap))
    });
    match from_mirror {
        Ok((mirror, snap)) => {
            let source = Source::snapshot(&mirror, &snap, false)?;
            let mut t = LocalTarget::new(&release, cache, &source)?;
            let tp = crate::engine::verify_one(&mut t, source.manifest(), &excludes, false)?;
            let s = &tp.summary;
            let mismatch = tp.has_changes().then(|| {
                format!(
                    "{} does not match generation {generation} of the mirror ({} added, {} modified, {} metadata, {} missing differ)",
                    release.display(),
                    s.added,
                    s.modified,
                    s.metadata,
                    s.missing
                )
            });
            Ok(Checked {
                plan: crate::plan::Plan::new(source.manifest(), excludes.patterns(), vec![tp]),
                mismatch,
                against: format!(
                    "against generation {generation} of {}",
                    mirror.store.display()
                ),
            })
        }
        Err(e) => {
            eprintln!(
                "note: the mirror cannot provide generation {generation} ({e:#}); checking {} against the digest recorded when it was installed",
                release.display()
            );
            let state = layout.load_state()?;
            let Some(rec) = state.releases.get(&release_name(generation)) else {
                anyhow::bail!(
                    "cannot verify {}: the mirror cannot provide generation {generation} and {} records no digest for it; nothing was changed (fix access to the mirror and try again)",
                    release.display(),
                    layout
                        .release_path(0)
                        .with_file_name(crate::targets::releases::STATE)
                        .display()
                );
            };
            let (m, _) = manifest::build(&release, &excludes, Some(&cache))?;
            let mismatch = (m.digest_hex() != rec.digest).then(|| {
                format!(
                    "{} changed since it was installed on {} (its manifest digest differs)",
                    release.display(),
                    rec.installed
                )
            });
            Ok(Checked {
                plan: crate::plan::Plan::new(
                    &m,
                    excludes.patterns(),
                    vec![crate::engine::empty_plan(info)],
                ),
                mismatch,
                against: format!("against the digest recorded on {}", rec.installed),
            })
        }
    }
}

/// `pull --rollback [--to GEN]` (see the module docs).
pub fn rollback(ctx: &Context, args: &PullArgs, dest: &Path) -> Result<ExitCode> {
    let layout = ReleaseDir::new(dest);
    let Some(cur) = (if dest.is_dir() {
        layout.current()?
    } else {
        None
    }) else {
        anyhow::bail!(
            "{} has no current release to roll back from (no {}/current symlink); pull with --layout releases first",
            dest.display(),
            dest.display()
        );
    };
    fsutil::ensure_private_dir_keep(&ctx.home)?;
    let _lock = lock::acquire(&ctx.home)?;
    layout.prepare()?;
    let gens = layout.releases()?;
    let to = match args.to {
        Some(g) if g == cur => {
            return Err(input_err!(
                "{}/current already points at {}; name another release with --to",
                dest.display(),
                ReleaseDir::relative(g)
            ));
        }
        Some(g) if !gens.contains(&g) => {
            return Err(input_err!(
                "{} has no release {g}; its releases: {}",
                dest.display(),
                gens.iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Some(g) => g,
        None => match gens.iter().copied().filter(|&g| g < cur).max() {
            Some(g) => g,
            None => anyhow::bail!(
                "no release older than {} in {}/releases to roll back to; nothing was changed",
                ReleaseDir::relative(cur),
                dest.display()
            ),
        },
    };
    let release = layout.release_path(to);
    let shown = release.display().to_string();
    let info = crate::targets::TargetInfo {
        name: shown.clone(),
        kind: crate::plan::TargetKind::Local,
        address: shown.clone(),
        host: crate::keys::hostname(),
        delete_allowed: true,
        exclude: Vec::new(),
    };
    let operation = format!("pull-rollback {}", Location::parse(args.url())?.url());
    let log = ctx.home.join("operations.log");
    let start = std::time::Instant::now();
    let checked = check_release(ctx, args, &layout, to, &info)?;
    let record = |status: Status| -> Result<()> {
        let r = crate::engine::ApplyResult {
            status,
            outcome: Default::default(),
            duration_ms: start.elapsed().as_millis() as u64,
            release: None,
            switched: None,
        };
        crate::engine::log_all(&log, &operation, &[(info.clone(), r)], &checked.plan)
    };
    if let Some(why) = &checked.mismatch {
        let status = Status::Failed(
            crate::error::ErrorKind::VerificationFailed,
            format!("{why}; not switching to it"),
        );
        record(status.clone())?;
        return Err(status
            .to_error(&format!(
                "{}/current stays at {}",
                dest.display(),
                ReleaseDir::relative(cur)
            ))
            .context("a failure has an error")?);
    }
    // The hold is written before the switch: a rollback killed in between leaves `current`
    // where it was and pulls waiting, never a rollback that the next pull undoes.
    let mut state = layout.load_state()?;
    if to < cur {
        state.rolled_back_from = Some(state.rolled_back_from.map_or(cur, |h| h.max(cur)));
    } else if state.rolled_back_from.is_some_and(|h| to >= h) {
        state.rolled_back_from = None;
    }
    layout.save_state(&state)?;
    if let Err(e) = layout.switch(to) {
        record(Status::failed(&e))?;
        return Err(e);
    }
    record(Status::Ok)?;
    crate::outln!(
        "ok  {}/current -> {} (was {}), verified {}",
        dest.display(),
        ReleaseDir::relative(to),
        ReleaseDir::relative(cur),
        checked.against
    )?;
    if let Some(h) = state.rolled_back_from {
        crate::outln!(
            "pulls of generations up to {h} leave it there; a newer generation is pulled as usual (`--rollback --to {h}` switches back)"
        )?;
    }
    Ok(ExitCode::from(if args.detailed_exitcode {
        exit::CHANGES
    } else {
        exit::OK
    }))
}

/// The writers this host trusts for the mirror at `location` (see the module docs).
fn host_trust(ctx: &Context, args: &PullArgs, location: &Location) -> Result<Trust> {
    let mut writers = Vec::new();
    for t in args.trust.iter().filter(|t| !t.trim().is_empty()) {
        writers.extend(mirror::parse_writer_keys(t, "--trust")?);
    }
    writers.extend(mirror::own_public_key(&ctx.home)?);
    if let Ok(config) = Config::load(&ctx.config_path()) {
        for m in config
            .mirrors
            .iter()
            .filter(|m| Location::parse(&m.url).is_ok_and(|l| &l == location))
        {
            for w in &m.writers {
                writers.extend(mirror::parse_writer_keys(w, "config.yaml writer")?);
            }
        }
    }
    let url = location.url();
    let first_use: Option<mirror::FirstUse> = if args.trust_on_first_use {
        Some(Box::new(move |key, generation| {
            eprintln!(
                "pinned writer {} for {url} (it signed generation {generation}); later pulls accept only its signatures and those given with --trust",
                mirror::describe_key(key)
            );
            Ok(true)
        }))
    } else if ctx.interactive {
        Some(Box::new(move |key, generation| {
            eprintln!(
                "This host trusts no writer of {url} yet. Generation {generation} is signed by\n  {}\nCompare the fingerprint with `offsync mirror writers list NAME` on the controller.",
                mirror::describe_key(key)
            );
            crate::prompt::typed_yes("Trust this writer for every future pull? Type yes")
        }))
    } else {
        None
    };
    Ok(Trust {
        writers,
        accept_legacy: false,
        first_use,
        hint: "if that key belongs to the controller that writes this mirror, pass `--trust 'ssh-ed25519 …'` with its id_ed25519.pub (or set OFFSYNC_TRUSTED_WRITERS), or --trust-on-first-use to pin it after comparing its fingerprint with `offsync mirror writers list` on the controller".into(),
    })
}
