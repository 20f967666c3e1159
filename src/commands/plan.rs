//! `offsync plan`: hash the source, run one rsync dry run per target (in parallel), print
//! the plan (text — every path, `--stat` per directory, or `--summary` counts only — or
//! `offsync-plan/1` JSON), optionally save it for `apply PLAN_FILE` (with the run's decisions:
//! `--delete`). `offsync show PLAN_FILE` prints a saved plan the same way.

use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{PlanArgs, ShowArgs};
use crate::context::Context;
use crate::error::exit;
use crate::fsutil;
use crate::plan::{Plan, TextDetail, TextOptions};
use crate::session::Session;

/// Print `plan` to stdout as it is produced: JSON, or text in the detail the flags ask for.
fn print(plan: &Plan, json: bool, summary: bool, stat: bool) -> Result<()> {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    if json {
        plan.write_json(&mut w)?;
    } else {
        let detail = if summary {
            TextDetail::Summary
        } else if stat {
            TextDetail::Stat
        } else {
            TextDetail::Paths
        };
        plan.write_text_with(
            &mut w,
            TextOptions {
                detail,
                ..TextOptions::default()
            },
        )?;
    }
    Ok(w.flush()?)
}

/// `offsync show PLAN_FILE`: a saved plan, checked as `apply PLAN_FILE` checks it (format,
/// digest, size; a bad file is bad input, exit 64), printed as `plan` printed it. Reads only
/// the file: no config, no network.
pub fn show(args: ShowArgs) -> Result<ExitCode> {
    let plan = Plan::read_file(&args.plan_file)?;
    print(&plan, args.json, args.summary, args.stat)?;
    Ok(ExitCode::from(exit::OK))
}

pub fn run(ctx: &Context, args: PlanArgs) -> Result<ExitCode> {
    let out_path: Option<PathBuf> = match &args.out {
        Some(p) => Some(crate::context::absolute(p)?),
        None => None,
    };
    let extra = crate::session::extra_excludes(&args.excludes)?;
    crate::interrupt::install();
    let mut session = Session::open_excluding(ctx, &args.targets, &extra)?;
    session.set_check(args.check);
    let max_delete = session.max_delete(args.max_delete);
    let plan = session.plan(max_delete).with_delete(args.delete);
    // Close the connections before printing.
    drop(session);
    // An interrupted plan is no plan: its targets' errors are only the interruption.
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; no plan was printed or saved");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
    crate::session::save_last_plan(ctx, &plan);
    // Both outputs are written as they are produced: a plan of many paths is never held
    // as one string.
    if let Some(p) = &out_path {
        fsutil::atomic_write_with(p, fsutil::FILE_MODE, |f| {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
            plan.write_json(&mut w)?;
            Ok(w.flush()?)
        })
        .with_context(|| format!("cannot save the plan to {}", p.display()))?;
    }
    print(&plan, args.json, args.summary, args.stat)?;
    for t in &plan.targets {
        if let Some(e) = &t.error {
            eprintln!(
                "offsync: error: {}: {}",
                t.name,
                crate::sanitize::for_terminal(e)
            );
        }
    }
    let code = if plan.has_errors() {
        exit::FAILURE
    } else if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    };
    Ok(ExitCode::from(code))
}
