//! What `offsync log`, `offsync status` and `target list` read from `operations.log`: a light
//! view of each record ([`Summary`]: no path lists), `--since` parsing, and each target's last
//! apply — all by reading the history backwards ([`crate::oplog::History`]), stopping as soon
//! as the answer is known. Nothing here connects to a target.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::oplog::{History, Line, Outcome};

/// The fields of a record that history views show. Unknown keys are ignored and missing
/// optional ones default, so records of every offsync version read; lines without
/// `timestamp`, `target`, `operation` or `status` (the Python offsync's, torn lines) do not.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub timestamp: String,
    pub target: String,
    pub operation: String,
    pub status: Outcome,
    #[serde(default)]
    files_changed: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    files_deleted: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    files_changed_count: Option<u64>,
    #[serde(default)]
    files_deleted_count: Option<u64>,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub source_digest: String,
    #[serde(default)]
    pub plan_digest: String,
    #[serde(default)]
    pub error: Option<String>,
    /// Kept as text: a kind added by a newer offsync still reads.
    #[serde(default)]
    pub error_kind: Option<String>,
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub partial: bool,
}

impl Summary {
    pub fn changed(&self) -> u64 {
        self.files_changed_count
            .unwrap_or(self.files_changed.len() as u64)
    }

    pub fn deleted(&self) -> u64 {
        self.files_deleted_count
            .unwrap_or(self.files_deleted.len() as u64)
    }

    /// The record's time, if it parses.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// An apply that left the target with the source it names.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Outcome::Ok | Outcome::Unchanged)
    }

    /// The JSON a history view prints for it (no path lists: the log line has them).
    pub fn brief(&self) -> serde_json::Value {
        serde_json::json!({
            "timestamp": self.timestamp,
            "operation": self.operation,
            "status": self.status,
            "source_digest": self.source_digest,
            "plan_digest": self.plan_digest,
            "release": self.release,
            "error": self.error,
            "error_kind": self.error_kind,
        })
    }
}

/// The time as history views print it: UTC, to the second (`2026-11-28T09:30:47Z`), the
/// log's own clock, so lines from several controllers and the log itself compare directly.
pub fn show_time(timestamp: &str) -> String {
    match DateTime::parse_from_rfc3339(timestamp) {
        Ok(t) => t
            .with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Err(_) => crate::sanitize::for_terminal(timestamp),
    }
}

/// A line of the history: its summary, or why it is skipped.
pub enum Parsed {
    Record(Box<Summary>),
    /// Valid JSON, but not an offsync record (the Python offsync's lines).
    Foreign,
    /// Not JSON: a line torn by a crash, or garbage.
    Garbled,
}

pub fn parse(line: &Line) -> Parsed {
    // Straight into the summary: one pass over the bytes for the lines that are records.
    if let Ok(s) = serde_json::from_slice::<Summary>(&line.bytes) {
        return Parsed::Record(Box::new(s));
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&line.bytes) {
        Ok(_) => Parsed::Foreign,
        Err(_) => Parsed::Garbled,
    }
}

/// `--since`: `30s`, `30m`, `12h`, `2d`, `1w` before `now`, a date (`2026-11-01`, midnight
/// UTC) or an RFC 3339 time (`2026-11-01T08:00:00Z`, `2026-11-01T09:00:00+01:00`).
pub fn parse_since_at(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    let hint = "pass an age such as 30m, 12h, 2d or 1w, a date such as 2026-11-01 (UTC), or \
                an RFC 3339 time such as 2026-11-01T08:00:00Z";
    if let Some(unit) = t.chars().last().filter(char::is_ascii_alphabetic) {
        let num = &t[..t.len() - 1];
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = num
                .parse()
                .map_err(|_| format!("{t:?} is too large; {hint}"))?;
            let secs = match unit {
                's' => Some(1),
                'm' => Some(60),
                'h' => Some(3600),
                'd' => Some(86_400),
                'w' => Some(7 * 86_400),
                _ => None,
            };
            if let Some(secs) = secs {
                return n
                    .checked_mul(secs)
                    .and_then(chrono::TimeDelta::try_seconds)
                    .and_then(|d| now.checked_sub_signed(d))
                    .ok_or_else(|| format!("{t:?} is too far back; {hint}"));
            }
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    Err(format!("{t:?} is not an age or a time; {hint}"))
}

/// [`parse_since_at`] now (clap's value parser for `--since`).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    parse_since_at(s, Utc::now())
}

/// Warnings about skipped lines: the first few by file and line number, then a count.
pub struct Skipped {
    shown: usize,
    total: usize,
}

impl Skipped {
    const SHOW: usize = 5;

    pub fn new() -> Skipped {
        Skipped { shown: 0, total: 0 }
    }

    /// Note that `line` is skipped, printing a one-line warning for the first few.
    pub fn note(&mut self, history: &History, line: &Line, parsed: &Parsed) {
        self.total += 1;
        if self.shown >= Self::SHOW {
            return;
        }
        self.shown += 1;
        let what = match parsed {
            Parsed::Garbled => "not JSON (a torn or damaged line)",
            _ => "not an offsync record",
        };
        let n = history
            .line_number(line)
            .map_or("?".to_string(), |n| n.to_string());
        eprintln!(
            "warning: {} line {n}: {what}; skipped",
            crate::sanitize::for_terminal(&line.path.display().to_string())
        );
    }

    /// One line for the skipped lines not warned about one by one.
    pub fn finish(&self) {
        if self.total > self.shown {
            eprintln!(
                "warning: {} more lines skipped (not offsync records)",
                self.total - self.shown
            );
        }
    }
}

impl Default for Skipped {
    fn default() -> Self {
        Self::new()
    }
}

/// What the history says about one target's applies.
#[derive(Debug, Clone, Default)]
pub struct LastApply {
    /// The newest `apply` record, whatever its status.
    pub last: Option<Summary>,
    /// The newest `apply` that succeeded (`ok` or `unchanged`); the same as `last` when that
    /// one did.
    pub last_success: Option<Summary>,
    /// A `rollback` newer than `last_success`.
    pub rollback: Option<Summary>,
}

/// The last applies of `names`, read backwards until each has a successful apply or the
/// history ends. Unparsable lines are skipped silently (`offsync log` warns about them).
pub fn last_applies(log: &Path, names: &[String]) -> Result<BTreeMap<String, LastApply>> {
    let mut out: BTreeMap<String, LastApply> = names
        .iter()
        .map(|n| (n.clone(), LastApply::default()))
        .collect();
    let mut open: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    if open.is_empty() {
        return Ok(out);
    }
    let history = History::open(log)?;
    for line in history.newest_first() {
        let line = line?;
        let Parsed::Record(s) = parse(&line) else {
            continue;
        };
        if !open.contains(s.target.as_str()) {
            continue;
        }
        let entry = out
            .get_mut(&s.target)
            .expect("every open name has an entry");
        match s.operation.as_str() {
            "apply" => {
                if entry.last.is_none() {
                    entry.last = Some((*s).clone());
                }
                if s.succeeded() {
                    entry.last_success = Some(*s.clone());
                    open.remove(s.target.as_str());
                }
            }
            "rollback" if entry.last.is_none() && entry.rollback.is_none() && s.succeeded() => {
                entry.rollback = Some(*s);
            }
            _ => {}
        }
        if open.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// `Some(state)` of one target against the source digest now (see `offsync status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    InSync,
    SourceChanged,
    NeverApplied,
    LastFailed,
    RolledBack,
}

impl State {
    /// Would `plan` likely show work for this target?
    pub fn pending(self) -> bool {
        self != State::InSync
    }
}

impl LastApply {
    pub fn state(&self, source_digest: &str) -> State {
        match (&self.last, &self.last_success) {
            (None, _) => State::NeverApplied,
            (Some(l), _) if !l.succeeded() => State::LastFailed,
            (_, Some(_)) if self.rollback.is_some() => State::RolledBack,
            (_, Some(s)) if s.source_digest == source_digest => State::InSync,
            _ => State::SourceChanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn since_accepts_ages_dates_and_rfc3339() {
        let now = at("2026-11-28T12:00:00Z");
        for (input, want) in [
            ("45s", "2026-11-28T11:59:15Z"),
            ("30m", "2026-11-28T11:30:00Z"),
            ("12h", "2026-11-28T00:00:00Z"),
            ("2d", "2026-11-26T12:00:00Z"),
            ("1w", "2026-11-21T12:00:00Z"),
            ("0d", "2026-11-28T12:00:00Z"),
            (" 2d ", "2026-11-26T12:00:00Z"),
            ("2026-11-01", "2026-11-01T00:00:00Z"),
            ("2026-11-01T08:00:00Z", "2026-11-01T08:00:00Z"),
            ("2026-11-01T09:00:00+01:00", "2026-11-01T08:00:00Z"),
            ("2026-11-01T08:00:00.250Z", "2026-11-01T08:00:00.250Z"),
        ] {
            assert_eq!(parse_since_at(input, now), Ok(at(want)), "{input}");
        }
    }

    #[test]
    fn since_refuses_what_it_cannot_read_with_the_forms_it_takes() {
        let now = at("2026-11-28T12:00:00Z");
        for bad in [
            "",
            "d",
            "2",
            "-2d",
            "2x",
            "2 d",
            "2D",
            "1.5h",
            "yesterday",
            "2026-13-01",
            "2026-11-01 08:00",
            "99999999999999999999d",
            "999999999999999w",
        ] {
            let e = parse_since_at(bad, now).unwrap_err();
            assert!(e.contains("30m, 12h, 2d or 1w"), "{bad}: {e}");
        }
    }

    fn summary(op: &str, status: &str, digest: &str) -> Summary {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2026-11-28T09:00:00.000Z", "target": "t1", "operation": op,
            "status": status, "source_digest": digest, "files_changed": ["a", "b"]
        }))
        .unwrap()
    }

    #[test]
    fn states_follow_the_last_apply() {
        let ok = summary("apply", "ok", "aaa");
        let failed = summary("apply", "failed", "bbb");
        let rb = summary("rollback", "ok", "");
        let la = |last: Option<&Summary>, success: Option<&Summary>, rollback| LastApply {
            last: last.cloned(),
            last_success: success.cloned(),
            rollback,
        };
        assert_eq!(la(None, None, None).state("aaa"), State::NeverApplied);
        assert_eq!(la(Some(&ok), Some(&ok), None).state("aaa"), State::InSync);
        assert_eq!(
            la(Some(&ok), Some(&ok), None).state("ccc"),
            State::SourceChanged
        );
        assert_eq!(
            la(Some(&failed), Some(&ok), None).state("aaa"),
            State::LastFailed
        );
        assert_eq!(
            la(Some(&ok), Some(&ok), Some(rb)).state("aaa"),
            State::RolledBack
        );
        assert!(!State::InSync.pending());
        assert!(State::NeverApplied.pending());
        assert_eq!(ok.changed(), 2, "counts from the lists of old records");
        assert_eq!(ok.deleted(), 0);
    }
}
