//! The `releases` layout on real loopback sshd + rsync + rrsync targets, attacked: a reader
//! that samples `current/` while apply and rollback switch it (never a mixed tree), a release
//! tampered with between upload and verification (never switched to), `--switch together`
//! against `--switch each` with one failing target, hard links and disk use across releases,
//! pruning (`keep:`, a rolled-back-to release, a `--no-delete` target), rollback, SIGKILL at
//! random moments of a release apply, a forced command that points elsewhere, and what
//! `offsync releases` says about hand-made and hand-removed release directories.
//!
//! Every test prints what it measured. Hooks into the rsync calls come from an `rsync`
//! wrapper first on offsync's PATH (as in `passes`): a shell script that runs the real rsync
//! and, for the calls it matches, fails or tampers with the target's directory (which the
//! test can write directly: the sshd runs as the test's own user).

use crate::util::{
    Home, KillMatchingOnDrop, Prng, World, all_output, edit_target, home_needle, kill_matching,
    oplog, send_signal, set_config, skip_unless_tools, snapshot, stdout, wait_child, wait_no_procs,
    which,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// --- helpers --------------------------------------------------------------------------------

/// Where `current` points (`releases/<id>`).
fn current(sync: &Path) -> String {
    std::fs::read_link(sync.join("current"))
        .unwrap_or_else(|e| panic!("readlink {}/current: {e}", sync.display()))
        .to_string_lossy()
        .into_owned()
}

/// The id `current` points at.
fn current_id(sync: &Path) -> String {
    let c = current(sync);
    c.strip_prefix("releases/")
        .unwrap_or_else(|| panic!("current -> {c}: not releases/<id>"))
        .to_string()
}

/// The names in `DIR/releases/`, sorted.
fn release_dirs(sync: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sync.join("releases"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A release's tree as [`snapshot`] shows it, without offsync's own files at its root (the
/// marker and the release tag): comparable with `snapshot(source)`.
fn tree(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = snapshot(dir);
    s.retain(|(p, _)| !p.starts_with(b".offsync-"));
    s
}

fn releases_world(n: usize) -> World {
    let w = World::fast(n);
    set_config(&w.home, "layout", "releases");
    w
}

/// Make target `idx` of `w` a `--no-delete` target: the forced command gets rrsync's
/// `-no-del` (what `link --no-delete` writes) and config.yaml says `no_delete: true`.
fn make_no_delete(w: &World, idx: usize) {
    let ak_path = w.targets[idx].authorized_keys();
    let ak = std::fs::read_to_string(&ak_path).unwrap();
    assert!(ak.contains(" -wo "), "{ak}");
    std::fs::write(&ak_path, ak.replacen(" -wo ", " -wo -no-del ", 1)).unwrap();
    edit_target(&w.home, &format!("t{}", idx + 1), |t| t.no_delete = true);
}

/// Run a finished command, print its output under `label`, return it.
fn run(label: &str, mut c: assert_cmd::Command) -> Output {
    let start = Instant::now();
    let out = c.output().unwrap();
    eprintln!(
        "--- {label}: {:?} in {} ms\n{}",
        out.status.code(),
        start.elapsed().as_millis(),
        all_output(&out)
    );
    out
}

/// The rows of `apply --json`, by target.
fn rows(out: &Output) -> BTreeMap<String, serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("apply --json is not JSON ({e}):\n{}", all_output(out)));
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| (r["target"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// `offsync releases --json`: per target, id -> state (and the current id).
fn listed(h: &Home) -> BTreeMap<String, (Option<String>, BTreeMap<String, String>)> {
    let out = run("releases --json", h.offsync(["releases", "--json"]));
    assert!(out.status.success(), "{}", all_output(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let states = t["releases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap().to_string(),
                        r["state"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                t["target"].as_str().unwrap().to_string(),
                (t["current"].as_str().map(str::to_string), states),
            )
        })
        .collect()
}

fn sh_quote(p: &Path) -> String {
    let s = p.to_str().expect("a UTF-8 temp path");
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

/// An `rsync` wrapper (a shell script `body`, with `$REAL` the real rsync) first on PATH.
struct Wrapper {
    dir: PathBuf,
}

impl Wrapper {
    fn new(h: &Home, body: &str) -> Wrapper {
        let real = which("rsync").expect("rsync on PATH (checked by skip_unless_tools)");
        let dir = h.tmp.path().join("rsync-wrapper");
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!("#!/bin/sh\nREAL={}\n{body}", sh_quote(&real));
        let p = dir.join("rsync");
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Wrapper { dir }
    }

    fn offsync(&self, h: &Home, args: &[&str]) -> assert_cmd::Command {
        let mut path = self.dir.clone().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = h.offsync(args);
        c.env("PATH", path);
        c
    }
}

// --- the reader -----------------------------------------------------------------------------

/// What a reader saw.
#[derive(Debug, Default, Clone)]
struct Samples {
    total: u64,
    /// Samples whose files did not all name the same version.
    mixed: u64,
    /// Samples that could not open `current` or read a file.
    errors: u64,
    /// Consistent samples per version.
    by_version: BTreeMap<String, u64>,
    first_problem: Option<String>,
}

impl Samples {
    fn mixed_share(&self) -> f64 {
        self.mixed as f64 / self.total.max(1) as f64
    }
}

/// A thread that samples a tree continuously: each sample opens the directory ONCE (`dir`,
/// through the `current` symlink when `via_current`) and reads `files` below that open
/// directory (`/proc/self/fd/<fd>/<path>`), as a web server that resolved its document root
/// once would. A file's version is its first word.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Samples>,
}

impl Reader {
    fn start(dir: PathBuf, via_current: bool, files: Vec<String>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Samples::default();
            while !s.load(Ordering::Relaxed) {
                out.total += 1;
                match sample(&dir, via_current, &files) {
                    Ok(v) => *out.by_version.entry(v).or_default() += 1,
                    Err((mixed, why)) => {
                        if mixed {
                            out.mixed += 1;
                        } else {
                            out.errors += 1;
                        }
                        out.first_problem.get_or_insert(why);
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            out
        });
        Reader { stop, handle }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// One sample: `Ok(version)`, or `Err((mixed, why))`.
fn sample(dir: &Path, via_current: bool, files: &[String]) -> Result<String, (bool, String)> {
    let d = if via_current {
        dir.join("current")
    } else {
        dir.to_path_buf()
    };
    let f = std::fs::File::open(&d).map_err(|e| (false, format!("open {}: {e}", d.display())))?;
    let base = format!("/proc/self/fd/{}", f.as_raw_fd());
    let mut versions = BTreeSet::new();
    for rel in files {
        let c =
            std::fs::read(format!("{base}/{rel}")).map_err(|e| (false, format!("{rel}: {e}")))?;
        let v = c.split(|&b| b == b' ').next().unwrap_or_default();
        versions.insert(String::from_utf8_lossy(v).into_owned());
    }
    if versions.len() == 1 {
        Ok(versions.pop_first().unwrap())
    } else {
        Err((true, format!("mixed versions {versions:?}")))
    }
}

/// `dirs` × `per_dir` small files `dNN/fNNN.txt`, each naming `version`.
fn write_versioned(source: &Path, dirs: usize, per_dir: usize, version: &str) {
    for d in 0..dirs {
        let dir = source.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let rel = format!("d{d:02}/f{f:03}.txt");
            std::fs::write(
                dir.join(format!("f{f:03}.txt")),
                format!("{version} {rel}\n"),
            )
            .unwrap();
        }
    }
}

/// Every `step`-th of those files, plus the last.
fn spread(dirs: usize, per_dir: usize, step: usize) -> Vec<String> {
    let all: Vec<String> = (0..dirs)
        .flat_map(|d| (0..per_dir).map(move |f| format!("d{d:02}/f{f:03}.txt")))
        .collect();
    let mut v: Vec<String> = all.iter().step_by(step).cloned().collect();
    v.push(all.last().unwrap().clone());
    v.dedup();
    v
}

/// Run `c` while `readers` sample; returns its output and what each reader saw.
fn during(c: assert_cmd::Command, label: &str, readers: Vec<Reader>) -> (Output, Vec<Samples>) {
    let out = run(label, c);
    // A moment after the switch, so the reader surely samples the new release too.
    std::thread::sleep(Duration::from_millis(50));
    (out, readers.into_iter().map(Reader::finish).collect())
}

// --- tests ----------------------------------------------------------------------------------

/// The basic flow: the layout on the target after two applies, `verify`, a plan with nothing
/// to do, `releases`, and the release fields of operations.log.
#[test]
fn basic_flow_uploads_beside_current_and_switches() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    let sync = w.sshd().sync_dir();
    w.write("a.txt", b"one");
    w.write("sub/b.txt", b"bee");
    let out = run("apply 1", h.offsync(["apply", "--yes"]));
    assert!(out.status.success());
    let first = current_id(&sync);
    assert_eq!(release_dirs(&sync), std::slice::from_ref(&first));
    let rel1 = sync.join("releases").join(&first);
    assert!(rel1.join(format!(".offsync-release-{first}")).is_file());
    assert!(
        std::fs::read_dir(&rel1).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(".offsync-marker-")),
        "the release holds the target marker"
    );
    assert_eq!(tree(&sync.join("current")), snapshot(&w.source));

    w.write("a.txt", b"two");
    let out = run("apply 2", h.offsync(["apply", "--yes"]));
    assert!(out.status.success());
    let second = current_id(&sync);
    assert_ne!(first, second);
    assert!(stdout(&out).contains(&format!("current -> releases/{second}")));
    assert_eq!(std::fs::read(sync.join("current/a.txt")).unwrap(), b"two");
    assert_eq!(
        std::fs::read(rel1.join("a.txt")).unwrap(),
        b"one",
        "old release untouched"
    );
    assert_eq!(release_dirs(&sync), [first.clone(), second.clone()]);

    let out = run("verify", h.offsync(["verify"]));
    assert!(out.status.success());
    let out = run("plan --json", h.offsync(["plan", "--json"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &plan["targets"][0]["summary"];
    assert_eq!(
        (&s["added"], &s["modified"], &s["metadata"], &s["missing"]),
        (&0.into(), &0.into(), &0.into(), &0.into()),
        "nothing to do after the apply: {plan}"
    );
    let l = listed(h);
    let (cur, states) = &l["t1"];
    assert_eq!(cur.as_deref(), Some(second.as_str()));
    assert_eq!(
        states.values().collect::<Vec<_>>(),
        ["verified", "verified"]
    );

    let recs: Vec<_> = oplog(h)
        .into_iter()
        .filter(|r| r["operation"] == "apply")
        .collect();
    assert_eq!(recs.len(), 2);
    for (r, id) in recs.iter().zip([&first, &second]) {
        assert_eq!(r["release"], id.as_str(), "{r}");
        assert!(r["switched_at"].is_string(), "{r}");
    }
    eprintln!("releases {first} then {second}; both logged with release and switched_at");
}

/// Attack 1: A reader that resolves `current` once per sample never sees two versions, while apply
/// switches 3,000 files from v1 to v2 and while rollback switches back. For contrast, the
/// same reader on an in-place target (not asserted).
#[test]
fn a_reader_never_sees_a_mixed_tree_during_apply_or_rollback() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(2);
    let h = &w.home;
    edit_target(h, "t2", |t| {
        t.layout = Some(offsync::releases::Layout::InPlace)
    });
    let (dirs, per) = (30, 100);
    let files = spread(dirs, per, 73);
    assert!(files.len() >= 31, "{}", files.len());
    let sync1 = w.targets[0].sync_dir();
    let sync2 = w.targets[1].sync_dir();

    write_versioned(&w.source, dirs, per, "v1");
    let out = run("apply v1", h.offsync(["apply", "--yes"]));
    assert!(out.status.success());
    let v1_id = current_id(&sync1);

    write_versioned(&w.source, dirs, per, "v2");
    let readers = vec![
        Reader::start(sync1.clone(), true, files.clone()),
        Reader::start(sync2.clone(), false, files.clone()),
    ];
    let (out, seen) = during(h.offsync(["apply", "--yes"]), "apply v2", readers);
    assert!(out.status.success());
    let v2_id = current_id(&sync1);
    assert_ne!(v1_id, v2_id);
    let (rel, inplace) = (&seen[0], &seen[1]);
    eprintln!(
        "apply v1 -> v2, releases target: {} samples, {} mixed, {} errors, by version {:?}",
        rel.total, rel.mixed, rel.errors, rel.by_version
    );
    eprintln!(
        "apply v1 -> v2, in-place target (contrast, not asserted): {} samples, {} mixed ({:.1} %), {} errors, by version {:?}, first problem {:?}",
        inplace.total,
        inplace.mixed,
        inplace.mixed_share() * 100.0,
        inplace.errors,
        inplace.by_version,
        inplace.first_problem
    );
    assert_eq!(
        (rel.mixed, rel.errors),
        (0, 0),
        "the releases reader saw a mixed or broken tree: {:?}",
        rel.first_problem
    );
    assert!(rel.total >= 50, "too few samples to mean anything: {rel:?}");
    assert!(
        rel.by_version.get("v1").is_some_and(|&n| n > 0)
            && rel.by_version.get("v2").is_some_and(|&n| n > 0),
        "the reader saw both versions: {rel:?}"
    );

    let readers = vec![Reader::start(sync1.clone(), true, files.clone())];
    let (out, seen) = during(h.offsync(["rollback"]), "rollback", readers);
    assert!(out.status.success());
    assert_eq!(current_id(&sync1), v1_id);
    let rb = &seen[0];
    eprintln!(
        "rollback v2 -> v1: {} samples, {} mixed, {} errors, by version {:?}",
        rb.total, rb.mixed, rb.errors, rb.by_version
    );
    assert_eq!(
        (rb.mixed, rb.errors),
        (0, 0),
        "during rollback: {:?}",
        rb.first_problem
    );
    assert!(rb.total >= 20, "too few samples: {rb:?}");
    assert!(rb.by_version.contains_key("v1"), "{rb:?}");
}

/// Attack 2: A release tampered with on the target between its upload and its verification is
/// never switched to: (a) an unchanged (hard-linked) file replaced with one of another size
/// (the quick check sees it), (b) a sent file replaced with same-size, same-mtime content
/// (only the checksum of sent paths sees it). Apply fails with a verification error,
/// `current` and the old release stay byte-identical, the releases are recorded as failed,
/// and the next good apply prunes them.
#[test]
fn a_release_that_fails_verification_is_never_switched_to() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    let sync = w.sshd().sync_dir();
    let wdir = h.tmp.path().join("rsync-wrapper");
    let mode_file = wdir.join("mode");
    let log = wdir.join("tampered");
    // Between the upload and the verification: right before the first dry run (`-n`) into
    // `releases/<id>/` (the upload, and the re-send of files it hard-linked, are done by
    // then), replace a file of the new release — a new inode, so the hard-linked old
    // release keeps its own.
    let body = format!(
        r#"mode=$(cat {mode} 2>/dev/null)
if [ -n "$mode" ] && [ "$mode" != none ]; then
  dry=0
  for a in "$@"; do
    case "$a" in -n) dry=1 ;; esac
    last=$a
  done
  case "$last" in *:releases/*/) rel=${{last#*:}} ;; *) rel= ;; esac
  if [ $dry = 1 ] && [ -n "$rel" ]; then
    r={sync}/"$rel"
    case "$mode" in
      size) f="$r/d0/same.txt"; printf 'tampered: longer than what was sent\n' > "$r/d0/.tamper" && chmod --reference="$f" "$r/d0/.tamper" && mv -f "$r/d0/.tamper" "$f" ;;
      same) f="$r/d0/changed.txt"; tr v X < "$f" > "$r/d0/.tamper" && chmod --reference="$f" "$r/d0/.tamper" && touch -r "$f" "$r/d0/.tamper" && mv -f "$r/d0/.tamper" "$f" ;;
    esac && echo "$mode $rel" >> {log}
    echo none > {mode}
  fi
fi
case " $* " in *" -I "*) case " $* " in *" -n "*) ;; *) echo resend >> {log}.resends ;; esac ;; esac
exec "$REAL" "$@"
"#,
        mode = sh_quote(&mode_file),
        sync = sh_quote(&sync),
        log = sh_quote(&log),
    );
    let wrap = Wrapper::new(h, &body);
    let write_version = |v: &str| {
        w.write("d0/same.txt", b"same in every version\n");
        w.write("d0/changed.txt", format!("{v} d0/changed.txt\n").as_bytes());
        for i in 0..20 {
            w.write(&format!("d1/f{i:02}.txt"), format!("file {i}\n").as_bytes());
        }
    };
    write_version("v1");
    let out = run("apply v1", wrap.offsync(h, &["apply", "--yes"]));
    assert!(out.status.success());
    let good = current_id(&sync);
    let good_tree = tree(&sync.join("releases").join(&good));
    let mut failed_ids = Vec::new();

    // Each switch mode has its own path to the switch: both must refuse.
    for (mode, v, switch) in [("size", "v2", "together"), ("same", "v3", "each")] {
        std::fs::write(&mode_file, mode).unwrap();
        write_version(v);
        let out = run(
            &format!("apply {v}, tamper {mode}, --switch {switch}"),
            wrap.offsync(h, &["apply", "--yes", "--json", "--switch", switch]),
        );
        let tampered = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            tampered.lines().any(|l| l.starts_with(mode)),
            "the wrapper tampered ({mode}): {tampered:?}"
        );
        assert_ne!(out.status.code(), Some(0), "{}", all_output(&out));
        let r = &rows(&out)["t1"];
        assert_eq!(r["error_kind"], "verification_failed", "{r}");
        // The same-size, same-mtime, same-mode tamper is a content difference only.
        let what = if mode == "same" {
            "1 modified"
        } else {
            "still differ"
        };
        assert!(r["error"].as_str().unwrap().contains(what), "{r}");
        assert!(r["switched_at"].is_null(), "{r}");
        let id = r["release"]
            .as_str()
            .expect("the failed release is named")
            .to_string();
        assert_ne!(id, good);
        assert_eq!(
            current_id(&sync),
            good,
            "current still points at the old release"
        );
        assert_eq!(
            tree(&sync.join("releases").join(&good)),
            good_tree,
            "the old release is byte-identical"
        );
        assert_eq!(tree(&sync.join("current")), good_tree);
        assert!(
            sync.join("releases").join(&id).is_dir(),
            "kept for inspection"
        );
        let l = listed(h);
        assert_eq!(
            l["t1"].1.get(&id).map(String::as_str),
            Some("failed"),
            "{l:?}"
        );
        assert_eq!(l["t1"].0.as_deref(), Some(good.as_str()));
        eprintln!("tamper {mode}: release {id} failed verification, current stays {good}");
        failed_ids.push(id);
    }

    std::fs::write(&mode_file, "none").unwrap();
    write_version("v4");
    let resends = || {
        std::fs::read_to_string(log.with_extension("resends"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let resends_before = resends();
    let out = run("apply v4", wrap.offsync(h, &["apply", "--yes", "--json"]));
    assert!(out.status.success());
    // changed.txt has the same size as in v1 but a new mtime: the upload sends it, and
    // there is no second pass re-sending it whole (that is only for files whose size and
    // mtime both match the old release's, which the upload hard-links).
    assert_eq!(
        resends(),
        resends_before,
        "a file the upload sent was sent again"
    );
    let r = &rows(&out)["t1"];
    let v4 = current_id(&sync);
    assert_eq!(r["release"], v4.as_str());
    let pruned: BTreeSet<String> = r["pruned"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    for id in &failed_ids {
        assert!(pruned.contains(id), "failed {id} pruned: {r}");
        assert!(!sync.join("releases").join(id).exists(), "{id} deleted");
    }
    assert_eq!(release_dirs(&sync), [good.clone(), v4.clone()]);
    assert_eq!(tree(&sync.join("current")), snapshot(&w.source));
    let l = listed(h);
    assert_eq!(l["t1"].1.len(), 2, "{l:?}");
    eprintln!("apply v4 switched to {v4} and pruned the failed {failed_ids:?}");
}

/// Attack 3: `--switch together`: one target's upload fails, so the healthy one verifies but does
/// not switch (`not_switched`); `--switch each`: the healthy one switches, the failing one
/// does not. Both switching prints the spread.
#[test]
fn switch_together_waits_for_every_target_and_each_does_not() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(2);
    let h = &w.home;
    let (s1, s2) = (w.targets[0].sync_dir(), w.targets[1].sync_dir());
    let flag = h.tmp.path().join("fail-t1");
    // t1's upload (`--mkpath`, its port in `-e`) fails while the flag file exists.
    let body = format!(
        r#"up=0; t1=0
for a in "$@"; do
  case "$a" in --mkpath) up=1 ;; *" -p {port}") t1=1 ;; esac
done
if [ $up = 1 ] && [ $t1 = 1 ] && [ -e {flag} ]; then
  echo "test wrapper: this upload fails" >&2
  exit 11
fi
exec "$REAL" "$@"
"#,
        port = w.targets[0].port,
        flag = sh_quote(&flag),
    );
    let wrap = Wrapper::new(h, &body);
    w.write("index.html", b"v1");
    w.write("app/main.js", b"v1 main");
    let out = run("apply v1", wrap.offsync(h, &["apply", "--yes"]));
    assert!(out.status.success());
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("switched 2 targets within ") && l.ends_with(" ms of each other"))
        .unwrap_or_else(|| panic!("apply prints the switch spread:\n{text}"));
    eprintln!("printed: {line}");
    let (c1, c2) = (current_id(&s1), current_id(&s2));
    assert_eq!(c1, c2, "one release id for the apply");

    std::fs::write(&flag, b"").unwrap();
    w.write("index.html", b"v2");
    let out = run(
        "apply v2 --switch together (t1 fails)",
        wrap.offsync(h, &["apply", "--yes", "--json"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let r = rows(&out);
    assert_eq!(r["t1"]["status"], "failed", "{}", r["t1"]);
    assert_ne!(r["t1"]["error_kind"], "not_switched", "{}", r["t1"]);
    assert_eq!(r["t2"]["error_kind"], "not_switched", "{}", r["t2"]);
    assert!(r["t2"]["switched_at"].is_null());
    let t2_release = r["t2"]["release"].as_str().unwrap().to_string();
    assert!(s2.join("releases").join(&t2_release).is_dir(), "uploaded");
    assert_eq!((current_id(&s1), current_id(&s2)), (c1.clone(), c2.clone()));
    assert_eq!(std::fs::read(s2.join("current/index.html")).unwrap(), b"v1");
    assert!(!stdout(&out).contains("switched 2"));
    eprintln!("together: neither switched; t2 said {}", r["t2"]["error"]);

    let out = run(
        "apply v2 --switch each (t1 fails)",
        wrap.offsync(h, &["apply", "--yes", "--json", "--switch", "each"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let r = rows(&out);
    assert_eq!(r["t1"]["status"], "failed", "{}", r["t1"]);
    assert_eq!(r["t2"]["status"], "ok", "{}", r["t2"]);
    assert!(r["t2"]["switched_at"].is_string());
    assert_eq!(current_id(&s1), c1, "t1 did not switch");
    assert_ne!(current_id(&s2), c2, "t2 switched");
    assert_eq!(std::fs::read(s2.join("current/index.html")).unwrap(), b"v2");
    assert_eq!(std::fs::read(s1.join("current/index.html")).unwrap(), b"v1");
    eprintln!(
        "each: t2 -> {}, t1 stays {c1}",
        r["t2"]["release"].as_str().unwrap()
    );
}

/// Attack 4: Consecutive releases where 1% of 500 files × 4 KiB change (two of them keep size and
/// mtime, so only the plan's checksum knows; one more only changes its mode) share the
/// inodes of every unchanged file and none of the changed ones; each release is exactly its
/// source; 5 releases use ≤ 1.1× the disk of one copy.
#[test]
fn unchanged_files_are_hard_links_and_five_releases_cost_little_more_than_one() {
    if !skip_unless_tools() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let w = releases_world(1);
    let h = &w.home;
    let sync = w.sshd().sync_dir();
    let mut rng = Prng::new(0x5eed_0004);
    let n = 500;
    let name = |i: usize| format!("d{:02}/f{i:03}.bin", i / 50);
    for i in 0..n {
        w.write(&name(i), &rng.bytes(4096));
    }
    let one_copy: u64 = (n * 4096) as u64;
    let mut ids = Vec::new();
    let mut sources = Vec::new();
    let mut changed_sets: Vec<BTreeSet<String>> = Vec::new();
    for round in 0..5 {
        let mut changed = BTreeSet::new();
        if round > 0 {
            for k in 0..5 {
                let rel = name(((round - 1) * 5 + k) * 7 % n);
                let p = w.source.join(&rel);
                let old_mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
                std::fs::write(&p, rng.bytes(4096)).unwrap();
                if k < 2 {
                    // Same size, same mtime: the upload's quick check would hard-link it.
                    std::fs::File::options()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_modified(old_mtime)
                        .unwrap();
                }
                changed.insert(rel);
            }
            if round == 1 {
                let rel = name(n - 1);
                std::fs::set_permissions(
                    w.source.join(&rel),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                changed.insert(rel);
            }
        }
        let out = run(
            &format!("apply round {round}"),
            h.offsync(["apply", "--yes"]),
        );
        assert!(out.status.success());
        let id = current_id(&sync);
        assert!(!ids.contains(&id));
        assert_eq!(
            tree(&sync.join("releases").join(&id)),
            snapshot(&w.source),
            "release {round} is exactly its source"
        );
        ids.push(id);
        sources.push(snapshot(&w.source));
        changed_sets.push(changed);
    }
    assert_eq!(release_dirs(&sync), ids, "keep 5: all five remain");
    for (r, id) in ids.iter().enumerate() {
        assert_eq!(
            tree(&sync.join("releases").join(id)),
            sources[r],
            "release {r} still exactly its source after later releases"
        );
    }
    let mode_of = |id: &str, rel: &str| {
        std::fs::metadata(sync.join("releases").join(id).join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let rel_last = name(n - 1);
    assert_ne!(
        mode_of(&ids[0], &rel_last),
        0o600,
        "the old release keeps its mode"
    );
    assert_eq!(mode_of(&ids[1], &rel_last), 0o600);

    let ino = |id: &str, rel: &str| {
        std::fs::metadata(sync.join("releases").join(id).join(rel))
            .unwrap()
            .ino()
    };
    let mut shared = 0;
    for r in 1..ids.len() {
        for i in 0..n {
            let rel = name(i);
            let same = ino(&ids[r - 1], &rel) == ino(&ids[r], &rel);
            if changed_sets[r].contains(&rel) {
                assert!(!same, "changed {rel} in release {r} must be a new file");
            } else {
                assert!(same, "unchanged {rel} in release {r} must be a hard link");
                shared += 1;
            }
        }
    }
    // Disk use: each distinct inode once (what `du` counts).
    let mut inodes = BTreeMap::new();
    let mut stack = vec![sync.join("releases")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                inodes.insert((m.dev(), m.ino()), m.len());
            }
        }
    }
    let used: u64 = inodes.values().sum();
    let ratio = used as f64 / one_copy as f64;
    let du = std::process::Command::new("du")
        .args(["-sk"])
        .arg(sync.join("releases"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!(
        "5 releases of {n} files: {shared} hard links between consecutive releases, {} distinct inodes, {used} B of file data vs {one_copy} B for one copy: ratio {ratio:.3}; du -sk: {du}",
        inodes.len()
    );
    assert!(ratio <= 1.1, "5 releases use {ratio:.3}× one copy");
}

/// Attack 5: `keep: 3`: after 5 applies the 3 newest remain (current's among them); a rollback to
/// the oldest kept one, then an apply: `current` never dangles while it switches away and
/// prunes; a `--no-delete` target keeps every release and apply says why and how much disk
/// they use.
#[test]
fn pruning_keeps_the_newest_and_current_and_never_deletes_on_no_delete_targets() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(2);
    let h = &w.home;
    set_config(h, "keep", "3");
    make_no_delete(&w, 1);
    let (s1, s2) = (w.targets[0].sync_dir(), w.targets[1].sync_dir());
    let files: Vec<String> = (0..40)
        .map(|i| format!("d{:02}/f{i:03}.txt", i / 10))
        .collect();
    let write_v = |v: usize| {
        for f in &files {
            w.write(f, format!("v{v} {f}\n").as_bytes());
        }
    };
    let mut ids = Vec::new();
    for v in 1..=5 {
        write_v(v);
        let out = run(
            &format!("apply {v}"),
            h.offsync(["apply", "--yes", "--json"]),
        );
        assert!(out.status.success());
        let r = rows(&out);
        let id = r["t1"]["release"].as_str().unwrap().to_string();
        assert_eq!(r["t2"]["release"], id.as_str());
        let pruned = |t: &str| r[t]["pruned"].as_array().cloned().unwrap_or_default();
        let note = r["t2"]["note"].as_str().unwrap_or_default().to_string();
        if v >= 4 {
            assert_eq!(pruned("t1"), [serde_json::json!(ids[v - 4])], "{}", r["t1"]);
            assert!(
                note.contains("--no-delete") && note.contains("of its disk"),
                "t2 says why releases stay and how much disk they use: {note:?}"
            );
            eprintln!("apply {v}: t2 note: {note}");
        } else {
            assert!(pruned("t1").is_empty() && note.is_empty(), "{r:?}");
        }
        assert!(pruned("t2").is_empty(), "{}", r["t2"]);
        ids.push(id);
    }
    assert_eq!(release_dirs(&s1), ids[2..].to_vec(), "the 3 newest remain");
    assert_eq!(current_id(&s1), ids[4]);
    assert_eq!(release_dirs(&s2), ids, "no-delete: nothing deleted");
    eprintln!(
        "t1 keeps {:?}; t2 keeps all {}",
        release_dirs(&s1),
        ids.len()
    );

    // Roll back to the oldest kept release, then apply a new one while a reader watches
    // that `current` always resolves to a whole release.
    let oldest = ids[2].clone();
    let out = run(
        "rollback --to oldest",
        h.offsync(["rollback", "--to", &oldest]),
    );
    assert!(out.status.success());
    assert_eq!(
        (current_id(&s1), current_id(&s2)),
        (oldest.clone(), oldest.clone())
    );
    write_v(6);
    let reader = Reader::start(s1.clone(), true, files.clone());
    let (out, seen) = during(h.offsync(["apply", "--yes"]), "apply 6", vec![reader]);
    assert!(out.status.success());
    let text = stdout(&out);
    let id6 = current_id(&s1);
    assert!(
        text.contains(&format!("current -> releases/{id6}, pruned {oldest}")),
        "t1 switched, then pruned the release it left:\n{text}"
    );
    assert!(
        text.contains("--no-delete") && text.contains("of its disk"),
        "apply prints why t2 keeps its releases:\n{text}"
    );
    let s = &seen[0];
    eprintln!(
        "apply 6 after rollback to {oldest}: reader {} samples, {} mixed, {} errors, {:?}",
        s.total, s.mixed, s.errors, s.by_version
    );
    assert_eq!((s.mixed, s.errors), (0, 0), "{:?}", s.first_problem);
    assert!(
        s.by_version.contains_key("v3") && s.by_version.contains_key("v6"),
        "{s:?}"
    );
    let kept = release_dirs(&s1);
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept.contains(&id6));
    assert_eq!(kept, [ids[3].clone(), ids[4].clone(), id6.clone()]);
    assert_eq!(
        release_dirs(&s2).len(),
        6,
        "no-delete: still nothing deleted"
    );
    assert_eq!(current_id(&s2), id6);
    assert_eq!(tree(&s2.join("current")), snapshot(&w.source));
}

/// Attack 6: Rollback: one back, then `--to ID`, each byte-identical to that release; with no older
/// release it fails clearly and changes nothing; `--to nonsense/../x` is bad input (64);
/// every rollback that ran is one operations.log record.
#[test]
fn rollback_goes_back_exactly_and_refuses_what_it_cannot_do() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    let sync = w.sshd().sync_dir();
    let mut ids = Vec::new();
    let mut sources = Vec::new();
    for v in ["A", "B", "C"] {
        w.write("index.html", format!("<h1>{v}</h1>").as_bytes());
        w.write(&format!("only-in-{v}.txt"), v.as_bytes());
        if v == "C" {
            std::fs::remove_file(w.source.join("only-in-A.txt")).unwrap();
        }
        let out = run(
            &format!("apply {v}"),
            h.offsync(["apply", "--yes", "--delete"]),
        );
        assert!(out.status.success());
        ids.push(current_id(&sync));
        sources.push(snapshot(&w.source));
    }
    let rollbacks = || {
        oplog(h)
            .into_iter()
            .filter(|r| r["operation"] == "rollback")
            .collect::<Vec<_>>()
    };

    let out = run("rollback", h.offsync(["rollback"]));
    assert!(out.status.success());
    assert_eq!(current_id(&sync), ids[1]);
    assert_eq!(tree(&sync.join("current")), sources[1]);
    assert_eq!(rollbacks().len(), 1);

    let out = run("rollback --to A", h.offsync(["rollback", "--to", &ids[0]]));
    assert!(out.status.success());
    assert_eq!(current_id(&sync), ids[0]);
    assert_eq!(tree(&sync.join("current")), sources[0]);
    assert_eq!(rollbacks().len(), 2);

    let before = crate::util::listing(&sync);
    let out = run("rollback (nothing older)", h.offsync(["rollback"]));
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("no older verified release"),
        "{}",
        all_output(&out)
    );
    assert_eq!(crate::util::listing(&sync), before, "nothing changed");
    assert_eq!(rollbacks().len(), 3);

    for bad in ["nonsense/../x", "../releases", "-x"] {
        let out = run(
            &format!("rollback --to {bad}"),
            h.offsync(["rollback", "--to", bad]),
        );
        assert_eq!(out.status.code(), Some(64), "{}", all_output(&out));
        assert_eq!(crate::util::listing(&sync), before, "nothing changed");
    }
    assert_eq!(
        rollbacks().len(),
        3,
        "bad input is refused before any connection"
    );
    let out = run(
        "rollback --to an unknown id",
        h.offsync(["rollback", "--to", "20200101T000000.000Z-00000000"]),
    );
    assert_eq!(out.status.code(), Some(64), "{}", all_output(&out));
    assert_eq!(crate::util::listing(&sync), before, "nothing changed");

    let recs = rollbacks();
    eprintln!(
        "rollback records: {:?}",
        recs.iter()
            .map(|r| (r["status"].clone(), r["release"].clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(recs.len(), 4, "one record per rollback that ran: {recs:?}");
    assert_eq!(recs[0]["status"], "ok");
    assert_eq!(recs[0]["release"], ids[1].as_str());
    assert!(recs[0]["switched_at"].is_string());
    assert_eq!(recs[1]["status"], "ok");
    assert_eq!(recs[1]["release"], ids[0].as_str());
    assert_eq!(recs[2]["status"], "failed");
    assert_eq!(recs[3]["status"], "failed");
    // Forward again to the newest by id.
    let out = run("rollback --to C", h.offsync(["rollback", "--to", &ids[2]]));
    assert!(out.status.success());
    assert_eq!(tree(&sync.join("current")), sources[2]);
}

/// Attack 7: SIGKILL to `offsync apply` (its whole process group: ssh and rsync too) at random
/// moments of a release apply: `current` always points at one whole release (exactly the
/// old or exactly the new version), and the next apply succeeds and switches.
#[test]
fn sigkill_during_a_release_apply_leaves_current_whole() {
    if !skip_unless_tools() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let w = releases_world(1);
    let h = &w.home;
    let needle = home_needle(h);
    let _guard = KillMatchingOnDrop(needle.clone());
    let sync = w.sshd().sync_dir();
    let mut rng = Prng::from_env_or_time("releases sigkill");
    let (dirs, per) = (10, 60);
    write_versioned(&w.source, dirs, per, "v0");
    let start = Instant::now();
    let out = run("apply v0", h.offsync(["apply", "--yes"]));
    assert!(out.status.success());
    let apply_ms = start.elapsed().as_millis() as u64;
    let mut live = snapshot(&w.source);
    let mut outcomes = Vec::new();
    let trials = 4;
    for t in 1..=trials {
        let v = format!("v{t}");
        write_versioned(&w.source, dirs, per, &v);
        let new = snapshot(&w.source);
        // Stratified: trial t dies somewhere in the t-th slice of 0..2× the first apply,
        // so early (plan, upload) and late (verify, switch, prune) moments are all hit.
        let slice = apply_ms * 2 / trials;
        let delay = rng.range((t - 1) * slice, t * slice);
        let mut cmd = h.offsync_std();
        cmd.args(["apply", "--yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        send_signal(-i64::from(child.id()), "KILL");
        let status = wait_child(&mut child, Duration::from_secs(30)).expect("offsync exits");
        if !wait_no_procs(&needle, Duration::from_secs(5)).is_empty() {
            kill_matching(&needle);
        }
        // The target's side of a killed connection goes away on its own.
        let left = wait_no_procs(sync.as_os_str().as_encoded_bytes(), Duration::from_secs(10));
        let cur = current_id(&sync);
        let got = tree(&sync.join("current"));
        let which = if got == new {
            live = new;
            "new"
        } else if got == live {
            "old"
        } else {
            panic!(
                "trial {t}: current -> {cur} is neither the old nor the new tree (killed after {delay} ms)"
            )
        };
        eprintln!(
            "trial {t}: SIGKILL after {delay} ms of ~{apply_ms}: {status}; current -> {cur} ({which} version); {} release dirs; target procs left {}",
            release_dirs(&sync).len(),
            left.len()
        );
        outcomes.push(which);
    }
    let out = run(
        "apply after the kills",
        h.offsync(["apply", "--yes", "--json"]),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let final_id = current_id(&sync);
    assert_eq!(tree(&sync.join("current")), snapshot(&w.source));
    match rows(&out).get("t1") {
        Some(r) if r["status"] != "unchanged" => {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["release"], final_id.as_str(), "{r}");
            assert!(r["switched_at"].is_string(), "{r}");
        }
        // The last "killed" apply had finished and switched: nothing left to do.
        _ => assert_eq!(outcomes.last(), Some(&"new"), "{}", all_output(&out)),
    }
    let l = listed(h);
    eprintln!(
        "outcomes {outcomes:?}; after the recovery apply current -> {final_id}; releases {:?}",
        l["t1"].1
    );
    // The record is written before the upload starts: no killed run leaves a directory
    // nobody recorded, and the recovery apply pruned the failed ones.
    assert!(
        l["t1"].1.values().all(|s| s == "verified"),
        "{:?}",
        l["t1"].1
    );
    assert_eq!(
        release_dirs(&sync),
        l["t1"].1.keys().cloned().collect::<Vec<_>>()
    );
    let out = run("verify", h.offsync(["verify"]));
    assert!(out.status.success());
}

/// Attack 8: A forced command that now points at another directory is refused by plan, apply,
/// releases and rollback with the not-confined message, and nothing is written anywhere.
#[test]
fn releases_commands_refuse_a_forced_command_pointing_elsewhere() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    let _guard = KillMatchingOnDrop(home_needle(h));
    let sshd = w.sshd();
    let sync = sshd.sync_dir();
    w.write("a.txt", b"1");
    assert!(
        run("apply 1", h.offsync(["apply", "--yes"]))
            .status
            .success()
    );
    w.write("a.txt", b"2");
    assert!(
        run("apply 2", h.offsync(["apply", "--yes"]))
            .status
            .success()
    );

    let other = sshd.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let ak = std::fs::read_to_string(sshd.authorized_keys()).unwrap();
    let from = sync.display().to_string();
    assert!(ak.contains(&from));
    std::fs::write(
        sshd.authorized_keys(),
        ak.replace(&from, &other.display().to_string()),
    )
    .unwrap();
    let before = crate::util::listing(&sync);
    let records = std::fs::read(h.home.join("releases/t1.json")).unwrap();
    w.write("a.txt", b"3");
    let first = release_dirs(&sync)[0].clone();
    for args in [
        &["plan"][..],
        &["apply", "--yes"],
        &["releases"],
        &["rollback"],
        &["rollback", "--to", &first],
    ] {
        let out = run(&args.join(" "), h.offsync(args));
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            all_output(&out).contains("not confined"),
            "{args:?}: {}",
            all_output(&out)
        );
        assert!(
            std::fs::read_dir(&other).unwrap().next().is_none(),
            "{args:?} wrote into the other directory"
        );
        assert_eq!(crate::util::listing(&sync), before, "{args:?}");
        assert_eq!(
            std::fs::read(h.home.join("releases/t1.json")).unwrap(),
            records,
            "{args:?} changed the records"
        );
    }
    eprintln!("plan, apply, releases, rollback: all refused as not confined; nothing written");
}

/// Attack 9: `offsync releases` shows a release directory made by hand on the target as `unknown`
/// and a recorded release removed by hand as `missing`.
#[test]
fn releases_lists_hand_made_dirs_as_unknown_and_removed_ones_as_missing() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    let sync = w.sshd().sync_dir();
    w.write("a.txt", b"1");
    assert!(
        run("apply 1", h.offsync(["apply", "--yes"]))
            .status
            .success()
    );
    let first = current_id(&sync);
    w.write("a.txt", b"2");
    assert!(
        run("apply 2", h.offsync(["apply", "--yes"]))
            .status
            .success()
    );
    let second = current_id(&sync);

    let hand = "20200101T000000.000Z-0badc0de";
    std::fs::create_dir_all(sync.join("releases").join(hand)).unwrap();
    std::fs::write(sync.join("releases").join(hand).join("x"), b"by hand").unwrap();
    std::fs::remove_dir_all(sync.join("releases").join(&first)).unwrap();

    let l = listed(h);
    let (cur, states) = &l["t1"];
    eprintln!("releases --json: current {cur:?}, {states:?}");
    assert_eq!(cur.as_deref(), Some(second.as_str()));
    assert_eq!(states.get(hand).map(String::as_str), Some("unknown"));
    assert_eq!(states.get(&first).map(String::as_str), Some("missing"));
    assert_eq!(states.get(&second).map(String::as_str), Some("verified"));
    assert_eq!(states.len(), 3);
    let out = run("releases", h.offsync(["releases"]));
    assert!(out.status.success());
    let text = stdout(&out);
    for (id, state) in [(hand, "unknown"), (first.as_str(), "missing")] {
        assert!(
            text.lines().any(|l| l.contains(id) && l.contains(state)),
            "{id} {state}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.contains(&second) && l.trim_start().starts_with('*')),
        "current marked:\n{text}"
    );

    // Rolling back to the release removed by hand fails and changes nothing.
    let before = crate::util::listing(&sync);
    let out = run(
        "rollback --to the removed release",
        h.offsync(["rollback", "--to", &first]),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        all_output(&out).contains("no longer on"),
        "{}",
        all_output(&out)
    );
    assert_eq!(current_id(&sync), second);
    assert_eq!(crate::util::listing(&sync), before);
}
