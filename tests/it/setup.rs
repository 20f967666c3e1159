//! `init` → `link` → `target add` → `target check|list|remove` → `unlink`, against a real sshd.

use crate::util::{
    self, Home, Sshd, keygen, listing, mode, read_opt, setup_linked_target, skip_unless_tools,
    stderr, stdout,
};
use serde_json::Value;

const OPTIONS: &str =
    "restrict,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty,command=\"";

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The first two fields (type and base64) of an OpenSSH public key line.
fn key_part(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn init_creates_a_private_usable_key_and_keeps_it() {
    if !skip_unless_tools() {
        return;
    }
    let h = Home::new();
    let printed = h.init(None);
    let pubtext = std::fs::read_to_string(h.pub_key()).unwrap();
    assert!(printed.starts_with("ssh-ed25519 AAAA"), "{printed}");
    assert_eq!(
        key_part(&printed),
        key_part(&pubtext),
        "stdout is the .pub line"
    );
    assert_eq!(mode(&h.home), 0o700, "OFFSYNC_HOME");
    assert_eq!(mode(&h.key()), 0o600, "id_ed25519");
    assert_eq!(mode(&h.pub_key()), 0o600, "id_ed25519.pub");

    // OpenSSH can use the private key, and it belongs to the .pub.
    let derived = h
        .tool("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(h.key())
        .output()
        .unwrap();
    assert!(derived.status.success(), "ssh-keygen -y: {derived:?}");
    assert_eq!(key_part(&stdout(&derived)), key_part(&pubtext));

    // A second init (now with a source) keeps the keypair byte-identical.
    let key_before = std::fs::read(h.key()).unwrap();
    let pub_before = std::fs::read(h.pub_key()).unwrap();
    let src = h.tmp.path().join("src dir");
    std::fs::create_dir(&src).unwrap();
    h.init(Some(&src));
    assert_eq!(
        std::fs::read(h.key()).unwrap(),
        key_before,
        "id_ed25519 kept"
    );
    assert_eq!(
        std::fs::read(h.pub_key()).unwrap(),
        pub_before,
        "id_ed25519.pub kept"
    );
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(
        cfg.contains(&src.canonicalize().unwrap().display().to_string()),
        "source recorded: {cfg}"
    );
    assert_eq!(mode(&h.config()), 0o600, "config.yaml");
}

#[test]
fn half_present_keypair_fails_names_the_missing_file_and_creates_nothing() {
    if !skip_unless_tools() {
        return;
    }
    let h = Home::new();
    h.init(None);

    // The .pub is gone: no new key, no recreated .pub, nothing else created either.
    std::fs::remove_file(h.pub_key()).unwrap();
    let before = listing(&h.home);
    let out = h.offsync(["init"]).assert().failure().get_output().clone();
    let err = stderr(&out);
    assert!(
        err.contains("id_ed25519.pub"),
        "names the missing file: {err}"
    );
    assert!(err.contains("missing"), "{err}");
    assert_eq!(
        listing(&h.home),
        before,
        "init created or changed something"
    );
    assert!(!h.pub_key().exists());

    // The private key is gone instead: same.
    let h = Home::new();
    h.init(None);
    std::fs::remove_file(h.key()).unwrap();
    let before = listing(&h.home);
    let out = h.offsync(["init"]).assert().failure().get_output().clone();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} is missing", h.key().display())),
        "names the missing file: {err}"
    );
    assert_eq!(
        listing(&h.home),
        before,
        "init created or changed something"
    );
}

#[test]
fn link_writes_one_confined_line_keeps_other_lines_and_unlink_removes_it() {
    if !skip_unless_tools() {
        return;
    }
    let h = Home::new();
    h.init(None);
    let sshd = Sshd::start();
    // An unrelated real key and a comment, written before linking.
    let other = keygen(h.tmp.path(), "other", &["-t", "ed25519"]).unwrap();
    let unrelated = format!(
        "# a comment the admin wrote\n{}",
        std::fs::read_to_string(other.with_extension("pub")).unwrap()
    );
    std::fs::write(sshd.authorized_keys(), &unrelated).unwrap();
    let blob = h.pub_blob();

    let printed = util::link(&h, &sshd, &[]);
    let sync = sshd.sync_dir();
    assert!(
        printed.starts_with(&format!("offsync target add {}@", util::user())),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("--path '{}'", sync.display())),
        "quoted path: {printed}"
    );
    assert!(
        printed.contains(&format!("--port {}", sshd.port)),
        "{printed}"
    );
    assert_eq!(util::printed_fingerprint(&printed), sshd.fingerprint());
    assert_eq!(mode(&sync), 0o700, "link creates the sync dir 0700");

    let check_ak = || {
        let ak = std::fs::read_to_string(sshd.authorized_keys()).unwrap();
        assert!(
            ak.starts_with(&unrelated),
            "unrelated lines byte-identical:\n{ak}"
        );
        let ours: Vec<&str> = ak.lines().filter(|l| l.contains(&blob)).collect();
        assert_eq!(ours.len(), 1, "exactly one line for the key:\n{ak}");
        let line = ours[0];
        assert!(line.starts_with(OPTIONS), "{line}");
        assert!(line.contains(" -wo "), "{line}");
        assert!(line.contains(&format!("'{}'", sync.display())), "{line}");
        assert!(line.contains(&format!("\" ssh-ed25519 {blob}")), "{line}");
        assert_eq!(ak.lines().count(), 3, "{ak}");
        assert_eq!(mode(&sshd.authorized_keys()), 0o600);
    };
    check_ak();
    util::link(&h, &sshd, &[]);
    check_ak();

    h.offsync(["unlink", "--key-file"])
        .arg(h.pub_key())
        .arg("--authorized-keys")
        .arg(sshd.authorized_keys())
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(sshd.authorized_keys()).unwrap(),
        unrelated,
        "unlink removes our line and only our line"
    );
}

#[test]
fn target_add_pins_the_host_key_and_check_proves_confinement() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let sync = sshd.sync_dir().display().to_string();

    let cfg = std::fs::read_to_string(h.config()).unwrap();
    for want in [
        "name: t1",
        &sync,
        &format!("port: {}", sshd.port),
        &sshd.fingerprint(),
    ] {
        assert!(cfg.contains(want), "config.yaml lacks {want:?}:\n{cfg}");
    }
    let kh = std::fs::read_to_string(h.known_hosts()).unwrap();
    assert!(
        kh.contains(&format!(
            "[127.0.0.1]:{} ssh-ed25519 {}",
            sshd.port,
            sshd.host_key_blob()
        )),
        "known_hosts pins the sshd host key:\n{kh}"
    );
    assert_eq!(mode(&h.known_hosts()), 0o600);

    let list = json(
        h.offsync(["target", "list", "--json"])
            .assert()
            .success()
            .get_output(),
    );
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "t1");
    assert_eq!(list[0]["login"], util::login());
    assert_eq!(list[0]["port"], sshd.port);
    assert_eq!(list[0]["remote_path"], sync.as_str());
    assert_eq!(list[0]["fingerprint"], sshd.fingerprint());
    assert_eq!(list[0]["delete_allowed"], true);

    let out = h
        .offsync(["target", "check"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(text.starts_with("ok") && text.contains("t1"), "{text}");
    let v = json(
        h.offsync(["target", "check", "--json"])
            .assert()
            .code(0)
            .get_output(),
    );
    assert_eq!(v[0]["name"], "t1", "{v}");
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["read_refused"], true, "{v}");
    assert_eq!(v[0]["shell_refused"], true, "{v}");
    assert_eq!(v[0]["delete_allowed"], true, "{v}");

    // A second target under an existing name is refused before anything happens.
    let (cfg_before, kh_before) = (read_opt(&h.config()), read_opt(&h.known_hosts()));
    let out = util::target_add_cmd(h, sshd, "t1", Some(&sshd.fingerprint()))
        .assert()
        .code(64)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("t1"), "{}", stderr(&out));
    assert_eq!(read_opt(&h.config()), cfg_before);
    assert_eq!(read_opt(&h.known_hosts()), kh_before);

    h.offsync(["target", "remove", "t1"]).assert().success();
    let list = json(
        h.offsync(["target", "list", "--json"])
            .assert()
            .success()
            .get_output(),
    );
    assert_eq!(list, serde_json::json!([]));
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(!cfg.contains("name: t1") && !cfg.contains(&sync), "{cfg}");
    let kh = std::fs::read_to_string(h.known_hosts()).unwrap_or_default();
    assert!(
        !kh.contains(&sshd.host_key_blob()) && !kh.contains(&format!(":{}", sshd.port)),
        "pinned key removed:\n{kh}"
    );
}

#[test]
fn check_reports_a_stopped_target() {
    if !skip_unless_tools() {
        return;
    }
    let mut w = setup_linked_target();
    w.targets[0].stop();
    let out = w
        .home
        .offsync(["target", "check"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(text.starts_with("FAIL") && text.contains("t1"), "{text}");
    let v = json(
        w.home
            .offsync(["target", "check", "--json"])
            .assert()
            .code(1)
            .get_output(),
    );
    assert_eq!(v[0]["ok"], false, "{v}");
    assert!(
        !v[0]["problem"].as_str().unwrap_or_default().is_empty(),
        "{v}"
    );
}

#[test]
fn target_add_saves_nothing_unless_the_host_key_is_pinned() {
    if !skip_unless_tools() {
        return;
    }
    let h = Home::new();
    h.init(None);
    let sshd = Sshd::start();
    util::link(&h, &sshd, &[]);
    let other = keygen(h.tmp.path(), "not-the-host", &["-t", "ed25519"]).unwrap();
    let wrong = util::fingerprint_of(&other.with_extension("pub"));
    assert_ne!(wrong, sshd.fingerprint());

    let attempt = |name: &str, fp: Option<&str>| {
        let before = (read_opt(&h.config()), read_opt(&h.known_hosts()));
        let out = util::target_add_cmd(&h, &sshd, name, fp)
            .assert()
            .failure()
            .get_output()
            .clone();
        assert_eq!(
            (read_opt(&h.config()), read_opt(&h.known_hosts())),
            before,
            "config.yaml and known_hosts byte-identical"
        );
        stderr(&out)
    };

    // known_hosts absent before: it stays absent.
    let err = attempt("t1", Some(&wrong));
    assert!(err.contains("mismatch") && err.contains(&wrong), "{err}");
    assert!(
        err.contains(&sshd.fingerprint()),
        "shows what the host offers: {err}"
    );
    assert_eq!(read_opt(&h.known_hosts()), None);
    // No --fingerprint and no terminal to ask on.
    let err = attempt("t1", None);
    assert!(err.contains("--fingerprint"), "{err}");
    assert_eq!(read_opt(&h.known_hosts()), None);

    // With known_hosts present, a wrong fingerprint leaves it byte-identical too.
    util::target_add_cmd(&h, &sshd, "t1", Some(&sshd.fingerprint()))
        .assert()
        .success();
    assert!(read_opt(&h.known_hosts()).is_some());
    let err = attempt("t2", Some(&wrong));
    assert!(err.contains("mismatch"), "{err}");
}

#[test]
fn no_delete_link_shows_in_list_and_check() {
    if !skip_unless_tools() {
        return;
    }
    let mut w = setup_linked_target();
    w.add_target(&["--no-delete"]);
    let ak = std::fs::read_to_string(w.targets[1].authorized_keys()).unwrap();
    assert!(ak.contains(" -wo -no-del "), "{ak}");
    let v = json(
        w.home
            .offsync(["target", "list", "--json"])
            .assert()
            .success()
            .get_output(),
    );
    assert_eq!(v[0]["name"], "t1", "{v}");
    assert_eq!(v[0]["delete_allowed"], true, "{v}");
    assert_eq!(v[1]["name"], "t2", "{v}");
    assert_eq!(v[1]["delete_allowed"], false, "{v}");
    let v = json(
        w.home
            .offsync(["target", "check", "t2", "--json"])
            .assert()
            .success()
            .get_output(),
    );
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["delete_allowed"], false, "{v}");
}

#[test]
fn target_add_without_link_explains_and_saves_nothing() {
    if !skip_unless_tools() {
        return;
    }
    let h = Home::new();
    h.init(None);
    let sshd = Sshd::start();
    let before = listing(&h.home);
    let out = util::target_add_cmd(&h, &sshd, "t1", Some(&sshd.fingerprint()))
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(err.contains("offsync link"), "{err}");
    // Scratch files under tmp/ may come and go; nothing else may change.
    let durable = |l: Vec<(Vec<u8>, u32, Vec<u8>)>| {
        l.into_iter()
            .filter(|(p, _, _)| p != b"tmp" && !p.starts_with(b"tmp/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(durable(listing(&h.home)), durable(before));
    assert_eq!(read_opt(&h.known_hosts()), None);
}

/// The fast fixture (`util::prelink`, used by every test that is not about set-up) writes
/// byte for byte what `link` and `target add` write: authorized_keys, known_hosts,
/// config.yaml, and a marker recorded in `$OFFSYNC_HOME/markers/t1` that exists in the sync
/// dir. Checked by undoing the real flow's files and writing them again with the fixture.
#[test]
fn the_fast_fixture_writes_what_link_and_target_add_write() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let real = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (ak, kh, cfg) = (
        real(&sshd.authorized_keys()),
        real(&h.known_hosts()),
        real(&h.config()),
    );
    let record = h.home.join("markers").join("t1");
    let marker_of = |record: &std::path::Path| {
        let id = std::fs::read_to_string(record).unwrap().trim().to_string();
        assert_eq!(
            util::markers(&sshd.sync_dir()),
            [format!(".offsync-marker-{id}")]
        );
        let file = sshd.sync_dir().join(format!(".offsync-marker-{id}"));
        (mode(&file), std::fs::read(&file).unwrap())
    };
    let real_marker = marker_of(&record);
    assert_eq!(mode(&sshd.sync_dir()), 0o700);

    // Undo: no authorized_keys, known_hosts, marker or target; the sync dir stays (`prelink`
    // keeps an existing one, as `link` does).
    std::fs::remove_file(sshd.authorized_keys()).unwrap();
    std::fs::remove_file(h.known_hosts()).unwrap();
    for m in util::markers(&sshd.sync_dir()) {
        std::fs::remove_file(sshd.sync_dir().join(m)).unwrap();
    }
    std::fs::remove_file(&record).unwrap();
    let mut config = offsync::config::Config::load(&h.config()).unwrap();
    config.targets.clear();
    config.save(&h.config()).unwrap();

    util::prelink(h, sshd, "t1");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(
        text(&real(&sshd.authorized_keys())),
        text(&ak),
        "authorized_keys"
    );
    assert_eq!(text(&real(&h.known_hosts())), text(&kh), "known_hosts");
    assert_eq!(text(&real(&h.config())), text(&cfg), "config.yaml");
    assert_eq!(mode(&sshd.authorized_keys()), 0o600);
    assert_eq!(mode(&h.known_hosts()), 0o600);
    assert_eq!(
        marker_of(&record),
        real_marker,
        "marker file (mode, content)"
    );
    assert_eq!(mode(&sshd.sync_dir()), 0o700);
    h.offsync(["target", "check"]).assert().success();
}

/// A host key rotated on purpose: every connection fails as `host_key_changed` naming the key
/// the host offers now and the repin command; `target repin` refuses a wrong fingerprint and a
/// missing one without a terminal (files byte-identical), then replaces the pinned key, keeps
/// other hosts' lines, and the target works again. (The rotation is played on the controller
/// side: the pinned key is swapped for another, which is what the controller sees either way.)
#[test]
fn a_rotated_host_key_is_named_and_target_repin_replaces_it() {
    if !skip_unless_tools() {
        return;
    }
    let w = util::fast_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let old = keygen(&h.home, "old_host", &["-t", "ed25519"]).unwrap();
    let old_blob = std::fs::read_to_string(old.with_extension("pub")).unwrap();
    let old_blob = old_blob.split_whitespace().nth(1).unwrap();
    let other = format!("other.example ssh-ed25519 {old_blob}\n");
    std::fs::write(
        h.known_hosts(),
        format!("{other}[127.0.0.1]:{} ssh-ed25519 {old_blob}\n", sshd.port),
    )
    .unwrap();

    let out = h
        .offsync(["target", "check", "--json"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let v = json(&out);
    let problem = v[0]["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!("now offers {}", sshd.fingerprint()))
            && problem.contains(&format!(
                "offsync target repin t1 --fingerprint {}",
                sshd.fingerprint()
            )),
        "{v}"
    );

    let before = (read_opt(&h.config()), read_opt(&h.known_hosts()));
    let wrong = util::fingerprint_of(&old.with_extension("pub"));
    let out = h
        .offsync(["target", "repin", "t1", "--fingerprint", &wrong])
        .assert()
        .failure()
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains(&wrong) && stderr(&out).contains(&sshd.fingerprint()),
        "{}",
        stderr(&out)
    );
    let out = h
        .offsync(["target", "repin", "t1"])
        .assert()
        .code(64)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("--fingerprint"), "{}", stderr(&out));
    h.offsync(["target", "repin", "nope", "--fingerprint", &wrong])
        .assert()
        .code(64);
    assert_eq!(
        (read_opt(&h.config()), read_opt(&h.known_hosts())),
        before,
        "nothing changed"
    );

    h.offsync([
        "target",
        "repin",
        "t1",
        "--fingerprint",
        &sshd.fingerprint(),
    ])
    .assert()
    .success();
    let kh = std::fs::read_to_string(h.known_hosts()).unwrap();
    assert!(kh.starts_with(&other), "other lines kept:\n{kh}");
    assert!(
        kh.contains(&format!(
            "[127.0.0.1]:{} ssh-ed25519 {}",
            sshd.port,
            sshd.host_key_blob()
        )) && !kh.contains(&format!("]:{} ssh-ed25519 {old_blob}", sshd.port)),
        "{kh}"
    );
    assert_eq!(mode(&h.known_hosts()), 0o600);
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(cfg.contains(&sshd.fingerprint()), "{cfg}");
    h.offsync(["target", "check"]).assert().code(0);
}

/// `target add ALIAS` (no `@`): ssh's config supplies User, HostName and Port, offsync saves
/// only the alias (no `-l`/`-p` later, so config edits apply), and the config's attempts to
/// weaken the connection (another IdentityFile, agent forwarding, no host key checking, the
/// user's known_hosts) lose to the options offsync forces on the command line.
#[test]
fn a_host_alias_from_the_ssh_config_is_resolved_by_ssh_and_cannot_weaken_the_connection() {
    if !skip_unless_tools() {
        return;
    }
    let w = util::fast_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let cfg = h.home.join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host web1\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile /nonexistent\n  \
             ForwardAgent yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             ControlMaster auto\n  ControlPath /nonexistent/%C\n",
            sshd.port,
            util::user()
        ),
    )
    .unwrap();
    let out = h
        .offsync(["target", "add", "web1", "--name", "a1", "--fingerprint"])
        .arg(sshd.fingerprint())
        .arg("--path")
        .arg(sshd.sync_dir())
        .env("OFFSYNC_SSH_CONFIG", &cfg)
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains(&format!(
            "ssh connects as {}@127.0.0.1 port {}",
            util::user(),
            sshd.port
        )),
        "{}",
        stderr(&out)
    );
    let config = std::fs::read_to_string(h.config()).unwrap();
    let a1 = &config[config.find("name: a1").unwrap()..];
    let a1 = &a1[..a1.find("- ").unwrap_or(a1.len())];
    assert!(
        a1.contains("login: web1") && !a1.contains("user:") && !a1.contains("port:"),
        "{config}"
    );
    // Every run resolves the alias again: a wrong StrictHostKeyChecking in the config does
    // not let an unpinned key through (the pinned one is removed here).
    h.offsync(["target", "check", "a1"])
        .env("OFFSYNC_SSH_CONFIG", &cfg)
        .assert()
        .code(0);
    std::fs::write(h.known_hosts(), "").unwrap();
    let out = h
        .offsync(["target", "check", "a1", "--json"])
        .env("OFFSYNC_SSH_CONFIG", &cfg)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("no pinned host key"),
        "{}",
        stdout(&out)
    );

    // Removing the alias target drops the key it pinned (found through ssh's resolution)
    // once no other target uses it.
    h.offsync([
        "target",
        "repin",
        "a1",
        "--fingerprint",
        &sshd.fingerprint(),
    ])
    .env("OFFSYNC_SSH_CONFIG", &cfg)
    .assert()
    .success();
    h.offsync(["target", "remove", "t1"])
        .env("OFFSYNC_SSH_CONFIG", &cfg)
        .assert()
        .success();
    assert!(!std::fs::read_to_string(h.known_hosts()).unwrap().is_empty());
    h.offsync(["target", "remove", "a1"])
        .env("OFFSYNC_SSH_CONFIG", &cfg)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(h.known_hosts()).unwrap(), "");
}

/// `target add ... ` on a terminal (driven through `script`'s pty) without --fingerprint.
fn add_on_a_terminal(w: &util::World, name: &str, answers: &str) -> (i32, String) {
    use std::io::Write;
    let (h, sshd) = (&w.home, w.sshd());
    let offsync = h.offsync_std();
    let line = format!(
        "{} target add {} --port {} --name {name} --yes --path {}",
        offsync.get_program().to_string_lossy(),
        sshd.login(),
        sshd.port,
        offsync::process::shell_quote(&sshd.sync_dir().display().to_string())
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .envs(offsync.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The trust prompt on a terminal is asked once per run, takes `yes`, `no`, or the pasted
/// fingerprint (which must match exactly: a different one is refused naming both), and asks
/// again on anything else.
#[test]
fn the_trust_prompt_takes_a_pasted_fingerprint_and_asks_again_on_anything_else() {
    if !skip_unless_tools() || util::which("script").is_none() {
        return;
    }
    let w = util::fast_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let fp = sshd.fingerprint();
    let before = (read_opt(&h.config()), read_opt(&h.known_hosts()));

    let other = "SHA256:AAAAztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let (code, text) = add_on_a_terminal(&w, "t2", &format!("maybe\n{other}\n"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("please answer yes, no"),
        "asked again: {text}"
    );
    assert!(
        text.contains(&format!("you pasted {other}, the host offers {fp}")),
        "{text}"
    );
    let (code, text) = add_on_a_terminal(&w, "t2", "no\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("host key not trusted"), "{text}");
    assert_eq!((read_opt(&h.config()), read_opt(&h.known_hosts())), before);

    let (code, text) = add_on_a_terminal(&w, "t2", &format!("{fp}\n"));
    assert_eq!(code, 0, "{text}");
    // dialoguer redraws the answered prompt after clearing its line (`ESC[2K`).
    let asked =
        text.matches("Does this match").count() - text.matches("\x1b[2KDoes this match").count();
    assert_eq!(asked, 1, "asked once: {text}");
    assert!(
        std::fs::read_to_string(h.config())
            .unwrap()
            .contains("name: t2")
    );
}

/// `link` prints the port sshd really listens on when it is set in an `Include`d file (read by
/// `sshd -T`, or by offsync's own parser where `sshd -T` cannot run).
#[test]
fn link_prints_the_port_from_an_included_sshd_config_file() {
    if !skip_unless_tools() {
        return;
    }
    let w = util::fast_linked_target();
    let (h, sshd) = (&w.home, w.sshd());
    let main = std::fs::read_to_string(sshd.config()).unwrap();
    let without_port: String = main
        .lines()
        .filter(|l| !l.starts_with("Port "))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf_d = sshd.dir.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(conf_d.join("10-port.conf"), format!("Port {}\n", sshd.port)).unwrap();
    let cfg = sshd.dir.join("sshd_config_include");
    std::fs::write(
        &cfg,
        format!("Include {}/*.conf\n{without_port}", conf_d.display()),
    )
    .unwrap();
    let out = h
        .offsync(["link", "--key-file"])
        .arg(h.pub_key())
        .arg("--path")
        .arg(sshd.sync_dir())
        .arg("--authorized-keys")
        .arg(sshd.authorized_keys())
        .arg("--sshd-config")
        .arg(&cfg)
        .arg("--yes")
        .args(util::allow_root())
        .assert()
        .success()
        .get_output()
        .clone();
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("--port {} ", sshd.port))
            && printed.contains(&sshd.fingerprint()),
        "{printed}"
    );
}
