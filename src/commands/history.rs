//! `offsync log` and `offsync status`: the operations log read back, newest first, without
//! connecting to anything. `log` prints records; `status` puts each target's last apply next
//! to the source digest now (hashed with the cache, as `plan` would).

use anyhow::Result;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{LogArgs, StatusArgs};
use crate::context::Context;
use crate::history::{self, Parsed, Skipped, State, Summary};
use crate::oplog::History;
use crate::plan::{human_bytes, manifest};
use crate::sanitize::for_terminal;

/// How far a record may be older than one appended before it (clocks of concurrent
/// appenders, the time between stamping and appending) before `--since` stops reading.
const SINCE_SLACK_SECS: i64 = 600;

pub fn log(ctx: &Context, args: LogArgs) -> Result<ExitCode> {
    let history = History::open(&ctx.home.join("operations.log"))?;
    let limit = args.max_count.unwrap_or(usize::MAX);
    let stop_before = args
        .since
        .map(|s| s - chrono::TimeDelta::seconds(SINCE_SLACK_SECS));
    let mut skipped = Skipped::new();
    let mut rows: Vec<(Summary, Vec<u8>)> = Vec::new();
    // Newest-first JSON is printed as it is read: nothing is held, whatever the history's size.
    let stream = args.json && !args.reverse;
    let mut out = std::io::stdout().lock();
    let mut shown = 0usize;
    for line in history.newest_first() {
        if shown >= limit {
            break;
        }
        let line = line?;
        let parsed = history::parse(&line);
        let Parsed::Record(s) = parsed else {
            skipped.note(&history, &line, &parsed);
            continue;
        };
        let time = s.time();
        if let (Some(since), Some(t)) = (args.since, time)
            && t < since
        {
            if stop_before.is_some_and(|stop| t < stop) {
                break;
            }
            continue;
        }
        if !args.targets.is_empty() && !args.targets.contains(&s.target) {
            continue;
        }
        shown += 1;
        if stream {
            out.write_all(&line.bytes)?;
            out.write_all(b"\n")?;
        } else {
            rows.push((*s, line.bytes));
        }
    }
    skipped.finish();
    if args.reverse {
        rows.reverse();
    }
    if args.json {
        for (_, bytes) in &rows {
            out.write_all(bytes)?;
            out.write_all(b"\n")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    if rows.is_empty() {
        eprintln!("no records (operations.log is written by apply, pull, rollback and restore)");
        return Ok(ExitCode::SUCCESS);
    }
    let cells: Vec<[String; 9]> = rows.iter().map(|(s, _)| log_cells(s)).collect();
    let header = [
        "TIME (UTC)",
        "TARGET",
        "OPERATION",
        "STATUS",
        "CHANGED",
        "DELETED",
        "BYTES",
        "DURATION",
        "DETAIL",
    ]
    .map(String::from);
    print_table(&header, &cells, &[4, 5, 6, 7])?;
    Ok(ExitCode::SUCCESS)
}

fn log_cells(s: &Summary) -> [String; 9] {
    let mut detail = Vec::new();
    if let Some(r) = &s.release {
        detail.push(format!("release {}", for_terminal(r)));
    }
    if s.partial {
        detail.push("partial".to_string());
    }
    if let Some(e) = &s.error {
        let kind = s.error_kind.as_deref().unwrap_or("error");
        detail.push(format!("{}: {}", for_terminal(kind), one_line(e, 120)));
    }
    [
        history::show_time(&s.timestamp),
        for_terminal(&s.target),
        for_terminal(&s.operation),
        s.status.to_string(),
        s.changed().to_string(),
        s.deleted().to_string(),
        human_bytes(s.bytes),
        duration(s.duration_ms),
        detail.join("; "),
    ]
}

/// The first line of `s`, sanitised, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    let mut out: String = for_terminal(first).chars().take(max).collect();
    if first.chars().count() > max || s.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

/// `812 ms`, `4.2 s`, `3m 12s`, `1h 02m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Columns padded to their widest cell (`right`: right-aligned); the last one unpadded.
fn print_table<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    right: &[usize],
) -> Result<()> {
    let mut widths = [0usize; N];
    for r in std::iter::once(header).chain(rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else if right.contains(&i) {
                line.push_str(&format!("{c:>w$}  ", w = widths[i]));
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        crate::outln!("{}", line.trim_end())?;
    }
    Ok(())
}

pub fn status(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    let (config, source, excludes) = crate::session::load_source(ctx)?;
    let mut names: Vec<(String, &'static str)> = config
        .targets
        .iter()
        .map(|t| (t.name(), "ssh"))
        .chain(config.mirrors.iter().map(|m| (m.name.clone(), "mirror")))
        .collect();
    if !args.targets.is_empty() {
        for want in &args.targets {
            if !names.iter().any(|(n, _)| n == want) {
                return Err(crate::input_err!(
                    "--target {want:?}: no such target or mirror; see `offsync target list`"
                ));
            }
        }
        names.retain(|(n, _)| args.targets.contains(n));
    }
    let cache = manifest::cache_path(&ctx.home, Path::new(&source));
    let (m, _stats) = manifest::build(Path::new(&source), &excludes, Some(&cache))?;
    let digest = m.digest_hex();
    let all: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let last = history::last_applies(&ctx.home.join("operations.log"), &all)?;
    let mut pending = false;
    let mut json_rows = Vec::new();
    let mut rows = Vec::new();
    for (name, kind) in &names {
        let la = last.get(name).cloned().unwrap_or_default();
        let state = la.state(&digest);
        pending |= state.pending();
        json_rows.push(serde_json::json!({
            "name": name,
            "kind": kind,
            "state": state,
            "pending": state.pending(),
            "last_apply": la.last.as_ref().map(Summary::brief),
            "last_success": la.last_success.as_ref().map(Summary::brief),
            "rollback": la.rollback.as_ref().map(Summary::brief),
        }));
        rows.push(status_cells(name, kind, &la, state));
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "source": {"path": source, "digest": digest, "entries": m.entries.len()},
                "targets": json_rows,
            }))?
        )?;
    } else {
        crate::outln!(
            "source {}  digest {}",
            for_terminal(&source),
            short(&digest)
        )?;
        if rows.is_empty() {
            eprintln!("no targets; add one with `offsync target add USER@HOST --path DIR`");
        } else {
            let header = [
                "TARGET",
                "KIND",
                "LAST APPLY (UTC)",
                "RESULT",
                "SOURCE",
                "PLAN",
                "RELEASE",
                "STATE",
            ]
            .map(String::from);
            print_table(&header, &rows, &[])?;
        }
    }
    Ok(if args.detailed_exitcode && pending {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn status_cells(name: &str, kind: &str, la: &history::LastApply, state: State) -> [String; 8] {
    let dash = || "-".to_string();
    let (time, result, src, plan, release) = match &la.last {
        Some(s) => (
            history::show_time(&s.timestamp),
            s.status.to_string(),
            short(&s.source_digest),
            short(&s.plan_digest),
            s.release.as_deref().map_or_else(dash, for_terminal),
        ),
        None => (dash(), dash(), dash(), dash(), dash()),
    };
    let text = match state {
        State::InSync => "in sync with the last apply".to_string(),
        State::SourceChanged => "source changed since the last apply".to_string(),
        State::NeverApplied => "never applied".to_string(),
        State::LastFailed => {
            let s = la.last.as_ref().expect("a failed apply");
            let why = match (&s.error_kind, &s.error) {
                (Some(k), Some(e)) => format!("{}: {}", for_terminal(k), one_line(e, 100)),
                (None, Some(e)) => one_line(e, 100),
                (Some(k), None) => for_terminal(k),
                (None, None) => s.status.to_string(),
            };
            format!("last apply {}: {why}", s.status)
        }
        State::RolledBack => {
            let r = la.rollback.as_ref().expect("a rollback");
            format!(
                "rolled back to {} at {} since the last apply",
                r.release.as_deref().map_or_else(dash, for_terminal),
                history::show_time(&r.timestamp)
            )
        }
    };
    [
        for_terminal(name),
        kind.to_string(),
        time,
        result,
        src,
        plan,
        release,
        text,
    ]
}

/// The first 12 hex digits of a digest (`-` for none).
fn short(digest: &str) -> String {
    if digest.is_empty() {
        "-".to_string()
    } else {
        for_terminal(&digest.chars().take(12).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(999), "999 ms");
        assert_eq!(duration(4_249), "4.2 s");
        assert_eq!(duration(192_000), "3m 12s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }
}
