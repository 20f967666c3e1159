//! The harness: scrubbed environments, a real sshd on a free loopback port, and the whole
//! init → link → target add flow.
#![allow(dead_code)]

use assert_cmd::Command;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// True when the end-to-end tools exist. With `OFFSYNC_REQUIRE_E2E=1` a missing tool fails
/// the test instead of skipping it.
pub fn tools_present() -> bool {
    let missing: Vec<&str> = [
        ("sshd", sshd_path()),
        ("rsync", which("rsync")),
        ("rrsync", rrsync_path()),
    ]
    .into_iter()
    .filter(|(_, p)| p.is_none())
    .map(|(n, _)| n)
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("OFFSYNC_REQUIRE_E2E").is_some() {
        panic!("missing for end-to-end tests: {missing:?}");
    }
    eprintln!("SKIP: missing {missing:?}");
    false
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

fn sshd_path() -> Option<PathBuf> {
    which("sshd").or_else(|| Some(PathBuf::from("/usr/sbin/sshd")).filter(|p| p.exists()))
}

fn rrsync_path() -> Option<PathBuf> {
    which("rrsync").or_else(|| Some(PathBuf::from("/usr/lib/rsync/rrsync")).filter(|p| p.exists()))
}

/// The login name of the test process.
pub fn user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A controller: a temp OFFSYNC_HOME (with a space in its path) and a scrubbed environment.
pub struct Home {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub user_home: PathBuf,
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("off home");
        let user_home = tmp.path().join("user");
        std::fs::create_dir_all(&user_home).unwrap();
        Home {
            tmp,
            home,
            user_home,
        }
    }

    /// `offsync ARGS` with only PATH, HOME, USER, LANG and OFFSYNC_HOME set.
    pub fn offsync<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::cargo_bin("offsync").unwrap();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.user_home)
            .env("USER", user())
            .env("LOGNAME", user())
            .env("LANG", "C.UTF-8")
            .env("OFFSYNC_HOME", &self.home)
            .args(args);
        c
    }

    pub fn key(&self) -> PathBuf {
        self.home.join("id_ed25519")
    }
    pub fn pub_key(&self) -> PathBuf {
        self.home.join("id_ed25519.pub")
    }
    pub fn config(&self) -> PathBuf {
        self.home.join("config.yaml")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.home.join("known_hosts")
    }
}

/// A real sshd on 127.0.0.1 with its own host key and authorized_keys.
pub struct Sshd {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Sshd {
    pub fn start() -> Sshd {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        if user() == "root" {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("host_ed25519"))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::create_dir_all(dir.join("sync dir")).unwrap();
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let cfg = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nAuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAllowTcpForwarding yes\nAllowAgentForwarding yes\nX11Forwarding no\n\
                 PermitTTY yes\nPidFile {d}/sshd.pid\nLogLevel DEBUG1\nMaxStartups 100\n",
                d = dir.display()
            );
            std::fs::write(dir.join("sshd_config"), cfg).unwrap();
            let mut child = std::process::Command::new(sshd_path().unwrap())
                .arg("-D")
                .arg("-f")
                .arg(dir.join("sshd_config"))
                .arg("-E")
                .arg(dir.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_ready(&mut child, port) {
                return Sshd {
                    tmp,
                    dir,
                    port,
                    child: Some(child),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("sshd did not start on port {port} (attempt {attempt}); retrying");
        }
        panic!(
            "sshd would not start; see {}",
            dir.join("sshd.log").display()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }
    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }
    pub fn sync_dir(&self) -> PathBuf {
        self.dir.join("sync dir")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
    pub fn fingerprint(&self) -> String {
        let out = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.join("host_ed25519.pub"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
    pub fn login(&self) -> String {
        format!("{}@127.0.0.1", user())
    }
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run `link` on the "target" side for `sshd` with the controller key of `home`.
pub fn link(home: &Home, sshd: &Sshd, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "link".into(),
        "--key-file".into(),
        home.pub_key().display().to_string(),
        "--path".into(),
        sshd.sync_dir().display().to_string(),
        "--authorized-keys".into(),
        sshd.authorized_keys().display().to_string(),
        "--sshd-config".into(),
        sshd.config().display().to_string(),
        "--yes".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = home
        .offsync(&args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// A controller with a source and `n` linked and added targets (`t1`, `t2`, …).
pub struct World {
    pub home: Home,
    pub source: PathBuf,
    pub targets: Vec<Sshd>,
}

impl World {
    pub fn new(n: usize) -> World {
        World::with_link_args(n, &[])
    }

    pub fn with_link_args(n: usize, link_args: &[&str]) -> World {
        let home = Home::new();
        let source = home.tmp.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        home.offsync(["init", "--source"])
            .arg(&source)
            .assert()
            .success();
        let mut targets = Vec::new();
        for i in 1..=n {
            let sshd = Sshd::start();
            let printed = link(&home, &sshd, link_args);
            let fp = printed
                .split_whitespace()
                .skip_while(|w| *w != "--fingerprint")
                .nth(1)
                .expect("link prints --fingerprint")
                .to_string();
            assert_eq!(fp, sshd.fingerprint());
            home.offsync([
                "target",
                "add",
                &sshd.login(),
                "--port",
                &sshd.port.to_string(),
                "--fingerprint",
                &fp,
                "--name",
                &format!("t{i}"),
            ])
            .arg("--path")
            .arg(sshd.sync_dir())
            .assert()
            .success();
            targets.push(sshd);
        }
        World {
            home,
            source,
            targets,
        }
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.source.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// Every file and symlink below `dir` with its content (or link target), sorted.
pub fn snapshot(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                ));
            } else if ft.is_dir() {
                out.push((rel.clone(), b"<dir>".to_vec()));
                walk(root, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Bytes of a file, or `None` when it does not exist.
pub fn read_opt(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}
