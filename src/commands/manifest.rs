//! `offsync manifest`: hash the source as `plan` would, and print its digest and counts.
//! Useful to compare source states across machines, and to measure hashing on its own.

use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli::ManifestArgs;
use crate::context::Context;
use crate::plan::manifest;

pub fn run(ctx: &Context, args: ManifestArgs) -> Result<ExitCode> {
    let (_config, source, excludes) = crate::session::load_source(ctx)?;
    let cache = manifest::cache_path(&ctx.home, Path::new(&source));
    if args.no_cache {
        let _ = std::fs::remove_file(&cache);
    }
    let start = Instant::now();
    let (m, stats) = manifest::build(Path::new(&source), &excludes, Some(&cache))?;
    let ms = start.elapsed().as_millis() as u64;
    if args.json {
        crate::outln!(
            "{}",
            serde_json::json!({
                "source": m.root.display().to_string(),
                "digest": m.digest_hex(),
                "entries": m.entries.len(),
                "files": stats.files,
                "bytes": stats.bytes,
                "hashed_files": stats.hashed_files,
                "hashed_bytes": stats.hashed_bytes,
                "skipped": m.skipped.len(),
                "duration_ms": ms,
            })
        )?;
    } else {
        crate::outln!(
            "{}  {}",
            m.digest_hex(),
            crate::sanitize::for_terminal(&m.root.display().to_string())
        )?;
        eprintln!(
            "{} files, {}; hashed {} files ({}) in {ms} ms, the rest from the cache",
            stats.files,
            crate::plan::human_bytes(stats.bytes),
            stats.hashed_files,
            crate::plan::human_bytes(stats.hashed_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
