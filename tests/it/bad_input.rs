//! Every rejected input exits non-zero (64 for bad input) and leaves authorized_keys,
//! config.yaml, known_hosts and the rest of OFFSYNC_HOME byte-identical.

use crate::util::{self, Home, World, read_opt, snapshot};
use std::path::PathBuf;

struct State {
    files: Vec<Option<Vec<u8>>>,
    home: Vec<(Vec<u8>, Vec<u8>)>,
}

fn state(h: &Home, ak: &std::path::Path) -> State {
    State {
        files: vec![
            read_opt(ak),
            read_opt(&h.config()),
            read_opt(&h.known_hosts()),
        ],
        home: snapshot(&h.home),
    }
}

fn keygen(dir: &std::path::Path, name: &str, args: &[&str]) -> Option<PathBuf> {
    let p = dir.join(name);
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(args)
        .arg("-f")
        .arg(&p)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    ok.then_some(p)
}

#[test]
fn link_rejects_bad_keys_and_paths_without_touching_files() {
    let w = World::new(1);
    let h = &w.home;
    let ak = w.targets[0].authorized_keys();
    let dir = h.tmp.path();
    let good = std::fs::read_to_string(h.pub_key()).unwrap();
    let good = good.trim();
    let private = keygen(dir, "priv", &["-t", "ed25519"]).unwrap();
    let files = |name: &str, content: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let mut key_files = vec![
        files("empty", b""),
        files("opts", format!("command=\"x\" {good}\n").as_bytes()),
        files("two", format!("{good}\n{good}\n").as_bytes()),
        files("nul", format!("{good}\0\n").as_bytes()),
        files("b64", b"ssh-ed25519 AAAA!!notbase64 x\n"),
        files("dss", b"ssh-dss AAAAB3NzaC1kc3MAAACBAP x\n"),
        private,
    ];
    // ssh-keygen may refuse 1024-bit RSA; then that case is covered by unit tests only.
    if let Some(rsa) = keygen(dir, "rsa1024", &["-t", "rsa", "-b", "1024"]) {
        key_files.push(rsa.with_extension("pub"));
    }
    let before = state(h, &ak);
    for f in &key_files {
        let out = h
            .offsync(["link", "--key-file"])
            .arg(f)
            .arg("--authorized-keys")
            .arg(&ak)
            .arg("--path")
            .arg(w.targets[0].sync_dir())
            .assert()
            .code(64)
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(out).unwrap();
        assert!(
            err.contains("offsync: error: the public key"),
            "{f:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    }
    for path in ["/srv/../etc", "/srv/a\nb"] {
        h.offsync(["link", "--key", good, "--path", path])
            .arg("--authorized-keys")
            .arg(&ak)
            .assert()
            .code(64);
    }
    h.offsync(["link", "--key", "", "--path", "/srv/x"])
        .arg("--authorized-keys")
        .arg(&ak)
        .assert()
        .code(64);
    let after = state(h, &ak);
    assert_eq!(before.files, after.files);
    assert_eq!(before.home, after.home);
}

#[test]
fn target_add_rejects_bad_logins_without_touching_files() {
    let w = World::new(1);
    let h = &w.home;
    let ak = w.targets[0].authorized_keys();
    let before = state(h, &ak);
    for login in [
        "-oProxyCommand=touch /tmp/x@h",
        "u@h;id",
        "u@h x",
        "u@$(id)",
        "nouser",
        "u@[::1",
        "u@`id`",
    ] {
        let out = h
            .offsync(["target", "add", "--path", "/x", "--", login])
            .assert()
            .code(64)
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(out).unwrap();
        assert!(err.contains("login"), "{login}: {err}");
    }
    h.offsync([
        "target",
        "add",
        "u@h",
        "--path",
        "/x",
        "--fingerprint",
        "MD5:aa:bb",
    ])
    .assert()
    .code(64);
    let after = state(h, &ak);
    assert_eq!(before.files, after.files);
    assert_eq!(before.home, after.home);
    let _ = util::user();
}

#[test]
fn unknown_config_key_names_line_and_column() {
    let h = Home::new();
    h.offsync(["init"]).assert().success();
    let mut cfg = std::fs::read(h.config()).unwrap();
    cfg.extend_from_slice(b"colour: red\n");
    std::fs::write(h.config(), &cfg).unwrap();
    let out = h
        .offsync(["target", "list"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("config.yaml:"), "{err}");
    assert!(err.contains("colour"), "{err}");
    let line_no: usize = err
        .split("config.yaml:")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(line_no, String::from_utf8(cfg).unwrap().lines().count());
}
