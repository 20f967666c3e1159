//! offsync: push one directory from a controller to a handful of hosts over SSH, through a
//! dedicated ed25519 key that each target only lets run `rrsync -wo DIR`.
//!
//! Layers, top to bottom: `cli` (what the user typed) → `context` (resolved settings) →
//! `commands::*` (one file per subcommand) → domain modules (`config`, `keys`,
//! `authorized_keys`, `known_hosts`, `deps`) → `ssh`/`rsync` (argv builders and output
//! parsers) → `process` (the only module that starts programs) and `fsutil` (the only module
//! that writes state files; `oplog` appends to `operations.log` itself).

pub mod agent;
pub mod authorized_keys;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod deps;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod history;
pub mod interrupt;
pub mod itemize;
pub mod keys;
pub mod known_hosts;
pub mod location;
pub mod lock;
pub mod man;
pub mod marker;
pub mod mirror;
pub mod oplog;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod probe;
pub mod process;
pub mod prompt;
pub mod releases;
pub mod rsync;
pub mod sanitize;
pub mod session;
pub mod source;
pub mod ssh;
pub mod targets;
pub mod ui;

use clap::Parser;
use std::process::ExitCode;

/// Parse the process arguments, run, print at most one error, and return the exit code.
/// Keep glibc from retaining freed large buffers. Mirror uploads allocate and free buffers
/// of up to 17 MiB (a pack's ciphertext, a multipart part) from several threads; glibc's
/// default raises its mmap threshold to the largest buffer freed, after which such buffers
/// come from per-thread heaps that are not returned to the system, and the peak RSS of a
/// 1 GiB apply of small files grew from 60 to 120 MB. A fixed threshold keeps every buffer of
/// 1 MiB or more an `mmap` that `free` unmaps. (musl already does this.)
#[allow(unsafe_code)]
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

pub fn main_entry() -> ExitCode {
    // rsync starts ssh through offsync itself, so that ssh dies with rsync (see `process`).
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(process::EXEC_DYING_WITH_PARENT)) {
        return process::exec_dying_with_parent(args.collect());
    }
    fixed_mmap_threshold();
    // A Tab in a shell that sourced `offsync completions SHELL`: answer and exit, before
    // anything else can print (see `commands::completions`).
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .var(commands::completions::COMPLETE_VAR)
        .complete();
    // Everything offsync creates for itself (state files, caches, logs, local mirror objects
    // and their directories, scratch files of helper programs) is private, whatever the umask
    // of the shell that started it: 0600 files, 0700 directories. Files that must get a
    // particular mode (restored files, a new pull destination) set it explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors exit 64, never 2, because 2
            // means "changes pending" for scripts that use --detailed-exitcode.
            let code = if e.use_stderr() {
                error::exit::USAGE
            } else {
                error::exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "offsync: error: {}",
                sanitize::for_terminal(&format!("{err:#}"))
            );
            error::exit_code_for(&err)
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    // clap does not check `conflicts_with` between global flags given on both sides of the
    // subcommand (`-q plan -v`), so the rule is enforced here.
    if cli.quiet && cli.verbose > 0 {
        return Err(input_err!(
            "-q/--quiet and -v/--verbose cannot be used together; pick one"
        ));
    }
    ui::set_verbosity(match (cli.quiet, cli.verbose) {
        (true, _) => ui::Verbosity::Quiet,
        (false, 0) => ui::Verbosity::Normal,
        (false, 1) => ui::Verbosity::Verbose,
        (false, _) => ui::Verbosity::Debug,
    });
    ui::set_progress_mode(cli.progress);
    let ctx = context::Context::new(cli.home)?;
    commands::dispatch(&ctx, cli.command)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
