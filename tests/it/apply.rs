//! plan → apply → verify against two real loopback sshd targets with rrsync.

use crate::util::{World, skip_unless_tools, snapshot};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Awkward names: spaces, quotes, backslashes, leading dashes, newlines, tabs, non-UTF-8.
fn awkward_names() -> Vec<Vec<u8>> {
    vec![
        b"plain.txt".to_vec(),
        b"with space".to_vec(),
        b"-leading-dash".to_vec(),
        b"quote'single".to_vec(),
        b"quote\"double".to_vec(),
        b"back\\slash".to_vec(),
        b"back\\#012slash".to_vec(),
        b"new\nline".to_vec(),
        b"tab\tname".to_vec(),
        b"bad\xffbyte".to_vec(),
        b"*deleting   fake".to_vec(),
        b"dir with space/nested/file".to_vec(),
    ]
}

fn write_raw(root: &Path, rel: &[u8], content: &[u8]) {
    let p = root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

fn without(mut s: Vec<(Vec<u8>, Vec<u8>)>, excluded: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.retain(|(p, _)| !excluded.iter().any(|e| p.starts_with(e)));
    s
}

#[test]
fn first_apply_incremental_delete_and_verify() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    step_source_with_awkward_names_and_excludes(&w);
    step_plans_are_deterministic_and_agree_with_rsync_on_excludes(&w);
    step_first_apply_makes_both_targets_identical(&w);
    step_an_incremental_plan_lists_exactly_the_changes(&w);
    step_a_target_only_file_refuses_that_target_only(&w);
    step_delete_removes_exactly_the_listed_path(&w);
    step_verify_detects_a_file_changed_on_a_target(&w);
    step_every_apply_is_logged_once_per_target(&w);
}

/// Awkward names, a symlink, and an exclude list with a negation.
fn step_source_with_awkward_names_and_excludes(w: &World) {
    let h = &w.home;
    for (i, n) in awkward_names().iter().enumerate() {
        write_raw(&w.source, n, format!("content {i}").as_bytes());
    }
    std::os::unix::fs::symlink("plain.txt", w.source.join("link")).unwrap();
    write_raw(&w.source, b".git/HEAD", b"ref");
    write_raw(&w.source, b"build/out.o", b"obj");
    write_raw(&w.source, b"logs/a.log", b"log");
    write_raw(&w.source, b"logs/keep.log", b"keep");
    let mut cfg = std::fs::read_to_string(h.config()).unwrap();
    cfg = cfg.replacen(
        "targets:",
        "exclude:\n- build/\n- '*.log'\n- '!keep.log'\ntargets:",
        1,
    );
    std::fs::write(h.config(), cfg).unwrap();
}

/// Plans are deterministic and list every entry rsync sees as added on an empty target —
/// rsync (with our filter rules) and our walker agree on what is excluded.
fn step_plans_are_deterministic_and_agree_with_rsync_on_excludes(w: &World) {
    let h = &w.home;
    let p1 = h
        .offsync(["plan", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let p2 = h
        .offsync(["plan", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(p1, p2, "two plans of the same state are byte-identical");
    let plan = json(&p1);
    assert_eq!(plan["format"], "offsync-plan/1");
    let t1 = &plan["targets"][0];
    assert_eq!(t1["name"], "t1");
    assert_eq!(t1["summary"]["unchanged"], 0);
    let added: Vec<String> = t1["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(added.contains(&"logs/keep.log".to_string()));
    assert!(
        !added
            .iter()
            .any(|p| p.starts_with(".git") || p.starts_with("build") || p == "logs/a.log"),
        "{added:?}"
    );
    for e in t1["added"].as_array().unwrap() {
        if e["kind"] == "file" {
            assert!(
                e["size"].is_u64() && e["blake3"].is_string(),
                "rsync listed a path our walker excluded: {e}"
            );
        }
    }
    let bad = t1["added"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path_hex"].is_string())
        .unwrap();
    assert_eq!(bad["path_hex"], "626164ff62797465");
    h.offsync(["plan", "--detailed-exitcode"]).assert().code(2);
}

/// First apply: both targets become byte-identical to the source (minus excludes).
fn step_first_apply_makes_both_targets_identical(w: &World) {
    let h = &w.home;
    h.offsync(["apply", "--yes"]).assert().success();
    let expected = without(snapshot(&w.source), &[b".git", b"build", b"logs/a.log"]);
    for t in &w.targets {
        assert_eq!(snapshot(&t.sync_dir()), expected, "target {}", t.port);
    }
    h.offsync(["plan", "--detailed-exitcode"]).assert().code(0);
    h.offsync(["verify"]).assert().code(0);
}

/// An incremental change shows exactly the changed files.
fn step_an_incremental_plan_lists_exactly_the_changes(w: &World) {
    let h = &w.home;
    write_raw(&w.source, b"with space", b"changed!");
    write_raw(&w.source, b"brand new", b"new");
    let plan = json(
        &h.offsync(["plan", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    for t in plan["targets"].as_array().unwrap() {
        assert_eq!(t["summary"]["added"], 1);
        assert_eq!(t["summary"]["modified"], 1);
        assert_eq!(t["added"][0]["path"], "brand new");
        assert_eq!(t["modified"][0]["path"], "with space");
    }
}

/// A target-only file blocks apply on that target only; excluded target files never count.
fn step_a_target_only_file_refuses_that_target_only(w: &World) {
    let h = &w.home;
    std::fs::write(w.targets[1].sync_dir().join("target-only"), b"x").unwrap();
    std::fs::write(w.targets[1].sync_dir().join("debug.log"), b"excluded").unwrap();
    let out = h
        .offsync(["apply", "--yes"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("- target-only"), "{text}");
    assert!(!text.contains("debug.log"), "{text}");
    assert_eq!(
        std::fs::read(w.targets[0].sync_dir().join("with space")).unwrap(),
        b"changed!"
    );
    assert_eq!(
        std::fs::read(w.targets[1].sync_dir().join("with space")).unwrap(),
        b"content 1",
        "refused target untouched"
    );
}

/// `--delete` removes exactly the listed path; excluded paths stay.
fn step_delete_removes_exactly_the_listed_path(w: &World) {
    let h = &w.home;
    h.offsync(["apply", "--yes", "--delete"]).assert().success();
    assert!(!w.targets[1].sync_dir().join("target-only").exists());
    assert!(
        w.targets[1].sync_dir().join("debug.log").exists(),
        "excluded paths are never deleted"
    );
    assert_eq!(
        std::fs::read(w.targets[1].sync_dir().join("with space")).unwrap(),
        b"changed!"
    );
}

/// verify detects a file changed on a target, and names only that target.
fn step_verify_detects_a_file_changed_on_a_target(w: &World) {
    let h = &w.home;
    std::fs::write(w.targets[0].sync_dir().join("plain.txt"), b"tampered").unwrap();
    let out = h
        .offsync(["verify"])
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("DRIFTED  t1") && text.contains("~ plain.txt"),
        "{text}"
    );
    assert!(text.contains("ok       t2"), "{text}");
}

/// Every apply is logged, one JSON line per target (three applies, two targets).
fn step_every_apply_is_logged_once_per_target(w: &World) {
    let h = &w.home;
    let log = std::fs::read_to_string(h.home.join("operations.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == "refused" && l["target"] == "t2")
    );
    let last_t2 = lines.iter().rev().find(|l| l["target"] == "t2").unwrap();
    assert_eq!(last_t2["files_deleted"], serde_json::json!(["target-only"]));
    assert_eq!(last_t2["files_deleted_count"], 1);
    assert!(last_t2.get("paths_file").is_none(), "{last_t2}");
    assert_eq!(last_t2["operation"], "apply");
}

#[test]
fn stale_saved_plan_is_refused_without_transfer() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let h = &w.home;
    w.write("a.txt", b"one");
    let plan_file = h.tmp.path().join("plan.json");
    h.offsync(["plan", "--out"])
        .arg(&plan_file)
        .assert()
        .success();
    w.write("b.txt", b"two");
    let out = h
        .offsync(["apply", "--yes"])
        .arg(&plan_file)
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("stale") && err.contains("+  + b.txt"), "{err}");
    assert!(
        snapshot(&w.targets[0].sync_dir()).is_empty(),
        "nothing was transferred"
    );

    // A fresh saved plan applies exactly.
    h.offsync(["plan", "--out"])
        .arg(&plan_file)
        .assert()
        .success();
    h.offsync(["apply", "--yes"])
        .arg(&plan_file)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(w.targets[0].sync_dir().join("b.txt")).unwrap(),
        b"two"
    );

    // A tampered plan file is refused as bad input, before anything runs.
    let text = std::fs::read_to_string(&plan_file)
        .unwrap()
        .replace("b.txt", "c.txt");
    std::fs::write(&plan_file, text).unwrap();
    h.offsync(["apply", "--yes"])
        .arg(&plan_file)
        .assert()
        .code(64);
}

#[test]
fn apply_without_terminal_needs_yes() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a", b"a");
    w.home.offsync(["apply"]).assert().code(64);
    assert!(snapshot(&w.targets[0].sync_dir()).is_empty());
}

#[test]
fn plan_apply_verify_share_one_connection_per_target() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a", b"a");
    w.write("d/b", b"b");
    let count = || w.targets[0].log().matches("Accepted publickey").count();
    let before = count();
    w.home.offsync(["apply", "--yes"]).assert().success();
    assert_eq!(
        count() - before,
        1,
        "plan + transfer + verify ride on one ControlMaster"
    );
}

#[test]
fn a_second_apply_waits_for_the_lock() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a", b"a");
    std::fs::create_dir_all(&w.home.home).unwrap();
    let lock = w.home.home.join("apply.lock");
    // -o: the lock belongs to flock itself, so killing it releases the lock.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !lock.exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = w
        .home
        .offsync(["apply", "--yes"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("another offsync apply"), "{err}");
    assert!(snapshot(&w.targets[0].sync_dir()).is_empty());
    w.home.offsync(["apply", "--yes"]).assert().success();
}

#[test]
fn ctrl_c_logs_an_interrupted_record_and_the_next_apply_finishes() {
    if !skip_unless_tools() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let w = World::fast(1);
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let big = w.source.join("big.bin");
    let mut f = std::fs::File::create(&big).unwrap();
    for _ in 0..300 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    drop(f);
    let mut cmd = w.home.offsync_std();
    cmd.args(["apply", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    // Wait until the transfer has started (its file list is written), then Ctrl-C the group,
    // as a terminal would.
    let tmp = w.home.home.join("tmp");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let started = std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("apply-"))
            })
            .unwrap_or(false);
        if started || std::time::Instant::now() > end {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let status = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    let log = std::fs::read_to_string(w.home.home.join("operations.log")).unwrap();
    if code == Some(0) {
        // The transfer finished before the signal landed: nothing to check on this machine.
        eprintln!("apply finished before Ctrl-C; interruption not exercised");
        return;
    }
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("\"status\":\"interrupted\""), "{log}");
    w.home.offsync(["apply", "--yes"]).assert().success();
    assert_eq!(
        std::fs::metadata(w.targets[0].sync_dir().join("big.bin"))
            .unwrap()
            .len(),
        300 << 20
    );
}

#[test]
fn a_failing_target_does_not_stop_the_others() {
    if !skip_unless_tools() {
        return;
    }
    let mut w = World::fast(2);
    w.write("a", b"a");
    w.targets[0].stop();
    let out = w
        .home
        .offsync(["plan", "--json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let plan = json(&out);
    assert!(
        plan["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{plan}"
    );
    assert_eq!(plan["targets"][1]["summary"]["added"], 1);
    w.home.offsync(["apply", "--yes"]).assert().code(1);
    assert_eq!(
        std::fs::read(w.targets[1].sync_dir().join("a")).unwrap(),
        b"a"
    );
    let log = std::fs::read_to_string(w.home.home.join("operations.log")).unwrap();
    assert!(
        log.contains("\"target\":\"t1\"") && log.contains("\"status\":\"failed\""),
        "{log}"
    );
}

/// More than 100 changes, then more than 100 deletions: each record lists the first 100
/// paths, counts them all (`files_changed_count`, `files_deleted_count`), and names a private
/// paths file under `$OFFSYNC_HOME/log/` with every path (non-UTF-8 ones also as hex). The
/// typed reader (`offsync::oplog::read`) parses every line the binary wrote.
#[test]
fn more_than_a_hundred_paths_are_counted_and_listed_in_full_in_a_paths_file() {
    use crate::util::{last_record, logged_paths, mode, oplog};
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let mut names: Vec<Vec<u8>> = (0..150).map(|i| format!("f{i:03}").into_bytes()).collect();
    names.push(b"zz-bad\xffbyte".to_vec());
    for n in &names {
        write_raw(&w.source, n, b"x");
    }
    let lossy = |ns: &[Vec<u8>]| -> std::collections::BTreeSet<String> {
        ns.iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    };
    w.home.offsync(["apply", "--yes"]).assert().code(0);
    let rec = last_record(&w.home, "t1");
    assert_eq!(rec["status"], "ok", "{rec}");
    assert_eq!(rec["files_changed"].as_array().unwrap().len(), 100, "{rec}");
    assert_eq!(rec["files_changed_count"], 151, "{rec}");
    assert_eq!(rec["files_deleted_count"], 0, "{rec}");
    assert!(
        rec.get("files_changed_hex").is_none(),
        "not among the first 100: {rec}"
    );
    assert_eq!(logged_paths(&w.home, &rec, "files_changed"), lossy(&names));
    let rel = rec["paths_file"].as_str().unwrap();
    assert!(rel.starts_with("log/") && rel.ends_with(".json"), "{rel}");
    assert_eq!(mode(&w.home.home.join("log")) & 0o777, 0o700);
    assert_eq!(mode(&w.home.home.join(rel)) & 0o777, 0o600);
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.home.home.join(rel)).unwrap()).unwrap();
    assert_eq!(
        full["files_changed_hex"],
        serde_json::json!(["7a7a2d626164ff62797465"])
    );

    // Delete 120 of them (more than half: the guard wants --max-delete).
    for n in &names[..120] {
        std::fs::remove_file(w.source.join(std::ffi::OsStr::from_bytes(n))).unwrap();
    }
    w.home
        .offsync(["apply", "--yes", "--delete", "--max-delete", "120"])
        .assert()
        .code(0);
    let rec = last_record(&w.home, "t1");
    assert_eq!(rec["status"], "ok", "{rec}");
    assert_eq!(rec["files_deleted"].as_array().unwrap().len(), 100, "{rec}");
    assert_eq!(rec["files_deleted_count"], 120, "{rec}");
    assert_eq!(
        logged_paths(&w.home, &rec, "files_deleted"),
        lossy(&names[..120])
    );
    assert_ne!(
        rec["paths_file"].as_str().unwrap(),
        rel,
        "one paths file per apply"
    );

    // A small apply stays self-contained.
    write_raw(&w.source, b"one-more", b"x");
    w.home.offsync(["apply", "--yes"]).assert().code(0);
    let rec = last_record(&w.home, "t1");
    assert_eq!(
        rec["files_changed"],
        serde_json::json!(["one-more"]),
        "{rec}"
    );
    assert_eq!(rec["files_changed_count"], 1, "{rec}");
    assert!(rec.get("paths_file").is_none(), "{rec}");

    let log = w.home.home.join("operations.log");
    let typed = offsync::oplog::read(&log).unwrap();
    assert_eq!(typed.len(), oplog(&w.home).len());
    assert_eq!(typed.len(), 3);
    let full = offsync::oplog::read_paths(&w.home.home, &typed[1])
        .unwrap()
        .unwrap();
    assert_eq!(full.files_deleted.len(), 120);
    assert_eq!(mode(&log) & 0o777, 0o600);
}
