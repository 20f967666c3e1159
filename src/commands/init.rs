//! `offsync init`: the controller's dedicated key and config.
//!
//! Idempotent: an existing keypair is kept byte-identical (it may already be deployed to
//! targets), the config is only rewritten when `--source` changes it, and a half-present
//! keypair is an error with the fix instead of a silent regeneration.

use anyhow::{Context as _, Result};
use std::process::ExitCode;

use crate::cli::{InitArgs, InstallDepsArgs, Role};
use crate::config::Config;
use crate::context::{self, Context};
use crate::{deps, fsutil, input_err, keys, prompt};

pub fn run(ctx: &Context, args: InitArgs) -> Result<ExitCode> {
    // Validate everything before writing anything.
    let source = match &args.source {
        Some(s) => Some(resolve_source(s)?),
        None => None,
    };
    ensure_tools(ctx, args.yes)?;

    fsutil::ensure_private_dir(&ctx.home)?;
    let (key_path, pub_path) = (ctx.key_path(), ctx.pub_key_path());
    let created = match (key_path.exists(), pub_path.exists()) {
        (true, true) => {
            let private = keys::read_private(&key_path)?;
            let public = keys::read_public(&pub_path)?;
            if private.public_key().key_data() != public.key_data() {
                anyhow::bail!(
                    "{} does not belong to {}; restore the matching file from a backup, or move both away to create a new key (targets must then be linked again)",
                    pub_path.display(),
                    key_path.display()
                );
            }
            false
        }
        (true, false) => anyhow::bail!(
            "half-present keypair: {} exists but {} is missing; recreate it with `ssh-keygen -y -f {} > {}`",
            key_path.display(),
            pub_path.display(),
            key_path.display(),
            pub_path.display()
        ),
        (false, true) => anyhow::bail!(
            "half-present keypair: {} exists but the private key {} is missing; restore it from a backup, or remove the .pub to create a new key (targets must then be linked again)",
            pub_path.display(),
            key_path.display()
        ),
        (false, false) => {
            let key = keys::generate(&format!("offsync@{}", keys::hostname()))?;
            keys::write_pair(&key, &key_path, &pub_path)?;
            true
        }
    };

    let config_path = ctx.config_path();
    let mut config = Config::load_optional(&config_path)?;
    let needs_write = match (&mut config, &source) {
        (None, _) => true,
        (Some(c), Some(s)) => c.source.as_deref() != Some(s.as_str()),
        (Some(_), None) => false,
    };
    let mut config = config.unwrap_or_default();
    if let Some(s) = source {
        config.source = Some(s);
    }
    if needs_write {
        config.save(&config_path)?;
    }

    let public = keys::read_public(&pub_path)?;
    let line = public
        .to_openssh()
        .context("cannot encode the public key")?;
    eprintln!("offsync home: {}", ctx.home.display());
    eprintln!(
        "key: {} {}",
        if created { "created" } else { "kept" },
        key_path.display()
    );
    match &config.source {
        Some(s) => eprintln!("source: {s}"),
        None => eprintln!("source: not set yet; run `offsync init --source DIR`"),
    }
    eprintln!("fingerprint: {}", keys::fingerprint(&public));
    eprintln!("public key (next: on each target, `offsync link --key '<this line>' --path DIR`):");
    crate::outln!("{line}")?;
    Ok(ExitCode::SUCCESS)
}

/// The source must be an existing directory; store it canonical and absolute.
fn resolve_source(s: &std::path::Path) -> Result<String> {
    let p = context::expand_tilde(s)?;
    let canon = std::fs::canonicalize(&p).map_err(|e| {
        input_err!(
            "--source {}: {e}; pass an existing directory",
            crate::sanitize::for_terminal(&s.display().to_string())
        )
    })?;
    if !canon.is_dir() {
        return Err(input_err!(
            "--source {} is not a directory; pass the directory to push",
            s.display()
        ));
    }
    canon
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| input_err!("--source {} is not valid UTF-8; rename it", s.display()))
}

/// ssh and rsync must exist on the controller; offer to install them.
fn ensure_tools(ctx: &Context, yes: bool) -> Result<()> {
    let missing = deps::missing_controller_tools();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(", ");
    if !yes {
        if !ctx.interactive {
            anyhow::bail!(
                "missing on this controller: {list}; run `offsync install-deps --role controller --yes` (or pass --yes to init)"
            );
        }
        if !prompt::confirm(&format!(
            "{list} missing; install with `offsync install-deps`?"
        ))? {
            anyhow::bail!(
                "missing on this controller: {list}; run `offsync install-deps --role controller`"
            );
        }
    }
    crate::commands::install_deps::run(
        ctx,
        InstallDepsArgs {
            role: Role::Controller,
            yes: true,
            dry_run: false,
        },
    )?;
    Ok(())
}
