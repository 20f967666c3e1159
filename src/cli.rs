//! The command line as the user typed it (clap). Nothing here touches the filesystem:
//! `context.rs` resolves these raw values into what commands work with. (Shell completion of
//! target and mirror names reads the config, in `commands::completions`, only on a Tab.)

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;
use std::path::PathBuf;

/// Shell completion of `--target NAME`: the config's target and mirror names.
fn target_names() -> ArgValueCandidates {
    ArgValueCandidates::new(crate::commands::completions::target_names)
}

/// Shell completion of a mirror's NAME: the config's mirror names.
fn mirror_names() -> ArgValueCandidates {
    ArgValueCandidates::new(crate::commands::completions::mirror_names)
}

const AFTER_HELP: &str = "\
Flow: `offsync init` on the controller, `offsync link` on each target, `offsync target add` on \
the controller, then `offsync plan`, `offsync apply`, `offsync verify`.

Exit status: 0 success, 1 error, 2 changes pending (`plan --detailed-exitcode`, `verify`, `status \
--detailed-exitcode`), 64 \
bad command line or input (nothing was changed), 128+signal when stopped by a signal (130 \
SIGINT, 143 SIGTERM, 129 SIGHUP; an `interrupted` record is logged).";

const PLAN_FORMAT: &str = "\
JSON format (offsync-plan/1), printed by --json and saved by --out:
  format: \"offsync-plan/1\"
  source: {path, digest (BLAKE3 of the manifest), files, bytes, excludes, skipped?,
    modes_stripped? (paths sent without their setuid/setgid bits; absent when none)}
  delete?: true when made with `plan --delete` (apply PLAN_FILE then deletes the listed
    target-only paths without --delete)
  targets[] (sorted by name): {name, kind (ssh|mirror|local|memory), address, delete_allowed,
    excludes? (the target's own `exclude:` patterns, after source.excludes),
    extra? (keep|delete: the target's `extra:` policy; absent: refuse),
    error?, error_kind? (unreachable, auth_failed, host_key_changed, host_key_unknown,
    not_confined, refused_by_rrsync, rrsync_broken, disk_full, rsync_failed, mirror, io,
    interrupted, …; see the README),
    added[], modified[], metadata[], missing[] (sorted by path bytes),
    summary: {added, modified, metadata, missing, unchanged, bytes},
    warnings[]? (e.g. the mass-delete guard: apply will refuse without --max-delete N)}
  entries: {path, path_hex? (exact bytes as hex when path is not UTF-8), kind (file|dir|symlink),
    size?, blake3?}
  digest: BLAKE3 of the JSON without the digest; `apply PLAN_FILE` refuses an edited plan,
    a plan of another source, and files over 256 MiB.
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

    /// Print each external command (argv, duration, exit) and phase timings on stderr;
    /// `-vv` also rsync's statistics and every line a command prints
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors on stderr (no progress or notices); results on stdout are unchanged
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Transfer progress on stderr: `auto` draws bars (bytes, rate, ETA) on a terminal unless
    /// -q or --json; `bar` draws them on a terminal anyway; `json` writes one event per line
    /// (README, "Progress"); `none`
    #[arg(long, global = true, value_enum, default_value_t, value_name = "MODE")]
    pub progress: crate::ui::ProgressMode,

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
    /// Print a saved plan (`plan --out FILE`) as `plan` would, after checking it
    Show(ShowArgs),
    /// Apply a plan (a saved one, or one made now), then verify
    #[command(after_long_help = PROGRESS_HELP)]
    Apply(ApplyArgs),
    /// Compare every target with the source (exit 0 in sync, 2 drifted, 1 error)
    Verify(VerifyArgs),
    /// Encrypted mirrors (S3 or a directory): add, inspect, restore, prune, recipients,
    /// writers, sign, rekey, upgrade
    #[command(subcommand, after_long_help = MIRROR_HELP)]
    Mirror(MirrorCommand),
    /// Host: bring DEST up to date from a mirror's newest snapshot (needs only read access)
    #[command(after_long_help = PULL_HELP)]
    Pull(PullArgs),
    /// List the releases of `layout: releases` targets, checked against the targets
    Releases(ReleasesArgs),
    /// Switch `current` back to the previous release (or --to ID) on `releases` targets
    Rollback(RollbackArgs),
    /// Hash the source and print its digest (what plans and logs call `source_digest`)
    Manifest(ManifestArgs),
    /// Install ssh, rsync and rrsync with the system package manager
    InstallDeps(InstallDepsArgs),
    /// Print shell completions to stdout
    Completions(CompletionsArgs),
    /// Show the operations log (applies, pulls, rollbacks, restores), newest first
    #[command(after_long_help = LOG_HELP)]
    Log(LogArgs),
    /// Each target's last apply and whether the source changed since (no network)
    #[command(after_long_help = STATUS_HELP)]
    Status(StatusArgs),
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
    /// Link even when run as root (the key would then write as root; see SECURITY in the README)
    #[arg(long)]
    pub allow_root: bool,
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
    /// Replace a target's pinned host key after a legitimate host-key rotation
    #[command(
        long_about = "Replace a target's pinned host key after a legitimate host-key rotation.\n\nFetches the key the host offers now, requires it to match --fingerprint (get it on the target with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, or from `offsync link`), proves through the new key that offsync's key is still confined there, then replaces the pinned key. Without --fingerprint, asks on a terminal; elsewhere it is a usage error. Nothing is changed when a step fails."
    )]
    Repin(TargetRepinArgs),
    /// Re-run the probe on targets and mirrors in parallel and report per target
    #[command(
        long_about = "Re-run the probe on targets and mirrors in parallel and report per target.\n\n\
An SSH target passes when offsync's key can push there and cannot read or run commands. A \
mirror passes when its credentials work, this controller's identity opens the mirror key, the \
newest generation decrypts and passes its MAC and rollback check, every object it references is \
present, and the store accepts a create-only write. Nothing on a target is changed.\n\n\
Exit status: 0 when every target passes, 1 otherwise."
    )]
    Check(TargetCheckArgs),
}

#[derive(Debug, Args)]
pub struct TargetAddArgs {
    /// `user@host`, `user@192.0.2.1`, `user@[2001:db8::1]`, or a host alias from
    /// ~/.ssh/config (no `@`: its User, HostName and Port apply on every run)
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
    /// How the target holds the tree: `in-place`, or `releases` (`releases/<id>/` trees and
    /// a `current` symlink switched atomically) [default: the config's `layout:`, else
    /// in-place]
    #[arg(long, value_name = "LAYOUT", hide_possible_values = true)]
    pub layout: Option<crate::releases::Layout>,
    /// Releases to keep on a `releases` target, `current` included [default: 5]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// What apply does with files only on the target: `refuse` the target unless `--delete`,
    /// `keep` them (sync the rest, report them), or `delete` them as `--delete` does
    /// [default: the config's `extra:`, else refuse]
    #[arg(long, value_name = "POLICY", hide_possible_values = true)]
    pub extra: Option<crate::plan::ExtraPolicy>,
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
    #[arg(add = target_names())]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TargetRepinArgs {
    /// Target name (see `offsync target list`)
    pub name: String,
    /// The host's new key fingerprint (`SHA256:…`), verified out of band
    #[arg(long, value_name = "SHA256:…")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Args)]
pub struct TargetCheckArgs {
    /// Targets to check [default: all]
    #[arg(add = target_names())]
    pub names: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only these targets (repeatable) [default: all]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
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
    /// Refuse a target where more than N paths would be deleted [default: config
    /// `max_delete`, else refuse deleting over half of a target's paths, or anything when the
    /// source has no files]
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// Decide now to delete the target-only paths listed: recorded in the plan (`--out`), so
    /// `apply PLAN_FILE` deletes them without `--delete` again
    #[arg(long)]
    pub delete: bool,
    /// How SSH targets are compared: `checksum` reads every file on both ends, `quick`
    /// compares size and mtime like rsync's default [default: config `check:`, else
    /// checksum]
    #[arg(long, value_name = "MODE", hide_possible_values = true)]
    pub check: Option<crate::plan::CheckMode>,
    /// Counts only: each target's summary line (and warnings) and the grand total, no paths
    /// (`--out` still saves the whole plan)
    #[arg(long, conflicts_with_all = ["json", "stat"])]
    pub summary: bool,
    /// Per-directory counts instead of every path: `+added ~modified =metadata -target-only`
    /// and bytes to send, per directory up to two levels deep (`--out` still saves the whole
    /// plan)
    #[arg(long, conflicts_with = "json")]
    pub stat: bool,
    #[command(flatten)]
    pub excludes: ExcludeArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A plan saved with `offsync plan --out FILE` (refused when it is not one, or was
    /// edited: exit 64)
    #[arg(value_name = "PLAN_FILE")]
    pub plan_file: PathBuf,
    /// Print the plan as JSON (format offsync-plan/1)
    #[arg(long)]
    pub json: bool,
    /// Counts only: each target's summary line (and warnings) and the grand total
    #[arg(long, conflicts_with_all = ["json", "stat"])]
    pub summary: bool,
    /// Per-directory counts instead of every path (as `plan --stat`)
    #[arg(long, conflicts_with = "json")]
    pub stat: bool,
}

/// Excludes for one run, on top of config.yaml's `exclude:` (same pattern rules).
#[derive(Debug, Args, Default, Clone)]
pub struct ExcludeArgs {
    /// Also exclude PATTERN this run (repeatable; gitignore-style, as config `exclude:`)
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Also exclude the patterns in FILE, one per line (blank lines and `#` lines skipped)
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `offsync plan --out FILE`, applied without asking (it was the
    /// review) with the decisions it records (`plan --delete`); refused if the source or a
    /// target changed
    #[arg(value_name = "PLAN_FILE")]
    pub plan_file: Option<PathBuf>,
    /// Only these targets (repeatable) [default: all, or all in the plan file]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
    /// Delete the target-only paths the plan lists (and nothing else); with a plan file, only
    /// when it was made with `plan --delete`
    #[arg(long)]
    pub delete: bool,
    /// Refuse a target where more than N paths would be deleted [default: config
    /// `max_delete`, else refuse deleting over half of a target's paths, or anything when the
    /// source has no files]
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// How SSH targets are compared when planning (without a plan file; a saved plan keeps
    /// the mode it was made with) [default: config `check:`, else checksum]
    #[arg(long, value_name = "MODE", hide_possible_values = true)]
    pub check: Option<crate::plan::CheckMode>,
    /// `releases` targets: `together` uploads and verifies on every target, then switches all
    /// of them (none unless every target succeeded); `each` switches each target as soon as
    /// its release verified
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "together",
        hide_possible_values = true
    )]
    pub switch: crate::releases::SwitchMode,
    /// Don't ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print results as JSON
    #[arg(long)]
    pub json: bool,
    /// Only show the plan, exactly as `offsync plan` (nothing is changed)
    #[arg(long, short = 'n', conflicts_with = "plan_file")]
    pub dry_run: bool,
    /// With --dry-run: exit 0 when nothing would change, 2 when changes are pending
    #[arg(long, requires = "dry_run")]
    pub detailed_exitcode: bool,
    /// Limit rsync's transfer rate (rsync's `--bwlimit`: KiB/s, or a suffix as in `500k`,
    /// `1.5m`)
    #[arg(long, value_name = "RATE", value_parser = crate::rsync::parse_bwlimit)]
    pub bwlimit: Option<String>,
    #[command(flatten)]
    pub excludes: ExcludeArgs,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// Only these targets (repeatable) [default: every `releases` target]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Switch to this release (see `offsync releases`) [default: the verified release before
    /// the current one]
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    /// Only these targets (repeatable) [default: every `releases` target]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
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
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
    /// Print the differences as a JSON plan
    #[arg(long)]
    pub json: bool,
    /// Mirrors: also download, decrypt and re-hash every object (default: check that each
    /// referenced object exists with the right size)
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub excludes: ExcludeArgs,
}

const MIRROR_HELP: &str = "\
A mirror is one more target: `offsync plan`, `apply` and `verify` treat it like an SSH target \
(select it with --target NAME). Each apply stores new file contents as age-encrypted objects, \
then writes the next snapshot generation create-only; hosts bring a directory up to date with \
`offsync pull URL DEST`.

Format (offsync-mirror/2; `offsync mirror snapshots NAME` prints a mirror's version), under \
the mirror root:
  offsync-mirror                 plaintext marker, first line `offsync-mirror/N`; offsync
                                 refuses a version newer than it knows
  keys/mirror-key.age            the mirror key (an age X25519 identity file whose
                                 `# recipient:` comments list who can open it), encrypted
                                 to every recipient
  packs/<p[0..2]>/<p>            a pack: one age file, encrypted to the mirror key, whose
                                 plaintext is a POSIX ustar archive of file contents below
                                 1 MiB, one member per content, named by its object id
                                 (mode 0600, mtime 0); packs close at 16 MiB; p is random
  index/<i[0..2]>/<i>.age        an index object, encrypted to the mirror key: line 1 is
                                 JSON {format: offsync-mirror-index/1, key_id, supersedes:
                                 [index names], packs: [{pack, stored_size, header (hex of
                                 the age header and nonce), members: [[id, offset, len]]}]}
                                 (offset/len: the member's data in the tar stream), line 2
                                 is `mac <hex>`; not signed: a read checks the tar header
                                 and the snapshot's BLAKE3
  objects/<id[0..2]>/<id>        one age file per content of 1 MiB or more (and every
                                 content of an offsync-mirror/1 mirror), encrypted to the
                                 mirror key
  snapshots/<generation>.age     10-digit generation; encrypted to the mirror key; line 1 is
                                 JSON (offsync-mirror-snapshot/1: generation, created, previous
                                 chain digest, source digest, key_id, entries with path[,
                                 path_hex], kind, mode, mtime_s, mtime_ns, size, blake3, object,
                                 stored_size (single objects only), target), line 2 is `mac
                                 <hex>` (BLAKE3-keyed with a key derived from the mirror key),
                                 then the writer's signature (below)
  keys/mirror-key.next.age       only while a rekey is unfinished
Object ids: id = BLAKE3-keyed(K_id, BLAKE3(plaintext)), K_id derived from the mirror key; \
identical contents have one id wherever they are stored, and snapshots name ids, never \
locations. An offsync-mirror/1 mirror (no packs, no index) is read as it is; the first apply \
that packs a file marks it /2, and `offsync mirror upgrade NAME` packs its small objects in \
place.
No path or content is visible in plaintext. The chain digest of a generation is BLAKE3 of its \
decrypted bytes; each machine remembers the newest generation it saw per mirror \
($OFFSYNC_HOME/mirror-state/) and refuses an older one, a rewritten one or a broken chain.

Signatures: writers sign, readers verify. After the MAC line, each snapshot carries an \
armored SSH signature (-----BEGIN SSH SIGNATURE----- … -----END SSH SIGNATURE-----; OpenSSH's \
SSHSIG format, namespace `offsync-mirror`, SHA-512) made with the writing controller's \
ed25519 key ($OFFSYNC_HOME/id_ed25519, from `offsync init`) over exactly line 1 of the \
decrypted snapshot, newline included. Every recipient can open the mirror key, so the MAC \
only proves \"written by a holder of the mirror key\"; the signature proves \"written by a \
writer\". Readers act on a generation only when the newest one is signed by a writer they \
trust and the generation chains to it: a controller trusts its own key and those added with \
`offsync mirror writers add`; a host trusts `pull --trust KEY|FILE` (or \
OFFSYNC_TRUSTED_WRITERS) and keys it pinned on a first pull confirmed with a typed `yes` or \
--trust-on-first-use. Once a machine has accepted a signed generation it refuses unsigned \
ones (downgrade). A mirror written before signatures is signed by `offsync mirror sign NAME` \
(or the next apply). Before anything is written, every snapshot is validated: clean relative \
paths (no empty, `.` or `..` component, no leading `/`, no NUL), unique, every parent a \
directory entry (never a symlink), modes within 07777, sane sizes and counts. Restore and \
pull never follow a symlink inside DEST, and strip setuid/setgid/sticky bits (restore keeps \
them with --keep-special-modes).

Manual recovery with the age and tar CLIs alone (jq to read the JSON):
  age -d -i ~/.offsync/age-identity.txt -o mirror-key.txt keys/mirror-key.age
  age -d -i mirror-key.txt -o snapshot.txt snapshots/0000000042.age
  head -n 1 snapshot.txt > snapshot.json
  jq -r '.entries[] | select(.kind==\"file\") | \"\\(.object) \\(.path)\"' snapshot.json
  (path → object id; a name that is not UTF-8 has path_hex)
  mkdir objs; for p in packs/*/*; do age -d -i mirror-key.txt \"$p\" | tar -x -C objs; done
  for o in objects/*/*; do age -d -i mirror-key.txt -o \"objs/${o##*/}\" \"$o\"; done
  (objs/ID is the content of every entry whose object is ID; b3sum equals its blake3)
One file: find its id's pack in the index, then extract just that member:
  age -d -i mirror-key.txt index/ab/ab….age | head -n 1 | \\
      jq -r --arg id ID '.packs[] | select(any(.members[]; .[0]==$id)) | .pack'
  age -d -i mirror-key.txt packs/cd/cd… | tar -x -O ID > FILE

Manual signature check with ssh-keygen (WRITER.pub: the writer's id_ed25519.pub):
  sed -n '/^-----BEGIN SSH SIGNATURE-----$/,$p' snapshot.txt > snapshot.sig
  echo \"offsync $(cut -d' ' -f1,2 WRITER.pub)\" > allowed_signers
  ssh-keygen -Y verify -f allowed_signers -I offsync -n offsync-mirror \\
      -s snapshot.sig < snapshot.json
  (prints `Good \"offsync-mirror\" signature for offsync with ED25519 key SHA256:…`)

Keys: `mirror add` creates this controller's age identity ($OFFSYNC_HOME/age-identity.txt, \
0600) once, and a mirror key per mirror. S3 credentials come only from the environment or the \
AWS shared files (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, \
AWS_REGION, AWS_ENDPOINT_URL); they are never stored in config.yaml.";

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Create (or join) an encrypted mirror at URL and add it as a target
    Add(MirrorAddArgs),
    /// List a mirror's snapshot generations
    Snapshots(MirrorShowArgs),
    /// The hosts that pull this mirror, from their signed heartbeats (`pull --heartbeat`)
    Fleet(MirrorShowArgs),
    /// List the files of a snapshot (nothing is written)
    Ls(MirrorLsArgs),
    /// Manage who can open the mirror (rewraps only the mirror key)
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Re-encrypt everything under a fresh mirror key (after removing a recipient)
    #[command(long_about = REKEY_HELP)]
    Rekey(MirrorRekeyArgs),
    /// Write a snapshot (or part of it) into a directory, verifying every file
    Restore(MirrorRestoreArgs),
    /// Manage which other controllers' snapshot signatures this controller accepts
    #[command(subcommand)]
    Writers(WritersCommand),
    /// Sign a mirror written before snapshots were signed (writes one signed generation)
    #[command(long_about = SIGN_HELP)]
    Sign(MirrorSignArgs),
    /// Remove old generations and the objects no kept generation references; repack packs
    #[command(long_about = PRUNE_HELP)]
    Prune(MirrorPruneArgs),
    /// Convert an offsync-mirror/1 mirror to /2 in place (packs its small objects)
    #[command(long_about = UPGRADE_HELP)]
    Upgrade(MirrorUpgradeArgs),
}

const PRUNE_HELP: &str = "\
Remove old generations and the objects no kept generation references; repack packs.

Lists what it would do; with --yes it does it. Keeps the newest --keep generations and every
object they reference. Deletes single objects and packs that no kept generation references,
packs no index lists (left by a killed apply) and index objects that are superseded or whose
packs are gone. Packs still partly used are repacked, emptiest first, until at most
--max-unused percent of the stored bytes is unused: their referenced objects are downloaded,
checked against the snapshots' BLAKE3 and written unchanged into new packs, then the old packs
go. Nothing younger than --min-age is deleted or repacked, and whatever a generation written
during the prune references is kept.";

const UPGRADE_HELP: &str = "\
Convert an offsync-mirror/1 mirror to offsync-mirror/2 in place.

A /1 mirror stores one object per file content; /2 stores contents below 1 MiB in packs \
(see `offsync mirror --help`). offsync reads and applies to a /1 mirror as it is (new small \
files go into packs from the first apply on); `upgrade` also packs what is already there. \
Without --yes it lists what it would do: the marker to rewrite, and the single objects below \
1 MiB that a generation references (count and bytes). With --yes it writes the \
`offsync-mirror/2` marker (offsync versions before /2 cannot read packs: upgrade hosts with \
the controller), reads each of those objects (checked against the snapshot's BLAKE3), writes \
them into packs under the same ids with their index objects, and only then deletes the single \
objects an index now covers. Snapshots are not rewritten. An interrupted upgrade is finished \
by running it again. Applies and prunes may run at the same time.";

const REKEY_HELP: &str = "\
Re-encrypt every pack, object and snapshot under a fresh mirror key, then delete the old packs, \
index objects and objects. Object ids depend on the key, so packs are rewritten with their \
members renamed (an old pack is streamed with one GET unless only a few of its members are \
still needed) and new index objects are written.

`mirror recipients remove` only stops a recipient from opening the key file from now on: \
anyone who could open the mirror before may have kept the old mirror key, and with it can \
decrypt every object written under that key. Run `rekey` after removing a recipient so that \
future data, and past data still in the mirror, is under a key they never had. Copies they \
already downloaded cannot be taken back. An interrupted rekey is finished by running it again: \
it reuses what is already stored under the new key.";

const SIGN_HELP: &str = "\
Sign a mirror written before offsync signed snapshots.

Readers refuse an unsigned newest generation. `sign` reads the newest generation (unsigned is \
accepted only if no generation of the mirror was ever signed and this controller never saw it \
signed), and writes the next generation with the same entries, signed with this controller's \
key; it vouches for every older generation through the chain digests. Run it only on a mirror \
you trust (check it first with `offsync verify --target NAME --deep`). The next `apply` does the \
same. When the newest generation is already signed by a trusted writer, nothing is written.";

#[derive(Debug, Subcommand)]
pub enum WritersCommand {
    /// Accept snapshots signed by another controller's key
    Add(WriterArgs),
    /// Stop accepting snapshots signed by a key (this controller's own key stays)
    #[command(long_about = "Stop accepting snapshots signed by a key.\n\n\
From now on, a newest generation signed by that key is refused by this controller's plan, \
apply, verify and `mirror` commands. Generations it signed before stay readable while a \
trusted writer's later generation chains to them. Hosts keep their own list: remove the key \
from their --trust / OFFSYNC_TRUSTED_WRITERS (and from pinned_writers in \
$OFFSYNC_HOME/mirror-state/*.json).")]
    Remove(WriterArgs),
    /// List the writer keys this controller accepts for a mirror
    List(MirrorShowArgs),
}

#[derive(Debug, Args)]
pub struct WriterArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// The writer's public key: an `ssh-ed25519 AAAA…` line (its id_ed25519.pub) or a file
    #[arg(value_name = "KEY|FILE")]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct MirrorSignArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint for S3-compatible stores (e.g. http://127.0.0.1:9000) [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region [env: AWS_REGION; default: us-east-1]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct MirrorAddArgs {
    /// Name used with --target
    pub name: String,
    /// `s3://BUCKET/PREFIX`, `file:///DIR` or an absolute directory (e.g. /mnt/usb/offsync)
    pub url: String,
    /// Another age X25519 recipient (`age1…`) that may open the mirror (repeatable)
    #[arg(long = "recipient", value_name = "AGE_PUBKEY")]
    pub recipients: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct MirrorShowArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MirrorLsArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// Generation to list [default: the newest]
    #[arg(long, value_name = "GEN")]
    pub snapshot: Option<u64>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// Let another age identity open the mirror
    Add(RecipientArgs),
    /// Stop a recipient from opening the mirror key from now on (see `mirror rekey`)
    #[command(
        long_about = "Stop a recipient from opening the mirror key file from now on.\n\n\
This cannot take back a key already handed out: a removed recipient may have kept a copy of \
the mirror key and can still decrypt every object written under it. Run `offsync mirror rekey \
NAME` afterwards to re-encrypt past and future data under a key it never had."
    )]
    Remove(RecipientArgs),
    /// List who can open the mirror
    List(MirrorShowArgs),
}

#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// age X25519 recipient (`age1…`)
    #[arg(value_name = "AGE_PUBKEY")]
    pub recipient: String,
}

#[derive(Debug, Args)]
pub struct MirrorRekeyArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// Don't ask for confirmation (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct MirrorUpgradeArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// Convert (without it, only list what would be done)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MirrorRestoreArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// Directory to write into (must be empty unless --force)
    pub dest: PathBuf,
    /// Generation to restore [default: the newest]
    #[arg(long, value_name = "GEN")]
    pub snapshot: Option<u64>,
    /// age identity file that opens the mirror [default: $OFFSYNC_HOME/age-identity.txt]
    #[arg(long, env = "OFFSYNC_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Only paths matching this gitignore-style glob (and their parents) (repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// Write into a non-empty DEST, replacing files the snapshot has
    #[arg(long)]
    pub force: bool,
    /// Restore setuid, setgid and sticky bits as the snapshot has them (default: stripped)
    #[arg(long)]
    pub keep_special_modes: bool,
}

#[derive(Debug, Args)]
pub struct MirrorPruneArgs {
    /// Mirror name
    #[arg(add = mirror_names())]
    pub name: String,
    /// How many of the newest generations to keep (at least 1)
    #[arg(long, value_name = "N")]
    pub keep: u64,
    /// Only delete or repack what is older than this many seconds, so an apply that is still
    /// uploading is never robbed of its objects
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub min_age: u64,
    /// Repack partly used packs, emptiest first, until at most this share of the stored bytes
    /// is unused (0: repack every pack with an unused member; 100: never repack)
    #[arg(long, value_name = "PERCENT", default_value_t = crate::mirror::prune::DEFAULT_MAX_UNUSED,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_unused: u8,
    /// Delete and repack (without it, only list what would be done)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The mirror: `s3://BUCKET/PREFIX`, `file:///DIR` or a directory [default: `mirror:` of
    /// --config]
    #[arg(required_unless_present_any = ["config", "print_systemd_unit"])]
    pub url: Option<String>,
    /// Directory to bring up to date (created if missing) [default: `dest:` of --config]
    #[arg(required_unless_present_any = ["config", "print_systemd_unit"])]
    pub dest: Option<PathBuf>,
    /// age identity file that opens the mirror [default: $OFFSYNC_HOME/age-identity.txt]
    #[arg(long, env = "OFFSYNC_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Accept snapshots signed by this writer: an `ssh-ed25519 AAAA…` line (the controller's
    /// id_ed25519.pub) or a file of such lines (allowed_signers lines work too) (repeatable;
    /// the environment variable holds one per line)
    #[arg(
        long = "trust",
        env = "OFFSYNC_TRUSTED_WRITERS",
        value_delimiter = '\n',
        value_name = "KEY|FILE"
    )]
    pub trust: Vec<String>,
    /// On a first pull with no trusted writer, pin the key that signed the newest snapshot
    /// (printed with its fingerprint; compare it with the controller's `offsync mirror writers
    /// list`). Without it a terminal asks for a typed `yes`; without a terminal the pull fails
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// Delete DEST-only paths the plan lists (and nothing else)
    #[arg(long)]
    pub delete: bool,
    /// Refuse when more than N paths would be deleted [default: refuse deleting over half of
    /// DEST's paths, or anything when the snapshot has no files]
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// Only print the plan
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the plan as JSON (offsync-plan/1)
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when DEST was already up to date, 2 when it changed (or would, with
    /// --dry-run), 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// How DEST is laid out [default: in-place]. `releases`: every generation is built in
    /// DEST/releases/GEN (unchanged files hard-linked from the current release), verified, and
    /// only then DEST/current (a symlink) is switched to it atomically
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub layout: Option<crate::releases::Layout>,
    /// Releases to keep in DEST/releases after a switch, at least 1 (the one `current` points
    /// at, and the one before it when N allows, are never pruned) [default: 5]
    #[arg(long, value_name = "N", value_parser = parse_keep)]
    pub keep: Option<u64>,
    /// Switch DEST/current back to the release before it (implies --layout releases), after
    /// verifying that release; later pulls skip generations up to the one rolled back from.
    /// No older release: exit 1, nothing changed
    #[arg(long, conflicts_with_all = ["delete", "max_delete", "dry_run", "json", "keep"])]
    pub rollback: bool,
    /// With --rollback: switch to release GEN (older or newer) instead of the one before
    #[arg(long, value_name = "GEN", requires = "rollback")]
    pub to: Option<u64>,
    /// Read this host's pull settings from FILE (YAML: mirror, dest, identity, trust, layout,
    /// interval, exec, status_file, …; see Config below). Flags given
    /// on the command line override the file. Read only when given
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep running: check the mirror every --interval seconds (one LIST of its snapshots) and
    /// pull each new generation as one `pull` would. SIGTERM/SIGINT stop it between or during
    /// cycles (a stopped pull is logged as interrupted and changes nothing further)
    #[arg(long, conflicts_with_all = ["rollback", "dry_run", "json", "detailed_exitcode"])]
    pub watch: bool,
    /// With --watch: seconds between checks, 1 to 86400, each randomised by ±15% (after
    /// failures the wait doubles, up to 10 × SECS) [default: 60]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub interval: Option<u64>,
    /// Run CMD (with `/bin/sh -c`) after a pull that changed DEST or switched DEST/current,
    /// with OFFSYNC_GENERATION, OFFSYNC_SOURCE_DIGEST, OFFSYNC_DEST, OFFSYNC_MIRROR and (layout
    /// releases) OFFSYNC_RELEASE in a scrubbed environment (see Hook below)
    #[arg(long = "exec", value_name = "CMD", conflicts_with_all = ["rollback", "dry_run"])]
    pub exec: Option<String>,
    /// When the --exec hook fails, switch DEST/current back to the release before (layout
    /// releases) and run the hook once more for it; the failed generation is not pulled again
    /// until a newer one is published
    #[arg(long, requires = "exec")]
    pub rollback_on_hook_failure: bool,
    /// Write this host's pull status to FILE after every check (JSON, atomically: last_check,
    /// last_generation, last_result, last_error, consecutive_failures, …)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rollback", "dry_run"])]
    pub status_file: Option<PathBuf>,
    /// Print a hardened systemd unit for this host's pull settings and exit: `watch` (a
    /// service running `pull --watch`), `oneshot` (a service running one pull) or `timer` (the
    /// timer that starts `oneshot`)
    #[arg(long, value_enum, value_name = "KIND")]
    pub print_systemd_unit: Option<crate::agent::UnitKind>,
    /// After a pull, and at least every 5 minutes with --watch, write a signed, encrypted
    /// heartbeat (generation, last result) to the mirror's hosts/ID.age, for `offsync mirror
    /// fleet` on the controller (needs write access to that one object)
    #[arg(long, conflicts_with_all = ["rollback", "dry_run"])]
    pub heartbeat: bool,
    /// The name of this host's heartbeat [default: the host name]
    #[arg(long, value_name = "ID", requires = "heartbeat")]
    pub host_id: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

impl PullArgs {
    /// The mirror URL (set once `pull::resolve` accepted the arguments).
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or_default()
    }
}

/// `--keep N`: a release count of at least 1.
fn parse_keep(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err(
            "must be at least 1 (the release `current` points at is always kept); use --keep 1 to keep only it"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number; pass a release count such as --keep 5".into()),
    }
}

const PULL_HELP: &str = "\
Layouts:
  in-place (default)  DEST is the tree. Files are verified before they are renamed into place,
                      but a reader can see some files of the new generation and some of the
                      old one while a pull runs.
  releases            DEST/releases/GEN holds each generation (GEN: 10 digits, like the
                      snapshot names) and DEST/current is a relative symlink to one of them.
                      A pull builds the new release beside the others (unchanged files are
                      hard links to the current release, everything else is downloaded and
                      verified), compares the whole release with the snapshot, and only then
                      renames a new symlink over DEST/current: a reader that resolves
                      DEST/current sees one generation, whole. Files already at DEST's root
                      (an in-place tree) are left alone. Point services at DEST/current.

Rollback:
  `offsync pull URL DEST --rollback [--to GEN]` verifies the older release (against the
  mirror's snapshot of that generation, or, when the mirror cannot provide it, against the
  digest recorded in DEST/releases/state.json when the release was installed), then switches
  DEST/current to it. Later pulls stay on it until a generation newer than the one rolled back
  from is published (`--rollback --to GEN` moves forward again).

Agent (--watch):
  Every --interval seconds (±15%), one LIST of the mirror's snapshots/; only when the newest
  generation differs from the one last handled does it run the same pull as above. Failed
  cycles back off (2×, 4×, … up to 10× the interval). Every cycle appends a `pull-check URL`
  record to operations.log and rewrites --status-file. SIGTERM/SIGINT between cycles: exit 0;
  during a pull: the pull stops, is logged as interrupted, exit 128 + signal.

Hook (--exec CMD):
  Run with /bin/sh -c after a pull that changed DEST (or switched DEST/current), with only
  PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ passed on, plus OFFSYNC_GENERATION,
  OFFSYNC_SOURCE_DIGEST, OFFSYNC_DEST, OFFSYNC_MIRROR and OFFSYNC_RELEASE (layout releases);
  cwd is the release (or DEST). Its output goes to stderr as `hook: …`. A failure is logged
  (`pull-hook URL`) and reported; --rollback-on-hook-failure switches DEST/current back,
  runs the hook again with OFFSYNC_ROLLED_BACK_FROM set, and that generation is not pulled
  again until a newer one is published. One-shot: exit 1 when the hook failed.

Config (--config FILE, YAML; read only when given):
  version, mirror, endpoint, region, identity, trust (list), dest, layout, keep, delete,
  max_delete, interval, exec, rollback_on_hook_failure, status_file, heartbeat, host_id.
  Flags win over keys; paths must be absolute; an unknown key is exit 64 naming it. No
  credentials: S3 ones come from the environment or the AWS profile files, as always.

Exit status: 0 done or nothing to do, 2 with --detailed-exitcode when DEST changed, 1 on
error (including \"no older release to roll back to\" and a failed --exec hook), 64 for bad
input, 128 + signal when a signal stopped a pull.";

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

const PROGRESS_HELP: &str = "\
Progress: bars count the bytes the plan sends (added and modified files) per target, and in \
total with several targets. --progress=json writes one JSON object per line on stderr, fields \
in this order: event (`phase`: a phase starts, phase `done` ends the target; `progress`: bytes \
moved), target, phase (upload, verify, commit, switch, done), bytes, total_bytes, files, \
total_files, rate (bytes/s of the upload), elapsed_ms (since the target started), final (true \
on the last progress event of the upload). progress events come at most every 250 ms per \
target; figures never go back. Over SSH they follow rsync's --info=progress2 as a file moves; \
mirrors report per stored object.";

const LOG_HELP: &str = "\
Reads $OFFSYNC_HOME/operations.log and its rotated files (operations.log.1 …) backwards, so \
`-n 20` costs the same on a year of history. Times are UTC. A line that is not a record (torn \
by a crash, or the Python offsync's) is skipped with a warning naming the file and line.

--json prints the selected records one per line, exactly as stored (JSON Lines; the fields \
are in the README under \"The plan format\"), in the same order as the text.";

const STATUS_HELP: &str = "\
Hashes the source (with the hash cache, as `plan` does) and compares its digest with each \
target's last successful apply in operations.log. Nothing connects to a target: a host that is \
down shows its last known state. States: in sync with the last apply, source changed since the \
last apply, never applied, last apply failed (or refused, interrupted), rolled back since the \
last apply. `offsync plan` tells what actually differs on the targets.

Exit status: 0, or with --detailed-exitcode 0 when every target is in sync and 2 when any is \
not; 1 on error, 64 for bad input.";

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only these targets or mirrors (repeatable) [default: all]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
    /// Only records since WHEN: an age (30m, 12h, 2d, 1w), a date (2026-11-01, UTC) or an
    /// RFC 3339 time
    #[arg(long, value_name = "WHEN", value_parser = crate::history::parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Show at most N records (the newest N, also with --reverse)
    #[arg(short = 'n', long = "max-count", value_name = "N")]
    pub max_count: Option<usize>,
    /// Oldest first
    #[arg(long)]
    pub reverse: bool,
    /// Print the records as stored, one JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these targets or mirrors (repeatable) [default: all]
    #[arg(long = "target", short = 't', value_name = "NAME", add = target_names())]
    pub targets: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when every target is in sync with the source, 2 when any is not, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
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
