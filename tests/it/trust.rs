//! The mirror's trust model, tried as an attacker would, on moto (real S3 on loopback) and a
//! local directory, with the real `age` and `ssh-keygen`:
//! - a reader holding the mirror key forges generations (valid age encryption and MAC,
//!   correctly chained) with hostile entries: every reader refuses, nothing is written;
//! - a compromised writer signs the same hostile entries: path validation still refuses;
//! - a symlink planted in DEST is never written through;
//! - a reader cannot publish, a removed writer no longer can;
//! - `ssh-keygen -Y verify` checks a real snapshot by hand, as `offsync-mirror(1)` documents;
//! - an unsigned (pre-signature) mirror reads after `mirror sign`; a downgrade is refused.

use crate::mirror::{Backend, Mirror, filled, full_listing, json};
use crate::util::{AWS_ENV, Home, http_body, listing, skip_unless_age, stderr, stdout};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What someone holding one recipient's age identity and write access to the store can do,
/// using only the age CLI, ssh-keygen and BLAKE3 (as documented in `offsync-mirror(1)`).
struct Forger<'a> {
    m: &'a Mirror,
    work: PathBuf,
    key_file: PathBuf,
    recipient: String,
    secret: String,
}

impl<'a> Forger<'a> {
    fn new(m: &'a Mirror, identity: &Path) -> Forger<'a> {
        let work = tempfile::tempdir().unwrap().keep();
        let mut f = Forger {
            m,
            work: work.clone(),
            key_file: work.join("mirror-key.txt"),
            recipient: String::new(),
            secret: String::new(),
        };
        let sealed = f.get("keys/mirror-key.age");
        std::fs::write(work.join("key.age"), sealed).unwrap();
        run(Command::new("age")
            .args(["-d", "-i"])
            .arg(identity)
            .arg("-o")
            .arg(&f.key_file)
            .arg(work.join("key.age")));
        let text = std::fs::read_to_string(&f.key_file).unwrap();
        f.secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .unwrap()
            .to_string();
        f.recipient =
            String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&f.key_file)).stdout)
                .unwrap()
                .trim()
                .to_string();
        f
    }

    fn s3_path(&self, rel: &str) -> String {
        format!("/{}/{rel}", self.m.url.strip_prefix("s3://").unwrap())
    }

    fn get(&self, rel: &str) -> Vec<u8> {
        match &self.m.dir {
            Some(d) => std::fs::read(d.join(rel)).unwrap(),
            None => {
                let (status, body) = http_body("GET", &self.s3_path(rel), b"");
                assert_eq!(status, 200, "GET {rel}");
                body
            }
        }
    }

    fn put(&self, rel: &str, bytes: &[u8]) {
        match &self.m.dir {
            Some(d) => std::fs::write(d.join(rel), bytes).unwrap(),
            None => {
                let (status, _) = http_body("PUT", &self.s3_path(rel), bytes);
                assert_eq!(status, 200, "PUT {rel}");
            }
        }
    }

    fn plaintext(&self, generation: u64) -> Vec<u8> {
        let sealed = self.work.join("in.age");
        let plain = self.work.join("plain");
        let _ = std::fs::remove_file(&plain);
        std::fs::write(&sealed, self.get(&snapshot_name(generation))).unwrap();
        run(Command::new("age")
            .args(["-d", "-i"])
            .arg(&self.key_file)
            .arg("-o")
            .arg(&plain)
            .arg(&sealed));
        std::fs::read(plain).unwrap()
    }

    /// Seal `json` (+ MAC, + a signature by `sign_with`) as generation `generation`.
    fn seal(&self, generation: u64, json: &str, sign_with: Option<&Path>) {
        let key = blake3::derive_key(
            "offsync mirror 2026 snapshot mac v1",
            self.secret.as_bytes(),
        );
        let mac = blake3::keyed_hash(&key, json.as_bytes()).to_hex();
        let mut pt = format!("{json}\nmac {mac}\n").into_bytes();
        if let Some(k) = sign_with {
            let line = self.work.join("line1");
            let _ = std::fs::remove_file(self.work.join("line1.sig"));
            std::fs::write(&line, format!("{json}\n")).unwrap();
            run(Command::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-f"])
                .arg(k)
                .args(["-n", "offsync-mirror"])
                .arg(&line));
            pt.extend(std::fs::read(self.work.join("line1.sig")).unwrap());
        }
        let plain = self.work.join("out-plain");
        let sealed = self.work.join("out.age");
        let _ = std::fs::remove_file(&sealed);
        std::fs::write(&plain, pt).unwrap();
        run(Command::new("age")
            .args(["-r", &self.recipient, "-o"])
            .arg(&sealed)
            .arg(&plain));
        self.put(&snapshot_name(generation), &std::fs::read(sealed).unwrap());
    }

    /// Forge generation `base + 1` with `entries`, chained to generation `base`.
    fn forge(&self, base: u64, entries: Vec<Value>, sign_with: Option<&Path>) {
        let pt = self.plaintext(base);
        let line1 = pt.split(|&b| b == b'\n').next().unwrap();
        let mut snap: Value = serde_json::from_slice(line1).unwrap();
        let files = entries.iter().filter(|e| e["kind"] != "dir").count();
        let bytes: u64 = entries.iter().filter_map(|e| e["size"].as_u64()).sum();
        snap["generation"] = json!(base + 1);
        snap["previous"] = json!(blake3::hash(&pt).to_hex().to_string());
        snap["files"] = json!(files);
        snap["bytes"] = json!(bytes);
        snap["entries"] = Value::Array(entries);
        snap.as_object_mut().unwrap().remove("rekeyed_from");
        self.seal(base + 1, &serde_json::to_string(&snap).unwrap(), sign_with);
    }

    /// A file entry of generation `base` (real object, hash and sizes) for reuse.
    fn template(&self, base: u64, path: &str) -> Value {
        let pt = self.plaintext(base);
        let line1 = pt.split(|&b| b == b'\n').next().unwrap();
        let snap: Value = serde_json::from_slice(line1).unwrap();
        snap["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap()
            .clone()
    }

    /// Rewrite generation `generation` without its signature: what an offsync from before
    /// signatures wrote.
    fn strip_signature(&self, generation: u64) {
        let pt = String::from_utf8(self.plaintext(generation)).unwrap();
        let json = pt.lines().next().unwrap().to_string();
        self.seal(generation, &json, None);
    }
}

fn snapshot_name(generation: u64) -> String {
    format!("snapshots/{generation:010}.age")
}

fn file_like(tpl: &Value, path: &str, mode: u32) -> Value {
    let mut e = tpl.clone();
    e["path"] = json!(path);
    e["mode"] = json!(mode);
    e
}

fn dir(path: &str) -> Value {
    json!({"path": path, "kind": "dir", "mode": 0o755, "mtime_s": 0, "mtime_ns": 0})
}

fn link(path: &str, target: &str) -> Value {
    json!({"path": path, "kind": "symlink", "mode": 0o777, "mtime_s": 0, "mtime_ns": 0, "target": target})
}

/// A new ed25519 key made by ssh-keygen (an attacker's, or another controller's).
fn ssh_key(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "attacker", "-f"])
        .arg(&k));
    k
}

/// A host: its own home and a copy of a recipient identity.
struct Host {
    home: Home,
    identity: PathBuf,
}

fn host(m: &Mirror) -> Host {
    let home = Home::new();
    let identity = home.tmp.path().join("host.id");
    std::fs::copy(m.identity(), &identity).unwrap();
    Host { home, identity }
}

/// Every hostile entry kind from the issue; paths outside DEST point into `outside`.
fn hostile(tpl: &Value, outside: &Path) -> Vec<(&'static str, Vec<Value>)> {
    let abs = outside.join("abs");
    vec![
        ("../x", vec![file_like(tpl, "../x", 0o644)]),
        (
            "sub/../../x",
            vec![dir("sub"), file_like(tpl, "sub/../../x", 0o644)],
        ),
        (
            "absolute",
            vec![file_like(tpl, abs.to_str().unwrap(), 0o644)],
        ),
        (
            "evil/planted",
            vec![
                link("evil", outside.to_str().unwrap()),
                file_like(tpl, "evil/planted", 0o644),
            ],
        ),
        ("setuid", vec![file_like(tpl, "suid", 0o4755)]),
    ]
}

/// Run every reader on the controller and a pull on `h`; each must fail with `want` in its
/// error, and nothing under `world` may change (no new file anywhere, DEST untouched).
fn all_readers_refuse(m: &Mirror, h: &Host, world: &Path, want: &[&str], case: &str) {
    let before = listing(world);
    let restore_dest = world.join("dests/restore");
    let pulled = world.join("dests/pulled");
    let rd = restore_dest.to_str().unwrap();
    let cmds: Vec<(&str, assert_cmd::Command)> = vec![
        ("mirror ls", m.off(&["mirror", "ls", "m"])),
        ("mirror snapshots", m.off(&["mirror", "snapshots", "m"])),
        ("mirror restore", m.off(&["mirror", "restore", "m", rd])),
        (
            "mirror restore --snapshot 2",
            m.off(&["mirror", "restore", "m", rd, "--snapshot", "2"]),
        ),
        ("plan", m.off(&["plan"])),
        ("verify", m.off(&["verify"])),
        (
            "apply",
            m.off(&["apply", "--yes", "--delete", "--max-delete", "1000"]),
        ),
        ("pull", {
            let mut c = m.pull_cmd(&h.home, &pulled, &h.identity);
            c.args(["--delete", "--max-delete", "1000"]);
            c
        }),
    ];
    for (name, mut c) in cmds {
        let out = c.output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !out.status.success() && out.status.code() != Some(2),
            "{case}: {name} accepted a forged snapshot: {text}"
        );
        assert!(
            want.iter().any(|w| text.contains(w)),
            "{case}: {name}: want {want:?} in {text}"
        );
        assert_eq!(listing(world), before, "{case}: {name} wrote something");
    }
    assert!(!restore_dest.exists(), "{case}: restore created DEST");
    assert!(
        m.dir
            .as_ref()
            .is_none_or(|d| !d.join(snapshot_name(3)).exists()),
        "{case}: apply published on top of a forged generation"
    );
}

/// A world with an `outside` directory (holding a sentinel) and a pulled DEST at generation 1.
fn world_with_pull(m: &Mirror, h: &Host) -> PathBuf {
    let world = h.home.tmp.path().join("world");
    std::fs::create_dir_all(world.join("outside")).unwrap();
    std::fs::write(world.join("outside/sentinel"), b"untouched").unwrap();
    std::fs::create_dir_all(world.join("dests")).unwrap();
    let pulled = world.join("dests/pulled");
    let out = m.pull_cmd(&h.home, &pulled, &h.identity).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(full_listing(&pulled), full_listing(&m.source));
    world
}

fn forged_snapshots_are_refused(backend: Backend) {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(backend) else {
        return;
    };
    let h = host(&m);
    let world = world_with_pull(&m, &h);
    let outside = world.join("outside");
    let forger = Forger::new(&m, &h.identity);
    let tpl = forger.template(1, "index.html");
    let attacker_key = ssh_key(h.home.tmp.path(), "attacker");

    // A reader holding the mirror key: unsigned, or signed with its own key. Both machines
    // have accepted signed generation 1, so unsigned is a downgrade.
    for (case, entries) in hostile(&tpl, &outside) {
        forger.forge(1, entries.clone(), None);
        all_readers_refuse(&m, &h, &world, &["downgrade"], &format!("unsigned {case}"));
        forger.forge(1, entries, Some(&attacker_key));
        all_readers_refuse(
            &m,
            &h,
            &world,
            &["not a writer this machine trusts"],
            &format!("attacker-signed {case}"),
        );
    }

    // A compromised writer (the trusted controller key): path validation refuses.
    for (case, entries) in hostile(&tpl, &outside) {
        if case == "setuid" {
            continue;
        }
        forger.forge(1, entries, Some(&m.home.key()));
        all_readers_refuse(
            &m,
            &h,
            &world,
            &["refused as a whole"],
            &format!("writer-signed {case}"),
        );
    }

    // A setuid file from a trusted writer is accepted but never restored setuid (unless
    // asked for on restore); pull never keeps it.
    let (_, entries) = hostile(&tpl, &outside).pop().unwrap();
    let mut entries = entries;
    entries.insert(0, file_like(&tpl, "index.html", 0o644));
    forger.forge(1, entries, Some(&m.home.key()));
    let r = world.join("dests/suid");
    let out = m
        .off(&["mirror", "restore", "m", r.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(crate::util::mode(&r.join("suid")), 0o755);
    let r2 = world.join("dests/suid-kept");
    m.off(&[
        "mirror",
        "restore",
        "m",
        r2.to_str().unwrap(),
        "--keep-special-modes",
    ])
    .assert()
    .success();
    assert_eq!(crate::util::mode(&r2.join("suid")), 0o4755);
    let pulled = world.join("dests/pulled");
    let out = m
        .pull_cmd(&h.home, &pulled, &h.identity)
        .args(["--delete", "--max-delete", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(crate::util::mode(&pulled.join("suid")), 0o755);
    assert_eq!(
        std::fs::read(outside.join("sentinel")).unwrap(),
        b"untouched"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn forged_snapshots_on_s3_are_refused_by_every_reader_and_nothing_is_written() {
    forged_snapshots_are_refused(Backend::S3);
}

#[test]
fn forged_snapshots_in_a_directory_are_refused_by_every_reader_and_nothing_is_written() {
    forged_snapshots_are_refused(Backend::Local);
}

#[test]
fn a_symlink_planted_in_dest_is_never_written_through() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let h = host(&m);
    let world = world_with_pull(&m, &h);
    let outside = world.join("outside");
    let pulled = world.join("dests/pulled");
    // Someone replaces a directory of DEST with a symlink to outside; the next release
    // changes a file below it.
    std::fs::remove_dir_all(pulled.join("dir/nested")).unwrap();
    std::os::unix::fs::symlink(&outside, pulled.join("dir/nested")).unwrap();
    std::fs::write(m.source.join("dir/nested/deep.txt"), b"v2").unwrap();
    assert!(m.apply(&[]).status.success());
    // Pull refuses before writing (its scan of DEST refuses a symlink leading out of it);
    // a symlink planted after the scan is refused by the no-follow writes (unit tests in
    // `mirror::restore`).
    let before = listing(&world);
    let out = m.pull_cmd(&h.home, &pulled, &h.identity).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("dir/nested"), "{}", stderr(&out));
    assert_eq!(listing(&world), before);
    // A symlink inside DEST that stays inside it, where the snapshot has a directory: the
    // link itself is replaced, its target is never written into.
    std::fs::remove_file(pulled.join("dir/nested")).unwrap();
    std::fs::create_dir(pulled.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", pulled.join("dir/nested")).unwrap();
    let out = m
        .pull_cmd(&h.home, &pulled, &h.identity)
        .arg("--delete")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(full_listing(&pulled), full_listing(&m.source));
    assert!(!pulled.join("dir/nested").is_symlink());
    // Restore with --force into a DEST whose `dir` is a symlink to outside.
    let r = world.join("dests/restore");
    std::fs::create_dir_all(&r).unwrap();
    std::os::unix::fs::symlink(&outside, r.join("dir")).unwrap();
    let out = m
        .off(&["mirror", "restore", "m", r.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!r.join("dir").is_symlink());
    assert_eq!(std::fs::read(r.join("dir/nested/deep.txt")).unwrap(), b"v2");
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["sentinel"], "nothing was written through a symlink");
}

#[test]
fn a_reader_cannot_publish_and_a_removed_writer_no_longer_can() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let h = host(&m);
    let world = world_with_pull(&m, &h);
    let (a, a_src) = step_a_reader_publishes_a_generation_signed_by_its_own_key(&m);
    step_nobody_else_accepts_the_readers_generation(&m, &h, &world);
    step_a_writer_added_on_purpose_is_accepted_until_removed(&m, &a, &a_src);
    step_own_key_cannot_be_removed_and_a_non_writer_is_bad_input(&m, &a);
}

/// The attacker: a host with the mirror's age identity and write access to the directory,
/// running offsync itself as a "controller" with its own key. It does not trust the
/// controller either (its apply refuses the controller's snapshot) until told to; then it
/// writes generation 2. Returns its home and source.
fn step_a_reader_publishes_a_generation_signed_by_its_own_key(m: &Mirror) -> (Home, PathBuf) {
    let a = Home::new();
    let a_src = a.tmp.path().join("src");
    std::fs::create_dir_all(&a_src).unwrap();
    a.init(Some(&a_src));
    std::fs::copy(m.identity(), a.home.join("age-identity.txt")).unwrap();
    a.offsync(["mirror", "add", "m", &m.url]).assert().success();
    // It does not trust the controller either: its apply refuses the controller's snapshot.
    let out = a.offsync(["apply", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("not a writer this machine trusts"),
        "{}",
        stdout(&out)
    );
    a.offsync([
        "mirror",
        "writers",
        "add",
        "m",
        m.home.pub_key().to_str().unwrap(),
    ])
    .assert()
    .success();
    std::fs::write(a_src.join("index.html"), b"<script>evil</script>").unwrap();
    a.offsync(["apply", "--yes", "--delete", "--max-delete", "100"])
        .assert()
        .success();
    (a, a_src)
}

/// Generation 2 is signed by the attacker: nobody else accepts it (pull and ls refuse it,
/// nothing in the pulling host's world changes).
fn step_nobody_else_accepts_the_readers_generation(m: &Mirror, h: &Host, world: &Path) {
    let pulled = world.join("dests/pulled");
    let before = listing(world);
    let out = m.pull_cmd(&h.home, &pulled, &h.identity).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a writer this machine trusts"),
        "{}",
        stderr(&out)
    );
    let out = m.off(&["mirror", "ls", "m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a writer this machine trusts"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(world), before);
}

/// Made a writer on purpose, its generations are accepted by the controller… until it is
/// removed: its next generation is refused by `mirror ls` and `plan`.
fn step_a_writer_added_on_purpose_is_accepted_until_removed(m: &Mirror, a: &Home, a_src: &Path) {
    let a_pub = a.pub_key();
    m.off(&["mirror", "writers", "add", "m", a_pub.to_str().unwrap()])
        .assert()
        .success();
    let list = stdout(
        m.off(&["mirror", "writers", "list", "m"])
            .assert()
            .success()
            .get_output(),
    );
    assert_eq!(list.lines().count(), 2, "{list}");
    m.off(&["mirror", "ls", "m"]).assert().success();
    // …until it is removed: its next generation is refused.
    m.off(&["mirror", "writers", "remove", "m", a_pub.to_str().unwrap()])
        .assert()
        .success();
    std::fs::write(a_src.join("index.html"), b"<script>evil 2</script>").unwrap();
    a.offsync(["apply", "--yes"]).assert().success();
    for args in [&["mirror", "ls", "m"][..], &["plan"][..]] {
        let out = m.off(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            format!("{}{}", stdout(&out), stderr(&out))
                .contains("not a writer this machine trusts"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Own key cannot be removed; a key that is not a writer is bad input.
fn step_own_key_cannot_be_removed_and_a_non_writer_is_bad_input(m: &Mirror, a: &Home) {
    let a_pub = a.pub_key();
    m.off(&[
        "mirror",
        "writers",
        "remove",
        "m",
        m.home.pub_key().to_str().unwrap(),
    ])
    .assert()
    .code(64);
    m.off(&["mirror", "writers", "remove", "m", a_pub.to_str().unwrap()])
        .assert()
        .code(64);
    m.off(&["mirror", "writers", "add", "m", "ssh-rsa AAAA nope"])
        .assert()
        .code(64);
}

#[test]
fn ssh_keygen_verifies_a_real_snapshot_by_hand_as_documented() {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    let w = m.home.tmp.path().join("by-hand");
    std::fs::create_dir_all(&w).unwrap();
    // The commands of `offsync-mirror(1)`, verbatim but for the paths.
    let script = format!(
        r#"set -e
cd '{w}'
age -d -i '{id}' -o mirror-key.txt '{dir}/keys/mirror-key.age'
age -d -i mirror-key.txt -o snapshot.txt '{dir}/snapshots/0000000001.age'
head -n 1 snapshot.txt > snapshot.json
sed -n '/^-----BEGIN SSH SIGNATURE-----$/,$p' snapshot.txt > snapshot.sig
echo "offsync $(cut -d' ' -f1,2 '{pubkey}')" > allowed_signers
ssh-keygen -Y verify -f allowed_signers -I offsync -n offsync-mirror \
    -s snapshot.sig < snapshot.json
"#,
        w = w.display(),
        id = m.identity().display(),
        dir = dir.display(),
        pubkey = m.home.pub_key().display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("Good \"offsync-mirror\" signature for offsync"),
        "{}",
        stdout(&out)
    );
    // The bytes a reader acts on, changed by one character: ssh-keygen says no.
    let snap = std::fs::read_to_string(w.join("snapshot.json")).unwrap();
    std::fs::write(
        w.join("snapshot.json"),
        snap.replacen("index.html", "index.htm1", 1),
    )
    .unwrap();
    let verify = |ns: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && ssh-keygen -Y verify -f allowed_signers -I offsync -n {ns} -s snapshot.sig < snapshot.json",
                w.display()
            ))
            .output()
            .unwrap()
    };
    assert!(!verify("offsync-mirror").status.success());
    std::fs::write(w.join("snapshot.json"), snap).unwrap();
    assert!(verify("offsync-mirror").status.success());
    assert!(!verify("file").status.success(), "namespace is bound");
}

fn legacy_migration(backend: Backend) {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(backend) else {
        return;
    };
    let h = host(&m);
    let forger = Forger::new(&m, &h.identity);
    // Generation 1 as an offsync before signatures wrote it; the controller's memory of
    // having seen it signed is gone too (it ran the old version).
    forger.strip_signature(1);
    std::fs::remove_dir_all(m.home.home.join("mirror-state")).unwrap();
    let dest = h.home.tmp.path().join("d");
    let out = m.pull_cmd(&h.home, &dest, &h.identity).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mirror sign"), "{}", stderr(&out));
    assert!(!dest.exists());
    let out = m.off(&["mirror", "ls", "m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));

    let out = m.off(&["mirror", "sign", "m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("generation 2"), "{}", stdout(&out));
    // Signed already: nothing more to do.
    let out = m.off(&["mirror", "sign", "m"]).output().unwrap();
    assert!(stdout(&out).contains("already signed"), "{}", stdout(&out));
    // Reads work again, old generations included (vouched for by generation 2).
    let out = m.pull_cmd(&h.home, &dest, &h.identity).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(full_listing(&dest), full_listing(&m.source));
    let ls = json(
        &m.off(&["mirror", "ls", "m", "--snapshot", "1", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(ls["generation"], 1);
    m.off(&["plan", "--detailed-exitcode"]).assert().code(0);

    // A holder of the mirror key appends an unsigned generation: a downgrade for both the
    // host and the controller, and for a controller that forgot it saw signatures.
    let tpl = forger.template(2, "index.html");
    forger.forge(2, vec![file_like(&tpl, "index.html", 0o644)], None);
    let out = m.pull_cmd(&h.home, &dest, &h.identity).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("downgrade"), "{}", stderr(&out));
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("downgrade"), "{}", stdout(&out));
    std::fs::remove_dir_all(m.home.home.join("mirror-state")).unwrap();
    let out = m.off(&["mirror", "sign", "m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("downgrade"), "{}", stderr(&out));
    assert_eq!(full_listing(&dest), full_listing(&m.source));
}

#[test]
fn an_unsigned_s3_mirror_reads_after_mirror_sign_and_a_downgrade_is_refused() {
    legacy_migration(Backend::S3);
}

#[test]
fn an_unsigned_directory_mirror_reads_after_mirror_sign_and_a_downgrade_is_refused() {
    legacy_migration(Backend::Local);
}

#[test]
fn a_first_pull_pins_the_writer_only_when_told_to() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let h = host(&m);
    let dest = h.home.tmp.path().join("d");
    let pull = |extra: &[&str]| {
        let mut c = h.home.offsync(["pull", m.url.as_str()]);
        c.arg(&dest).arg("--identity").arg(&h.identity).args(extra);
        c.output().unwrap()
    };
    // No terminal, no --trust: refused, nothing pinned or written.
    let out = pull(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--trust-on-first-use"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.exists());
    let out = pull(&["--trust-on-first-use"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fp = crate::util::fingerprint_of(&m.home.pub_key());
    assert!(stderr(&out).contains(&fp), "{}", stderr(&out));
    // Pinned: later pulls need no flag; a generation signed by another key is refused.
    assert!(pull(&[]).status.success());
    let state: Vec<_> = std::fs::read_dir(h.home.home.join("mirror-state"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        state.iter().any(|s| s.contains("pinned_writers")),
        "{state:?}"
    );
    let forger = Forger::new(&m, &h.identity);
    let tpl = forger.template(1, "index.html");
    let other = ssh_key(h.home.tmp.path(), "other");
    forger.forge(1, vec![file_like(&tpl, "index.html", 0o644)], Some(&other));
    let out = pull(&["--trust-on-first-use"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a writer this machine trusts"),
        "{}",
        stderr(&out)
    );
    // OFFSYNC_TRUSTED_WRITERS works like --trust.
    let out = h
        .home
        .offsync(["pull", m.url.as_str()])
        .arg(&dest)
        .arg("--identity")
        .arg(&h.identity)
        .env(
            "OFFSYNC_TRUSTED_WRITERS",
            format!("{}.pub", other.display()),
        )
        .args(["--delete", "--max-delete", "100"])
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A bad --trust is bad input.
    let out = pull(&["--trust", "ssh-ed25519 notbase64!"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}
