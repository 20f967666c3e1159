//! How many rsync passes plan, apply and verify make on an SSH target, and with which flags —
//! recorded by an `rsync` wrapper first on offsync's PATH — plus what the two check modes
//! (`checksum`, `quick`) see and miss:
//!
//! - a checksum plan of an applied target is one whole-tree `-c` dry run; `apply PLAN_FILE`
//!   proves the plan with one quick dry run (no `-c`), sends new paths without
//!   `--delay-updates` and replacements with it, then verifies with a `-c` dry run over exactly
//!   the sent paths and one quick whole-tree dry run;
//! - a target never applied to is planned and applied without any `-c` whole-tree pass;
//! - a saved plan is refused when the target moved in a way that changes the work, and applied
//!   when the target moved but the planned work is the same;
//! - a same-size, same-mtime change on the target is caught by `verify` and a checksum plan,
//!   never by the quick check (its documented blind spot), while size and mtime differences
//!   are; `check:` in config (top level, per target) and `--check` pick the mode.

use crate::util::{Home, World, set_config, skip_unless_tools, snapshot, stdout, which};
use assert_cmd::Command;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An `rsync` wrapper: a shell script first on offsync's PATH that appends each call's argv
/// (after its pid, NUL-separated, one line per call) to a log, keeps a copy of its
/// `--files-from` list, then runs the real rsync (found on the test's PATH) and notes the pid
/// of a call that rrsync refused because its lock was held. offsync runs the rsync calls for one
/// target one after another, so the line count numbers them.
pub(crate) struct RsyncLog {
    dir: PathBuf,
    log: PathBuf,
    /// Calls already returned by [`RsyncLog::take`].
    seen: std::cell::Cell<usize>,
}

/// One recorded rsync call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) argv: Vec<String>,
    /// The paths of its `--files-from` list, when it had one.
    files: Option<Vec<String>>,
}

impl RsyncLog {
    pub(crate) fn new(h: &Home) -> RsyncLog {
        let real = which("rsync").expect("rsync on PATH (checked by skip_unless_tools)");
        let dir = h.tmp.path().join("rsync-wrapper");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("calls");
        std::fs::write(&log, b"").unwrap();
        let script = format!(
            "#!/bin/sh\n\
             log={log}\n\
             n=$(wc -l < \"$log\")\n\
             for a in \"$@\"; do\n\
             \x20 case \"$a\" in --files-from=*) cp -- \"${{a#--files-from=}}\" \"$log.files.$n\" ;; esac\n\
             done\n\
             {{ printf '%s\\0' \"$$\" \"$@\"; printf '\\n'; }} >> \"$log\"\n\
             {real} \"$@\" 2> \"$log.err.$$\"\n\
             rc=$?\n\
             cat \"$log.err.$$\" >&2\n\
             if grep -q 'Another instance of rrsync' \"$log.err.$$\"; then echo $$ >> \"$log.locked\"; fi\n\
             rm -f \"$log.err.$$\"\n\
             exit $rc\n",
            log = sh_quote(&log),
            real = sh_quote(&real),
        );
        let wrapper = dir.join("rsync");
        std::fs::write(&wrapper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        RsyncLog {
            dir,
            log,
            seen: std::cell::Cell::new(0),
        }
    }

    /// `offsync ARGS` as [`Home::offsync`], with the wrapper first on PATH.
    pub(crate) fn offsync(&self, h: &Home, args: &[&str]) -> Command {
        let mut path = self.dir.clone().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = h.offsync(args);
        c.env("PATH", path);
        c
    }

    /// The calls made since the last `take`.
    pub(crate) fn take(&self) -> Vec<Call> {
        let text = std::fs::read(&self.log).unwrap();
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        // A call that only met rrsync's single-run lock (a dry run beside the confinement
        // probe, on a loaded machine) did no pass; offsync runs it again.
        let locked: BTreeSet<String> = std::fs::read_to_string(self.log.with_extension("locked"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let calls = lines[self.seen.get()..]
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                let n = self.seen.get() + i;
                let mut fields = line
                    .strip_suffix(b"\0")
                    .unwrap_or(line)
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned());
                let pid = fields
                    .next()
                    .expect("each line starts with the wrapper's pid");
                let argv = fields.collect();
                let files = std::fs::read(self.log.with_extension(format!("files.{n}")))
                    .ok()
                    .map(|l| {
                        l.split(|&b| b == 0)
                            .filter(|p| !p.is_empty())
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect()
                    });
                (!locked.contains(&pid)).then_some(Call { argv, files })
            })
            .collect();
        self.seen.set(lines.len());
        calls
    }
}

fn sh_quote(p: &Path) -> String {
    let s = p.to_str().expect("a UTF-8 temp path");
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

impl Call {
    fn has(&self, flag: &str) -> bool {
        self.argv.iter().any(|a| a == flag)
    }
    fn dry(&self) -> bool {
        self.has("-n")
    }
    /// The confinement probe every connection starts with: a pull `-n -d USER@HOST:.`.
    fn probe(&self) -> bool {
        self.dry()
            && self.has("-d")
            && self.argv.len() >= 2
            && self.argv[self.argv.len() - 2].ends_with(":.")
    }
    /// A short name for the pass: `tree -c` / `tree quick` (a whole-tree dry run), `listed -c`
    /// / `listed quick` (a dry run over a `--files-from` list), `send FLAGS` (a transfer, with
    /// those of `-I -c --delay-updates --partial --delete-missing-args` it has), `send tree
    /// FLAGS` (a whole-tree transfer, `-r`), `probe`, or `other`.
    fn label(&self) -> String {
        let c = if self.has("-c") { "-c" } else { "quick" };
        match (self.probe(), self.dry(), self.files.is_some()) {
            (true, _, _) => "probe".into(),
            (false, true, false) => format!("tree {c}"),
            (false, true, true) => format!("listed {c}"),
            (false, false, true) => {
                let mut s = String::from("send");
                for f in [
                    "-I",
                    "-c",
                    "--delay-updates",
                    "--partial",
                    "--delete-missing-args",
                ] {
                    if self.has(f) {
                        s.push(' ');
                        s.push_str(f);
                    }
                }
                s
            }
            (false, false, false) if self.has("-r") => {
                let mut s = String::from("send tree");
                for f in ["-I", "-c", "--delay-updates", "--partial", "--delete"] {
                    if self.has(f) {
                        s.push(' ');
                        s.push_str(f);
                    }
                }
                s
            }
            (false, false, false) => "other".into(),
        }
    }
    fn files(&self) -> BTreeSet<String> {
        self.files.clone().unwrap_or_default().into_iter().collect()
    }
}

/// The labels of `calls` without the confinement probe.
fn passes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !c.probe())
        .map(Call::label)
        .collect()
}

/// The first call labelled `label`.
fn find<'a>(calls: &'a [Call], label: &str) -> &'a Call {
    calls
        .iter()
        .find(|c| c.label() == label)
        .unwrap_or_else(|| panic!("no `{label}` call in {:?}", passes(calls)))
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The paths of one category (`added`, `modified`, `metadata`, `missing`) of a plan's first
/// target.
fn category(plan: &serde_json::Value, name: &str) -> BTreeSet<String> {
    plan["targets"][0][name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in {plan}"))
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// Rewrite `p` with `content` (the same length as before) and put its mtime back: a change
/// rsync's quick check cannot see.
fn rewrite_keeping_size_and_mtime(p: &Path, content: &[u8]) {
    let before = mtime(p);
    assert_eq!(std::fs::metadata(p).unwrap().len(), content.len() as u64);
    std::fs::write(p, content).unwrap();
    set_mtime(p, before);
    assert_eq!(mtime(p), before);
}

/// A world of one target with `a.txt`, `b.txt` and `d/c.txt` applied (the target has been
/// applied to, so checksum plans are checksum passes).
fn applied_world() -> World {
    let w = World::fast(1);
    w.write("a.txt", b"alpha");
    w.write("b.txt", b"bravo");
    w.write("d/c.txt", b"charlie");
    w.home.offsync(["apply", "--yes"]).assert().success();
    assert!(w.home.home.join("applied/t1").exists());
    w
}

#[test]
fn a_fresh_target_is_planned_and_applied_without_a_checksum_pass() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let h = &w.home;
    let rec = RsyncLog::new(h);
    w.write("a.txt", b"alpha");
    w.write("d/b.txt", b"bravo");
    assert!(!h.home.join("applied/t1").exists());
    let plan_file = h.tmp.path().join("plan.json");
    let p = plan_file.to_str().unwrap();

    rec.offsync(h, &["plan", "--out", p]).assert().success();
    let calls = rec.take();
    assert_eq!(
        passes(&calls),
        ["tree quick"],
        "every source path is new there: the quick dry run is the plan"
    );
    assert_eq!(calls.iter().filter(|c| c.probe()).count(), 1, "{calls:?}");

    rec.offsync(h, &["apply", "--yes", p]).assert().success();
    let calls = rec.take();
    assert_eq!(
        passes(&calls),
        ["tree quick", "send tree -I", "tree -c"],
        "proof of the plan; every source path is new, so the tree goes in one run straight to \
         the final names (no --delay-updates, no --partial) and one whole-tree checksum run \
         verifies what was sent"
    );
    assert_eq!(
        snapshot(&w.sshd().sync_dir()),
        snapshot(&w.source),
        "the target is the source"
    );
    assert!(h.home.join("applied/t1").exists());

    // Now that it holds content, a checksum plan reads it.
    rec.offsync(h, &["plan"]).assert().success();
    assert_eq!(passes(&rec.take()), ["tree -c"]);
}

#[test]
fn a_saved_plan_is_proven_by_one_quick_pass_and_new_paths_skip_delay_updates() {
    if !skip_unless_tools() {
        return;
    }
    let w = applied_world();
    let h = &w.home;
    let rec = RsyncLog::new(h);
    // Modified, touched (mtime only), added; d/c.txt stays.
    w.write("a.txt", b"ALPHA, longer");
    set_mtime(
        &w.source.join("b.txt"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    w.write("new.txt", b"new");
    let plan_file = h.tmp.path().join("plan.json");
    let p = plan_file.to_str().unwrap();

    let out = rec
        .offsync(h, &["plan", "--json", "--out", p])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        passes(&rec.take()),
        ["tree -c"],
        "a checksum plan of an applied target: one whole-tree -c dry run"
    );
    let plan = json(&out);
    assert_eq!(plan["targets"][0]["check"], "checksum", "{plan}");
    assert!(plan["targets"][0]["state"].is_string(), "{plan}");
    assert_eq!(category(&plan, "added"), set(&["new.txt"]));
    assert_eq!(category(&plan, "modified"), set(&["a.txt"]));
    assert_eq!(category(&plan, "metadata"), set(&["b.txt"]));

    rec.offsync(h, &["apply", "--yes", p]).assert().success();
    let calls = rec.take();
    assert_eq!(
        passes(&calls),
        [
            "tree quick",
            "send -I",
            "send -c --delay-updates --partial",
            "listed -c",
            "tree quick"
        ],
        "no whole-tree -c pass: one quick pass proves the plan; new paths, then replacements; \
         then -c over what was sent and a quick whole-tree pass"
    );
    assert_eq!(find(&calls, "send -I").files(), set(&["new.txt"]));
    assert_eq!(
        find(&calls, "send -c --delay-updates --partial").files(),
        set(&["a.txt", "b.txt"])
    );
    assert_eq!(
        find(&calls, "listed -c").files(),
        set(&["a.txt", "b.txt", "new.txt"]),
        "verification reads what was sent by checksum, not the unchanged d/c.txt"
    );
    let target = w.sshd().sync_dir();
    assert_eq!(snapshot(&target), snapshot(&w.source));
    assert_eq!(mtime(&target.join("b.txt")), mtime(&w.source.join("b.txt")));

    // Nothing left: a plain apply plans by checksum and sends nothing.
    rec.offsync(h, &["apply", "--yes"]).assert().success();
    assert_eq!(passes(&rec.take()), ["tree -c"]);
}

#[test]
fn a_plain_apply_sends_new_paths_without_delay_updates() {
    if !skip_unless_tools() {
        return;
    }
    let w = applied_world();
    let h = &w.home;
    let rec = RsyncLog::new(h);
    w.write("d/c.txt", b"CHARLIE");
    w.write("d/e/new.txt", b"new");
    rec.offsync(h, &["apply", "--yes"]).assert().success();
    let calls = rec.take();
    assert_eq!(
        passes(&calls),
        [
            "tree -c",
            "send -I",
            "send -c --delay-updates --partial",
            "listed -c",
            "tree quick"
        ]
    );
    assert_eq!(
        find(&calls, "send -I").files(),
        set(&["d/e", "d/e/new.txt"])
    );
    let replacing = find(&calls, "send -c --delay-updates --partial").files();
    assert!(
        replacing.contains("d/c.txt") && !replacing.iter().any(|p| p.starts_with("d/e")),
        "{replacing:?}"
    );
    assert_eq!(snapshot(&w.sshd().sync_dir()), snapshot(&w.source));
}

#[test]
fn a_saved_plan_is_refused_when_the_target_moved_and_kept_when_the_work_is_the_same() {
    if !skip_unless_tools() {
        return;
    }
    let w = applied_world();
    let h = &w.home;
    let rec = RsyncLog::new(h);
    let target = w.sshd().sync_dir();
    w.write("a.txt", b"alpha, changed in the source");
    let plan_file = h.tmp.path().join("plan.json");
    let p = plan_file.to_str().unwrap();
    h.offsync(["plan", "--out", p]).assert().success();

    // b.txt changes on the target (another size): the plan no longer says what apply would do.
    std::fs::write(target.join("b.txt"), b"bravo, changed on the target").unwrap();
    let before = snapshot(&target);
    let out = rec
        .offsync(h, &["apply", "--yes", p])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = crate::util::stderr(&out);
    assert!(
        err.contains("the saved plan is stale") && err.contains("target t1 changed"),
        "{err}"
    );
    assert!(
        err.contains("+  ~ b.txt"),
        "the diff shows the new work: {err}"
    );
    let calls = rec.take();
    assert_eq!(
        passes(&calls),
        ["tree quick", "tree -c"],
        "the quick pass saw a change, so the target was planned again by checksum; nothing sent"
    );
    assert_eq!(snapshot(&target), before, "nothing was transferred");
    assert_eq!(
        crate::util::oplog(h).len(),
        1,
        "a refused saved plan is not an apply"
    );

    // A fresh plan covers a.txt and b.txt. Then a.txt changes on the target to the source's
    // size (other content, another mtime): the quick pass sees another state, the checksum
    // re-plan finds the same work, and the plan is applied.
    let out = h
        .offsync(["plan", "--json", "--out", p])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(category(&json(&out), "modified"), set(&["a.txt", "b.txt"]));
    let source_a = std::fs::read(w.source.join("a.txt")).unwrap();
    let same_size = source_a.to_ascii_uppercase();
    assert_ne!(same_size, source_a);
    std::fs::write(target.join("a.txt"), &same_size).unwrap();
    rec.offsync(h, &["apply", "--yes", p]).assert().success();
    assert_eq!(
        passes(&rec.take()),
        [
            "tree quick",
            "tree -c",
            "send -c --delay-updates --partial",
            "listed -c",
            "tree quick"
        ],
        "re-planned by checksum (the quick state moved), same work, applied"
    );
    assert_eq!(snapshot(&target), snapshot(&w.source));

    // The quick-check fingerprint records which of size, mtime, mode and type differ, not
    // their values: a planned-modified file that changes again on the target, still with
    // another size and mtime than the source, leaves it as it was. The plan is applied as
    // saved, without a re-plan — the work is the same, and a replacement is sent by checksum.
    w.write("a.txt", b"alpha, changed in the source again");
    h.offsync(["plan", "--out", p]).assert().success();
    std::fs::write(target.join("a.txt"), b"edited on the target meanwhile").unwrap();
    // Never the source's mtime (a write in the same second could look equal to it).
    set_mtime(
        &target.join("a.txt"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_200_000_000),
    );
    rec.offsync(h, &["apply", "--yes", p]).assert().success();
    assert_eq!(
        passes(&rec.take()),
        [
            "tree quick",
            "send -c --delay-updates --partial",
            "listed -c",
            "tree quick"
        ]
    );
    assert_eq!(snapshot(&target), snapshot(&w.source));
    h.offsync(["verify"]).assert().code(0);
}

#[test]
fn verify_and_checksum_plans_catch_drift_that_the_quick_check_cannot_see() {
    if !skip_unless_tools() {
        return;
    }
    let w = applied_world();
    let h = &w.home;
    let drifted = w.sshd().sync_dir().join("a.txt");
    rewrite_keeping_size_and_mtime(&drifted, b"ALPHA");

    let out = h.offsync(["verify"]).assert().code(2).get_output().clone();
    let text = stdout(&out);
    assert!(
        text.contains("DRIFTED  t1") && text.contains("~ a.txt"),
        "{text}"
    );

    let out = h
        .offsync(["plan", "--check", "quick", "--detailed-exitcode"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains("quick check: size and mtime on the target") && !text.contains("a.txt"),
        "the quick check's blind spot: {text}"
    );

    let out = h
        .offsync(["plan", "--detailed-exitcode"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains("content compared by checksum") && text.contains("~ a.txt"),
        "{text}"
    );
    // `check: quick` in config does not make verify quick.
    set_config(h, "check", "quick");
    h.offsync(["verify"]).assert().code(2);
    assert_eq!(
        std::fs::read(&drifted).unwrap(),
        b"ALPHA",
        "nothing was sent"
    );
}

#[test]
fn the_quick_check_lists_size_and_mtime_differences_and_config_picks_the_mode() {
    if !skip_unless_tools() {
        return;
    }
    let w = applied_world();
    let h = &w.home;
    let target = w.sshd().sync_dir();
    // a.txt: another size; b.txt: another mtime only; d/c.txt: content only (blind spot).
    std::fs::write(target.join("a.txt"), b"alpha!").unwrap();
    set_mtime(
        &target.join("b.txt"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    rewrite_keeping_size_and_mtime(&target.join("d/c.txt"), b"CHARLIE");

    // `plan --json ARGS` compares as `mode` says: the quick check misses d/c.txt.
    let sees = |mode: &str, args: &[&str]| {
        let mut all = vec!["plan", "--json"];
        all.extend_from_slice(args);
        let plan = json(h.offsync(&all).assert().success().get_output());
        let config = std::fs::read_to_string(h.config()).unwrap();
        let why = format!("{all:?} with config\n{config}\n{plan}");
        let modified = match mode {
            "quick" => set(&["a.txt"]),
            _ => set(&["a.txt", "d/c.txt"]),
        };
        assert_eq!(category(&plan, "modified"), modified, "{why}");
        assert_eq!(category(&plan, "metadata"), set(&["b.txt"]), "{why}");
        assert_eq!(plan["targets"][0]["check"], mode, "{why}");
    };

    sees("quick", &["--check", "quick"]);
    sees("checksum", &[]);
    let out = h
        .offsync(["plan", "--check", "quick", "--detailed-exitcode"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains("quick check: size and mtime on the target")
            && text.contains("~ a.txt")
            && text.contains("= b.txt")
            && !text.contains("c.txt"),
        "{text}"
    );

    // Top-level `check: quick`; `--check checksum` overrides it.
    set_config(h, "check", "quick");
    sees("quick", &[]);
    sees("checksum", &["--check", "checksum"]);

    // The target's own `check:` overrides the top-level one, both ways.
    let per_target = |top: &str, own: offsync::plan::CheckMode| {
        set_config(h, "check", top);
        let mut config = offsync::config::Config::load(&h.config()).unwrap();
        config.targets[0].check = Some(own);
        config.save(&h.config()).unwrap();
    };
    per_target("checksum", offsync::plan::CheckMode::Quick);
    sees("quick", &[]);
    sees("checksum", &["--check", "checksum"]);
    per_target("quick", offsync::plan::CheckMode::Checksum);
    sees("checksum", &[]);
    sees("quick", &["--check", "quick"]);

    // Applying in quick mode fixes what it saw, and only that.
    h.offsync(["apply", "--yes", "--check", "quick"])
        .assert()
        .success();
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(mtime(&target.join("b.txt")), mtime(&w.source.join("b.txt")));
    assert_eq!(std::fs::read(target.join("d/c.txt")).unwrap(), b"CHARLIE");
    h.offsync(["verify"]).assert().code(2);
}

#[test]
fn apply_check_with_a_plan_file_is_bad_input() {
    if !skip_unless_tools() {
        return;
    }
    let w = World::fast(1);
    let h = &w.home;
    let rec = RsyncLog::new(h);
    w.write("a.txt", b"alpha");
    let plan_file = h.tmp.path().join("plan.json");
    let p = plan_file.to_str().unwrap();
    h.offsync(["plan", "--out", p]).assert().success();
    let saved = std::fs::read(&plan_file).unwrap();
    for mode in ["quick", "checksum"] {
        let out = rec
            .offsync(h, &["apply", "--yes", "--check", mode, p])
            .assert()
            .code(64)
            .get_output()
            .clone();
        assert!(
            crate::util::stderr(&out).contains("--check cannot change a saved plan"),
            "{out:?}"
        );
    }
    assert!(rec.take().is_empty(), "refused before any rsync ran");
    assert!(snapshot(&w.sshd().sync_dir()).is_empty());
    assert_eq!(std::fs::read(&plan_file).unwrap(), saved);
    assert!(!h.home.join("operations.log").exists());
    // The same plan file without --check applies.
    h.offsync(["apply", "--yes", p]).assert().success();
    assert_eq!(
        std::fs::read(w.sshd().sync_dir().join("a.txt")).unwrap(),
        b"alpha"
    );
}
