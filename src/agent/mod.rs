//! The pull agent: `offsync pull --watch`, the `--exec` hook and the `--status-file`.
//!
//! `pull --watch` runs forever (until SIGTERM, SIGINT or SIGHUP). Each *cycle* first makes one
//! cheap check — a LIST of the mirror's `snapshots/` ([`newest_generation`]) — and compares
//! the newest generation number with the one this agent last handled. Only when they differ
//! (or on the first cycle) does it run one pull, the very same [`pull::pull_once`] a one-shot
//! `pull` runs: the newest generation must be signed by a trusted writer and pass the rollback
//! check, every file is verified, and a `releases` DEST is switched atomically. After a pull
//! that changed DEST (or switched DEST/current) the `--exec` hook runs ([`hook`]).
//!
//! Between cycles the agent sleeps `--interval` seconds, randomised by ±15% so that a fleet
//! started at once spreads its requests; after a failed cycle the wait doubles per failure in
//! a row, up to 10 × the interval. Nothing new costs one LIST request per cycle; a new
//! generation costs what a one-shot pull costs.
//!
//! Invariants:
//! - the newest generation number from the LIST is only a hint: nothing is downloaded or
//!   trusted because of it (the pull re-reads and verifies everything);
//! - a generation whose hook failed is not pulled again: the agent remembers the newest
//!   generation it handled, whatever the outcome, and with `--rollback-on-hook-failure` the
//!   rollback records `rolled_back_from` in DEST/releases/state.json, so a restarted agent
//!   (or a one-shot pull) holds too, until a newer generation is published;
//! - a failed cycle (mirror unreachable, a pull that failed) changes nothing it did not
//!   verify, and is retried at the next cycle; a killed agent's next start is a full pull,
//!   which finishes or replaces what was left (see `pull`);
//! - a signal between cycles stops the agent with exit 0 (no work was stopped); a signal
//!   during a pull stops that pull, which logs it as interrupted, and the agent exits
//!   128 + the signal (`interrupt`);
//! - every cycle appends one `pull-check URL` record to `operations.log` (besides the `pull`,
//!   `pull-hook` and `pull-rollback` records of what it did), and rewrites the status file
//!   atomically (see [`Status`]).

pub mod config;
pub mod heartbeat;
pub mod hook;
pub mod systemd;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::PullArgs;
use crate::commands::pull::{self, Pulled};
use crate::context::Context;
use crate::error::{ErrorKind, exit};
use crate::mirror::snapshot::newest_generation;
use crate::mirror::store::Store;
use crate::oplog::{self, Outcome};

/// `--interval` when neither the flag nor the config file sets it.
pub const DEFAULT_INTERVAL: u64 = 60;

/// The longest wait after failures, in intervals.
pub const BACKOFF_CAP: u64 = 10;

/// The jitter: each wait is the base times a factor in `1 ± JITTER`.
pub const JITTER: f64 = 0.15;

/// The status file's `format`.
pub const STATUS_FORMAT: &str = "offsync-pull-status/1";

/// What `--print-systemd-unit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnitKind {
    /// `offsync-pull.service`: runs `pull --watch`
    Watch,
    /// `offsync-pull-once.service`: one pull per start (for the timer)
    Oneshot,
    /// `offsync-pull-once.timer`: starts the oneshot service every few minutes
    Timer,
}

/// The status file (`--status-file`): JSON, rewritten atomically after every cycle, 0644 (it
/// holds no secret; monitoring reads it). A documented format: fields are only ever added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_FORMAT`].
    pub format: String,
    /// offsync's version.
    pub version: String,
    /// The agent's process id.
    pub pid: u32,
    /// `watch` (`pull --watch`) or `once` (a one-shot pull).
    pub mode: String,
    /// `running`, or `stopped` once a `--watch` agent ended.
    pub state: String,
    /// The mirror URL.
    pub mirror: String,
    /// DEST.
    pub dest: String,
    /// When the last cycle started (UTC, RFC 3339).
    pub last_check: Option<String>,
    /// When the next cycle starts (`--watch`).
    pub next_check: Option<String>,
    /// The newest generation the mirror listed at the last check.
    pub newest_generation: Option<u64>,
    /// The generation DEST holds (layout releases: the one DEST/current points at), as far
    /// as this agent knows.
    pub last_generation: Option<u64>,
    /// How the last cycle ended: `unchanged` (nothing new), `waiting` (the mirror has no
    /// snapshot yet), `updated` (a new generation was pulled and its hook, if any, succeeded),
    /// `held` (this host was rolled back from that generation), `hook-failed`, `rolled-back`
    /// (the hook failed and DEST/current was switched back), `failed` (the check or the pull
    /// failed: `last_error`), or `interrupted`.
    pub last_result: String,
    /// The last cycle's error, on one line.
    pub last_error: Option<String>,
    /// Failed cycles in a row (0 after a cycle that did not fail).
    pub consecutive_failures: u32,
    /// When a pull last changed DEST.
    pub last_update: Option<String>,
    /// The generation whose hook failed, until a newer generation is pulled.
    pub failed_generation: Option<u64>,
    /// The hook's last run, if it ran.
    pub hook: Option<hook::HookRecord>,
}

/// One agent: the resolved arguments and what it remembers between cycles.
struct Agent<'a> {
    ctx: &'a Context,
    args: &'a PullArgs,
    dest: &'a Path,
    releases: bool,
    /// The store for the cheap check, opened on first use.
    store: Option<Store>,
    /// The newest generation a cycle handled (pulled, held, or whose hook failed).
    handled: Option<u64>,
    status: Status,
    status_file: Option<PathBuf>,
    /// `--heartbeat`: this host's id and key, and when it last wrote one.
    heartbeat: Option<(String, ssh_key::PrivateKey)>,
    last_heartbeat: Option<Instant>,
}

/// How a cycle ended, for the loop.
enum Next {
    /// Go on (`failed`: the cycle failed, back off).
    Continue { failed: bool },
    /// Stop with this exit status.
    Stop(u8),
}

/// `pull --watch` (see the module docs).
pub fn watch(ctx: &Context, args: &PullArgs, dest: &Path, releases: bool) -> Result<ExitCode> {
    crate::interrupt::install();
    let mut agent = Agent::new(ctx, args, dest, releases, "watch")?;
    let interval = Duration::from_secs(args.interval.unwrap_or(DEFAULT_INTERVAL));
    eprintln!(
        "offsync: watching {} for new generations every {} (±{:.0}%), into {}",
        args.url(),
        crate::ui::secs(interval),
        JITTER * 100.0,
        dest.display()
    );
    let mut rng = Jitter::new();
    loop {
        let started = Instant::now();
        let next = agent.cycle(true);
        let pulled =
            agent.status.last_result != "unchanged" && agent.status.last_result != "waiting";
        agent.beat(pulled);
        let code = match next {
            Next::Stop(code) => Some(code),
            Next::Continue { .. } if crate::interrupt::interrupted() => Some(stopped()),
            Next::Continue { failed } => {
                let wait = rng
                    .wait(
                        interval,
                        if failed {
                            agent.status.consecutive_failures
                        } else {
                            0
                        },
                    )
                    // Checks start about every interval, whatever a cycle took (a long pull
                    // still leaves at least half an interval before the next check).
                    .saturating_sub(started.elapsed().min(interval / 2));
                agent.status.next_check = Some(oplog::timestamp(
                    chrono::Utc::now() + chrono::TimeDelta::from_std(wait).unwrap_or_default(),
                ));
                agent.save_status();
                if sleep_unless_interrupted(wait) {
                    None
                } else {
                    Some(stopped())
                }
            }
        };
        if let Some(code) = code {
            agent.status.state = "stopped".into();
            agent.status.next_check = None;
            agent.save_status();
            return Ok(ExitCode::from(code));
        }
    }
}

/// A signal arrived while no pull was running: nothing was stopped, so exit 0 (see
/// `interrupt`'s invariant).
fn stopped() -> u8 {
    eprintln!(
        "offsync: {} received between checks; the agent stopped (no pull was running)",
        crate::interrupt::signal().map_or("a signal", |s| s.as_str())
    );
    exit::OK
}

/// One-shot `pull` (no `--watch`): one pull, then the hook and the status file when asked.
/// Exactly the behaviour of `pull` without them otherwise.
pub fn once(ctx: &Context, args: &PullArgs, dest: &Path, releases: bool) -> Result<ExitCode> {
    if args.exec.is_none() && args.status_file.is_none() && !args.heartbeat {
        return Ok(ExitCode::from(
            pull::pull_once(ctx, args, dest, releases)?.code,
        ));
    }
    let mut agent = Agent::new(ctx, args, dest, releases, "once")?;
    let pulled = agent.pull();
    if let Err(e) = &pulled {
        agent.status.last_result = "failed".into();
        agent.status.last_error = Some(format!("{e:#}"));
        agent.status.consecutive_failures = 1;
    }
    agent.status.state = "stopped".into();
    agent.beat(true);
    agent.save_status();
    let pulled = pulled?;
    match agent.status.last_result.as_str() {
        "hook-failed" | "rolled-back" => {
            anyhow::bail!("{}", agent.status.last_error.clone().unwrap_or_default())
        }
        _ => Ok(ExitCode::from(pulled.code)),
    }
}

/// Sleep `d`, waking early for a signal; false when one arrived.
fn sleep_unless_interrupted(d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if crate::interrupt::interrupted() {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Randomised waits (no crate: std's `RandomState` is seeded randomly per process, which is
/// all a jitter needs).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Jitter(h.finish() | 1)
    }

    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait after a cycle: `interval` doubled per failure in a row, at most
    /// [`BACKOFF_CAP`] intervals, times `1 ± JITTER`.
    fn wait(&mut self, interval: Duration, failures: u32) -> Duration {
        wait_with(interval, failures, self.next())
    }
}

/// [`Jitter::wait`] with the random number `r` in [0, 1) given.
fn wait_with(interval: Duration, failures: u32, r: f64) -> Duration {
    let factor = 1u64
        .checked_shl(failures.min(20))
        .unwrap_or(u64::MAX)
        .min(BACKOFF_CAP);
    let base = interval.as_secs_f64() * factor as f64;
    Duration::from_secs_f64(base * (1.0 - JITTER + 2.0 * JITTER * r))
}

impl<'a> Agent<'a> {
    fn new(
        ctx: &'a Context,
        args: &'a PullArgs,
        dest: &'a Path,
        releases: bool,
        mode: &str,
    ) -> Result<Agent<'a>> {
        // A bad --host-id is bad input before anything else happens.
        let heartbeat = if args.heartbeat {
            let id = heartbeat::host_id(args.host_id.as_deref())?;
            Some((id, heartbeat::host_key(&ctx.home)?))
        } else {
            None
        };
        let status_file = args
            .status_file
            .as_deref()
            .map(crate::context::absolute)
            .transpose()?;
        let agent = Agent {
            ctx,
            args,
            dest,
            releases,
            store: None,
            handled: None,
            status: Status {
                format: STATUS_FORMAT.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                mode: mode.into(),
                state: "running".into(),
                mirror: args.url().to_string(),
                dest: dest.display().to_string(),
                last_result: "starting".into(),
                ..Default::default()
            },
            status_file,
            heartbeat,
            last_heartbeat: None,
        };
        // A status file that cannot be written is found now, not after the first pull.
        if let Some(p) = &agent.status_file {
            write_status(p, &agent.status)?;
        }
        Ok(agent)
    }

    /// `--heartbeat`: write one after a cycle that pulled (`force`), else when the last is
    /// [`heartbeat::HEARTBEAT_EVERY_SECS`] old. A failure is a warning.
    fn beat(&mut self, force: bool) {
        let Some((id, key)) = &self.heartbeat else {
            return;
        };
        let due = self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(heartbeat::HEARTBEAT_EVERY_SECS));
        if !(force || due) {
            return;
        }
        let hb = heartbeat::Heartbeat {
            format: heartbeat::FORMAT.into(),
            host_id: id.clone(),
            host: crate::keys::hostname(),
            version: env!("CARGO_PKG_VERSION").into(),
            at: oplog::now(),
            generation: self.status.last_generation,
            newest_generation: self.status.newest_generation,
            last_result: self.status.last_result.clone(),
            consecutive_failures: self.status.consecutive_failures,
            failed_generation: self.status.failed_generation,
        };
        match pull::open_mirror(self.ctx, self.args).and_then(|m| heartbeat::write(&m, key, &hb)) {
            Ok(()) => self.last_heartbeat = Some(Instant::now()),
            Err(e) => eprintln!("warning: cannot write the heartbeat: {e:#}"),
        }
    }

    /// Write the status file, if any; a failure is a warning (the pull itself is done).
    fn save_status(&self) {
        if let Some(p) = &self.status_file
            && let Err(e) = write_status(p, &self.status)
        {
            eprintln!("warning: {e:#}");
        }
    }

    /// One cycle of `--watch` (`cheap`: start with the LIST check).
    fn cycle(&mut self, cheap: bool) -> Next {
        let start = Instant::now();
        self.status.last_check = Some(oplog::now());
        if cheap {
            match self.newest() {
                Err(e) => return self.failed(&e, start),
                Ok(None) if self.handled.is_none() => {
                    self.status.newest_generation = None;
                    return self.unchanged("waiting", start);
                }
                Ok(n) => {
                    self.status.newest_generation = n;
                    if n.is_some() && n == self.handled {
                        return self.unchanged("unchanged", start);
                    }
                }
            }
        }
        match self.pull() {
            Err(e) => self.failed(&e, start),
            Ok(p) if p.interrupted => {
                self.status.last_result = "interrupted".into();
                self.status.last_error = None;
                self.record(
                    "pull-check",
                    Outcome::Interrupted,
                    &p.source_digest,
                    None,
                    start,
                );
                self.save_status();
                Next::Stop(p.code)
            }
            Ok(p) => {
                self.status.consecutive_failures = 0;
                // A failed hook makes the cycle's record `failed` (the pull itself has its
                // own `pull` record, the hook its `pull-hook` one).
                let error = self.status.last_error.clone();
                let outcome = match (p.changed, &error) {
                    (_, Some(_)) => Outcome::Failed,
                    (true, None) => Outcome::Ok,
                    (false, None) => Outcome::Unchanged,
                };
                self.record("pull-check", outcome, &p.source_digest, error, start);
                self.save_status();
                if crate::interrupt::interrupted() {
                    return Next::Stop(crate::interrupt::exit_code());
                }
                Next::Continue { failed: false }
            }
        }
    }

    /// The newest generation the mirror lists (one LIST request).
    fn newest(&mut self) -> Result<Option<u64>> {
        if self.store.is_none() {
            self.store = Some(pull::open_store(self.args)?);
        }
        newest_generation(self.store.as_ref().expect("opened above"))
    }

    /// A cycle that found nothing to do.
    fn unchanged(&mut self, result: &str, start: Instant) -> Next {
        self.status.last_result = result.into();
        self.status.last_error = None;
        self.status.consecutive_failures = 0;
        if crate::ui::verbose() {
            eprintln!(
                "offsync: {}: {result} (newest generation {})",
                self.args.url(),
                self.status
                    .newest_generation
                    .map_or("none".into(), |g| g.to_string())
            );
        }
        self.record("pull-check", Outcome::Unchanged, "", None, start);
        self.save_status();
        Next::Continue { failed: false }
    }

    /// A cycle that failed: logged, reported, retried after a longer wait.
    fn failed(&mut self, e: &anyhow::Error, start: Instant) -> Next {
        let msg = format!("{e:#}");
        eprintln!("offsync: check failed: {msg}");
        self.status.last_result = if crate::interrupt::interrupted() {
            "interrupted".into()
        } else {
            "failed".into()
        };
        self.status.last_error = Some(msg.clone());
        self.status.consecutive_failures += 1;
        let outcome = if crate::interrupt::interrupted() {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        self.record_kind(
            "pull-check",
            outcome,
            "",
            Some(msg),
            Some(ErrorKind::of(e)),
            start,
        );
        self.save_status();
        if crate::interrupt::interrupted() {
            return Next::Stop(crate::interrupt::exit_code());
        }
        Next::Continue { failed: true }
    }

    /// One pull and, when it changed DEST, the hook (and the rollback it may ask for).
    /// Updates the status; errors are the pull's.
    fn pull(&mut self) -> Result<Pulled> {
        self.status.last_check.get_or_insert_with(oplog::now);
        let p = pull::pull_once(self.ctx, self.args, self.dest, self.releases)?;
        if p.interrupted {
            self.status.last_result = "interrupted".into();
            return Ok(p);
        }
        self.handled = Some(p.generation);
        self.status.newest_generation = self.status.newest_generation.max(Some(p.generation));
        self.status.last_error = None;
        self.status.last_generation = match &p.release {
            Some(r) => release_generation(r),
            None if self.args.dry_run => self.status.last_generation,
            None => Some(p.generation),
        };
        if p.held {
            self.status.last_result = "held".into();
            return Ok(p);
        }
        if !p.changed {
            self.status.last_result = "unchanged".into();
            return Ok(p);
        }
        self.status.last_update = Some(oplog::now());
        self.status.last_result = "updated".into();
        if self
            .status
            .failed_generation
            .is_some_and(|g| g < p.generation)
        {
            self.status.failed_generation = None;
        }
        if let Some(cmd) = self.args.exec.clone() {
            self.after_switch(&cmd, &p)?;
        }
        Ok(p)
    }

    /// Run the hook after a pull that changed DEST; on failure, roll back when asked.
    fn after_switch(&mut self, cmd: &str, p: &Pulled) -> Result<()> {
        let env = hook::HookEnv {
            generation: p.generation,
            source_digest: p.source_digest.clone(),
            dest: self.dest.to_path_buf(),
            release: p.release.clone(),
            mirror: self.args.url().to_string(),
            rolled_back_from: None,
        };
        let start = Instant::now();
        let run = hook::run(cmd, &env);
        self.record_hook(&run, &env, start);
        self.status.hook = Some(run.record.clone());
        if run.record.ok || crate::interrupt::interrupted() {
            return Ok(());
        }
        let why = format!(
            "the --exec hook failed for generation {}: {}",
            p.generation,
            run.record.error.clone().unwrap_or_default()
        );
        eprintln!("offsync: {why}");
        self.status.failed_generation = Some(p.generation);
        self.status.last_result = "hook-failed".into();
        self.status.last_error = Some(why.clone());
        if !self.args.rollback_on_hook_failure {
            return Ok(());
        }
        let mut args = self.args.clone();
        args.to = None;
        match pull::rollback(self.ctx, &args, self.dest) {
            Ok(_) => {
                let current = crate::targets::releases::ReleaseDir::new(self.dest).current()?;
                self.status.last_generation = current;
                self.status.last_result = "rolled-back".into();
                self.status.last_error = Some(format!(
                    "{why}; rolled back to {}",
                    current.map_or("?".into(), crate::targets::releases::ReleaseDir::relative)
                ));
                // The service may already run the failed release: give the hook the chance
                // to put the old one back in service (its failure is only reported).
                if let Some(g) = current {
                    let again = hook::HookEnv {
                        generation: g,
                        source_digest: String::new(),
                        release: Some(
                            crate::targets::releases::ReleaseDir::new(self.dest).release_path(g),
                        ),
                        rolled_back_from: Some(p.generation),
                        ..env
                    };
                    let start = Instant::now();
                    let run = hook::run(cmd, &again);
                    self.record_hook(&run, &again, start);
                    if !run.record.ok {
                        eprintln!(
                            "offsync: the --exec hook failed again after the rollback: {}",
                            run.record.error.clone().unwrap_or_default()
                        );
                    }
                }
            }
            Err(e) => {
                self.status.last_error = Some(format!("{why}; the rollback failed: {e:#}"));
                eprintln!("offsync: the rollback failed: {e:#}");
            }
        }
        Ok(())
    }

    fn record_hook(&self, run: &hook::HookRun, env: &hook::HookEnv, start: Instant) {
        let outcome = if run.record.ok {
            Outcome::Ok
        } else if crate::interrupt::interrupted() {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        let mut r = self.base_record("pull-hook", outcome, &env.source_digest, start);
        r.error = run.record.error.clone();
        r.error_kind = (!run.record.ok).then_some(ErrorKind::Io);
        r.release = env
            .release
            .as_ref()
            .and_then(|p| release_generation(p))
            .map(crate::targets::releases::ReleaseDir::relative);
        self.append(r);
    }

    fn record(
        &self,
        op: &str,
        outcome: Outcome,
        digest: &str,
        error: Option<String>,
        start: Instant,
    ) {
        self.record_kind(
            op,
            outcome,
            digest,
            error.clone(),
            error.map(|_| ErrorKind::Io),
            start,
        );
    }

    fn record_kind(
        &self,
        op: &str,
        outcome: Outcome,
        digest: &str,
        error: Option<String>,
        kind: Option<ErrorKind>,
        start: Instant,
    ) {
        let mut r = self.base_record(op, outcome, digest, start);
        r.error = error;
        r.error_kind = kind;
        self.append(r);
    }

    fn base_record(
        &self,
        op: &str,
        outcome: Outcome,
        digest: &str,
        start: Instant,
    ) -> oplog::Record {
        let url = crate::location::Location::parse(self.args.url())
            .map(|l| l.url())
            .unwrap_or_else(|_| self.args.url().to_string());
        oplog::Record {
            duration_ms: start.elapsed().as_millis() as u64,
            source_digest: digest.to_string(),
            ..oplog::Record::new(
                self.dest.display().to_string(),
                crate::keys::hostname(),
                format!("{op} {url}"),
                outcome,
            )
        }
    }

    /// Append `r` to the operations log; a failure is a warning (the agent goes on).
    fn append(&self, r: oplog::Record) {
        if let Err(e) = crate::fsutil::ensure_private_dir_keep(&self.ctx.home)
            .and_then(|_| oplog::append_records(&self.ctx.home.join("operations.log"), &[r]))
        {
            eprintln!("warning: cannot write operations.log: {e:#}");
        }
    }
}

/// The generation of a release directory (`DEST/releases/0000000005` → 5).
fn release_generation(release: &Path) -> Option<u64> {
    release.file_name()?.to_str()?.parse().ok()
}

/// Write the status file atomically, 0644.
fn write_status(path: &Path, status: &Status) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(status)?;
    bytes.push(b'\n');
    crate::fsutil::atomic_write(path, &bytes, 0o644).map_err(|e| {
        e.context(format!(
            "cannot write the status file {}; check that its directory exists and is writable (--status-file)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_jitter_within_15_percent_and_back_off_to_ten_intervals() {
        let i = Duration::from_secs(60);
        assert_eq!(wait_with(i, 0, 0.5), i);
        assert_eq!(wait_with(i, 0, 0.0), Duration::from_secs(51));
        assert!(wait_with(i, 0, 0.999_999) < Duration::from_secs(69));
        assert_eq!(wait_with(i, 1, 0.5), 2 * i);
        assert_eq!(wait_with(i, 2, 0.5), 4 * i);
        assert_eq!(wait_with(i, 3, 0.5), 8 * i);
        assert_eq!(wait_with(i, 4, 0.5), 10 * i);
        assert_eq!(wait_with(i, 1000, 0.5), 10 * i);
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let r = j.next();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }

    #[test]
    fn release_generation_reads_the_directory_name() {
        assert_eq!(
            release_generation(Path::new("/srv/app/releases/0000000012")),
            Some(12)
        );
        assert_eq!(release_generation(Path::new("/srv/app")), None);
    }
}
