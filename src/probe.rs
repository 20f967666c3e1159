//! The probe that proves a target is usable *and* confined.
//!
//! Three checks, each through the real ssh + forced command + rrsync path:
//! 1. write: an rsync dry-run push of an empty directory succeeds (key, pinned host key and
//!    restricted directory all work); `--delete` is tried first, so a `-no-del` target is
//!    detected rather than configured wrongly;
//! 2. read: an rsync pull is refused by rrsync (the key is write-only);
//! 3. shell: `ssh host echo TOKEN` does not print TOKEN (the key cannot run commands).
//!
//! The target is usable only when all three hold; any other outcome is reported with the
//! reason and the fix.

use anyhow::Result;
use serde::Serialize;
use std::path::Path;

use crate::fsutil::ScratchDir;
use crate::process::Cmd;
use crate::rsync::{self, Diagnosis};
use crate::ssh::{Login, SshSettings};

/// Outcome of probing one target.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// All checks passed.
    pub ok: bool,
    /// The write probe's outcome.
    pub write: String,
    /// Whether the target accepts `--delete` (`None` when the write probe failed).
    pub delete_allowed: Option<bool>,
    /// Whether a pull was refused (`None` when not tried).
    pub read_refused: Option<bool>,
    /// Whether a remote command was refused (`None` when not tried).
    pub shell_refused: Option<bool>,
    /// Why the target is not usable, with the fix; empty when ok.
    pub problem: String,
}

/// Probe `login` with offsync's key. `scratch_root` holds temporary empty directories.
pub fn probe(
    settings: &SshSettings,
    login: &Login,
    port: Option<u16>,
    scratch_root: &Path,
) -> Result<ProbeReport> {
    let rsh = settings.rsync_rsh(port);
    let dest = login.rsync_dest();
    let empty = ScratchDir::new(scratch_root, "probe")?;
    let mut report = ProbeReport {
        ok: false,
        write: String::new(),
        delete_allowed: None,
        read_refused: None,
        shell_refused: None,
        problem: String::new(),
    };

    let push = |delete: bool| -> Result<Diagnosis> {
        let out = Cmd::new("rsync")
            .args(rsync::probe_push_argv(&rsh, empty.path(), &dest, delete))
            .output()?;
        Ok(Diagnosis::from_output(out.code(), &out.stderr))
    };
    let mut write = push(true)?;
    let mut delete_allowed = true;
    if write == Diagnosis::DeleteDisabled {
        delete_allowed = false;
        write = push(false)?;
    }
    report.write = write.explain();
    if write != Diagnosis::Ok {
        report.problem = write.explain();
        return Ok(report);
    }
    report.delete_allowed = Some(delete_allowed);

    let scratch = ScratchDir::new(scratch_root, "pull")?;
    let out = Cmd::new("rsync")
        .args(rsync::probe_pull_argv(&rsh, &dest, scratch.path()))
        .output()?;
    let read = Diagnosis::from_output(out.code(), &out.stderr);
    let read_refused = read == Diagnosis::ReadRefused;
    report.read_refused = Some(read_refused);
    let pulled_anything = std::fs::read_dir(scratch.path())?.next().is_some();
    if !read_refused || pulled_anything {
        report.problem = format!(
            "the key is not write-only on the target (a pull was not refused: {}); its authorized_keys line must force `rrsync -wo DIR`: run `offsync link` there",
            read.explain()
        );
        return Ok(report);
    }

    let token = format!("offsync-shell-probe-{}", nonce());
    let out = Cmd::new("ssh")
        .args(settings.ssh_argv(login, port, &["echo", &token]))
        .output()?;
    let ran = String::from_utf8_lossy(&out.stdout).contains(&token);
    report.shell_refused = Some(!ran && !out.success());
    if ran || out.success() {
        report.problem = "the key can run shell commands on the target; its authorized_keys line must force `rrsync -wo DIR`: run `offsync link` there".to_string();
        return Ok(report);
    }
    report.ok = true;
    Ok(report)
}

/// A value that differs between runs, for probe tokens (not a secret).
fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", std::process::id(), t.as_nanos())
}
