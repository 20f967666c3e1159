//! The one place offsync starts external programs.
//!
//! Invariants: programs get an argv, never a shell string; stdin is closed unless we feed it;
//! stderr is captured (drained on a thread, so a chatty child cannot deadlock on a full pipe)
//! and framed into the error; a missing program is reported as such with the `install-deps`
//! hint; a child killed by a signal is reported with the signal. Secrets never travel in argv:
//! callers pass them through files or stdin.
//!
//! Children die with offsync, on every path: each one starts in its own process group (so a
//! terminal's Ctrl-C reaches offsync alone, which then stops them deliberately and logs it),
//! with `PR_SET_PDEATHSIG = SIGKILL`, so even a `kill -9` of offsync takes its ssh
//! ControlMasters and rsyncs with it. The kernel sends that signal when the *thread* that forked
//! the child ends, not the process, so every child is forked by one spawner thread that lives
//! as long as offsync (engine workers come and go). Live children are registered; once an
//! interrupt is recorded ([`crate::interrupt`]) no new child starts and every registered group
//! is signalled — the check and the registration share one lock, so no child slips between.
//!
//! A grandchild (the ssh that rsync starts for `-e`) is not offsync's child, so rsync starts it
//! through offsync itself ([`rsh_prefix`]): `offsync __exec-dying-with-parent ssh …` sets its
//! own parent-death signal and execs ssh, which therefore dies with the rsync that started it
//! (and that rsync dies with offsync). The wrapper may start only after rsync is already gone
//! (a SIGKILL of offsync while a loaded machine is still loading the wrapper): then its
//! parent-death signal comes too late and `getppid` names a reaper, not rsync. So every child
//! also inherits the read end of a *lifeline* pipe whose only writer is offsync (the write end
//! is close-on-exec): the wrapper, once its signal is set, refuses to exec when that pipe
//! reports a hang-up, which the kernel guarantees once offsync is gone, reaped or not.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use crate::sanitize;

/// A failed external command, with what a user needs to understand it.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("`{program}` was not found on PATH; install it (`offsync install-deps`) or fix PATH")]
    NotFound { program: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` exited with status {code}{}", tail_suffix(.stderr_tail))]
    Failed {
        command: String,
        code: i32,
        stderr_tail: String,
    },
    #[error("`{command}` was killed by signal {signal}")]
    Signal { command: String, signal: i32 },
    #[error("`{command}` was interrupted")]
    Interrupted { command: String },
}

/// The hidden first argument that turns `offsync` into an exec wrapper (see the module docs).
pub const EXEC_DYING_WITH_PARENT: &str = "__exec-dying-with-parent";

/// `offsync __exec-dying-with-parent PROGRAM ARGS…`: set `PR_SET_PDEATHSIG = SIGKILL`, then
/// exec PROGRAM (the setting survives exec of a program without set-id bits or file
/// capabilities, like ssh). Returns only when that fails.
pub fn exec_dying_with_parent(args: Vec<OsString>) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let Some((program, rest)) = args.split_first() else {
        eprintln!("offsync: {EXEC_DYING_WITH_PARENT} needs a program to run");
        return std::process::ExitCode::from(255);
    };
    let parent = nix::unistd::getppid();
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("offsync: cannot set the parent-death signal: {e}");
        return std::process::ExitCode::from(255);
    }
    // The parent may have died before the setting took effect: then nobody would kill us.
    if nix::unistd::getppid() != parent || offsync_gone() {
        return std::process::ExitCode::from(255);
    }
    let err = Command::new(program)
        .args(rest)
        .env_remove(LIFELINE_ENV)
        .exec();
    eprintln!(
        "offsync: cannot run {}: {err}",
        sanitize::for_terminal(&program.to_string_lossy())
    );
    std::process::ExitCode::from(255)
}

/// The environment variable naming the lifeline's read end in a child (see the module docs).
const LIFELINE_ENV: &str = "OFFSYNC_LIFELINE_FD";

/// Whether the offsync that started this process's parent has exited: its lifeline pipe
/// reports a hang-up. False when there is no lifeline (started by hand). The descriptor is
/// made close-on-exec so the program exec'd next does not keep it.
fn offsync_gone() -> bool {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;
    let Some(fd) = std::env::var(LIFELINE_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    else {
        return false;
    };
    // SAFETY: this single-threaded process (the wrapper, before exec) closes no descriptor
    // while the borrow lives; a number that is not open only makes fcntl fail with EBADF,
    // and then we say "not gone" (the parent-death signal still stands).
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
        return false;
    }
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => false,
    }
}

/// The words that make a program started by a child of offsync (rsync's `-e`) die with that
/// child: this executable and [`EXEC_DYING_WITH_PARENT`]. Empty when offsync cannot name its
/// own executable (the program then runs bare).
pub fn rsh_prefix() -> Vec<String> {
    static PREFIX: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| match std::env::current_exe() {
            Ok(exe) => match exe.into_os_string().into_string() {
                Ok(exe) => vec![exe, EXEC_DYING_WITH_PARENT.to_string()],
                Err(_) => Vec::new(),
            },
            Err(_) => Vec::new(),
        })
        .clone()
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// The captured result of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command line as shown to users (shell-quoted, sanitised).
    pub command: String,
}

impl Output {
    /// The exit code, or `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Turn a non-zero exit into a [`ProcessError`].
    pub fn check(self) -> Result<Output, ProcessError> {
        if self.status.success() {
            return Ok(self);
        }
        Err(match self.status.code() {
            Some(code) => ProcessError::Failed {
                command: self.command,
                code,
                stderr_tail: sanitize::stderr_tail(&self.stderr, 3),
            },
            None => ProcessError::Signal {
                command: self.command,
                signal: self.status.signal().unwrap_or(0),
            },
        })
    }
}

/// An external command: program, argv, environment and stdin.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
    /// Start the child with only `envs` (see [`Cmd::env_clear`]).
    clear_env: bool,
}

/// Append to `buf` up to and including the first byte of `ends` (or to the end of input);
/// the number of bytes appended (0 at the end of input).
fn read_record(
    reader: &mut impl std::io::BufRead,
    ends: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    if let [end] = ends {
        return reader.read_until(*end, buf);
    }
    let mut n = 0;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(n);
        }
        let (used, done) = match chunk.iter().position(|b| ends.contains(b)) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..used]);
        reader.consume(used);
        n += used;
        if done {
            return Ok(n);
        }
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            cwd: None,
            clear_env: false,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Set an environment variable for the child (the way to pass a secret).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Start the child with no inherited environment, only what [`Cmd::env`] sets (a hook
    /// must not see the credentials offsync itself reads from its environment).
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Feed these bytes to the child's stdin (otherwise stdin is /dev/null).
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    pub fn argv(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as a user could paste it into a POSIX shell (sanitised for terminals).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| sanitize::for_terminal(&shell_quote(&a.to_string_lossy())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        if self.clear_env {
            c.env_clear();
        }
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    /// `-v`: announce the command (argv only: the environment, where secrets travel, is never
    /// printed) and return its number and start time for [`Cmd::log_end`].
    fn log_start(&self) -> Option<(u64, std::time::Instant)> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if !crate::ui::verbose() {
            return None;
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        eprintln!("offsync: run[{n}]: {}", self.display());
        Some((n, std::time::Instant::now()))
    }

    /// `-v`: how the command numbered by [`Cmd::log_start`] ended, and after how long.
    fn log_end(started: Option<(u64, std::time::Instant)>, status: &ExitStatus) {
        if let Some((n, at)) = started {
            let how = match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "ended".to_string(),
            };
            eprintln!(
                "offsync: run[{n}]: {how} after {}",
                crate::ui::secs(at.elapsed())
            );
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> ProcessError {
        let program = self.program.to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return ProcessError::Interrupted {
                command: self.display(),
            };
        }
        if e.kind() == std::io::ErrorKind::NotFound {
            ProcessError::NotFound { program }
        } else {
            ProcessError::Spawn { program, source: e }
        }
    }

    /// Run to completion capturing stdout and stderr; a non-zero exit is *not* an error here
    /// (callers that classify exit codes, like the rsync probe, need the raw result).
    pub fn output(&self) -> Result<Output, ProcessError> {
        self.output_streaming(&mut |_| {})
    }

    /// Like [`Cmd::output`], calling `on_line` with each stdout line (without its newline)
    /// as it arrives — for progress.
    pub fn output_streaming(&self, on_line: &mut dyn FnMut(&[u8])) -> Result<Output, ProcessError> {
        self.piped(on_line, true, b"\n")
    }

    /// Like [`Cmd::output_streaming`], but stdout is *not* kept (`Output::stdout` is empty):
    /// `on_line` is its only reader. For large outputs that are parsed as they arrive (an
    /// rsync dry run of many files), so they are never held in memory whole. Lines are split
    /// on `\n` only and passed without it; a last line without a newline is passed too.
    pub fn output_lines(&self, on_line: &mut dyn FnMut(&[u8])) -> Result<Output, ProcessError> {
        self.piped(on_line, false, b"\n")
    }

    /// Like [`Cmd::output_lines`], but lines end at `\r` as well as `\n`: rsync redraws its
    /// progress line with `\r`, and each redraw must arrive as it happens. Only for output
    /// whose records cannot hold a `\r` (rsync escapes control characters in names as
    /// `\#ooo`); empty records are not passed.
    pub fn output_records(&self, on_line: &mut dyn FnMut(&[u8])) -> Result<Output, ProcessError> {
        self.piped(on_line, false, b"\r\n")
    }

    fn piped(
        &self,
        on_line: &mut dyn FnMut(&[u8]),
        keep_stdout: bool,
        ends: &[u8],
    ) -> Result<Output, ProcessError> {
        let mut c = self.command();
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let started = self.log_start();
        // `-vv`: every line the child prints is echoed (sanitised: it may come from a remote
        // host), tagged with the command's number.
        let echo = started
            .filter(|_| crate::ui::verbosity() >= crate::ui::Verbosity::Debug)
            .map(|(n, _)| n);
        let mut child = children::spawn(c, true).map_err(|e| self.spawn_error(e))?;
        let guard = children::Registered(child.id());
        let stdin = child.stdin.take();
        let feed = self.stdin.clone();
        let writer = std::thread::spawn(move || {
            if let (Some(mut pipe), Some(bytes)) = (stdin, feed) {
                // A child that exits early closes the pipe; that is its business, not an error.
                let _ = pipe.write_all(&bytes);
            }
        });
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let mut stdout = Vec::new();
        if let Some(out) = child.stdout.take() {
            let mut reader = std::io::BufReader::new(out);
            loop {
                if !keep_stdout {
                    // One line at a time: the buffer only ever holds the longest line.
                    stdout.clear();
                }
                let start = stdout.len();
                match read_record(&mut reader, ends, &mut stdout) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = &stdout[start..];
                        // A record ended by `\r` is a redraw (rsync's progress): `-vv` echoes
                        // only the state a line ends in, not every redraw.
                        let redraw = line.last() == Some(&b'\r');
                        let line = match line.last() {
                            Some(b) if ends.contains(b) => &line[..line.len() - 1],
                            _ => line,
                        };
                        if line.is_empty() && ends.len() > 1 {
                            continue;
                        }
                        if let (Some(n), false) = (echo, redraw) {
                            eprintln!(
                                "offsync: run[{n}]: out: {}",
                                sanitize::for_terminal(&String::from_utf8_lossy(line))
                            );
                        }
                        on_line(line);
                    }
                }
            }
            if !keep_stdout {
                stdout = Vec::new();
            }
        }
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        drop(guard);
        let _ = writer.join();
        let stderr = err_reader.join().unwrap_or_default();
        if let Some(n) = echo {
            for line in String::from_utf8_lossy(&stderr).lines() {
                eprintln!("offsync: run[{n}]: err: {}", sanitize::for_terminal(line));
            }
        }
        Self::log_end(started, &status);
        Ok(Output {
            status,
            stdout,
            stderr,
            command: self.display(),
        })
    }

    /// Run to completion and fail on a non-zero exit.
    pub fn run(&self) -> Result<Output, ProcessError> {
        self.output()?.check()
    }

    /// Run with the terminal attached (package managers that ask questions, show progress).
    pub fn run_interactive(&self) -> Result<(), ProcessError> {
        // Stays in offsync's process group: it may ask questions on the terminal.
        let mut c = self.command();
        c.stdin(Stdio::inherit());
        let started = self.log_start();
        let mut child = children::spawn(c, false).map_err(|e| self.spawn_error(e))?;
        let guard = children::Registered(child.id());
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        drop(guard);
        Self::log_end(started, &status);
        if status.success() {
            return Ok(());
        }
        Err(match status.code() {
            Some(code) => ProcessError::Failed {
                command: self.display(),
                code,
                stderr_tail: String::new(),
            },
            None => ProcessError::Signal {
                command: self.display(),
                signal: status.signal().unwrap_or(0),
            },
        })
    }
}

/// Quote one word for a POSIX shell, only when needed.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_not_found() {
        let err = Cmd::new("offsync-no-such-program-xyz")
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::NotFound { .. }));
        assert!(err.to_string().contains("install-deps"));
    }

    #[test]
    fn failure_carries_stderr_tail() {
        let err = Cmd::new("sh")
            .args(["-c", "echo first >&2; echo 'bad thing' >&2; exit 3"])
            .run()
            .unwrap_err();
        match err {
            ProcessError::Failed {
                code, stderr_tail, ..
            } => {
                assert_eq!(code, 3);
                assert!(stderr_tail.ends_with("bad thing"), "{stderr_tail}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stdin_is_fed_and_stdout_captured() {
        let out = Cmd::new("cat")
            .stdin_bytes(b"hello".to_vec())
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn output_lines_streams_without_keeping_stdout() {
        let mut lines = Vec::new();
        let out = Cmd::new("sh")
            .args([
                "-c",
                "printf 'one\\n\\ntwo words\\nlast'; echo oops >&2; exit 4",
            ])
            .output_lines(&mut |l| lines.push(l.to_vec()))
            .unwrap();
        assert_eq!(lines, [&b"one"[..], b"", b"two words", b"last"]);
        assert!(out.stdout.is_empty(), "stdout is not kept");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.code(), Some(4));
        // output_streaming hands out the same lines and keeps stdout.
        let mut again = Vec::new();
        let kept = Cmd::new("printf")
            .arg("a\\nb\\n")
            .output_streaming(&mut |l| again.push(l.to_vec()))
            .unwrap();
        assert_eq!(again, [&b"a"[..], b"b"]);
        assert_eq!(kept.stdout, b"a\nb\n");
    }

    #[test]
    fn output_records_split_on_carriage_returns_too() {
        let mut records = Vec::new();
        Cmd::new("printf")
            .arg(">f a\\#015b\n\r  1 0%%\r  2 50%%\n\n>f c\rlast")
            .output_records(&mut |l| records.push(l.to_vec()))
            .unwrap();
        assert_eq!(
            records,
            [&b">f a\\#015b"[..], b"  1 0%", b"  2 50%", b">f c", b"last"]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc/d-e"), "abc/d-e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

/// A long-running child (an ssh ControlMaster) that is stopped when dropped, so an error or
/// a panic never leaves it behind.
#[derive(Debug)]
pub struct Background {
    child: std::process::Child,
    command: String,
    stderr_path: PathBuf,
}

impl Cmd {
    /// Start in the background with stdin and stdout closed and stderr going to `stderr_path`
    /// (read it with [`Background::stderr`] when something fails).
    pub fn spawn_background(
        &self,
        stderr_path: &std::path::Path,
    ) -> Result<Background, ProcessError> {
        let err = std::fs::File::create(stderr_path).map_err(|e| ProcessError::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            source: e,
        })?;
        let mut c = self.command();
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        // A background child (an ssh ControlMaster) is announced; it ends when stopped.
        if let Some((n, _)) = self.log_start() {
            crate::ui::debug(&format!("run[{n}]: in the background"));
        }
        let child = children::spawn(c, true).map_err(|e| self.spawn_error(e))?;
        Ok(Background {
            child,
            command: self.display(),
            stderr_path: stderr_path.to_path_buf(),
        })
    }
}

impl Background {
    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        std::fs::read(&self.stderr_path).unwrap_or_default()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Stop the child and wait for it.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            children::kill_group(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
        children::unregister(self.child.id());
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The spawner thread and the registry of live children (see the module docs).
pub mod children {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    use std::collections::BTreeSet;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};

    struct Request {
        command: Command,
        own_group: bool,
        reply: mpsc::Sender<std::io::Result<Child>>,
    }

    /// Process ids (= group ids for children in their own group) of live children, and whether
    /// new children may start.
    struct Registry {
        live: BTreeSet<u32>,
        own_group: BTreeSet<u32>,
        closed: bool,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        live: BTreeSet::new(),
        own_group: BTreeSet::new(),
        closed: false,
    });
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

    /// The lifeline's read end, inherited by every child (see the module docs); its write end
    /// is close-on-exec, so offsync is its only writer. `None` if no pipe could be made (the
    /// parent-death signal alone then stands).
    fn lifeline() -> Option<i32> {
        use std::os::fd::{AsRawFd, OwnedFd};
        static PIPE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
        PIPE.get_or_init(|| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok())
            .as_ref()
            .map(|(read, _write)| read.as_raw_fd())
    }

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawner() -> mpsc::Sender<Request> {
        SPAWNER
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<Request>();
                std::thread::Builder::new()
                    .name("offsync-spawner".into())
                    .spawn(move || {
                        // Lives until the process exits: the parent-death signal of every
                        // child is tied to this thread.
                        for req in rx {
                            let _ = req.reply.send(spawn_here(req.command, req.own_group));
                        }
                    })
                    .expect("start the spawner thread");
                Mutex::new(tx)
            })
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    // `pre_exec` is how std lets a child set its parent-death signal before exec; there is no
    // safe equivalent (the other `unsafe` in offsync is the wrapper's borrow of the lifeline).
    #[allow(unsafe_code)]
    fn spawn_here(mut c: Command, own_group: bool) -> std::io::Result<Child> {
        use std::os::fd::BorrowedFd;
        let parent = nix::unistd::getpid();
        if own_group {
            c.process_group(0);
        }
        let lifeline = lifeline();
        if let Some(fd) = lifeline {
            c.env(super::LIFELINE_ENV, fd.to_string());
        }
        // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl) between fork and exec;
        // the lifeline's read end lives as long as the process (a static).
        unsafe {
            c.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // offsync may have died between fork and prctl: then nobody would kill us.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("offsync exited"));
                }
                if let Some(fd) = lifeline {
                    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
                    fcntl(
                        BorrowedFd::borrow_raw(fd),
                        FcntlArg::F_SETFD(FdFlag::empty()),
                    )?;
                }
                Ok(())
            });
        }
        let mut reg = registry();
        if reg.closed {
            return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
        }
        let child = c.spawn()?;
        reg.live.insert(child.id());
        if own_group {
            reg.own_group.insert(child.id());
        }
        Ok(child)
    }

    /// Start `c` on the spawner thread; `own_group`: in a new process group. The child is
    /// registered; pair it with [`Registered`] so it is unregistered once reaped.
    pub fn spawn(c: Command, own_group: bool) -> std::io::Result<Child> {
        let (tx, rx) = mpsc::channel();
        spawner()
            .send(Request {
                command: c,
                own_group,
                reply: tx,
            })
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }

    /// Unregisters a child when dropped (after it was reaped).
    pub struct Registered(pub u32);

    impl Drop for Registered {
        fn drop(&mut self) {
            unregister(self.0);
        }
    }

    pub fn unregister(pid: u32) {
        let mut reg = registry();
        reg.live.remove(&pid);
        reg.own_group.remove(&pid);
    }

    /// Signal a live child's whole group (rsync and the ssh it started), or the child alone
    /// when it shares offsync's group.
    pub fn kill_group(pid: u32, sig: Signal) {
        let reg = registry();
        if reg.live.contains(&pid) {
            signal_one(pid, reg.own_group.contains(&pid), sig);
        }
    }

    /// Refuse new children from now on and signal every live one (its group).
    pub fn stop_all(sig: Signal) {
        let mut reg = registry();
        reg.closed = true;
        signal_locked(&reg, sig);
    }

    /// Signal every live child without refusing new ones.
    pub fn signal_all(sig: Signal) {
        signal_locked(&registry(), sig);
    }

    fn signal_locked(reg: &Registry, sig: Signal) {
        for pid in &reg.live {
            signal_one(*pid, reg.own_group.contains(pid), sig);
        }
    }

    fn signal_one(pid: u32, own_group: bool, sig: Signal) {
        let target = Pid::from_raw(pid as i32);
        let _ = if own_group {
            killpg(target, sig)
        } else {
            nix::sys::signal::kill(target, sig)
        };
    }
}
