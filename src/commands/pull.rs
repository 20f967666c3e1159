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

use anyhow::Result;
use std::process::ExitCode;

use crate::cli::PullArgs;
use crate::config::Config;
use crate::context::Context;
use crate::engine::{ApplyPolicy, Single, Status};
use crate::error::exit;
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror, Trust};
use crate::plan::manifest;
use crate::source::Source;
use crate::targets::local::LocalTarget;
use crate::{fsutil, input_err, lock};

/// Open the mirror at `args.url` with this host's identities and trusted writers.
fn open_mirror(ctx: &Context, args: &PullArgs) -> Result<Mirror> {
    let location = Location::parse(&args.url)?;
    let ids = super::mirror::identities(ctx, args.identity.as_deref())?;
    let store = Store::open(
        &location,
        &S3Settings {
            endpoint: args.s3.endpoint.clone(),
            region: args.s3.region.clone(),
        },
        false,
    )?;
    let trust = host_trust(ctx, args, &location)?;
    fsutil::ensure_private_dir_keep(&ctx.home)?;
    Ok(Mirror::open(store, &ids, &ctx.home.join("mirror-state"))?.with_trust(trust))
}

pub fn run(ctx: &Context, args: PullArgs) -> Result<ExitCode> {
    let dest = crate::context::absolute(&args.dest)?;
    if dest.exists() && !dest.is_dir() {
        return Err(input_err!("{} is not a directory", dest.display()));
    }
    let mirror = open_mirror(ctx, &args)?;
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
    let source = Source::snapshot(&mirror, &snap, false)?;
    let cache = manifest::cache_path(&ctx.home, &dest);
    let manifest = source.manifest();
    let single = Single::plan(
        Box::new(LocalTarget::new(&dest, cache, &source)?),
        manifest,
        args.max_delete,
    )?;
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; nothing was changed");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
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
        let code = if tp.has_changes() && args.detailed_exitcode {
            exit::CHANGES
        } else {
            exit::OK
        };
        return Ok(ExitCode::from(code));
    }
    // The same policy as apply, by construction: DEST-only paths need --delete, the
    // mass-delete guard holds, and DEST is verified against the snapshot afterwards.
    let policy = ApplyPolicy {
        delete: args.delete,
        overwrite: true,
        verify: true,
        max_delete: args.max_delete,
        source_files: manifest.file_count(),
        keep_extra: false,
        switch: Default::default(),
    };
    let r = single.apply(
        manifest,
        policy,
        &ctx.home.join("operations.log"),
        &format!("pull {}", mirror.store.display()),
    )?;
    if r.status == Status::Interrupted {
        eprintln!("offsync: interrupted; the pull was logged as interrupted");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
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
