//! `offsync verify`: a whole-tree checksum dry run per target, in parallel (mirrors: the
//! newest snapshot plus an object check, `--deep` re-reads every object). Exit 0 when every
//! target matches the source, 2 when any drifted (listing what differs, in plan categories),
//! 1 on error.

use anyhow::Result;
use std::process::ExitCode;

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::engine;
use crate::error::exit;
use crate::session::Session;

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode> {
    let extra = crate::session::extra_excludes(&args.excludes)?;
    crate::interrupt::install();
    let mut session = Session::open_excluding(ctx, &args.targets, &extra)?;
    let plan = engine::verify_all(
        &mut session.targets,
        &session.manifest,
        &session.excludes,
        session.workers,
        args.deep,
    );
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; nothing was verified");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
    if args.json {
        crate::out!("{}", plan.to_json())?;
    } else {
        for t in &plan.targets {
            if let Some(e) = &t.error {
                crate::outln!("FAIL     {}  {}", t.name, crate::sanitize::for_terminal(e))?;
            } else if t.has_changes() {
                crate::outln!("DRIFTED  {}", t.name)?;
            } else {
                crate::outln!(
                    "ok       {}  ({} entries match)",
                    t.name,
                    t.summary.unchanged
                )?;
            }
        }
        if plan.has_changes() {
            crate::outln!("\nDifferences:")?;
            crate::out!("{}", plan.to_text())?;
        }
    }
    Ok(ExitCode::from(if plan.has_errors() {
        exit::FAILURE
    } else if plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    }))
}
