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

/// `offsync completions SHELL`, sourced in the real shell, completes subcommands and, from
/// the config in force, `plan -t <Tab>` with target and mirror names and a mirror's NAME with
/// mirror names only. bash is required; zsh and fish are tried when installed (scripts/test
/// installs them).
#[test]
fn completions_for_bash_zsh_fish() {
    let h = Home::new();
    std::fs::create_dir_all(&h.home).unwrap();
    std::fs::write(
        h.config(),
        "version: 1\ntargets:\n  - name: web1\n    login: u@h1\n    remote_path: /x\n  - name: web2\n    login: u@h2\n    remote_path: /x\nmirrors:\n  - name: usb\n    url: /mnt/usb\n",
    )
    .unwrap();
    // Each shell: how to source the script and print the candidates for a command line
    // whose last word is being completed (`@LINE@` is replaced by the words, quoted).
    let drivers: &[(&str, &str)] = &[
        (
            "bash",
            r#"source "@SCRIPT@"; COMP_WORDS=(@LINE@); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_TYPE=9; _clap_complete_offsync; printf '%s\n' "${COMPREPLY[@]}""#,
        ),
        (
            "zsh",
            r#"compdef() { : }; _describe() { shift 2; print -l ${(P)1} }; source "@SCRIPT@"; words=(@LINE@); CURRENT=${#words}; _clap_dynamic_completer_offsync"#,
        ),
        ("fish", r#"source "@SCRIPT@"; complete -C "@LINE@""#),
    ];
    for (shell, driver) in drivers {
        let Some(bin) = which(shell) else {
            assert!(*shell != "bash", "bash is needed for this test");
            eprintln!("completions: {shell} not installed, not tried");
            continue;
        };
        let script = h.tmp.path().join(format!("offsync.{shell}"));
        let out = h
            .offsync(["completions", shell])
            .assert()
            .code(0)
            .get_output()
            .clone();
        std::fs::write(&script, &out.stdout).unwrap();
        let complete = |words: &[&str]| -> String {
            let quoted = if *shell == "fish" {
                words.join(" ")
            } else {
                words
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let code = driver
                .replace("@LINE@", &quoted)
                .replace("@SCRIPT@", &script.display().to_string());
            let out = std::process::Command::new(&bin)
                .args(if *shell == "zsh" { vec!["-f"] } else { vec![] })
                .args(["-c", &code])
                .env_clear()
                .envs(h.env())
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {}", stderr(&out));
            // Candidates only, without fish's and zsh's descriptions.
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split(['\t', ':']).next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            names.sort();
            names.join(" ")
        };
        assert_eq!(
            complete(&["offsync", "plan", "-t", ""]),
            "usb web1 web2",
            "{shell}"
        );
        let mirror = complete(&["offsync", "mirror", "ls", ""]);
        assert!(
            mirror.contains("usb") && !mirror.contains("web1"),
            "{shell}: {mirror}"
        );
        assert!(
            complete(&["offsync", "install-"]).contains("install-deps"),
            "{shell}"
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
