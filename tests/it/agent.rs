//! `pull --watch`: a fleet of pulling agents (separate homes and destinations, one mirror)
//! converges on each new generation within 3 poll intervals, byte-identical; a hook that
//! fails rolls its host back and the bad generation is not pulled again until a newer one
//! appears; SIGTERM between cycles stops an agent cleanly; an agent SIGKILLed mid-pull
//! recovers on its next start; the config file and the systemd units.
//!
//! The default suite runs 5 agents on a local-directory mirror; `scripts/test --full` runs
//! 20 on moto (a real S3 server on loopback) and 20 on a directory too.

use crate::mirror::{Backend, Mirror};
use crate::util::{AWS_ENV, Home, KillOnDrop, full_run, listing, oplog, send_signal, stderr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The poll interval of the 5-agent fleet and the other tests (seconds).
const INTERVAL: u64 = 1;

/// One pulling host: its own OFFSYNC_HOME, DEST, config file, status file and hook log.
struct Agent {
    home: Home,
    dest: PathBuf,
    config: PathBuf,
    status: PathBuf,
    hook_log: PathBuf,
    child: Option<KillOnDrop>,
}

impl Agent {
    /// A host whose `pull.yaml` names everything but the interval (given as a flag, which
    /// must win over the file's).
    fn new(m: &Mirror) -> Agent {
        let home = Home::new();
        let dir = home.tmp.path().to_path_buf();
        let dest = dir.join("srv app");
        let status = dir.join("status.json");
        let hook_log = dir.join("hook.log");
        let config = dir.join("pull.yaml");
        // The hook fails for a release holding `bad`, and logs every run.
        let hook = format!(
            "echo \"$OFFSYNC_GENERATION ${{OFFSYNC_ROLLED_BACK_FROM:-}} $AWS_SECRET_ACCESS_KEY\" >> '{}'; test ! -e \"$OFFSYNC_RELEASE/bad\" || exit 7",
            hook_log.display()
        );
        let mut yaml = format!(
            "version: 1\nmirror: {:?}\nidentity: {:?}\ntrust: [{:?}]\ndest: {:?}\nlayout: releases\nkeep: 3\ninterval: 3600\nexec: {:?}\nrollback_on_hook_failure: true\nstatus_file: {:?}\n",
            m.url,
            m.identity().display().to_string(),
            m.home.pub_key().display().to_string(),
            dest.display().to_string(),
            hook,
            status.display().to_string(),
        );
        if let Some(e) = &m.endpoint {
            yaml.push_str(&format!("endpoint: {e:?}\n"));
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        yaml.push_str(&format!("heartbeat: true\nhost_id: host-{n:03}\n"));
        std::fs::write(&config, yaml).unwrap();
        Agent {
            home,
            dest,
            config,
            status,
            hook_log,
            child: None,
        }
    }

    fn start(&mut self) {
        self.start_with(INTERVAL);
    }

    fn start_with(&mut self, interval: u64) {
        let log = std::fs::File::create(self.home.tmp.path().join("agent.log")).unwrap();
        let child = self
            .home
            .offsync_std()
            .envs(AWS_ENV)
            .args([
                "pull",
                "--watch",
                "--interval",
                &interval.to_string(),
                "--config",
            ])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(KillOnDrop(child));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.tmp.path().join("agent.log")).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read(&self.status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The generation DEST/current points at.
    fn current(&self) -> Option<u64> {
        std::fs::read_link(self.dest.join("current"))
            .ok()?
            .to_str()?
            .strip_prefix("releases/")?
            .parse()
            .ok()
    }

    fn hook_runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

/// Wait until `done` holds for every agent; the time it took. Fails naming the agents that
/// did not get there by `limit`.
fn until(agents: &[Agent], limit: Duration, what: &str, done: impl Fn(&Agent) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if agents.iter().all(&done) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let late: Vec<String> = agents
                .iter()
                .enumerate()
                .filter(|(_, a)| !done(a))
                .map(|(i, a)| {
                    format!(
                        "agent {i}: current {:?} {:?} status {} log {}",
                        a.current(),
                        std::fs::read_link(a.dest.join("current")),
                        a.status(),
                        a.log()
                    )
                })
                .collect();
            panic!("{what}: not after {limit:?}:\n{}", late.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Write `n` small files tagged `tag`, then apply to the mirror once.
fn publish(m: &Mirror, n: usize, tag: &str) {
    for i in 0..n {
        let p = m.source.join(format!("d{}/f{i}", i % 4));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{tag} {i}\n")).unwrap();
    }
    let out = m.apply(&["--delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The fleet scenario with `n` agents polling every `interval` seconds on `backend` (see the
/// module docs).
fn fleet(backend: Backend, n: usize, interval: u64) {
    let Some(m) = Mirror::new(backend) else {
        return;
    };
    publish(&m, 40, "gen1");
    let mut agents: Vec<Agent> = (0..n).map(|_| Agent::new(&m)).collect();
    for a in &mut agents {
        a.start_with(interval);
    }
    let interval = Duration::from_secs(interval);
    // Start-up is a full pull (and the first build of every host's hash cache).
    until(
        &agents,
        Duration::from_secs(60),
        "generation 1 everywhere",
        |a| a.current() == Some(1) && a.status()["last_generation"] == 1,
    );

    // The controller applies generation 2 once; every agent has it within 3 poll intervals
    // (measured from the end of the apply to each agent's `last_update`).
    publish(&m, 40, "gen2");
    let applied = chrono::Utc::now();
    until(
        &agents,
        3 * interval + Duration::from_secs(5),
        "generation 2 everywhere",
        |a| a.current() == Some(2) && a.status()["last_generation"] == 2,
    );
    let took = agents
        .iter()
        .map(|a| {
            let s = a.status();
            let at =
                chrono::DateTime::parse_from_rfc3339(s["last_update"].as_str().unwrap()).unwrap();
            (at.with_timezone(&chrono::Utc) - applied)
                .to_std()
                .unwrap_or_default()
        })
        .max()
        .unwrap();
    eprintln!(
        "{n} agents on {backend:?}: the last converged {took:?} after the apply (interval {interval:?})"
    );
    assert!(
        took <= 3 * interval,
        "converged after {took:?}, more than 3 poll intervals"
    );
    let want = listing(&m.source);
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(
            listing(&a.dest.join("current")),
            want,
            "agent {i}: DEST differs"
        );
        let s = a.status();
        assert_eq!(s["format"], "offsync-pull-status/1");
        assert_eq!(s["consecutive_failures"], 0);
        assert_eq!(s["hook"]["ok"], true, "{s}");
        let runs = a.hook_runs();
        // The hook ran once per new generation, with no credential in its environment.
        assert_eq!(runs, ["1", "2"], "agent {i}");
    }

    // Generation 3 makes every hook fail: each host rolls back to 2, reports it, and does not
    // pull 3 again however many cycles pass.
    std::fs::write(m.source.join("bad"), "x").unwrap();
    publish(&m, 40, "gen3");
    until(
        &agents,
        3 * interval + Duration::from_secs(5),
        "rolled back everywhere",
        |a| {
            a.status()["failed_generation"] == 3
                && a.current() == Some(2)
                && a.hook_runs().len() == 4
        },
    );
    std::thread::sleep(2 * interval);
    for (i, a) in agents.iter().enumerate() {
        let s = a.status();
        assert_eq!(a.current(), Some(2), "agent {i}: {s}");
        assert_eq!(s["failed_generation"], 3, "agent {i}: {s}");
        assert_eq!(s["last_generation"], 2, "agent {i}: {s}");
        assert_eq!(s["hook"]["exit_status"], 7, "agent {i}: {s}");
        // 3 failed once, then the hook ran again for the release rolled back to.
        assert_eq!(a.hook_runs(), ["1", "2", "3", "2 3"], "agent {i}");
        let log = oplog(&a.home);
        // Generations 1, 2 and 3 were each pulled once: 3 was not pulled again.
        let pulls = log
            .iter()
            .filter(|r| r["operation"].as_str().unwrap().starts_with("pull "))
            .count();
        assert_eq!(pulls, 3, "agent {i}: generation 3 pulled again? {log:?}");
        assert!(
            log.iter().any(|r| r["operation"]
                .as_str()
                .unwrap()
                .starts_with("pull-rollback ")
                && r["status"] == "ok"),
            "agent {i}: no rollback record"
        );
        assert!(
            log.iter().any(
                |r| r["operation"].as_str().unwrap().starts_with("pull-hook ")
                    && r["status"] == "failed"
                    && r["error"]
                        .as_str()
                        .unwrap()
                        .contains("exited with status 7")
            ),
            "agent {i}: no failed hook record"
        );
        let checks = log
            .iter()
            .filter(|r| r["operation"].as_str().unwrap().starts_with("pull-check "))
            .count();
        assert!(checks >= 4, "agent {i}: a record per cycle, got {checks}");
    }

    // A fixed generation 4 is pulled as usual.
    std::fs::remove_file(m.source.join("bad")).unwrap();
    publish(&m, 40, "gen4");
    until(
        &agents,
        3 * interval + Duration::from_secs(5),
        "generation 4 everywhere",
        |a| a.current() == Some(4) && a.status()["last_generation"] == 4,
    );
    // The controller sees every host at generation 4 through their signed heartbeats.
    let out = m.off(&["mirror", "fleet", "m", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = crate::mirror::json(&out.stdout);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), n, "{rows:?}");
    for r in rows {
        assert_eq!(r["heartbeat"]["generation"], 4, "{r}");
        assert!(r["key"].as_str().unwrap().starts_with("SHA256:"), "{r}");
    }
    let out = m.off(&["mirror", "fleet", "m"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), n + 1, "{text}");
    let want = listing(&m.source);
    for (i, a) in agents.iter_mut().enumerate() {
        assert_eq!(listing(&a.dest.join("current")), want, "agent {i}");
        assert_eq!(a.status()["failed_generation"], serde_json::Value::Null);
        // SIGTERM between cycles: a clean stop, exit 0, the status says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.status()["last_result"] != "unchanged" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = a.child.as_mut().unwrap();
        send_signal(child.0.id() as i64, "TERM");
        let st = crate::util::wait_child(&mut child.0, Duration::from_secs(10))
            .expect("the agent stops on SIGTERM");
        assert!(st.success(), "agent {i}: {st:?}\n{}", a.log());
        assert_eq!(a.status()["state"], "stopped");
    }
}

#[test]
fn five_agents_converge_roll_back_a_failing_hook_and_stop_on_sigterm() {
    fleet(Backend::Local, 5, INTERVAL);
}

/// `scripts/test --full`: 20 agents against moto, polling every 6 s (20 debug-build agents
/// pulling at once from one moto process on a loaded 2-core machine take 5–9 s; a poll
/// interval shorter than a pull measures the machine, not the agent).
#[test]
fn twenty_agents_on_s3_converge() {
    if !full_run() {
        eprintln!("SKIP: 20 agents on S3 run with scripts/test --full");
        return;
    }
    fleet(Backend::S3, 20, 6);
}

/// `scripts/test --full`: 20 agents on a local-directory mirror, polling every 3 s.
#[test]
fn twenty_agents_on_a_directory_converge() {
    if !full_run() {
        eprintln!("SKIP: 20 agents on a directory run with scripts/test --full");
        return;
    }
    fleet(Backend::Local, 20, 3);
}

/// An agent SIGKILLed while it builds a release leaves `current` where it was; started
/// again, it finishes the pull.
#[test]
fn an_agent_killed_mid_pull_recovers_on_its_next_start() {
    let Some(m) = Mirror::new(Backend::Local) else {
        return;
    };
    publish(&m, 20, "gen1");
    let mut a = Agent::new(&m);
    a.start();
    until(
        std::slice::from_ref(&a),
        Duration::from_secs(60),
        "generation 1",
        |a| a.current() == Some(1) && a.status()["last_generation"] == 1,
    );
    publish(&m, 800, "gen2");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed as soon as the new release is being built.
    while !std::fs::read_dir(a.dest.join("releases"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".build"))
    {
        assert!(
            Instant::now() < deadline,
            "the pull never started: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut child = a.child.take().unwrap();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(a.current(), Some(1), "current moved to a partial release");
    assert_eq!(
        std::fs::read(a.dest.join("current/d0/f0")).unwrap(),
        b"gen1 0\n"
    );
    a.start();
    until(
        std::slice::from_ref(&a),
        Duration::from_secs(60),
        "generation 2 after a restart",
        |a| a.current() == Some(2) && a.status()["last_generation"] == 2,
    );
    assert_eq!(listing(&a.dest.join("current")), listing(&m.source));
}

/// `--config`: an unknown key is refused (exit 64, one line naming it, nothing written);
/// `--rollback-on-hook-failure` needs the releases layout.
#[test]
fn config_file_errors_are_bad_input() {
    let h = Home::new();
    let cfg = h.tmp.path().join("pull.yaml");
    std::fs::write(&cfg, "mirror: /nonexistent\ndest: /tmp/x\nintervall: 5\n").unwrap();
    let out = h
        .offsync(["pull", "--watch", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pull.yaml:3:") && err.contains("intervall"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!h.home.exists(), "OFFSYNC_HOME was created");

    let dest = h.tmp.path().join("d");
    let out = h
        .offsync(["pull", "/nonexistent"])
        .arg(&dest)
        .args(["--exec", "true", "--rollback-on-hook-failure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--rollback-on-hook-failure needs --layout releases"));
    assert!(!dest.exists());
}

/// The printed units pass `systemd-analyze verify` (when this machine has it).
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = crate::util::which("systemd-analyze") else {
        eprintln!("SKIP: systemd-analyze missing");
        return;
    };
    let h = Home::new();
    let dir = h.tmp.path().join("units");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = h.tmp.path().join("pull.yaml");
    std::fs::write(
        &cfg,
        "mirror: s3://b/p\ndest: /srv/my app\nstatus_file: /run/offsync/status.json\n",
    )
    .unwrap();
    let mut files = Vec::new();
    for (kind, name) in [
        ("watch", "offsync-pull.service"),
        ("oneshot", "offsync-pull-once.service"),
        ("timer", "offsync-pull-once.timer"),
    ] {
        let out = h
            .offsync(["pull", "--print-systemd-unit", kind, "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        if kind == "watch" {
            assert!(
                text.contains("ReadWritePaths=\"/srv/my app\" /run/offsync\n"),
                "{text}"
            );
            assert!(text.contains(" pull --watch --config "), "{text}");
        }
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&files)
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("Unknown") && !err.contains("ignoring") && !err.contains("rror"),
        "{err}"
    );
}

/// One-shot `pull --exec --status-file` (the timer variant), in place: the hook runs after a
/// pull that changed DEST and not after one that did not; a failing hook is exit 1, logged,
/// and in the status file.
#[test]
fn a_one_shot_pull_runs_the_hook_only_after_a_change_and_reports_its_failure() {
    let Some(m) = Mirror::new(Backend::Local) else {
        return;
    };
    publish(&m, 5, "gen1");
    let h = Home::new();
    let dest = h.tmp.path().join("dest");
    let status = h.tmp.path().join("status.json");
    let runs = h.tmp.path().join("runs");
    let pull = |hook: &str| {
        m.pull_cmd(&h, &dest, &m.identity())
            .arg("--exec")
            .arg(format!(
                "echo \"$OFFSYNC_GENERATION $OFFSYNC_DEST\" >> '{}'; {hook}",
                runs.display()
            ))
            .arg("--status-file")
            .arg(&status)
            .output()
            .unwrap()
    };
    let out = pull("true");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pull("true");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        format!("1 {}\n", dest.display()),
        "the hook runs once, after the pull that changed DEST"
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(s["mode"], "once");
    assert_eq!(s["last_result"], "unchanged");
    assert_eq!(s["last_generation"], 1);

    publish(&m, 5, "gen2");
    let out = pull("echo 'oops \u{1b}[2J' >&2; exit 5");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("hook: oops \\u{1b}[2J"),
        "sanitised hook output: {err}"
    );
    assert!(err.contains("exited with status 5"), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(s["last_result"], "hook-failed");
    assert_eq!(s["failed_generation"], 2);
    assert_eq!(s["hook"]["exit_status"], 5);
    assert_eq!(std::fs::read(dest.join("d0/f0")).unwrap(), b"gen2 0\n");
    let log = oplog(&h);
    assert!(
        log.iter().any(
            |r| r["operation"].as_str().unwrap().starts_with("pull-hook ")
                && r["status"] == "failed"
        ),
        "{log:?}"
    );
}
