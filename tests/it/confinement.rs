//! Every connecting command proves, on its own SSH connection, that the key is still confined
//! by `rrsync -wo DIR` — and that DIR is still the directory it was — before it lists, writes
//! or deletes anything.
//!
//! The target side is tampered with after `link`: (a) the key's line lost its forced command,
//! (b) the forced command now points at another directory. In each case the tampered target
//! `t1` is refused with `not confined` (or `marker` for (b)), nothing changes in any directory
//! involved, and the healthy `t2` proceeds (listed by plan, applied by apply, exit 1 overall).
//!
//! SAFETY: with a plain key line a session lands in the login's real HOME, so against such a
//! line these tests run only dry runs (`plan`, `plan --json`, `verify`), never apply. Applies
//! are tested against `command="cd SCRATCH && exec $SSH_ORIGINAL_COMMAND"`: an unrestricted
//! rsync, but in a throwaway directory.

use crate::util::{
    KillMatchingOnDrop, Sshd, World, all_output, home_needle, last_record, listing, markers, oplog,
    skip_unless_tools, snapshot, snapshot_sans_marker,
};
use std::path::{Path, PathBuf};

/// The target object named `name` in a plan (or verify) JSON.
fn target<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets in {plan}"))
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {plan}"))
}

fn error_of(plan: &serde_json::Value, name: &str) -> String {
    target(plan, name)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", all_output(out)))
}

/// Replace the whole authorized_keys of `sshd` with `line`.
fn set_key_line(sshd: &Sshd, line: &str) {
    std::fs::write(sshd.authorized_keys(), format!("{line}\n")).unwrap();
}

/// A scratch directory next to the target's sync dir, holding a canary and a would-be
/// target-only file.
fn scratch(sshd: &Sshd, name: &str) -> PathBuf {
    let d = sshd.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("canary"), b"untouched").unwrap();
    std::fs::write(d.join("delete-me-if-you-dare"), b"still here").unwrap();
    d
}

fn source_files(w: &World) {
    w.write("index.html", b"<h1>hi</h1>");
    w.write("assets/app.js", b"console.log(1)");
    w.write("assets/deep/x.css", b"body{}");
}

/// The healthy target t2 was applied: it equals the source (markers aside) and logged `ok`.
fn assert_t2_applied(w: &World, log_before: usize) {
    assert_eq!(
        snapshot_sans_marker(&w.targets[1].sync_dir()),
        snapshot(&w.source),
        "t2 was applied"
    );
    let recs: Vec<_> = oplog(&w.home).into_iter().skip(log_before).collect();
    assert!(
        recs.iter()
            .any(|r| r["target"] == "t2" && r["status"] == "ok"),
        "t2 logged ok: {recs:?}"
    );
}

/// t1's newest apply record is a refusal or failure whose error says why.
fn assert_t1_refused(w: &World, log_before: usize, needles: &[&str]) {
    let recs: Vec<_> = oplog(&w.home).into_iter().skip(log_before).collect();
    let r = recs
        .iter()
        .rev()
        .find(|r| r["target"] == "t1")
        .unwrap_or_else(|| panic!("no new record for t1: {recs:?}"));
    assert!(
        r["status"] == "refused" || r["status"] == "failed",
        "t1 must be refused: {r}"
    );
    let err = r["error"].as_str().unwrap_or_default();
    assert!(
        needles.iter().any(|n| err.contains(n)),
        "t1's error should contain one of {needles:?}: {r}"
    );
    assert_eq!(r["files_changed_count"], 0, "{r}");
    assert_eq!(r["files_deleted_count"], 0, "{r}");
}

/// (a) A plain key line (no forced command): dry runs only — see the module's SAFETY note.
#[test]
fn a_key_without_its_forced_command_is_not_confined_for_plan_and_verify() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    let _guard = KillMatchingOnDrop(home_needle(&w.home));
    source_files(&w);
    w.home.offsync(["apply", "--yes"]).assert().success();
    w.write("new-file", b"new");
    let plain = format!("ssh-ed25519 {} offsync-hostile-test", w.home.pub_blob());
    set_key_line(&w.targets[0], &plain);
    let before: Vec<_> = w.targets.iter().map(|t| listing(&t.sync_dir())).collect();

    eprintln!("plan --json with t1's key unrestricted");
    let out = w.home.offsync(["plan", "--json"]).output().unwrap();
    let plan = json_of(&out);
    let err = error_of(&plan, "t1");
    assert!(
        err.contains("not confined") && err.contains("offsync link"),
        "t1 must be refused as not confined, with the fix (`offsync link`); got error {err:?} \
         and {} added / {} missing",
        target(&plan, "t1")["summary"]["added"],
        target(&plan, "t1")["summary"]["missing"]
    );
    for cat in ["added", "modified", "metadata", "missing"] {
        let n = target(&plan, "t1")[cat].as_array().map_or(0, Vec::len);
        assert_eq!(n, 0, "nothing is listed for an unconfined target ({cat})");
    }
    assert_eq!(error_of(&plan, "t2"), "", "t2 is healthy: {plan}");
    assert_eq!(target(&plan, "t2")["summary"]["added"], 1, "{plan}");
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));

    eprintln!("plan (text)");
    let out = w.home.offsync(["plan"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not confined") && text.contains("offsync link"),
        "{text}"
    );
    assert!(text.contains("t2") && text.contains("new-file"), "{text}");

    eprintln!("verify --json");
    let out = w.home.offsync(["verify", "--json"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let v = json_of(&out);
    assert!(error_of(&v, "t1").contains("not confined"), "{v}");
    assert_eq!(error_of(&v, "t2"), "", "{v}");

    eprintln!("verify (text)");
    let out = w.home.offsync(["verify"]).output().unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not confined"), "{text}");

    let after: Vec<_> = w.targets.iter().map(|t| listing(&t.sync_dir())).collect();
    assert_eq!(after, before, "dry runs changed nothing");
}

/// An authorized_keys line for the controller key that runs any rsync, in `dir`.
fn unrestricted_line(w: &World, dir: &Path) -> String {
    format!(
        "command=\"cd '{}' && exec $SSH_ORIGINAL_COMMAND\",no-pty ssh-ed25519 {} offsync-hostile-test",
        dir.display(),
        w.home.pub_blob()
    )
}

/// (a) An unrestricted rsync (in a harmless scratch directory): `apply --yes --delete`
/// refuses t1 before writing or deleting anything; t2 is applied.
#[test]
fn an_unrestricted_command_is_refused_by_apply_delete() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    let _guard = KillMatchingOnDrop(home_needle(&w.home));
    source_files(&w);
    let elsewhere = scratch(&w.targets[0], "elsewhere");
    set_key_line(&w.targets[0], &unrestricted_line(&w, &elsewhere));
    let scratch_before = listing(&elsewhere);
    let sync_before = listing(&w.targets[0].sync_dir());

    eprintln!("apply --yes --delete with t1 unrestricted");
    let log_before = oplog(&w.home).len();
    let out = w
        .home
        .offsync(["apply", "--yes", "--delete"])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(
        listing(&elsewhere),
        scratch_before,
        "the unconfined directory is untouched:\n{text}"
    );
    assert_eq!(
        listing(&w.targets[0].sync_dir()),
        sync_before,
        "t1's sync dir untouched"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not confined") && text.contains("offsync link"),
        "{text}"
    );
    assert_t1_refused(&w, log_before, &["not confined"]);
    assert_t2_applied(&w, log_before);
}

/// (a) The same through a plan saved while t1 was healthy: `apply PLANFILE` proves
/// confinement before it compares, lists or writes; t1 is refused, t2 applied.
#[test]
fn an_unrestricted_command_is_refused_by_apply_of_a_saved_plan() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    let _guard = KillMatchingOnDrop(home_needle(&w.home));
    source_files(&w);
    let plan_file = w.home.tmp.path().join("saved-plan.json");
    w.home
        .offsync(["plan", "--out"])
        .arg(&plan_file)
        .assert()
        .success();
    let elsewhere = scratch(&w.targets[0], "elsewhere");
    set_key_line(&w.targets[0], &unrestricted_line(&w, &elsewhere));
    let scratch_before = listing(&elsewhere);
    let sync_before = listing(&w.targets[0].sync_dir());

    eprintln!("apply --yes PLANFILE with t1 unrestricted");
    let log_before = oplog(&w.home).len();
    let out = w
        .home
        .offsync(["apply", "--yes"])
        .arg(&plan_file)
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(
        listing(&elsewhere),
        scratch_before,
        "the unconfined directory is untouched:\n{text}"
    );
    assert_eq!(
        listing(&w.targets[0].sync_dir()),
        sync_before,
        "t1's sync dir untouched"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not confined"), "{text}");
    assert_t1_refused(&w, log_before, &["not confined"]);
    assert_t2_applied(&w, log_before);
}

/// The forced command's directory, as it appears in the authorized_keys line.
fn retarget(sshd: &Sshd, to: &Path) {
    let ak = std::fs::read_to_string(sshd.authorized_keys()).unwrap();
    let from = sshd.sync_dir().display().to_string();
    assert!(ak.contains(&from), "the line names the sync dir: {ak}");
    std::fs::write(
        sshd.authorized_keys(),
        ak.replace(&from, &to.display().to_string()),
    )
    .unwrap();
}

/// (b) The forced command still runs rrsync, but now for another (empty) directory: only the
/// marker written on the first apply tells. plan, verify, apply and apply of a saved plan all
/// refuse t1 and change nothing in either directory; t2 proceeds.
#[test]
fn a_forced_command_pointing_elsewhere_is_refused_by_the_marker() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    let _guard = KillMatchingOnDrop(home_needle(&w.home));
    source_files(&w);
    w.home.offsync(["apply", "--yes"]).assert().success();
    w.write("new-file", b"new");
    let plan_file = w.home.tmp.path().join("saved-plan.json");
    w.home
        .offsync(["plan", "--out"])
        .arg(&plan_file)
        .assert()
        .success();

    let other = w.targets[0].dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    retarget(&w.targets[0], &other);
    let sync_before = listing(&w.targets[0].sync_dir());
    let check_untouched = |what: &str| {
        assert!(
            listing(&other).is_empty(),
            "{what}: the other directory stays empty: {:?}",
            paths(&other)
        );
        assert_eq!(
            listing(&w.targets[0].sync_dir()),
            sync_before,
            "{what}: t1's real directory untouched"
        );
    };
    let why = ["not confined", "marker"];

    eprintln!("plan --json with t1 pointing elsewhere");
    let out = w.home.offsync(["plan", "--json"]).output().unwrap();
    let plan = json_of(&out);
    let err = error_of(&plan, "t1");
    assert!(
        why.iter().any(|n| err.contains(n)),
        "t1 must be refused (marker missing); got error {err:?}, summary {}",
        target(&plan, "t1")["summary"]
    );
    assert_eq!(error_of(&plan, "t2"), "", "{plan}");
    assert_eq!(target(&plan, "t2")["summary"]["added"], 1, "{plan}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(".offsync-marker"),
        "the marker never appears in plans"
    );
    assert_eq!(out.status.code(), Some(1));
    check_untouched("plan");

    eprintln!("verify --json");
    let out = w.home.offsync(["verify", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let v = json_of(&out);
    assert!(why.iter().any(|n| error_of(&v, "t1").contains(n)), "{v}");
    check_untouched("verify");

    eprintln!("apply --yes PLANFILE");
    let log_before = oplog(&w.home).len();
    let out = w
        .home
        .offsync(["apply", "--yes"])
        .arg(&plan_file)
        .output()
        .unwrap();
    check_untouched("apply PLANFILE");
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert_t1_refused(&w, log_before, &why);
    assert_t2_applied(&w, log_before);

    eprintln!("apply --yes --delete");
    w.write("later.txt", b"later");
    let log_before = oplog(&w.home).len();
    let out = w
        .home
        .offsync(["apply", "--yes", "--delete"])
        .output()
        .unwrap();
    check_untouched("apply --delete");
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert_t1_refused(&w, log_before, &why);
    assert_t2_applied(&w, log_before);

    // The marker: one per target, never listed, never deleted.
    assert_eq!(markers(&w.targets[1].sync_dir()).len(), 1);
    assert_eq!(markers(&w.targets[0].sync_dir()).len(), 1);
    let rec = last_record(&w.home, "t2");
    assert!(
        !rec.to_string().contains(".offsync-marker"),
        "the marker is never logged: {rec}"
    );
}

fn paths(d: &Path) -> Vec<String> {
    listing(d)
        .into_iter()
        .map(|(p, _, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}
