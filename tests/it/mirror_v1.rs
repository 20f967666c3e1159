//! A mirror in the previous release's format (`offsync-mirror/1`, one age object per file),
//! written by that release's code and committed as `tests/fixtures/mirror-v1` (its README says
//! how it was made and regenerated): today's binary must read it, restore and pull every
//! generation byte-identical, and publish the next generation onto it, chained to the old
//! ones. Each test works on a copy in a temp dir; the committed files are never written.
//!
//! The fixture is one `fixture.tar.gz` embedded in the test binary (the ordinary-user run of
//! `scripts/test` may not be able to read the checkout), extracted with the real `tar`; its
//! `source-gen{1,2}/` trees are the expected results.
//!
//! Both then convert it with `offsync mirror upgrade` (`/1` → `/2`) and check everything
//! again.

use crate::mirror::{Mirror, json};
use crate::util::{Home, stderr, stdout};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const FIXTURE: &[u8] = include_bytes!("../fixtures/mirror-v1/fixture.tar.gz");

/// The fixture extracted below `home`'s temp dir (modes and nanosecond mtimes kept).
fn fixture(home: &Home) -> PathBuf {
    let tar = home.tmp.path().join("fixture.tar.gz");
    let dir = home.tmp.path().join("fixture");
    std::fs::write(&tar, FIXTURE).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let st = home
        .tool("tar")
        .args(["--no-same-owner", "-xpzf"])
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "tar -x the fixture");
    dir
}

/// `cp -a FROM TO` (modes, mtimes, symlinks, any name).
fn copy_tree(home: &Home, from: &Path, to: &Path) {
    let st = home
        .tool("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {}", from.display());
}

/// Every entry below `dir` with mode, content or link target, and a regular file's mtime in
/// nanoseconds (the snapshot records them; `full_listing` compares seconds).
fn tree(dir: &Path) -> Vec<(Vec<u8>, u32, Vec<u8>, i64)> {
    crate::mirror::full_listing(dir)
        .into_iter()
        .map(|(p, m, c, _)| {
            let meta =
                std::fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(&p))).unwrap();
            let mtime = if meta.is_file() {
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
            } else {
                0
            };
            (p, m, c, mtime)
        })
        .collect()
}

/// A controller holding the fixture's writer key and age identity (`home/`, test-only), its
/// source a copy of generation 2's tree, joined (`mirror add`) to a copy of the fixture
/// mirror as `m`. Also returns the extracted fixture (`source-gen1/`, `source-gen2/`,
/// `host-age-identity.txt`), which the tests only read.
fn v1_mirror() -> (Mirror, PathBuf) {
    let home = Home::new();
    let fx = fixture(&home);
    // `init` keeps an existing key pair (the fixture's writer key).
    copy_tree(&home, &fx.join("home"), &home.home);
    let source = home.tmp.path().join("src");
    copy_tree(&home, &fx.join("source-gen2"), &source);
    home.init(Some(&source));
    let dir = home.tmp.path().join("usb disk").join("offsync");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    copy_tree(&home, &fx.join("mirror"), &dir);
    let marker = std::fs::read_to_string(dir.join("offsync-mirror")).unwrap();
    assert!(marker.starts_with("offsync-mirror/1\n"), "{marker}");
    let m = Mirror {
        home,
        source,
        url: dir.display().to_string(),
        endpoint: None,
        dir: Some(dir),
    };
    let out = m.off(&["mirror", "add", "m", &m.url]).output().unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("joined existing mirror m"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    (m, fx)
}

/// The generations `mirror snapshots m --json` lists, oldest first.
fn generations(m: &Mirror) -> Vec<u64> {
    let out = m
        .off(&["mirror", "snapshots", "m", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    let mut gens: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    gens.sort();
    gens
}

/// `mirror restore m --snapshot GEN` into a fresh directory equals `expected`.
fn assert_restores(m: &Mirror, generation: u64, expected: &Path) {
    let dest = m.home.tmp.path().join(format!("restored-{generation}"));
    let _ = std::fs::remove_dir_all(&dest);
    let g = generation.to_string();
    let out = m
        .off(&["mirror", "restore", "m", "--snapshot", &g])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore {generation}: {}",
        stderr(&out)
    );
    assert_eq!(tree(&dest), tree(expected), "generation {generation}");
}

/// A host with the fixture's second recipient identity that trusts the writer key.
struct Host {
    home: Home,
    id: PathBuf,
    dest: PathBuf,
}

impl Host {
    fn new(fx: &Path) -> Host {
        let home = Home::new();
        let id = home.tmp.path().join("host-age-identity.txt");
        copy_tree(&home, &fx.join("host-age-identity.txt"), &id);
        let dest = home.tmp.path().join("srv");
        Host { home, id, dest }
    }

    /// `offsync pull --delete` of the newest generation; DEST then equals `expected`.
    fn pull(&self, m: &Mirror, expected: &Path) {
        let out = m
            .pull_cmd(&self.home, &self.dest, &self.id)
            .arg("--delete")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert_eq!(tree(&self.dest), tree(expected));
    }
}

/// (a) Read: both generations are listed, verify (deep) finds the source in sync, each
/// generation restores byte-identical (names with a space, a newline and a non-UTF-8 byte,
/// modes 0755/0600/0750, nanosecond mtimes, symlinks, an empty file, 1 MiB + 1 byte, 42 small
/// files), a host pulls the newest, and a file comes back by hand with the `age` CLI.
#[test]
fn a_v1_mirror_is_read_restored_and_pulled() {
    let (m, fx) = v1_mirror();
    assert_eq!(generations(&m), [1, 2]);
    for deep in [false, true] {
        let mut args = vec!["verify", "--target", "m"];
        if deep {
            args.push("--deep");
        }
        let out = m.off(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let gen1 = fx.join("source-gen1");
    assert_eq!(tree(&fx.join("source-gen2")), tree(&m.source));
    assert_ne!(tree(&gen1), tree(&m.source), "the generations differ");
    assert_restores(&m, 2, &m.source);
    assert_restores(&m, 1, &gen1);
    Host::new(&fx).pull(&m, &m.source);
    if crate::util::skip_unless_age() {
        by_hand_with_age(&m, "small/f07.txt");
    }
    // Upgraded in place: the small objects move into a pack, the 1 MiB + 1 byte file stays a
    // single object, and everything reads exactly as before.
    upgrade(&m, 1);
    assert_eq!(generations(&m), [1, 2]);
    m.off(&["verify", "--target", "m", "--deep"])
        .assert()
        .code(0);
    assert_restores(&m, 2, &m.source);
    assert_restores(&m, 1, &gen1);
    Host::new(&fx).pull(&m, &m.source);
}

/// `mirror upgrade m --yes` on a `/1` mirror: the marker becomes `/2`, the small single
/// objects go into `packs` packs (only `big.bin` stays under `objects/`), and a rerun has
/// nothing to do.
fn upgrade(m: &Mirror, packs: usize) {
    let dir = m.dir.as_ref().unwrap();
    let before = crate::util::listing(dir);
    let out = m.off(&["mirror", "upgrade", "m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        crate::util::listing(dir),
        before,
        "the plan changed the mirror"
    );
    let out = m
        .off(&["mirror", "upgrade", "m", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let marker = std::fs::read(dir.join("offsync-mirror")).unwrap();
    assert!(marker.starts_with(b"offsync-mirror/2\n"), "{marker:?}");
    assert_eq!(
        crate::mirror::walk_count(&dir.join("objects")),
        1,
        "only big.bin stays single"
    );
    assert_eq!(crate::mirror::walk_count(&dir.join("packs")), packs);
    let out = m.off(&["mirror", "upgrade", "m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));
}

/// The manual recovery `man offsync-mirror` documents for /1, with the real `age` CLI:
/// identity → mirror key → object → the file's bytes.
fn by_hand_with_age(m: &Mirror, path: &str) {
    let dir = m.dir.as_ref().unwrap();
    let object = m.object_id(path);
    let key = m.home.tmp.path().join("mirror-key.txt");
    let out = m
        .home
        .tool("age")
        .arg("-d")
        .arg("-i")
        .arg(m.identity())
        .arg("-o")
        .arg(&key)
        .arg(dir.join("keys/mirror-key.age"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = m
        .home
        .tool("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(dir.join("objects").join(&object[..2]).join(&object))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(m.source.join(path)).unwrap());
}

/// (b) Apply: a host pulls generation 2; the controller changes the source (adds, modifies,
/// deletes small files, the non-UTF-8 name among them, changes a mode and an mtime) and
/// applies; generation 3 restores byte-identical, the old generations still restore, the
/// host's next pull accepts 3 as chained to the 2 it saw, and verify --deep passes.
#[test]
fn b_a_v1_mirror_takes_an_apply_and_chains_to_it() {
    let (m, fx) = v1_mirror();
    let host = Host::new(&fx);
    host.pull(&m, &m.source);
    let (gen1, gen2) = (fx.join("source-gen1"), fx.join("source-gen2"));

    let s = &m.source;
    std::fs::write(s.join("small/f00.txt"), b"modified in generation 3\n").unwrap();
    std::fs::write(s.join("small/g3-added.txt"), b"added in generation 3\n").unwrap();
    std::fs::write(s.join("g3 top level"), b"added\n").unwrap();
    std::fs::remove_file(s.join("small/f01.txt")).unwrap();
    std::fs::remove_file(s.join(std::ffi::OsStr::from_bytes(b"bad\xffbyte"))).unwrap();
    std::fs::set_permissions(
        s.join("private/token"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let out = m.apply(&["--delete"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(generations(&m), [1, 2, 3]);
    // This offsync writes `/2`: the marker says so (before the first pack was stored), and
    // the new small contents went into a pack while the old objects stay where they were.
    let dir = m.dir.as_ref().unwrap();
    let marker = std::fs::read(dir.join("offsync-mirror")).unwrap();
    assert!(marker.starts_with(b"offsync-mirror/2\n"), "{marker:?}");
    assert_eq!(crate::mirror::walk_count(&dir.join("packs")), 1);

    let expected = [
        (1, gen1.as_path()),
        (2, gen2.as_path()),
        (3, m.source.as_path()),
    ];
    assert_all_generations(&m, &host, &expected);

    // Upgraded after the apply: the /1 small objects join the pack generation 3 wrote.
    upgrade(&m, 2);
    assert_all_generations(&m, &host, &expected);
}

/// Every generation in `expected` restores byte-identical, verify --deep finds the newest in
/// sync with the source, and the host (which pulled an older one) pulls the newest.
fn assert_all_generations(m: &Mirror, host: &Host, expected: &[(u64, &Path)]) {
    for (generation, dir) in expected {
        assert_restores(m, *generation, dir);
    }
    let out = m
        .off(&["verify", "--target", "m", "--deep"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    host.pull(m, expected.last().unwrap().1);
}

/// (c) A mirror whose marker names a newer format than this offsync knows is refused before
/// anything is read or written, naming the version and the fix; a marker that names no format
/// is refused too. The target fails (exit 1, like any target that cannot be read), the
/// mirror is byte-identical.
#[test]
fn c_a_mirror_of_an_unknown_format_is_refused_and_left_alone() {
    let (m, _fx) = v1_mirror();
    let dir = m.dir.clone().unwrap();
    std::fs::write(m.source.join("new.txt"), b"would be uploaded\n").unwrap();
    for (marker, needle) in [
        (
            &b"offsync-mirror/3\nfrom the future\n"[..],
            "offsync-mirror/3",
        ),
        (b"something else\n", "does not name a format"),
    ] {
        std::fs::write(dir.join("offsync-mirror"), marker).unwrap();
        let before = crate::util::listing(&dir);
        for args in [&["plan"][..], &["apply", "--yes"], &["verify"]] {
            let out = m.off(args).output().unwrap();
            let said = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
            assert!(said.contains(needle), "{args:?}: {said}");
        }
        assert_eq!(crate::util::listing(&dir), before, "the mirror was changed");
    }
}
