//! `offsync plan`: hash the source, run one rsync dry run per target (in parallel), print
//! the plan (text or `offsync-plan/1` JSON), optionally save it for `apply PLAN_FILE`.

use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::PlanArgs;
use crate::context::Context;
use crate::error::exit;
use crate::fsutil;
use crate::session::Session;

pub fn run(ctx: &Context, args: PlanArgs) -> Result<ExitCode> {
    let out_path: Option<PathBuf> = match &args.out {
        Some(p) => Some(crate::context::absolute(p)?),
        None => None,
    };
    crate::interrupt::install();
    let mut session = Session::open(ctx, &args.targets)?;
    session.set_check(args.check);
    let max_delete = session.max_delete(args.max_delete);
    let plan = session.plan(max_delete);
    // Close the connections before printing.
    drop(session);
    // An interrupted plan is no plan: its targets' errors are only the interruption.
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; no plan was printed or saved");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
    crate::session::save_last_plan(ctx, &plan);
    if let Some(p) = &out_path {
        fsutil::atomic_write(p, plan.to_json().as_bytes(), fsutil::FILE_MODE)
            .with_context(|| format!("cannot save the plan to {}", p.display()))?;
    }
    if args.json {
        crate::out!("{}", plan.to_json())?;
    } else {
        crate::out!("{}", plan.to_text())?;
    }
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
