//! The post-switch hook (`pull --exec CMD`): what runs on the host after a pull changed DEST.
//!
//! CMD is run as `/bin/sh -c CMD`, so it may be a pipeline or name a script with arguments.
//! That is a shell string, unlike every other program offsync starts (see `process`): here
//! the string is written by the host's administrator into a root-owned config file or unit,
//! nothing from the mirror or a remote host ever reaches it, and the values the hook needs
//! arrive as environment variables, never spliced into the string. CMD is visible in `ps`
//! and in logs: it must hold no secret.
//!
//! Environment: scrubbed — only `PATH` (or a standard one), `HOME`, `USER`, `LOGNAME`,
//! `LANG`, `LC_*` and `TZ` are passed on, so S3 credentials or anything else offsync itself
//! reads from its environment never reach the hook; plus `OFFSYNC_GENERATION`,
//! `OFFSYNC_SOURCE_DIGEST`, `OFFSYNC_DEST`, `OFFSYNC_MIRROR`, and in the releases layout
//! `OFFSYNC_RELEASE` (the release's absolute path); `OFFSYNC_ROLLED_BACK_FROM` when the hook
//! runs again after a rollback. The working directory is the release (or DEST). Stdin is
//! /dev/null; what the hook prints goes to offsync's stderr, line by line, prefixed `hook:`
//! and sanitised for a terminal (a hook may print what it read from the release).
//!
//! The hook runs as one of offsync's children: in its own process group, killed with offsync
//! (see `process`), and a SIGTERM to the agent stops it too.

use serde::{Deserialize, Serialize};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Instant;

use crate::process::{Cmd, ProcessError};
use crate::sanitize;

/// The `PATH` a hook gets when offsync's own has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the hook learns about the pull.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub generation: u64,
    pub source_digest: String,
    pub dest: PathBuf,
    /// Layout releases: the release DEST/current points at.
    pub release: Option<PathBuf>,
    pub mirror: String,
    /// The hook runs again after a rollback from this generation.
    pub rolled_back_from: Option<u64>,
}

impl HookEnv {
    /// The variables the hook gets (besides the few passed on from offsync's environment).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("OFFSYNC_GENERATION", self.generation.to_string()),
            ("OFFSYNC_SOURCE_DIGEST", self.source_digest.clone()),
            ("OFFSYNC_DEST", self.dest.display().to_string()),
            ("OFFSYNC_MIRROR", self.mirror.clone()),
        ];
        if let Some(r) = &self.release {
            v.push(("OFFSYNC_RELEASE", r.display().to_string()));
        }
        if let Some(g) = self.rolled_back_from {
            v.push(("OFFSYNC_ROLLED_BACK_FROM", g.to_string()));
        }
        v
    }
}

/// How the hook ended (kept in the status file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The generation it ran for.
    pub generation: u64,
    /// When it ended (UTC, RFC 3339).
    pub at: String,
    pub ok: bool,
    /// Its exit status, when it exited.
    pub exit_status: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Why it failed, on one line.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One run of the hook.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub record: HookRecord,
}

/// Whether an inherited variable is passed on to the hook (see the module docs).
fn passed_on(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "USER" | "LOGNAME" | "LANG" | "TZ") || name.starts_with("LC_")
}

/// Run `cmd` with `/bin/sh -c` and `env` (see the module docs). Never fails: a hook that
/// cannot start is a failed hook.
pub fn run(cmd: &str, env: &HookEnv) -> HookRun {
    let start = Instant::now();
    let mut c = Cmd::new("/bin/sh").arg("-c").arg(cmd).env_clear();
    let mut has_path = false;
    for (k, v) in std::env::vars_os() {
        if let Some(name) = k.to_str().filter(|n| passed_on(n)) {
            has_path |= name == "PATH";
            c = c.env(&k, v);
        }
    }
    if !has_path {
        c = c.env("PATH", DEFAULT_PATH);
    }
    for (k, v) in env.vars() {
        c = c.env(k, v);
    }
    let cwd = env
        .release
        .clone()
        .filter(|r| r.is_dir())
        .unwrap_or_else(|| env.dest.clone());
    c = c.current_dir(cwd);
    eprintln!(
        "offsync: running the --exec hook for generation {}",
        env.generation
    );
    let result = c.output_lines(&mut |line| {
        eprintln!("hook: {}", sanitize::bytes_for_terminal(line));
    });
    let mut record = HookRecord {
        generation: env.generation,
        ..Default::default()
    };
    match result {
        Ok(out) => {
            for line in out.stderr.split(|&b| b == b'\n') {
                if !line.is_empty() {
                    eprintln!("hook: {}", sanitize::bytes_for_terminal(line));
                }
            }
            record.exit_status = out.status.code();
            record.signal = out.status.signal();
            record.ok = out.status.success();
            if !record.ok {
                record.error = Some(match (record.exit_status, record.signal) {
                    (Some(code), _) => format!("`{}` exited with status {code}", out.command),
                    (None, Some(sig)) => format!("`{}` was killed by signal {sig}", out.command),
                    _ => format!("`{}` failed", out.command),
                });
            }
        }
        Err(e) => {
            record.error = Some(match e {
                ProcessError::NotFound { .. } => "/bin/sh was not found".to_string(),
                e => e.to_string(),
            });
        }
    }
    record.at = crate::oplog::now();
    record.duration_ms = start.elapsed().as_millis() as u64;
    if record.ok {
        eprintln!("offsync: the --exec hook succeeded");
    }
    HookRun { record }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &std::path::Path) -> HookEnv {
        HookEnv {
            generation: 7,
            source_digest: "ab".repeat(32),
            dest: dir.to_path_buf(),
            release: None,
            mirror: "s3://b/p".into(),
            rolled_back_from: None,
        }
    }

    #[test]
    fn the_hook_sees_the_generation_and_no_credentials() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("env");
        let cmd = format!(
            "env > '{}'; test -z \"$AWS_SECRET_ACCESS_KEY\"",
            out.display()
        );
        let run = run(&cmd, &env(d.path()));
        assert!(run.record.ok, "{:?}", run.record);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("OFFSYNC_GENERATION=7\n"), "{text}");
        assert!(text.contains(&format!("OFFSYNC_DEST={}\n", d.path().display())));
        assert!(!text.contains("AWS_"), "{text}");
        assert!(!text.contains("OFFSYNC_RELEASE"), "{text}");
    }

    #[test]
    fn a_failing_hook_reports_its_exit_status() {
        let d = tempfile::tempdir().unwrap();
        let run = run("echo bad >&2; exit 3", &env(d.path()));
        assert!(!run.record.ok);
        assert_eq!(run.record.exit_status, Some(3));
        let e = run.record.error.unwrap();
        assert!(e.contains("exited with status 3"), "{e}");
    }

    #[test]
    fn only_harmless_variables_are_passed_on() {
        for ok in ["PATH", "HOME", "LANG", "LC_ALL", "TZ"] {
            assert!(passed_on(ok), "{ok}");
        }
        for no in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "OFFSYNC_IDENTITY_FILE",
            "SSH_AUTH_SOCK",
        ] {
            assert!(!passed_on(no), "{no}");
        }
    }
}
