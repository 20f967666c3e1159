//! `offsync apply [PLAN_FILE]`: execute exactly a plan, then verify and log.
//!
//! Invariants: with a plan file, nothing is transferred unless the source digest and every
//! target's fresh plan equal the saved ones (otherwise a diff is shown and apply refuses);
//! without one, the plan is made and shown first, and applied only after confirmation (a
//! terminal question, or `--yes`). Target-only paths are deleted only with `--delete` or
//! `delete: true`, and then only the listed ones. One apply per `$OFFSYNC_HOME` at a time.

use anyhow::{Context as _, Result};
use serde::Serialize;
use std::io::IsTerminal;
use std::process::ExitCode;

use crate::cli::ApplyArgs;
use crate::context::Context;
use crate::engine::{self, ApplyPolicy, Status};
use crate::error::exit;
use crate::oplog;
use crate::plan::Plan;
use crate::{input_err, interrupt, lock, prompt, sanitize};

#[derive(Serialize)]
struct ResultRow {
    target: String,
    status: String,
    changed: u64,
    deleted: u64,
    bytes: u64,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(ctx: &Context, args: ApplyArgs) -> Result<ExitCode> {
    let saved = match &args.plan_file {
        Some(p) => Some(Plan::read_file_for(p, &ctx.config_path())?),
        None => None,
    };
    if saved.is_none() && !args.yes && !ctx.interactive {
        return Err(input_err!(
            "apply changes targets: review `offsync plan` and pass --yes (needed without a terminal), or apply a saved plan file with --yes"
        ));
    }
    // Bad config is bad input: refuse it before the lock file is touched.
    super::plan::load_source(ctx)?;
    interrupt::install();
    let _lock = lock::acquire(&ctx.home)?;

    let names: Vec<String> = match (&saved, args.targets.is_empty()) {
        (Some(p), true) => p.targets.iter().map(|t| t.name.clone()).collect(),
        _ => args.targets.clone(),
    };
    let mut prepared = super::plan::prepare(ctx, &names)?;
    let max_delete = prepared.max_delete(args.max_delete);
    let plan = prepared.plan(max_delete);
    // Interrupted while planning: nothing is asked or printed, and every target still gets
    // its `interrupted` record below (the engine starts nothing once a signal arrived).
    let interrupted_early = interrupt::interrupted();

    if let Some(saved) = &saved {
        let mut stale = Vec::new();
        if saved.source.digest != plan.source.digest {
            stale.push("the source changed".to_string());
        }
        // A target that cannot be planned now (unreachable, not confined) fails on its own
        // below; it does not make the others' saved plans stale.
        for t in plan.targets.iter().filter(|t| t.error.is_none()) {
            match saved.targets.iter().find(|s| s.name == t.name) {
                None => stale.push(format!("target {} is not in the plan file", t.name)),
                Some(s) if !s.same_work(t) => stale.push(format!("target {} changed", t.name)),
                _ => {}
            }
        }
        if !stale.is_empty() && !interrupted_early {
            let diff = similar::TextDiff::from_lines(&saved.to_text(), &plan.to_text())
                .unified_diff()
                .header("saved plan", "plan now")
                .to_string();
            eprint!("{diff}");
            anyhow::bail!(
                "the saved plan is stale ({}); nothing was transferred; run `offsync plan --out FILE` again",
                stale.join("; ")
            );
        }
        if !args.yes && !ctx.interactive {
            return Err(input_err!(
                "pass --yes to apply the saved plan without a terminal"
            ));
        }
    }
    if !args.json && !interrupted_early {
        // A reader that went away (`| head`) does not stop an apply that was confirmed: its
        // output is best effort, its exit status and log record are what count.
        let _ = crate::out!("{}", plan.to_text());
    }
    if plan
        .targets
        .iter()
        .all(|t| t.error.is_some() || !t.has_changes())
        && !plan.has_errors()
        && !interrupted_early
    {
        if !args.json {
            let _ = crate::outln!("\nnothing to do: every target matches the source");
        } else {
            let _ = crate::outln!("[]");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && !interrupted_early && !prompt::confirm("Apply this plan?")? {
        anyhow::bail!("cancelled; nothing was changed");
    }

    let policy = ApplyPolicy {
        delete: args.delete || prepared.config.delete,
        overwrite: prepared.config.overwrite,
        verify: prepared.config.verify,
        max_delete,
        source_files: prepared.manifest.file_count(),
    };
    let manifest = &prepared.manifest;
    let excludes = &prepared.excludes;
    let workers = prepared.workers;
    let plan_ref = &plan;
    // On a terminal (and not --json): one transfer bar per target.
    let bars = (!args.json && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
    let results = engine::parallel(&mut prepared.targets, workers, |t| {
        let tp = plan_ref
            .targets
            .iter()
            .find(|p| p.name == t.info().name)
            .expect("every target was planned");
        let bar = bars.as_ref().map(|m| {
            let pb = m.add(indicatif::ProgressBar::new(
                (tp.changes.added.len() + tp.changes.modified.len() + tp.changes.metadata.len())
                    as u64,
            ));
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} paths",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_prefix(tp.name.clone());
            pb
        });
        let progress = |done: u64| {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        };
        let r = engine::apply_one(t.as_mut(), manifest, excludes, tp, policy, &progress);
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        t.close();
        (t.info().clone(), r)
    });

    // The transferred bytes were read from the source now: make sure it is still the source
    // the plan described.
    let (after, _) = crate::plan::manifest::build(
        &manifest.root,
        excludes,
        Some(&crate::plan::manifest::cache_path(
            &ctx.home,
            &manifest.root,
        )),
    )?;
    let source_moved = after.digest != manifest.digest;

    let mut records = Vec::new();
    let mut rows = Vec::new();
    let mut ok = true;
    let mut stopped = false;
    for (info, r) in &results {
        let mut status = r.status.clone();
        // A signal stops every child; whatever failed after it is an interruption. Work that
        // completed before it stays what it was.
        if interrupt::interrupted() && !status.is_success() {
            status = Status::Interrupted;
        }
        stopped |= status == Status::Interrupted;
        if source_moved && status.is_success() && !r.outcome.changed.is_empty() {
            status =
                Status::Failed("the source changed during apply; run plan and apply again".into());
        }
        ok &= status.is_success();
        let (changed, changed_hex) = oplog::encode_paths(&r.outcome.changed);
        let (deleted, deleted_hex) = oplog::encode_paths(&r.outcome.deleted);
        records.push(oplog::Record {
            timestamp: oplog::now(),
            target: info.name.clone(),
            host: info.host.clone(),
            operation: "apply".into(),
            status: status.name().into(),
            files_changed: changed,
            files_deleted: deleted,
            files_changed_hex: changed_hex,
            files_deleted_hex: deleted_hex,
            bytes: r.outcome.bytes,
            duration_ms: r.duration_ms,
            source_digest: plan.source.digest.clone(),
            plan_digest: plan.digest.clone(),
            error: status.error(),
            partial: r.outcome.partial,
        });
        rows.push(ResultRow {
            target: info.name.clone(),
            status: status.name().into(),
            changed: r.outcome.changed.len() as u64,
            deleted: r.outcome.deleted.len() as u64,
            bytes: r.outcome.bytes,
            duration_ms: r.duration_ms,
            error: status.error(),
        });
    }
    oplog::append(&ctx.home.join("operations.log"), &records)
        .context("cannot write operations.log")?;

    if args.json {
        let _ = crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let _ = crate::outln!();
        for r in &rows {
            let _ = match &r.error {
                None => crate::outln!(
                    "{:<11} {}  {} changed, {} deleted, {}{}",
                    r.status,
                    r.target,
                    r.changed,
                    r.deleted,
                    crate::plan::human_bytes(r.bytes),
                    if policy.verify && r.status == "ok" {
                        ", verified"
                    } else {
                        ""
                    }
                ),
                Some(e) => crate::outln!(
                    "{:<11} {}  {}",
                    r.status.to_uppercase(),
                    r.target,
                    sanitize::for_terminal(e)
                ),
            };
        }
    }
    if stopped {
        return Ok(ExitCode::from(interrupt::exit_code()));
    }
    if interrupt::interrupted() {
        eprintln!(
            "offsync: the signal arrived after the apply had finished; nothing was interrupted"
        );
    }
    Ok(ExitCode::from(if ok { exit::OK } else { exit::FAILURE }))
}
