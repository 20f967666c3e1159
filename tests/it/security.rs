//! What the key `link` installed can and cannot do, against a real sshd with the real rrsync,
//! using plain ssh and rsync (not offsync) as an attacker holding the controller key would.
//! Every refusal is paired with evidence that nothing happened (a canary directory outside the
//! sync dir, a TCP listener that never accepts), and one positive push proves the setup works.

use crate::util::{KillOnDrop, World, free_port, setup_linked_target, skip_unless_tools, snapshot};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

type Snapshot = Vec<(Vec<u8>, Vec<u8>)>;

/// Client options shared by ssh and rsync's `-e`: the controller key only, no agent, no user
/// config, no known_hosts (the tests connect to a throwaway host key).
const SSH_OPTS: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
];

/// `ssh -i KEY [opts] -p PORT user@127.0.0.1 [remote…]`. Options must come before the host:
/// everything after it is the remote command.
fn ssh(w: &World, opts: &[&str], remote: &[&str]) -> Command {
    let mut c = w.home.tool("ssh");
    c.arg("-i")
        .arg(w.home.key())
        .args(SSH_OPTS)
        .args(["-o", "IdentityAgent=none"])
        .args(opts)
        .args(["-p", &w.sshd().port.to_string(), &w.sshd().login()])
        .args(remote);
    c
}

/// rsync's `-e` value. OFFSYNC_HOME contains a space, so the key path is single-quoted (rsync
/// splits `-e` itself and honours single quotes).
fn rsh(w: &World) -> String {
    format!(
        "ssh -i '{}' {} -p {}",
        w.home.key().display(),
        SSH_OPTS.join(" "),
        w.sshd().port
    )
}

fn rsync(w: &World, opts: &[&str], src: &Path, remote_path: &str) -> Output {
    w.home
        .tool("rsync")
        .args(opts)
        .args(["-e", &rsh(w)])
        .arg(src)
        .arg(format!("{}:{remote_path}", w.sshd().login()))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An outside directory (a sibling of the sync dir) holding one canary file.
fn canary(w: &World) -> (PathBuf, Snapshot) {
    let outside = w.sshd().dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"untouched").unwrap();
    let snap = snapshot(&outside);
    assert_eq!(snap.len(), 1);
    (outside, snap)
}

/// Whether `listener` accepts a connection within `wait` (polled, non-blocking).
fn accepts(listener: &TcpListener, wait: Duration) -> bool {
    listener.set_nonblocking(true).unwrap();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if listener.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Connect to a port that a background ssh is about to listen on (up to 5 s).
fn connect_retry(port: u16) -> TcpStream {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > end => {
                panic!("ssh never listened on {port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Wait for a child with a deadline; `None` when it is still running.
fn wait_timeout(child: &mut KillOnDrop, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_shell_no_command_no_pty() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let (outside, snap) = canary(&w);

    // (a) An interactive shell: rrsync runs instead and refuses.
    let out = ssh(&w, &[], &[]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("rrsync error"), "{out:?}");

    // (b) A remote command: refused, and it did not run.
    let pwned = outside.join("pwned");
    let cmd = format!("touch '{}'; echo RAN", pwned.display());
    let out = ssh(&w, &[], &[&cmd]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(!text(&out.stdout).contains("RAN"), "{out:?}");
    assert!(text(&out.stderr).contains("rrsync error"), "{out:?}");
    assert!(!pwned.exists(), "the remote command ran");

    // (c) A pty: the client says the request failed; sshd logs why (no-pty / restrict).
    let out = ssh(&w, &["-tt"], &["id"]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(!text(&out.stdout).contains("uid="), "{out:?}");
    assert!(
        text(&out.stderr).contains("PTY allocation request failed"),
        "{out:?}"
    );
    assert!(
        w.sshd()
            .log_contains("Allocating a pty not permitted for this connection"),
        "{}",
        w.sshd().log()
    );
    assert_eq!(snapshot(&outside), snap);
}

#[test]
fn no_tcp_forwarding_of_any_kind() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    // The test owns this listener: any forward that works would connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = listener.local_addr().unwrap().port();

    // (d) Local forward: ssh listens locally, but the server refuses the channel.
    let p = free_port();
    let _l = KillOnDrop(
        ssh(&w, &["-N", "-L", &format!("{p}:127.0.0.1:{lport}")], &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut s = connect_retry(p);
    let _ = s.write_all(b"hello");
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    let _ = s.read(&mut buf);
    assert!(
        !accepts(&listener, Duration::from_secs(2)),
        "local forward reached the listener"
    );
    drop(_l);

    // (f) Dynamic forward: a SOCKS5 CONNECT to the listener gets no success reply and never
    // reaches it.
    let p = free_port();
    let _d = KillOnDrop(
        ssh(&w, &["-N", "-D", &p.to_string()], &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut s = connect_retry(p);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap(); // SOCKS5, one method: no authentication
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(hello, [5, 0], "ssh's SOCKS server answers the greeting");
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1]; // CONNECT 127.0.0.1:lport
    req.extend_from_slice(&lport.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0xffu8; 10];
    match s.read(&mut reply) {
        Ok(n) if n >= 2 => assert_ne!(reply[1], 0, "SOCKS CONNECT succeeded: {reply:?}"),
        _ => {} // connection closed or timed out: refused
    }
    assert!(
        !accepts(&listener, Duration::from_secs(2)),
        "dynamic forward reached the listener"
    );
    drop(_d);

    // (e) Remote forward: the server refuses it, so ssh exits with an error.
    let mut r = KillOnDrop(
        ssh(
            &w,
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &format!("0:127.0.0.1:{lport}"),
            ],
            &[],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let status = wait_timeout(&mut r, Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| !s.success()),
        "remote forward was not refused within 15 s: {status:?}"
    );
    assert!(!accepts(&listener, Duration::from_millis(200)));
}

/// `ssh-agent -a SOCK`, killed with `ssh-agent -k` on drop.
struct Agent {
    pid: String,
    sock: PathBuf,
    home: PathBuf,
}

impl Agent {
    fn start(w: &World) -> Agent {
        let sock = w.home.tmp.path().join("agent.sock");
        let out = w
            .home
            .tool("ssh-agent")
            .args(["-s", "-a"])
            .arg(&sock)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-agent: {out:?}");
        let pid = text(&out.stdout)
            .split(';')
            .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID=").map(str::to_string))
            .unwrap_or_else(|| panic!("no SSH_AGENT_PID in {out:?}"));
        Agent {
            pid,
            sock,
            home: w.home.user_home.clone(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = crate::util::tool("ssh-agent", &self.home)
            .arg("-k")
            .env("SSH_AGENT_PID", &self.pid)
            .env("SSH_AUTH_SOCK", &self.sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn no_agent_forwarding() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let agent = Agent::start(&w);
    // (g) Without IdentityAgent=none: this ssh uses (and would forward) the agent.
    let port = w.sshd().port.to_string();
    let out = w
        .home
        .tool("ssh")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .arg("-i")
        .arg(w.home.key())
        .args(SSH_OPTS)
        .args(["-A", "-p", &port, &w.sshd().login(), "id"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        w.sshd()
            .log_contains("session_auth_agent_req: agent forwarding disabled"),
        "sshd did not refuse agent forwarding:\n{}",
        w.sshd().log()
    );
    assert!(
        w.sshd().log().contains("req auth-agent-req@openssh.com"),
        "the client asked for it"
    );
}

#[test]
fn no_reads() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    std::fs::write(w.sshd().sync_dir().join("secret"), b"s").unwrap();
    // (h) A pull is refused by rrsync -wo.
    let dest = w.home.tmp.path().join("pulled");
    std::fs::create_dir(&dest).unwrap();
    let out = w
        .home
        .tool("rsync")
        .args(["-e", &rsh(&w)])
        .arg(format!("{}:secret", w.sshd().login()))
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    assert!(
        text(&out.stderr).contains("reading from write-only server is not allowed"),
        "{out:?}"
    );
    assert!(snapshot(&dest).is_empty(), "nothing was pulled");
}

#[test]
fn no_writes_outside_the_sync_dir() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let sync = w.sshd().sync_dir();
    let (outside, snap) = canary(&w);
    let unchanged = |step: &str| {
        assert_eq!(
            snapshot(&outside),
            snap,
            "{step}: something landed outside the sync dir"
        );
    };
    let t = w.home.tmp.path();
    let file = t.join("payload");
    std::fs::write(&file, b"payload").unwrap();

    // (i) ../ is refused.
    let out = rsync(&w, &[], &file, "../escape");
    assert!(!out.status.success(), "{out:?}");
    assert!(!w.sshd().dir.join("escape").exists());
    let out = rsync(&w, &[], &file, "../outside/escape");
    assert!(!out.status.success(), "{out:?}");
    unchanged("../");

    // An absolute path is taken relative to the sync dir, never as the real path.
    let unique = format!("offsync-it-{}-{}", std::process::id(), w.sshd().port);
    let abs = Path::new("/tmp").join(&unique);
    let _ = rsync(&w, &[], &file, &abs.display().to_string());
    let escaped = abs.exists();
    let _ = std::fs::remove_file(&abs);
    assert!(!escaped, "an absolute remote path wrote {}", abs.display());
    let _ = rsync(&w, &[], &file, &format!("{}/", outside.display()));
    unchanged("absolute path");

    // Through a symlink planted inside the sync dir (by someone else, e.g. a local user).
    std::os::unix::fs::symlink(&outside, sync.join("link")).unwrap();
    let _ = rsync(&w, &[], &file, "link/");
    unchanged("push into link/");
    let dir = t.join("dir");
    std::fs::create_dir_all(dir.join("deeper")).unwrap();
    std::fs::write(dir.join("deeper/f"), b"f").unwrap();
    let _ = rsync(&w, &["-r"], &dir.join(""), "link/sub/");
    unchanged("push -r into link/sub/");
    let _ = rsync(&w, &["-r", "--keep-dirlinks"], &dir.join(""), "link/");
    unchanged("push -r --keep-dirlinks into link/");

    // A transfer that itself creates the symlink, then writes beneath the same name.
    let tree = t.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("evil")).unwrap();
    let _ = rsync(&w, &["-rl"], &tree.join(""), "");
    unchanged("push of a symlink");
    let tree2 = t.join("tree2");
    std::fs::create_dir_all(tree2.join("evil")).unwrap();
    std::fs::write(tree2.join("evil/x"), b"x").unwrap();
    let _ = rsync(&w, &["-r"], &tree2.join(""), "");
    unchanged("push of evil/x after evil -> outside");
    let _ = rsync(&w, &["-r", "--keep-dirlinks"], &tree2.join(""), "");
    unchanged("push of evil/x with --keep-dirlinks");
    let _ = rsync(&w, &["-rl"], &tree.join(""), "");
    let _ = rsync(&w, &["-r", "--keep-dirlinks"], &tree2.join(""), "");
    unchanged("symlink then evil/x again");

    // A normal push works, so the refusals above are not an artefact of a broken setup.
    let src = t.join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    std::fs::write(src.join("sub dir/hello"), b"hello").unwrap();
    let out = rsync(&w, &["-r"], &src.join(""), "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(sync.join("sub dir/hello")).unwrap(),
        b"hello",
        "a normal push lands in the sync dir"
    );
    unchanged("normal push");
}
