//! `offsync target add|list|remove|check` on the controller.
//!
//! Trust: a host key reaches offsync's known_hosts only when it matches `--fingerprint` or the
//! operator typed `yes` on a terminal. A target reaches config.yaml only after the probe (see
//! `probe.rs`) proved, through that pinned key, that offsync's key works there and is confined.
//! Nothing is saved when any step fails.

use anyhow::{Context as _, Result};
use serde::Serialize;
use std::process::ExitCode;

use crate::cli::{
    TargetAddArgs, TargetCheckArgs, TargetListArgs, TargetRemoveArgs, TargetRepinArgs,
};
use crate::config::{Config, MirrorConfig, RrsyncSetting, TargetConfig, TargetSpec};
use crate::context::Context;
use crate::fsutil::{self, ScratchDir};
use crate::known_hosts;
use crate::probe::{self, ProbeReport};
use crate::process::Cmd;
use crate::ssh::{Login, SshFailure, SshSettings};
use crate::targets::mirror::MirrorTarget;
use crate::{input_err, keys, prompt, sanitize};

/// Host key algorithms to ask for, in turn, when the first key ssh negotiates does not match
/// the expected fingerprint (the target may have printed its ECDSA or RSA key).
const ALGORITHM_GROUPS: &[&str] = &[
    "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521",
    "rsa-sha2-512,rsa-sha2-256",
    "ssh-ed25519",
];

pub fn add(ctx: &Context, args: TargetAddArgs) -> Result<ExitCode> {
    let login = Login::parse(&args.login)?;
    let remote_path = validate_remote_path(&args.path)?;
    let name = match &args.name {
        Some(n) => validate_name(n)?,
        None => login.host.clone(),
    };
    let expected = args
        .fingerprint
        .as_deref()
        .map(keys::parse_fingerprint)
        .transpose()?;
    if args.port == Some(0) {
        return Err(input_err!("--port 0 is not a port; pass 1-65535"));
    }
    if let Some(r) = &args.rrsync
        && (!r.starts_with('/') || r.chars().any(char::is_control))
    {
        return Err(input_err!(
            "--rrsync {r:?} must be an absolute path on the target"
        ));
    }
    let config_path = ctx.config_path();
    let mut config = Config::load(&config_path)?;
    if config.find_target(&name).is_some() {
        return Err(input_err!(
            "a target named {name:?} exists already; pass --name NEW, or `offsync target remove {name}` first"
        ));
    }
    require_key(ctx)?;
    if login.user.is_none() {
        show_alias(&login, args.port)?;
    }

    // 1. Fetch the host key into a scratch file and decide whether to trust it.
    let scratch = ScratchDir::new(&ctx.home.join("tmp"), "add")?;
    let (pattern, host_key) = fetch_trusted_host_key(
        ctx,
        args.port,
        &Default::default(),
        &login,
        expected.as_deref(),
        scratch.path(),
    )?;
    let fingerprint = keys::fingerprint_of(&host_key);

    // 2. Probe through the pinned key only.
    let (settings, report) = probe_through(
        ctx,
        scratch.path(),
        &login,
        args.port,
        &pattern,
        &host_key,
        &Default::default(),
    )?;

    if ctx.interactive && !args.yes && !prompt::confirm(&format!("Save target {name} ({login})?"))?
    {
        anyhow::bail!("cancelled; nothing was saved");
    }
    // The marker every later dry run checks for (see `marker`): proves that the forced command
    // still allows this directory.
    crate::marker::push(
        &ctx.home,
        &name,
        &crate::marker::new_id(),
        &settings.rsync_rsh(args.port),
        &login.rsync_dest(),
        &|argv| Ok(Cmd::new("rsync").args(argv).output()?),
    )
    .with_context(|| format!("{login}: nothing was saved"))?;

    // 3. Save: host key first, then the config that refers to it.
    let kh_path = ctx.known_hosts_path();
    let kh = fsutil::read_optional(&kh_path)?.unwrap_or_default();
    let new_kh = known_hosts::replace_host(&kh, &pattern, std::slice::from_ref(&host_key));
    fsutil::atomic_write(&kh_path, &new_kh, fsutil::FILE_MODE)?;
    config.targets.push(TargetConfig {
        name: Some(name.clone()),
        login: Some(login.to_string()),
        user: login.user.clone(),
        host: Some(login.host.clone()),
        port: args.port,
        remote_path,
        rrsync: args.rrsync.clone().map(RrsyncSetting::Path),
        fingerprint: Some(fingerprint.clone()),
        no_delete: report.delete_allowed == Some(false),
        check: None,
        layout: args.layout,
        keep: args.keep,
        ssh_options: Default::default(),
        exclude: Vec::new(),
        extra: args.extra,
    });
    if let Some(why) = config
        .find_target(&name)
        .and_then(|t| config.extra_conflict(t))
    {
        return Err(crate::input_err!(
            "--extra: {why}; nothing was saved to config.yaml"
        ));
    }
    config.save(&config_path)?;
    eprintln!(
        "added target {name}: {login} (host key {fingerprint}{})",
        if report.delete_allowed == Some(false) {
            "; deletions refused by the target"
        } else {
            ""
        }
    );
    eprintln!("the key is write-only there and cannot run commands");
    Ok(ExitCode::SUCCESS)
}

/// Pin `host_key` in a scratch known_hosts and run the probe through it alone: proves that
/// offsync's key works there and is confined, before anything is saved.
fn probe_through(
    ctx: &Context,
    scratch: &std::path::Path,
    login: &Login,
    port: Option<u16>,
    pattern: &str,
    host_key: &ssh_key::public::KeyData,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(SshSettings, ProbeReport)> {
    let scratch_kh = scratch.join("known_hosts");
    let line = known_hosts::format_line(pattern, host_key);
    fsutil::atomic_write(
        &scratch_kh,
        format!("{line}\n").as_bytes(),
        fsutil::FILE_MODE,
    )?;
    let settings = SshSettings::new(&ctx.key_path(), &scratch_kh).with_options(options);
    let report = probe::probe(&settings, login, port, &ctx.home.join("tmp"))?;
    if !report.ok {
        anyhow::bail!("{login}: {}; nothing was saved", report.problem);
    }
    Ok((settings, report))
}

/// `target repin NAME --fingerprint SHA256:…`: the same trust rule and probe as `add`, for a
/// target whose host key was rotated on purpose. The new key replaces every line ssh would look
/// up for that host and port; other hosts' lines stay byte-identical.
pub fn repin(ctx: &Context, args: TargetRepinArgs) -> Result<ExitCode> {
    let expected = args
        .fingerprint
        .as_deref()
        .map(keys::parse_fingerprint)
        .transpose()?;
    if expected.is_none() && !ctx.interactive {
        return Err(input_err!(
            "target repin {}: pass --fingerprint SHA256:… (read it on the target with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`); without a terminal nothing can be asked",
            sanitize::for_terminal(&args.name)
        ));
    }
    let config_path = ctx.config_path();
    let mut config = Config::load(&config_path)?;
    let Some(idx) = config.targets.iter().position(|t| t.name() == args.name) else {
        return Err(unknown_target(&config, &args.name));
    };
    let port = config.targets[idx].port;
    let options = config.targets[idx].ssh_options.clone();
    let login = Login::parse(&login_of(&config.targets[idx]))
        .with_context(|| format!("target {}: invalid login in config", args.name))?;
    require_key(ctx)?;

    let scratch = ScratchDir::new(&ctx.home.join("tmp"), "repin")?;
    let (pattern, host_key) = fetch_trusted_host_key(
        ctx,
        port,
        &options,
        &login,
        expected.as_deref(),
        scratch.path(),
    )?;
    let fingerprint = keys::fingerprint_of(&host_key);
    probe_through(
        ctx,
        scratch.path(),
        &login,
        port,
        &pattern,
        &host_key,
        &options,
    )?;

    let kh_path = ctx.known_hosts_path();
    let kh = fsutil::read_optional(&kh_path)?.unwrap_or_default();
    let old_pattern = pinned_pattern(&config.targets[idx]);
    let without_old = known_hosts::remove_host(&kh, &old_pattern);
    let new_kh = known_hosts::replace_host(&without_old, &pattern, std::slice::from_ref(&host_key));
    fsutil::atomic_write(&kh_path, &new_kh, fsutil::FILE_MODE)?;
    let old = config.targets[idx].fingerprint.replace(fingerprint.clone());
    config.save(&config_path)?;
    eprintln!(
        "repinned target {}: host key {fingerprint} (was {})",
        args.name,
        old.as_deref().unwrap_or("not recorded")
    );
    eprintln!("the key is write-only there and cannot run commands");
    Ok(ExitCode::SUCCESS)
}

/// Say what a host alias resolves to now (`ssh -G`, no network), so the operator sees the
/// user, host and port the fingerprint must belong to. Only the alias is saved: later runs ask
/// ssh again, so edits of `~/.ssh/config` apply.
fn show_alias(login: &Login, port: Option<u16>) -> Result<()> {
    let out = Cmd::new("ssh")
        .args(crate::ssh::resolve_argv(login, port))
        .output()?;
    if !out.success() {
        return Err(input_err!(
            "{login}: ssh cannot read its configuration for this alias: {}; fix ~/.ssh/config",
            sanitize::stderr_tail(&out.stderr, 2)
        ));
    }
    let (user, host, port) = crate::ssh::parse_resolved(&String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "{login} is a host alias: ssh connects as {}@{} port {} (from your ssh config; saved as the alias)",
        sanitize::for_terminal(user.as_deref().unwrap_or("?")),
        sanitize::for_terminal(host.as_deref().unwrap_or("?")),
        port.map_or("?".to_string(), |p| p.to_string()),
    );
    Ok(())
}

fn require_key(ctx: &Context) -> Result<()> {
    if !ctx.key_path().exists() {
        anyhow::bail!(
            "no key at {}; run `offsync init` first",
            ctx.key_path().display()
        );
    }
    Ok(())
}

/// Fetch the host key with ssh itself and check it against `expected`, or ask.
fn fetch_trusted_host_key(
    ctx: &Context,
    port: Option<u16>,
    options: &std::collections::BTreeMap<String, String>,
    login: &Login,
    expected: Option<&str>,
    scratch: &std::path::Path,
) -> Result<(String, ssh_key::public::KeyData)> {
    let extra = crate::ssh::option_words(options);
    let mut seen = Vec::new();
    let groups = std::iter::once(None).chain(ALGORITHM_GROUPS.iter().map(|g| Some(*g)));
    for (i, algs) in groups.enumerate() {
        let kh = scratch.join(format!("fetch-{i}"));
        let out = Cmd::new("ssh")
            .args(crate::ssh::fetch_host_key_argv(
                login, port, &kh, algs, &extra,
            ))
            .output()?;
        let lines = known_hosts::parse_all(&fsutil::read_optional(&kh)?.unwrap_or_default());
        let Some(found) = lines.into_iter().next() else {
            if i == 0 {
                let stderr = out.stderr_text();
                let why = SshFailure::from_stderr(&stderr)
                    .map(|f| f.explain().to_string())
                    .unwrap_or_else(|| sanitize::stderr_tail(&out.stderr, 2));
                anyhow::bail!("{login}: cannot fetch the host key: {why}; nothing was saved");
            }
            continue; // the server has no key of this type
        };
        let fp = keys::fingerprint_of(&found.key);
        match expected {
            Some(want) if fp == want => return Ok((found.patterns, found.key)),
            Some(_) => {
                let offer = format!("{fp} ({})", found.key.algorithm().as_str());
                if !seen.contains(&offer) {
                    seen.push(offer);
                }
            }
            None => {
                eprintln!(
                    "host key of {login}: {fp} ({})",
                    found.key.algorithm().as_str()
                );
                if !ctx.interactive {
                    anyhow::bail!(
                        "{login}: the host key is not pinned; compare {fp} with what `offsync link` printed on the target and pass --fingerprint {fp}; nothing was saved"
                    );
                }
                match prompt::trust_host_key(&fp)? {
                    prompt::Trust::Yes => return Ok((found.patterns, found.key)),
                    prompt::Trust::No => anyhow::bail!("host key not trusted; nothing was saved"),
                    prompt::Trust::Mismatch(pasted) => anyhow::bail!(
                        "{login}: host key mismatch: you pasted {pasted}, the host offers {fp}; someone may be in the middle, or the fingerprint is from another host; nothing was saved"
                    ),
                }
            }
        }
    }
    anyhow::bail!(
        "{login}: host key mismatch: expected {}, the host offers {}; someone may be in the middle, or the fingerprint is from another host; nothing was saved",
        expected.unwrap_or_default(),
        seen.join(", ")
    )
}

fn validate_name(n: &str) -> Result<String> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('-')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(input_err!(
            "--name {:?}: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `-`",
            sanitize::for_terminal(n)
        ));
    }
    Ok(n.to_string())
}

fn validate_remote_path(p: &str) -> Result<String> {
    if !p.starts_with('/') && !p.starts_with("~/") {
        return Err(input_err!(
            "--path {:?} must be the absolute directory that `offsync link` printed",
            sanitize::for_terminal(p)
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(input_err!("--path contains control characters"));
    }
    Ok(p.to_string())
}

#[derive(Serialize)]
struct TargetRow {
    name: String,
    kind: &'static str,
    login: String,
    port: Option<u16>,
    remote_path: String,
    fingerprint: Option<String>,
    delete_allowed: bool,
    /// SSH targets: `in-place` or `releases`.
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<crate::releases::Layout>,
    /// `releases` targets: how many releases are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    keep: Option<u32>,
    /// What apply does with target-only paths (`refuse`, `keep`, `delete`; see `extra:`).
    extra: crate::plan::ExtraPolicy,
    /// The newest `apply` in operations.log (`null`: never applied).
    last_apply: Option<LastApplyCell>,
}

/// `target list`'s view of the last apply: when and how it ended.
#[derive(Serialize)]
struct LastApplyCell {
    timestamp: String,
    status: crate::oplog::Outcome,
}

fn row(config: &Config, t: &TargetConfig) -> TargetRow {
    let name = t.name();
    let layout = config.layout_for(&name);
    TargetRow {
        kind: "ssh",
        login: login_of(t),
        port: t.port,
        remote_path: t.remote_path.clone(),
        fingerprint: t.fingerprint.clone(),
        delete_allowed: !t.no_delete,
        layout: Some(layout),
        keep: (layout == crate::releases::Layout::Releases).then(|| config.keep_for(&name)),
        extra: config.extra_for(&name),
        last_apply: None,
        name,
    }
}

fn login_of(t: &TargetConfig) -> String {
    match (t.resolved_user(), t.resolved_host()) {
        (Some(u), Some(h)) if h.contains(':') => format!("{u}@[{h}]"),
        (Some(u), Some(h)) => format!("{u}@{h}"),
        (None, Some(h)) => h,
        _ => String::new(),
    }
}

pub fn list(ctx: &Context, args: TargetListArgs) -> Result<ExitCode> {
    let config = Config::load(&ctx.config_path())?;
    let mut rows: Vec<TargetRow> = config.targets.iter().map(|t| row(&config, t)).collect();
    // Mirrors: LOGIN shows the URL; they have no port, remote path or host key.
    rows.extend(config.mirrors.iter().map(|m| TargetRow {
        name: m.name.clone(),
        kind: "mirror",
        login: m.url.clone(),
        port: None,
        remote_path: String::new(),
        fingerprint: None,
        delete_allowed: true,
        layout: None,
        keep: None,
        extra: config.extra_for(&m.name),
        last_apply: None,
    }));
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let mut last = crate::history::last_applies(&ctx.home.join("operations.log"), &names)?;
    for r in &mut rows {
        r.last_apply = last
            .remove(&r.name)
            .and_then(|la| la.last)
            .map(|s| LastApplyCell {
                timestamp: s.timestamp,
                status: s.status,
            });
    }
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no targets; add one with `offsync target add USER@HOST --path DIR`");
        return Ok(ExitCode::SUCCESS);
    }
    let w = |f: &dyn Fn(&TargetRow) -> usize, h: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(h.len())
    };
    let (wn, wl, wp) = (
        w(&|r| r.name.len(), "NAME"),
        w(&|r| r.login.len(), "LOGIN"),
        w(&|r| r.remote_path.len(), "PATH"),
    );
    let wf = w(
        &|r| r.fingerprint.as_deref().map_or(1, str::len),
        "FINGERPRINT",
    );
    crate::outln!(
        "{:wn$}  {:wl$}  {:5}  {:wp$}  {:20}  {:6}  {:11}  {:wf$}  LAST APPLY (UTC)",
        "NAME",
        "LOGIN",
        "PORT",
        "PATH",
        // Whether the target's rrsync accepts deletions (not `link --no-delete`): what it
        // permits, not what an apply will do (that takes `--delete` or config `delete:`).
        "RRSYNC ALLOWS DELETE",
        "EXTRA",
        "LAYOUT",
        "FINGERPRINT"
    )?;
    for r in &rows {
        let layout = match (r.layout, r.keep) {
            (Some(l), Some(k)) => format!("{} ({k})", l.as_str()),
            (Some(l), None) => l.as_str().to_string(),
            (None, _) => "-".to_string(),
        };
        crate::outln!(
            "{:wn$}  {:wl$}  {:5}  {:wp$}  {:20}  {:6}  {:11}  {:wf$}  {}",
            sanitize::for_terminal(&r.name),
            sanitize::for_terminal(&r.login),
            r.port.map_or("-".to_string(), |p| p.to_string()),
            sanitize::for_terminal(&r.remote_path),
            match (r.kind, r.delete_allowed) {
                ("mirror", _) => "-",
                (_, true) => "yes",
                (_, false) => "no (-no-del)",
            },
            r.extra,
            layout,
            r.fingerprint.as_deref().unwrap_or("-"),
            r.last_apply
                .as_ref()
                .map_or("never".to_string(), |l| format!(
                    "{} {}",
                    crate::history::show_time(&l.timestamp),
                    l.status
                )),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(ctx: &Context, args: TargetRemoveArgs) -> Result<ExitCode> {
    let config_path = ctx.config_path();
    let mut config = Config::load(&config_path)?;
    if let Some(idx) = config.mirrors.iter().position(|m| m.name == args.name) {
        let m = config.mirrors.remove(idx);
        config.save(&config_path)?;
        eprintln!(
            "removed mirror {} from config.yaml; its data at {} is untouched",
            args.name, m.url
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(idx) = config.targets.iter().position(|t| t.name() == args.name) else {
        return Err(unknown_target(&config, &args.name));
    };
    let removed = config.targets.remove(idx);
    config.save(&config_path)?;
    crate::marker::forget(&ctx.home, &args.name)?;
    crate::releases::Records::forget(&ctx.home, &args.name)?;
    // Drop the pinned host key unless another target still connects to the same host:port.
    let pattern_of = pinned_pattern;
    let pattern = pattern_of(&removed);
    if !config.targets.iter().any(|t| pattern_of(t) == pattern) {
        let kh_path = ctx.known_hosts_path();
        if let Some(kh) = fsutil::read_optional(&kh_path)? {
            let new_kh = known_hosts::remove_host(&kh, &pattern);
            if new_kh != kh {
                fsutil::atomic_write(&kh_path, &new_kh, fsutil::FILE_MODE)?;
            }
        }
    }
    eprintln!("removed target {}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// The known_hosts pattern ssh looks up for a target: `[host]:port`, or for a host alias what
/// `ssh -G` resolves it to (its `HostKeyAlias`, else `HostName` and `Port`).
fn pinned_pattern(t: &TargetConfig) -> String {
    let host = t.resolved_host().unwrap_or_default();
    if t.resolved_user().is_none()
        && let Ok(login) = Login::parse(&host)
        && let Ok(out) = Cmd::new("ssh")
            .args(crate::ssh::resolve_argv(&login, t.port))
            .output()
        && out.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let alias = text
            .lines()
            .find_map(|l| l.strip_prefix("hostkeyalias "))
            .map(str::to_string);
        let (_, name, port) = crate::ssh::parse_resolved(&text);
        if let Some(h) = alias.or(name) {
            return known_hosts::pattern(&h, port.unwrap_or(22));
        }
    }
    known_hosts::pattern(&host, t.port.unwrap_or(22))
}

fn unknown_target(config: &Config, name: &str) -> anyhow::Error {
    config.unknown_target(name)
}

#[derive(Serialize)]
struct CheckRow {
    name: String,
    /// `ssh` or `mirror`.
    kind: &'static str,
    /// The SSH login, or the mirror's URL.
    login: String,
    #[serde(flatten)]
    report: ProbeReport,
    /// Mirrors: the newest generation (absent while the mirror is empty or unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    /// Mirrors: files in the newest generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<u64>,
}

/// One thing `target check` looks at.
pub fn check(ctx: &Context, args: TargetCheckArgs) -> Result<ExitCode> {
    let config = Config::load(&ctx.config_path())?;
    let mut selected: Vec<TargetSpec> = config.select(&args.names)?;
    if selected.is_empty() {
        anyhow::bail!(
            "no targets to check; add one with `offsync target add` or `offsync mirror add`"
        );
    }
    if selected.iter().any(|c| matches!(c, TargetSpec::Ssh(_))) {
        require_key(ctx)?;
    }
    let settings = SshSettings::new(&ctx.key_path(), &ctx.known_hosts_path());
    let scratch = ctx.home.join("tmp");
    let workers = config.concurrency.unwrap_or(8).min(selected.len());
    let rows = crate::parallel::parallel(&mut selected, workers, |c| match c {
        TargetSpec::Ssh(t) => {
            let login_text = login_of(t);
            let report = match Login::parse(&login_text) {
                Ok(login) => probe::probe(
                    &settings.clone().with_options(&t.ssh_options),
                    &login,
                    t.port,
                    &scratch,
                )
                .unwrap_or_else(|e| failed_report(format!("{e:#}"))),
                Err(e) => failed_report(format!("invalid login in config: {e}")),
            };
            // The probe does not know the target's name; the fix it suggests should.
            let mut report = report;
            report.problem = report.problem.replace(
                "`offsync target repin NAME ",
                &format!("`offsync target repin {} ", t.name()),
            );
            CheckRow {
                name: t.name(),
                kind: "ssh",
                login: login_text,
                report,
                generation: None,
                files: None,
            }
        }
        TargetSpec::Mirror(m) => check_mirror(ctx, m),
    });
    let all_ok = rows.iter().all(|r| r.report.ok);
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&rows).context("cannot encode JSON")?
        )?;
    } else {
        for r in &rows {
            if !r.report.ok {
                crate::outln!(
                    "FAIL  {}  {}  {}",
                    r.name,
                    r.login,
                    sanitize::for_terminal(&r.report.problem)
                )?;
            } else if r.kind == "mirror" {
                let state = match (r.generation, r.files) {
                    (Some(g), Some(f)) => format!("generation {g}, {f} files"),
                    _ => "empty".to_string(),
                };
                crate::outln!(
                    "ok    {}  {}  encrypted mirror, {state}, key opens, writable",
                    r.name,
                    r.login
                )?;
            } else {
                crate::outln!(
                    "ok    {}  {}  write-only, no shell{}",
                    r.name,
                    r.login,
                    if r.report.delete_allowed == Some(false) {
                        ", deletions refused"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::exit::FAILURE)
    })
}

/// Check one mirror (see [`MirrorTarget::probe`]); failures become the row's problem.
fn check_mirror(ctx: &Context, m: &MirrorConfig) -> CheckRow {
    let mut row = CheckRow {
        name: m.name.clone(),
        kind: "mirror",
        login: m.url.clone(),
        report: failed_report(String::new()),
        generation: None,
        files: None,
    };
    let probed = MirrorTarget::from_config(ctx, m).and_then(|mut t| {
        let newest = t.probe()?.map(|s| (s.generation, s.files));
        Ok(newest)
    });
    match probed {
        Ok(newest) => {
            row.report.ok = true;
            row.report.write = "create-only".into();
            if let Some((g, f)) = newest {
                row.generation = Some(g);
                row.files = Some(f);
            }
        }
        Err(e) => row.report.problem = format!("{e:#}"),
    }
    row
}

fn failed_report(problem: String) -> ProbeReport {
    ProbeReport {
        ok: false,
        write: String::new(),
        delete_allowed: None,
        read_refused: None,
        shell_refused: None,
        problem,
    }
}
