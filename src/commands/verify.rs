//! `offsync verify`: a whole-tree checksum dry run per target, in parallel (mirrors: the
//! newest snapshot plus an object check, `--deep` re-reads every object). Exit 0 when every
//! target matches the source, 2 when any drifted (listing what differs, in plan categories),
//! 1 on error. Target-only paths on an `extra: keep` target are listed as kept, not drift.

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
    let mut plan = engine::verify_all(
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
    // Target-only paths of an `extra: keep` target are reported, not counted as drift.
    session.stamp(&mut plan);
    let drifted = plan.targets.iter().any(|t| t.drifted());
    if args.json {
        crate::out!("{}", plan.to_json())?;
    } else {
        for t in &plan.targets {
            if let Some(e) = &t.error {
                crate::outln!("FAIL     {}  {}", t.name, crate::sanitize::for_terminal(e))?;
            } else if t.drifted() {
                crate::outln!("DRIFTED  {}", t.name)?;
            } else if t.has_changes() {
                crate::outln!(
                    "ok       {}  ({} entries match; {} extra path(s) kept: extra: keep)",
                    t.name,
                    t.summary.unchanged,
                    t.summary.missing
                )?;
            } else {
                crate::outln!(
                    "ok       {}  ({} entries match)",
                    t.name,
                    t.summary.unchanged
                )?;
            }
        }
        if plan.has_changes() {
            let title = if drifted {
                "Differences"
            } else {
                "Kept (extra: keep)"
            };
            crate::outln!("\n{title}:")?;
            crate::out!("{}", plan.to_text())?;
        }
    }
    Ok(ExitCode::from(if plan.has_errors() {
        exit::FAILURE
    } else if drifted {
        exit::CHANGES
    } else {
        exit::OK
    }))
}
