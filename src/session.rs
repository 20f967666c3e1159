//! A session: what `plan`, `apply` and `verify` work on — the config, the hashed source and the
//! selected targets — built once from the resolved [`Context`].
//!
//! Invariants: the source is hashed through the hash cache (`plan::manifest`), so a file whose
//! size, mtime, inode and ctime did not change is never read again; targets come from the one
//! factory (`targets::build`); nothing here prints except terminal progress (`ui`).

use anyhow::Result;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::context::Context;
use crate::engine;
use crate::input_err;
use crate::plan::Plan;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::{self, Manifest};
use crate::targets::{self, Target};
use crate::ui;

/// Everything a plan needs: config, hashed source, targets.
pub struct Session {
    pub config: Config,
    pub manifest: Manifest,
    pub excludes: Excludes,
    pub targets: Vec<Box<dyn Target>>,
    pub workers: usize,
    cache: PathBuf,
}

/// The config, its source directory and its compiled excludes.
pub fn load_source(ctx: &Context) -> Result<(Config, String, Excludes)> {
    load_source_excluding(ctx, &[])
}

/// [`load_source`], with `extra` patterns (from `--exclude`/`--exclude-from`, see
/// [`extra_excludes`]) after the config's `exclude:` list.
pub fn load_source_excluding(
    ctx: &Context,
    extra: &[String],
) -> Result<(Config, String, Excludes)> {
    let config = Config::load(&ctx.config_path())?;
    let source = config
        .source
        .clone()
        .ok_or_else(|| input_err!("no source configured; run `offsync init --source DIR`"))?;
    let all: Vec<String> = config.exclude.iter().chain(extra).cloned().collect();
    let excludes = Excludes::new(&all)?;
    Ok((config, source, excludes))
}

/// The patterns `--exclude PATTERN` and `--exclude-from FILE` add for this run, in that
/// order, each checked by the rules of config `exclude:` (`check_pattern`); a bad one is bad
/// input naming its flag (and file line). In FILE, blank lines and lines starting with `#`
/// are skipped, as rsync's `--exclude-from` does.
pub fn extra_excludes(args: &crate::cli::ExcludeArgs) -> Result<Vec<String>> {
    use crate::plan::excludes::check_pattern;
    let mut out = Vec::new();
    for p in &args.patterns {
        check_pattern(p).map_err(|why| input_err!("--exclude {p:?} {why}"))?;
        out.push(p.clone());
    }
    for f in &args.exclude_from {
        let text = std::fs::read_to_string(f)
            .map_err(|e| input_err!("--exclude-from {}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            check_pattern(line).map_err(|why| {
                input_err!("--exclude-from {}:{}: {line:?} {why}", f.display(), i + 1)
            })?;
            out.push(line.to_string());
        }
    }
    Ok(out)
}

impl Session {
    /// Load config, hash the source (with the cache) and build the selected targets (all when
    /// `names` is empty).
    pub fn open(ctx: &Context, names: &[String]) -> Result<Session> {
        Session::open_excluding(ctx, names, &[])
    }

    /// [`Session::open`] with extra exclude patterns for this run (see [`extra_excludes`]).
    pub fn open_excluding(ctx: &Context, names: &[String], extra: &[String]) -> Result<Session> {
        let (config, source, excludes) = load_source_excluding(ctx, extra)?;
        let mut targets = targets::build(ctx, &config, names)?;
        let workers = config.concurrency.unwrap_or(8);
        let cache = manifest::cache_path(&ctx.home, Path::new(&source));
        let spinner = ui::spinner(&format!("hashing {source}"));
        let show = |done: u64| {
            if let Some(s) = &spinner {
                s.set_message(format!(
                    "hashing {source}: {}",
                    crate::plan::human_bytes(done)
                ));
            }
        };
        // Connections (ssh handshake, confinement probe) are made while the source is
        // hashed: one waits on the network, the other on the disk and the CPU.
        let (manifest, _stats) = std::thread::scope(|s| {
            let connecting = s.spawn(|| {
                ui::phase("connecting", || {
                    engine::parallel(&mut targets, workers, |t| t.prepare());
                });
            });
            let hashed = ui::phase("hashing the source", || {
                manifest::build_with_progress(Path::new(&source), &excludes, Some(&cache), &show)
            });
            let _ = connecting.join();
            hashed
        })?;
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        Ok(Session {
            config,
            manifest,
            excludes,
            targets,
            workers,
            cache,
        })
    }

    /// Compare SSH targets as `check` says (`--check`), whatever their configured mode.
    pub fn set_check(&mut self, check: Option<crate::plan::CheckMode>) {
        if let Some(c) = check {
            for t in &mut self.targets {
                t.set_check(c);
            }
        }
    }

    /// Check `earlier` (a saved plan, or one that waited for confirmation) against the
    /// targets now, as cheaply as possible (see `engine::recheck_all`).
    pub fn recheck(&mut self, earlier: &Plan, max_delete: Option<u64>) -> Plan {
        let spinner = ui::spinner(&format!("checking {} target(s)", self.targets.len()));
        let plans = engine::recheck_all(
            &mut self.targets,
            &self.manifest,
            &self.excludes,
            earlier,
            self.workers,
            max_delete,
        );
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        self.stamped(plans)
    }

    /// The plan `offsync apply` may reuse: `last` (what `offsync plan` saved) minus the
    /// targets that could not be planned then (they are tried again) and those whose
    /// comparison mode is not the one they would be planned with now. `None`
    /// when there is none, or it is for another source.
    pub fn reusable(&self, last: Option<Plan>) -> Option<Plan> {
        let mut last = last?;
        if last.source.digest != self.manifest.digest_hex()
            || last.source.excludes != self.excludes.patterns()
        {
            return None;
        }
        last.targets.retain(|p| {
            p.error.is_none()
                && self
                    .targets
                    .iter()
                    .any(|t| t.info().name == p.name && t.check_mode() == p.check)
        });
        Some(last)
    }

    /// The mass-delete limit: the flag, else `max_delete:` from config.
    pub fn max_delete(&self, flag: Option<u64>) -> Option<u64> {
        flag.or(self.config.max_delete)
    }

    /// Scan every target and build the plan (warning about mass deletes beyond `max_delete`).
    pub fn plan(&mut self, max_delete: Option<u64>) -> Plan {
        let spinner = ui::spinner(&format!("planning {} target(s)", self.targets.len()));
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
        self.stamped(plans)
    }

    /// The plan of `plans`, each target carrying its configured `extra:` (a rechecked saved
    /// part carries the policy it was saved with until this replaces it, so a changed
    /// `extra:` makes the saved plan stale).
    fn stamped(&self, mut plans: Vec<crate::plan::TargetPlan>) -> Plan {
        for p in &mut plans {
            p.extra = self.config.extra_for(&p.name);
        }
        Plan::new(&self.manifest, self.excludes.patterns(), plans)
    }

    /// `plan` with each target carrying its configured `extra:` (digest recomputed).
    pub fn stamp(&self, plan: &mut Plan) {
        for p in &mut plan.targets {
            p.extra = self.config.extra_for(&p.name);
        }
        plan.reseal();
    }

    /// Whether the source differs from the manifest the session hashed (checked after a
    /// transfer, which read the files again).
    pub fn source_moved(&self) -> Result<bool> {
        let (after, _) = manifest::build(&self.manifest.root, &self.excludes, Some(&self.cache))?;
        Ok(after.digest != self.manifest.digest)
    }
}

impl Drop for Session {
    /// Close every connection at once (each close waits for its ssh master to exit).
    fn drop(&mut self) {
        let workers = self.workers;
        engine::parallel(&mut self.targets, workers, |t| t.close());
    }
}

/// Where `offsync plan` leaves its last plan for `offsync apply` (see [`save_last_plan`]).
pub fn last_plan_path(ctx: &Context) -> PathBuf {
    ctx.home.join("last-plan.json")
}

/// Keep the plan just shown, so that an `offsync apply` soon after can prove it still holds
/// with one quick dry run per target instead of a second checksum pass (the same check as
/// for `apply PLAN_FILE`). Best effort: without it, apply plans again.
pub fn save_last_plan(ctx: &Context, plan: &Plan) {
    let path = last_plan_path(ctx);
    // A cache, checked by its digest when read: no fsync (see `fsutil::write_volatile`).
    let written = crate::fsutil::write_volatile_with(&path, crate::fsutil::FILE_MODE, |f| {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
        plan.write_json(&mut w)?;
        Ok(std::io::Write::flush(&mut w)?)
    });
    if let Err(e) = written {
        ui::notice(&format!(
            "note: cannot keep the plan in {} ({e:#}); `offsync apply` will plan again",
            path.display()
        ));
    }
}

/// The last plan `offsync plan` kept, if it is there and intact.
pub fn load_last_plan(ctx: &Context) -> Option<Plan> {
    let path = last_plan_path(ctx);
    if !path.exists() {
        return None;
    }
    crate::plan::read_plan_file(&path).ok()
}

/// Forget the last plan (an apply changed the targets, so it can no longer be reused).
pub fn forget_last_plan(ctx: &Context) {
    let _ = std::fs::remove_file(last_plan_path(ctx));
}
