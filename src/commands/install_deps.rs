//! `offsync install-deps`: install ssh, rsync and rrsync with the system package manager.
//!
//! Invariants: nothing is installed when every tool for the role is already there; the exact
//! command lines are printed before anything runs; they run only with `--yes` or after a "yes"
//! typed on a terminal, never because a script forgot a flag. `--dry-run` prints the command
//! lines on stdout (one per line, shell-quoted, so a script can capture them) even when
//! nothing is missing, so it always answers "what would you use here?", and runs nothing.

use anyhow::{Context as _, Result};
use std::process::ExitCode;

use crate::cli::{InstallDepsArgs, Role};
use crate::context::Context;
use crate::deps::{self, Privilege};
use crate::{input_err, prompt};

pub fn run(ctx: &Context, args: InstallDepsArgs) -> Result<ExitCode> {
    let role = args.role;
    let missing = deps::missing_tools(role);
    if missing.is_empty() && !args.dry_run {
        eprintln!(
            "everything a {} needs is already installed",
            role_name(role)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(pm) = deps::detect() else {
        if missing.is_empty() {
            // Dry run on a machine that needs nothing and has no manager we know.
            eprintln!(
                "everything a {} needs is already installed",
                role_name(role)
            );
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!(
            "missing: {}; {}",
            missing.join(", "),
            deps::manual_instructions(role)
        );
    };
    let mut privilege = Privilege::current();
    if args.dry_run && privilege == Privilege::NoSudo {
        // Only printing: show the commands as root would run them instead of failing.
        eprintln!("(no sudo here: run these as root)");
        privilege = Privilege::Root;
    }
    let commands = deps::install_commands(pm, role, privilege)?;

    if missing.is_empty() {
        eprintln!(
            "everything a {} needs is already installed; {} would install with:",
            role_name(role),
            pm.program()
        );
    } else {
        eprintln!("missing here: {}", missing.join(", "));
        eprintln!("offsync will run:");
    }
    for c in &commands {
        if args.dry_run {
            crate::outln!("{}", c.display())?;
        } else {
            eprintln!("  {}", c.display());
        }
    }
    let notes = deps::notes(pm, role);
    if args.dry_run {
        notes.iter().for_each(|n| eprintln!("note: {n}"));
        return Ok(ExitCode::SUCCESS);
    }

    if !args.yes {
        if !ctx.interactive {
            return Err(input_err!(
                "not installing without confirmation: pass --yes, or run the command{} above \
                 yourself",
                if commands.len() == 1 { "" } else { "s" }
            ));
        }
        if !prompt::confirm("Run it?")? {
            anyhow::bail!("cancelled; nothing was installed");
        }
    }
    for c in &commands {
        c.run_interactive().with_context(|| {
            format!(
                "installing with {} failed; fix the cause and re-run `offsync install-deps \
                 --role {}`",
                pm.program(),
                role_arg(role)
            )
        })?;
    }

    // Check again: a package can install fine and still not give us a usable tool (an rsync
    // older than 3.2.4 without rrsync, a PATH that lacks the install prefix).
    let still = deps::missing_tools(role);
    if !still.is_empty() {
        let why = if still.contains(&"rrsync") {
            deps::find_rrsync(None)
                .err()
                .map(|e| format!(" ({e:#})"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        anyhow::bail!(
            "installed the packages, but still missing: {}{why}; check that PATH includes \
             where {} installs, or install by hand {}",
            still.join(", "),
            pm.program(),
            deps::what_to_install(role)
        );
    }
    eprintln!("done: everything a {} needs is installed", role_name(role));
    notes.iter().for_each(|n| eprintln!("note: {n}"));
    Ok(ExitCode::SUCCESS)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Controller => "controller",
        Role::Target => "target",
        Role::Both => "controller and target",
    }
}

/// The `--role` value that selects `role`, for messages the user can paste.
fn role_arg(role: Role) -> &'static str {
    match role {
        Role::Controller => "controller",
        Role::Target => "target",
        Role::Both => "both",
    }
}
