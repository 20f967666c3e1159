//! `offsync completions SHELL`: print the shell code that completes offsync.
//!
//! The completions are dynamic (clap_complete's `CompleteEnv`): the printed code calls
//! `offsync` back on every Tab with [`COMPLETE_VAR`] set, and [`crate::main_entry`] answers
//! from the clap definition before doing anything else. So `plan -t <Tab>` offers the target
//! and mirror names of the config in force, and the script never goes stale when targets are
//! added. The candidate functions here run on every Tab: they only read `config.yaml`, and
//! any problem (no config, a broken one, no `$HOME`) yields no candidates rather than an
//! error, which would garble the user's command line.

use crate::cli::CompletionsArgs;
use anyhow::Result;
use clap_complete::engine::CompletionCandidate;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// The environment variable that turns a run of `offsync` into a completion request (set
/// only by the printed shell code; internal, hence the underscore).
pub const COMPLETE_VAR: &str = "_OFFSYNC_COMPLETE";

pub fn run(args: CompletionsArgs) -> Result<ExitCode> {
    let name = args.shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let shell = shells
        .completer(&name)
        .ok_or_else(|| crate::input_err!("no completions for shell {name:?}"))?;
    let mut out = Vec::new();
    shell.write_registration(COMPLETE_VAR, "offsync", "offsync", &completer(), &mut out)?;
    crate::out!("{}", String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

/// The program the shell code calls back: the one running now as it was invoked, made
/// absolute when given with a directory (`./target/release/offsync`), else `offsync` from
/// `PATH` (so the code survives an upgrade in place).
fn completer() -> String {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let path = PathBuf::from(&argv0);
    if path.components().count() > 1
        && let Ok(abs) = crate::context::absolute(&path)
    {
        return abs.to_string_lossy().into_owned();
    }
    "offsync".into()
}

/// Candidates for `--target`: every SSH target and mirror name in the config.
pub fn target_names() -> Vec<CompletionCandidate> {
    names(true)
}

/// Candidates for a mirror's NAME.
pub fn mirror_names() -> Vec<CompletionCandidate> {
    names(false)
}

fn names(with_targets: bool) -> Vec<CompletionCandidate> {
    let Some(config) = config() else {
        return Vec::new();
    };
    let targets = config
        .targets
        .iter()
        .filter(|_| with_targets)
        .map(|t| CompletionCandidate::new(t.name()).help(Some("SSH target".into())));
    let mirrors = config
        .mirrors
        .iter()
        .map(|m| CompletionCandidate::new(&m.name).help(Some("mirror".into())));
    targets.chain(mirrors).collect()
}

/// The config of the home the command line being completed names (`--home DIR`), else
/// `$OFFSYNC_HOME`, else `~/.offsync`; `None` on any problem.
fn config() -> Option<crate::config::Config> {
    let ctx = crate::context::Context::new(home_from(std::env::args_os())).ok()?;
    crate::config::Config::load_optional(&ctx.config_path())
        .ok()
        .flatten()
}

/// `--home DIR` / `--home=DIR` from the words being completed (the last one wins, as with
/// clap), else `$OFFSYNC_HOME`.
fn home_from(args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    let args: Vec<OsString> = args.collect();
    let mut home = None;
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        if a == "--home" {
            home = args.get(i + 1).map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--home=") {
            home = Some(PathBuf::from(v));
        }
    }
    home.or_else(|| std::env::var_os("OFFSYNC_HOME").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_the_words_being_completed() {
        let words = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert_eq!(
            home_from(words(&[
                "offsync", "--", "offsync", "--home", "/h", "plan", "-t", ""
            ])),
            Some(PathBuf::from("/h"))
        );
        assert_eq!(
            home_from(words(&[
                "offsync",
                "--",
                "offsync",
                "--home=/x",
                "plan",
                "-t"
            ])),
            Some(PathBuf::from("/x"))
        );
    }
}
