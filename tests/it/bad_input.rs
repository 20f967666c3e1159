//! Every rejected input exits 64 and leaves authorized_keys, config.yaml, known_hosts and the
//! rest of OFFSYNC_HOME byte-identical. The state is snapshotted around each case, against a
//! fully set-up controller and target, so a rejection that happens "too late" shows up.

use crate::util::{
    World, fast_linked_target, keygen, listing, read_opt, setup_linked_target, skip_unless_tools,
    stderr,
};
use assert_cmd::Command;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
struct State {
    authorized_keys: Option<Vec<u8>>,
    config: Option<Vec<u8>>,
    known_hosts: Option<Vec<u8>>,
    home: Vec<(Vec<u8>, u32, Vec<u8>)>,
}

fn state(w: &World) -> State {
    State {
        authorized_keys: read_opt(&w.sshd().authorized_keys()),
        config: read_opt(&w.home.config()),
        known_hosts: read_opt(&w.home.known_hosts()),
        home: listing(&w.home.home),
    }
}

/// Run `cmd`, expect exit 64 with `why` in the one-line error, and no change to any state.
fn rejected(w: &World, case: &str, cmd: Command, why: &str) {
    rejected_but(w, case, cmd, why, &[]);
}

/// [`rejected`], ignoring the OFFSYNC_HOME files named in `ignored` (apply's lock file, which
/// holds the pid of the last apply and is written before config.yaml is read).
fn rejected_but(w: &World, case: &str, mut cmd: Command, why: &str, ignored: &[&[u8]]) {
    let state = |w: &World| {
        let mut s = state(w);
        s.home.retain(|(p, _, _)| !ignored.contains(&p.as_slice()));
        s
    };
    let before = state(w);
    assert!(before.authorized_keys.is_some() && before.known_hosts.is_some());
    let out = cmd.assert().code(64).get_output().clone();
    let err = stderr(&out);
    assert!(err.starts_with("offsync: error: "), "{case}: {err}");
    assert!(err.contains(why), "{case}: expected {why:?} in: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{case}: one-line error: {err}"
    );
    assert!(out.stdout.is_empty(), "{case}: stdout: {:?}", out.stdout);
    assert_eq!(state(w), before, "{case}: state changed");
}

fn link(w: &World) -> Command {
    let mut c = w.home.offsync(["link", "--yes"]);
    c.args(crate::util::allow_root())
        .arg("--authorized-keys")
        .arg(w.sshd().authorized_keys())
        .arg("--sshd-config")
        .arg(w.sshd().config());
    c
}

fn link_key_file(w: &World, file: &Path) -> Command {
    let mut c = link(w);
    c.arg("--path")
        .arg(w.sshd().sync_dir())
        .arg("--key-file")
        .arg(file);
    c
}

#[test]
fn link_rejects_bad_keys_and_paths() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let dir = w.home.tmp.path();
    let good = std::fs::read_to_string(w.home.pub_key()).unwrap();
    let good = good.trim();
    let other = keygen(dir, "other", &["-t", "ed25519"]).unwrap();
    let other = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let write = |name: &str, content: &[u8]| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    };

    let mut cases: Vec<(&str, PathBuf, &str)> = vec![
        ("empty file", write("empty", b""), "is empty"),
        ("blank lines", write("blank", b"\n \n"), "is empty"),
        (
            "options prefix",
            write("opts", format!("command=\"x\" {good}\n").as_bytes()),
            "options prefix",
        ),
        (
            "two keys",
            write("two", format!("{good}\n{other}").as_bytes()),
            "several lines",
        ),
        (
            "NUL byte",
            write("nul", format!("{good}\0\n").as_bytes()),
            "NUL",
        ),
        (
            "bad base64",
            write("b64", b"ssh-ed25519 AAAA!!notbase64 x\n"),
            "base64",
        ),
        (
            "ssh-dss",
            write("dss", b"ssh-dss AAAAB3NzaC1kc3M= x\n"),
            "not accepted",
        ),
        (
            "private key",
            keygen(dir, "private", &["-t", "ed25519"]).unwrap(),
            "PRIVATE",
        ),
    ];
    // A real DSA key, when this ssh-keygen still makes them.
    if let Some(dsa) = keygen(dir, "dsa", &["-t", "dsa"]) {
        cases.push((
            "real ssh-dss key",
            dsa.with_extension("pub"),
            "not accepted",
        ));
    }
    // ssh-keygen may refuse 1024-bit RSA; then keys.rs's unit tests cover it alone.
    if let Some(rsa) = keygen(dir, "rsa1024", &["-t", "rsa", "-b", "1024"]) {
        cases.push(("RSA 1024", rsa.with_extension("pub"), "1024-bit RSA"));
    } else {
        eprintln!("ssh-keygen refused RSA 1024; case skipped");
    }
    for (case, file, why) in &cases {
        rejected(&w, case, link_key_file(&w, file), why);
    }

    // The same key, given with --key.
    let mut c = link(&w);
    c.args(["--key", ""]).arg("--path").arg(w.sshd().sync_dir());
    rejected(&w, "--key ''", c, "is empty");
    let mut c = link(&w);
    c.args(["--key", &format!("command=\"/bin/sh\" {good}")])
        .arg("--path")
        .arg(w.sshd().sync_dir());
    rejected(&w, "--key with options", c, "options prefix");

    // Paths: nothing may be created for a rejected --path.
    let base = w.sshd().dir.clone();
    let dotdot = format!("{}/new/../x", base.display());
    let mut c = link(&w);
    c.args(["--key", good, "--path", &dotdot]);
    rejected(&w, "--path with ..", c, "`..`");
    assert!(!base.join("new").exists() && !base.join("x").exists());
    let newline = format!("{}/a\nb", base.display());
    let mut c = link(&w);
    c.args(["--key", good, "--path", &newline]);
    rejected(&w, "--path with a newline", c, "control characters");
    assert!(!base.join("a\nb").exists() && !base.join("a").exists());
}

#[test]
fn target_add_rejects_bad_logins_and_fingerprints() {
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let pwned = w.home.tmp.path().join("pwned");
    let proxy = format!("-oProxyCommand=touch {}@h", pwned.display());
    let logins = [
        "-oProxyCommand=touch /tmp/x@h",
        proxy.as_str(),
        "u@h;id",
        "u@h x",
        "u@$(id)",
        "u@`id`",
        // Without `@` a login is a host alias from ~/.ssh/config; these are not aliases.
        "alias:22",
        "[alias]",
        "-oProxyCommand=touch",
        "u@[::1",
        "u@",
        "@h",
        "u@h\nx",
    ];
    for login in logins {
        let mut c = w.home.offsync(["target", "add", "--path", "/srv/x", "--"]);
        c.arg(login);
        rejected(&w, &format!("login {login:?}"), c, "login");
    }
    assert!(!pwned.exists(), "a login reached ssh as an option");

    let sshd = w.sshd();
    let add = |extra: &[&str]| {
        let mut c = w.home.offsync(["target", "add"]);
        c.arg(sshd.login())
            .args(["--port", &sshd.port.to_string(), "--path"])
            .arg(sshd.sync_dir())
            .args(extra);
        c
    };
    rejected(
        &w,
        "MD5 fingerprint",
        add(&["--name", "t2", "--fingerprint", "MD5:aa:bb"]),
        "SHA256",
    );
    rejected(
        &w,
        "short fingerprint",
        add(&["--name", "t2", "--fingerprint", "SHA256:abc"]),
        "SHA256",
    );
    rejected(
        &w,
        "bad name",
        add(&["--name", "a b", "--fingerprint", &sshd.fingerprint()]),
        "--name",
    );
    rejected(
        &w,
        "duplicate name",
        add(&["--name", "t1", "--fingerprint", &sshd.fingerprint()]),
        "t1",
    );
    let mut c = w
        .home
        .offsync(["target", "add", "u@h", "--path", "relative/dir"]);
    c.args(["--fingerprint", &sshd.fingerprint()]);
    rejected(&w, "relative --path", c, "--path");
}

#[test]
fn unknown_config_key_is_an_error_with_its_line() {
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    let h = &w.home;
    let mut cfg = std::fs::read(h.config()).unwrap();
    cfg.extend_from_slice(b"colour: red\n");
    std::fs::write(h.config(), &cfg).unwrap();
    let line = String::from_utf8(cfg.clone()).unwrap().lines().count();
    let before = state(&w);
    for args in [
        &["target", "list"][..],
        &["target", "list", "--json"],
        &["target", "check"],
    ] {
        let out = h.offsync(args).assert().code(64).get_output().clone();
        let err = stderr(&out);
        assert!(err.contains("colour"), "{args:?}: {err}");
        assert_eq!(
            err.matches("line").count(),
            0,
            "location printed once: {err}"
        );
        let at = format!("config.yaml:{line}");
        assert!(err.contains(&at), "{args:?}: expected {at:?} in: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(state(&w), before, "{args:?}: state changed");
    }
}

/// `apply PLAN_FILE` reads at most 256 MiB and checks the file before anything else runs:
/// an endless device, a huge (sparse) file, a truncated plan, a plan of another source and a
/// JSON document that is not a plan are each refused with one line naming the file, exit 64,
/// and no change to OFFSYNC_HOME or the target.
#[test]
fn apply_refuses_bad_plan_files() {
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    w.write("a.txt", b"a");
    let h = &w.home;
    let dir = h.tmp.path();
    let good = dir.join("good.json");
    h.offsync(["plan", "--out"]).arg(&good).assert().code(0);
    let json = std::fs::read(&good).unwrap();

    // A plan made for another source: plan with the source switched, then switch back.
    let other_src = dir.join("other source");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("b.txt"), b"b").unwrap();
    let cfg = std::fs::read(h.config()).unwrap();
    let text = String::from_utf8(cfg.clone()).unwrap();
    let switched = text.replace(
        &w.source.display().to_string(),
        &other_src.display().to_string(),
    );
    assert_ne!(switched, text, "config names the source");
    std::fs::write(h.config(), switched).unwrap();
    let other_plan = dir.join("other.json");
    h.offsync(["plan", "--out"])
        .arg(&other_plan)
        .assert()
        .code(0);
    std::fs::write(h.config(), &cfg).unwrap();

    let huge = dir.join("huge.json");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(300 << 20).unwrap(); // sparse: costs no disk
    drop(f);
    let truncated = dir.join("truncated.json");
    std::fs::write(&truncated, &json[..json.len() / 2]).unwrap();
    let not_plan = dir.join("not-a-plan.json");
    std::fs::write(&not_plan, br#"{"format": "something-else/1", "items": []}"#).unwrap();

    let target_before = crate::util::listing(&w.sshd().sync_dir());
    let cases: [(&str, PathBuf, &str); 5] = [
        ("/dev/zero", PathBuf::from("/dev/zero"), "not a JSON object"),
        ("huge sparse file", huge, "limit"),
        ("truncated plan", truncated, "truncated"),
        ("plan of another source", other_plan, "made for source"),
        ("not a plan", not_plan, "not an offsync plan"),
    ];
    for (case, file, why) in cases {
        let mut c = h.offsync(["apply", "--yes"]);
        c.arg(&file);
        rejected(&w, case, c, why);
        let mut c = h.offsync(["apply", "--yes"]);
        c.arg(&file);
        let err = stderr(c.assert().code(64).get_output());
        assert!(
            err.contains(&file.display().to_string()),
            "{case}: names the file: {err}"
        );
        assert_eq!(
            crate::util::listing(&w.sshd().sync_dir()),
            target_before,
            "{case}: target changed"
        );
    }
    // The good plan still applies.
    h.offsync(["apply", "--yes"]).arg(&good).assert().code(0);
}

/// A bare `!` (or `!` and blanks, or a pattern of only slashes) in `exclude:` is refused when
/// config.yaml is loaded: one line naming config.yaml, the entry's index and the pattern, exit
/// 64, for `plan` and `apply` alike, before anything is hashed or sent.
#[test]
fn bad_exclude_patterns_are_refused_with_their_index() {
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    w.write("a.txt", b"a");
    let h = &w.home;
    // One good apply first, so the target is not empty.
    h.offsync(["apply", "--yes"]).assert().code(0);
    let target_before = crate::util::listing(&w.sshd().sync_dir());
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(!cfg.contains("exclude:"), "init writes no exclude list");
    for (bad, why) in [
        ("'!'", "bare `!`"),
        ("'!   '", "bare `!`"),
        ("'/'", "matches nothing"),
    ] {
        let text = format!("{cfg}exclude:\n  - '*.log'\n  - build/\n  - tmp/\n  - {bad}\n");
        std::fs::write(h.config(), &text).unwrap();
        let shown = bad.trim_matches('\'');
        let want = format!("exclude[3]: {shown:?}");
        for args in [&["plan"][..], &["apply", "--yes"]] {
            let case = format!("{args:?} {bad}");
            rejected_but(&w, &case, h.offsync(args), &want, &[b"apply.lock"]);
            let mut c = h.offsync(args);
            let err = stderr(c.assert().code(64).get_output());
            assert!(err.contains("config.yaml"), "{err}");
            assert!(err.contains(why), "{err}");
        }
        assert_eq!(
            crate::util::listing(&w.sshd().sync_dir()),
            target_before,
            "the target is unchanged"
        );
    }
}

/// As root, `link` refuses (exit 64, one line, authorized_keys and the rest of the state
/// byte-identical) unless `--allow-root` is given: the key would write as root.
#[test]
fn link_as_root_needs_allow_root() {
    if !crate::util::is_root() {
        eprintln!("SKIP: link_as_root_needs_allow_root needs root");
        return;
    }
    if !skip_unless_tools() {
        return;
    }
    let w = setup_linked_target();
    let mut c = w.home.offsync(["link", "--yes", "--authorized-keys"]);
    c.arg(w.sshd().authorized_keys())
        .arg("--sshd-config")
        .arg(w.sshd().config())
        .arg("--path")
        .arg(w.sshd().dir.join("another dir"))
        .arg("--key-file")
        .arg(w.home.pub_key());
    rejected(&w, "link as root", c, "--allow-root");
    assert!(!w.sshd().dir.join("another dir").exists());
    let mut c = w.home.offsync(["link", "--yes", "--authorized-keys"]);
    c.arg(w.sshd().authorized_keys())
        .arg("--sshd-config")
        .arg(w.sshd().config())
        .arg("--path")
        .arg(w.sshd().dir.join("another dir"))
        .arg("--key-file")
        .arg(w.home.pub_key());
    let err = stderr(c.assert().code(64).get_output());
    assert!(err.contains("as root") && err.contains("nosuid"), "{err}");
}

/// `ssh_options:` takes only the documented connection-tuning keys: a security option is
/// refused at load with one line naming the key and the allowed list (exit 64, nothing
/// changed); an allowed one reaches ssh (a YAML number is fine, and a bind address that is not
/// this host's makes the connection fail).
#[test]
fn ssh_options_outside_the_allow_list_are_refused_and_allowed_ones_reach_ssh() {
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    let h = &w.home;
    let base = std::fs::read_to_string(h.config()).unwrap();
    let with = |opts: &str| {
        let at = base
            .find("  remote_path:")
            .expect("a target in config.yaml");
        let mut text = base.clone();
        text.insert_str(at, &format!("  ssh_options:\n{opts}"));
        std::fs::write(h.config(), text).unwrap();
    };
    for (opts, why) in [
        (
            "    StrictHostKeyChecking: no\n",
            "\"StrictHostKeyChecking\" is not allowed",
        ),
        ("    IdentityFile: /tmp/k\n", "allowed: AddressFamily"),
        (
            "    ConnectTimeout: \"5 -oProxyCommand=x\"\n",
            "must be one word",
        ),
    ] {
        with(opts);
        let before = state(&w);
        let out = h
            .offsync(["target", "check"])
            .assert()
            .code(64)
            .get_output()
            .clone();
        let err = stderr(&out);
        assert!(
            err.contains(why) && err.contains("config.yaml"),
            "{opts}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_eq!(state(&w), before);
    }
    with("    ConnectTimeout: 5\n    Compression: yes\n");
    h.offsync(["target", "check"]).assert().code(0);
    with("    BindAddress: 192.0.2.1\n");
    h.offsync(["target", "check"]).assert().code(1);
}
