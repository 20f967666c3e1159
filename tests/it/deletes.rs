//! `apply --delete` against hostile target-only trees, and the mass-delete guard.
//!
//! Target-only trees are created directly in a target's directory (the tests run as the user
//! the target logs in as). Every case asserts that ONE `apply --yes --delete` leaves the target
//! equal to the source, exits 0, and logs in `files_deleted` exactly the paths that went
//! (directories without a trailing slash). The original bug: a nested `old/sub/f1` + `old/f2`
//! made apply fail with rsync exit 24 after deleting part of it, logging `files_deleted: []`.
//!
//! Sources are padded with enough files that no case here trips the default mass-delete guard
//! (more than half of a target's paths), except the cases that test the guard.

use crate::util::{
    World, all_output, last_record, listing, logged_paths, markers, oplog, paths_below, set_config,
    skip_unless_tools, snapshot, snapshot_sans_marker, write_bytes,
};
use std::collections::BTreeSet;
use std::path::Path;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `n` small files below `pad/` in the source.
fn pad_source(w: &World, n: usize) {
    for i in 0..n {
        w.write(&format!("pad/p{i:04}"), format!("pad {i}").as_bytes());
    }
}

/// Paths on the target that are not in the source (markers aside): what `--delete` must remove
/// when no type changes and no excludes are involved.
fn target_only(w: &World, target: &Path) -> BTreeSet<String> {
    let src = paths_below(&w.source);
    paths_below(target)
        .into_iter()
        .filter(|p| !src.contains(p) && !crate::util::is_marker(p.as_bytes()))
        .collect()
}

/// One `apply --yes --delete` must exit 0; returns its output text.
fn apply_delete_once(w: &World) -> String {
    let out = w
        .home
        .offsync(["apply", "--yes", "--delete"])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "one apply --yes --delete must finish the job:\n{text}"
    );
    text
}

fn assert_equal_to_source(w: &World) {
    let expected = snapshot(&w.source);
    for t in &w.targets {
        let got = snapshot_sans_marker(&t.sync_dir());
        if got != expected {
            let g: BTreeSet<_> = got.iter().map(|(p, _)| p.clone()).collect();
            let e: BTreeSet<_> = expected.iter().map(|(p, _)| p.clone()).collect();
            let extra: Vec<_> = g
                .difference(&e)
                .take(10)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let missing: Vec<_> = e
                .difference(&g)
                .take(10)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            panic!(
                "target port {} differs from the source; still there: {extra:?}; missing: \
                 {missing:?}",
                t.port
            );
        }
    }
}

fn assert_deleted(w: &World, target: &str, want: &BTreeSet<String>) {
    let rec = last_record(&w.home, target);
    assert_eq!(rec["status"], "ok", "{rec}");
    let got = logged_paths(&w.home, &rec, "files_deleted");
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{target}: files_deleted is not exactly the deleted paths ({} logged, {} deleted); \
         logged but not deleted: {:?}; deleted but not logged: {:?}",
        got.len(),
        want.len(),
        extra.iter().take(10).collect::<Vec<_>>(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
}

#[test]
fn nested_target_only_tree_goes_in_one_apply_and_is_logged() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    pad_source(&w, 20);
    w.home.offsync(["apply", "--yes"]).assert().success();
    for t in &w.targets {
        write_bytes(&t.sync_dir(), b"old/sub/f1", b"1");
        write_bytes(&t.sync_dir(), b"old/f2", b"2");
    }
    let want = set(&["old", "old/sub", "old/sub/f1", "old/f2"]);
    assert_eq!(target_only(&w, &w.targets[0].sync_dir()), want);
    eprintln!("apply --yes --delete with old/sub/f1 + old/f2 on both targets");
    apply_delete_once(&w);
    assert_equal_to_source(&w);
    assert_deleted(&w, "t1", &want);
    assert_deleted(&w, "t2", &want);
    w.home.offsync(["verify"]).assert().code(0);
}

#[test]
fn fifty_five_levels_and_a_thousand_entries_go_in_one_apply() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    // 1,500 source files keep ~1,070 deletions under half of the target's paths.
    pad_source(&w, 1500);
    w.home.offsync(["apply", "--yes"]).assert().success();
    let dir = w.targets[0].sync_dir();
    let mut deep = String::from("deep");
    for level in 1..=55 {
        deep.push_str(&format!("/l{level}"));
    }
    write_bytes(&dir, format!("{deep}/leaf.txt").as_bytes(), b"leaf");
    write_bytes(&dir, b"deep/l1/side.txt", b"side");
    for i in 0..1000 {
        write_bytes(
            &dir,
            format!("wide/w{:02}/f{i:04}", i % 10).as_bytes(),
            format!("wide {i}").as_bytes(),
        );
    }
    let want = target_only(&w, &dir);
    assert!(want.len() >= 1060, "{}", want.len());
    eprintln!(
        "apply --yes --delete with {} target-only entries, 56 levels deep",
        want.len()
    );
    let t0 = std::time::Instant::now();
    apply_delete_once(&w);
    eprintln!("apply took {:.1} s", t0.elapsed().as_secs_f64());
    assert_equal_to_source(&w);
    assert_deleted(&w, "t1", &want);
}

#[test]
fn a_directory_replaced_by_a_file_and_a_file_by_a_directory() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    pad_source(&w, 30);
    w.write("a/inner.txt", b"inner");
    w.write("a/deeper/x", b"x");
    w.write("b", b"file b");
    w.home.offsync(["apply", "--yes"]).assert().success();
    std::fs::remove_dir_all(w.source.join("a")).unwrap();
    w.write("a", b"now a file");
    std::fs::remove_file(w.source.join("b")).unwrap();
    w.write("b/inner.txt", b"now a dir");
    eprintln!("apply --yes --delete after swapping a dir and a file");
    apply_delete_once(&w);
    assert_equal_to_source(&w);
    // The replaced paths themselves may or may not count as deleted; their old contents must.
    let required = set(&["a/inner.txt", "a/deeper", "a/deeper/x"]);
    let allowed = set(&["a/inner.txt", "a/deeper", "a/deeper/x", "a", "b"]);
    for t in ["t1", "t2"] {
        let rec = last_record(&w.home, t);
        assert_eq!(rec["status"], "ok", "{rec}");
        let got = logged_paths(&w.home, &rec, "files_deleted");
        assert!(
            required.is_subset(&got) && got.is_subset(&allowed),
            "{t}: files_deleted {got:?}, want {required:?} (+ optionally a, b)"
        );
    }
    w.home.offsync(["verify"]).assert().code(0);
}

#[test]
fn awkward_target_only_names_are_deleted_exactly() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    pad_source(&w, 40);
    w.home.offsync(["apply", "--yes"]).assert().success();
    let dir = w.targets[0].sync_dir();
    let names: [&[u8]; 10] = [
        b"-leading-dash",
        b"--delete-everything",
        b"new\nline",
        b"tab\tname",
        b"dir\nwith newline/-f",
        b"dir\nwith newline/tab\tfile",
        b"-dashdir/--x",
        b" leading space",
        b"*deleting   fake",
        b"trailing newline\n",
    ];
    for (i, n) in names.iter().enumerate() {
        write_bytes(&dir, n, format!("junk {i}").as_bytes());
    }
    let want = target_only(&w, &dir);
    assert_eq!(want.len(), 12, "{want:?}");
    eprintln!("apply --yes --delete with {} awkward names", want.len());
    apply_delete_once(&w);
    assert_equal_to_source(&w);
    assert_deleted(&w, "t1", &want);
}

#[test]
fn excluded_files_inside_target_only_dirs_stay_and_nothing_fails_forever() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    set_config(&w.home, "exclude", "['*.keep']");
    pad_source(&w, 40);
    w.home.offsync(["apply", "--yes"]).assert().success();
    let dir = w.targets[0].sync_dir();
    for (p, c) in [
        ("gone/a.txt", "a"),
        ("gone/b.keep", "b"),
        ("gone/sub/c.txt", "c"),
        ("gone/sub/d.keep", "d"),
        ("gone2/x.txt", "x"),
        ("gone3/only.keep", "o"),
    ] {
        write_bytes(&dir, p.as_bytes(), c.as_bytes());
    }
    eprintln!("apply --yes --delete with excluded files inside target-only dirs");
    apply_delete_once(&w);
    let mut expected: BTreeSet<String> = paths_below(&w.source);
    expected.extend(set(&[
        "gone",
        "gone/b.keep",
        "gone/sub",
        "gone/sub/d.keep",
        "gone3",
        "gone3/only.keep",
    ]));
    let got: BTreeSet<String> = paths_below(&dir)
        .into_iter()
        .filter(|p| !crate::util::is_marker(p.as_bytes()))
        .collect();
    assert_eq!(
        got, expected,
        "excluded files (and their dirs) stay, the rest goes"
    );
    assert_eq!(std::fs::read(dir.join("gone/sub/d.keep")).unwrap(), b"d");
    assert_deleted(
        &w,
        "t1",
        &set(&["gone/a.txt", "gone/sub/c.txt", "gone2", "gone2/x.txt"]),
    );

    // The directories kept for their excluded files are not a pending change forever.
    let before = listing(&dir);
    eprintln!("second apply --yes --delete: nothing left to do");
    apply_delete_once(&w);
    assert_eq!(listing(&dir), before, "the second apply changed nothing");
    w.home
        .offsync(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
    w.home.offsync(["verify"]).assert().code(0);
}

/// The `warnings` of one target in `plan --json` (absent counts as none).
fn plan_warnings(plan: &serde_json::Value, target: &str) -> Vec<String> {
    let t = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == target)
        .unwrap_or_else(|| panic!("{target} not in plan: {plan}"));
    t["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn plan_json(w: &World, extra: &[&str]) -> serde_json::Value {
    let out = w
        .home
        .offsync(["plan", "--json"])
        .args(extra)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --json {extra:?}: {e}\n{}", all_output(&out)))
}

#[test]
fn an_empty_source_with_delete_true_is_refused_on_every_target() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    for f in ["f1", "f2", "f3"] {
        w.write(f, f.as_bytes());
    }
    w.home.offsync(["apply", "--yes"]).assert().success();
    set_config(&w.home, "delete", "true");
    for f in ["f1", "f2", "f3"] {
        std::fs::remove_file(w.source.join(f)).unwrap();
    }
    let before: Vec<_> = w.targets.iter().map(|t| listing(&t.sync_dir())).collect();

    eprintln!("apply --yes with delete: true and an empty source");
    let log_before = oplog(&w.home).len();
    let out = w.home.offsync(["apply", "--yes"]).output().unwrap();
    let text = all_output(&out);
    let after: Vec<_> = w.targets.iter().map(|t| listing(&t.sync_dir())).collect();
    assert_eq!(after, before, "nothing was deleted anywhere:\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("--max-delete"), "{text}");
    let records: Vec<_> = oplog(&w.home).into_iter().skip(log_before).collect();
    for t in ["t1", "t2"] {
        let r = records
            .iter()
            .find(|r| r["target"] == t)
            .unwrap_or_else(|| panic!("no record for {t}"));
        assert_eq!(r["status"], "refused", "{r}");
        let err = r["error"].as_str().unwrap_or_default();
        assert!(err.contains("--max-delete") && err.contains('3'), "{r}");
        assert_eq!(r["files_deleted_count"], 0, "{r}");
        assert_eq!(r["files_deleted"], serde_json::json!([]), "{r}");
    }

    // plan warns before apply asks anything (checked second: the refusal matters more).
    let out = w.home.offsync(["plan"]).output().unwrap();
    let text = all_output(&out);
    assert!(
        text.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("warning") && l.contains("max-delete")
        }),
        "plan shows a max-delete warning:\n{text}"
    );
    let plan = plan_json(&w, &[]);
    for t in ["t1", "t2"] {
        let warnings = plan_warnings(&plan, t);
        assert!(
            warnings.iter().any(|s| s.contains("max-delete")),
            "{t}: plan --json warnings {warnings:?}"
        );
    }

    eprintln!("apply --yes --max-delete 3");
    w.home
        .offsync(["apply", "--yes", "--max-delete", "3"])
        .assert()
        .code(0);
    for t in &w.targets {
        assert!(snapshot_sans_marker(&t.sync_dir()).is_empty());
    }
    assert_deleted(&w, "t1", &set(&["f1", "f2", "f3"]));
    assert_deleted(&w, "t2", &set(&["f1", "f2", "f3"]));
}

#[test]
fn deleting_more_than_half_of_a_target_is_refused_unless_max_delete_allows_it() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    for f in ["a", "b", "c", "d"] {
        w.write(f, f.as_bytes());
    }
    w.home.offsync(["apply", "--yes"]).assert().success();
    // t1: 6 target-only of 10 (11 with a marker) paths; t2: 1 of 5 (6).
    for i in 1..=6 {
        write_bytes(&w.targets[0].sync_dir(), format!("x{i}").as_bytes(), b"x");
    }
    write_bytes(&w.targets[1].sync_dir(), b"y1", b"y");

    let t1_before = listing(&w.targets[0].sync_dir());
    for extra in [&[][..], &["--max-delete", "5"][..]] {
        eprintln!("apply --yes --delete {extra:?}: t1 refused, t2 applied");
        let out = w
            .home
            .offsync(["apply", "--yes", "--delete"])
            .args(extra)
            .output()
            .unwrap();
        let text = all_output(&out);
        assert_eq!(
            listing(&w.targets[0].sync_dir()),
            t1_before,
            "t1 untouched:\n{text}"
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        let r = last_record(&w.home, "t1");
        assert_eq!(r["status"], "refused", "{r}");
        let err = r["error"].as_str().unwrap_or_default();
        assert!(err.contains("--max-delete") && err.contains('6'), "{r}");
    }
    assert!(!w.targets[1].sync_dir().join("y1").exists(), "t2 proceeded");
    assert_equal_to_source_one(&w, 1);

    // plan warns for t1 only (checked second: the refusal matters more); t2 gets one
    // target-only path again (1 of 5), which is no mass delete.
    write_bytes(&w.targets[1].sync_dir(), b"y2", b"y");
    let plan = plan_json(&w, &[]);
    assert!(
        plan_warnings(&plan, "t1")
            .iter()
            .any(|s| s.contains("max-delete")),
        "t1 warned: {plan}"
    );
    assert!(
        plan_warnings(&plan, "t2").is_empty(),
        "t2 not warned: {plan}"
    );
    let plan = plan_json(&w, &["--max-delete", "6"]);
    assert!(
        plan_warnings(&plan, "t1").is_empty(),
        "--max-delete 6 covers t1: {plan}"
    );

    eprintln!("apply --yes --delete --max-delete 6");
    w.home
        .offsync(["apply", "--yes", "--delete", "--max-delete", "6"])
        .assert()
        .code(0);
    assert_equal_to_source(&w);
    assert_deleted(&w, "t1", &set(&["x1", "x2", "x3", "x4", "x5", "x6"]));
}

fn assert_equal_to_source_one(w: &World, i: usize) {
    assert_eq!(
        snapshot_sans_marker(&w.targets[i].sync_dir()),
        snapshot(&w.source),
        "target t{} equals the source",
        i + 1
    );
}

#[test]
fn max_delete_in_config_refuses_more_deletions() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    set_config(&w.home, "max_delete", "3");
    pad_source(&w, 20);
    w.home.offsync(["apply", "--yes"]).assert().success();
    let dir = w.targets[0].sync_dir();
    for i in 1..=5 {
        write_bytes(&dir, format!("old{i}").as_bytes(), b"old");
    }
    let before = listing(&dir);
    eprintln!("apply --yes --delete with max_delete: 3 and 5 target-only files");
    let out = w
        .home
        .offsync(["apply", "--yes", "--delete"])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(listing(&dir), before, "nothing deleted:\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("--max-delete"), "{text}");
    let r = last_record(&w.home, "t1");
    assert_eq!(r["status"], "refused", "{r}");
    let err = r["error"].as_str().unwrap_or_default();
    assert!(err.contains("--max-delete") && err.contains('5'), "{r}");

    eprintln!("apply --yes --delete --max-delete 5 overrides the config");
    w.home
        .offsync(["apply", "--yes", "--delete", "--max-delete", "5"])
        .assert()
        .code(0);
    assert_equal_to_source(&w);
    assert_deleted(&w, "t1", &set(&["old1", "old2", "old3", "old4", "old5"]));
    assert_eq!(markers(&dir).len(), 1, "the marker is never deleted");
}
