//! The command line as the user typed it (clap). Nothing here touches the filesystem:
//! `context.rs` resolves these raw values into what commands work with.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Flow: `offsync init` on the controller, `offsync link` on each target, `offsync target add` on \
the controller, then `offsync plan`, `offsync apply`, `offsync verify`.

Exit status: 0 success, 1 error, 2 changes pending (`plan --detailed-exitcode`, `verify`), 64 \
bad command line or input (nothing was changed), 130 interrupted.";

const PLAN_FORMAT: &str = "\
JSON format (offsync-plan/1), printed by --json and saved by --out:
  format: \"offsync-plan/1\"
  source: {path, digest (BLAKE3 of the manifest), files, bytes, excludes, skipped}
  targets[] (sorted by name): {name, kind, address, delete_allowed, error?,
    added[], modified[], metadata[], missing[] (sorted by path bytes),
    summary: {added, modified, metadata, missing, unchanged, bytes}}
  entries: {path, path_hex? (exact bytes as hex when path is not UTF-8), kind (file|dir|symlink),
    size?, blake3?}
  digest: BLAKE3 of the JSON without the digest; `apply PLAN_FILE` refuses an edited plan.
The same source and target states always give byte-identical output.

Categories: added (new on the target), modified (content, symlink target or type differs),
metadata (mode or mtime only), missing (target-only; deleted only by `apply --delete`).";

/// Push one directory to a handful of hosts over SSH, through a key that can only run
/// `rrsync -wo DIR` on each of them.
#[derive(Debug, Parser)]
#[command(name = "offsync", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// State directory (key, config, known_hosts, logs) [default: ~/.offsync]
    #[arg(long, global = true, env = "OFFSYNC_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Controller: create the dedicated ed25519 key and config.yaml (idempotent)
    Init(InitArgs),
    /// Target: allow the controller's key to run only `rrsync -wo DIR` here
    Link(LinkArgs),
    /// Target: remove the line `link` wrote for a key
    Unlink(UnlinkArgs),
    /// Controller: add, list, remove and check targets
    #[command(subcommand)]
    Target(TargetCommand),
    /// Show what apply would change on each target (one rsync dry run per target)
    #[command(after_long_help = PLAN_FORMAT)]
    Plan(PlanArgs),
    /// Apply a plan (a saved one, or one made now), then verify
    Apply(ApplyArgs),
    /// Compare every target with the source (exit 0 in sync, 2 drifted, 1 error)
    Verify(VerifyArgs),
    /// Hash the source and print its digest (what plans and logs call `source_digest`)
    Manifest(ManifestArgs),
    /// Install ssh, rsync and rrsync with the system package manager
    InstallDeps(InstallDepsArgs),
    /// Print shell completions to stdout
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to push to the targets (stored as an absolute path)
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Install missing tools without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct KeyInput {
    /// The controller's public key: one OpenSSH line (`ssh-ed25519 AAAA… comment`)
    #[arg(long, value_name = "TEXT", conflicts_with = "key_file")]
    pub key: Option<String>,
    /// Read the controller's public key from FILE (`-` for stdin)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// authorized_keys file to edit [default: ~/.ssh/authorized_keys]
    #[arg(long, value_name = "FILE")]
    pub authorized_keys: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Directory the key may write into (created 0700 if missing)
    #[arg(long, value_name = "DIR", default_value = "~/.offsync/sync")]
    pub path: String,
    /// rrsync to force [default: found on PATH or in the usual places]
    #[arg(long, value_name = "PATH")]
    pub rrsync: Option<PathBuf>,
    /// Also refuse deletions on this target (`rrsync -no-del`)
    #[arg(long)]
    pub no_delete: bool,
    #[command(flatten)]
    pub key: KeyInput,
    /// sshd_config to read host keys and port from, for the printed `target add` command
    #[arg(long, value_name = "FILE", default_value = "/etc/ssh/sshd_config")]
    pub sshd_config: PathBuf,
    /// Don't ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct UnlinkArgs {
    #[command(flatten)]
    pub key: KeyInput,
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Pin a target's host key, prove the key is confined there, and save it
    Add(TargetAddArgs),
    /// List configured targets
    List(TargetListArgs),
    /// Remove a target from the config (and its pinned host key when unused)
    Remove(TargetRemoveArgs),
    /// Re-run the probe on targets in parallel and report per target
    Check(TargetCheckArgs),
}

#[derive(Debug, Args)]
pub struct TargetAddArgs {
    /// `user@host`, `user@192.0.2.1` or `user@[2001:db8::1]`
    pub login: String,
    /// Directory on the target that `link --path` allowed (for the record and for plans)
    #[arg(long, value_name = "DIR")]
    pub path: String,
    /// Name for the target [default: the host]
    #[arg(long)]
    pub name: Option<String>,
    /// SSH port [default: 22, or what ~/.ssh/config says]
    #[arg(long)]
    pub port: Option<u16>,
    /// rrsync path on the target (as `link` printed it; for the record)
    #[arg(long, value_name = "PATH")]
    pub rrsync: Option<String>,
    /// Expected host key fingerprint (`SHA256:…`, as `link` printed it)
    #[arg(long, value_name = "SHA256:…")]
    pub fingerprint: Option<String>,
    /// Accept an unpinned host key without asking (trust on first use)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct TargetListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TargetRemoveArgs {
    /// Target name (see `offsync target list`)
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TargetCheckArgs {
    /// Targets to check [default: all]
    pub names: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only these targets (repeatable) [default: all]
    #[arg(long = "target", short = 't', value_name = "NAME")]
    pub targets: Vec<String>,
    /// Print the plan as JSON (format offsync-plan/1)
    #[arg(long)]
    pub json: bool,
    /// Also save the JSON plan to FILE (for `offsync apply FILE`)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `offsync plan --out FILE`; refused if the source or a target changed
    #[arg(value_name = "PLAN_FILE")]
    pub plan_file: Option<PathBuf>,
    /// Only these targets (repeatable) [default: all, or all in the plan file]
    #[arg(long = "target", short = 't', value_name = "NAME")]
    pub targets: Vec<String>,
    /// Delete the target-only paths the plan lists (and nothing else)
    #[arg(long)]
    pub delete: bool,
    /// Don't ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print results as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Ignore the hash cache and read every file (the cache is still rewritten)
    #[arg(long)]
    pub no_cache: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only these targets (repeatable) [default: all]
    #[arg(long = "target", short = 't', value_name = "NAME")]
    pub targets: Vec<String>,
    /// Print the differences as a JSON plan
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// ssh client and rsync
    Controller,
    /// sshd, rsync, rrsync (and python3 for it)
    Target,
    /// both of the above
    Both,
}

#[derive(Debug, Args)]
pub struct InstallDepsArgs {
    /// What this machine is
    #[arg(long, value_enum, default_value_t = Role::Controller)]
    pub role: Role,
    /// Don't ask before installing
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only print the command that would run
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
