//! Terminal progress on stderr: spinners and per-target transfer bars, shown only when stderr
//! is a terminal (never in pipes, CI logs or `--json` runs); and the global verbosity
//! (`-v`, `-vv`, `-q`) with the diagnostics it adds.
//!
//! Verbosity is process-wide (set once by `lib.rs` from the global flags) rather than threaded
//! through every call: `process` reports each external command and the engine reports phase
//! timings from deep inside worker threads. What `-v` prints is safe to share: argv (paths and
//! options; offsync never puts a secret in argv, see `process`), never a child's environment
//! (where secrets travel); anything from a remote host goes through `sanitize` first.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
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

/// One bar per target for transfers, on a terminal only.
pub struct TransferBars {
    multi: Option<indicatif::MultiProgress>,
}

impl TransferBars {
    /// Bars when `show` and stderr is a terminal.
    pub fn new(show: bool) -> TransferBars {
        TransferBars {
            multi: (show && !quiet() && std::io::stderr().is_terminal())
                .then(indicatif::MultiProgress::new),
        }
    }
}

impl crate::engine::Progress for TransferBars {
    fn begin(&self, target: &str, paths: u64) -> Box<dyn crate::engine::TargetProgress> {
        let Some(m) = &self.multi else {
            return Box::new(());
        };
        let pb = m.add(indicatif::ProgressBar::new(paths));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} paths")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_prefix(target.to_string());
        Box::new(pb)
    }
}

impl crate::engine::TargetProgress for indicatif::ProgressBar {
    fn update(&self, done: u64) {
        self.set_position(done);
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}
