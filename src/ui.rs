//! Progress on stderr: spinners and per-target transfer bars in bytes (with a total bar for
//! several targets), drawn only when stderr is a terminal (by default never with `-q` or in
//! `--json` runs); or, with `--progress=json`, one JSON event per line for scripts and CI logs
//! (fields in a fixed order, at most one `progress` event per target every 250 ms plus a
//! final one per upload; figures never go back). And the global verbosity (`-v`, `-vv`,
//! `-q`) with the diagnostics it adds.
//!
//! Verbosity is process-wide (set once by `lib.rs` from the global flags) rather than threaded
//! through every call: `process` reports each external command and the engine reports phase
//! timings from deep inside worker threads. What `-v` prints is safe to share: argv (paths and
//! options; offsync never puts a secret in argv, see `process`), never a child's environment
//! (where secrets travel); anything from a remote host goes through `sanitize` first.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::engine::{Phase, Progress, Sent, TargetProgress};
use std::time::{Duration, Instant};

/// How much offsync says on stderr. Results on stdout are the same at every level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors only (no progress, no notices).
    Quiet = 0,
    /// The default: progress on a terminal, notices.
    Normal = 1,
    /// `-v`: also each external command (argv, duration, exit) and phase timings.
    Verbose = 2,
    /// `-vv`: also rsync's own statistics and every line a child printed (sanitised).
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// Set the process-wide verbosity (once, at start).
pub fn set_verbosity(v: Verbosity) {
    LEVEL.store(v as u8, Ordering::Relaxed);
}

/// The process-wide verbosity.
pub fn verbosity() -> Verbosity {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        2 => Verbosity::Verbose,
        _ => Verbosity::Debug,
    }
}

/// Whether `-v` (or more) is in force.
pub fn verbose() -> bool {
    verbosity() >= Verbosity::Verbose
}

/// Whether `-q` is in force.
pub fn quiet() -> bool {
    verbosity() == Verbosity::Quiet
}

/// A `-v` diagnostic line on stderr (`offsync: MSG`, sanitised).
pub fn debug(msg: &str) {
    if verbose() {
        eprintln!("offsync: {}", crate::sanitize::for_terminal(msg));
    }
}

/// A notice that is not an error (suppressed by `-q`).
pub fn notice(msg: &str) {
    if !quiet() {
        eprintln!("offsync: {}", crate::sanitize::for_terminal(msg));
    }
}

/// Seconds with millisecond precision, as `-v` prints durations.
pub fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Run `f` and, with `-v`, print how long the phase `what` took.
pub fn phase<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    debug(&format!("phase: {what}: {}", secs(start.elapsed())));
    r
}

/// Extra rsync options for `-vv`. rrsync refuses `--debug` (its option table marks it -1), so
/// `-vv` asks for `--info=stats2,misc2` instead (rrsync accepts `--info=`; both only change
/// what the client prints: statistics and what rsync is doing). Those lines are not itemized
/// entries, which the parsers skip; `process` echoes them at this level.
pub fn rsync_verbosity() -> &'static [&'static str] {
    if verbosity() >= Verbosity::Debug {
        &["--info=stats2,misc2"]
    } else {
        &[]
    }
}

/// A spinner on stderr when it is a terminal; nothing otherwise.
pub fn spinner(msg: &str) -> Option<indicatif::ProgressBar> {
    if quiet() || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

/// How transfer progress is shown (`--progress`; the variants carry no doc comments, which
/// would turn clap's help into its long form everywhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    // Bars when stderr is a terminal, unless `-q` or `--json`.
    #[default]
    Auto,
    // Bars whenever stderr is a terminal (even with `--json` or `-q`).
    Bar,
    // No progress.
    None,
    // One JSON event per line on stderr (see README, "Progress"), terminal or not.
    Json,
}

static PROGRESS: AtomicU8 = AtomicU8::new(ProgressMode::Auto as u8);

/// Set the process-wide progress mode (once, at start, like the verbosity).
pub fn set_progress_mode(m: ProgressMode) {
    PROGRESS.store(m as u8, Ordering::Relaxed);
}

/// The process-wide progress mode.
pub fn progress_mode() -> ProgressMode {
    match PROGRESS.load(Ordering::Relaxed) {
        1 => ProgressMode::Bar,
        2 => ProgressMode::None,
        3 => ProgressMode::Json,
        _ => ProgressMode::Auto,
    }
}

/// The transfer progress a command shows under the `--progress` mode; `json_run`: the
/// command prints a JSON result document (`--json`), which keeps `auto` from drawing bars.
pub fn transfer_progress(json_run: bool) -> Box<dyn Progress> {
    let terminal = std::io::stderr().is_terminal();
    match progress_mode() {
        ProgressMode::Json => Box::new(JsonProgress::new(Box::new(std::io::stderr()))),
        ProgressMode::Bar if terminal => Box::new(TransferBars::new()),
        ProgressMode::Auto if terminal && !quiet() && !json_run => Box::new(TransferBars::new()),
        _ => Box::new(crate::engine::NoProgress),
    }
}

/// The template of a transfer bar: bytes, rate and time left (the message names the phase
/// after the upload).
const BAR_TEMPLATE: &str =
    "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}";

/// One bar per target for transfers (bytes sent of the bytes planned), plus a total bar when
/// more than one target is applied. Drawn only on a terminal (see [`transfer_progress`]).
pub struct TransferBars {
    multi: indicatif::MultiProgress,
    bars: std::sync::Mutex<Vec<(String, indicatif::ProgressBar)>>,
    total: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl TransferBars {
    fn new() -> TransferBars {
        TransferBars {
            multi: indicatif::MultiProgress::new(),
            bars: Default::default(),
            total: Default::default(),
        }
    }

    /// A bar in offsync's transfer style (a fixed template, so it cannot fail to parse).
    fn bar(prefix: &str, len: u64) -> indicatif::ProgressBar {
        let pb = indicatif::ProgressBar::new(len);
        pb.set_style(
            indicatif::ProgressStyle::with_template(BAR_TEMPLATE)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(crate::sanitize::for_terminal(prefix));
        pb
    }
}

impl Progress for TransferBars {
    fn start(&self, targets: &[(String, Sent)]) {
        // Every bar is placed before any target starts, so they keep the targets' order and
        // the total stays last.
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for (name, total) in targets {
            bars.push((name.clone(), self.multi.add(Self::bar(name, total.bytes))));
        }
        if targets.len() > 1 {
            let all = targets.iter().map(|(_, t)| t.bytes).sum();
            *self.total.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(self.multi.add(Self::bar("total", all)));
        }
    }

    fn begin(&self, target: &str, total: Sent) -> Box<dyn TargetProgress> {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = match bars.iter().find(|(n, _)| n == target) {
            Some((_, b)) => b.clone(),
            None => {
                let b = self.multi.add(Self::bar(target, total.bytes));
                bars.push((target.to_string(), b.clone()));
                b
            }
        };
        let total = self.total.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::new(TargetBar {
            bar,
            total,
            last: AtomicU64::new(0),
        })
    }
}

/// One target's bar, feeding the total bar with what it adds.
struct TargetBar {
    bar: indicatif::ProgressBar,
    total: Option<indicatif::ProgressBar>,
    last: AtomicU64,
}

impl TargetProgress for TargetBar {
    fn phase(&self, phase: Phase) {
        if phase != Phase::Upload {
            self.bar.set_message(phase.name());
        }
    }

    fn update(&self, sent: Sent) {
        // More than planned (a release upload re-sends files whose mtime alone changed):
        // the bar grows rather than overflowing.
        if sent.bytes > self.bar.length().unwrap_or(0) {
            self.bar.set_length(sent.bytes);
        }
        self.bar.set_position(sent.bytes);
        let before = self.last.fetch_max(sent.bytes, Ordering::Relaxed);
        if let Some(t) = &self.total
            && sent.bytes > before
        {
            let add = sent.bytes - before;
            if t.position() + add > t.length().unwrap_or(0) {
                t.set_length(t.position() + add);
            }
            t.inc(add);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(t) = &self.total
            && self.bar.is_finished()
            && t.position() >= t.length().unwrap_or(0)
        {
            t.finish_and_clear();
        }
    }
}

impl Drop for TransferBars {
    fn drop(&mut self) {
        if let Some(t) = self.total.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.finish_and_clear();
        }
    }
}

/// How often a target's `progress` events may be written at most (the final one of a phase
/// and every `phase` event are always written).
const JSON_INTERVAL: Duration = Duration::from_millis(250);

/// Progress as JSON Lines (`--progress=json`): one event per line, fields in a fixed order
/// (README, "Progress"). Written whole under one lock, so targets' lines never interleave.
pub struct JsonProgress {
    out: std::sync::Arc<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
}

impl JsonProgress {
    pub fn new(out: Box<dyn std::io::Write + Send>) -> JsonProgress {
        JsonProgress {
            out: std::sync::Arc::new(std::sync::Mutex::new(out)),
        }
    }
}

impl Progress for JsonProgress {
    fn begin(&self, target: &str, total: Sent) -> Box<dyn TargetProgress> {
        Box::new(self.target(target, total))
    }
}

impl JsonProgress {
    fn target(&self, target: &str, total: Sent) -> JsonTarget {
        let now = Instant::now();
        JsonTarget {
            out: self.out.clone(),
            target: target.to_string(),
            total,
            began: now,
            state: std::sync::Mutex::new(JsonState {
                phase: None,
                sent: Sent::default(),
                upload_began: now,
                upload_ended: None,
                last_written: None,
                done: false,
            }),
        }
    }
}

/// One event of `--progress=json` (the field order is the wire order).
#[derive(Debug, serde::Serialize)]
pub struct Event<'a> {
    /// `phase` (a phase starts; `done` ends the target) or `progress` (bytes moved).
    pub event: &'a str,
    pub target: &'a str,
    pub phase: &'a str,
    pub bytes: u64,
    pub total_bytes: u64,
    pub files: u64,
    pub total_files: u64,
    /// Average bytes per second of the upload (so far, or in all once it ended).
    pub rate: u64,
    /// Since the target started.
    pub elapsed_ms: u64,
    /// The last `progress` event of its phase.
    #[serde(rename = "final")]
    pub last: bool,
}

struct JsonTarget {
    out: std::sync::Arc<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
    target: String,
    total: Sent,
    began: Instant,
    state: std::sync::Mutex<JsonState>,
}

struct JsonState {
    phase: Option<Phase>,
    sent: Sent,
    upload_began: Instant,
    /// The rate is the upload's: it stops counting when the upload ends.
    upload_ended: Option<Instant>,
    last_written: Option<Instant>,
    done: bool,
}

impl JsonTarget {
    fn write(&self, st: &JsonState, event: &str, last: bool, now: Instant) {
        let up = st
            .upload_ended
            .unwrap_or(now)
            .saturating_duration_since(st.upload_began)
            .as_secs_f64();
        let rate = if up > 0.0 {
            (st.sent.bytes as f64 / up) as u64
        } else {
            0
        };
        let e = Event {
            event,
            target: &self.target,
            phase: st.phase.map_or("upload", Phase::name),
            bytes: st.sent.bytes,
            total_bytes: self.total.bytes.max(st.sent.bytes),
            files: st.sent.files,
            total_files: self.total.files.max(st.sent.files),
            rate,
            elapsed_ms: now.saturating_duration_since(self.began).as_millis() as u64,
            last,
        };
        if let Ok(line) = serde_json::to_string(&e) {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // Progress is best effort: a closed stderr must not fail the apply.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }

    fn phase_at(&self, phase: Phase, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.done || st.phase == Some(phase) {
            return;
        }
        if st.phase == Some(Phase::Upload) {
            st.upload_ended = Some(now);
            self.write(&st, "progress", true, now);
        }
        if phase == Phase::Upload {
            st.upload_began = now;
        }
        st.phase = Some(phase);
        st.done = phase == Phase::Done;
        self.write(&st, "phase", false, now);
    }

    fn update_at(&self, sent: Sent, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.done {
            return;
        }
        st.sent = Sent {
            bytes: sent.bytes.max(st.sent.bytes),
            files: sent.files.max(st.sent.files),
        };
        if st
            .last_written
            .is_none_or(|t| now.saturating_duration_since(t) >= JSON_INTERVAL)
        {
            st.last_written = Some(now);
            self.write(&st, "progress", false, now);
        }
    }
}

impl TargetProgress for JsonTarget {
    fn phase(&self, phase: Phase) {
        self.phase_at(phase, Instant::now());
    }
    fn update(&self, sent: Sent) {
        self.update_at(sent, Instant::now());
    }
    fn finish(&self) {
        self.phase_at(Phase::Done, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sent(bytes: u64, files: u64) -> Sent {
        Sent { bytes, files }
    }

    #[test]
    fn json_events_are_rate_limited_with_one_final_per_phase() {
        let buf = Shared::default();
        let p = JsonProgress::new(Box::new(buf.clone()));
        let t = p.target("web \"1\"", sent(300, 3));
        let t0 = t.began;
        let ms = |n| t0 + Duration::from_millis(n);
        t.phase_at(Phase::Upload, ms(0));
        t.update_at(sent(10, 0), ms(1)); // written: the first
        t.update_at(sent(50, 1), ms(100)); // dropped: too soon
        t.update_at(sent(40, 1), ms(200)); // dropped, and never goes back
        t.update_at(sent(120, 1), ms(260)); // written
        t.update_at(sent(300, 3), ms(300)); // dropped, but the final event carries it
        t.phase_at(Phase::Verify, ms(400));
        t.phase_at(Phase::Verify, ms(401)); // the same phase again: nothing
        t.phase_at(Phase::Done, ms(500));
        t.update_at(sent(999, 9), ms(600)); // after the end: nothing
        t.phase_at(Phase::Done, ms(700));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"event":"phase","target":"web \"1\"","phase":"upload","bytes":0,"total_bytes":300,"files":0,"total_files":3,"rate":0,"elapsed_ms":0,"final":false}"#,
                r#"{"event":"progress","target":"web \"1\"","phase":"upload","bytes":10,"total_bytes":300,"files":0,"total_files":3,"rate":10000,"elapsed_ms":1,"final":false}"#,
                r#"{"event":"progress","target":"web \"1\"","phase":"upload","bytes":120,"total_bytes":300,"files":1,"total_files":3,"rate":461,"elapsed_ms":260,"final":false}"#,
                r#"{"event":"progress","target":"web \"1\"","phase":"upload","bytes":300,"total_bytes":300,"files":3,"total_files":3,"rate":750,"elapsed_ms":400,"final":true}"#,
                r#"{"event":"phase","target":"web \"1\"","phase":"verify","bytes":300,"total_bytes":300,"files":3,"total_files":3,"rate":750,"elapsed_ms":400,"final":false}"#,
                r#"{"event":"phase","target":"web \"1\"","phase":"done","bytes":300,"total_bytes":300,"files":3,"total_files":3,"rate":750,"elapsed_ms":500,"final":false}"#,
            ]
        );
    }

    #[test]
    fn json_totals_grow_when_more_is_sent_than_planned() {
        let buf = Shared::default();
        let p = JsonProgress::new(Box::new(buf.clone()));
        let t = p.begin("t", sent(10, 1));
        t.phase(Phase::Upload);
        t.update(sent(25, 2));
        t.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["bytes"], 25);
        assert_eq!(last["total_bytes"], 25);
        assert_eq!(last["total_files"], 2);
    }

    #[test]
    fn bar_template_shows_bytes_rate_and_eta() {
        let style = indicatif::ProgressStyle::with_template(BAR_TEMPLATE);
        assert!(style.is_ok(), "the template parses");
        for key in [
            "{bytes}",
            "{total_bytes}",
            "{binary_bytes_per_sec}",
            "{eta}",
        ] {
            assert!(BAR_TEMPLATE.contains(key), "{key}");
        }
    }
}
