//! `offsync plan`: hash the source, run one rsync dry run per target (in parallel), print
//! the plan. Shared preparation for `apply` and `verify` lives here too.

use anyhow::{Context as _, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::PlanArgs;
use crate::config::Config;
use crate::context::Context;
use crate::engine;
use crate::error::exit;
use crate::plan::Plan;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{self, Manifest};
use crate::target::{self, Target};
use crate::{fsutil, input_err};

/// Everything a plan needs: config, hashed source, targets.
pub struct Prepared {
    pub config: Config,
    pub manifest: Manifest,
    pub excludes: Excludes,
    pub targets: Vec<Box<dyn Target>>,
    pub workers: usize,
}

/// The config, its source directory and its compiled excludes.
pub fn load_source(ctx: &Context) -> Result<(Config, String, Excludes)> {
    let config = Config::load(&ctx.config_path())?;
    let source = config
        .source
        .clone()
        .ok_or_else(|| input_err!("no source configured; run `offsync init --source DIR`"))?;
    let excludes = Excludes::new(&config.exclude)?;
    Ok((config, source, excludes))
}

/// Load config, hash the source (with the cache) and build the selected targets.
pub fn prepare(ctx: &Context, names: &[String]) -> Result<Prepared> {
    let (config, source, excludes) = load_source(ctx)?;
    let targets = target::build(ctx, &config, names)?;
    let spinner = progress(&format!("hashing {source}"));
    let cache = manifest::cache_path(&ctx.home, std::path::Path::new(&source));
    let show = |done: u64| {
        if let Some(s) = &spinner {
            s.set_message(format!(
                "hashing {source}: {}",
                crate::plan::human_bytes(done)
            ));
        }
    };
    let (manifest, _stats) = manifest::build_with_progress(
        std::path::Path::new(&source),
        &excludes,
        Some(&cache),
        &show,
    )?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let workers = config.concurrency.unwrap_or(8);
    Ok(Prepared {
        config,
        manifest,
        excludes,
        targets,
        workers,
    })
}

impl Prepared {
    /// The mass-delete limit: the flag, else `max_delete:` from config.
    pub fn max_delete(&self, flag: Option<u64>) -> Option<u64> {
        flag.or(self.config.max_delete)
    }

    /// Scan every target and build the plan (warning about mass deletes beyond `max_delete`).
    pub fn plan(&mut self, max_delete: Option<u64>) -> Plan {
        let spinner = progress(&format!("planning {} target(s)", self.targets.len()));
        let plans = engine::plan_all(
            &mut self.targets,
            &self.manifest,
            &self.excludes,
            self.workers,
            max_delete,
        );
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        Plan::new(&self.manifest, self.excludes.patterns(), plans)
    }
}

/// A spinner on stderr when it is a terminal; nothing otherwise.
pub fn progress(msg: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

pub fn run(ctx: &Context, args: PlanArgs) -> Result<ExitCode> {
    let out_path: Option<PathBuf> = match &args.out {
        Some(p) => Some(crate::context::absolute(p)?),
        None => None,
    };
    crate::interrupt::install();
    let mut prepared = prepare(ctx, &args.targets)?;
    let max_delete = prepared.max_delete(args.max_delete);
    let plan = prepared.plan(max_delete);
    drop(prepared);
    // An interrupted plan is no plan: its targets' errors are only the interruption.
    if crate::interrupt::interrupted() {
        eprintln!("offsync: interrupted; no plan was printed or saved");
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
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
