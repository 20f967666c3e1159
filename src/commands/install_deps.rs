//! `offsync install-deps`: install ssh, rsync and rrsync with the system package manager.
//!
//! The exact command is printed before anything runs; it runs only with `--yes` or after a
//! "yes" on a terminal; `--dry-run` prints it (on stdout, for scripts) and stops.

use anyhow::Result;
use std::process::ExitCode;

use crate::cli::{InstallDepsArgs, Role};
use crate::context::Context;
use crate::{deps, input_err, prompt};

pub fn run(ctx: &Context, args: InstallDepsArgs) -> Result<ExitCode> {
    let mut missing: Vec<&str> = Vec::new();
    if matches!(args.role, Role::Controller | Role::Both) {
        missing.extend(deps::missing_controller_tools());
    }
    if matches!(args.role, Role::Target | Role::Both) {
        missing.extend(deps::missing_target_tools());
    }
    missing.dedup();
    if missing.is_empty() && !args.dry_run {
        eprintln!("everything offsync needs here is installed");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(pm) = deps::detect() else {
        anyhow::bail!("{}", deps::manual_instructions(args.role));
    };
    let commands =
        deps::install_commands(pm, args.role, deps::is_root(), which::which("sudo").is_ok())?;
    if !missing.is_empty() {
        eprintln!("missing: {}", missing.join(", "));
    }
    for c in &commands {
        if args.dry_run {
            println!("{}", c.display());
        } else {
            eprintln!("will run: {}", c.display());
        }
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        if !ctx.interactive {
            return Err(input_err!(
                "not installing without confirmation; pass --yes, or run the command above yourself"
            ));
        }
        if !prompt::confirm("Run it?")? {
            anyhow::bail!("cancelled; nothing was installed");
        }
    }
    for c in &commands {
        c.run_interactive()?;
    }
    let still: Vec<&str> = match args.role {
        Role::Controller => deps::missing_controller_tools(),
        Role::Target => deps::missing_target_tools(),
        Role::Both => {
            let mut v = deps::missing_controller_tools();
            v.extend(deps::missing_target_tools());
            v
        }
    };
    if !still.is_empty() {
        anyhow::bail!(
            "installed, but still missing: {}; {}",
            still.join(", "),
            deps::manual_instructions(args.role)
        );
    }
    eprintln!("done");
    Ok(ExitCode::SUCCESS)
}
