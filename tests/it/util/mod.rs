//! The harness: a controller home with a scrubbed environment, a real sshd on a free loopback
//! port, and either the whole `init` → `link` → `target add` flow ([`World::new`], for tests
//! about set-up) or `init` plus the state `link` and `target add` leave, written directly
//! ([`World::fast`], [`prelink`]: no SSH round trips, for everything else).
//!
//! Invariants: every test gets its own temp dirs and its own sshd, so tests run in parallel
//! threads; nothing here needs root (sshd on a high port can only log in as the user running
//! it, which is exactly the user the tests log in as); the real user's `~/.ssh` is never read
//! or written (offsync gets a temp `HOME`, plain ssh gets `-F /dev/null` and
//! `UserKnownHostsFile=/dev/null`).
#![allow(dead_code)]

use assert_cmd::Command;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether missing end-to-end tools must fail the tests (CI and `scripts/test` set this).
pub fn e2e_required() -> bool {
    std::env::var("OFFSYNC_REQUIRE_E2E").is_ok_and(|v| v == "1")
}

/// Whether this is a long run (`scripts/test --full` sets `OFFSYNC_TEST_FULL=1`): contrasts
/// that are printed but not asserted, and bigger trees, are for those runs only.
pub fn full_run() -> bool {
    std::env::var_os("OFFSYNC_TEST_FULL").is_some_and(|v| v == "1")
}

/// True when sshd, ssh, ssh-keygen, rsync and rrsync exist, so end-to-end tests can run.
/// Otherwise prints `SKIP: …` and returns false — or panics when `OFFSYNC_REQUIRE_E2E=1`, so
/// that a CI image without the tools fails loudly instead of passing vacuously.
pub fn skip_unless_tools() -> bool {
    let missing: Vec<&str> = [
        ("sshd", sshd_path()),
        ("ssh", which("ssh")),
        ("ssh-keygen", which("ssh-keygen")),
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
    if e2e_required() {
        panic!("OFFSYNC_REQUIRE_E2E=1 but missing for end-to-end tests: {missing:?}");
    }
    eprintln!("SKIP: missing {missing:?} (set OFFSYNC_REQUIRE_E2E=1 to make this an error)");
    false
}

/// `name` on PATH: the product's own lookup (`offsync::deps::which`).
pub fn which(name: &str) -> Option<PathBuf> {
    offsync::deps::which(name)
}

fn sshd_path() -> Option<PathBuf> {
    Some(PathBuf::from("/usr/sbin/sshd"))
        .filter(|p| p.is_file())
        .or_else(|| which("sshd"))
}

/// rrsync as `offsync link` finds it (PATH, then the distributions' places; its interpreter
/// must exist).
fn rrsync_path() -> Option<PathBuf> {
    offsync::deps::find_rrsync(None).ok()
}

/// The login name of the test process: the only user a non-root sshd accepts. From the passwd
/// entry of our uid (`offsync::context::passwd_user`: never `$USER`, which `runuser`/`sudo`
/// may leave stale), else `id -un` (for users that only NSS knows).
pub fn user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        offsync::context::passwd_user().unwrap_or_else(|| {
            let out = std::process::Command::new("id")
                .arg("-un")
                .output()
                .expect("run `id -un`");
            assert!(out.status.success(), "id -un: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
    })
}

/// `user@127.0.0.1`.
pub fn login() -> String {
    format!("{}@127.0.0.1", user())
}

/// A std command for a helper program (ssh, rsync, ssh-keygen) with a scrubbed environment:
/// only PATH, HOME (`home`), USER/LOGNAME and LANG.
pub fn tool(program: &str, home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("USER", user())
        .env("LOGNAME", user())
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    c
}

/// Generate an ssh key with ssh-keygen; `None` when ssh-keygen refuses (e.g. a key size).
pub fn keygen(dir: &Path, name: &str, args: &[&str]) -> Option<PathBuf> {
    let p = dir.join(name);
    let ok = tool("ssh-keygen", dir)
        .args(["-q", "-N", "", "-C", name])
        .args(args)
        .arg("-f")
        .arg(&p)
        .stderr(Stdio::null())
        .status()
        .expect("run ssh-keygen")
        .success();
    ok.then_some(p)
}

/// `SHA256:…` of a public key file, via `ssh-keygen -lf` (field 2).
pub fn fingerprint_of(pub_file: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_file)
        .output()
        .expect("run ssh-keygen -lf");
    assert!(out.status.success(), "ssh-keygen -lf: {out:?}");
    let fp = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -lf prints a fingerprint")
        .to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    fp
}

/// A controller: a temp OFFSYNC_HOME whose path contains a space (to exercise quoting), a temp
/// HOME, and a scrubbed environment for the real binary.
pub struct Home {
    pub tmp: tempfile::TempDir,
    /// `$OFFSYNC_HOME` (`<tmp>/off home`, not created: `init` creates it).
    pub home: PathBuf,
    /// `$HOME` for offsync and the helper tools.
    pub user_home: PathBuf,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("off home");
        let user_home = tmp.path().join("user home");
        std::fs::create_dir_all(&user_home).unwrap();
        Home {
            tmp,
            home,
            user_home,
        }
    }

    /// `offsync ARGS` with only PATH, HOME, USER, LOGNAME, LANG and OFFSYNC_HOME set.
    pub fn offsync<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::cargo_bin("offsync").unwrap();
        c.env_clear()
            .envs(self.env())
            .args(args)
            .timeout(Duration::from_secs(120));
        c
    }

    /// The same environment for a `std::process::Command` (for tests that spawn offsync and
    /// signal it).
    pub fn offsync_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("offsync"));
        c.env_clear().envs(self.env());
        c
    }

    /// `offsync ARGS` started by `sh` after `umask UMASK` (the environment as [`Home::offsync`]).
    pub fn offsync_umask<I, S>(&self, umask: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new("sh");
        c.env_clear()
            .envs(self.env())
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(assert_cmd::cargo::cargo_bin("offsync"))
            .args(args)
            .timeout(Duration::from_secs(120));
        c
    }

    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("HOME", self.user_home.clone().into()),
            ("USER", user().into()),
            ("LOGNAME", user().into()),
            ("LANG", "C.UTF-8".into()),
            ("OFFSYNC_HOME", self.home.clone().into()),
        ]
    }

    /// A helper tool with this controller's scrubbed environment.
    pub fn tool(&self, program: &str) -> std::process::Command {
        tool(program, &self.user_home)
    }

    /// `offsync init [--source DIR]`, asserted to succeed; returns its stdout.
    pub fn init(&self, source: Option<&Path>) -> String {
        let mut c = self.offsync(["init"]);
        if let Some(s) = source {
            c.arg("--source").arg(s);
        }
        stdout(c.assert().success().get_output())
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
    /// The base64 part of the controller's public key.
    pub fn pub_blob(&self) -> String {
        std::fs::read_to_string(self.pub_key())
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
}

/// A real sshd on 127.0.0.1 with its own host key, authorized_keys and log.
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
        // A root sshd checks for its privilege-separation directory even with -D on a high
        // port; a non-root sshd does not need it (and could not create it).
        if is_root() && !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let st = tool("ssh-keygen", &dir)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f"])
            .arg(dir.join("host_ed25519"))
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen for the host key failed");
        let log = dir.join("sshd.log");
        for attempt in 0..5 {
            let port = free_port();
            let cfg = format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {d}/host_ed25519\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 AllowTcpForwarding yes\n\
                 AllowAgentForwarding yes\n\
                 X11Forwarding no\n\
                 PermitTTY yes\n\
                 PidFile {d}/sshd.pid\n\
                 LogLevel DEBUG1\n\
                 MaxStartups 100\n",
                d = dir.display()
            );
            std::fs::write(dir.join("sshd_config"), cfg).unwrap();
            let mut child = std::process::Command::new(sshd_path().expect("sshd"))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sshd");
            if wait_ready(&mut child, port, &log) {
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
            "sshd would not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop sshd now (also done on drop).
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
    /// The directory `link` allows (not created here: `link` creates it). Contains a space.
    pub fn sync_dir(&self) -> PathBuf {
        self.dir.join("sync dir")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
    /// Wait up to 5 s for `needle` to appear in the sshd log (sessions log asynchronously).
    pub fn log_contains(&self, needle: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// The host key's fingerprint (`ssh-keygen -lf host_ed25519.pub`).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.dir.join("host_ed25519.pub"))
    }
    /// The host key's base64 blob.
    pub fn host_key_blob(&self) -> String {
        std::fs::read_to_string(self.dir.join("host_ed25519.pub"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
    pub fn login(&self) -> String {
        login()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the tests run as root (effective uid 0): the product's own check.
pub fn is_root() -> bool {
    offsync::deps::is_root()
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ready when sshd logged that it listens on *our* port and the port accepts connections
/// (checking the log as well rules out another process that grabbed the port meanwhile).
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> bool {
    let want = format!("Server listening on 127.0.0.1 port {port}.");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let logged = std::fs::read_to_string(log).is_ok_and(|l| l.contains(&want));
        if logged && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `offsync link` on the "target" side of `sshd` for the controller key of `home`, as the
/// README describes it; returns its stdout (the `offsync target add …` line).
pub fn link(home: &Home, sshd: &Sshd, extra: &[&str]) -> String {
    stdout(link_cmd(home, sshd, extra).assert().success().get_output())
}

pub fn link_cmd(home: &Home, sshd: &Sshd, extra: &[&str]) -> Command {
    let mut c = home.offsync(["link", "--key-file"]);
    c.arg(home.pub_key())
        .arg("--path")
        .arg(sshd.sync_dir())
        .arg("--authorized-keys")
        .arg(sshd.authorized_keys())
        .arg("--sshd-config")
        .arg(sshd.config())
        .arg("--yes")
        .args(allow_root())
        .args(extra);
    c
}

/// `--allow-root` when the tests run as root: sshd then logs the key in as root, which `link`
/// refuses without it (see `link_as_root_needs_allow_root`).
pub fn allow_root() -> &'static [&'static str] {
    if is_root() { &["--allow-root"] } else { &[] }
}

/// The `--fingerprint` value in link's printed `offsync target add …` command.
pub fn printed_fingerprint(link_stdout: &str) -> String {
    link_stdout
        .split_whitespace()
        .skip_while(|w| *w != "--fingerprint")
        .nth(1)
        .unwrap_or_else(|| panic!("link prints --fingerprint: {link_stdout}"))
        .to_string()
}

/// `offsync target add USER@127.0.0.1 --port P --path SYNC [--fingerprint FP] --name NAME`.
pub fn target_add_cmd(home: &Home, sshd: &Sshd, name: &str, fingerprint: Option<&str>) -> Command {
    let mut c = home.offsync(["target", "add"]);
    c.arg(sshd.login())
        .args(["--port", &sshd.port.to_string(), "--name", name])
        .arg("--path")
        .arg(sshd.sync_dir());
    if let Some(fp) = fingerprint {
        c.args(["--fingerprint", fp]);
    }
    c
}

/// The state that `offsync link --key-file PUB --path SYNC --yes` (on the target) and then
/// `offsync target add USER@127.0.0.1 --port P --path SYNC --fingerprint FP --name NAME` (on
/// the controller) leave behind, written directly instead of probing over SSH:
/// - target: SYNC created (0700) and the key's `restrict,…,command="RRSYNC -wo SYNC" ssh-ed25519
///   … offsync-link: COMMENT linked DATE` line in authorized_keys, built by the product's own
///   `authorized_keys::build_line` with rrsync found as `link` finds it;
/// - controller: the sshd host key in `$OFFSYNC_HOME/known_hosts` under `[127.0.0.1]:P`, the
///   target in config.yaml, and a target marker (`.offsync-marker-ID` in SYNC, the id in
///   `$OFFSYNC_HOME/markers/NAME`), so the first apply behaves as after a real `target add`.
///
/// `setup::the_fast_fixture_writes_what_link_and_target_add_write` checks that every file is
/// byte-identical to what the real flow writes.
pub fn prelink(home: &Home, sshd: &Sshd, name: &str) {
    use offsync::config::{Config, TargetConfig};
    use offsync::{authorized_keys, fsutil, keys, known_hosts, marker, sanitize};

    // Target side: `link`.
    let key = keys::read_public(&home.pub_key()).unwrap();
    let dir = sshd.sync_dir();
    fsutil::ensure_private_dir_keep(&dir).unwrap();
    let canonical = std::fs::canonicalize(&dir).unwrap();
    let rrsync = rrsync_path().expect("rrsync (checked by skip_unless_tools)");
    let comment = format!(
        "{} linked {}",
        sanitize::for_terminal(key.comment()),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let line = authorized_keys::build_line(
        &key,
        rrsync.to_str().unwrap(),
        canonical.to_str().unwrap(),
        false,
        comment.trim(),
    );
    let existing = read_opt(&sshd.authorized_keys()).unwrap_or_default();
    let (content, _) = authorized_keys::upsert(&existing, &key, &line);
    fsutil::atomic_write(&sshd.authorized_keys(), &content, fsutil::FILE_MODE).unwrap();

    // Controller side: `target add` (host key first, then the marker, then config.yaml).
    let host_key =
        ssh_key::PublicKey::read_openssh_file(&sshd.dir.join("host_ed25519.pub")).unwrap();
    let host_key = host_key.key_data();
    let pattern = known_hosts::pattern("127.0.0.1", sshd.port);
    let kh = read_opt(&home.known_hosts()).unwrap_or_default();
    let kh = known_hosts::replace_host(&kh, &pattern, std::slice::from_ref(host_key));
    fsutil::atomic_write(&home.known_hosts(), &kh, fsutil::FILE_MODE).unwrap();
    let id = marker::new_id();
    marker::write_source(&canonical, &id).unwrap();
    marker::save(&home.home, name, &id).unwrap();
    let mut config = Config::load(&home.config()).unwrap();
    assert!(config.find_target(name).is_none(), "{name} exists already");
    config.targets.push(TargetConfig {
        name: Some(name.to_string()),
        login: Some(login()),
        user: Some(user().to_string()),
        host: Some("127.0.0.1".to_string()),
        port: Some(sshd.port),
        remote_path: dir.display().to_string(),
        rrsync: None,
        fingerprint: Some(keys::fingerprint_of(host_key)),
        no_delete: false,
        check: None,
        layout: None,
        keep: None,
        ssh_options: Default::default(),
        exclude: Vec::new(),
        extra: None,
    });
    config.save(&home.config()).unwrap();
}

/// A controller with a source and `n` linked and added targets (`t1`, `t2`, …), each behind
/// its own sshd. Everything (temp dirs, sshd processes) lives as long as the value.
pub struct World {
    pub home: Home,
    pub source: PathBuf,
    pub targets: Vec<Sshd>,
    /// What `link` printed for each target.
    pub link_stdout: Vec<String>,
}

/// The whole real flow for one target `t1`: `init --source`, `link --key-file … --yes`,
/// then `target add … --fingerprint <what link printed> --name t1`.
pub fn setup_linked_target() -> World {
    World::new(1)
}

/// [`World::fast`] with one target `t1`: for tests that need a linked target but are not
/// about setting one up.
pub fn fast_linked_target() -> World {
    World::fast(1)
}

impl World {
    /// `n` targets through the real flow (`link`, then `target add`: several SSH round trips
    /// each). Tests about set-up use this; the others use [`World::fast`].
    pub fn new(n: usize) -> World {
        World::with_link_args(n, &[])
    }

    pub fn with_link_args(n: usize, link_args: &[&str]) -> World {
        let mut w = World::initialised();
        for _ in 0..n {
            w.add_target(link_args);
        }
        w
    }

    /// `n` pre-linked targets: the state `link` and `target add` leave (see [`prelink`]) is
    /// written directly, without connecting. `init` still runs (it is fast and in-process).
    pub fn fast(n: usize) -> World {
        let mut w = World::initialised();
        for _ in 0..n {
            w.add_prelinked_target();
        }
        w
    }

    /// A controller after `init --source`, with no target.
    fn initialised() -> World {
        let home = Home::new();
        let source = home.tmp.path().join("source dir");
        std::fs::create_dir_all(&source).unwrap();
        home.init(Some(&source));
        World {
            home,
            source,
            targets: Vec::new(),
            link_stdout: Vec::new(),
        }
    }

    /// Start another sshd and write it as `t<N>` with [`prelink`] (`link_stdout` gets an
    /// empty entry: nothing ran `link`).
    pub fn add_prelinked_target(&mut self) -> &Sshd {
        let sshd = Sshd::start();
        let name = format!("t{}", self.targets.len() + 1);
        prelink(&self.home, &sshd, &name);
        self.targets.push(sshd);
        self.link_stdout.push(String::new());
        self.targets.last().unwrap()
    }

    /// Start another sshd, link it and add it as `t<N>`.
    pub fn add_target(&mut self, link_args: &[&str]) -> &Sshd {
        let sshd = Sshd::start();
        let printed = link(&self.home, &sshd, link_args);
        let fp = printed_fingerprint(&printed);
        assert_eq!(fp, sshd.fingerprint(), "link printed the sshd host key");
        let name = format!("t{}", self.targets.len() + 1);
        target_add_cmd(&self.home, &sshd, &name, Some(&fp))
            .assert()
            .success();
        self.targets.push(sshd);
        self.link_stdout.push(printed);
        self.targets.last().unwrap()
    }

    /// The first target's sshd.
    pub fn sshd(&self) -> &Sshd {
        &self.targets[0]
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.source.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file, directory and symlink below `dir` with its content (or link target), sorted.
pub fn snapshot(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .map(|(p, _, content)| (p, content))
        .collect()
}

/// Like [`snapshot`], with permission bits: a recursive listing for "nothing changed" checks.
/// offsync's own target markers (`.offsync-marker-*` at the root, see `marker.rs`) are left
/// out: they are not part of what is synced. [`markers`] lists them.
pub fn listing(dir: &Path) -> Vec<(Vec<u8>, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, u32, Vec<u8>)>) {
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
            let m = mode_nofollow(&p);
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((rel, m, t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_dir() {
                out.push((rel, m, b"<dir>".to_vec()));
                walk(root, &p, out);
            } else {
                out.push((rel, m, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|(p, _, _)| !p.starts_with(b".offsync-marker-"));
    out.sort();
    out
}

/// Bytes of a file, or `None` when it does not exist.
pub fn read_opt(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// Permission bits of `p` (following symlinks).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn mode_nofollow(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Kill (and reap) a child process on drop, so a failing assertion never leaks it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `moto_server` (a real S3-compatible server, Python): `$OFFSYNC_MOTO_SERVER`, PATH, or the
/// virtualenvs `scripts/test` creates.
pub fn moto_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OFFSYNC_MOTO_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let home_venv = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/offsync/moto-venv/bin/moto_server"));
    which("moto_server")
        .or_else(|| {
            Some(PathBuf::from("/opt/offsync-moto/bin/moto_server")).filter(|p| p.is_file())
        })
        .or_else(|| home_venv.filter(|p| p.is_file()))
}

/// True when moto is available (else SKIP, or panic under `OFFSYNC_REQUIRE_E2E=1`).
pub fn skip_unless_moto() -> bool {
    if moto_path().is_some() {
        return true;
    }
    if e2e_required() {
        panic!("OFFSYNC_REQUIRE_E2E=1 but moto_server is missing (scripts/test installs it)");
    }
    eprintln!("SKIP: moto_server missing (scripts/test installs it)");
    false
}

/// True when the `age` CLI is available (else SKIP, or panic under `OFFSYNC_REQUIRE_E2E=1`).
pub fn skip_unless_age() -> bool {
    if which("age").is_some() && which("age-keygen").is_some() {
        return true;
    }
    if e2e_required() {
        panic!("OFFSYNC_REQUIRE_E2E=1 but the age CLI is missing (scripts/test installs it)");
    }
    eprintln!("SKIP: age CLI missing");
    false
}

/// One moto server per test binary, on a free loopback port. A small Python watchdog owns
/// it and kills it when this test process exits, so no server outlives the tests.
pub fn moto_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let moto = moto_path().expect("checked by skip_unless_moto");
        let port = free_port();
        let watchdog = r#"
import os, subprocess, sys, time
parent = os.getppid()
p = subprocess.Popen([sys.argv[1], "-H", "127.0.0.1", "-p", sys.argv[2]],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while p.poll() is None and os.getppid() == parent:
    time.sleep(0.2)
p.kill()
"#;
        let child = std::process::Command::new("python3")
            .arg("-c")
            .arg(watchdog)
            .arg(&moto)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 starts the moto watchdog");
        std::mem::forget(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http("PUT", port, "/offsync-probe").is_some_and(|s| s == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("http://127.0.0.1:{port}")
    })
}

/// A plain HTTP request to moto on loopback (bucket admin for tests); returns the status.
pub fn http(method: &str, port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A fresh bucket on the shared moto server; returns its name.
pub fn new_bucket() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "b{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let port: u16 = moto_endpoint().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        http("PUT", port, &format!("/{name}")),
        Some(200),
        "create bucket {name}"
    );
    name
}

/// Dummy S3 credentials (moto accepts any signed request).
pub const AWS_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "offsync-test"),
    ("AWS_SECRET_ACCESS_KEY", "offsync-test-secret"),
];

// --- Hostile-test helpers (faults, deletes, confinement) -----------------------------------

/// A tiny deterministic PRNG (xorshift64*): no crate, and a printed seed reproduces a run.
pub struct Prng(u64);

impl Prng {
    /// Seeded from `OFFSYNC_FAULT_SEED` when set (to replay a failure), else from the clock.
    /// The seed is printed either way.
    pub fn from_env_or_time(label: &str) -> Prng {
        let seed = std::env::var("OFFSYNC_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
            });
        eprintln!("{label}: seed {seed} (replay with OFFSYNC_FAULT_SEED={seed})");
        Prng::new(seed)
    }
    pub fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Processes (pid, cmdline with NULs as spaces) whose `/proc/PID/cmdline` contains `needle`,
/// other than this test process. Zombies have an empty cmdline and never match.
pub fn procs_matching(needle: &[u8]) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.windows(needle.len()).any(|w| w == needle) {
            let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, text.trim_end().to_string()));
        }
    }
    out
}

/// Poll until no process mentions `needle` (see [`procs_matching`]) or `limit` passes; returns
/// what was still there at the deadline.
pub fn wait_no_procs(needle: &[u8], limit: Duration) -> Vec<(u32, String)> {
    let end = Instant::now() + limit;
    loop {
        let left = procs_matching(needle);
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Send `signal` (a `kill -s` name such as `TERM`) to `pid`; a negative `pid` is a process
/// group. Uses kill(1): the test crate has no libc. The process may already be gone, so
/// kill's own status is ignored; callers assert on the process's exit status.
pub fn send_signal(pid: i64, signal: &str) {
    std::process::Command::new("kill")
        .args(["-s", signal, "--", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
}

/// SIGKILL every process whose cmdline mentions `needle` (cleanup after a failed check).
pub fn kill_matching(needle: &[u8]) {
    for (pid, _) in procs_matching(needle) {
        send_signal(i64::from(pid), "KILL");
    }
}

/// On drop, SIGKILL every process whose cmdline mentions `needle`: a panicking test never
/// leaves offsync's ssh/rsync children behind.
pub struct KillMatchingOnDrop(pub Vec<u8>);

impl Drop for KillMatchingOnDrop {
    fn drop(&mut self) {
        kill_matching(&self.0);
    }
}

/// Wait for a child with a deadline; `None` when it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The bytes of the controller home path: every ssh and rsync offsync starts carries it in
/// its argv (`-i …/id_ed25519`, `IdentityFile=…`), so it finds offsync's children.
pub fn home_needle(home: &Home) -> Vec<u8> {
    home.home.as_os_str().as_bytes().to_vec()
}

/// `$OFFSYNC_HOME/operations.log` as JSON values (empty when there is no log yet), read like
/// any reader must (`offsync::oplog::read_values`): a line torn by a SIGKILL'd append is
/// skipped.
pub fn oplog(home: &Home) -> Vec<serde_json::Value> {
    offsync::oplog::read_values(&home.home.join("operations.log")).unwrap()
}

/// The newest log record of `target`.
pub fn last_record(home: &Home, target: &str) -> serde_json::Value {
    oplog(home)
        .into_iter()
        .rev()
        .find(|r| r["target"] == target)
        .unwrap_or_else(|| panic!("no operations.log record for {target}"))
}

/// Every path of a record's `list` (`files_changed` or `files_deleted`): the record's own list,
/// or, when it was cut, the complete one from its `paths_file` (checked against the record's
/// `<list>_count` and its first entries).
pub fn logged_paths(
    home: &Home,
    rec: &serde_json::Value,
    list: &str,
) -> std::collections::BTreeSet<String> {
    let count = rec[format!("{list}_count")]
        .as_u64()
        .unwrap_or_else(|| panic!("no {list}_count: {rec}"));
    let shown = rec[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {rec}"));
    let all: Vec<serde_json::Value> = match rec["paths_file"].as_str() {
        Some(rel) => {
            assert!(shown.len() <= 100, "at most 100 {list} in a record: {rec}");
            let file = home.home.join(rel);
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("paths_file {}: {e}", file.display()));
            let full: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(full["target"], rec["target"], "{full}");
            assert_eq!(full["timestamp"], rec["timestamp"], "{full}");
            let all = full[list].as_array().unwrap().clone();
            assert_eq!(
                &all[..shown.len()],
                &shown[..],
                "the record lists the first ones"
            );
            all
        }
        None => shown.clone(),
    };
    assert_eq!(all.len() as u64, count, "{list}_count: {rec}");
    string_set(&serde_json::Value::Array(all))
}

/// A JSON array of strings as a sorted set.
pub fn string_set(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("{s}")).to_string())
        .collect()
}

/// Whether a file name is offsync's target marker (`.offsync-marker-<hex>`).
pub fn is_marker(name: &[u8]) -> bool {
    name.starts_with(b".offsync-marker-")
}

/// [`snapshot`] without offsync's marker file in the root (it exists only on targets).
pub fn snapshot_sans_marker(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = snapshot(dir);
    s.retain(|(p, _)| !is_marker(p));
    s
}

/// The markers in a target directory's root.
pub fn markers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_marker(n.as_bytes()))
                .collect()
        })
        .unwrap_or_default()
}

/// Set a top-level `key: value` in config.yaml: replace the key's line when it is there,
/// else insert it before `targets:`.
pub fn set_config(home: &Home, key: &str, value: &str) {
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let prefix = format!("{key}:");
    let mut found = false;
    let mut lines: Vec<String> = cfg
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{key}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        let at = lines
            .iter()
            .position(|l| l.starts_with("targets:"))
            .unwrap_or(lines.len());
        lines.insert(at, format!("{key}: {value}"));
    }
    std::fs::write(home.config(), lines.join("\n") + "\n").unwrap();
}

/// Write a file (parents created) below `root` at a raw byte path.
pub fn write_bytes(root: &Path, rel: &[u8], content: &[u8]) {
    let p = root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Every path below `dir` (files, dirs, symlinks), relative, as lossy strings.
pub fn paths_below(dir: &Path) -> std::collections::BTreeSet<String> {
    listing(dir)
        .into_iter()
        .map(|(p, _, _)| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

/// stdout and stderr of a finished command, together (for "the message mentions X").
pub fn all_output(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

/// A raw HTTP/1.0 request with a body to moto on loopback (moto reads the access key from
/// the Authorization header but does not check the signature):
/// returns the status and the response body. Tests use it to read and plant objects the way
/// anyone with write access to the bucket could.
pub fn http_body(method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let port: u16 = moto_endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=offsync-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: 20260101T000000Z\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf[split + 4..].to_vec())
}

/// Change one target's entry in config.yaml.
pub fn edit_target(h: &Home, name: &str, f: impl FnOnce(&mut offsync::config::TargetConfig)) {
    let mut c = offsync::config::Config::load(&h.config()).unwrap();
    let t = c
        .targets
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no target {name}"));
    f(t);
    c.save(&h.config()).unwrap();
}
