//! What the key `link` installed can and cannot do, against a real sshd with the real rrsync.
//! Every refusal is paired with evidence that nothing happened outside the sync directory, and
//! one positive push proves the setup works at all.

use crate::util::{World, snapshot, user};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ssh [opts] -p PORT -l USER 127.0.0.1 [remote…]` with the installed key. Options must come
/// before the host: anything after it is the remote command.
fn ssh(w: &World, opts: &[&str], remote: &[&str]) -> Command {
    ssh_agent(w, "none", opts, remote)
}

fn ssh_agent(w: &World, agent: &str, opts: &[&str], remote: &[&str]) -> Command {
    let t = &w.targets[0];
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(w.home.key())
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "LogLevel=ERROR",
            "-o",
            &format!("IdentityAgent={agent}"),
        ])
        .args(opts)
        .args(["-p", &t.port.to_string(), "-l", &user(), "127.0.0.1"])
        .args(remote)
        .stdin(Stdio::null());
    c
}

fn rsh(w: &World) -> String {
    format!(
        "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p {}",
        w.home.key().display(),
        w.targets[0].port
    )
}

fn dest(_w: &World, path: &str) -> String {
    format!("{}@127.0.0.1:{path}", user())
}

/// An outside directory with a canary file, and its snapshot.
type Snapshot = Vec<(Vec<u8>, Vec<u8>)>;

fn canary(w: &World) -> (std::path::PathBuf, Snapshot) {
    let outside = w.home.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"untouched").unwrap();
    let snap = snapshot(&outside);
    (outside, snap)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `listener` accepts a connection within `wait`.
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

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect_retry(port: u16) -> Option<TcpStream> {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn no_shell_no_command_no_pty() {
    let w = World::new(1);
    let (outside, snap) = canary(&w);
    let out = ssh(&w, &[], &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rrsync error"),
        "{out:?}"
    );

    let pwned = outside.join("pwned");
    let out = ssh(
        &w,
        &[],
        &[&format!("touch '{}'; echo RAN", pwned.display())],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("RAN"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rrsync error"),
        "{out:?}"
    );

    let out = ssh(&w, &["-tt"], &["id"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PTY allocation request failed"), "{err}");
    assert_eq!(snapshot(&outside), snap);
}

#[test]
fn no_forwarding_of_ports_or_agent() {
    let w = World::new(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = listener.local_addr().unwrap().port();

    // Local forward: the forward may listen locally, but the server refuses the channel.
    let p = free_port();
    let _l = Kill(
        ssh(&w, &["-N", "-L", &format!("{p}:127.0.0.1:{lport}")], &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    if let Some(mut s) = connect_retry(p) {
        let _ = s.write_all(b"hello");
        let mut buf = [0u8; 8];
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read(&mut buf);
    }
    assert!(
        !accepts(&listener, Duration::from_secs(2)),
        "local forward reached the listener"
    );

    // Dynamic forward: a SOCKS5 CONNECT to the listener must not reach it.
    let p = free_port();
    let _d = Kill(
        ssh(&w, &["-N", "-D", &p.to_string()], &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    if let Some(mut s) = connect_retry(p) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(&[5, 1, 0]);
        let mut buf = [0u8; 2];
        let _ = s.read(&mut buf);
        let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
        req.extend_from_slice(&lport.to_be_bytes());
        let _ = s.write_all(&req);
        let mut reply = [0xffu8; 10];
        if let Ok(n) = s.read(&mut reply)
            && n >= 2
        {
            assert_ne!(reply[1], 0, "SOCKS CONNECT must not succeed");
        }
    }
    assert!(
        !accepts(&listener, Duration::from_secs(2)),
        "dynamic forward reached the listener"
    );

    // Remote forward: refused by the server, so ssh exits with an error.
    let mut r = Kill(
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = r.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| !s.success()),
        "remote forward was not refused"
    );

    // Agent forwarding: the server refuses the request (logged by sshd).
    let sock = w.home.tmp.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-a")
        .arg(&sock)
        .arg("-D")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Kill(agent);
    let end = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ssh_agent(&w, &sock.display().to_string(), &["-A"], &["id"])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let end = Instant::now() + Duration::from_secs(5);
    while !w.targets[0].log().contains("agent forwarding disabled") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        w.targets[0].log().contains("agent forwarding disabled"),
        "{}",
        w.targets[0].log()
    );
}

#[test]
fn no_reads_and_no_writes_outside() {
    let w = World::new(1);
    let sync = w.targets[0].sync_dir();
    std::fs::write(sync.join("secret"), b"s").unwrap();
    let (outside, snap) = canary(&w);

    // A pull is refused.
    let dest_dir = w.home.tmp.path().join("pulled");
    std::fs::create_dir(&dest_dir).unwrap();
    let out = Command::new("rsync")
        .args(["-e", &rsh(&w)])
        .arg(dest(&w, "secret"))
        .arg(&dest_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("reading from write-only server is not allowed")
    );
    assert!(std::fs::read_dir(&dest_dir).unwrap().next().is_none());

    let file = w.home.tmp.path().join("payload");
    std::fs::write(&file, b"payload").unwrap();
    let push = |target: &str| {
        Command::new("rsync")
            .args(["-r", "-e", &rsh(&w)])
            .arg(&file)
            .arg(dest(&w, target))
            .output()
            .unwrap()
    };
    assert!(!push("../escape").status.success());
    let abs = outside.join("abs");
    let _ = push(&abs.display().to_string());
    // Through a symlink planted inside the sync dir.
    std::os::unix::fs::symlink(&outside, sync.join("link")).unwrap();
    let _ = push("link/");
    let _ = push("link/sub/");
    // A transfer that itself creates a symlink and then writes beneath a same-named path.
    let tree = w.home.tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("evil")).unwrap();
    let _ = Command::new("rsync")
        .args(["-rl", "-e", &rsh(&w)])
        .arg(format!("{}/", tree.display()))
        .arg(dest(&w, ""))
        .output()
        .unwrap();
    let tree2 = w.home.tmp.path().join("tree2");
    std::fs::create_dir_all(tree2.join("evil")).unwrap();
    std::fs::write(tree2.join("evil/x"), b"x").unwrap();
    let _ = Command::new("rsync")
        .args(["-r", "--keep-dirlinks", "-e", &rsh(&w)])
        .arg(format!("{}/", tree2.display()))
        .arg(dest(&w, ""))
        .output()
        .unwrap();
    assert_eq!(
        snapshot(&outside),
        snap,
        "nothing may land outside the sync dir"
    );

    // And a normal push works, so the refusals above are not an artefact of a broken setup.
    let ok = Command::new("rsync")
        .args(["-r", "-e", &rsh(&w)])
        .arg(&file)
        .arg(dest(&w, ""))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(std::fs::read(sync.join("payload")).unwrap(), b"payload");
}
