//! init → link → target add → target check against a real sshd.

use crate::util::{self, Home, Sshd, World, mode, read_opt};

#[test]
fn init_creates_a_usable_key_and_is_idempotent() {
    let h = Home::new();
    let out = h
        .offsync(["init"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.starts_with("ssh-ed25519 AAAA"), "{printed}");
    assert_eq!(mode(&h.home), 0o700);
    assert_eq!(mode(&h.key()), 0o600);
    assert_eq!(mode(&h.pub_key()), 0o600);
    assert_eq!(mode(&h.config()), 0o600);
    let derived = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(h.key())
        .output()
        .unwrap();
    assert!(derived.status.success());
    let derived = String::from_utf8(derived.stdout).unwrap();
    let pubtext = std::fs::read_to_string(h.pub_key()).unwrap();
    let key_part = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(key_part(&derived), key_part(&pubtext));
    assert!(pubtext.trim().ends_with(&format!(
            "offsync@{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        )));

    let before = std::fs::read(h.key()).unwrap();
    let src = h.tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    h.offsync(["init", "--source"]).arg(&src).assert().success();
    assert_eq!(
        std::fs::read(h.key()).unwrap(),
        before,
        "the key is kept byte-identical"
    );
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(
        cfg.contains(&format!(
            "source: {}",
            src.canonicalize().unwrap().display()
        )),
        "{cfg}"
    );
}

#[test]
fn half_present_keypair_is_an_error() {
    let h = Home::new();
    h.offsync(["init"]).assert().success();
    std::fs::remove_file(h.pub_key()).unwrap();
    let key = std::fs::read(h.key()).unwrap();
    let out = h
        .offsync(["init"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("id_ed25519.pub"), "{err}");
    assert!(!h.pub_key().exists());
    assert_eq!(std::fs::read(h.key()).unwrap(), key);
}

#[test]
fn link_writes_one_restricted_line_and_keeps_others() {
    let h = Home::new();
    h.offsync(["init"]).assert().success();
    let sshd = Sshd::start();
    let other = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(h.tmp.path().join("other"))
        .status()
        .unwrap();
    assert!(other.success());
    let unrelated = format!(
        "# keep me\n{}",
        std::fs::read_to_string(h.tmp.path().join("other.pub")).unwrap()
    );
    std::fs::write(sshd.authorized_keys(), &unrelated).unwrap();

    let printed = util::link(&h, &sshd, &[]);
    assert!(
        printed.contains(&format!("--fingerprint {}", sshd.fingerprint())),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("--port {}", sshd.port)),
        "{printed}"
    );
    util::link(&h, &sshd, &[]);
    let ak = std::fs::read_to_string(sshd.authorized_keys()).unwrap();
    assert!(
        ak.starts_with(&unrelated),
        "unrelated lines byte-identical:\n{ak}"
    );
    let ours: Vec<&str> = ak.lines().filter(|l| l.contains("offsync-link")).collect();
    assert_eq!(ours.len(), 1, "{ak}");
    assert!(ours[0].starts_with(
        "restrict,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty,command=\""
    ));
    assert!(
        ours[0].contains(&format!("-wo '{}'", sshd.sync_dir().display())),
        "{}",
        ours[0]
    );
    assert_eq!(mode(&sshd.authorized_keys()), 0o600);

    h.offsync(["unlink", "--key-file"])
        .arg(h.pub_key())
        .arg("--authorized-keys")
        .arg(sshd.authorized_keys())
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(sshd.authorized_keys()).unwrap(),
        unrelated
    );
}

#[test]
fn target_add_pins_probes_and_check_reports() {
    let w = World::new(1);
    let h = &w.home;
    let kh = std::fs::read_to_string(h.known_hosts()).unwrap();
    assert!(
        kh.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", w.targets[0].port)),
        "{kh}"
    );
    assert_eq!(mode(&h.known_hosts()), 0o600);
    let list = h
        .offsync(["target", "list", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list[0]["name"], "t1");
    assert_eq!(list[0]["delete_allowed"], true);
    assert_eq!(list[0]["fingerprint"], w.targets[0].fingerprint());

    let out = h
        .offsync(["target", "check"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().starts_with("ok"));
    let out = h
        .offsync(["target", "check", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["read_refused"], true);
    assert_eq!(v[0]["shell_refused"], true);

    // Duplicate names are refused, nothing changes.
    let cfg = std::fs::read(h.config()).unwrap();
    h.offsync([
        "target",
        "add",
        &w.targets[0].login(),
        "--port",
        &w.targets[0].port.to_string(),
        "--name",
        "t1",
        "--path",
        "/x",
    ])
    .assert()
    .code(64);
    assert_eq!(std::fs::read(h.config()).unwrap(), cfg);

    h.offsync(["target", "remove", "t1"]).assert().success();
    assert!(!std::fs::read_to_string(h.config()).unwrap().contains("t1"));
    assert!(
        !std::fs::read_to_string(h.known_hosts())
            .unwrap()
            .contains("127.0.0.1")
    );
}

#[test]
fn check_reports_a_dead_target() {
    let mut w = World::new(1);
    w.targets[0].stop();
    let out = w
        .home
        .offsync(["target", "check"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().starts_with("FAIL"));
}

#[test]
fn wrong_or_missing_fingerprint_saves_nothing() {
    let h = Home::new();
    h.offsync(["init"]).assert().success();
    let sshd = Sshd::start();
    util::link(&h, &sshd, &[]);
    let other = Sshd::start();
    let cfg = std::fs::read(h.config()).unwrap();
    let add = |fp: Option<String>| {
        let mut c = h.offsync([
            "target",
            "add",
            &sshd.login(),
            "--port",
            &sshd.port.to_string(),
            "--path",
            "/x",
        ]);
        if let Some(fp) = fp {
            c.args(["--fingerprint", &fp]);
        }
        c.assert().failure().get_output().stderr.clone()
    };
    let err = String::from_utf8(add(Some(other.fingerprint()))).unwrap();
    assert!(err.contains("mismatch"), "{err}");
    let err = String::from_utf8(add(None)).unwrap();
    assert!(err.contains("--fingerprint"), "{err}");
    assert_eq!(std::fs::read(h.config()).unwrap(), cfg);
    assert_eq!(read_opt(&h.known_hosts()), None);
}

#[test]
fn unlinked_key_is_explained_and_not_saved() {
    let h = Home::new();
    h.offsync(["init"]).assert().success();
    let sshd = Sshd::start();
    let cfg = std::fs::read(h.config()).unwrap();
    let out = h
        .offsync([
            "target",
            "add",
            &sshd.login(),
            "--port",
            &sshd.port.to_string(),
            "--path",
            "/x",
            "--fingerprint",
            &sshd.fingerprint(),
        ])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("offsync link"), "{err}");
    assert_eq!(std::fs::read(h.config()).unwrap(), cfg);
    assert_eq!(read_opt(&h.known_hosts()), None);
}

#[test]
fn no_delete_link_is_detected_by_the_probe() {
    let w = World::with_link_args(1, &["--no-delete"]);
    let ak = std::fs::read_to_string(w.targets[0].authorized_keys()).unwrap();
    assert!(ak.contains("-wo -no-del "), "{ak}");
    let out = w
        .home
        .offsync(["target", "list", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["delete_allowed"], false);
}
