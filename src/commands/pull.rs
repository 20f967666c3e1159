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

use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli::PullArgs;
use crate::config::Config;
use crate::context::Context;
use crate::error::exit;
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror, Trust, restore};
use crate::plan::diff::{self, TargetView};
use crate::plan::excludes::Excludes;
use crate::plan::manifest;
use crate::plan::{Plan, Summary, TargetPlan};
use crate::{fsutil, input_err, lock, oplog};

pub fn run(ctx: &Context, args: PullArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let location = Location::parse(&args.url)?;
    let dest = crate::context::absolute(&args.dest)?;
    if dest.exists() && !dest.is_dir() {
        return Err(input_err!("{} is not a directory", dest.display()));
    }
    let ids = super::mirror::identities(ctx, args.identity.as_deref())?;
    let store = Store::open(
        &location,
        &S3Settings {
            endpoint: args.s3.endpoint.clone(),
            region: args.s3.region.clone(),
        },
        false,
    )?;
    let trust = host_trust(ctx, &args, &location)?;
    fsutil::ensure_private_dir_keep(&ctx.home)?;
    let mirror = Mirror::open(store, &ids, &ctx.home.join("mirror-state"))?.with_trust(trust);
    let Some((snap, _)) = mirror.latest()? else {
        anyhow::bail!(
            "{} has no snapshot yet; nothing to pull",
            mirror.store.display()
        );
    };
    let _lock = if args.dry_run {
        None
    } else {
        crate::fsutil::create_dir_all_mode(&dest, crate::mirror::restore::NEW_DIR_MODE)?;
        Some(lock::acquire(&ctx.home)?)
    };
    crate::interrupt::install();
    let source = snap.to_manifest(PathBuf::from(mirror.store.display()))?;
    let excludes = Excludes::new(&[])?;
    let cache = manifest::cache_path(&ctx.home, &dest);
    let scan = |dest: &std::path::Path| -> Result<TargetPlan> {
        let listing = if dest.exists() {
            manifest::build(dest, &excludes, Some(&cache))?.0.entries
        } else {
            Default::default()
        };
        let changes = diff::diff(&source, &TargetView::Listing(listing));
        Ok(TargetPlan {
            name: dest.display().to_string(),
            kind: crate::plan::TargetKind::Local,
            address: dest.display().to_string(),
            delete_allowed: true,
            error: None,
            error_kind: None,
            changes,
            summary: Summary::default(),
            warnings: Vec::new(),
        })
    };
    let mut dest_plan = scan(&dest)?;
    if let Some(w) = crate::engine::mass_delete(&dest_plan, source.file_count(), args.max_delete) {
        dest_plan.warnings.push(w);
    }
    let plan = Plan::new(&source, excludes.patterns(), vec![dest_plan]);
    let tp = &plan.targets[0];
    if args.json {
        crate::out!("{}", plan.to_json())?;
    } else {
        crate::out!("{}", plan.to_text())?;
    }
    let changes_code = || {
        if args.detailed_exitcode {
            exit::CHANGES
        } else {
            exit::OK
        }
    };
    if args.dry_run || !tp.has_changes() {
        return Ok(ExitCode::from(if tp.has_changes() {
            changes_code()
        } else {
            exit::OK
        }));
    }
    use crate::error::ErrorKind;
    use oplog::Outcome;
    let record = |status: Outcome,
                  changed: &[Vec<u8>],
                  deleted: &[Vec<u8>],
                  bytes,
                  error: Option<(ErrorKind, String)>| {
        let (c, ch) = oplog::encode_paths(changed);
        let (d, dh) = oplog::encode_paths(deleted);
        oplog::append(
            &ctx.home.join("operations.log"),
            &[oplog::Record {
                timestamp: oplog::now(),
                target: dest.display().to_string(),
                host: crate::keys::hostname(),
                operation: format!("pull {}", mirror.store.display()),
                status,
                files_changed: c,
                files_deleted: d,
                files_changed_hex: ch,
                files_deleted_hex: dh,
                bytes,
                duration_ms: start.elapsed().as_millis() as u64,
                source_digest: plan.source.digest.clone(),
                plan_digest: plan.digest.clone(),
                error_kind: error.as_ref().map(|e| e.0),
                error: error.map(|e| e.1),
                partial: false,
            }],
        )
        .context("cannot write operations.log")
    };
    let missing = tp.changes.missing.len();
    if missing > 0 && !args.delete {
        let msg = format!(
            "{missing} path(s) exist only in {}; nothing was changed; review the plan and pass --delete to delete exactly them",
            dest.display()
        );
        record(
            Outcome::Refused,
            &[],
            &[],
            0,
            Some((ErrorKind::NeedsDelete, msg.clone())),
        )?;
        anyhow::bail!(msg);
    }
    if let Some(why) = crate::engine::mass_delete(tp, source.file_count(), args.max_delete) {
        let msg = format!("{}: {why}; nothing was changed", dest.display());
        record(
            Outcome::Refused,
            &[],
            &[],
            0,
            Some((ErrorKind::MassDelete, msg.clone())),
        )?;
        anyhow::bail!(msg);
    }
    let map = snap.entry_map()?;
    let pick = |v: &[crate::plan::PlanEntry]| -> Result<Vec<_>> {
        v.iter()
            .map(|pe| {
                let p = pe.raw_path();
                let e = *map
                    .get(&p)
                    .context("a planned path is not in the snapshot")?;
                Ok((p, e))
            })
            .collect()
    };
    let mut write = pick(&tp.changes.added)?;
    write.extend(pick(&tp.changes.modified)?);
    let work = restore::Work {
        write,
        metadata: pick(&tp.changes.metadata)?,
        delete: tp.changes.missing.iter().map(|pe| pe.raw_path()).collect(),
        // A host never gets setuid/setgid/sticky bits from a mirror.
        keep_special_modes: false,
    };
    let result = restore::apply(
        &mirror,
        &dest,
        &work,
        crate::targets::mirror::WORKERS,
        &|_| {},
    )
    .and_then(|done| {
        let after = scan(&dest)?;
        if after.has_changes() {
            let s = after.changes.summary();
            anyhow::bail!(
                "{} did not verify after the pull: {} added, {} modified, {} metadata, {} missing still differ",
                dest.display(),
                s.added,
                s.modified,
                s.metadata,
                s.missing
            );
        }
        Ok(done)
    });
    match result {
        Ok(done) => {
            record(Outcome::Ok, &done.changed, &done.deleted, done.bytes, None)?;
            if !args.json {
                crate::outln!(
                    "\nok  {}  {} changed, {} deleted, {}, verified (generation {})",
                    dest.display(),
                    done.changed.len(),
                    done.deleted.len(),
                    crate::plan::human_bytes(done.bytes),
                    snap.generation
                )?;
            }
            Ok(ExitCode::from(changes_code()))
        }
        Err(e) => {
            let status = if crate::interrupt::interrupted() {
                Outcome::Interrupted
            } else {
                Outcome::Failed
            };
            record(
                status,
                &[],
                &[],
                0,
                Some((ErrorKind::of(&e), format!("{e:#}"))),
            )?;
            if crate::interrupt::interrupted() {
                eprintln!("offsync: error: {e:#}");
                return Ok(ExitCode::from(crate::interrupt::exit_code()));
            }
            Err(e)
        }
    }
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
