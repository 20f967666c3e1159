//! Small holes, each attacked end to end: a closed stdout pipe, the umask of the calling shell,
//! setuid/setgid bits in the source, a full target disk, and the Python offsync's
//! `verify: hash`.

use crate::util::{Home, fast_linked_target, is_root, mode, skip_unless_tools, stderr, stdout};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A controller whose source holds `n` files, pushed to a local-directory mirror `m`.
fn mirrored_home(n: usize) -> (Home, PathBuf, PathBuf) {
    let home = Home::new();
    let source = home.tmp.path().join("src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    for i in 0..n {
        std::fs::write(source.join("sub").join(format!("file-{i:05}")), b"x").unwrap();
    }
    home.init(Some(&source));
    let dir = home.tmp.path().join("usb disk").join("mirror");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    home.offsync(["mirror", "add", "m"])
        .arg(&dir)
        .assert()
        .success();
    home.offsync(["apply", "--yes"]).assert().success();
    (home, source, dir)
}

/// Every listing command exits 0 and prints no panic when its reader is gone: once with a
/// pipe whose read end is closed before offsync starts (every write fails with EPIPE, so
/// the outcome does not depend on timing), once read by a `head -1`-like reader.
#[test]
fn closed_stdout_pipe_exits_zero_without_panic() {
    let (home, _source, _dir) = mirrored_home(3000);
    let commands: &[&[&str]] = &[
        &["target", "list"],
        &["target", "list", "--json"],
        &["mirror", "ls", "m"],
        &["mirror", "ls", "m", "--json"],
        &["mirror", "snapshots", "m"],
        &["mirror", "recipients", "list", "m"],
        &["manifest"],
        &["verify"],
        &["verify", "--json"],
        &["plan"],
        &["plan", "--json"],
        &["apply", "--yes"],
    ];
    for args in commands {
        // Read end closed before the start.
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let out = home
            .offsync_std()
            .args(*args)
            .stdin(Stdio::null())
            .stdout(w)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: nothing on stderr: {err}");

        // `| head -1`: read one line, then close.
        let mut child = home
            .offsync_std()
            .args(*args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed a line");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?} | head -1: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?} | head -1: {err}");
    }
}

/// Every file and directory below `dir` (and `dir` itself) with its mode bits; symlinks
/// are left out (their mode means nothing).
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = vec![(dir.to_path_buf(), true, mode(dir))];
    for (rel, m, _) in crate::util::listing(dir) {
        let p = dir.join(std::ffi::OsStr::from_bytes(&rel));
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if !meta.file_type().is_symlink() {
            out.push((p, meta.is_dir(), m));
        }
    }
    out
}

/// Under `umask 000`, everything offsync creates for itself — OFFSYNC_HOME (config, keys,
/// identity, caches, logs) and a local mirror's objects, snapshots and directories — is
/// 0600/0700; and a restore gives files the snapshot's modes whatever the umask.
#[test]
fn umask_000_leaves_state_and_mirror_private() {
    let home = Home::new();
    let source = home.tmp.path().join("src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/page.html"), b"<p>hi</p>").unwrap();
    std::fs::set_permissions(
        source.join("sub/page.html"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(source.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = home.tmp.path().join("usb disk").join("mirror");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let run = |args: &[&str]| {
        let out = home.offsync_umask("000", args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&["init", "--source", source.to_str().unwrap()]);
    run(&["mirror", "add", "m", dir.to_str().unwrap()]);
    run(&["apply", "--yes"]);
    std::fs::write(source.join("sub/second.html"), b"2").unwrap();
    run(&["apply", "--yes"]);
    run(&["verify"]);
    let restored = home.tmp.path().join("restored");
    run(&["mirror", "restore", "m", restored.to_str().unwrap()]);

    for root in [&home.home, &dir] {
        let all = modes(root);
        assert!(all.len() > 3, "{}: {all:?}", root.display());
        for (p, is_dir, m) in all {
            if is_dir {
                assert_eq!(m, 0o700, "{} is a directory with mode {m:o}", p.display());
            } else {
                assert_eq!(m & 0o077, 0, "{} has mode {m:o}", p.display());
            }
        }
    }
    // A restore reproduces the snapshot's modes, not the umask's.
    assert_eq!(mode(&restored.join("sub/page.html")), 0o644);
    assert_eq!(mode(&restored.join("sub")), 0o755);
    assert_eq!(mode(&restored), 0o755);
}

/// A 4755 and a 2755 file (and a 2775 directory) in the source arrive as 0755/0775 on an
/// SSH target and in a mirror; the plan lists them in `source.modes_stripped` and says so in
/// text; a second plan has nothing to do.
#[test]
fn setuid_and_setgid_bits_are_never_sent() {
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    let set = |rel: &str, m: u32| {
        std::fs::set_permissions(w.source.join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    w.write("bin/suid", b"#!/bin/sh\n");
    w.write("bin/sgid", b"#!/bin/sh\n");
    w.write("bin/plain", b"#!/bin/sh\n");
    set("bin/suid", 0o4755);
    set("bin/sgid", 0o2755);
    set("bin/plain", 0o755);
    set("bin", 0o2775);
    let h = &w.home;
    let plan = h.offsync(["plan", "--json"]).assert().get_output().clone();
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        json["source"]["modes_stripped"],
        serde_json::json!(["bin", "bin/sgid", "bin/suid"]),
        "{json}"
    );
    let text = stdout(h.offsync(["plan"]).assert().get_output());
    assert!(
        text.contains("setuid/setgid bits are never sent") && text.contains("bin/suid"),
        "{text}"
    );
    h.offsync(["apply", "--yes"]).assert().code(0);
    let sync = w.sshd().sync_dir();
    assert_eq!(mode(&sync.join("bin/suid")), 0o755);
    assert_eq!(mode(&sync.join("bin/sgid")), 0o755);
    assert_eq!(mode(&sync.join("bin/plain")), 0o755);
    assert_eq!(mode(&sync.join("bin")), 0o775);
    h.offsync(["plan", "--detailed-exitcode"]).assert().code(0);
    h.offsync(["verify"]).assert().code(0);

    // A mirror stores the stripped modes, and a restore gives them back.
    let dir = h.tmp.path().join("mirror");
    h.offsync(["mirror", "add", "m"])
        .arg(&dir)
        .assert()
        .success();
    h.offsync(["apply", "--yes", "--target", "m"])
        .assert()
        .code(0);
    let restored = h.tmp.path().join("restored");
    h.offsync(["mirror", "restore", "m"])
        .arg(&restored)
        .assert()
        .success();
    assert_eq!(mode(&restored.join("bin/suid")), 0o755);
    assert_eq!(mode(&restored.join("bin/sgid")), 0o755);
    assert_eq!(mode(&restored.join("bin")), 0o775);
    h.offsync(["plan", "--detailed-exitcode"]).assert().code(0);
}

/// Unmounts a tmpfs when dropped, so a failing assertion never leaves it mounted.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A target whose disk fills up during apply: exit 1, the result row names the target and
/// says "No space left on device" (not rsync's "error in file IO (code 11)"), and
/// operations.log records the apply as failed.
#[test]
fn full_target_disk_is_named() {
    if !is_root() {
        eprintln!("SKIP: disk-full test needs root (tmpfs mount)");
        return;
    }
    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    let sync = w.sshd().sync_dir();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
        .arg(&sync)
        .status()
        .unwrap();
    if !st.success() {
        if crate::util::e2e_required() {
            panic!("mount -t tmpfs failed as root");
        }
        eprintln!("SKIP: disk-full test: mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
        return;
    }
    let _guard = Mounted(sync.clone());
    // The mount replaced the directory `target add` marked: offsync now (rightly) refuses it
    // as another directory. Add it again, as an operator would after a deliberate change.
    w.home
        .offsync(["target", "remove", "t1"])
        .assert()
        .success();
    crate::util::target_add_cmd(&w.home, w.sshd(), "t1", Some(&w.sshd().fingerprint()))
        .assert()
        .success();
    w.write("small.txt", b"fits");
    w.write("big.bin", &vec![7u8; 5 << 20]);
    let out = w
        .home
        .offsync(["apply", "--yes"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    let row = all
        .lines()
        .find(|l| l.contains("No space left on device"))
        .unwrap_or_else(|| panic!("no disk-full message: {all}"));
    assert!(row.contains("t1"), "the target is named: {row}");
    assert!(row.contains("disk is full"), "{row}");
    assert!(!all.contains("code 11"), "{all}");
    let log = std::fs::read_to_string(w.home.home.join("operations.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["target"], "t1", "{last}");
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{last}"
    );
    // Nothing half-written is left at a final path.
    assert!(!sync.join("big.bin").exists());
}

/// The Python offsync README's example config (`verify: hash`, its documented default) is
/// read as is, and `verify: hash` on a real target verifies and survives a config rewrite.
#[test]
fn python_verify_hash_is_accepted() {
    let home = Home::new();
    std::fs::create_dir_all(&home.home).unwrap();
    std::fs::write(
        home.config(),
        "version: 1\nsource: /srv/app\ndelete: false\noverwrite: true\nverify: hash\ntargets:\n  - login: deploy@node01\n    user: deploy\n    host: node01\n    remote_path: /srv/app\n    rrsync: true\n",
    )
    .unwrap();
    let listed = stdout(
        home.offsync(["target", "list"])
            .assert()
            .code(0)
            .get_output(),
    );
    assert!(listed.contains("node01"), "{listed}");
    // The deletion column says what rrsync permits, not that anything will be deleted.
    let header = listed.lines().next().unwrap_or_default();
    assert!(header.contains("RRSYNC ALLOWS DELETE"), "{listed}");

    if !skip_unless_tools() {
        return;
    }
    let w = fast_linked_target();
    w.write("a.txt", b"a");
    let h = &w.home;
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(cfg.contains("verify: true"), "{cfg}");
    std::fs::write(h.config(), cfg.replace("verify: true", "verify: hash")).unwrap();
    h.offsync(["target", "list"]).assert().code(0);
    h.offsync(["plan"]).assert().code(0);
    let out = stdout(h.offsync(["apply", "--yes"]).assert().code(0).get_output());
    assert!(out.contains("verified"), "{out}");
    // A command that rewrites config.yaml keeps the spelling.
    let dir = h.tmp.path().join("mirror");
    h.offsync(["mirror", "add", "m"])
        .arg(&dir)
        .assert()
        .success();
    let cfg = std::fs::read_to_string(h.config()).unwrap();
    assert!(cfg.contains("verify: hash"), "{cfg}");
}
