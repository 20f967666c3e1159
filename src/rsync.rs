//! rsync command lines and the meaning of rsync's (and rrsync's) failures. Nothing here runs
//! a program.
//!
//! Invariants: the destination is always relative (`user@host:`), because the meaning of a
//! leading `/` under rrsync changed across rsync 3.4.2, 3.4.3 and 3.5.0; every refusal by
//! rrsync is rsync exit 12 with an `… rrsync error: …` line on stderr, and that line (not the
//! exit code alone, which ssh failures share) decides the diagnosis.

use crate::sanitize;
use crate::ssh::SshFailure;
use std::ffi::OsString;
use std::path::Path;

/// Oldest local rsync we accept (`--info`, `--delete-missing-args`, protocol 31).
pub const MIN_VERSION: (u32, u32, u32) = (3, 1, 0);

/// argv (after `rsync`) for the write probe: push an empty directory, without recursion and
/// with everything excluded, as a dry run. It lists nothing and changes nothing, but it goes
/// through ssh, the forced command and rrsync's option checks, so success proves the key,
/// the host key and the restricted directory. With `delete`, rrsync's `-no-del` shows up as a
/// refusal.
pub fn probe_push_argv(rsh: &str, empty_dir: &Path, dest: &str, delete: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-n".into(), "-i".into(), "-d".into()];
    if delete {
        a.push("--delete".into());
    }
    a.push("--exclude=*".into());
    a.push("-e".into());
    a.push(rsh.into());
    let mut src = empty_dir.as_os_str().to_os_string();
    src.push("/");
    a.push(src);
    a.push(dest.into());
    a
}

/// argv (after `rsync`) for the confinement probe: try to read from the target (a pull).
/// A write-only rrsync must refuse it.
pub fn probe_pull_argv(rsh: &str, remote: &str, scratch_dir: &Path) -> Vec<OsString> {
    let mut dst = scratch_dir.as_os_str().to_os_string();
    dst.push("/");
    vec![
        "-n".into(),
        "-d".into(),
        "-e".into(),
        rsh.into(),
        format!("{remote}.").into(),
        dst,
    ]
}

/// What an rsync run over ssh told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    Ok,
    /// ssh could not connect or authenticate.
    Ssh(SshFailure),
    /// rrsync refused `--delete`: the target was linked with `--no-delete`.
    DeleteDisabled,
    /// rrsync refused to send data: the key is write-only (what we want for pulls).
    ReadRefused,
    /// The restricted directory does not exist on the target.
    PathMissing,
    /// rrsync's single-run lock is held: another rsync (perhaps the server side of a run that
    /// was just killed) is still working in the directory. Worth retrying shortly.
    Locked,
    /// The forced command could not run rrsync (missing, or its interpreter is missing).
    RrsyncBroken(String),
    /// Some other rrsync refusal, with its message.
    RrsyncRefused(String),
    /// The target's filesystem is full (`ENOSPC`, "No space left on device").
    DiskFull,
    /// The remote user is over its disk quota (`EDQUOT`, "Disk quota exceeded").
    QuotaExceeded,
    /// Anything else: exit code and the tail of stderr.
    Other(i32, String),
}

impl Diagnosis {
    /// Read rsync's exit code and stderr.
    pub fn from_output(code: Option<i32>, stderr: &[u8]) -> Diagnosis {
        let text = String::from_utf8_lossy(stderr);
        if code == Some(0) {
            return Diagnosis::Ok;
        }
        if let Some(msg) = rrsync_message(&text) {
            if msg.contains("--delete") && msg.contains("disabled") {
                return Diagnosis::DeleteDisabled;
            }
            if msg.contains("reading from write-only server") {
                return Diagnosis::ReadRefused;
            }
            if msg.contains("Another instance of rrsync") {
                return Diagnosis::Locked;
            }
            return Diagnosis::RrsyncRefused(msg);
        }
        // rsync reports a full disk as "error in file IO (code 11)"; the cause is on the
        // `write failed on …: No space left on device (28)` line before it.
        if text.contains("No space left on device") {
            return Diagnosis::DiskFull;
        }
        if text.contains("Disk quota exceeded") {
            return Diagnosis::QuotaExceeded;
        }
        if text.contains("Traceback") && text.contains("rrsync") {
            if text.contains("FileNotFoundError") || text.contains("No such file or directory") {
                return Diagnosis::PathMissing;
            }
            return Diagnosis::RrsyncBroken(sanitize::stderr_tail(stderr, 1));
        }
        if let Some(f) = SshFailure::from_stderr(&text) {
            return Diagnosis::Ssh(f);
        }
        if text.contains("bad interpreter")
            || text.contains("python3: No such file")
            || text.contains("/usr/bin/env: ")
            || (text.contains("rrsync")
                && (text.contains("not found") || text.contains("No such file")))
        {
            return Diagnosis::RrsyncBroken(sanitize::stderr_tail(stderr, 1));
        }
        Diagnosis::Other(code.unwrap_or(-1), sanitize::stderr_tail(stderr, 2))
    }

    /// The typed kind of this failure (see `error::ErrorKind`).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            Diagnosis::Ok | Diagnosis::Other(..) => K::RsyncFailed,
            Diagnosis::Ssh(f) => f.kind(),
            Diagnosis::DeleteDisabled
            | Diagnosis::ReadRefused
            | Diagnosis::Locked
            | Diagnosis::RrsyncRefused(_) => K::RefusedByRrsync,
            Diagnosis::PathMissing | Diagnosis::RrsyncBroken(_) => K::RrsyncBroken,
            Diagnosis::DiskFull | Diagnosis::QuotaExceeded => K::DiskFull,
        }
    }

    /// This diagnosis as an error carrying its kind, its message prefixed with `context`.
    pub fn error(&self, context: &str) -> anyhow::Error {
        let msg = if context.is_empty() {
            self.explain()
        } else {
            format!("{context}: {}", self.explain())
        };
        crate::error::TargetError::error(self.kind(), msg)
    }

    /// One sentence: what is wrong and how to fix it.
    pub fn explain(&self) -> String {
        match self {
            Diagnosis::Ok => "ok".to_string(),
            Diagnosis::Ssh(f) => f.explain().to_string(),
            Diagnosis::DeleteDisabled => {
                "the target refuses deletions (linked with --no-delete)".to_string()
            }
            Diagnosis::ReadRefused => "the target refuses reads (write-only)".to_string(),
            Diagnosis::Locked => {
                "another rsync is still working in the target's directory (rrsync's lock is held); try again when it has finished".to_string()
            }
            Diagnosis::PathMissing => {
                "the directory that `link --path` allowed no longer exists on the target; run `offsync link` there again".to_string()
            }
            Diagnosis::RrsyncBroken(tail) => format!(
                "the forced command cannot run rrsync on the target ({tail}); run `offsync install-deps --role target` there"
            ),
            Diagnosis::DiskFull => "the target's disk is full (No space left on device); free space in the linked directory's filesystem on the target (or grow it), then run `offsync apply` again — files already in place are unchanged".to_string(),
            Diagnosis::QuotaExceeded => "the target user's disk quota is exhausted (Disk quota exceeded); remove files or raise the quota on the target, then run `offsync apply` again — files already in place are unchanged".to_string(),
            Diagnosis::RrsyncRefused(msg) => format!("rrsync refused: {msg}"),
            Diagnosis::Other(code, tail) => format!("rsync exited with status {code}: {tail}"),
        }
    }
}

/// The text after `rrsync error:` on stderr, sanitised.
fn rrsync_message(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        l.find("rrsync error:")
            .map(|i| sanitize::for_terminal(l[i + "rrsync error:".len()..].trim()))
    })
}

/// Parse `rsync --version` output: `rsync  version 3.2.7  protocol version 31`.
pub fn parse_version(stdout: &str) -> Option<(u32, u32, u32)> {
    let first = stdout.lines().next()?;
    let mut words = first.split_whitespace();
    words.find(|w| *w == "version")?;
    let v = words.next()?;
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

/// rsync's holding directory for `--delay-updates` (in each directory that gets files). With
/// `--partial` it also keeps an interrupted file, so the next transfer resumes from it. We do
/// not pass `--partial-dir`: rrsync (3.5.0) pins that option to `/proc/self/fd/N`, and rsync
/// then cannot use it with `--delay-updates` — it discards every completed file and still
/// exits 0. The holding dir is excluded everywhere (see `plan::excludes`).
pub use crate::plan::excludes::HOLDING_DIR;

/// Options every plan, transfer and verification shares: recurse is decided by the caller;
/// links as links, permissions and mtimes preserved, directory times ignored (they change
/// whenever a file inside changes, and `--delay-updates` renames after rsync set them).
///
/// `--chmod=ug-s` drops setuid and setgid bits from what is sent (rsync applies `--chmod` on
/// the sending side, so rrsync accepts it): offsync never creates a setuid or setgid file on
/// a target, and the source walk strips the same bits (`plan::manifest`), so plans agree.
const COMMON: &[&str] = &["-l", "-p", "-t", "-O", "--chmod=ug-s", "--out-format=%i %n"];

/// Asks the sending rsync for its whole-transfer progress line (see [`parse_progress`]):
/// client-side output only (rrsync accepts `--info=`), interleaved with the itemized lines
/// on stdout. Only runs that send content carry it.
const PROGRESS: &str = "--info=progress2";

/// One of rsync's `--info=progress2` lines: how far the current run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunProgress {
    /// Bytes of file content this run has sent (or matched on the receiver) so far.
    pub bytes: u64,
    /// Files this run has transferred so far (`xfr#N`), when the line says.
    pub files: Option<u64>,
}

/// Parse one `--info=progress2` line (rsync prints `\r%15s %3d%% %7.2f%s %s` and, after a
/// file completes, ` (xfr#N, to-chk=A/B)`; the caller splits stdout on `\r` and `\n`).
///
/// A progress line starts with a space or a digit (its right-aligned byte count); an itemized
/// line starts with its update letter (`<`, `>`, `c`, `h`, `.`, `*`) and its name comes after
/// the fixed 11-character field, so no file name can make an itemized line parse as progress
/// or the reverse. Every token is checked, and anything else is not progress (`None`).
pub fn parse_progress(line: &[u8]) -> Option<RunProgress> {
    if !line
        .first()
        .is_some_and(|b| *b == b' ' || b.is_ascii_digit())
    {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let (count, percent, rate, eta) = match tokens[..] {
        [c, p, r, e] | [c, p, r, e, _, _] => (c, p, r, e),
        _ => return None,
    };
    // The byte count has digit separators (`,`, or `.` in some locales), never units
    // (offsync does not pass `-h`).
    if !count
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'.' || b == b'\'')
        || !count.bytes().next().is_some_and(|b| b.is_ascii_digit())
    {
        return None;
    }
    let bytes = count
        .bytes()
        .filter(u8::is_ascii_digit)
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
    let pct = percent.strip_suffix('%')?;
    if pct.is_empty() || pct.len() > 3 || !pct.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let speed = rate.strip_suffix("B/s")?;
    if !speed
        .bytes()
        .all(|b| b.is_ascii_digit() || b".,kMGTPEkmg".contains(&b))
    {
        return None;
    }
    if !eta.contains(':')
        || !eta
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'?')
    {
        return None;
    }
    let files = match tokens[..] {
        [_, _, _, _, xfr, chk] => {
            let n = xfr.strip_prefix("(xfr#")?.strip_suffix(',')?;
            let chk = chk
                .strip_prefix("to-chk=")
                .or_else(|| chk.strip_prefix("ir-chk="))?
                .strip_suffix(')')?;
            let (left, of) = chk.split_once('/')?;
            if ![n, left, of]
                .iter()
                .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            Some(n.parse().ok()?)
        }
        _ => None,
    };
    Some(RunProgress { bytes, files })
}

/// Files sent along with a dry run as a second source: the directory holding them, and their
/// names, each included ahead of every other rule (which exclude all markers and release
/// tags): the output names one only when the target lacks it. Holds the target marker (see
/// `marker`) and, for `releases` targets, release tags (see `releases`).
#[derive(Debug, Clone, Copy)]
pub struct MarkerSource<'a> {
    pub dir: &'a Path,
    pub names: &'a [String],
}

/// argv (after `rsync`) for the whole-tree dry run that plans and verifies a target:
/// `checksum` (`-c`) reads every file on both ends; without it rsync's quick check compares
/// size and mtime. With a marker, its directory is a second source and the marker is included
/// ahead of every other rule (which exclude all markers): the output names it only when the
/// target lacks it.
pub fn dry_run_argv(
    rsh: &str,
    src: &Path,
    marker: Option<MarkerSource<'_>>,
    dest: &str,
    checksum: bool,
    delete: bool,
    filters: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-n".into(), "-i".into(), "-r".into()];
    if checksum {
        a.push("-c".into());
    }
    a.extend(COMMON.iter().map(OsString::from));
    if delete {
        a.push("--delete".into());
    }
    if let Some(m) = marker {
        a.extend(m.names.iter().map(|n| format!("--filter=+ /{n}").into()));
    }
    a.extend(filters.iter().map(OsString::from));
    match marker {
        Some(m) => push_ends(&mut a, rsh, &[src, m.dir], dest),
        None => push_ends(&mut a, rsh, &[src], dest),
    }
    a
}

/// argv (after `rsync`) that uploads a new release of a `releases` target into `dest`
/// (`user@host:releases/<id>/`, created with `--mkpath`): the whole source tree plus the
/// marker and the release's tag (`extra`), with unchanged files hard-linked from `link_dest`
/// (a root-anchored `/current`; rrsync resolves it inside the allowed directory). Files are
/// compared with the basis by rsync's quick check, so the caller re-sends with
/// [`release_fixup_argv`] any file the plan found changed that this run did not send.
/// Nothing is held back or deleted: the directory is not live until `current` points at it.
pub fn release_upload_argv(
    rsh: &str,
    src: &Path,
    extra: MarkerSource<'_>,
    dest: &str,
    link_dest: Option<&str>,
    filters: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-i".into(), "-r".into()];
    a.extend(COMMON.iter().map(OsString::from));
    a.push(PROGRESS.into());
    a.push("--mkpath".into());
    if let Some(l) = link_dest {
        a.push(format!("--link-dest={l}").into());
    }
    a.extend(
        extra
            .names
            .iter()
            .map(|n| format!("--filter=+ /{n}").into()),
    );
    a.extend(filters.iter().map(OsString::from));
    push_ends(&mut a, rsh, &[src, extra.dir], dest);
    a
}

/// argv (after `rsync`) that sends exactly the paths in `files_from` whole (`-I`) into a
/// release that is not live yet: the files the plan found changed whose size and mtime
/// matched the basis, so the upload hard-linked the old content.
pub fn release_fixup_argv(
    rsh: &str,
    src: &Path,
    dest: &str,
    files_from: &Path,
    filters: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-i".into(), "-I".into()];
    a.extend(COMMON.iter().map(OsString::from));
    push_files_from(&mut a, files_from);
    a.extend(filters.iter().map(OsString::from));
    push_ends(&mut a, rsh, &[src], dest);
    a
}

/// argv (after `rsync`) that switches a `releases` target: `root` holds the symlink
/// `current` (and an empty `releases/`), `files_from` lists `current` and, with `prune`, the
/// `releases/<id>` directories to delete (missing from `root`: `--delete-missing-args
/// --force`). rsync's receiver writes the symlink under a temporary name and renames it over
/// `current` (one atomic rename); the itemized line shows the new value (`%L`).
pub fn switch_argv(
    rsh: &str,
    root: &Path,
    dest: &str,
    files_from: &Path,
    prune: bool,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["-i", "-l", "-O", "--out-format=%i %n%L"]
        .map(OsString::from)
        .to_vec();
    push_files_from(&mut a, files_from);
    if prune {
        a.push("--delete-missing-args".into());
        a.push("--force".into());
    }
    push_ends(&mut a, rsh, &[root], dest);
    a
}

/// argv (after `rsync`) for the dry run that lists a `releases` target's root: `root` holds
/// the marker, a `current` symlink with the recorded value and an empty `releases/<id>/` per
/// recorded release. Only those names are compared (no content, no times, no modes): the
/// output names the marker if the target lacks it, `current` if it differs, each recorded
/// release the target lacks, and (with `delete`, which `--no-delete` targets refuse) each
/// release directory the record does not know.
pub fn releases_listing_argv(
    rsh: &str,
    root: &Path,
    marker: &str,
    dest: &str,
    delete: bool,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-n".into(), "-i".into(), "-r".into(), "-l".into()];
    a.push("-O".into());
    a.push("--out-format=%i %n%L".into());
    if delete {
        a.push("--delete".into());
    }
    for rule in [
        format!("+ /{marker}"),
        "+ /current".to_string(),
        "+ /releases/".to_string(),
        "- /releases/*/*".to_string(),
        "+ /releases/*/".to_string(),
        "- *".to_string(),
    ] {
        a.push(format!("--filter={rule}").into());
    }
    push_ends(&mut a, rsh, &[root], dest);
    a
}

/// argv (after `rsync`) that writes a target marker: the directory `marker_dir` holds only the
/// marker file; no permissions or directory times are touched.
pub fn marker_push_argv(rsh: &str, marker_dir: &Path, dest: &str) -> Vec<OsString> {
    vec![
        "-r".into(),
        "-O".into(),
        "-e".into(),
        rsh.into(),
        dir_arg(marker_dir),
        dest.into(),
    ]
}

/// How one transfer run treats the paths it lists (see [`transfer_argv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Paths that did not exist on the target when it was planned: sent whole (`-I`, nothing
    /// to compare with) straight to their final names. rsync writes each file to a temporary
    /// name and renames it when complete, so no partial file is ever at a final path; without
    /// `--partial`, an interrupted file's temporary is removed.
    Fresh,
    /// Paths that replace or update existing ones: compared by checksum (`-c`, so a planned
    /// mode/time-only change is applied in place and a same-size, same-mtime content change is
    /// still sent), held back with `--delay-updates` so the replacements appear together at
    /// the end, `--partial` so an interrupted transfer resumes from the holding dir
    /// ([`HOLDING_DIR`]).
    Replacing,
}

/// argv (after `rsync`) that transfers exactly the paths listed (NUL-separated) in
/// `files_from`, the way `kind` says.
///
/// Deletions (`max_delete` = the number of planned deletions, 0 for none; only with
/// [`TransferKind::Replacing`]): listed paths missing from the source are deleted
/// (`--delete-missing-args`); a listed target-only directory goes with its whole planned
/// content (`--force`), so the caller lists only the topmost planned paths — listing a
/// directory and its children too makes rsync delete the directory first and then fail on the
/// children ("file has vanished", exit 24). rsync's own `--max-delete` bounds the run to the
/// planned count, so a file that appeared below a planned directory after planning can never
/// make rsync delete more than the plan said.
///
/// `files_from: None` sends the whole source tree (`-r`, the same filters): used when every
/// source path is new to the target, where the list would name everything anyway and rsync
/// is markedly slower walking a 10,000-name list than the tree.
pub fn transfer_argv(
    rsh: &str,
    src: &Path,
    dest: &str,
    files_from: Option<&Path>,
    kind: TransferKind,
    max_delete: usize,
    filters: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-i".into()];
    a.push(
        match kind {
            TransferKind::Fresh => "-I",
            TransferKind::Replacing => "-c",
        }
        .into(),
    );
    a.extend(COMMON.iter().map(OsString::from));
    a.push(PROGRESS.into());
    match files_from {
        Some(f) => push_files_from(&mut a, f),
        None => a.push("-r".into()),
    }
    if kind == TransferKind::Replacing {
        a.push("--delay-updates".into());
        a.push("--partial".into());
        if max_delete > 0 {
            a.push("--delete-missing-args".into());
            a.push("--force".into());
            a.push(format!("--max-delete={max_delete}").into());
        }
    }
    a.extend(filters.iter().map(OsString::from));
    push_ends(&mut a, rsh, &[src], dest);
    a
}

/// argv (after `rsync`) for the checksum dry run over exactly the paths listed in
/// `files_from` (the ones a transfer just wrote): nothing else is read or compared.
pub fn listed_check_argv(
    rsh: &str,
    src: &Path,
    dest: &str,
    files_from: &Path,
    filters: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-n".into(), "-i".into(), "-c".into()];
    a.extend(COMMON.iter().map(OsString::from));
    push_files_from(&mut a, files_from);
    a.extend(filters.iter().map(OsString::from));
    push_ends(&mut a, rsh, &[src], dest);
    a
}

/// `--files-from=FILE --from0`: the NUL-separated list of paths a run is limited to.
fn push_files_from(a: &mut Vec<OsString>, files_from: &Path) {
    let mut ff = OsString::from("--files-from=");
    ff.push(files_from.as_os_str());
    a.push(ff);
    a.push("--from0".into());
}

/// Check a `--bwlimit` value the way rsync reads it: a number of KiB/s, optionally with a
/// fraction and a unit (`b`, `k`, `m`, `g`, `t`, `p`, any case, optionally followed by `b` or
/// `ib`), e.g. `500`, `500k`, `1.5m`, `2MiB`. Returns it unchanged for rsync.
pub fn parse_bwlimit(s: &str) -> Result<String, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &s[digits..];
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (Some(n), &r[n..])
        }
        None => (None, rest),
    };
    let unit_ok = match rest.to_ascii_lowercase().as_str() {
        "" | "b" => true,
        u => {
            let mut c = u.chars();
            matches!(c.next(), Some('k' | 'm' | 'g' | 't' | 'p'))
                && matches!(c.as_str(), "" | "b" | "ib")
        }
    };
    if digits == 0 || frac == Some(0) || !unit_ok {
        return Err(format!(
            "{s:?} is not a rate; give KiB/s (`500`) or a number with a unit (`500k`, `1.5m`, `2g`)"
        ));
    }
    Ok(s.to_string())
}

/// The end of every argv: the remote shell, the source directories, the destination.
fn push_ends(a: &mut Vec<OsString>, rsh: &str, sources: &[&Path], dest: &str) {
    a.push("-e".into());
    a.push(rsh.into());
    a.extend(sources.iter().map(|s| dir_arg(s)));
    a.push(dest.into());
}

fn dir_arg(src: &Path) -> OsString {
    let mut s = src.as_os_str().to_os_string();
    s.push("/");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_progress2_lines() {
        // As rsync 3.5.0 prints them (the `\r` already split off).
        let p = |s: &str| parse_progress(s.as_bytes());
        assert_eq!(
            p("              3   0%    0.00kB/s    0:00:00 "),
            Some(RunProgress {
                bytes: 3,
                files: None
            })
        );
        assert_eq!(
            p("     20,000,003  86%   19.48MB/s    0:00:00 (xfr#2, to-chk=2/5)"),
            Some(RunProgress {
                bytes: 20_000_003,
                files: Some(2)
            })
        );
        assert_eq!(
            p("  1.234.567.890 100%  118,00GB/s    0:00:01 (xfr#40, ir-chk=1000/2040)"),
            Some(RunProgress {
                bytes: 1_234_567_890,
                files: Some(40)
            })
        );
        // Beyond the 15-column field there is no leading space.
        assert_eq!(
            p("1,000,000,000,000,000   5%    1.00GB/s   ??:??:?? ").map(|r| r.bytes),
            Some(1_000_000_000_000_000)
        );
    }

    #[test]
    fn progress_is_never_an_entry_and_entries_never_progress() {
        // Names that look like progress sit after the itemize field: an itemized line never
        // parses as progress, and still parses as its entry.
        for name in [
            " 1,234  5% 1.00MB/s 0:00:00",
            "1,234 100% 1.00kB/s 0:00:00 (xfr#1, to-chk=0/1)",
            "12 3% 4B/s 5:6",
        ] {
            for field in [
                ">f+++++++++",
                "<f.st......",
                "*deleting  ",
                ".f..t......",
                "cL+++++++++",
            ] {
                let line = format!("{field} {name}");
                assert_eq!(parse_progress(line.as_bytes()), None, "{line}");
                let item = crate::itemize::parse_line(line.as_bytes()).expect("an entry");
                assert_eq!(item.path, name.as_bytes());
            }
            // A progress line is never an entry either.
            assert_eq!(
                crate::itemize::parse_line(format!("   {name}").as_bytes()),
                None
            );
        }
        for junk in [
            "",
            " ",
            "sent 1,234 bytes  received 56 bytes",
            "Number of files: 5 (reg: 4, dir: 1)",
            "   12,345",
            "   12,345  5%",
            "   12,345  5%  1.00MB/s",
            "   12,345  5x  1.00MB/s    0:00:00",
            "   12,345  5%  1.00MB/s    0:00:00 (xfr#1,",
            "   12,345  5%  1.00MB/s    0:00:00 (xfr#x, to-chk=1/2)",
            "   12,345  5%  1.00MB/s    0:00:00 (xfr#1, to-chk=1/2) extra",
            "   12a345  5%  1.00MB/s    0:00:00",
            "   ,345  5%  1.00MB/s    0:00:00",
            "   1234  5%  1.00MB/s    now",
            // rsync pads with spaces only.
            "\t1,234  5%  1.00MB/s    0:00:00",
            "99999999999999999999999  5%  1.00MB/s    0:00:00",
        ] {
            assert_eq!(parse_progress(junk.as_bytes()), None, "{junk:?}");
        }
    }

    #[test]
    fn diagnoses_real_messages() {
        let d = |code, s: &str| Diagnosis::from_output(Some(code), s.as_bytes());
        assert_eq!(d(0, ""), Diagnosis::Ok);
        assert_eq!(
            d(
                12,
                "/usr/bin/rrsync error: option --delete has been disabled on this server.\nrsync: connection unexpectedly closed"
            ),
            Diagnosis::DeleteDisabled
        );
        assert_eq!(
            d(
                12,
                "/usr/bin/rrsync error: reading from write-only server is not allowed\n"
            ),
            Diagnosis::ReadRefused
        );
        assert_eq!(
            d(
                12,
                "/usr/bin/rrsync error: SSH_ORIGINAL_COMMAND does not run rsync\n"
            ),
            Diagnosis::RrsyncRefused("SSH_ORIGINAL_COMMAND does not run rsync".into())
        );
        assert_eq!(
            d(
                12,
                "Traceback (most recent call last):\n  File \"/usr/bin/rrsync\", line 1005\nFileNotFoundError: [Errno 2] No such file or directory: '/x'\n"
            ),
            Diagnosis::PathMissing
        );
        assert_eq!(
            d(
                12,
                "Host key for [h]:1 has changed and you have requested strict checking.\nHost key verification failed.\n"
            ),
            Diagnosis::Ssh(SshFailure::HostKeyChanged { offered: None })
        );
        assert_eq!(
            d(255, "root@h: Permission denied (publickey).\n"),
            Diagnosis::Ssh(SshFailure::AuthDenied)
        );
        assert!(matches!(
            d(12, "sh: 1: /usr/bin/rrsync: not found\n"),
            Diagnosis::RrsyncBroken(_)
        ));
        assert!(matches!(d(23, "something else\n"), Diagnosis::Other(23, _)));
        // rsync 3.2+ (receiver tag) and older rsync, as printed for a full tmpfs.
        let full = "rsync: [receiver] write failed on \"/srv/sync dir/big.bin\": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(380) [receiver=3.5.0]\nrsync: [sender] write error: Broken pipe (32)\n";
        assert_eq!(d(11, full), Diagnosis::DiskFull);
        assert_eq!(
            d(
                11,
                "rsync: write failed on \"big.bin\": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(393) [receiver=3.1.3]\n"
            ),
            Diagnosis::DiskFull
        );
        assert_eq!(
            d(
                23,
                "rsync: [receiver] mkstemp \"/srv/x/.~tmp~/a.abc\" failed: No space left on device (28)\nrsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [sender=3.5.0]\n"
            ),
            Diagnosis::DiskFull
        );
        let explained = d(11, full).explain();
        assert!(
            explained.starts_with("the target's disk is full (No space left on device)"),
            "{explained}"
        );
        assert!(!explained.contains("code 11"), "{explained}");
        assert_eq!(
            d(
                11,
                "rsync: [receiver] write failed on \"/home/u/big\": Disk quota exceeded (122)\nrsync error: error in file IO (code 11) at receiver.c(380) [receiver=3.2.7]\n"
            ),
            Diagnosis::QuotaExceeded
        );
        assert!(Diagnosis::QuotaExceeded.explain().contains("quota"));
    }

    #[test]
    fn bwlimits() {
        for ok in ["500", "500k", "1.5m", "2M", "1g", "3KiB", "10mb", "0"] {
            assert_eq!(parse_bwlimit(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "k", "fast", "1.m", "-1", "1x", "1kk", "1 m", "1.5.2"] {
            assert!(parse_bwlimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("rsync  version 3.5.0  protocol version 32\n"),
            Some((3, 5, 0))
        );
        assert_eq!(
            parse_version("rsync  version v3.2.7  protocol version 31"),
            None
        );
        assert_eq!(
            parse_version("rsync  version 3.2.7pre1  protocol"),
            Some((3, 2, 7))
        );
    }
}
