//! Randomized kill trials: offsync is signalled at a random moment of `apply --yes --delete`
//! against two real targets, and every trial checks the promises that must survive it.
//!
//! Per trial: part of the source is rewritten (new contents, new files, removed files), each
//! target's directory is snapshotted, offsync is started and, after a random delay biased
//! towards the transfer, the signal goes to the offsync PID alone (not its group: that is what
//! `kill PID`, systemd's `KillMode=process` or an OOM kill do). Then:
//! - within 2 s no process whose argv mentions the controller home is left (ssh
//!   ControlMaster, rsync, ssh all carry `…/id_ed25519`);
//! - no file at a final path on a target holds anything but its old or its new content;
//! - SIGTERM/SIGINT/SIGHUP: exit 128+signal (or 0 when the apply had completed) and one new
//!   operations.log record per target (`interrupted`, or `ok`);
//! - the next `apply --yes --delete` succeeds at its first try, `verify` exits 0, the targets
//!   equal the source, and `$OFFSYNC_HOME/tmp` keeps nothing from the killed run.
//!
//! The seed is printed (`OFFSYNC_FAULT_SEED` replays it). `OFFSYNC_FAULT_TRIALS=K` multiplies
//! the trial counts (`scripts/test --full`: K = 9, so 108 SIGKILL trials). A trial's
//! failures are collected and the run stops after three failing trials, so one report shows
//! every broken promise instead of the first.

use crate::util::{
    KillMatchingOnDrop, Prng, World, home_needle, kill_matching, oplog, send_signal,
    skip_unless_tools, snapshot, snapshot_sans_marker, wait_child, wait_no_procs,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// The trial multiplier from `OFFSYNC_FAULT_TRIALS` (default 1).
fn multiplier() -> usize {
    std::env::var("OFFSYNC_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// How a process ended, for messages: `exit 143` or `killed by signal 15`.
fn describe(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig} (no handler ran)"),
        _ => format!("{s:?}"),
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "KILL" => 9,
        "TERM" => 15,
        other => panic!("unknown signal {other}"),
    }
}

/// A world of two targets and a source of big and small files that trials rewrite.
struct Fixture {
    w: World,
    rng: Prng,
    big: Vec<String>,
    small: Vec<String>,
    next_name: u64,
    needle: Vec<u8>,
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let w = World::fast(2);
        let needle = home_needle(&w.home);
        let mut f = Fixture {
            w,
            rng: Prng::from_env_or_time(label),
            big: Vec::new(),
            small: Vec::new(),
            next_name: 0,
            needle,
        };
        for _ in 0..3 {
            f.add_big();
        }
        for _ in 0..300 {
            f.add_small();
        }
        f.w.home
            .offsync(["apply", "--yes", "--delete"])
            .assert()
            .success();
        f
    }

    fn write(&mut self, rel: &str, len: usize) {
        let mut content = format!("{rel} v{}\n", self.rng.next_u64()).into_bytes();
        content.extend(self.rng.bytes(len));
        self.w.write(rel, &content);
    }

    fn fresh_name(&mut self) -> u64 {
        self.next_name += 1;
        self.next_name
    }

    fn add_big(&mut self) {
        let rel = format!("big/b{}.bin", self.fresh_name());
        let len = self.rng.range(2 << 20, 8 << 20) as usize;
        self.write(&rel, len);
        self.big.push(rel);
    }

    fn add_small(&mut self) {
        let n = self.fresh_name();
        let rel = format!("s{}/f{n}.txt", n % 10);
        let len = self.rng.range(50, 3000) as usize;
        self.write(&rel, len);
        self.small.push(rel);
    }

    fn remove(&mut self, big: bool) {
        let list = if big { &mut self.big } else { &mut self.small };
        if list.is_empty() {
            return;
        }
        let i = (self.rng.next_u64() % list.len() as u64) as usize;
        let rel = list.swap_remove(i);
        std::fs::remove_file(self.w.source.join(rel)).unwrap();
    }

    /// Rewrite part of the source: one big file, 20–40 small ones, add and remove some.
    fn mutate(&mut self) {
        {
            let i = (self.rng.next_u64() % self.big.len() as u64) as usize;
            let rel = self.big[i].clone();
            let len = self.rng.range(2 << 20, 8 << 20) as usize;
            self.write(&rel, len);
        }
        if self.big.len() < 5 && self.rng.chance(30) {
            self.add_big();
        } else if self.big.len() > 2 && self.rng.chance(30) {
            self.remove(true);
        }
        for _ in 0..self.rng.range(20, 40) {
            let i = (self.rng.next_u64() % self.small.len() as u64) as usize;
            let rel = self.small[i].clone();
            let len = self.rng.range(50, 3000) as usize;
            self.write(&rel, len);
        }
        for _ in 0..self.rng.range(5, 15) {
            self.add_small();
        }
        for _ in 0..self.rng.range(5, 15) {
            self.remove(false);
        }
    }

    /// 0–1500 ms, biased towards the transfer phase (after planning, before verification).
    /// A handled signal waits at least 30 ms: before offsync's `main` runs (exec, dynamic
    /// loading) no program can have a handler, and that window is not what is tested here.
    fn delay(&mut self, signal: &str) -> Duration {
        let ms = if self.rng.chance(70) {
            self.rng.range(150, 1100)
        } else {
            self.rng.range(0, 1500)
        };
        let min = if signal == "KILL" { 0 } else { 30 };
        Duration::from_millis(ms.max(min))
    }

    fn tmp_entries(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.w.home.home.join("tmp"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One trial; returns the broken promises (empty when all held).
    fn trial(&mut self, i: usize, n: usize, signal: &str) -> Vec<String> {
        let mut failures = Vec::new();
        let t_trial = Instant::now();
        self.mutate();
        let mutate_ms = t_trial.elapsed().as_millis();
        let old: Vec<Tree> = self
            .w
            .targets
            .iter()
            .map(|t| snapshot(&t.sync_dir()).into_iter().collect())
            .collect();
        let new: Tree = snapshot(&self.w.source).into_iter().collect();
        let log_before = oplog(&self.w.home).len();
        let tmp_before = self.tmp_entries();
        let (status, out_text) = self.step_signal_a_running_apply(i, n, signal, &mut failures);
        self.step_children_die_with_offsync(&mut failures);
        let tmp_after_kill: BTreeSet<String> = self
            .tmp_entries()
            .difference(&tmp_before)
            .cloned()
            .collect();
        self.step_no_file_holds_anything_but_old_or_new_content(&old, &new, &mut failures);
        if signal != "KILL" {
            self.step_a_handled_signal_exits_128_plus_and_logs_each_target(
                signal,
                &status,
                &out_text,
                log_before,
                &mut failures,
            );
        }
        let t_next = Instant::now();
        self.step_the_next_apply_recovers_and_leaves_nothing(&tmp_after_kill, &mut failures);
        eprintln!(
            "trial {i}/{n}: {} ms in all (source rewrite {mutate_ms} ms, recovery apply + verify \
             {} ms)",
            t_trial.elapsed().as_millis(),
            t_next.elapsed().as_millis()
        );
        for f in &failures {
            eprintln!("trial {i}/{n}: FAILED: {f}");
        }
        failures
    }

    /// Start `apply --yes --delete`, send `signal` to offsync alone after a random delay, and
    /// wait for it (30 s at most, then SIGKILL and a failure). Returns its status and output.
    fn step_signal_a_running_apply(
        &mut self,
        i: usize,
        n: usize,
        signal: &str,
        failures: &mut Vec<String>,
    ) -> (ExitStatus, String) {
        let out_dir = self.w.home.tmp.path().join(format!("trial-{signal}-{i}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let delay = self.delay(signal);
        eprintln!(
            "trial {i}/{n}: SIG{signal} after {} ms ({} big, {} small files)",
            delay.as_millis(),
            self.big.len(),
            self.small.len()
        );

        let mut child = self
            .w
            .home
            .offsync_std()
            .args(["apply", "--yes", "--delete"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out_dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(out_dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        std::thread::sleep(delay);
        send_signal(i64::from(child.id()), signal);
        let status = match wait_child(&mut child, Duration::from_secs(30)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let s = child.wait().unwrap();
                failures.push(format!(
                    "offsync did not exit within 30 s of SIG{signal} (then SIGKILLed)"
                ));
                s
            }
        };
        let out_text = format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&std::fs::read(out_dir.join("stdout")).unwrap_or_default()),
            String::from_utf8_lossy(&std::fs::read(out_dir.join("stderr")).unwrap_or_default())
        );
        eprintln!(
            "trial {i}/{n}: offsync ended after {} ms: {}",
            started.elapsed().as_millis(),
            describe(&status)
        );
        (status, out_text)
    }

    /// Promise 1: children die with offsync: within 2 s no process mentions the controller
    /// home.
    fn step_children_die_with_offsync(&self, failures: &mut Vec<String>) {
        let left = wait_no_procs(&self.needle, Duration::from_secs(2));
        if !left.is_empty() {
            let list: Vec<String> = left
                .iter()
                .map(|(p, c)| format!("  {p}: {}", short_cmdline(c)))
                .collect();
            failures.push(format!(
                "{} process(es) outlived offsync by 2 s:\n{}",
                left.len(),
                list.join("\n")
            ));
            // Clean up so the next checks see a quiet target.
            kill_matching(&self.needle);
            let _ = wait_no_procs(&self.needle, Duration::from_secs(5));
        }
    }

    /// Promise 2: no file at a final path on a target holds anything but its old or its new
    /// content.
    fn step_no_file_holds_anything_but_old_or_new_content(
        &self,
        old: &[Tree],
        new: &Tree,
        failures: &mut Vec<String>,
    ) {
        for (t, old) in self.w.targets.iter().zip(old) {
            for (path, content) in snapshot(&t.sync_dir()) {
                if ignored(&path) || content == b"<dir>" {
                    continue;
                }
                let ok = old.get(&path) == Some(&content) || new.get(&path) == Some(&content);
                if !ok {
                    failures.push(format!(
                        "target port {}: {} holds neither its old nor its new content \
                         ({} bytes; old {:?} bytes, new {:?} bytes)",
                        t.port,
                        String::from_utf8_lossy(&path),
                        content.len(),
                        old.get(&path).map(Vec::len),
                        new.get(&path).map(Vec::len),
                    ));
                }
            }
        }
    }

    /// Promise 3: a handled signal: 128+signal (or 0 when done) and one new record per target.
    fn step_a_handled_signal_exits_128_plus_and_logs_each_target(
        &self,
        signal: &str,
        status: &ExitStatus,
        out_text: &str,
        log_before: usize,
        failures: &mut Vec<String>,
    ) {
        let want = 128 + signal_number(signal);
        let code = status.code();
        if code != Some(want) && code != Some(0) {
            failures.push(format!(
                "SIG{signal}: expected exit {want} (or 0 when completed), got {}\n{out_text}",
                describe(status)
            ));
        }
        let records: Vec<serde_json::Value> =
            oplog(&self.w.home).into_iter().skip(log_before).collect();
        for name in ["t1", "t2"] {
            let mine: Vec<&serde_json::Value> =
                records.iter().filter(|r| r["target"] == name).collect();
            let statuses: Vec<String> = mine.iter().map(|r| r["status"].to_string()).collect();
            let good = mine.len() == 1
                && (mine[0]["status"] == "interrupted" || mine[0]["status"] == "ok")
                && (code != Some(0) || mine[0]["status"] == "ok");
            if !good {
                failures.push(format!(
                    "SIG{signal} ({}): want one new `interrupted` (or `ok`) record for \
                     {name}, got {statuses:?}",
                    describe(status)
                ));
            }
        }
    }

    /// Promise 4: the next apply succeeds at its first try; verify agrees; the targets equal the
    /// source; nothing of the killed run is left in `$OFFSYNC_HOME/tmp`, no process either.
    fn step_the_next_apply_recovers_and_leaves_nothing(
        &self,
        tmp_after_kill: &BTreeSet<String>,
        failures: &mut Vec<String>,
    ) {
        let next = self
            .w
            .home
            .offsync(["apply", "--yes", "--delete"])
            .output()
            .unwrap();
        if next.status.code() != Some(0) {
            failures.push(format!(
                "the apply after the killed one failed ({}):\n{}{}",
                describe(&next.status),
                String::from_utf8_lossy(&next.stdout),
                String::from_utf8_lossy(&next.stderr)
            ));
        } else {
            let verify = self.w.home.offsync(["verify"]).output().unwrap();
            if verify.status.code() != Some(0) {
                failures.push(format!(
                    "verify after the recovery apply: {}\n{}",
                    describe(&verify.status),
                    String::from_utf8_lossy(&verify.stdout)
                ));
            }
            // rsync's holding dirs (`--delay-updates --partial`) may keep a partial file of the
            // killed run; they are always excluded, so they are not compared.
            let expected = snapshot(&self.w.source);
            for t in &self.w.targets {
                let mut got = snapshot_sans_marker(&t.sync_dir());
                got.retain(|(p, _)| !ignored(p));
                if got != expected {
                    failures.push(format!(
                        "target port {} differs from the source after the recovery apply",
                        t.port
                    ));
                }
            }
        }
        let still: Vec<&String> = tmp_after_kill
            .iter()
            .filter(|e| self.w.home.home.join("tmp").join(e).exists())
            .collect();
        if !still.is_empty() {
            failures.push(format!(
                "scratch left by the killed run is still in $OFFSYNC_HOME/tmp after the next \
                 apply: {still:?}"
            ));
        }
        let left = wait_no_procs(&self.needle, Duration::from_secs(2));
        if !left.is_empty() {
            failures.push(format!("processes left after the recovery apply: {left:?}"));
            kill_matching(&self.needle);
        }
    }
}

/// A long ssh/rsync cmdline without its `-o Key=value` noise (ControlMaster kept), so a
/// report shows what the process was.
fn short_cmdline(c: &str) -> String {
    let words: Vec<&str> = c.split(' ').collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "-o" && i + 1 < words.len() && !words[i + 1].starts_with("ControlMaster") {
            i += 2;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

/// rsync's holding dir, its temp files (`.NAME.XXXXXX`) and offsync's marker are not final
/// paths.
fn ignored(path: &[u8]) -> bool {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    if p.components().any(|c| c.as_os_str() == ".~tmp~") {
        return true;
    }
    let name = p.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    if crate::util::is_marker(name) {
        return true;
    }
    // `.NAME.XXXXXX`: a leading dot, then a dot and six characters at the end.
    name.len() > 8
        && name[0] == b'.'
        && name[name.len() - 7] == b'.'
        && name[name.len() - 6..].iter().all(u8::is_ascii_alphanumeric)
}

/// Run `n` trials with `signal`; panic with every failure at the end (or after three failing
/// trials).
fn run_trials(signal: &str, n: usize) {
    let started = Instant::now();
    let mut f = Fixture::new(&format!("SIG{signal} trials"));
    let _guard = KillMatchingOnDrop(f.needle.clone());
    let mut failed: Vec<(usize, Vec<String>)> = Vec::new();
    for i in 1..=n {
        let fails = f.trial(i, n, signal);
        if !fails.is_empty() {
            failed.push((i, fails));
            if failed.len() >= 3 {
                eprintln!("stopping after three failing trials");
                break;
            }
        }
    }
    eprintln!(
        "SIG{signal}: {n} trials planned, {} failed, {:.1} s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        let text: Vec<String> = failed
            .iter()
            .map(|(i, fs)| format!("trial {i}:\n- {}", fs.join("\n- ")))
            .collect();
        panic!("SIG{signal} trials broke promises:\n{}", text.join("\n"));
    }
}

#[test]
fn sigkill_of_offsync_alone_leaves_no_children_and_no_torn_files() {
    if !skip_unless_tools() {
        return;
    }
    run_trials("KILL", 12 * multiplier());
}

#[test]
fn sigterm_exits_143_logs_interrupted_and_leaves_no_children() {
    if !skip_unless_tools() {
        return;
    }
    run_trials("TERM", 5 * multiplier());
}

#[test]
fn sigint_to_offsync_alone_exits_130_logs_interrupted_and_leaves_no_children() {
    if !skip_unless_tools() {
        return;
    }
    run_trials("INT", 5 * multiplier());
}

#[test]
fn sighup_exits_129_and_logs_a_record() {
    if !skip_unless_tools() {
        return;
    }
    run_trials("HUP", 3 * multiplier());
}

/// `plan --json` interrupted — by SIGINT to offsync alone, or to its whole process group as a
/// terminal's Ctrl-C does — exits 130 and prints no plan: a script piping the plan somewhere
/// must never read half a plan, nor a whole plan that was never finished.
#[test]
fn sigint_during_plan_json_exits_130_and_prints_no_plan() {
    use std::os::unix::process::CommandExt;
    if !skip_unless_tools() {
        return;
    }
    let mut rng = Prng::from_env_or_time("plan --json SIGINT");
    let w = World::fast(2);
    let needle = home_needle(&w.home);
    let _guard = KillMatchingOnDrop(needle.clone());
    for i in 0..400 {
        let mut c = format!("small {i}\n").into_bytes();
        c.extend(rng.bytes(500));
        w.write(&format!("d{}/f{i}", i % 20), &c);
    }
    for i in 0..4 {
        w.write(&format!("big{i}"), &rng.bytes(4 << 20));
    }
    // How long an uninterrupted plan takes here (after a first one filled the hash cache).
    w.home.offsync(["plan", "--json"]).assert().success();
    let t0 = Instant::now();
    w.home.offsync(["plan", "--json"]).assert().success();
    let plan_ms = t0.elapsed().as_millis() as u64;
    eprintln!("an uninterrupted plan --json takes {plan_ms} ms");

    let trials = 6 * multiplier();
    let mut interrupted = 0;
    for i in 1..=trials {
        let group = i % 2 == 0;
        // At least 30 ms: see `Fixture::delay`.
        let delay = rng.range((plan_ms / 10).max(30), (plan_ms * 6 / 10).max(60));
        eprintln!(
            "trial {i}/{trials}: SIGINT to {} after {delay} ms",
            if group {
                "the process group"
            } else {
                "offsync alone"
            }
        );
        let out_file: PathBuf = w.home.tmp.path().join(format!("plan-{i}.json"));
        let mut cmd = w.home.offsync_std();
        cmd.args(["plan", "--json"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(Stdio::null());
        if group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let pid = i64::from(child.id());
        send_signal(if group { -pid } else { pid }, "INT");
        let status = wait_child(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("trial {i}: plan did not exit within 30 s of SIGINT");
        });
        let left = wait_no_procs(&needle, Duration::from_secs(2));
        let out = std::fs::read(&out_file).unwrap();
        match status.code() {
            Some(130) => {
                interrupted += 1;
                assert!(
                    out.is_empty(),
                    "trial {i}: an interrupted plan printed {} bytes on stdout: {}",
                    out.len(),
                    String::from_utf8_lossy(&out[..out.len().min(300)])
                );
            }
            Some(0) => {
                // The plan was complete before the signal landed: then it is a whole plan.
                let v: serde_json::Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("trial {i}: exit 0 with a broken plan: {e}"));
                assert_eq!(v["format"], "offsync-plan/1");
            }
            _ => panic!(
                "trial {i}: SIGINT during plan --json: expected exit 130, got {}; stdout had \
                 {} bytes; {} process(es) outlived it",
                describe(&status),
                out.len(),
                left.len()
            ),
        }
        let shown: Vec<String> = left
            .iter()
            .map(|(p, c)| format!("{p}: {}", short_cmdline(c)))
            .collect();
        if !left.is_empty() {
            kill_matching(&needle);
        }
        assert!(
            left.is_empty(),
            "trial {i}: processes outlived the interrupted plan: {shown:?}"
        );
    }
    assert!(
        interrupted > 0,
        "no trial interrupted the plan (each finished within its delay); not exercised"
    );
}

/// The exec wrapper that rsync starts ssh through may run only after rsync, and offsync, are
/// gone (a SIGKILL while a loaded machine is still loading the wrapper): its parent-death
/// signal then comes too late, so it must see on its own that offsync has exited. A Python
/// parent stands in for rsync and hands the wrapper the lifeline's read end, once with a live
/// writer (offsync running: the program runs, without the descriptor or the variable) and once
/// with the writer closed (offsync gone: the program never starts).
#[test]
fn the_rsh_wrapper_never_starts_ssh_once_offsync_is_gone() {
    if !skip_unless_tools() {
        return;
    }
    let script = r#"
import os, subprocess, sys
for alive in (True, False):
    r, w = os.pipe()
    os.set_inheritable(r, True)
    if not alive:
        os.close(w)
    env = dict(os.environ, OFFSYNC_LIFELINE_FD=str(r))
    p = subprocess.run([sys.argv[1], "__exec-dying-with-parent", "sh", "-c",
                        'echo ran; [ -e /proc/self/fd/%d ] && echo leaked-fd; env | grep -q LIFELINE && echo leaked-env; true' % r],
                       env=env, pass_fds=(r,), capture_output=True, text=True)
    print("alive" if alive else "gone", p.returncode, p.stdout.replace("\n", " ").strip())
    os.close(r)
    if alive:
        os.close(w)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(assert_cmd::cargo::cargo_bin("offsync"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "alive 0 ran\ngone 255 \n", "wrapper behaviour");
}
