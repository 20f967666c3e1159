//! Issue 13, points 3 and 8: `-v`/`-vv`/`-q`, `apply --bwlimit`, `--exclude`/`--exclude-from`
//! for one run, and `apply -n`, against real sshd/rsync/rrsync targets (and moto for the
//! secret check).

use crate::mirror::{Backend, Mirror};
use crate::passes::RsyncLog;
use crate::util::{World, skip_unless_tools, snapshot, stderr, stdout};

fn names(dir: &std::path::Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, _)| String::from_utf8(p).unwrap())
        .filter(|p| !p.starts_with(".offsync-marker"))
        .collect()
}

#[test]
fn verbose_prints_argv_and_phases_quiet_prints_nothing() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a.txt", b"a");
    let out = w.home.offsync(["apply", "--yes", "-v"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let runs: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("offsync: run["))
        .collect();
    assert!(
        runs.iter().any(|l| l.contains("]: ssh ")),
        "the ssh master's argv is shown: {err}"
    );
    assert!(
        runs.iter()
            .any(|l| l.contains("]: rsync ") && l.contains("--out-format=")),
        "{err}"
    );
    assert!(runs.iter().any(|l| l.contains(": exit 0 after ")), "{err}");
    for phase in [
        "phase: hashing the source: ",
        "phase: connecting: ",
        "phase: planning t1: ",
        "phase: transfer t1: ",
        "phase: verification t1: ",
    ] {
        assert!(err.contains(phase), "{phase} in {err}");
    }
    assert_eq!(names(&w.sshd().sync_dir()), ["a.txt"]);

    // The global flag goes before the subcommand too; -q leaves stdout alone.
    w.write("b.txt", b"b");
    let out = w.home.offsync(["-q", "apply", "--yes"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stderr(&out), "", "-q: nothing on stderr on success");
    assert!(stdout(&out).contains("t1"), "{}", stdout(&out));
    let out = w.home.offsync(["-q", "verify", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "offsync-plan/1");

    // -q with -v is a usage error.
    for args in [["-q", "plan", "-v"], ["plan", "-v", "--quiet"]] {
        let out = w.home.offsync(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains("cannot be used"), "{}", stderr(&out));
    }
}

#[test]
fn very_verbose_apply_works_through_rrsync() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("dir/a.txt", b"hello");
    let out = w.home.offsync(["-vv", "apply", "--yes"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--info=stats2,misc2"), "{err}");
    assert!(err.contains("]: out: "), "child output is echoed: {err}");
    assert!(!err.contains("--debug"), "rrsync refuses --debug: {err}");
    assert_eq!(names(&w.sshd().sync_dir()), ["dir", "dir/a.txt"]);
    let out = w.home.offsync(["-vv", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn verbose_mirror_run_never_prints_the_secret() {
    let Some(m) = Mirror::new(Backend::S3) else {
        return;
    };
    std::fs::write(m.source.join("f"), b"x").unwrap();
    let out = m.apply(&["-vv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("phase: transfer m: "), "{all}");
    assert!(!all.contains("offsync-test-secret"), "{all}");
    let out = m.off(&["-v", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("offsync-test-secret"));
}

#[test]
fn bwlimit_reaches_the_transfer_and_bad_values_are_refused() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("a.txt", b"a");
    for bad in ["fast", "1.m", "-5", "10x"] {
        let out = w
            .home
            .offsync(["apply", "--yes", &format!("--bwlimit={bad}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--bwlimit"), "{}", stderr(&out));
    }
    assert_eq!(names(&w.sshd().sync_dir()), Vec::<String>::new());
    let log = RsyncLog::new(&w.home);
    let out = log
        .offsync(&w.home, &["apply", "--yes", "--bwlimit", "1.5m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = log.take();
    let limited: Vec<_> = calls
        .iter()
        .filter(|c| c.argv.iter().any(|a| a == "--bwlimit=1.5m"))
        .collect();
    assert_eq!(limited.len(), 1, "the one transfer is limited: {calls:?}");
    assert!(!limited[0].argv.iter().any(|a| a == "-n"), "not a dry run");
    assert_eq!(names(&w.sshd().sync_dir()), ["a.txt"]);
}

#[test]
fn excludes_on_the_command_line_change_the_plan_and_are_never_sent() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    w.write("keep.txt", b"k");
    w.write("skip.log", b"s");
    w.write("cache/x.bin", b"c");
    let list = w.home.tmp.path().join("excludes");
    std::fs::write(&list, "# caches\n\ncache/\n").unwrap();

    let plan = |extra: &[&str]| {
        let mut a = vec!["plan", "--json"];
        a.extend(extra);
        let out = w.home.offsync(&a).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let added: Vec<String> = v["targets"][0]["added"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect();
        (added, v["source"]["excludes"].clone())
    };
    let (all, _) = plan(&[]);
    assert_eq!(all, ["cache", "cache/x.bin", "keep.txt", "skip.log"]);
    let ex = [
        "--exclude",
        "*.log",
        "--exclude-from",
        list.to_str().unwrap(),
    ];
    let (some, recorded) = plan(&ex);
    assert_eq!(some, ["keep.txt"]);
    assert_eq!(
        recorded,
        serde_json::json!([".git/", ".~tmp~/", "*.log", "cache/"])
    );

    // Bad patterns are bad input naming the flag (and the file line).
    let out = w
        .home
        .offsync(["plan", "--exclude", "a "])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("--exclude \"a \""),
        "{}",
        stderr(&out)
    );
    std::fs::write(&list, "ok\n!\n").unwrap();
    let out = w
        .home
        .offsync(["verify", "--exclude-from", list.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains(":2: \"!\""), "{}", stderr(&out));
    std::fs::write(&list, "cache/\n").unwrap();

    // A saved plan keeps its excludes: other ones are refused before anything runs.
    let saved = w.home.tmp.path().join("plan.json");
    let mut a = vec!["plan", "--out", saved.to_str().unwrap()];
    a.extend(ex);
    assert!(w.home.offsync(&a).output().unwrap().status.success());
    let out = w
        .home
        .offsync([
            "apply",
            saved.to_str().unwrap(),
            "--yes",
            "--exclude",
            "other",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot change a saved plan"));
    assert_eq!(names(&w.sshd().sync_dir()), Vec::<String>::new());
    // The same ones are fine, and excluded files are never sent.
    let mut a = vec!["apply", saved.to_str().unwrap(), "--yes"];
    a.extend(ex);
    let out = w.home.offsync(&a).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&w.sshd().sync_dir()), ["keep.txt"]);
    // Without the flags, the excluded files are planned again; with them, all is in sync.
    let mut a = vec!["verify"];
    a.extend(ex);
    assert_eq!(w.home.offsync(&a).output().unwrap().status.code(), Some(0));
    assert_eq!(
        w.home.offsync(["verify"]).output().unwrap().status.code(),
        Some(2)
    );
}

/// A target's own `exclude:` (config `targets[].exclude`) is added to the global list for
/// that target only: plan, apply and verify of `t2` never see `cache/`, `t1` gets it, and
/// the target's plan records the patterns.
#[test]
fn per_target_excludes_apply_to_that_target_only() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    w.write("keep.txt", b"k");
    w.write("cache/x.bin", b"c");
    let mut config = offsync::config::Config::load(&w.home.config()).unwrap();
    config.targets[1].exclude = vec!["cache/".into()];
    config.save(&w.home.config()).unwrap();

    let out = w.home.offsync(["plan", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let added = |i: usize| -> Vec<String> {
        v["targets"][i]["added"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(added(0), ["cache", "cache/x.bin", "keep.txt"]);
    assert_eq!(added(1), ["keep.txt"]);
    assert_eq!(v["targets"][1]["excludes"], serde_json::json!(["cache/"]));
    assert!(v["targets"][0].get("excludes").is_none());

    let out = w.home.offsync(["apply", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        names(&w.targets[0].sync_dir()),
        ["cache", "cache/x.bin", "keep.txt"]
    );
    assert_eq!(names(&w.targets[1].sync_dir()), ["keep.txt"]);
    assert_eq!(
        w.home.offsync(["verify"]).output().unwrap().status.code(),
        Some(0)
    );
    // Without the target's patterns, it lacks `cache/`.
    config.targets[1].exclude.clear();
    config.save(&w.home.config()).unwrap();
    assert_eq!(
        w.home.offsync(["verify"]).output().unwrap().status.code(),
        Some(2)
    );
}

#[test]
fn apply_dry_run_is_plan() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(2);
    w.write("a.txt", b"a");
    let run = |args: &[&str]| w.home.offsync(args).output().unwrap();
    for (plan, dry) in [
        (vec!["plan"], vec!["apply", "-n"]),
        (
            vec!["plan", "--json", "-t", "t2"],
            vec!["apply", "--dry-run", "--json", "-t", "t2"],
        ),
        (
            vec!["plan", "--detailed-exitcode"],
            vec!["apply", "-n", "--detailed-exitcode"],
        ),
    ] {
        let p = run(&plan);
        let d = run(&dry);
        assert_eq!(stdout(&p), stdout(&d), "{dry:?}");
        assert_eq!(p.status.code(), d.status.code(), "{dry:?}");
    }
    assert_eq!(
        run(&["apply", "-n", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
    assert_eq!(names(&w.targets[0].sync_dir()), Vec::<String>::new());
    assert_eq!(names(&w.targets[1].sync_dir()), Vec::<String>::new());
    // A plan file and --dry-run do not go together; --detailed-exitcode needs --dry-run.
    assert_eq!(run(&["apply", "-n", "plan.json"]).status.code(), Some(64));
    assert_eq!(
        run(&["apply", "--detailed-exitcode", "--yes"])
            .status
            .code(),
        Some(64)
    );
}
