//! `offsync apply [PLAN_FILE]`: execute exactly a plan, then verify and log.
//!
//! Invariants: with a plan file, nothing is transferred unless the source digest equals the
//! saved one and every target is proven to still match its saved part: one quick dry run
//! whose fingerprint equals the plan's `state`, or else a fresh plan in the plan's mode whose
//! work equals the saved one (otherwise a diff is shown and apply refuses). The quick proof
//! is as blind as the quick check: a file changed on the target between plan and apply with
//! its size and mtime kept is not seen (nor by the verification after the transfer, which
//! compares by checksum only what was sent); `offsync verify` compares every file. Without a
//! plan file, the plan `offsync plan` kept (`last-plan.json`) is proven the same way, or the
//! plan is made; it is shown first, and applied only after confirmation (a terminal question,
//! proven again afterwards, or `--yes`). A saved plan is applied without a question (it was the
//! review) with the decisions it records (`plan --delete`); `--delete` cannot add one to it.
//! Targets apply would refuse (target-only paths without a delete decision, the mass-delete
//! guard) are reported before the question, which names only the targets that will change.
//! Target-only paths are deleted only with `--delete`, `extra: delete` (or `delete: true`),
//! and then only the listed ones; `extra: keep` leaves them. One apply per `$OFFSYNC_HOME` at
//! a time.
//! This file turns arguments into a session, asks, calls `engine::apply_all`, logs, renders
//! and maps the exit status; the engine does the work.

use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;

use crate::cli::ApplyArgs;
use crate::context::Context;
use crate::engine::{self, ApplyPolicy, ApplyResult, Status};
use crate::error::{ErrorKind, exit};
use crate::oplog::Outcome;
use crate::plan::Plan;
use crate::session::{self, Session};
use crate::targets::TargetInfo;
use crate::{input_err, interrupt, lock, prompt, sanitize, ui};

/// One row of `apply --json`.
#[derive(Serialize)]
struct ResultRow {
    target: String,
    status: Outcome,
    changed: u64,
    deleted: u64,
    bytes: u64,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<ErrorKind>,
    /// `releases` targets: the release uploaded, when `current` was switched to it, what
    /// was pruned, and why releases beyond `keep:` stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    switched_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pruned: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn run(ctx: &Context, args: ApplyArgs) -> Result<ExitCode> {
    if args.dry_run {
        // `apply -n` is `plan` with the same selection: nothing is locked, asked or changed.
        return crate::commands::plan::run(
            ctx,
            crate::cli::PlanArgs {
                targets: args.targets,
                json: args.json,
                out: None,
                detailed_exitcode: args.detailed_exitcode,
                max_delete: args.max_delete,
                delete: args.delete,
                check: args.check,
                summary: false,
                stat: false,
                excludes: args.excludes,
            },
        );
    }
    let extra = session::extra_excludes(&args.excludes)?;
    let saved = match &args.plan_file {
        Some(p) => {
            // The plan file is read first (a bad one is bad input whatever the config says);
            // its source is checked against the configured one when there is a config.
            let configured = crate::config::Config::load(&ctx.config_path())
                .ok()
                .and_then(|c| c.source);
            Some(Plan::read_file_for(p, configured.as_deref())?)
        }
        None => None,
    };
    // The run's delete decision: a saved plan's own (it was the review); `--delete` cannot
    // add one it was made without.
    let delete = match &saved {
        Some(p) if args.delete && !p.delete => {
            return Err(input_err!(
                "--delete conflicts with plan file {}, which was made without --delete; nothing was changed; plan again with `offsync plan --delete --out FILE`, or drop --delete",
                args.plan_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ));
        }
        Some(p) => p.delete,
        None => args.delete,
    };
    if saved.is_some() && args.check.is_some() {
        return Err(input_err!(
            "--check cannot change a saved plan (it keeps the comparison it was made with); plan again with `offsync plan --check MODE --out FILE`, or drop --check"
        ));
    }
    if saved.is_none() && !args.yes && !ctx.interactive {
        return Err(input_err!(
            "apply changes targets: review `offsync plan` and pass --yes (needed without a terminal), or apply a saved plan file with --yes"
        ));
    }
    // Bad config is bad input: refuse it before the lock file is touched.
    let (_, _, excludes) = session::load_source_excluding(ctx, &extra)?;
    // A saved plan was made with its excludes (`source.excludes`); other ones would make
    // another plan, so they are refused as bad input rather than found stale after hashing.
    if let Some(p) = &saved
        && !extra.is_empty()
        && p.source.excludes != excludes.patterns()
    {
        return Err(input_err!(
            "--exclude/--exclude-from cannot change a saved plan (it was made with excludes {:?}); plan again with `offsync plan --exclude … --out FILE`, or drop them",
            p.source.excludes
        ));
    }
    interrupt::install();
    let _lock = lock::acquire(&ctx.home)?;

    let names: Vec<String> = match (&saved, args.targets.is_empty()) {
        (Some(p), true) => p.targets.iter().map(|t| t.name.clone()).collect(),
        _ => args.targets.clone(),
    };
    let mut session = Session::open_excluding(ctx, &names, &extra)?;
    session.set_check(args.check);
    if let Some(rate) = &args.bwlimit {
        for t in &mut session.targets {
            t.set_bwlimit(rate);
        }
    }
    let max_delete = session.max_delete(args.max_delete);
    // A saved plan is proven still true with one quick dry run per target; only a target
    // where that shows a change is planned again (with the plan's own comparison mode).
    // Without one, the plan `offsync plan` just showed is proven the same way, for the
    // targets it covers in the mode they use now; anything else is planned afresh.
    let last = match &saved {
        Some(_) => None,
        None => session.reusable(session::load_last_plan(ctx)),
    };
    let mut plan = match (&saved, &last) {
        (Some(earlier), _) | (None, Some(earlier)) => session.recheck(earlier, max_delete),
        (None, None) => session.plan(max_delete),
    };
    // Interrupted while planning: nothing is asked or printed, and every target still gets
    // its `interrupted` record below (the engine starts nothing once a signal arrived).
    let interrupted_early = interrupt::interrupted();

    if let Some(saved) = &saved
        && !interrupted_early
    {
        check_saved(saved, &plan, Stale::SavedPlan)?;
    }
    // The plan records the run's decisions (its digest is what the log names).
    plan = plan.with_delete(delete);
    let policy = ApplyPolicy {
        delete,
        overwrite: session.config.overwrite,
        verify: session.config.verify,
        max_delete,
        source_files: session.manifest.file_count(),
        keep_extra: false,
        switch: args.switch,
    };
    if !args.json && !interrupted_early {
        // A reader that went away (`| head`) does not stop an apply that was confirmed: its
        // output is best effort, its exit status and log record are what count.
        let _ = crate::out!("{}", plan.to_text());
    }
    // What apply will do to each target, known before anything is asked: refusals (target-only
    // paths without a delete decision, the mass-delete guard, …) are reported now, and only
    // the targets that will change are asked about.
    let refused: Vec<(&str, String)> = plan
        .targets
        .iter()
        .filter(|t| t.error.is_none())
        .filter_map(|t| {
            engine::refusal(t, &policy.for_target(t)).map(|(_, why)| (t.name.as_str(), why))
        })
        .collect();
    let changing: Vec<&str> = plan
        .targets
        .iter()
        .filter(|t| {
            t.error.is_none()
                && engine::has_work(t, &policy.for_target(t))
                && !refused.iter().any(|(n, _)| *n == t.name)
        })
        .map(|t| t.name.as_str())
        .collect();
    let nothing_to_do = changing.is_empty() && refused.is_empty() && !plan.has_errors();
    if nothing_to_do && !interrupted_early {
        if args.json {
            let results: Vec<(TargetInfo, ApplyResult)> = session
                .targets
                .iter()
                .map(|t| (t.info().clone(), ApplyResult::unchanged()))
                .collect();
            render(&results, true, policy.verify);
        } else {
            let _ = crate::outln!("\nnothing to do: every target matches the source");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let asking = saved.is_none() && !args.yes && !interrupted_early && !changing.is_empty();
    // Without a question the results below report the refusals (once).
    if asking && !args.json && !refused.is_empty() {
        let _ = crate::outln!();
        for (name, why) in &refused {
            let _ = crate::outln!("{:<11} {name}  {}", "REFUSED", sanitize::for_terminal(why));
        }
    }
    if asking {
        let question = format!("Apply this plan to {}?", changing.join(", "));
        if !prompt::confirm(&question)? {
            anyhow::bail!("cancelled; nothing was changed");
        }
        // The plan waited for a person: prove it still holds, as for a saved plan.
        let now = session.recheck(&plan, max_delete).with_delete(delete);
        if !interrupt::interrupted() {
            check_saved(&plan, &now, Stale::Confirmed)?;
            plan = now;
        }
    }

    let bars = ui::transfer_progress(args.json);
    let mut results = engine::apply_all(
        &mut session.targets,
        &session.manifest,
        &session.excludes,
        &plan,
        policy,
        session.workers,
        bars.as_ref(),
    );
    // The transferred bytes were read from the source now: make sure it is still the source
    // the plan described.
    if session.source_moved()? {
        for (_, r) in &mut results {
            if r.status.is_success() && !r.outcome.changed.is_empty() {
                r.status = Status::Failed(
                    ErrorKind::SourceChanged,
                    "the source changed during apply; run plan and apply again".into(),
                );
            }
        }
    }
    session::forget_last_plan(ctx);
    engine::log_all(&ctx.home.join("operations.log"), "apply", &results, &plan)?;
    render(&results, args.json, policy.verify);

    if results.iter().any(|(_, r)| r.status == Status::Interrupted) {
        return Ok(ExitCode::from(interrupt::exit_code()));
    }
    if interrupt::interrupted() {
        ui::notice("the signal arrived after the apply had finished; nothing was interrupted");
    }
    let ok = results.iter().all(|(_, r)| r.status.is_success());
    Ok(ExitCode::from(if ok { exit::OK } else { exit::FAILURE }))
}

/// Which earlier plan [`check_saved`] compares with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// `apply PLAN_FILE`.
    SavedPlan,
    /// The plan shown before "Apply this plan?".
    Confirmed,
}

/// Refuse a saved (or confirmed) plan that no longer matches: the source, or a target that
/// can be planned now (one that cannot fails on its own, without making the others stale).
fn check_saved(saved: &Plan, plan: &Plan, which: Stale) -> Result<()> {
    let mut stale = Vec::new();
    if saved.source.digest != plan.source.digest {
        stale.push("the source changed".to_string());
    }
    for t in plan.targets.iter().filter(|t| t.error.is_none()) {
        match saved.targets.iter().find(|s| s.name == t.name) {
            None => stale.push(format!("target {} is not in the plan file", t.name)),
            Some(s) if !s.same_work(t) => stale.push(format!("target {} changed", t.name)),
            _ => {}
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    // Target by target (no grouping): a target that left its group shows as its own change
    // instead of as a regrouped list.
    let text = |p: &Plan| {
        p.to_text_with(crate::plan::TextOptions {
            ungrouped: true,
            ..Default::default()
        })
    };
    let diff = similar::TextDiff::from_lines(&text(saved), &text(plan))
        .unified_diff()
        .header("saved plan", "plan now")
        .to_string();
    eprint!("{diff}");
    let msg = match which {
        Stale::SavedPlan => format!(
            "the saved plan is stale ({}); nothing was transferred; run `offsync plan --out FILE` again",
            stale.join("; ")
        ),
        Stale::Confirmed => format!(
            "the plan changed while it waited for confirmation ({}); nothing was transferred; run `offsync apply` again to review the new plan",
            stale.join("; ")
        ),
    };
    Err(crate::error::TargetError::error(ErrorKind::StalePlan, msg))
}

/// One line (or JSON row) per target. Best effort: see the plan preview above.
pub(crate) fn render(results: &[(TargetInfo, ApplyResult)], json: bool, verify: bool) {
    let rows: Vec<ResultRow> = results
        .iter()
        .map(|(info, r)| ResultRow {
            target: info.name.clone(),
            status: r.status.name(),
            changed: r.outcome.changed.len() as u64,
            deleted: r.outcome.deleted.len() as u64,
            bytes: r.outcome.bytes,
            duration_ms: r.duration_ms,
            error: r.status.error(),
            error_kind: r.status.kind(),
            release: r.release.clone(),
            switched_at: r
                .switched
                .as_ref()
                .map(|s| crate::oplog::timestamp(chrono::DateTime::<chrono::Utc>::from(s.at))),
            pruned: r
                .switched
                .as_ref()
                .map(|s| s.pruned.clone())
                .unwrap_or_default(),
            note: r.switched.as_ref().and_then(|s| s.note.clone()),
        })
        .collect();
    if json {
        if let Ok(text) = serde_json::to_string_pretty(&rows) {
            let _ = crate::outln!("{text}");
        }
        return;
    }
    let _ = crate::outln!();
    for r in &rows {
        let switched = match (&r.switched_at, &r.release) {
            (Some(_), Some(id)) if r.pruned.is_empty() => format!(", current -> releases/{id}"),
            (Some(_), Some(id)) => {
                format!(", current -> releases/{id}, pruned {}", r.pruned.join(" "))
            }
            _ => String::new(),
        };
        let _ = match &r.error {
            None => crate::outln!(
                "{:<11} {}  {} changed, {} deleted, {}{}{switched}",
                r.status,
                r.target,
                r.changed,
                r.deleted,
                crate::plan::human_bytes(r.bytes),
                if verify && r.status == Outcome::Ok {
                    ", verified"
                } else {
                    ""
                }
            ),
            Some(e) => crate::outln!(
                "{:<11} {}  {}",
                r.status.as_str().to_uppercase(),
                r.target,
                sanitize::for_terminal(e)
            ),
        };
        if let Some(n) = &r.note {
            let _ = crate::outln!("{:<11} {}  {}", "", r.target, sanitize::for_terminal(n));
        }
    }
    if let Some(spread) = engine::switch_spread(results) {
        let n = results.iter().filter(|(_, r)| r.switched.is_some()).count();
        let _ = crate::outln!(
            "switched {n} targets within {:.1} ms of each other",
            spread.as_secs_f64() * 1000.0
        );
    }
}
