//! One integration binary: the real `offsync` against a real sshd, rsync and rrsync on
//! loopback, in a scrubbed environment. Each test has its own temp dirs and its own sshd, so
//! they run in parallel; none needs root. End-to-end tests print `SKIP` when a tool is
//! missing, unless `OFFSYNC_REQUIRE_E2E=1` (CI, `scripts/test`) turns that into a failure.
//!
//! - `agent`: `pull --watch` fleets (5 agents; 20 on S3 with `--full`) converging, a failing
//!   hook rolled back, SIGTERM/SIGKILL, `--config`, `--print-systemd-unit`
//! - `cli`: help, version, usage errors (exit 64), completions, `install-deps --dry-run`
//! - `setup`: `init`, `link`/`unlink` (the port from `sshd -T` or `Include`d files), `target
//!   add|list|remove|check|repin`, host aliases from an ssh config, the trust prompt on a pty
//! - `security`: what the linked key can do with plain ssh/rsync (no shell, pty, forwarding,
//!   reads, or writes outside the sync dir)
//! - `bad_input`: every rejected input exits 64 and changes no file
//! - `apply`: `plan`, `apply`, `verify` against two targets
//! - `mirror`: encrypted mirrors on moto (real S3 on loopback) and a local directory
//! - `mirror_v1`: a committed `offsync-mirror/1` mirror (tests/fixtures/mirror-v1) is read,
//!   restored, pulled and applied to by today's binary
//! - `trust`: the mirror's trust model: forged snapshots (a reader holding the mirror key, a
//!   compromised writer, a removed writer), hostile entries, symlinks planted in DEST,
//!   `ssh-keygen -Y verify` by hand, migration of unsigned mirrors and downgrade
//! - `hardening`: closed stdout pipes, umask, setuid/setgid bits, a full target disk, the
//!   Python offsync's `verify: hash`
//! - `faults`: randomized SIGKILL/SIGTERM/SIGINT/SIGHUP trials during apply and plan
//! - `decisions`: saved plans holding `--delete`, `offsync show`, refusals before the
//!   question, `apply --json` rows for unchanged targets, `extra: keep | delete`
//! - `deletes`: hostile target-only trees in one `apply --delete`; the mass-delete guard
//! - `confinement`: a tampered forced command is refused by every connecting command
//! - `passes`: the rsync passes plan/apply/verify make (counted by an rsync wrapper on PATH),
//!   saved plans against a target that moved, and what `check: checksum | quick` see
//! - `pull_releases`: `pull --layout releases` and `--rollback`: readers of DEST/current
//!   during a switch, hard links, rollback, `--keep`, SIGKILL during a pull
//! - `releases`: the `releases` layout attacked: a reader sampling `current/` during apply and
//!   rollback, tampered releases, `--switch together|each`, hard links and disk use, pruning,
//!   rollback, SIGKILL mid-apply, a forced command pointing elsewhere, unknown/missing releases
//! - `verbosity`: `-v`/`-vv`/`-q`, `apply --bwlimit`, `--exclude`/`--exclude-from`, per-run
//!   excludes against saved plans, `apply -n`
//! - `history`: `log`, `status` and `target list`'s last apply: filters, a garbled line,
//!   rotated files, status with a target down and after a source edit
//! - `snapshots`: insta snapshots of `--help`, the plan text and the main error messages
//!
//! Tests about set-up (`setup`, `security`, and `bad_input`'s link/target add cases) go
//! through the real `init` → `link` → `target add` flow (`World::new`); every other test
//! starts from `World::fast`, which writes the same state directly (`util::prelink`).

mod agent;
mod apply;
mod bad_input;
mod cli;
mod confinement;
mod decisions;
mod deletes;
mod faults;
mod hardening;
mod history;
mod mirror;
mod mirror_v1;
mod passes;
mod progress;
mod pull_releases;
mod releases;
mod security;
mod setup;
mod snapshots;
mod trust;
mod util;
mod verbosity;
