//! `offsync releases` and `offsync rollback`: the releases of `releases` targets (see
//! `releases`), and switching `current` back.
//!
//! `releases` shows, per target, what this controller recorded (id, time, source digest,
//! files, bytes, state) checked against the target by one dry run of its root names: which
//! recorded releases are gone, which release directories it does not know (targets that allow
//! deletes only), and which release `current` really points at. `rollback` switches `current`
//! to the previous verified release (or `--to ID`) with one rsync of the symlink after proving
//! that release is there, proves `current` is it afterwards, and logs it; nothing is
//! re-uploaded. Both hold the controller's lock like `apply`, so neither races an apply.

use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;

use crate::cli::{ReleasesArgs, RollbackArgs};
use crate::config::{Config, TargetSpec};
use crate::context::Context;
use crate::engine::{self, Status};
use crate::error::exit;
use crate::plan::human_bytes;
use crate::releases::{self, Layout, ReleaseState};
use crate::sanitize::for_terminal;
use crate::targets::Target;
use crate::targets::ssh::SshTarget;
use crate::{input_err, lock};

/// The `releases` targets named in `names` (all of them when empty).
fn release_targets(ctx: &Context, config: &Config, names: &[String]) -> Result<Vec<SshTarget>> {
    let mut out = Vec::new();
    for spec in config.select(names)? {
        let TargetSpec::Ssh(t) = spec else {
            if !names.is_empty() {
                return Err(input_err!(
                    "{} is a mirror; releases are kept on SSH targets with `layout: releases`",
                    spec.name()
                ));
            }
            continue;
        };
        let name = t.name();
        if config.layout_for(&name) != Layout::Releases {
            if !names.is_empty() {
                return Err(input_err!(
                    "target {name} uses the in-place layout; set `layout: releases` for it in config.yaml to keep releases there"
                ));
            }
            continue;
        }
        out.push(
            SshTarget::from_config(ctx, t, config.check_for(&name, None))?
                .with_releases(config.keep_for(&name))?,
        );
    }
    if out.is_empty() {
        return Err(input_err!(
            "no target uses the releases layout; set `layout: releases` in config.yaml (top level, or per target)"
        ));
    }
    Ok(out)
}

/// One row of `offsync releases --json`.
#[derive(Debug, Serialize)]
struct Row {
    target: String,
    id: String,
    /// `verified`, `failed` (never switched to), `missing` (recorded, gone from the target)
    /// or `unknown` (on the target, not recorded by this controller).
    state: &'static str,
    current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

/// One target's part of `offsync releases --json`.
#[derive(Debug, Serialize)]
struct TargetRows {
    target: String,
    keep: u32,
    /// The release `current` points at (proven by its tag), if offsync recorded it.
    current: Option<String>,
    current_exists: bool,
    releases: Vec<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn list(ctx: &Context, args: ReleasesArgs) -> Result<ExitCode> {
    let config = Config::load(&ctx.config_path())?;
    let mut targets = release_targets(ctx, &config, &args.targets)?;
    let workers = config.concurrency.unwrap_or(8);
    let listed = engine::parallel(&mut targets, workers, |t| {
        let r = t.list_releases();
        t.close();
        (t.info().name.clone(), r)
    });
    let mut all = Vec::new();
    for (name, r) in listed {
        let keep = config.keep_for(&name);
        all.push(match r {
            Err(e) => TargetRows {
                target: name,
                keep,
                current: None,
                current_exists: false,
                releases: Vec::new(),
                error: Some(format!("{e:#}")),
            },
            Ok(l) => {
                let mut rows: Vec<Row> = l
                    .records
                    .releases
                    .iter()
                    .map(|r| Row {
                        target: name.clone(),
                        id: r.id.clone(),
                        state: if l.missing.contains(&r.id) {
                            "missing"
                        } else if r.state == ReleaseState::Verified {
                            "verified"
                        } else {
                            "failed"
                        },
                        current: l.current.as_deref() == Some(r.id.as_str()),
                        created: Some(r.created.clone()),
                        source_digest: Some(r.source_digest.clone()),
                        files: Some(r.files),
                        bytes: Some(r.bytes),
                    })
                    .collect();
                rows.extend(l.unknown.iter().map(|id| Row {
                    target: name.clone(),
                    id: id.clone(),
                    state: "unknown",
                    current: false,
                    created: None,
                    source_digest: None,
                    files: None,
                    bytes: None,
                }));
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                TargetRows {
                    target: name,
                    keep,
                    current: l.current,
                    current_exists: l.current_exists,
                    releases: rows,
                    error: None,
                }
            }
        });
    }
    let failed = all.iter().any(|t| t.error.is_some());
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&all)?)?;
    } else {
        for t in &all {
            crate::outln!("{} (keep {})", t.target, t.keep)?;
            if let Some(e) = &t.error {
                crate::outln!("  error: {}", for_terminal(e))?;
                continue;
            }
            if t.releases.is_empty() {
                crate::outln!("  no releases yet")?;
            }
            for r in &t.releases {
                let short = |d: &Option<String>| {
                    d.as_deref()
                        .map(|d| d.chars().take(16).collect::<String>())
                        .unwrap_or_else(|| "-".into())
                };
                crate::outln!(
                    "  {} {}  {:<8}  {:<20}  {:<16}  {:>7} files  {:>10}",
                    if r.current { "*" } else { " " },
                    for_terminal(&r.id),
                    r.state,
                    r.created.as_deref().unwrap_or("-"),
                    short(&r.source_digest),
                    r.files.map_or("-".into(), |f| f.to_string()),
                    r.bytes.map_or("-".into(), human_bytes),
                )?;
            }
            if !t.current_exists {
                crate::outln!("  current: missing on the target")?;
            } else if t.current.is_none() {
                crate::outln!(
                    "  current: not a release this controller recorded (another controller, or a hand edit)"
                )?;
            }
        }
    }
    Ok(ExitCode::from(if failed {
        exit::FAILURE
    } else {
        exit::OK
    }))
}

pub fn rollback(ctx: &Context, args: RollbackArgs) -> Result<ExitCode> {
    if let Some(id) = &args.to
        && !releases::valid_id(id)
    {
        return Err(input_err!(
            "--to {:?} is not a release id; pick one from `offsync releases`",
            for_terminal(id)
        ));
    }
    let config = Config::load(&ctx.config_path())?;
    let mut targets = release_targets(ctx, &config, &args.targets)?;
    let _lock = lock::acquire(&ctx.home)?;
    crate::interrupt::install();
    // The source, when it is still what a release was made from, lets the rollback compare
    // that release's content too (see `SshTarget::rollback`).
    let source = crate::session::load_source(ctx)
        .ok()
        .and_then(|(_, src, ex)| {
            let cache = crate::plan::manifest::cache_path(&ctx.home, std::path::Path::new(&src));
            crate::plan::manifest::build(std::path::Path::new(&src), &ex, Some(&cache))
                .ok()
                .map(|(m, _)| (m, ex))
        });
    let workers = config.concurrency.unwrap_or(8);
    let results = engine::parallel(&mut targets, workers, |t| {
        let start = std::time::Instant::now();
        let r = t.rollback(args.to.as_deref(), source.as_ref().map(|(m, e)| (m, e)));
        t.close();
        (t.info().clone(), r, start.elapsed())
    });
    // One record per target in operations.log, like an apply's.
    let entries: Vec<crate::oplog::Entry> = results
        .iter()
        .map(|(info, r, took)| {
            let status = match r {
                Ok(_) => Status::Ok,
                Err(e) => Status::failed(e),
            };
            let record = crate::oplog::Record {
                duration_ms: took.as_millis() as u64,
                source_digest: r
                    .as_ref()
                    .map(|rb| rb.source_digest.clone())
                    .unwrap_or_default(),
                error: status.error(),
                error_kind: status.kind(),
                release: r.as_ref().ok().map(|rb| rb.to.clone()),
                switched_at: r.as_ref().ok().map(|rb| {
                    crate::oplog::timestamp(chrono::DateTime::<chrono::Utc>::from(rb.at))
                }),
                ..crate::oplog::Record::new(
                    info.name.clone(),
                    info.host.clone(),
                    "rollback".into(),
                    status.name(),
                )
            };
            crate::oplog::Entry::new(record, &[], &[])
        })
        .collect();
    crate::oplog::append(&ctx.home.join("operations.log"), entries)
        .map_err(|e| e.context("cannot write operations.log"))?;
    let mut ok = true;
    for (info, r, took) in &results {
        match r {
            Ok(rb) => crate::outln!(
                "ok          {}  current -> releases/{} (was {}), {} in {} ms",
                info.name,
                rb.to,
                rb.from.as_deref().unwrap_or("unknown"),
                if rb.content_verified {
                    "verified by content"
                } else {
                    "verified by its tag (the source has changed since that release, so its content was not compared)"
                },
                took.as_millis()
            )?,
            Err(e) => {
                ok = false;
                crate::outln!(
                    "FAILED      {}  {}",
                    info.name,
                    for_terminal(&format!("{e:#}"))
                )?;
            }
        }
    }
    if crate::interrupt::interrupted() {
        return Ok(ExitCode::from(crate::interrupt::exit_code()));
    }
    // A single target's bad input (an unknown --to) is the caller's mistake: exit 64.
    if let [(_, Err(e), _)] = results.as_slice()
        && e.chain().any(|c| c.is::<crate::error::InputError>())
    {
        return Err(input_err!("{}", format!("{e:#}")));
    }
    Ok(ExitCode::from(if ok { exit::OK } else { exit::FAILURE }))
}
