//! `offsync verify`: a whole-tree checksum dry run per target, in parallel (mirrors: the
//! newest snapshot plus an object check, `--deep` re-reads every object). Exit 0 when every
//! target matches the source, 2 when any drifted (listing what differs, in plan categories),
//! 1 on error.

use anyhow::Result;
use std::process::ExitCode;

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::error::exit;

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode> {
    crate::interrupt::install();
    let mut prepared = super::plan::prepare(ctx, &args.targets)?;
    let (manifest, excludes) = (&prepared.manifest, &prepared.excludes);
    let deep = args.deep;
    let plans = crate::engine::parallel(&mut prepared.targets, prepared.workers, |t| {
        let mut p = crate::engine::plan_one(t.as_mut(), manifest, excludes);
        // Storage checks (mirrors) only make sense when the listing itself could be read.
        if p.error.is_none()
            && let Err(e) = t.check(deep)
        {
            p.error = Some(format!("{e:#}"));
        }
        t.close();
        p
    });
    let plan = crate::plan::Plan::new(manifest, excludes.patterns(), plans);
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
