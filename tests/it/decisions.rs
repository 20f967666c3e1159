//! Decisions: a saved plan holds `--delete` (and each target's `extra:`) under its digest and
//! is applied without a question; `offsync show`; `apply --json` rows for unchanged targets;
//! refusals reported before the question; `extra: keep | delete` against real targets,
//! a `link --no-delete` one included.

use crate::util::{
    Home, World, all_output, edit_target, last_record, skip_unless_tools, snapshot,
    snapshot_sans_marker, stdout,
};
use offsync::plan::ExtraPolicy;

/// A source of three files, applied to every target of `w`.
fn synced(n: usize) -> World {
    let w = World::fast(n);
    for f in ["a", "b", "c"] {
        w.write(f, f.as_bytes());
    }
    w.home.offsync(["apply", "--yes"]).assert().success();
    w
}

#[test]
fn a_saved_plan_holds_delete_and_is_applied_without_asking() {
    if !skip_unless_tools() {
        return;
    }
    let w = synced(1);
    let dir = w.sshd().sync_dir();
    std::fs::write(dir.join("old"), b"old").unwrap();
    let plain = w.home.tmp.path().join("plain.json");
    let decided = w.home.tmp.path().join("decided.json");
    w.home
        .offsync(["plan", "--out"])
        .arg(&plain)
        .assert()
        .success();

    // A decision the saved plan does not hold cannot be added at apply: usage error.
    let out = w
        .home
        .offsync(["apply", "--delete"])
        .arg(&plain)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("--delete conflicts with plan file") && text.contains("plan --delete"),
        "{text}"
    );
    assert!(dir.join("old").exists(), "nothing changed");

    // `show` prints it as `plan` did, and checks it.
    let shown = stdout(
        w.home
            .offsync(["show"])
            .arg(&plain)
            .assert()
            .success()
            .get_output(),
    );
    assert!(
        shown.contains("- old  (target-only; deleted only with --delete)"),
        "{shown}"
    );
    let garbled = w.home.tmp.path().join("garbled.json");
    let bytes = std::fs::read(&plain).unwrap();
    let edited = String::from_utf8(bytes.clone())
        .unwrap()
        .replacen("\"old\"", "\"etc\"", 1)
        .into_bytes();
    for (name, content) in [
        ("edited", edited),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
    ] {
        std::fs::write(&garbled, &content).unwrap();
        let out = w.home.offsync(["show"]).arg(&garbled).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(64), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
        assert!(err.contains("garbled.json"), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: nothing printed");
        assert_eq!(
            std::fs::read(&garbled).unwrap(),
            content,
            "{name}: file untouched"
        );
    }

    // Decided at plan time: recorded, shown, applied without --delete, --yes or a terminal.
    w.home
        .offsync(["plan", "--delete", "--out"])
        .arg(&decided)
        .assert()
        .success();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&decided).unwrap()).unwrap();
    assert_eq!(json["delete"], true, "{json}");
    let shown = stdout(
        w.home
            .offsync(["show"])
            .arg(&decided)
            .assert()
            .success()
            .get_output(),
    );
    assert!(
        shown.contains("decided: --delete")
            && shown.contains("- old  (target-only; deleted on apply)"),
        "{shown}"
    );
    let out = w.home.offsync(["apply"]).arg(&decided).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !dir.join("old").exists(),
        "deleted as the plan decided:\n{text}"
    );
    let rec = last_record(&w.home, "t1");
    assert_eq!(rec["status"], "ok", "{rec}");
    assert_eq!(rec["files_deleted"], serde_json::json!(["old"]), "{rec}");
    assert_eq!(rec["plan_digest"], json["digest"], "{rec}");

    // Nothing left to do: `apply --json` still has a row for the target.
    let out = w
        .home
        .offsync(["apply", "--yes", "--json"])
        .output()
        .unwrap();
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", all_output(&out)));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["target"], "t1");
    assert_eq!(rows[0]["status"], "unchanged", "{rows}");
}

/// `offsync apply` on a pseudo-terminal (`script`) that answers `n` to any question (bounded
/// by `timeout`, so a question that is not answered fails the test instead of hanging it).
/// Returns the exit code and everything printed.
fn apply_on_a_terminal(h: &Home) -> (Option<i32>, String) {
    use std::io::Write as _;
    let bin = assert_cmd::cargo::cargo_bin("offsync");
    let mut child = h
        .tool("script")
        .env("OFFSYNC_HOME", &h.home)
        .args([
            "-qec",
            &format!("timeout --foreground 30 '{}' apply", bin.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n").unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), all_output(&out))
}

#[test]
fn refusals_come_before_the_question_which_names_only_targets_that_change() {
    if !skip_unless_tools() {
        return;
    }
    let w = synced(2);
    let t1 = w.targets[0].sync_dir();
    std::fs::write(t1.join("old"), b"old").unwrap();
    let before = snapshot(&t1);

    // Only t1 differs, and apply would refuse it: reported, no question, nothing changed.
    let (code, text) = apply_on_a_terminal(&w.home);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("REFUSED     t1") && text.contains("--delete"),
        "{text}"
    );
    assert!(!text.contains("Apply this plan"), "no question:\n{text}");
    assert_eq!(snapshot(&t1), before);
    assert_eq!(last_record(&w.home, "t1")["error_kind"], "needs_delete");

    // With a change for both, t1's refusal comes first and the question names t2 only.
    w.write("a", b"a2");
    let (code, text) = apply_on_a_terminal(&w.home);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cancelled; nothing was changed"), "{text}");
    let refused = text
        .find("REFUSED     t1")
        .unwrap_or_else(|| panic!("{text}"));
    let asked = text
        .find("Apply this plan to t2?")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(refused < asked, "{text}");
    assert_eq!(snapshot(&t1), before, "nothing changed (not answered)");
}

#[test]
fn extra_keep_and_delete_on_real_targets() {
    if !skip_unless_tools() {
        return;
    }
    let w = synced(3);
    // t2 is linked with --no-delete (rrsync -no-del), as `link --no-delete` writes it.
    let ak_path = w.targets[1].authorized_keys();
    let ak = std::fs::read_to_string(&ak_path).unwrap();
    std::fs::write(&ak_path, ak.replacen(" -wo ", " -wo -no-del ", 1)).unwrap();
    edit_target(&w.home, "t2", |t| t.no_delete = true);
    edit_target(&w.home, "t1", |t| t.extra = Some(ExtraPolicy::Keep));
    edit_target(&w.home, "t2", |t| t.extra = Some(ExtraPolicy::Keep));
    edit_target(&w.home, "t3", |t| t.extra = Some(ExtraPolicy::Delete));
    for t in &w.targets {
        std::fs::write(t.sync_dir().join("extra"), b"theirs").unwrap();
    }
    w.write("a", b"a2");
    w.write("d", b"d");

    let out = w.home.offsync(["plan"]).output().unwrap();
    let plan = all_output(&out);
    assert!(plan.contains("- extra  (extra, kept)"), "{plan}");
    assert!(
        plan.contains("- extra  (target-only; deleted on apply)"),
        "{plan}"
    );
    let listed = w.home.offsync(["target", "list"]).output().unwrap();
    let listed = stdout(&listed);
    assert!(
        listed.contains("EXTRA") && listed.contains("keep") && listed.contains("delete"),
        "{listed}"
    );

    let out = w.home.offsync(["apply", "--yes"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let mut with_extra = snapshot(&w.source);
    with_extra.push((b"extra".to_vec(), b"theirs".to_vec()));
    with_extra.sort();
    for i in [0, 1] {
        assert_eq!(
            snapshot_sans_marker(&w.targets[i].sync_dir()),
            with_extra,
            "t{}: synced, extra kept:\n{text}",
            i + 1
        );
    }
    assert_eq!(
        snapshot_sans_marker(&w.targets[2].sync_dir()),
        snapshot(&w.source),
        "t3: extra deleted:\n{text}"
    );
    assert_eq!(
        last_record(&w.home, "t3")["files_deleted"],
        serde_json::json!(["extra"])
    );

    // verify passes and says what was kept.
    let out = w.home.offsync(["verify"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok       t1") && text.contains("1 extra path(s) kept"),
        "{text}"
    );
    assert!(
        text.contains("ok       t2") && text.contains("ok       t3"),
        "{text}"
    );

    // `extra: delete` on the --no-delete target is refused as bad input naming the fix.
    edit_target(&w.home, "t2", |t| t.extra = Some(ExtraPolicy::Delete));
    let out = w.home.offsync(["plan"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("--no-delete") && text.contains("extra: keep"),
        "{text}"
    );
}
