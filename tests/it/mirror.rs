//! Encrypted mirrors against a real S3 server (moto on loopback) and a local directory:
//! plan/apply/verify like SSH targets, restore, pull, the age CLI by hand, recipients, rekey,
//! prune, and the faults the format must survive.

use crate::util::{
    AWS_ENV, Home, is_root, listing, moto_endpoint, new_bucket, skip_unless_age, skip_unless_moto,
    stderr, stdout,
};
use assert_cmd::Command;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    S3,
    Local,
}

/// A controller with a source directory and one mirror named `m`.
pub(crate) struct Mirror {
    pub(crate) home: Home,
    pub(crate) source: PathBuf,
    pub(crate) url: String,
    pub(crate) endpoint: Option<String>,
    /// The mirror directory (local backend only).
    pub(crate) dir: Option<PathBuf>,
}

fn write_raw(root: &Path, rel: &[u8], content: &[u8]) {
    let p = root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

pub(crate) fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

impl Mirror {
    pub(crate) fn new(backend: Backend) -> Option<Mirror> {
        if matches!(backend, Backend::S3) && !skip_unless_moto() {
            return None;
        }
        let home = Home::new();
        let source = home.tmp.path().join("src");
        std::fs::create_dir_all(&source).unwrap();
        let (url, endpoint, dir) = match backend {
            Backend::S3 => (
                format!("s3://{}/deploy/site", new_bucket()),
                Some(moto_endpoint().to_string()),
                None,
            ),
            Backend::Local => {
                let d = home.tmp.path().join("usb disk").join("offsync");
                std::fs::create_dir_all(d.parent().unwrap()).unwrap();
                (d.display().to_string(), None, Some(d))
            }
        };
        home.init(Some(&source));
        let m = Mirror {
            home,
            source,
            url,
            endpoint,
            dir,
        };
        let mut add = vec!["mirror", "add", "m", m.url.as_str()];
        if let Some(e) = &m.endpoint {
            add.extend(["--endpoint", e.as_str()]);
        }
        let out = m.off(&add).assert().success().get_output().clone();
        assert!(
            stdout(&out).contains("created mirror m"),
            "{}",
            stdout(&out)
        );
        Some(m)
    }

    /// `offsync ARGS` for this controller, with S3 credentials in the environment.
    pub(crate) fn off(&self, args: &[&str]) -> Command {
        let mut c = self.home.offsync(args);
        c.envs(AWS_ENV);
        c
    }

    pub(crate) fn identity(&self) -> PathBuf {
        self.home.home.join("age-identity.txt")
    }

    /// `offsync pull` on another host, trusting this controller's key as the writer.
    pub(crate) fn pull_cmd(&self, home: &Home, dest: &Path, identity: &Path) -> Command {
        let mut c = home.offsync(["pull", self.url.as_str()]);
        c.arg(dest)
            .arg("--identity")
            .arg(identity)
            .arg("--trust")
            .arg(self.home.pub_key())
            .envs(AWS_ENV);
        if let Some(e) = &self.endpoint {
            c.args(["--endpoint", e]);
        }
        c
    }

    /// The object id the newest snapshot lists for `path` (via `mirror ls --json`).
    pub(crate) fn object_id(&self, path: &str) -> String {
        let ls = json(
            &self
                .off(&["mirror", "ls", "m", "--json"])
                .output()
                .unwrap()
                .stdout,
        );
        ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in the snapshot"))["object"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub(crate) fn apply(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["apply", "--yes", "--target", "m"];
        args.extend(extra);
        self.off(&args).output().unwrap()
    }
}

/// Listing with mtimes of regular files, for byte-identical restore checks.
pub(crate) fn full_listing(dir: &Path) -> Vec<(Vec<u8>, u32, Vec<u8>, i64)> {
    listing(dir)
        .into_iter()
        .map(|(p, m, c)| {
            let full = dir.join(std::ffi::OsStr::from_bytes(&p));
            let meta = std::fs::symlink_metadata(&full).unwrap();
            let mtime = if meta.is_file() {
                std::os::unix::fs::MetadataExt::mtime(&meta)
            } else {
                0
            };
            (p, m, c, mtime)
        })
        .collect()
}

fn fill(source: &Path) {
    for (name, content) in [
        (&b"index.html"[..], &b"<h1>hello</h1>"[..]),
        (b"secret-plan name.txt", b"top secret contents"),
        (b"new\nline", b"newline in name"),
        (b"bad\xffbyte", b"non-utf8 name"),
        (b"dir/nested/deep.txt", b"deep"),
        (b"dir/same-as-index", b"<h1>hello</h1>"),
    ] {
        write_raw(source, name, content);
    }
    // Bigger than the single-PUT limit: exercises the streaming multipart upload.
    let big: Vec<u8> = (0..9_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(source.join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink("index.html", source.join("link")).unwrap();
    std::fs::set_permissions(
        source.join("index.html"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        source.join("dir/nested"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
}

/// A mirror holding [`fill`]'s tree as generation 1.
pub(crate) fn filled(backend: Backend) -> Option<Mirror> {
    let m = Mirror::new(backend)?;
    fill(&m.source);
    let out = m.apply(&[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    Some(m)
}

fn full_flow(backend: Backend) {
    let Some(m) = Mirror::new(backend) else {
        return;
    };
    fill(&m.source);
    step_a_mirror_is_listed_like_any_target(&m);
    step_plan_adds_everything_and_apply_verifies(&m);
    step_in_sync_plans_are_identical_and_verify_passes(&m);
    step_restore_elsewhere_is_byte_identical(&m);
    let host = step_pull_onto_a_second_host_is_byte_identical(&m);
    step_an_incremental_change_and_a_deletion_that_needs_delete(&m);
    step_ls_lists_an_older_snapshot(&m);
    step_the_host_pulls_the_new_release_deleting_only_with_delete(&m, &host);
    step_part_of_an_older_generation_can_be_restored(&m);
}

/// Listed like any target.
fn step_a_mirror_is_listed_like_any_target(m: &Mirror) {
    let list = json(
        &m.off(&["target", "list", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(list[0]["name"], "m");
    assert_eq!(list[0]["kind"], "mirror");
}

/// plan: everything added, JSON says kind mirror; exit 2 with --detailed-exitcode; apply
/// uploads and verifies.
fn step_plan_adds_everything_and_apply_verifies(m: &Mirror) {
    let out = m
        .off(&["plan", "--json", "--detailed-exitcode", "--target", "m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan = json(&out.stdout);
    assert_eq!(plan["targets"][0]["kind"], "mirror");
    assert_eq!(plan["targets"][0]["summary"]["added"], 10);

    let out = m.apply(&[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("verified"), "{}", stdout(&out));
}

/// In sync: byte-identical plans, exit 0, verify (and --deep) pass.
fn step_in_sync_plans_are_identical_and_verify_passes(m: &Mirror) {
    let p1 = m.off(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(p1.status.code(), Some(0), "{}{}", stdout(&p1), stderr(&p1));
    let p2 = m.off(&["plan", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(p1.stdout, p2.stdout);
    m.off(&["verify"]).assert().code(0);
    m.off(&["verify", "--deep"]).assert().code(0);
}

/// Restore elsewhere: byte-identical, modes and mtimes included.
fn step_restore_elsewhere_is_byte_identical(m: &Mirror) {
    let dest = m.home.tmp.path().join("restored");
    let out = m
        .off(&["mirror", "restore", "m", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(full_listing(&dest), full_listing(&m.source));
}

/// A second "host" that pulls the mirror: its own home, only the identity file and read
/// access.
struct PullHost {
    host: Home,
    id: PathBuf,
    dir: PathBuf,
}

/// Pull onto a second "host": byte-identical (exit 2: changes made), then nothing to do
/// (exit 0), and logged.
fn step_pull_onto_a_second_host_is_byte_identical(m: &Mirror) -> PullHost {
    let host = Home::new();
    let host_id = host.tmp.path().join("mirror.id");
    std::fs::copy(m.identity(), &host_id).unwrap();
    let host_dir = host.tmp.path().join("srv");
    let out = m
        .pull_cmd(&host, &host_dir, &host_id)
        .arg("--detailed-exitcode")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(full_listing(&host_dir), full_listing(&m.source));
    let again = m
        .pull_cmd(&host, &host_dir, &host_id)
        .arg("--detailed-exitcode")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let log = std::fs::read_to_string(host.home.join("operations.log")).unwrap();
    assert!(log.contains("\"status\":\"ok\""), "{log}");
    PullHost {
        host,
        id: host_id,
        dir: host_dir,
    }
}

/// An incremental change: exactly the changed paths; a deletion needs --delete (a refused
/// apply writes no generation).
fn step_an_incremental_change_and_a_deletion_that_needs_delete(m: &Mirror) {
    std::fs::write(m.source.join("index.html"), b"<h1>v2</h1>").unwrap();
    std::fs::remove_file(m.source.join("dir/nested/deep.txt")).unwrap();
    let plan = json(&m.off(&["plan", "--json"]).output().unwrap().stdout);
    let t = &plan["targets"][0];
    assert_eq!(t["modified"][0]["path"], "index.html");
    assert_eq!(t["missing"][0]["path"], "dir/nested/deep.txt");
    assert_eq!(t["summary"]["added"], 0);
    let out = m.apply(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("REFUSED"), "{}", stdout(&out));
    let snaps = json(
        &m.off(&["mirror", "snapshots", "m", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "a refused apply writes no generation"
    );
    let out = m.apply(&["--delete"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let snaps = json(
        &m.off(&["mirror", "snapshots", "m", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(snaps[1]["generation"], 2);
    assert_eq!(snaps[1]["files"], 7);
}

/// ls lists a snapshot without writing anything.
fn step_ls_lists_an_older_snapshot(m: &Mirror) {
    let ls = json(
        &m.off(&["mirror", "ls", "m", "--snapshot", "1", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "dir/nested/deep.txt")
    );
}

/// The host takes the new release; the deletion only with --delete.
fn step_the_host_pulls_the_new_release_deleting_only_with_delete(m: &Mirror, h: &PullHost) {
    let (host, host_id, host_dir) = (&h.host, &h.id, &h.dir);
    let out = m.pull_cmd(host, host_dir, host_id).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("--delete"), "{}", stderr(&out));
    assert!(
        host_dir.join("dir/nested/deep.txt").exists(),
        "refused pull changed nothing"
    );
    let out = m
        .pull_cmd(host, host_dir, host_id)
        .arg("--delete")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(full_listing(host_dir), full_listing(&m.source));
}

/// An older generation can still be restored, and only part of it.
fn step_part_of_an_older_generation_can_be_restored(m: &Mirror) {
    let part = m.home.tmp.path().join("part");
    m.off(&[
        "mirror",
        "restore",
        "m",
        part.to_str().unwrap(),
        "--snapshot",
        "1",
        "--include",
        "dir/nested/",
    ])
    .assert()
    .success();
    assert_eq!(
        std::fs::read(part.join("dir/nested/deep.txt")).unwrap(),
        b"deep"
    );
    assert!(!part.join("index.html").exists());
}

#[test]
fn s3_mirror_plan_apply_verify_restore_pull() {
    full_flow(Backend::S3);
}

#[test]
fn local_mirror_plan_apply_verify_restore_pull() {
    full_flow(Backend::Local);
}

/// Every name and byte in the mirror directory.
fn mirror_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .map(|(p, _, c)| (String::from_utf8_lossy(&p).into_owned(), c))
        .collect()
}

/// `age -d -i IDENTITY FILE` with the real age CLI; the plaintext (asserted to succeed).
fn age_d(identity: &Path, file: &Path) -> Vec<u8> {
    let out = try_age_d(identity, file);
    assert!(
        out.status.success(),
        "age -d {}: {}",
        file.display(),
        stderr(&out)
    );
    out.stdout
}

fn try_age_d(identity: &Path, file: &Path) -> std::process::Output {
    std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap()
}

fn object_file(dir: &Path, id: &str) -> PathBuf {
    dir.join("objects").join(&id[..2]).join(id)
}

/// `bash -c SCRIPT` with `pipefail` and positional arguments: the documented recovery
/// commands as a user types them. Returns stdout (asserted to succeed).
fn sh(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .arg("sh")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", stderr(&out));
    out.stdout
}

/// The regular files under `dir/sub`, sorted.
fn files_under(dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.join(sub)];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The mirror key, decrypted with the real age CLI into `mirror-key.txt` (README step 1).
fn mirror_key_by_hand(m: &Mirror, dir: &Path) -> PathBuf {
    let mk = m.home.tmp.path().join("mirror-key.txt");
    std::fs::write(&mk, age_d(&m.identity(), &dir.join("keys/mirror-key.age"))).unwrap();
    mk
}

/// README step 3: every pack through `age -d | tar -x`, into `out` (files named by id).
fn unpack_by_hand(dir: &Path, mk: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for pack in files_under(dir, "packs") {
        sh(
            r#"age -d -i "$1" "$2" | tar -x -C "$3""#,
            &[mk.as_os_str(), pack.as_os_str(), out.as_os_str()],
        );
    }
}

/// A snapshot entry's exact path (`path_hex` when the name is not UTF-8).
fn entry_path(e: &serde_json::Value) -> Vec<u8> {
    match e["path_hex"].as_str() {
        Some(h) => (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect(),
        None => e["path"].as_str().unwrap().as_bytes().to_vec(),
    }
}

#[test]
fn nothing_in_the_mirror_is_plaintext_and_age_and_tar_alone_recover_every_file() {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    let files = mirror_files(&dir);
    for (name, content) in &files {
        for needle in [
            &b"secret-plan"[..],
            b"top secret contents",
            b"index.html",
            b"nested",
        ] {
            assert!(
                !name.as_bytes().windows(needle.len()).any(|w| w == needle),
                "{name}"
            );
            assert!(
                !content.windows(needle.len()).any(|w| w == needle),
                "{name} leaks"
            );
        }
    }

    // By hand, as the README's "Recovery by hand" says: the mirror key, the snapshot, every
    // pack with `age -d | tar -x`, every single object with `age -d`.
    let mk = mirror_key_by_hand(&m, &dir);
    let snap = age_d(&mk, &dir.join("snapshots/0000000001.age"));
    let snap = json(snap.split(|b| *b == b'\n').next().unwrap());
    let objs = m.home.tmp.path().join("objs");
    unpack_by_hand(&dir, &mk, &objs);
    for o in files_under(&dir, "objects") {
        sh(
            r#"age -d -i "$1" -o "$3/$(basename "$2")" "$2""#,
            &[mk.as_os_str(), o.as_os_str(), objs.as_os_str()],
        );
    }
    // Identical content is stored once: 7 files, 6 distinct contents, the 5 small ones in
    // one pack, big.bin (9.5 MB) a single object.
    assert_eq!(files_under(&dir, "packs").len(), 1);
    assert_eq!(files_under(&dir, "objects").len(), 1);
    assert_eq!(files_under(&objs, "").len(), 6);
    // The snapshot maps every path to an id; each recovered file is byte-identical.
    let mut n = 0;
    for e in snap["entries"].as_array().unwrap() {
        if e["kind"] != "file" {
            continue;
        }
        let path = entry_path(e);
        let want = std::fs::read(m.source.join(std::ffi::OsStr::from_bytes(&path))).unwrap();
        let got = std::fs::read(objs.join(e["object"].as_str().unwrap())).unwrap();
        assert!(got == want, "{}", String::from_utf8_lossy(&path));
        n += 1;
    }
    assert_eq!(n, 7);

    // One file through the index, with the field names the README gives: line 1 is JSON,
    // then `mac <hex>`; the member's offset and length are its bytes in the tar stream.
    let index = files_under(&dir, "index");
    assert_eq!(index.len(), 1);
    let index_file = index[0].clone();
    let text = String::from_utf8(age_d(&mk, &index_file)).unwrap();
    let (line, mac) = text.split_once('\n').unwrap();
    assert!(mac.starts_with("mac "), "{mac}");
    let index = json(line.as_bytes());
    assert_eq!(index["format"], "offsync-mirror-index/1");
    assert_eq!(index["key_id"], snap["key_id"]);
    let id = m.object_id("secret-plan name.txt");
    let (pack, member) = index["packs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| {
            let mm = p["members"]
                .as_array()?
                .iter()
                .find(|mm| mm[0] == id.as_str())?;
            Some((p.clone(), mm.clone()))
        })
        .expect("the index lists the file's id");
    let name = pack["pack"].as_str().unwrap();
    let pack_file = dir.join("packs").join(&name[..2]).join(name);
    assert_eq!(
        pack["stored_size"].as_u64(),
        Some(std::fs::metadata(&pack_file).unwrap().len())
    );
    let one = sh(
        r#"age -d -i "$1" "$2" | tar -x -O "$3""#,
        &[mk.as_os_str(), pack_file.as_os_str(), id.as_ref()],
    );
    assert_eq!(one, b"top secret contents");
    if crate::util::which("jq").is_some() {
        // The README's jq lines: the path → id map, and the pack that holds one id.
        let snapshot_txt = m.home.tmp.path().join("snapshot.txt");
        std::fs::write(
            &snapshot_txt,
            age_d(&mk, &dir.join("snapshots/0000000001.age")),
        )
        .unwrap();
        let map = sh(
            r#"head -n 1 "$1" | jq -r '.entries[] | select(.kind=="file") | "\(.object) \(.path)"'"#,
            &[snapshot_txt.as_os_str()],
        );
        let line = format!("{id} secret-plan name.txt\n");
        assert!(String::from_utf8_lossy(&map).contains(&line), "{map:?}");
        let found = sh(
            r#"age -d -i "$1" "$2" | head -n 1 | jq -r --arg id "$3" '.packs[] | select(any(.members[]; .[0]==$id)) | .pack'"#,
            &[mk.as_os_str(), index_file.as_os_str(), id.as_ref()],
        );
        assert_eq!(String::from_utf8(found).unwrap().trim(), name);
    }
    let tar = age_d(&mk, &pack_file);
    let (off, len) = (
        member[1].as_u64().unwrap() as usize,
        member[2].as_u64().unwrap() as usize,
    );
    assert_eq!(&tar[off..off + len], b"top secret contents");
}

/// A `/1` mirror — made by hand from a `/2` one with the real `age` and `tar`: every pack
/// member becomes a single object encrypted to the mirror key, packs and index objects go,
/// the marker says `/1` — is read as it is, and `mirror upgrade` packs it in place: the plan
/// changes nothing, `--yes` converts, a rerun has nothing to do.
#[test]
fn mirror_upgrade_packs_a_v1_mirror_in_place() {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    let mk = mirror_key_by_hand(&m, &dir);
    let objs = m.home.tmp.path().join("members");
    unpack_by_hand(&dir, &mk, &objs);
    for member in files_under(&objs, "") {
        let id = member.file_name().unwrap().to_str().unwrap().to_string();
        let single = dir.join("objects").join(&id[..2]).join(&id);
        std::fs::create_dir_all(single.parent().unwrap()).unwrap();
        sh(
            r#"age -e -i "$1" -o "$2" "$3""#,
            &[mk.as_os_str(), single.as_os_str(), member.as_os_str()],
        );
    }
    std::fs::remove_dir_all(dir.join("packs")).unwrap();
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    std::fs::write(
        dir.join("offsync-mirror"),
        "offsync-mirror/1\nAn offsync encrypted mirror.\n",
    )
    .unwrap();
    let format = || stdout(&m.off(&["mirror", "snapshots", "m"]).output().unwrap());
    assert!(
        format().starts_with("format: offsync-mirror/1\n"),
        "{}",
        format()
    );
    m.off(&["verify", "--deep"]).assert().code(0);

    // The plan says what it would do and changes nothing.
    let before = mirror_files(&dir);
    let out = m.off(&["mirror", "upgrade", "m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("mark it offsync-mirror/2")
            && text.contains("pack 5 single object(s) below 1 MiB")
            && text.contains("--yes"),
        "{text}"
    );
    let plan = json(
        &m.off(&["mirror", "upgrade", "m", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        (
            &plan["format_before"],
            &plan["pack_objects"],
            &plan["upgraded"]
        ),
        (&1.into(), &5.into(), &false.into())
    );
    assert_eq!(mirror_files(&dir), before, "planning changed nothing");

    let out = m
        .off(&["mirror", "upgrade", "m", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("packed 5 object(s)")
            && stdout(&out).contains("deleted 5 single object(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        format().starts_with("format: offsync-mirror/2\n"),
        "{}",
        format()
    );
    assert_eq!(
        files_under(&dir, "objects").len(),
        1,
        "only big.bin is single"
    );
    assert_eq!(files_under(&dir, "packs").len(), 1);
    assert_eq!(files_under(&dir, "index").len(), 1);
    m.off(&["verify", "--deep"]).assert().code(0);
    let r = m.home.tmp.path().join("restored");
    m.off(&["mirror", "restore", "m", r.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(full_listing(&r), full_listing(&m.source));

    let out = m
        .off(&["mirror", "upgrade", "m", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));
}

#[test]
fn bad_input_names_the_problem_and_changes_nothing() {
    if !skip_unless_moto() {
        return;
    }
    let home = Home::new();
    let source = home.tmp.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    home.init(Some(&source));
    let url = format!("s3://{}/x", new_bucket());
    step_bad_mirror_adds_are_named_and_change_no_state(&home, &url);
    step_credentials_can_come_from_an_aws_profile_file(&home, &url);
    step_a_wrong_identity_says_no_matching_key_and_writes_nothing();
}

/// Missing credentials, a missing bucket, an unreachable endpoint, a bad URL and a bad
/// recipient: each named (usage errors exit 64 with one line), no secret printed, no state
/// file changed.
fn step_bad_mirror_adds_are_named_and_change_no_state(home: &Home, url: &str) {
    let before = listing(&home.home);
    // Missing credentials: caught before any request.
    let out = home
        .offsync(["mirror", "add", "m", url, "--endpoint", moto_endpoint()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        stderr(&out)
    );
    // A bucket that does not exist.
    let out = home
        .offsync([
            "mirror",
            "add",
            "m",
            "s3://no-such-bucket-here/x",
            "--endpoint",
            moto_endpoint(),
        ])
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    // An unreachable endpoint fails fast and says so.
    let dead = format!("http://127.0.0.1:{}", crate::util::free_port());
    let t = std::time::Instant::now();
    let out = home
        .offsync(["mirror", "add", "m", url, "--endpoint", &dead])
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    // Bad URL and bad recipient.
    for args in [
        vec!["mirror", "add", "m", "relative/dir"],
        vec!["mirror", "add", "m", "gs://x/y"],
        vec!["mirror", "add", "m", "/tmp/x", "--recipient", "age1notakey"],
    ] {
        let out = home.offsync(&args).envs(AWS_ENV).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    for line in stderr(&out).lines() {
        assert!(!line.contains("offsync-test-secret"));
    }
    assert_eq!(listing(&home.home), before, "no state file changed");
}

/// Credentials from an AWS profile file instead of the environment; never saved in config.
fn step_credentials_can_come_from_an_aws_profile_file(home: &Home, url: &str) {
    let creds = home.tmp.path().join("aws-credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = wrong\n\n[deploy]\naws_access_key_id = offsync-test\naws_secret_access_key = from-a-file\n",
    )
    .unwrap();
    let out = home
        .offsync(["mirror", "add", "m", url, "--endpoint", moto_endpoint()])
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "deploy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !std::fs::read_to_string(home.config())
            .unwrap()
            .contains("from-a-file")
    );
}

/// Wrong identity: a clear "no matching key", nothing written.
fn step_a_wrong_identity_says_no_matching_key_and_writes_nothing() {
    let Some(m) = Mirror::new(Backend::S3) else {
        return;
    };
    fill(&m.source);
    assert!(m.apply(&[]).status.success());
    // A stranger with an identity of its own (made by its own `mirror add`).
    let stranger = Home::new();
    stranger.init(None);
    let own = stranger.tmp.path().join("own-mirror");
    stranger
        .offsync(["mirror", "add", "own", own.to_str().unwrap()])
        .assert()
        .success();
    let id = stranger.home.join("age-identity.txt");
    let dest = stranger.tmp.path().join("dest");
    let out = m.pull_cmd(&stranger, &dest, &id).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no matching key"), "{}", stderr(&out));
    assert!(!dest.exists());
}

#[test]
fn tampering_is_detected_named_and_nothing_is_written() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    // The small files are members of one pack; big.bin is a single object.
    let only = |sub: &str| {
        let found: Vec<PathBuf> = listing(&dir.join(sub))
            .into_iter()
            .filter(|(_, _, c)| c != b"<dir>")
            .map(|(p, _, _)| dir.join(sub).join(String::from_utf8(p).unwrap()))
            .collect();
        assert_eq!(found.len(), 1, "{sub}: {found:?}");
        found[0].clone()
    };
    let pack = only("packs");
    let index = only("index");
    let big = object_file(&dir, &m.object_id("big.bin"));
    let pristine = std::fs::read(&pack).unwrap();

    // A missing pack: the default verify (listings + sizes, no download) names its files.
    std::fs::remove_file(&pack).unwrap();
    let out = m.off(&["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("dir/nested/deep.txt"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("missing"), "{}", stdout(&out));
    std::fs::write(&pack, &pristine).unwrap();

    // A changed byte in the pack keeps its size: the cheap verify passes, --deep finds and
    // names the files whose STREAM chunk fails authentication.
    let mut bytes = pristine.clone();
    let n = bytes.len();
    bytes[n - 40] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    m.off(&["verify"]).assert().code(0);
    let out = m.off(&["verify", "--deep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("secret-plan name.txt"),
        "{}",
        stdout(&out)
    );

    // Restore stops naming a file of that pack, which never appears at its final name.
    let dest = m.home.tmp.path().join("restore");
    let out = m
        .off(&["mirror", "restore", "m", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        [
            "secret-plan name.txt",
            "deep.txt",
            "index.html",
            "line\"",
            "byte\""
        ]
        .iter()
        .any(|p| stderr(&out).contains(p)),
        "{}",
        stderr(&out)
    );
    assert!(!dest.join("secret-plan name.txt").exists());
    assert!(!dest.join(".~tmp~").exists(), "no leftovers");

    // A truncated pack (torn write) is not taken for the indexed one.
    std::fs::write(&pack, &pristine[..n / 2]).unwrap();
    let out = m.off(&["verify", "--deep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&pack, &pristine).unwrap();
    m.off(&["verify", "--deep"]).assert().code(0);

    // A changed single object: --deep names its file.
    let saved = std::fs::read(&big).unwrap();
    let mut b = saved.clone();
    let k = b.len() - 5;
    b[k] ^= 0x40;
    std::fs::write(&big, &b).unwrap();
    let out = m.off(&["verify", "--deep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("big.bin"), "{}", stdout(&out));
    std::fs::write(&big, &saved).unwrap();

    // A forged or changed index object fails its authentication, named.
    let saved = std::fs::read(&index).unwrap();
    let mut b = saved.clone();
    let k = b.len() - 3;
    b[k] ^= 1;
    std::fs::write(&index, &b).unwrap();
    let out = m.off(&["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("index/"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    std::fs::write(&index, &saved).unwrap();
    m.off(&["verify", "--deep"]).assert().code(0);

    // A tampered snapshot: plan fails naming it, and apply writes no generation.
    let snap = dir.join("snapshots/0000000001.age");
    let mut s = std::fs::read(&snap).unwrap();
    let k = s.len() - 3;
    s[k] ^= 1;
    std::fs::write(&snap, &s).unwrap();
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("0000000001.age"), "{}", stderr(&out));
    std::fs::write(m.source.join("index.html"), b"changed").unwrap();
    assert_eq!(m.apply(&[]).status.code(), Some(1));
    assert!(!dir.join("snapshots/0000000002.age").exists());
}

/// Entries below `dir` that are not directories (files and symlinks: what a snapshot counts).
fn non_dirs(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let t = e.file_type().unwrap();
            if t.is_dir() { non_dirs(&e.path()) } else { 1 }
        })
        .sum()
}

#[test]
fn target_check_proves_a_mirror_usable_changes_nothing_and_names_what_is_wrong() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    let before = listing(&dir);
    let out = m.off(&["target", "check", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rows = json(&out.stdout);
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["name"], "m");
    assert_eq!(row["kind"], "mirror");
    assert_eq!(row["ok"], true);
    assert_eq!(row["generation"], 1);
    assert_eq!(row["files"], non_dirs(&m.source));
    let out = m.off(&["target", "check", "m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("ok    m  ") && stdout(&out).contains("generation 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listing(&dir), before, "check changed the mirror");

    // A missing pack fails the check, naming its files; the other rows still print.
    let obj = listing(&dir.join("packs"))
        .into_iter()
        .find(|(_, _, c)| c != b"<dir>")
        .map(|(p, _, _)| dir.join("packs").join(String::from_utf8(p).unwrap()))
        .unwrap();
    let saved = std::fs::read(&obj).unwrap();
    let saved_mode = std::fs::metadata(&obj).unwrap().permissions();
    std::fs::remove_file(&obj).unwrap();
    let out = m.off(&["target", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("FAIL  m  ") && stdout(&out).contains("dir/nested/deep.txt"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&obj, saved).unwrap();
    std::fs::set_permissions(&obj, saved_mode).unwrap();

    // A mirror this user cannot write to fails the write probe (root ignores modes).
    if !is_root() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = m.off(&["target", "check"]).output().unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(stdout(&out).starts_with("FAIL  m  "), "{}", stdout(&out));
        assert!(stdout(&out).contains("offsync-mirror"), "{}", stdout(&out));
    }
    assert_eq!(listing(&dir), before);

    // S3 without credentials: a failed row that says what to set, exit 1.
    let Some(s3) = Mirror::new(Backend::S3) else {
        return;
    };
    let out = s3.home.offsync(["target", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("FAIL  m  ") && stdout(&out).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        stdout(&out)
    );
    let out = s3.off(&["target", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("empty"), "{}", stdout(&out));
}

#[test]
fn a_mirror_that_goes_backwards_or_rewrites_history_is_refused() {
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    let gen1 = std::fs::read(dir.join("snapshots/0000000001.age")).unwrap();
    std::fs::write(m.source.join("index.html"), b"v2").unwrap();
    assert!(m.apply(&[]).status.success());
    let gen2 = std::fs::read(dir.join("snapshots/0000000002.age")).unwrap();

    // Rolled back to generation 1 (an attacker replays an old bucket state).
    std::fs::remove_file(dir.join("snapshots/0000000002.age")).unwrap();
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
    assert_eq!(m.apply(&[]).status.code(), Some(1));
    assert!(
        !dir.join("snapshots/0000000002.age").exists(),
        "nothing written"
    );

    // A different generation 2 (history rewritten): refused as well.
    std::fs::write(dir.join("snapshots/0000000002.age"), &gen1).unwrap();
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tampered") || stderr(&out).contains("rollback"),
        "{}",
        stderr(&out)
    );

    // A gap in the chain: another controller (same identity) writes generations 3 and 4,
    // then generation 3 disappears; this controller remembers 2 and cannot link 4 to it.
    std::fs::write(dir.join("snapshots/0000000002.age"), &gen2).unwrap();
    let b = Home::new();
    let b_src = b.tmp.path().join("src");
    std::fs::create_dir_all(&b_src).unwrap();
    b.init(Some(&b_src));
    std::fs::copy(m.identity(), b.home.join("age-identity.txt")).unwrap();
    b.offsync(["mirror", "add", "m", &m.url]).assert().success();
    // Each controller accepts the other's signed generations.
    b.offsync([
        "mirror",
        "writers",
        "add",
        "m",
        m.home.pub_key().to_str().unwrap(),
    ])
    .assert()
    .success();
    m.off(&[
        "mirror",
        "writers",
        "add",
        "m",
        b.pub_key().to_str().unwrap(),
    ])
    .assert()
    .success();
    for v in ["v3", "v4"] {
        std::fs::write(b_src.join("f"), v).unwrap();
        // b replaces a's whole tree: more than half deleted, allowed explicitly.
        b.offsync(["apply", "--yes", "--delete", "--max-delete", "100"])
            .assert()
            .success();
    }
    let gen3 = std::fs::read(dir.join("snapshots/0000000003.age")).unwrap();
    std::fs::remove_file(dir.join("snapshots/0000000003.age")).unwrap();
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken chain"), "{}", stderr(&out));
    std::fs::write(dir.join("snapshots/0000000003.age"), &gen3).unwrap();

    // Restored: fine again.
    m.off(&["plan"]).assert().success();

    // Wiped: refused, until the user deliberately re-creates the mirror at that URL.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let out = m.off(&["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an offsync mirror"),
        "{}",
        stderr(&out)
    );
    m.off(&["target", "remove", "m"]).assert().success();
    let out = m.off(&["mirror", "add", "m", &m.url]).output().unwrap();
    assert!(
        stdout(&out).contains("created mirror m"),
        "{}",
        stderr(&out)
    );
    assert!(m.apply(&[]).status.success());
}

fn concurrent_applies(backend: Backend) {
    let Some(a) = Mirror::new(backend) else {
        return;
    };
    for i in 0..300 {
        write_raw(
            &a.source,
            format!("a/{i}").as_bytes(),
            format!("A {i}").repeat(200).as_bytes(),
        );
    }
    // A second controller sharing the identity joins the same mirror with another source.
    let b_home = Home::new();
    let b_src = b_home.tmp.path().join("src");
    std::fs::create_dir_all(&b_src).unwrap();
    for i in 0..300 {
        write_raw(
            &b_src,
            format!("b/{i}").as_bytes(),
            format!("B {i}").repeat(200).as_bytes(),
        );
    }
    b_home.init(Some(&b_src));
    std::fs::copy(a.identity(), b_home.home.join("age-identity.txt")).unwrap();
    let mut add = vec!["mirror", "add", "m", a.url.as_str()];
    if let Some(e) = &a.endpoint {
        add.extend(["--endpoint", e.as_str()]);
    }
    let out = b_home.offsync(&add).envs(AWS_ENV).output().unwrap();
    assert!(
        stdout(&out).contains("joined existing mirror"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // Each controller accepts the other's signed generations.
    b_home
        .offsync([
            "mirror",
            "writers",
            "add",
            "m",
            a.home.pub_key().to_str().unwrap(),
        ])
        .assert()
        .success();
    a.off(&[
        "mirror",
        "writers",
        "add",
        "m",
        b_home.pub_key().to_str().unwrap(),
    ])
    .assert()
    .success();

    // Two real processes race. Whether both scan the empty mirror before either publishes
    // depends on the scheduler, so the assertions hold in both orders; in each, exactly one
    // apply wins and the loser changes nothing visible. Racing for generation 1, the loser
    // finds it taken when it publishes; one after the other, the second sees the first's
    // files as target-only and is refused before uploading anything. The exact race (both
    // prepared on one generation, then published at once) is proven in-process by
    // `mirror::commit::tests`.
    let spawn = |h: &Home| {
        h.offsync_std()
            .args(["apply", "--yes", "--target", "m"])
            .envs(AWS_ENV)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a.home), spawn(&b_home));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let wins = [&oa, &ob].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        wins,
        1,
        "A: {}{}\nB: {}{}",
        stdout(&oa),
        stderr(&oa),
        stdout(&ob),
        stderr(&ob)
    );
    let loser = if oa.status.success() { &ob } else { &oa };
    let raced = stdout(loser).contains("another apply wrote generation 1");
    eprintln!("raced for generation 1: {raced}");
    assert!(
        raced || stdout(loser).contains("would need deleting; nothing was changed"),
        "{}",
        stdout(loser)
    );
    let snaps = json(
        &a.off(&["mirror", "snapshots", "m", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // The loser's objects are unreferenced: prune lists them, and deletes them with --yes.
    // (Refused before uploading, it left none.)
    let prune = |yes: bool| {
        let mut args = vec![
            "mirror",
            "prune",
            "m",
            "--keep",
            "1",
            "--min-age",
            "0",
            "--json",
        ];
        if yes {
            args.push("--yes");
        }
        json(&a.off(&args).output().unwrap().stdout)
    };
    let orphans = if raced { 300 } else { 0 };
    assert_eq!(prune(false)["delete_objects"], orphans);
    assert_eq!(
        prune(false)["delete_objects"],
        orphans,
        "without --yes nothing is deleted"
    );
    assert_eq!(prune(true)["delete_objects"], orphans);
    assert_eq!(prune(false)["delete_objects"], 0);
    // The winner's generation is intact.
    let (winner_home, loser_home) = if oa.status.success() {
        (&a.home, &b_home)
    } else {
        (&b_home, &a.home)
    };
    winner_home
        .offsync(["verify", "--deep"])
        .envs(AWS_ENV)
        .assert()
        .code(0);
    // The loser plans again and applies on top.
    // Its tree replaces the winner's: a mass delete, allowed explicitly.
    let out = loser_home
        .offsync(["apply", "--yes", "--delete", "--max-delete", "1000"])
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn two_concurrent_applies_to_s3_exactly_one_wins_and_prune_cleans_up() {
    concurrent_applies(Backend::S3);
}

#[test]
fn two_concurrent_applies_to_a_directory_exactly_one_wins_and_prune_cleans_up() {
    concurrent_applies(Backend::Local);
}

/// Files below `dir`, counted while another process is writing there: entries that vanish
/// between `readdir` and `stat` (staging files being renamed) are skipped, never a panic.
pub(crate) fn walk_count(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_count(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn an_apply_killed_half_way_leaves_the_previous_generation_and_the_next_finishes() {
    let Some(m) = Mirror::new(Backend::Local) else {
        return;
    };
    write_raw(&m.source, b"first", b"generation one");
    assert!(m.apply(&[]).status.success());
    for i in 0..400 {
        write_raw(
            &m.source,
            format!("many/{i}").as_bytes(),
            &vec![i as u8; 300_000],
        );
    }
    let dir = m.dir.clone().unwrap();
    let mut child = crate::util::KillOnDrop(
        m.home
            .offsync_std()
            .args(["apply", "--yes", "--target", "m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // 120 MB of 300 kB files: about 8 packs of 16 MiB; kill once two are stored.
    while walk_count(&dir.join("packs")) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "apply never started uploading"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        !dir.join("snapshots/0000000002.age").exists(),
        "killed before the snapshot"
    );
    let snaps = json(
        &m.off(&["mirror", "snapshots", "m", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    m.off(&["verify", "--deep"]).assert().code(2);
    // The lock file of the killed apply does not block (the lock is an OS lock).
    let out = m.apply(&[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    m.off(&["verify", "--deep"]).assert().code(0);
}

#[test]
fn recipients_and_rekey() {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let dir = m.dir.clone().unwrap();
    // A second machine with its own age identity.
    let other = Home::new();
    let other_id = other.tmp.path().join("host.id");
    assert!(
        std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&other_id)
            .output()
            .unwrap()
            .status
            .success()
    );
    let recipient = String::from_utf8(
        std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&other_id)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let dest = other.tmp.path().join("d");
    assert!(
        !m.pull_cmd(&other, &dest, &other_id)
            .output()
            .unwrap()
            .status
            .success()
    );
    m.off(&["mirror", "recipients", "add", "m", &recipient])
        .assert()
        .success();
    let list = stdout(
        m.off(&["mirror", "recipients", "list", "m"])
            .assert()
            .success()
            .get_output(),
    );
    assert!(list.contains(&recipient));
    let out = m.pull_cmd(&other, &dest, &other_id).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The other machine keeps a copy of the mirror key (as anyone could).
    let stolen = other.tmp.path().join("stolen-key.txt");
    std::fs::write(&stolen, age_d(&other_id, &dir.join("keys/mirror-key.age"))).unwrap();

    // remove: the key file no longer opens for it…
    let out = m
        .off(&["mirror", "recipients", "remove", "m", &recipient])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("rekey"), "{}", stdout(&out));
    let out = m.pull_cmd(&other, &dest, &other_id).output().unwrap();
    assert!(stderr(&out).contains("no matching key"), "{}", stderr(&out));
    // …but the stolen key still opens every pack, index and object, until a rekey.
    let id = m.object_id("index.html");
    let stored = || {
        let mut f = files_under(&dir, "packs");
        f.extend(files_under(&dir, "index"));
        f.extend(files_under(&dir, "objects"));
        f
    };
    let opens_with_stolen = |f: &PathBuf| try_age_d(&stolen, f).status.success();
    let old_files = stored();
    assert_eq!(
        old_files.len(),
        3,
        "a pack, its index, big.bin: {old_files:?}"
    );
    assert!(old_files.iter().all(opens_with_stolen));
    // Refuse removing our own recipient.
    let own = std::fs::read_to_string(m.identity()).unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    m.off(&["mirror", "recipients", "remove", "m", &own])
        .assert()
        .code(64);

    m.off(&["mirror", "rekey", "m", "--yes"]).assert().success();
    let new_id = m.object_id("index.html");
    assert_ne!(new_id, id);
    assert!(
        old_files.iter().all(|f| !f.exists()),
        "old packs, index objects and objects deleted"
    );
    let new_files = stored();
    assert_eq!(new_files.len(), 3, "{new_files:?}");
    assert!(
        !new_files.iter().any(opens_with_stolen),
        "the old key opens nothing now"
    );
    // Everything still plans, verifies and restores; no rollback alarm after the rewrite.
    m.off(&["plan", "--detailed-exitcode"]).assert().code(0);
    m.off(&["verify", "--deep"]).assert().code(0);
    let r = m.home.tmp.path().join("after-rekey");
    m.off(&["mirror", "restore", "m", r.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(full_listing(&r), full_listing(&m.source));
}

/// `pull --delete` has the same mass-delete guard as apply: DEST-only paths beyond the limit
/// (default: more than half of DEST) are refused with the count and the flag, nothing changes;
/// `--max-delete N` allows exactly that many; the refusal is logged.
#[test]
fn pull_delete_is_bounded_by_the_mass_delete_guard() {
    if !skip_unless_age() {
        return;
    }
    let Some(m) = filled(Backend::Local) else {
        return;
    };
    let host = Home::new();
    let dest = host.tmp.path().join("dest");
    let id = m.identity();
    m.pull_cmd(&host, &dest, &id).assert().success();
    for i in 0..20 {
        std::fs::write(dest.join(format!("stray-{i}")), b"x").unwrap();
    }
    let before = listing(&dest);
    // Without --delete: refused like apply, with the same record.
    let out = m
        .pull_cmd(&host, &dest, &id)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("--delete"), "{}", stderr(&out));
    assert_eq!(listing(&dest), before, "a refused pull changes nothing");
    let last = |home: &Home| -> serde_json::Value {
        let log = std::fs::read_to_string(home.home.join("operations.log")).unwrap();
        serde_json::from_str(log.lines().last().unwrap()).unwrap()
    };
    let rec = last(&host);
    assert_eq!(rec["status"], "refused", "{rec}");
    assert_eq!(rec["error_kind"], "needs_delete", "{rec}");
    assert_eq!(rec["files_deleted_count"], 0, "{rec}");
    assert_eq!(rec["files_deleted"], serde_json::json!([]), "{rec}");
    // The same record shape as an apply's (the engine writes both).
    let apply_rec = last(&m.home);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| {
            k != "error" && k != "error_kind" && k != "paths_file" && !k.ends_with("_hex")
        });
        k.sort();
        k
    };
    assert_eq!(keys(&rec), keys(&apply_rec), "{rec}\n{apply_rec}");
    let out = m
        .pull_cmd(&host, &dest, &id)
        .arg("--delete")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(err.contains("--max-delete 20"), "{err}");
    assert!(stdout(&out).contains("warning"), "{}", stdout(&out));
    assert_eq!(listing(&dest), before, "a refused pull changes nothing");
    let log = std::fs::read_to_string(host.home.join("operations.log")).unwrap();
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains("\"status\":\"refused\""),
        "{log}"
    );
    m.pull_cmd(&host, &dest, &id)
        .args(["--delete", "--max-delete", "19"])
        .assert()
        .code(1);
    assert_eq!(listing(&dest), before);
    m.pull_cmd(&host, &dest, &id)
        .args(["--delete", "--max-delete", "20"])
        .assert()
        .success();
    assert_eq!(
        crate::util::snapshot(&dest),
        crate::util::snapshot(&m.source)
    );
}

/// A mirror apply and a `pull` of more than 100 paths log through the same engine: each
/// record lists the first 100 paths, counts them all and names a paths file under its own
/// `$OFFSYNC_HOME/log/` with every path.
#[test]
fn applies_and_pulls_of_more_than_a_hundred_paths_log_counts_and_a_paths_file() {
    use crate::util::{logged_paths, oplog};
    if !skip_unless_age() {
        return;
    }
    let Some(m) = Mirror::new(Backend::Local) else {
        return;
    };
    for i in 0..130 {
        write_raw(&m.source, format!("many/f{i:03}").as_bytes(), b"x");
    }
    let out = m.apply(&[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let host = Home::new();
    let dest = host.tmp.path().join("dest");
    m.pull_cmd(&host, &dest, &m.identity()).assert().success();
    for (home, what) in [(&m.home, "apply"), (&host, "pull")] {
        let rec = oplog(home)
            .pop()
            .unwrap_or_else(|| panic!("no {what} record"));
        assert_eq!(rec["status"], "ok", "{rec}");
        assert!(
            rec["operation"].as_str().unwrap().starts_with(what),
            "{rec}"
        );
        assert_eq!(rec["files_changed"].as_array().unwrap().len(), 100, "{rec}");
        assert!(rec["files_changed_count"].as_u64().unwrap() >= 130, "{rec}");
        let all = logged_paths(home, &rec, "files_changed");
        for i in 0..130 {
            assert!(all.contains(&format!("many/f{i:03}")), "{what}: f{i:03}");
        }
        let rel = rec["paths_file"].as_str().unwrap();
        assert_eq!(
            crate::util::mode(&home.home.join(rel)),
            0o600,
            "{what}: {rel}"
        );
    }
}

/// Stored bytes of every file under `dir` (0 when it does not exist).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            bytes_under(&e.path())
        } else {
            meta.len()
        }
    })
    .sum()
}

/// Half of the files deleted: `mirror prune` lists the pack to repack, repacks it with
/// `--yes` (the directory's packs shrink to about half), the mirror still verifies and
/// restores byte-identical, and a second prune has nothing left to do.
fn prune_repacks(backend: Backend) {
    let Some(m) = Mirror::new(backend) else {
        return;
    };
    for i in 0..40u32 {
        let content: Vec<u8> = (0..20_000u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 11) as u8)
            .collect();
        write_raw(&m.source, format!("f/{i:02}").as_bytes(), &content);
    }
    let out = m.apply(&[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for i in 0..20 {
        std::fs::remove_file(m.source.join(format!("f/{i:02}"))).unwrap();
    }
    let out = m.apply(&["--delete", "--max-delete", "100"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let packs_dir = m.dir.as_ref().map(|d| d.join("packs"));
    let before = packs_dir.as_deref().map(bytes_under);
    let prune = |yes: bool| {
        let mut args = vec!["mirror", "prune", "m", "--keep", "1", "--min-age", "0"];
        if yes {
            args.push("--yes");
        }
        let text = m.off(&args).output().unwrap();
        assert!(text.status.success(), "{}", stderr(&text));
        args.push("--json");
        (stdout(&text), json(&m.off(&args).output().unwrap().stdout))
    };
    let (text, plan) = prune(false);
    assert!(text.contains("  repack packs/"), "{text}");
    assert!(text.contains("run again with --yes"), "{text}");
    assert!(
        text.contains("after the repack 0.0 % (--max-unused 10 %)"),
        "{text}"
    );
    assert_eq!(plan["repack_packs"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["delete_objects"], 20, "{plan}");
    assert_eq!(plan["max_unused"], 10);
    assert_eq!(
        packs_dir.as_deref().map(bytes_under),
        before,
        "a plan changes nothing"
    );
    let (text, _) = prune(true);
    assert!(
        text.starts_with("deleted 1 generation(s) [1] and 20 unreferenced object(s)"),
        "{text}"
    );
    if let (Some(dir), Some(before)) = (&packs_dir, before) {
        let after = bytes_under(dir);
        assert!(after < before * 52 / 100, "{before} → {after}");
    }
    // The second run (its JSON half) found nothing left.
    let (_, again) = prune(false);
    assert_eq!(
        again["repack_packs"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    assert_eq!(again["delete_objects"], 0, "{again}");
    m.off(&["verify", "--deep"]).assert().code(0);
    let dest = m.home.tmp.path().join("restored");
    let out = m
        .off(&["mirror", "restore", "m", dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(full_listing(&dest), full_listing(&m.source));
}

#[test]
fn prune_after_deleting_half_of_the_files_repacks_a_directory_mirror() {
    prune_repacks(Backend::Local);
}

#[test]
fn prune_after_deleting_half_of_the_files_repacks_an_s3_mirror() {
    prune_repacks(Backend::S3);
}
