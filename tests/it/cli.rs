//! The command line itself: help, version, usage errors, completions, install-deps --dry-run.
//! None of these need sshd or rsync.

use crate::util::{Home, stderr, stdout, which};

#[test]
fn help_for_every_command_and_subcommand() {
    let h = Home::new();
    let cmds: &[&[&str]] = &[
        &[],
        &["init"],
        &["link"],
        &["unlink"],
        &["target"],
        &["target", "add"],
        &["target", "list"],
        &["target", "remove"],
        &["target", "check"],
        &["plan"],
        &["apply"],
        &["verify"],
        &["manifest"],
        &["install-deps"],
        &["completions"],
    ];
    for c in cmds {
        let out = h
            .offsync(c.iter().chain(&["--help"]))
            .assert()
            .code(0)
            .get_output()
            .clone();
        let text = stdout(&out);
        let usage = format!("Usage: offsync {}", c.join(" "));
        assert!(text.contains(usage.trim_end()), "{c:?}: {text}");
        assert!(text.contains("Options:"), "{c:?}: {text}");
        assert!(text.lines().count() >= 5, "{c:?}: help too short: {text}");
        assert!(stderr(&out).is_empty(), "{c:?}: {}", stderr(&out));
    }
    // Subcommand groups list their subcommands.
    let top = stdout(h.offsync(["--help"]).assert().success().get_output());
    for sub in [
        "init",
        "link",
        "unlink",
        "target",
        "install-deps",
        "completions",
    ] {
        assert!(
            top.contains(&format!("  {sub} ")),
            "{sub} missing from:\n{top}"
        );
    }
    let target = stdout(
        h.offsync(["target", "--help"])
            .assert()
            .success()
            .get_output(),
    );
    for sub in ["add", "list", "remove", "check"] {
        assert!(
            target.contains(&format!("  {sub} ")),
            "{sub} missing from:\n{target}"
        );
    }
}

#[test]
fn version_is_the_package_version() {
    let out = Home::new()
        .offsync(["--version"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert_eq!(
        stdout(&out),
        format!("offsync {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_64_not_2() {
    let h = Home::new();
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["init", "--no-such-flag"],
        &["link", "--no-such-flag"],
        &["target", "add", "--no-such-flag"],
        &["target", "list", "--bogus"],
        &["no-such-command"],
        &["target", "add"],
        &["target", "add", "u@h"],
        &["target"],
        &["link", "--key", "k", "--key-file", "f"],
        &["completions", "tcsh"],
        &["install-deps", "--role", "nobody"],
    ];
    for c in cases {
        let out = h.offsync(*c).assert().code(64).get_output().clone();
        let err = stderr(&out);
        assert!(
            err.contains("Usage:") || err.contains("error:"),
            "{c:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{c:?}: {}", stdout(&out));
    }
    assert!(
        !h.home.exists(),
        "a usage error must not create OFFSYNC_HOME"
    );
}

#[test]
fn completions_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Home::new()
            .offsync(["completions", shell])
            .assert()
            .code(0)
            .get_output()
            .clone();
        let text = stdout(&out);
        assert!(text.len() > 200, "{shell}: suspiciously short:\n{text}");
        assert!(text.contains("offsync"), "{shell}");
        assert!(
            text.contains("install-deps"),
            "{shell}: subcommands completed"
        );
    }
}

#[test]
fn install_deps_dry_run_prints_commands_and_changes_nothing() {
    let h = Home::new();
    let managers = ["apt-get", "dnf", "yum", "pacman", "zypper", "apk", "brew"];
    let has_manager = managers.iter().any(|m| which(m).is_some());
    let mut cmd = h.offsync(["install-deps", "--dry-run", "--role", "target"]);
    if has_manager {
        let out = cmd.assert().code(0).get_output().clone();
        // The command lines go to stdout, one per line, so a script can capture them.
        let text = stdout(&out);
        assert!(text.contains("rsync"), "{text}");
        assert!(
            text.lines().all(|l| managers.iter().any(|m| l.contains(m))),
            "only package manager commands on stdout: {text}"
        );
    } else {
        // No manager offsync knows: it says how to install by hand, and fails only if
        // something is actually missing.
        let out = cmd.assert().get_output().clone();
        if !out.status.success() {
            assert!(stderr(&out).contains("install by hand"), "{}", stderr(&out));
        }
    }
    assert!(!h.home.exists(), "a dry run creates no state");
}
