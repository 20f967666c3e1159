//! `offsync mirror …`: create, inspect, restore, prune and re-key encrypted mirrors.
//!
//! Each subcommand turns its arguments into a call on [`crate::mirror`] and renders the
//! result: `prune`, `rekey` and `upgrade` compute a plan there ([`prune::PrunePlan`],
//! [`rekey::RekeyPlan`], [`upgrade::UpgradePlan`]), show it and execute that same value; `sign` is
//! [`commit::sign_latest`]. No mirror protocol lives here.
//!
//! Invariants: `add` checks the store (credentials, bucket, reachability) before it writes
//! anything, and saves config.yaml only after the mirror is initialised; `prune`, `rekey` and
//! `upgrade` change nothing without `--yes`; every read goes through the rollback check and the writer
//! check (the newest generation signed by this controller or a writer added with `mirror
//! writers add`); every generation read is validated before anything is printed or written.

use crate::engine;
use crate::source::Source;
use crate::targets::local::LocalTarget;
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{
    MirrorAddArgs, MirrorCommand, MirrorLsArgs, MirrorPruneArgs, MirrorRekeyArgs,
    MirrorRestoreArgs, MirrorShowArgs, MirrorSignArgs, MirrorUpgradeArgs, RecipientArgs,
    RecipientsCommand, WriterArgs, WritersCommand,
};
use crate::config::{Config, MirrorConfig};
use crate::context::Context;
use crate::mirror::commit::{self, Signed};
use crate::mirror::crypto::{self, Identity};
use crate::mirror::snapshot::{SnapEntry, Snapshot};
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror, prune, rekey, upgrade};
use crate::plan::human_bytes;
use crate::{fsutil, input_err, prompt, sanitize};

pub fn dispatch(ctx: &Context, cmd: MirrorCommand) -> Result<ExitCode> {
    match cmd {
        MirrorCommand::Add(a) => add(ctx, a),
        MirrorCommand::Snapshots(a) => snapshots(ctx, a),
        MirrorCommand::Fleet(a) => fleet(ctx, a),
        MirrorCommand::Ls(a) => ls(ctx, a),
        MirrorCommand::Recipients(RecipientsCommand::List(a)) => recipients_list(ctx, a),
        MirrorCommand::Recipients(RecipientsCommand::Add(a)) => recipients_change(ctx, a, true),
        MirrorCommand::Recipients(RecipientsCommand::Remove(a)) => recipients_change(ctx, a, false),
        MirrorCommand::Rekey(a) => rekey(ctx, a),
        MirrorCommand::Restore(a) => restore_cmd(ctx, a),
        MirrorCommand::Prune(a) => prune(ctx, a),
        MirrorCommand::Writers(WritersCommand::List(a)) => writers_list(ctx, a),
        MirrorCommand::Writers(WritersCommand::Add(a)) => writers_change(ctx, a, true),
        MirrorCommand::Writers(WritersCommand::Remove(a)) => writers_change(ctx, a, false),
        MirrorCommand::Sign(a) => sign(ctx, a),
        MirrorCommand::Upgrade(a) => upgrade_cmd(ctx, a),
    }
}

/// The identities to open a mirror with: `--identity`/`OFFSYNC_IDENTITY_FILE`, else this
/// machine's own.
pub fn identities(ctx: &Context, explicit: Option<&Path>) -> Result<Vec<Identity>> {
    match explicit {
        Some(p) => crypto::read_identity_file(p),
        None => {
            let p = mirror::identity_path(&ctx.home);
            if !p.exists() {
                return Err(input_err!(
                    "no age identity at {}; pass --identity FILE or set OFFSYNC_IDENTITY_FILE",
                    p.display()
                ));
            }
            crypto::read_identity_file(&p)
        }
    }
}

fn state_dir(ctx: &Context) -> PathBuf {
    ctx.home.join("mirror-state")
}

fn find(config: &Config, name: &str) -> Result<MirrorConfig> {
    config.find_mirror(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = config.mirrors.iter().map(|m| m.name.as_str()).collect();
        input_err!(
            "no mirror named {:?}; known mirrors: {}",
            sanitize::for_terminal(name),
            if names.is_empty() {
                "none (add one with `offsync mirror add NAME URL`)".to_string()
            } else {
                names.join(", ")
            }
        )
    })
}

/// Open the configured mirror `name` as a reader: only generations signed by this
/// controller or its configured writers are accepted.
pub fn open_named(ctx: &Context, name: &str, identity: Option<&Path>) -> Result<Mirror> {
    open_named_as(ctx, name, identity, false)
}

/// [`open_named`]; `writer` also loads this controller's signing key and accepts an unsigned
/// newest generation of a never-signed mirror (to migrate it).
fn open_named_as(
    ctx: &Context,
    name: &str,
    identity: Option<&Path>,
    writer: bool,
) -> Result<Mirror> {
    let config = Config::load(&ctx.config_path())?;
    let m = find(&config, name)?;
    let trust = mirror::controller_trust(&ctx.home, &m.name, &m.writers, writer)?;
    let location = Location::parse(&m.url)?;
    let store = Store::open(
        &location,
        &S3Settings {
            endpoint: m.endpoint.clone(),
            region: m.region.clone(),
        },
        false,
    )?;
    let opened =
        Mirror::open(store, &identities(ctx, identity)?, &state_dir(ctx))?.with_trust(trust);
    if writer {
        return Ok(opened.with_signer(mirror::own_signing_key(&ctx.home)?));
    }
    Ok(opened)
}

fn add(ctx: &Context, args: MirrorAddArgs) -> Result<ExitCode> {
    let config_path = ctx.config_path();
    let mut config = Config::load(&config_path)?;
    let name = args.name.trim().to_string();
    if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_control) {
        return Err(input_err!(
            "mirror name {:?} is not usable; pick a plain name like `offsite`",
            sanitize::for_terminal(&args.name)
        ));
    }
    if config.all_names().contains(&name) {
        return Err(input_err!(
            "a target or mirror named {name:?} already exists; pick another name or remove it with `offsync target remove {name}`"
        ));
    }
    let location = Location::parse(&args.url)?;
    for r in &args.recipients {
        crypto::parse_recipient(r)?;
    }
    let s3 = S3Settings {
        endpoint: args.s3.endpoint.clone(),
        region: args.s3.region.clone(),
    };
    if let Location::S3 { .. } = location {
        // Reachability, credentials and bucket, before anything is written anywhere.
        let store = Store::open(&location, &s3, false)?;
        store.list("keys")?;
    } else if let Location::Local(dir) = &location
        && !dir.exists()
        && !dir.parent().is_some_and(Path::is_dir)
    {
        return Err(input_err!(
            "the parent of {} does not exist; create it (or mount the disk) first",
            dir.display()
        ));
    }
    let store = Store::open(&location, &s3, true)?;
    let (me, created_identity) =
        crypto::load_or_create_identity(&mirror::identity_path(&ctx.home))?;
    if created_identity {
        eprintln!(
            "created this controller's age identity: {}",
            mirror::identity_path(&ctx.home).display()
        );
    }
    let (mut m, created) = Mirror::init(store, &me, &args.recipients, &state_dir(ctx))?;
    if !created && !args.recipients.is_empty() {
        let mut r = m.recipients.clone();
        for x in &args.recipients {
            if !r.contains(x) {
                r.push(x.clone());
            }
        }
        m.reseal(r)?;
    }
    config.mirrors.push(MirrorConfig {
        name: name.clone(),
        url: location.url(),
        endpoint: args.s3.endpoint,
        region: args.s3.region,
        writers: Vec::new(),
        uploads: None,
    });
    config.save(&config_path)?;
    crate::outln!(
        "{} mirror {name} at {} (mirror key {})",
        if created {
            "created"
        } else {
            "joined existing"
        },
        m.store.display(),
        m.key.key_id()
    )?;
    crate::outln!("this controller's age recipient: {}", me.recipient)?;
    crate::outln!("recipients who can open it: {}", m.recipients.join(", "))?;
    crate::outln!("next: `offsync plan --target {name}`, then `offsync apply --target {name}`")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct SnapshotRow {
    generation: u64,
    created: String,
    source_digest: String,
    files: u64,
    bytes: u64,
}

/// `mirror fleet NAME`: the hosts' heartbeats (see `agent::heartbeat`), newest generation
/// first; everything shown comes from the mirror and is sanitised.
fn fleet(ctx: &Context, args: MirrorShowArgs) -> Result<ExitCode> {
    use crate::agent::heartbeat;
    let m = open_named(ctx, &args.name, None)?;
    let listed = heartbeat::read_all(&m)?;
    if args.json {
        let rows: Vec<serde_json::Value> = listed
            .iter()
            .map(|(path, r)| match r {
                Ok((hb, key)) => serde_json::json!({"object": path, "heartbeat": hb, "key": key}),
                Err(e) => serde_json::json!({"object": path, "error": e}),
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        eprintln!(
            "no heartbeats in {}; hosts write them with `offsync pull --heartbeat`",
            m.store.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<24}  {:>10}  {:<24}  {:<12}  KEY",
        "HOST",
        "GENERATION",
        "LAST SEEN",
        "RESULT"
    )?;
    for (path, r) in &listed {
        match r {
            Ok((hb, key)) => crate::outln!(
                "{:<24}  {:>10}  {:<24}  {:<12}  {}",
                sanitize::for_terminal(&hb.host_id),
                hb.generation.map_or("-".into(), |g| g.to_string()),
                sanitize::for_terminal(&hb.at),
                sanitize::for_terminal(&hb.last_result),
                key
            )?,
            Err(e) => crate::outln!("{}: unreadable: {e}", sanitize::for_terminal(path))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshots(ctx: &Context, args: MirrorShowArgs) -> Result<ExitCode> {
    let m = open_named(ctx, &args.name, None)?;
    let mut rows = Vec::new();
    if let Some(&first) = m.generations()?.first() {
        m.walk_verified(first, |s, _| {
            rows.push(SnapshotRow {
                generation: s.generation,
                created: sanitize::for_terminal(&s.created),
                source_digest: sanitize::for_terminal(&s.source.digest),
                files: s.files,
                bytes: s.bytes,
            });
            Ok(())
        })?;
    } else {
        m.latest()?;
    }
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("format: offsync-mirror/{}", m.format())?;
    if rows.is_empty() {
        eprintln!(
            "no snapshots yet; run `offsync apply --target {}`",
            args.name
        );
    } else {
        crate::outln!(
            "{:>10}  {:<24}  {:>8}  {:>10}  SOURCE DIGEST",
            "GEN",
            "CREATED",
            "FILES",
            "BYTES"
        )?;
        for r in &rows {
            crate::outln!(
                "{:>10}  {:<24}  {:>8}  {:>10}  {}",
                r.generation,
                r.created,
                r.files,
                human_bytes(r.bytes),
                &r.source_digest
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshot `generation` (newest when `None`), after the rollback and writer checks.
fn pick(m: &Mirror, generation: Option<u64>) -> Result<Snapshot> {
    let latest = m.latest()?;
    match (generation, latest) {
        (_, None) => Err(input_err!(
            "{} has no snapshot yet; run `offsync apply` first",
            m.store.display()
        )),
        (None, Some((s, _))) => Ok(s),
        (Some(g), Some(_)) => Ok(m.verified(g)?.0),
    }
}

fn ls(ctx: &Context, args: MirrorLsArgs) -> Result<ExitCode> {
    let m = open_named(ctx, &args.name, None)?;
    let snap = pick(&m, args.snapshot)?;
    if args.json {
        #[derive(Serialize)]
        struct Ls<'a> {
            generation: u64,
            created: &'a str,
            entries: &'a [SnapEntry],
        }
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&Ls {
                generation: snap.generation,
                created: &snap.created,
                entries: &snap.entries,
            })?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &snap.entries {
        let when = chrono::DateTime::from_timestamp(e.mtime_s, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let mut line = format!(
            "{:<7} {:04o} {:>10} {}  {}",
            e.kind,
            e.mode,
            e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            when,
            sanitize::for_terminal(&e.path)
        );
        if let Some(t) = &e.target {
            line.push_str(&format!(" -> {}", sanitize::for_terminal(t)));
        }
        crate::outln!("{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn recipients_list(ctx: &Context, args: MirrorShowArgs) -> Result<ExitCode> {
    let m = open_named(ctx, &args.name, None)?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&m.recipients)?)?;
    } else {
        for r in &m.recipients {
            crate::outln!("{r}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn recipients_change(ctx: &Context, args: RecipientArgs, add: bool) -> Result<ExitCode> {
    crypto::parse_recipient(&args.recipient)?;
    let me = identities(ctx, None)?;
    let mut m = open_named(ctx, &args.name, None)?;
    let mut r = m.recipients.clone();
    let key = args.recipient.trim().to_string();
    if add {
        if r.contains(&key) {
            eprintln!("{key} can already open {}", args.name);
            return Ok(ExitCode::SUCCESS);
        }
        r.push(key.clone());
    } else {
        if !r.contains(&key) {
            return Err(input_err!(
                "{key} is not a recipient of {}; see `offsync mirror recipients list {}`",
                args.name,
                args.name
            ));
        }
        if me.iter().any(|i| i.recipient == key) {
            return Err(input_err!(
                "{key} is this controller's own recipient; removing it would lock this controller out of {}",
                args.name
            ));
        }
        r.retain(|x| x != &key);
    }
    m.reseal(r)?;
    if add {
        crate::outln!("{key} can now open {}", args.name)?;
    } else {
        crate::outln!(
            "{key} can no longer open the key file of {}.\nIt may have kept the mirror key: run `offsync mirror rekey {}` so it cannot read past or future data.",
            args.name,
            args.name
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn restore_cmd(ctx: &Context, args: MirrorRestoreArgs) -> Result<ExitCode> {
    let dest = crate::context::absolute(&args.dest)?;
    if let Ok(mut rd) = std::fs::read_dir(&dest)
        && rd.next().is_some()
        && !args.force
    {
        return Err(input_err!(
            "{} is not empty; restore into an empty directory, or pass --force to replace the files the snapshot has",
            dest.display()
        ));
    }
    if dest.exists() && !dest.is_dir() {
        return Err(input_err!("{} is not a directory", dest.display()));
    }
    let includes = Includes::new(&args.includes)?;
    let m = open_named(ctx, &args.name, args.identity.as_deref())?;
    let snap = pick(&m, args.snapshot)?;
    let map = snap.entry_map()?;
    let selected: BTreeSet<Vec<u8>> = includes.select(&map);
    if selected.is_empty() {
        return Err(input_err!(
            "no path in generation {} matches the --include patterns",
            snap.generation
        ));
    }
    crate::fsutil::create_dir_all_mode(&dest, crate::mirror::restore::NEW_DIR_MODE)?;
    // The engine, as for apply and pull: plan DEST against the (selected part of the)
    // snapshot, write exactly the differences, verify. Other files in DEST (`--force`) are
    // left alone, never deleted.
    crate::interrupt::install();
    let mut source = Source::snapshot(&m, &snap, args.keep_special_modes)?;
    source.retain(|p| selected.contains(p));
    let cache = crate::plan::manifest::cache_path(&ctx.home, &dest);
    let manifest = source.manifest();
    let single = engine::Single::plan(
        Box::new(LocalTarget::new(&dest, cache, &source)?.replacing_escaping_links()),
        manifest,
        None,
    )?;
    let policy = engine::ApplyPolicy {
        delete: false,
        overwrite: true,
        verify: true,
        max_delete: None,
        source_files: manifest.file_count(),
        keep_extra: true,
        switch: Default::default(),
    };
    let r = single.apply(
        manifest,
        policy,
        &ctx.home.join("operations.log"),
        &format!("restore {}", args.name),
        // restore has no `--json`: its result is text.
        crate::ui::transfer_progress(false).as_ref(),
    )?;
    if r.status == engine::Status::Interrupted {
        eprintln!("offsync: interrupted; the restore was logged as interrupted");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
    if let Some(e) = r.status.to_error(&dest.display().to_string()) {
        return Err(e);
    }
    crate::outln!(
        "restored {} entries ({}) of generation {} into {}, every file verified",
        selected.len(),
        human_bytes(r.outcome.bytes),
        snap.generation,
        dest.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `--include` globs (gitignore syntax): an entry is selected when it or a parent matches;
/// the parents of selected entries come along.
struct Includes(Option<ignore::gitignore::Gitignore>);

impl Includes {
    fn new(globs: &[String]) -> Result<Includes> {
        if globs.is_empty() {
            return Ok(Includes(None));
        }
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for g in globs {
            b.add_line(None, g)
                .map_err(|e| input_err!("--include {g:?}: {e}"))?;
        }
        Ok(Includes(Some(
            b.build().map_err(|e| input_err!("--include: {e}"))?,
        )))
    }

    fn select(&self, map: &BTreeMap<Vec<u8>, &SnapEntry>) -> BTreeSet<Vec<u8>> {
        let Some(gi) = &self.0 else {
            return map.keys().cloned().collect();
        };
        let mut out = BTreeSet::new();
        for (p, e) in map {
            let path = Path::new(std::ffi::OsStr::from_bytes(p));
            if gi
                .matched_path_or_any_parents(path, e.kind == "dir")
                .is_ignore()
            {
                out.insert(p.clone());
                for a in path.ancestors().skip(1) {
                    if !a.as_os_str().is_empty() {
                        out.insert(a.as_os_str().as_encoded_bytes().to_vec());
                    }
                }
            }
        }
        out.retain(|p| map.contains_key(p));
        out
    }
}

/// `mirror prune --json` (a documented wire format).
#[derive(Serialize)]
struct PruneReport {
    keep: Vec<u64>,
    delete_generations: Vec<u64>,
    /// Unreferenced objects removed: single objects and dead pack members.
    delete_objects: usize,
    /// Stored bytes freed (planned: deleted objects and packs plus the repacks' unused bytes).
    delete_bytes: u64,
    delete_packs: Vec<PackReport>,
    repack_packs: Vec<PackReport>,
    delete_indexes: usize,
    rewrite_indexes: usize,
    total_bytes: u64,
    unused_bytes: u64,
    unused_bytes_after: u64,
    max_unused: u8,
    young_unreferenced_objects: usize,
    missing_objects: usize,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    spared: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    damaged: Vec<String>,
}

#[derive(Serialize)]
struct PackReport {
    pack: String,
    stored_size: u64,
    live_bytes: u64,
    dead_bytes: u64,
}

impl PackReport {
    fn from(p: &prune::PackUse) -> PackReport {
        PackReport {
            pack: p.pack.clone(),
            stored_size: p.stored_size,
            live_bytes: p.live_bytes,
            dead_bytes: p.dead_bytes,
        }
    }
}

fn prune(ctx: &Context, args: MirrorPruneArgs) -> Result<ExitCode> {
    let keep = NonZeroUsize::new(args.keep as usize)
        .ok_or_else(|| input_err!("--keep 0 would delete every snapshot; keep at least 1"))?;
    let m = open_named(ctx, &args.name, None)?;
    let plan = prune::prune_plan(&m, keep, Duration::from_secs(args.min_age), args.max_unused)?;
    let done = if args.yes {
        Some(prune::prune(&m, &plan)?)
    } else {
        None
    };
    let (objects, bytes) = match &done {
        Some(d) => (d.objects, d.bytes),
        None => (
            plan.unreferenced_objects(),
            plan.delete_bytes() + plan.repack_bytes(),
        ),
    };
    let report = PruneReport {
        keep: plan.keep.clone(),
        delete_generations: plan.delete_generations.clone(),
        delete_objects: objects,
        delete_bytes: bytes,
        delete_packs: plan.delete_packs.iter().map(PackReport::from).collect(),
        repack_packs: plan.repack.iter().map(PackReport::from).collect(),
        delete_indexes: plan.delete_indexes.len(),
        rewrite_indexes: plan.rewrite_indexes.len(),
        total_bytes: plan.total_bytes,
        unused_bytes: plan.unused_bytes,
        unused_bytes_after: plan.unused_after,
        max_unused: plan.max_unused,
        young_unreferenced_objects: plan.young_unreferenced_objects,
        missing_objects: plan.missing_objects,
        deleted: args.yes,
        spared: done.as_ref().map(|d| d.spared),
        damaged: done.as_ref().map(|d| d.damaged.clone()).unwrap_or_default(),
    };
    let damaged = !report.damaged.is_empty();
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_prune(&plan, &report, done.as_ref(), &args)?;
    }
    if damaged {
        return Err(anyhow::anyhow!(
            "{} pack(s) were kept because an object in them failed its check ({}); run `offsync verify --target {} --deep`",
            report.damaged.len(),
            crate::sanitize::for_terminal(&report.damaged.join("; ")),
            args.name
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_prune(
    plan: &prune::PrunePlan,
    report: &PruneReport,
    done: Option<&prune::Pruned>,
    args: &MirrorPruneArgs,
) -> Result<()> {
    /// Packs listed one per line; the rest are counted (`--json` lists all).
    const SHOWN: usize = 20;
    let verb = if args.yes { "deleted" } else { "would delete" };
    crate::outln!(
        "{verb} {} generation(s) {:?} and {} unreferenced object(s), freeing {}; keeping generation(s) {:?}",
        report.delete_generations.len(),
        report.delete_generations,
        report.delete_objects,
        human_bytes(report.delete_bytes),
        report.keep
    )?;
    for (what, list) in [("delete", &plan.delete_packs), ("repack", &plan.repack)] {
        for p in list.iter().take(SHOWN) {
            let state = if p.indexed { "" } else { ", in no index" };
            crate::outln!(
                "  {what} {} ({}: {} used, {} unused{state})",
                mirror::packs::pack_path(&p.pack),
                human_bytes(p.stored_size),
                human_bytes(p.live_bytes),
                human_bytes(p.dead_bytes)
            )?;
        }
        if list.len() > SHOWN {
            crate::outln!(
                "  … and {} more pack(s) to {what} (--json lists all)",
                list.len() - SHOWN
            )?;
        }
    }
    let (before, after) = plan.unused_shares();
    crate::outln!(
        "unused: {} of {} ({before:.1} %) in packs older than --min-age; after the repack {after:.1} % (--max-unused {} %)",
        human_bytes(plan.unused_bytes),
        human_bytes(plan.total_bytes),
        plan.max_unused
    )?;
    if !plan.rewrite_indexes.is_empty() || !plan.delete_indexes.is_empty() {
        crate::outln!(
            "index objects: {} replaced by one new, {} deleted",
            plan.rewrite_indexes.len(),
            plan.delete_indexes.len()
        )?;
    }
    if plan.young_unreferenced_objects > 0 {
        crate::outln!(
            "{} unreferenced object(s) are younger than --min-age {}s and were kept (an apply may still be writing them)",
            plan.young_unreferenced_objects,
            args.min_age
        )?;
    }
    if plan.missing_objects > 0 {
        crate::outln!(
            "warning: {} referenced object(s) are in no index and no object file; packs no index lists were kept (they may hold them); run `offsync verify --target {} --deep`",
            plan.missing_objects,
            args.name
        )?;
    }
    if let Some(d) = done.filter(|d| d.spared > 0) {
        crate::outln!(
            "{} object(s) or pack(s) are referenced by a generation written during the prune and were kept",
            d.spared
        )?;
    }
    if !args.yes && !plan.is_empty() {
        crate::outln!("run again with --yes to do this")?;
    }
    Ok(())
}

fn rekey(ctx: &Context, args: MirrorRekeyArgs) -> Result<ExitCode> {
    if !args.yes && !ctx.interactive {
        return Err(input_err!(
            "rekey re-encrypts the whole mirror; pass --yes (needed without a terminal)"
        ));
    }
    let _lock = crate::lock::acquire(&ctx.home)?;
    let m = open_named_as(ctx, &args.name, None, true)?;
    let plan = rekey::rekey_plan(&m)?;
    if !plan.resume
        && !args.yes
        && !prompt::confirm(&format!(
            "Re-encrypt all of {} ({} snapshot(s), {} distinct file(s), {}) under a new key?",
            args.name,
            plan.rewrite.len(),
            plan.contents.len(),
            human_bytes(plan.bytes())
        ))?
    {
        anyhow::bail!("cancelled; nothing was changed");
    }
    let scratch = fsutil::ScratchDir::new(&ctx.home, "rekey")?;
    let done = rekey::rekey(&m, &plan, scratch.path())?;
    // Read the rewritten newest generation once, so this machine remembers the new chain.
    open_named_as(ctx, &args.name, None, true)?.latest()?;
    crate::outln!(
        "re-encrypted {} object(s) ({} of them into new packs) and {} snapshot(s) of {} under mirror key {}; deleted {} old object(s), {} old pack(s) and {} old index object(s)",
        done.objects,
        done.packed,
        done.snapshots,
        args.name,
        done.key_id,
        done.deleted_objects,
        done.deleted_packs,
        done.deleted_indexes
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `mirror upgrade --json` (a documented wire format).
#[derive(Serialize)]
struct UpgradeReport {
    /// The format the marker named before.
    format_before: u32,
    /// The format it names after (unchanged without --yes).
    format: u32,
    /// Small single objects packed (or to pack), and their plaintext bytes.
    pack_objects: usize,
    pack_bytes: u64,
    /// Single objects deleted (or to delete) because a pack now holds them.
    delete_objects: usize,
    upgraded: bool,
}

fn upgrade_cmd(ctx: &Context, args: MirrorUpgradeArgs) -> Result<ExitCode> {
    let m = open_named(ctx, &args.name, None)?;
    if m.rekey_pending().is_some() {
        anyhow::bail!(
            "a rekey of {} was interrupted; finish it with `offsync mirror rekey {}` first (it packs the mirror too)",
            args.name,
            args.name
        );
    }
    let plan = upgrade::upgrade_plan(&m)?;
    let done = if args.yes && !plan.is_empty() {
        Some(upgrade::upgrade(&m, &plan)?)
    } else {
        None
    };
    let report = UpgradeReport {
        format_before: plan.format,
        format: if done.is_some() {
            mirror::FORMAT
        } else {
            plan.format
        },
        pack_objects: plan.pack.len(),
        pack_bytes: plan.bytes(),
        delete_objects: done
            .as_ref()
            .map_or(plan.pack.len() + plan.delete.len(), |d| d.deleted),
        upgraded: done.is_some(),
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let current = format!("offsync-mirror/{}", mirror::FORMAT);
    if plan.is_empty() {
        crate::outln!(
            "{} is {current} and holds no single object to pack; nothing to do",
            args.name
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let marker = if plan.format < mirror::FORMAT {
        format!(
            "mark it {current} (it is offsync-mirror/{}; offsync before /2 cannot read it then), ",
            plan.format
        )
    } else {
        String::new()
    };
    match &done {
        None => {
            crate::outln!(
                "upgrade of {} would {marker}pack {} single object(s) below 1 MiB ({}) and then delete {} single object(s) a pack holds",
                args.name,
                report.pack_objects,
                human_bytes(report.pack_bytes),
                report.delete_objects
            )?;
            crate::outln!("run again with --yes to convert")?;
        }
        Some(d) => crate::outln!(
            "upgraded {} to {current}: packed {} object(s) ({}), deleted {} single object(s) now in packs",
            args.name,
            d.packed,
            human_bytes(d.bytes),
            d.deleted
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn writers_list(ctx: &Context, args: MirrorShowArgs) -> Result<ExitCode> {
    let config = Config::load(&ctx.config_path())?;
    let m = find(&config, &args.name)?;
    #[derive(Serialize)]
    struct Row {
        key: String,
        fingerprint: String,
        this_controller: bool,
    }
    let mut rows = Vec::new();
    if let Some(k) = mirror::own_public_key(&ctx.home)? {
        rows.push(Row {
            key: mirror::key_line(&k),
            fingerprint: crate::keys::fingerprint(&k),
            this_controller: true,
        });
    }
    for w in &m.writers {
        for k in mirror::parse_writer_keys(w, "config.yaml writer")? {
            rows.push(Row {
                key: mirror::key_line(&k),
                fingerprint: crate::keys::fingerprint(&k),
                this_controller: false,
            });
        }
    }
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        for r in &rows {
            crate::outln!(
                "{}  {}{}",
                r.fingerprint,
                r.key,
                if r.this_controller {
                    "  (this controller)"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn writers_change(ctx: &Context, args: WriterArgs, add: bool) -> Result<ExitCode> {
    let config_path = ctx.config_path();
    let mut config = Config::load(&config_path)?;
    find(&config, &args.name)?;
    let keys = mirror::parse_writer_keys(&args.key, "writer key")?;
    let own = mirror::own_public_key(&ctx.home)?;
    let entry = config
        .mirrors
        .iter_mut()
        .find(|m| m.name == args.name)
        .context("found above")?;
    let mut changed = Vec::new();
    for k in &keys {
        let line = mirror::key_line(k);
        let fp = crate::keys::fingerprint(k);
        let present = entry.writers.iter().any(|w| {
            mirror::parse_writer_keys(w, "config.yaml writer")
                .is_ok_and(|ws| ws.iter().any(|x| x.key_data() == k.key_data()))
        });
        let is_own = own.as_ref().is_some_and(|o| o.key_data() == k.key_data());
        if add {
            if is_own {
                eprintln!("{fp} is this controller's own key; it is always trusted");
            } else if present {
                eprintln!("{fp} is already a writer of {}", args.name);
            } else {
                entry.writers.push(line);
                changed.push(fp);
            }
        } else {
            if is_own {
                return Err(input_err!(
                    "{fp} is this controller's own key; it always signs what this controller writes and cannot be removed"
                ));
            }
            if !present {
                return Err(input_err!(
                    "{fp} is not a writer of {}; see `offsync mirror writers list {}`",
                    args.name,
                    args.name
                ));
            }
            entry.writers.retain(|w| {
                !mirror::parse_writer_keys(w, "config.yaml writer")
                    .is_ok_and(|ws| ws.iter().any(|x| x.key_data() == k.key_data()))
            });
            changed.push(fp);
        }
    }
    if changed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    config.save(&config_path)?;
    for fp in changed {
        if add {
            crate::outln!(
                "{fp} may now write {}: its signed snapshots are accepted",
                args.name
            )?;
        } else {
            crate::outln!(
                "{fp} can no longer write {}: a newest generation it signs is refused from now on. Hosts that trust it keep doing so until it is removed from their --trust / OFFSYNC_TRUSTED_WRITERS and pins.",
                args.name
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(ctx: &Context, args: MirrorSignArgs) -> Result<ExitCode> {
    let _lock = crate::lock::acquire(&ctx.home)?;
    let m = open_named_as(ctx, &args.name, None, true)?;
    let signer = m
        .signer()
        .context("a writer has a signing key")?
        .public_key()
        .clone();
    match commit::sign_latest(&m)? {
        Signed::Empty => crate::outln!(
            "{} has no snapshot yet; the first apply writes a signed one",
            args.name
        )?,
        Signed::Already { generation, by } => crate::outln!(
            "generation {generation} of {} is already signed by {}; nothing to do",
            args.name,
            crate::keys::fingerprint(&by)
        )?,
        Signed::Conflict { generation } => anyhow::bail!(
            "another writer wrote generation {generation} of {} first; run `offsync mirror sign {}` again",
            args.name,
            args.name
        ),
        Signed::Written { from, generation } => crate::outln!(
            "signed {}: generation {generation} (same files as {from}) is signed by {} and vouches for every older generation; readers must trust that key (hosts: `offsync pull --trust 'KEY'`, see `offsync mirror writers list {}`)",
            args.name,
            mirror::describe_key(&signer),
            args.name
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
