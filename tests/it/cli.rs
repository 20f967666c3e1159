//! The command line itself: help, version, usage errors, completions.

use crate::util::Home;

#[test]
fn help_for_every_command() {
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
            .success()
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Usage: offsync"), "{c:?}: {text}");
    }
}

#[test]
fn version() {
    let out = Home::new()
        .offsync(["--version"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        format!("offsync {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_64_not_2() {
    Home::new()
        .offsync(["plan", "--no-such-flag"])
        .assert()
        .code(64);
    Home::new().offsync(["no-such-command"]).assert().code(64);
}

#[test]
fn completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Home::new()
            .offsync(["completions", shell])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert!(
            String::from_utf8(out).unwrap().contains("offsync"),
            "{shell}"
        );
    }
}

#[test]
fn install_deps_dry_run_prints_commands_without_installing() {
    Home::new()
        .offsync(["install-deps", "--role", "target", "--dry-run"])
        .assert()
        .success();
}
