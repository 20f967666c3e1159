//! Snapshot tests (insta) of what people read: `--help` of the main commands, the plan text,
//! and the main error messages. A change to any of them shows up as a snapshot diff in review
//! instead of slipping through a `contains` check.
//!
//! The snapshots live in `tests/it/snapshots/` and are committed. Under `CI=true` insta never
//! writes them: a missing or different snapshot fails. After an intended change, run
//! `INSTA_UPDATE=always cargo test --test it snapshots` (or `cargo insta review`) and commit
//! the `.snap` files.
//!
//! Output is made deterministic before it is compared: the per-test temp directories, the
//! sshd ports, the login name (root or an unprivileged user) and the source digest are
//! replaced by placeholders ([`Normalise`]). Help is printed with a scrubbed environment (no
//! terminal, no `COLUMNS`, no `OFFSYNC_HOME`), so clap wraps at its default width.

use crate::util::{Home, Sshd, World, skip_unless_tools, stderr, stdout, user};
use std::path::Path;

/// Placeholders for what differs between runs and machines.
struct Normalise {
    pairs: Vec<(String, String)>,
}

impl Normalise {
    fn new() -> Normalise {
        Normalise { pairs: Vec::new() }
    }

    /// `path` (and its canonical form) becomes `placeholder`.
    fn path(mut self, path: &Path, placeholder: &str) -> Normalise {
        let mut forms = vec![path.display().to_string()];
        if let Ok(c) = std::fs::canonicalize(path) {
            forms.push(c.display().to_string());
        }
        for f in forms {
            self.pairs.push((f, placeholder.to_string()));
        }
        self
    }

    fn text(mut self, from: &str, to: &str) -> Normalise {
        self.pairs.push((from.to_string(), to.to_string()));
        self
    }

    /// The controller's temp dir and, for each target, its sshd dir and port.
    fn world(w: &World) -> Normalise {
        let mut n = Normalise::new();
        for (i, t) in w.targets.iter().enumerate() {
            n = n.sshd(t, &format!("t{}", i + 1));
        }
        n.path(w.home.tmp.path(), "[TMP]")
            .text(&format!("{}@", user()), "[USER]@")
    }

    fn sshd(self, t: &Sshd, name: &str) -> Normalise {
        let upper = name.to_uppercase();
        self.path(&t.dir, &format!("[{upper}]"))
            .text(&format!(":{}", t.port), &format!(":[{upper}_PORT]"))
            .text(&format!(" {} ", t.port), &format!(" [{upper}_PORT] "))
    }

    fn apply(&self, s: &str) -> String {
        // Longest first, so a path is replaced before any prefix of it.
        let mut pairs = self.pairs.clone();
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut out = s.to_string();
        for (from, to) in &pairs {
            out = out.replace(from, to);
        }
        digest_placeholder(&out)
    }
}

/// `digest 0123456789abcdef` (the plan's source digest prefix) becomes `digest [DIGEST]`.
fn digest_placeholder(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("digest ") {
        let (head, tail) = rest.split_at(i + "digest ".len());
        out.push_str(head);
        let hex = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex >= 8 {
            out.push_str("[DIGEST]");
            rest = &tail[hex..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

// --- help ------------------------------------------------------------------------------------

/// `offsync ARGS --help` without `OFFSYNC_HOME` in the environment: clap would print its
/// value (`[env: OFFSYNC_HOME=/tmp/…]`) and wrap around it.
fn help(args: &[&str]) -> String {
    let h = Home::new();
    let out = h
        .offsync(args.iter().chain(&["--help"]))
        .env_remove("OFFSYNC_HOME")
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    Normalise::new()
        .path(h.tmp.path(), "[TMP]")
        .apply(&stdout(&out))
}

#[test]
fn help_offsync() {
    insta::assert_snapshot!(help(&[]));
}

#[test]
fn help_plan() {
    insta::assert_snapshot!(help(&["plan"]));
}

#[test]
fn help_apply() {
    insta::assert_snapshot!(help(&["apply"]));
}

#[test]
fn help_verify() {
    insta::assert_snapshot!(help(&["verify"]));
}

#[test]
fn help_log() {
    insta::assert_snapshot!(help(&["log"]));
}

#[test]
fn help_status() {
    insta::assert_snapshot!(help(&["status"]));
}

#[test]
fn help_pull() {
    insta::assert_snapshot!(help(&["pull"]));
}

#[test]
fn help_mirror() {
    insta::assert_snapshot!(help(&["mirror"]));
}

#[test]
fn help_target_add() {
    insta::assert_snapshot!(help(&["target", "add"]));
}

// --- the plan --------------------------------------------------------------------------------

/// A fixed small source: applied once, then one file changed, one added, and one file left
/// only on the target.
fn small_world() -> World {
    let w = World::fast(1);
    w.write("index.html", b"<h1>hello</h1>\n");
    w.write("assets/app.js", b"console.log(1)\n");
    w.write("with space.txt", b"spaces\n");
    w.home.offsync(["apply", "--yes"]).assert().success();
    w.write("index.html", b"<h1>hello, world</h1>\n");
    w.write("assets/new.css", b"body {}\n");
    std::fs::write(w.sshd().sync_dir().join("old.txt"), b"old\n").unwrap();
    w
}

#[test]
fn plan_text_of_a_small_source() {
    if !skip_unless_tools() {
        return;
    }
    let w = small_world();
    let out = w
        .home
        .offsync(["plan", "--detailed-exitcode"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    insta::assert_snapshot!(Normalise::world(&w).apply(&stdout(&out)));
}

/// Three targets applied once, then the source changed (one file changed, one added, a
/// directory two levels deep added) and t3 given a file of its own: t1 and t2 plan the same
/// work, t3 more.
fn three_targets_two_alike() -> World {
    let w = World::fast(3);
    w.write("index.html", b"<h1>hello</h1>\n");
    w.write("assets/app.js", b"console.log(1)\n");
    w.write("assets/img/logo.svg", b"<svg/>\n");
    w.home.offsync(["apply", "--yes"]).assert().success();
    w.write("index.html", b"<h1>hello, world</h1>\n");
    w.write("assets/new.css", b"body {}\n");
    w.write("assets/img/icons/a.svg", b"<svg>a</svg>\n");
    w.write("docs/guide/intro.md", b"# intro\n");
    std::fs::write(w.targets[2].sync_dir().join("old.txt"), b"old\n").unwrap();
    w
}

/// `offsync plan ARGS` on `w`, expected to exit `code`; its stdout, normalised.
fn plan_stdout(w: &World, args: &[&str], code: i32) -> String {
    let out = w
        .home
        .offsync(["plan"].iter().chain(args))
        .assert()
        .code(code)
        .get_output()
        .clone();
    Normalise::world(w).apply(&stdout(&out))
}

#[test]
fn plan_text_groups_identical_targets() {
    if !skip_unless_tools() {
        return;
    }
    let w = three_targets_two_alike();
    let text = plan_stdout(&w, &["--detailed-exitcode"], 2);
    // The grouping is deterministic: the same state prints the same bytes.
    assert_eq!(text, plan_stdout(&w, &["--detailed-exitcode"], 2));
    insta::assert_snapshot!(text);
}

#[test]
fn plan_summary_counts_only() {
    if !skip_unless_tools() {
        return;
    }
    let w = three_targets_two_alike();
    insta::assert_snapshot!(plan_stdout(&w, &["--summary"], 0));
    // The saved plan is the whole plan, whatever the text shows.
    let file = w.home.tmp.path().join("plan.json");
    w.home
        .offsync(["plan", "--summary", "--out"])
        .arg(&file)
        .assert()
        .success();
    let json = w.home.offsync(["plan", "--json"]).assert().success();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        json.get_output().stdout,
        "--summary --out saves the same plan as --json prints"
    );
}

#[test]
fn plan_stat_per_directory() {
    if !skip_unless_tools() {
        return;
    }
    let w = three_targets_two_alike();
    insta::assert_snapshot!(plan_stdout(&w, &["--stat"], 0));
}

#[test]
fn plan_total_counts_a_failed_target() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    w.write("a.txt", b"a");
    // t2's key without the forced command: it fails the confinement check (dry runs only, as
    // in `error_not_confined`).
    std::fs::write(
        w.targets[1].authorized_keys(),
        format!("ssh-ed25519 {} offsync-snapshot-test\n", w.home.pub_blob()),
    )
    .unwrap();
    let text = failed(&w, &mut w.home.offsync(["plan"]), 1);
    insta::assert_snapshot!(text);
}

/// The point of grouping: three targets missing the same 441 paths print each path once
/// (plan, and apply's preview), not three times — and the JSON plan still lists every target's
/// paths.
#[test]
fn identical_targets_print_their_paths_once() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(3);
    for i in 0..437 {
        w.write(
            &format!("d{}/f{i:03}.txt", i % 4),
            format!("{i}").as_bytes(),
        );
    }
    let lines = |out: &std::process::Output| stdout(out).lines().count();
    let plan = w
        .home
        .offsync(["plan"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&plan);
    // 437 files and 4 directories, under one header for the three targets.
    assert!(text.contains("\nt1, t2, t3 (3 targets; "), "{text}");
    assert!(
        text.ends_with("\nPlan: 3 targets, 1323 to add, 0 to change, 0 metadata, 0 target-only, 3.5 KiB to send\n"),
        "{text}"
    );
    // source, blank, header, 441 paths, 3 summary lines, blank, total: 441 + 8, not 1,333.
    assert_eq!(lines(&plan), 441 + 8, "{text}");
    let json = w
        .home
        .offsync(["plan", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["added"].as_array().unwrap().len(), 441);
    }
    let apply = w
        .home
        .offsync(["apply", "--yes"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(stdout(&apply).contains("\nt1, t2, t3 (3 targets; "));
    // The preview, a blank line and one result line per target.
    assert_eq!(lines(&apply), 441 + 8 + 4, "{}", stdout(&apply));
}

// --- error messages --------------------------------------------------------------------------

/// stdout and stderr of a command that is expected to exit `code`, normalised for `w`.
fn failed(w: &World, cmd: &mut assert_cmd::Command, code: i32) -> String {
    let out = cmd.assert().code(code).get_output().clone();
    Normalise::world(w).apply(&format!(
        "exit {code}\n--- stdout\n{}--- stderr\n{}",
        stdout(&out),
        stderr(&out)
    ))
}

#[test]
fn error_unknown_target() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let text = failed(&w, &mut w.home.offsync(["plan", "--target", "nope"]), 64);
    insta::assert_snapshot!(text);
}

/// Output of `offsync plan` in a controller without a config or a source: a failure, in the
/// same shape as [`failed`].
fn plan_without_setup(h: &Home) -> String {
    let out = h.offsync(["plan"]).assert().failure().get_output().clone();
    Normalise::new().path(h.tmp.path(), "[TMP]").apply(&format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        stdout(&out),
        stderr(&out)
    ))
}

#[test]
fn error_no_config() {
    insta::assert_snapshot!(plan_without_setup(&Home::new()));
}

#[test]
fn error_no_source() {
    let h = Home::new();
    h.init(None);
    insta::assert_snapshot!(plan_without_setup(&h));
}

#[test]
fn error_bad_plan_file() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let file = w.home.tmp.path().join("not-a-plan.json");
    std::fs::write(&file, br#"{"format": "something-else/1", "items": []}"#).unwrap();
    let text = failed(&w, w.home.offsync(["apply", "--yes"]).arg(&file), 64);
    insta::assert_snapshot!(text);
}

#[test]
fn error_stale_plan() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a.txt", b"one");
    let file = w.home.tmp.path().join("plan.json");
    w.home
        .offsync(["plan", "--out"])
        .arg(&file)
        .assert()
        .success();
    w.write("b.txt", b"two");
    let text = failed(&w, w.home.offsync(["apply", "--yes"]).arg(&file), 1);
    insta::assert_snapshot!(text);
}

#[test]
fn error_not_confined() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a.txt", b"a");
    // A plain key line, no forced command: dry runs only (see confinement.rs's SAFETY note).
    std::fs::write(
        w.sshd().authorized_keys(),
        format!("ssh-ed25519 {} offsync-snapshot-test\n", w.home.pub_blob()),
    )
    .unwrap();
    let text = failed(&w, &mut w.home.offsync(["plan"]), 1);
    insta::assert_snapshot!(text);
}

#[test]
fn error_delete_refused_without_delete() {
    if !skip_unless_tools() {
        return;
    }
    let w = small_world();
    let text = failed(&w, &mut w.home.offsync(["apply", "--yes"]), 1);
    insta::assert_snapshot!(text);
}

#[test]
fn error_mass_delete_refused() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    for f in ["f1", "f2", "f3"] {
        w.write(f, f.as_bytes());
    }
    w.home.offsync(["apply", "--yes"]).assert().success();
    for f in ["f1", "f2", "f3"] {
        std::fs::remove_file(w.source.join(f)).unwrap();
    }
    let text = failed(&w, &mut w.home.offsync(["apply", "--yes", "--delete"]), 1);
    insta::assert_snapshot!(text);
}
