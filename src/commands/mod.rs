//! One module per subcommand. Each takes the resolved [`Context`] and its own argument struct
//! and returns the exit code; errors bubble up to `lib.rs`, which prints them once.

use crate::cli::{Command, TargetCommand};
use crate::context::Context;
use anyhow::Result;
use std::process::ExitCode;

pub mod apply;
pub mod completions;
pub mod history;
pub mod init;
pub mod install_deps;
pub mod link;
pub mod manifest;
pub mod mirror;
pub mod plan;
pub mod pull;
pub mod releases;
pub mod target;
pub mod verify;

pub fn dispatch(ctx: &Context, command: Command) -> Result<ExitCode> {
    match command {
        Command::Init(a) => init::run(ctx, a),
        Command::Link(a) => link::run(ctx, a),
        Command::Unlink(a) => link::unlink(ctx, a),
        Command::Target(TargetCommand::Add(a)) => target::add(ctx, a),
        Command::Target(TargetCommand::List(a)) => target::list(ctx, a),
        Command::Target(TargetCommand::Remove(a)) => target::remove(ctx, a),
        Command::Target(TargetCommand::Repin(a)) => target::repin(ctx, a),
        Command::Target(TargetCommand::Check(a)) => target::check(ctx, a),
        Command::Plan(a) => plan::run(ctx, a),
        Command::Show(a) => plan::show(a),
        Command::Apply(a) => apply::run(ctx, a),
        Command::Verify(a) => verify::run(ctx, a),
        Command::Mirror(c) => mirror::dispatch(ctx, c),
        Command::Pull(a) => pull::run(ctx, a),
        Command::Releases(a) => releases::list(ctx, a),
        Command::Rollback(a) => releases::rollback(ctx, a),
        Command::Manifest(a) => manifest::run(ctx, a),
        Command::InstallDeps(a) => install_deps::run(ctx, a),
        Command::Completions(a) => completions::run(a),
        Command::Log(a) => history::log(ctx, a),
        Command::Status(a) => history::status(ctx, a),
    }
}
