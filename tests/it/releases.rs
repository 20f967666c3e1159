//! The `releases` layout on real loopback sshd + rsync + rrsync targets: uploads beside the
//! live tree, verification before the switch, the atomic switch of `current`, rollback,
//! pruning, and `--switch together|each`.

use crate::util::{World, set_config, skip_unless_tools, stdout};
use std::path::{Path, PathBuf};

fn current(sync: &Path) -> String {
    std::fs::read_link(sync.join("current"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn release_dirs(sync: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sync.join("releases"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn releases_world(n: usize) -> World {
    let w = World::fast(n);
    set_config(&w.home, "layout", "releases");
    w
}

#[test]
fn smoke_release_apply_and_rollback() {
    if !skip_unless_tools() {
        return;
    }
    let w = releases_world(1);
    let h = &w.home;
    w.write("a.txt", b"one");
    w.write("sub/b.txt", b"bee");
    let out = h.offsync(["apply", "--yes"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let sync: PathBuf = w.sshd().sync_dir();
    let first = current(&sync);
    eprintln!("current -> {first}; {:?}", release_dirs(&sync));
    w.write("a.txt", b"two");
    let out = h.offsync(["plan"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let out = h.offsync(["apply", "--yes"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let second = current(&sync);
    assert_ne!(first, second);
    assert_eq!(std::fs::read(sync.join("current/a.txt")).unwrap(), b"two");
    let out = h.offsync(["verify"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let out = h.offsync(["releases"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let out = h.offsync(["rollback"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert_eq!(current(&sync), first);
    assert_eq!(std::fs::read(sync.join("current/a.txt")).unwrap(), b"one");
    let out = h.offsync(["releases", "--json"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let out = h.offsync(["plan"]).output().unwrap();
    eprintln!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "{}",
        std::fs::read_to_string(h.home.join("operations.log")).unwrap()
    );
}
