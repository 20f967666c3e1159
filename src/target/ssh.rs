//! SSH targets: rsync through the forced `rrsync -wo DIR`, over one connection per target.
//!
//! Invariants: the first operation opens an ssh ControlMaster; every rsync (plan dry run,
//! transfer, verification) rides on it, so plan + apply + verify costs one SSH connection and
//! one authentication. The destination is always the relative `user@host:`. A failure is
//! explained from rsync's exit code and rrsync's `error:` text (see `rsync::Diagnosis`).

use anyhow::{Context as _, Result};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ApplyOutcome, Target, TargetInfo};
use crate::config::TargetConfig;
use crate::context::Context;
use crate::fsutil::{self, ScratchDir};
use crate::itemize;
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;
use crate::process::{Background, Cmd};
use crate::rsync::{self, Diagnosis};
use crate::ssh::{self, Login, SshFailure, SshSettings};

pub struct SshTarget {
    info: TargetInfo,
    login: Login,
    port: Option<u16>,
    settings: SshSettings,
    scratch_root: PathBuf,
    master: Option<Background>,
    socket_dir: Option<ScratchDir>,
}

impl SshTarget {
    pub fn from_config(ctx: &Context, t: &TargetConfig) -> Result<SshTarget> {
        let name = t.name();
        let login_text = match (t.resolved_user(), t.resolved_host()) {
            (Some(u), Some(h)) if h.contains(':') => format!("{u}@[{h}]"),
            (Some(u), Some(h)) => format!("{u}@{h}"),
            _ => anyhow::bail!("target {name} in config.yaml has no user@host; fix `login:`"),
        };
        let login =
            Login::parse(&login_text).with_context(|| format!("target {name} in config.yaml"))?;
        Ok(SshTarget {
            info: TargetInfo {
                name,
                kind: "ssh".into(),
                address: format!("{login}:{}", t.remote_path),
                host: login.host.clone(),
                delete_allowed: !t.no_delete,
            },
            login,
            port: t.port,
            settings: SshSettings::new(&ctx.key_path(), &ctx.known_hosts_path()),
            scratch_root: ctx.home.join("tmp"),
            master: None,
            socket_dir: None,
        })
    }

    /// Open the ControlMaster if it is not open yet.
    fn connect(&mut self) -> Result<()> {
        if let Some(m) = &mut self.master {
            if m.exited().is_none() {
                return Ok(());
            }
            self.master = None;
        }
        let dir = ScratchDir::new(&socket_parent()?, "cm")?;
        let socket = dir.path().join("s");
        let stderr = dir.path().join("err");
        let mut bg = Cmd::new("ssh")
            .args(ssh::master_argv(
                &self.settings,
                &self.login,
                self.port,
                &socket,
            ))
            .spawn_background(&stderr)?;
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(self.settings.connect_timeout) + 20);
        loop {
            if socket.exists() {
                break;
            }
            if let Some(status) = bg.exited() {
                let err = bg.stderr();
                let text = String::from_utf8_lossy(&err);
                let why = SshFailure::from_stderr(&text)
                    .map(|f| f.explain().to_string())
                    .unwrap_or_else(|| {
                        format!(
                            "ssh exited with {status}: {}",
                            crate::sanitize::stderr_tail(&err, 2)
                        )
                    });
                anyhow::bail!("cannot connect to {}: {why}", self.login);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "cannot connect to {}: ssh did not finish connecting in time",
                    self.login
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.settings.control_path = Some(socket);
        self.master = Some(bg);
        self.socket_dir = Some(dir);
        Ok(())
    }

    fn rsh(&self) -> String {
        self.settings.rsync_rsh(self.port)
    }

    fn dry_run(&mut self, source: &Manifest, excludes: &Excludes) -> Result<TargetView> {
        self.connect()?;
        let out = Cmd::new("rsync")
            .args(rsync::dry_run_argv(
                &self.rsh(),
                &source.root,
                &self.login.rsync_dest(),
                self.info.delete_allowed,
                &excludes.rsync_args(),
            ))
            .output()?;
        if !out.success() {
            let d = Diagnosis::from_output(out.code(), &out.stderr);
            anyhow::bail!("{}", d.explain());
        }
        let (items, _other) = itemize::parse_output(&out.stdout);
        Ok(TargetView::Itemized(items))
    }
}

/// Sockets live in a short private directory: a Unix socket path must fit in ~104 bytes,
/// which `$OFFSYNC_HOME/tmp/…` may not.
fn socket_parent() -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let dir = PathBuf::from("/tmp").join(format!("offsync-{uid}"));
    fsutil::ensure_private_dir(&dir)?;
    let meta = std::fs::symlink_metadata(&dir)?;
    if meta.uid() != uid || !meta.is_dir() {
        anyhow::bail!(
            "{} belongs to someone else; remove it (it holds offsync's ssh sockets)",
            dir.display()
        );
    }
    Ok(dir)
}

impl Target for SshTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(&mut self, source: &Manifest, excludes: &Excludes) -> Result<TargetView> {
        self.dry_run(source, excludes)
    }

    fn apply(
        &mut self,
        source: &Manifest,
        excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ApplyOutcome> {
        self.connect()?;
        let c = &plan.changes;
        let mut changed: Vec<Vec<u8>> = c
            .added
            .iter()
            .chain(&c.modified)
            .chain(&c.metadata)
            .map(|e| e.raw_path())
            .collect();
        changed.sort();
        let mut deleted: Vec<Vec<u8>> = if delete {
            c.missing.iter().map(|e| e.raw_path()).collect()
        } else {
            Vec::new()
        };
        // Deepest first, so a directory's contents go before the directory.
        deleted.sort_by(|a, b| b.cmp(a));
        let mut list = Vec::new();
        for p in changed.iter().chain(&deleted) {
            if !listable(p) {
                anyhow::bail!(
                    "the plan names an unsafe path {:?}; refusing to transfer",
                    crate::sanitize::bytes_for_terminal(p)
                );
            }
            list.extend_from_slice(p);
            list.push(0);
        }
        let scratch = ScratchDir::new(&self.scratch_root, "apply")?;
        let files_from = scratch.path().join("files");
        fsutil::atomic_write(&files_from, &list, fsutil::FILE_MODE)?;
        if !changed.is_empty() || !deleted.is_empty() {
            let mut done = 0u64;
            let out = Cmd::new("rsync")
                .args(rsync::transfer_argv(
                    &self.rsh(),
                    &source.root,
                    &self.login.rsync_dest(),
                    &files_from,
                    !deleted.is_empty(),
                    &excludes.rsync_args(),
                ))
                .output_streaming(&mut |line| {
                    if itemize::parse_line(line).is_some() {
                        done += 1;
                        progress(done);
                    }
                })?;
            if !out.success() {
                let d = Diagnosis::from_output(out.code(), &out.stderr);
                anyhow::bail!("transfer failed: {}", d.explain());
            }
        }
        deleted.sort();
        Ok(ApplyOutcome {
            bytes: plan.summary.bytes,
            changed,
            deleted,
        })
    }

    fn close(&mut self) {
        if let (Some(mut m), Some(sock)) = (self.master.take(), self.settings.control_path.take()) {
            // Ask the master to exit cleanly; stop() kills it if it does not.
            let _ = Cmd::new("ssh")
                .args([
                    "-o",
                    &format!("ControlPath={}", ssh::ssh_config_value(&sock)),
                    "-O",
                    "exit",
                    "--",
                    &self.login.host,
                ])
                .output();
            m.stop();
        }
        self.socket_dir = None;
    }
}

impl Drop for SshTarget {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether a path is safe to hand to rsync's file list (no NUL; relative; no `..`).
pub fn listable(p: &[u8]) -> bool {
    !p.is_empty()
        && !p.contains(&0)
        && !p.starts_with(b"/")
        && !Path::new(std::ffi::OsStr::from_bytes(p))
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}
