//! What offsync needs from the system, how to tell whether it is there, and how to install it.
//!
//! A controller needs an ssh client (`ssh`; host keys are fetched by ssh itself) and `rsync`; a target needs `sshd`,
//! `rsync` and `rrsync`, plus whatever interpreter rrsync's shebang names (python3 since rsync
//! 3.2.4, perl before).
//!
//! Invariants:
//! - Detection never installs anything. The install command lines are values ([`Cmd`]) built
//!   by [`install_commands`] from one table ([`packages`]), so `install-deps` can show exactly
//!   what it will run before it runs it.
//! - Everything that looks at the machine (PATH, files, the uid) has a twin that takes the
//!   lookup as an argument, so tests never depend on what the test host has installed.
//! - [`find_rrsync`] returns rrsync's path as found, never with symlinks resolved:
//!   `/usr/bin/rrsync` is the name that survives package upgrades, and it ends up in
//!   authorized_keys. It is always absolute, because sshd would resolve a relative forced
//!   command against the user's home.
//! - An rrsync whose interpreter is missing counts as missing: the forced command would
//!   otherwise fail on every connection, with an opaque error seen only on the controller.

use anyhow::Result;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cli::Role;
use crate::input_err;
use crate::process::Cmd;

/// Package managers we know, in the order [`detect`] looks for them.
///
/// The distribution managers come before brew because Homebrew also runs on Linux, where the
/// system manager is the one that can install sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    AptGet,
    Dnf,
    Yum,
    Pacman,
    Zypper,
    Apk,
    Brew,
}

impl PackageManager {
    /// All managers, in detection order (dnf before yum: on Fedora/RHEL 8+ `yum` is an alias
    /// kept for old scripts).
    pub const ALL: [PackageManager; 7] = [
        PackageManager::AptGet,
        PackageManager::Dnf,
        PackageManager::Yum,
        PackageManager::Pacman,
        PackageManager::Zypper,
        PackageManager::Apk,
        PackageManager::Brew,
    ];

    /// The program name, as looked up on PATH and run.
    pub fn program(self) -> &'static str {
        match self {
            PackageManager::AptGet => "apt-get",
            PackageManager::Dnf => "dnf",
            PackageManager::Yum => "yum",
            PackageManager::Pacman => "pacman",
            PackageManager::Zypper => "zypper",
            PackageManager::Apk => "apk",
            PackageManager::Brew => "brew",
        }
    }
}

/// The first manager (in [`PackageManager::ALL`] order) whose program `exists` says is there.
pub fn detect_with(exists: impl Fn(&str) -> bool) -> Option<PackageManager> {
    PackageManager::ALL
        .into_iter()
        .find(|m| exists(m.program()))
}

/// The package manager on this machine's PATH.
pub fn detect() -> Option<PackageManager> {
    detect_with(on_path)
}

/// The packages that give `role` its tools with `pm`, without duplicates, in a stable order.
pub fn packages(pm: PackageManager, role: Role) -> Vec<&'static str> {
    use PackageManager::*;
    let controller: &[&str] = match pm {
        AptGet | Apk => &["openssh-client", "rsync"],
        Dnf | Yum | Zypper => &["openssh-clients", "rsync"],
        Pacman => &["openssh", "rsync"],
        // macOS ships OpenSSH; its rsync is either missing or the old openrsync/2.6.9.
        Brew => &["rsync"],
    };
    let target: &[&str] = match pm {
        // Debian/Ubuntu ship rrsync in `rsync` (/usr/bin/rrsync since 3.2.4), but python3 is
        // only "suggested", so a minimal install lacks the interpreter.
        AptGet => &["openssh-server", "rsync", "python3"],
        // Fedora/RHEL split rrsync into its own subpackage.
        Dnf | Yum => &["openssh-server", "rsync", "rsync-rrsync", "python3"],
        // Arch ships rrsync in `rsync`; its Python is called `python`; `openssh` has sshd.
        Pacman => &["openssh", "rsync", "python"],
        // openSUSE ships rrsync in `rsync`.
        Zypper => &["openssh-server", "rsync", "python3"],
        // Alpine splits rrsync into its own package.
        Apk => &["openssh-server", "rsync", "rrsync", "python3"],
        // sshd is part of macOS (Remote Login, see `notes`).
        Brew => &["rsync"],
    };
    let all: Vec<&'static str> = match role {
        Role::Controller => controller.to_vec(),
        Role::Target => target.to_vec(),
        Role::Both => controller.iter().chain(target).copied().collect(),
    };
    dedup_keep_order(all)
}

/// Whether commands must be prefixed to run as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// We are root: run commands as they are.
    Root,
    /// Not root, and `sudo` is on PATH: prefix with `sudo`.
    Sudo,
    /// Not root and no `sudo`: we cannot install; the user must run the commands as root.
    NoSudo,
}

impl Privilege {
    /// This process's situation.
    pub fn current() -> Privilege {
        if is_root() {
            Privilege::Root
        } else if on_path("sudo") {
            Privilege::Sudo
        } else {
            Privilege::NoSudo
        }
    }
}

/// The command lines that install `role`'s packages with `pm`, in order.
///
/// apt-get gets `apt-get update` first: on a fresh container or cloud image the package lists
/// are empty or stale, and `install` would fail with "Unable to locate package". Every install
/// command is non-interactive (`-y`, `--noconfirm`, …) so `--yes` never hangs on a question.
/// Fails when root is needed and cannot be had, and for brew as root (Homebrew refuses it).
pub fn install_commands(pm: PackageManager, role: Role, privilege: Privilege) -> Result<Vec<Cmd>> {
    let pkgs = packages(pm, role);
    let with_pkgs = |head: &[&'static str]| -> Vec<&'static str> { [head, &pkgs].concat() };
    let mut lines: Vec<Vec<&'static str>> = match pm {
        PackageManager::AptGet => vec![
            vec!["apt-get", "update"],
            with_pkgs(&["apt-get", "install", "-y"]),
        ],
        PackageManager::Dnf => vec![with_pkgs(&["dnf", "install", "-y"])],
        PackageManager::Yum => vec![with_pkgs(&["yum", "install", "-y"])],
        PackageManager::Pacman => vec![with_pkgs(&["pacman", "-S", "--needed", "--noconfirm"])],
        PackageManager::Zypper => vec![with_pkgs(&["zypper", "--non-interactive", "install"])],
        PackageManager::Apk => vec![with_pkgs(&["apk", "add"])],
        PackageManager::Brew => vec![with_pkgs(&["brew", "install"])],
    };
    if pm == PackageManager::Brew {
        // Homebrew installs into a prefix owned by the user and refuses to run as root.
        if privilege == Privilege::Root {
            anyhow::bail!(
                "Homebrew refuses to run as root; run `offsync install-deps` as your normal user"
            );
        }
    } else {
        match privilege {
            Privilege::Root => {}
            Privilege::Sudo => lines.iter_mut().for_each(|l| l.insert(0, "sudo")),
            Privilege::NoSudo => {
                let shown: Vec<String> = lines.iter().map(|l| to_cmd(l).display()).collect();
                anyhow::bail!(
                    "installing packages needs root, and sudo is not installed; as root, run: {}",
                    shown.join(" && ")
                );
            }
        }
    }
    Ok(lines.iter().map(|l| to_cmd(l)).collect())
}

fn to_cmd(line: &[&str]) -> Cmd {
    Cmd::new(line[0]).args(&line[1..])
}

/// Things the package manager cannot do that the user must, for `role` with `pm`.
pub fn notes(pm: PackageManager, role: Role) -> Vec<&'static str> {
    let target = matches!(role, Role::Target | Role::Both);
    match (pm, target) {
        (_, false) => Vec::new(),
        (PackageManager::Brew, true) => vec![
            "macOS: sshd is built in but off by default; enable Remote Login (System Settings > \
             General > Sharing > Remote Login, or `sudo systemsetup -setremotelogin on`)",
        ],
        (_, true) => vec![
            "make sure sshd is running and starts at boot (systemd: `systemctl enable --now \
             sshd`, named `ssh` on Debian/Ubuntu; Alpine: `rc-update add sshd && rc-service \
             sshd start`)",
        ],
    }
}

/// What `role` needs, for someone installing by hand ("for a target, an OpenSSH server …").
pub fn what_to_install(role: Role) -> String {
    const CONTROLLER: &str = "an OpenSSH client (ssh) and rsync";
    const TARGET: &str = "an OpenSSH server (sshd), rsync >= 3.2.4 with its rrsync script, and \
                          python3 (rrsync is a Python script)";
    match role {
        Role::Controller => format!("for a controller, {CONTROLLER}"),
        Role::Target => format!("for a target, {TARGET}"),
        Role::Both => format!("for a controller, {CONTROLLER}; for a target, {TARGET}"),
    }
}

/// The error for a machine without a known package manager: what to install by hand.
pub fn manual_instructions(role: Role) -> String {
    let known: Vec<&str> = PackageManager::ALL.iter().map(|m| m.program()).collect();
    format!(
        "no known package manager found (looked for {}); install by hand {}",
        known.join(", "),
        what_to_install(role)
    )
}

/// Whether this process runs as root (effective uid 0).
///
/// `unsafe_code` is denied, so no `geteuid()`: Linux tells us in `/proc/self/status`; elsewhere
/// (macOS has no /proc) we ask `id -u`. If both fail we say "not root", which at worst adds a
/// `sudo` that still works for root.
pub fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(euid) = effective_uid_from_status(&status)
    {
        return euid == 0;
    }
    Cmd::new("id")
        .arg("-u")
        .run()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

/// The effective uid from `/proc/PID/status` text (`Uid:` lists real, effective, saved, fs).
fn effective_uid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Controller tools missing from PATH (`offsync init` offers to install them).
pub fn missing_controller_tools() -> Vec<&'static str> {
    missing_controller_tools_with(on_path)
}

/// [`missing_controller_tools`] with the PATH lookup given.
pub fn missing_controller_tools_with(exists: impl Fn(&str) -> bool) -> Vec<&'static str> {
    ["ssh", "rsync"]
        .into_iter()
        .filter(|p| !exists(p))
        .collect()
}

/// Where sshd lives when it is not on a normal user's PATH (sbin usually isn't).
const SSHD_PATHS: &[&str] = &["/usr/sbin/sshd", "/sbin/sshd", "/usr/local/sbin/sshd"];

/// Target tools missing: `sshd`, `rsync`, `rrsync` (missing when [`find_rrsync`] fails, which
/// includes an rrsync whose interpreter is missing).
pub fn missing_target_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !on_path("sshd") && !SSHD_PATHS.iter().any(|p| Path::new(p).exists()) {
        missing.push("sshd");
    }
    if !on_path("rsync") {
        missing.push("rsync");
    }
    if find_rrsync(None).is_err() {
        missing.push("rrsync");
    }
    missing
}

/// Tools missing for `role`, without duplicates.
pub fn missing_tools(role: Role) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if matches!(role, Role::Controller | Role::Both) {
        missing.extend(missing_controller_tools());
    }
    if matches!(role, Role::Target | Role::Both) {
        missing.extend(missing_target_tools());
    }
    dedup_keep_order(missing)
}

/// Where distributions put rrsync, after `which rrsync`.
pub const RRSYNC_CANDIDATES: &[&str] = &[
    "/usr/bin/rrsync",
    "/usr/local/bin/rrsync",
    // Arch.
    "/usr/lib/rsync/rrsync",
    "/usr/share/rsync/scripts/rrsync",
    "/usr/libexec/rsync/rrsync",
    // Homebrew on Apple silicon, whose bin is not on a non-login shell's PATH.
    "/opt/homebrew/bin/rrsync",
];

/// Gzipped documentation copies (Debian/Ubuntu before rsync 3.2.4): present, but not runnable.
pub const RRSYNC_DOC_COPIES: &[&str] = &[
    "/usr/share/doc/rsync/scripts/rrsync.gz",
    "/usr/share/doc/rsync/support/rrsync.gz",
];

/// Find rrsync: `explicit` (from `--rrsync`; must be an executable file), else `which rrsync`,
/// else the first executable in [`RRSYNC_CANDIDATES`]. Its shebang's interpreter must exist.
pub fn find_rrsync(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = which::which("rrsync").ok().into_iter().collect();
    candidates.extend(RRSYNC_CANDIDATES.iter().map(PathBuf::from));
    let docs: Vec<PathBuf> = RRSYNC_DOC_COPIES.iter().map(PathBuf::from).collect();
    find_rrsync_in(explicit, &candidates, &docs, &|name| {
        which::which(name).ok()
    })
}

/// [`find_rrsync`] with the search list, the documentation copies and the PATH lookup (used
/// for `#!/usr/bin/env python3`) given, so tests can point them into a temporary directory.
pub fn find_rrsync_in(
    explicit: Option<&Path>,
    candidates: &[impl AsRef<Path>],
    doc_copies: &[impl AsRef<Path>],
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf> {
    let found = match explicit {
        Some(p) => check_explicit(p)?,
        None => match candidates.iter().find(|p| is_executable_file(p.as_ref())) {
            Some(p) => p.as_ref().to_path_buf(),
            None => {
                if let Some(doc) = doc_copies.iter().find(|p| p.as_ref().exists()) {
                    anyhow::bail!(
                        "rrsync not found: only a gzipped documentation copy exists ({}), from \
                         an rsync older than 3.2.4; run `offsync install-deps --role target` \
                         (or install a newer rsync), or pass --rrsync PATH",
                        doc.as_ref().display()
                    );
                }
                anyhow::bail!(
                    "rrsync not found; run `offsync install-deps --role target`, or pass \
                     --rrsync PATH"
                );
            }
        },
    };
    // Not `canonicalize`: keep symlinks (see the module docs); only make it absolute.
    let found = std::path::absolute(&found).unwrap_or(found);
    check_interpreter(&found, lookup)?;
    Ok(found)
}

/// `--rrsync PATH` must name an executable file; each failure says which.
fn check_explicit(p: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(p).map_err(|e| {
        input_err!(
            "--rrsync {}: {e}; pass the path of rrsync on this host",
            p.display()
        )
    })?;
    if !meta.is_file() {
        return Err(input_err!(
            "--rrsync {} is not a file; pass the path of the rrsync script itself",
            p.display()
        ));
    }
    if !is_executable(&meta) {
        return Err(input_err!(
            "--rrsync {} is not executable; `chmod +x` it or pass another path",
            p.display()
        ));
    }
    Ok(p.to_path_buf())
}

/// What a shebang asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interpreter {
    /// `#!/usr/bin/python3`: this exact file must be executable.
    Path(PathBuf),
    /// `#!/usr/bin/env python3`: this name must be on PATH.
    Env(String),
}

/// Parse the first line of a script. Checks any interpreter, not only Python: rrsync before
/// rsync 3.2.4 was a Perl script, and a missing perl breaks it just the same.
fn parse_shebang(first_line: &str) -> Option<Interpreter> {
    let rest = first_line.strip_prefix("#!")?;
    let mut words = rest.split_whitespace();
    let interp = words.next()?;
    if interp == "env" || interp.ends_with("/env") {
        // Skip env's options (`-S`, `-u NAME` is rare enough to ignore) and `VAR=value`.
        let name = words.find(|w| !w.starts_with('-') && !w.contains('='))?;
        Some(Interpreter::Env(name.to_string()))
    } else {
        Some(Interpreter::Path(PathBuf::from(interp)))
    }
}

/// The interpreter named by `path`'s shebang must exist.
fn check_interpreter(path: &Path, lookup: &dyn Fn(&str) -> Option<PathBuf>) -> Result<()> {
    // Linux reads at most 256 bytes of a shebang line (BINPRM_BUF_SIZE), so neither do we.
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]);
    let Some(interp) = head.lines().next().and_then(parse_shebang) else {
        return Ok(());
    };
    let (needed, present) = match interp {
        Interpreter::Env(name) => {
            let present = lookup(&name).is_some();
            (name, present)
        }
        Interpreter::Path(p) => (p.display().to_string(), is_executable_file(&p)),
    };
    if !present {
        anyhow::bail!(
            "rrsync at {} needs {needed}, which is missing; run `offsync install-deps --role \
             target`",
            path.display()
        );
    }
    Ok(())
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && is_executable(&m))
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

fn on_path(program: &str) -> bool {
    which(program).is_some()
}

/// Where `program` is on PATH (`which(1)`), if anywhere.
pub fn which(program: &str) -> Option<PathBuf> {
    which::which(program).ok()
}

fn dedup_keep_order(items: Vec<&'static str>) -> Vec<&'static str> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(*i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn shown(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(Cmd::display).collect()
    }

    #[test]
    fn detection_follows_the_documented_order() {
        assert_eq!(
            detect_with(|p| p == "yum" || p == "dnf"),
            Some(PackageManager::Dnf)
        );
        assert_eq!(
            detect_with(|p| p == "brew" || p == "apt-get"),
            Some(PackageManager::AptGet)
        );
        assert_eq!(detect_with(|p| p == "apk"), Some(PackageManager::Apk));
        assert_eq!(detect_with(|_| false), None);
    }

    #[test]
    fn apt_updates_first_and_sudo_prefixes_every_command() {
        let cmds = install_commands(PackageManager::AptGet, Role::Target, Privilege::Sudo).unwrap();
        assert_eq!(
            shown(&cmds),
            [
                "sudo apt-get update",
                "sudo apt-get install -y openssh-server rsync python3"
            ]
        );
        let cmds =
            install_commands(PackageManager::AptGet, Role::Controller, Privilege::Root).unwrap();
        assert_eq!(
            shown(&cmds),
            ["apt-get update", "apt-get install -y openssh-client rsync"]
        );
    }

    #[test]
    fn commands_per_manager_and_role() {
        let one = |pm, role| shown(&install_commands(pm, role, Privilege::Root).unwrap());
        assert_eq!(
            one(PackageManager::Dnf, Role::Target),
            ["dnf install -y openssh-server rsync rsync-rrsync python3"]
        );
        assert_eq!(
            one(PackageManager::Yum, Role::Controller),
            ["yum install -y openssh-clients rsync"]
        );
        assert_eq!(
            one(PackageManager::Pacman, Role::Both),
            ["pacman -S --needed --noconfirm openssh rsync python"]
        );
        assert_eq!(
            one(PackageManager::Zypper, Role::Target),
            ["zypper --non-interactive install openssh-server rsync python3"]
        );
        assert_eq!(
            one(PackageManager::Apk, Role::Both),
            ["apk add openssh-client rsync openssh-server rrsync python3"]
        );
    }

    #[test]
    fn brew_never_uses_sudo_and_refuses_root() {
        let cmds = install_commands(PackageManager::Brew, Role::Target, Privilege::NoSudo).unwrap();
        assert_eq!(shown(&cmds), ["brew install rsync"]);
        let cmds = install_commands(PackageManager::Brew, Role::Both, Privilege::Sudo).unwrap();
        assert_eq!(shown(&cmds), ["brew install rsync"]);
        assert!(install_commands(PackageManager::Brew, Role::Controller, Privilege::Root).is_err());
        assert!(notes(PackageManager::Brew, Role::Target)[0].contains("Remote Login"));
        assert!(notes(PackageManager::Brew, Role::Controller).is_empty());
    }

    #[test]
    fn without_sudo_the_error_lists_what_to_run_as_root() {
        let err = install_commands(PackageManager::AptGet, Role::Target, Privilege::NoSudo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sudo is not installed"), "{err}");
        assert!(
            err.contains("apt-get update && apt-get install -y openssh-server rsync python3"),
            "{err}"
        );
        assert!(!err.contains("sudo apt-get"), "{err}");
    }

    #[test]
    fn unknown_manager_lists_what_to_install_per_role() {
        let c = manual_instructions(Role::Controller);
        assert!(c.contains("apt-get, dnf") && c.contains("ssh"), "{c}");
        assert!(!c.contains("sshd"), "{c}");
        let t = manual_instructions(Role::Target);
        for word in ["sshd", "rsync", "rrsync", "python3"] {
            assert!(t.contains(word), "{word} in {t}");
        }
        let b = manual_instructions(Role::Both);
        assert!(
            b.contains("for a controller") && b.contains("for a target"),
            "{b}"
        );
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid_from_status(status), Some(0));
        assert_eq!(
            effective_uid_from_status("Uid:\t0\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(effective_uid_from_status("Name:\tx\n"), None);
    }

    #[test]
    fn missing_controller_tools_are_ssh_and_rsync() {
        assert_eq!(missing_controller_tools_with(|p| p == "ssh"), ["rsync"]);
        assert!(missing_controller_tools_with(|_| true).is_empty());
    }

    #[test]
    fn shebangs() {
        assert_eq!(
            parse_shebang("#!/usr/bin/python3"),
            Some(Interpreter::Path("/usr/bin/python3".into()))
        );
        assert_eq!(
            parse_shebang("#! /usr/bin/env -S python3 -u"),
            Some(Interpreter::Env("python3".into()))
        );
        assert_eq!(
            parse_shebang("#!/usr/bin/env LC_ALL=C perl"),
            Some(Interpreter::Env("perl".into()))
        );
        assert_eq!(parse_shebang("import sys"), None);
        assert_eq!(parse_shebang("#!"), None);
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// No gzipped documentation copies (a typed empty list).
    const NO_DOCS: [&str; 0] = [];

    fn no_lookup(_: &str) -> Option<PathBuf> {
        None
    }

    #[test]
    fn rrsync_first_executable_candidate_wins() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let noexec = script(d.path(), "a", "#!/bin/sh\n", 0o644);
        let good = script(d.path(), "b", "#!/bin/sh\n", 0o755);
        let later = script(d.path(), "c", "#!/bin/sh\n", 0o755);
        let found = find_rrsync_in(
            None,
            &[missing, noexec, good.clone(), later],
            &NO_DOCS,
            &no_lookup,
        )
        .unwrap();
        assert_eq!(found, good);
    }

    #[test]
    fn rrsync_symlinks_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let real = script(d.path(), "rrsync-3.4", "#!/bin/sh\n", 0o755);
        let link = d.path().join("rrsync");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            find_rrsync_in(None, &[&link], &NO_DOCS, &no_lookup).unwrap(),
            link
        );
    }

    #[test]
    fn rrsync_missing_mentions_install_deps_or_the_gzipped_copy() {
        let d = tempfile::tempdir().unwrap();
        let noexec = script(d.path(), "a", "#!/bin/sh\n", 0o644);
        let err = find_rrsync_in(None, &[&noexec], &NO_DOCS, &no_lookup).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("install-deps --role target"), "{msg}");
        assert!(msg.contains("--rrsync PATH"), "{msg}");

        let doc = script(d.path(), "rrsync.gz", "x", 0o644);
        let absent = d.path().join("other.gz");
        let err = find_rrsync_in(None, &[noexec], &[absent, doc.clone()], &no_lookup).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("gzipped documentation copy"), "{msg}");
        assert!(msg.contains(&doc.display().to_string()), "{msg}");
        assert!(msg.contains("install-deps --role target"), "{msg}");
    }

    #[test]
    fn rrsync_interpreter_must_exist() {
        let d = tempfile::tempdir().unwrap();
        let py = script(d.path(), "c", "#!/nonexistent/python3\nprint()\n", 0o755);
        let msg = find_rrsync_in(None, &[&py], &NO_DOCS, &no_lookup)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!(
                "rrsync at {} needs /nonexistent/python3, which is missing",
                py.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("install-deps --role target"), "{msg}");

        let envpy = script(d.path(), "e", "#!/usr/bin/env python3\n", 0o755);
        let msg = find_rrsync_in(None, &[&envpy], &NO_DOCS, &no_lookup)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("needs python3, which is missing"), "{msg}");
        let python_here =
            |name: &str| (name == "python3").then(|| PathBuf::from("/usr/bin/python3"));
        assert_eq!(
            find_rrsync_in(None, &[&envpy], &NO_DOCS, &python_here).unwrap(),
            envpy
        );

        // An interpreter given by path that exists and runs is fine.
        let interp = script(d.path(), "python3", "", 0o755);
        let direct = script(d.path(), "f", &format!("#!{}\n", interp.display()), 0o755);
        assert_eq!(
            find_rrsync_in(None, &[&direct], &NO_DOCS, &no_lookup).unwrap(),
            direct
        );
    }

    #[test]
    fn explicit_rrsync_errors_name_the_flag() {
        let d = tempfile::tempdir().unwrap();
        let good = script(d.path(), "good", "#!/bin/sh\n", 0o755);
        let noexec = script(d.path(), "noexec", "#!/bin/sh\n", 0o644);
        let is_input_err =
            |e: &anyhow::Error| e.downcast_ref::<crate::error::InputError>().is_some();

        // The explicit path wins over candidates.
        let other = script(d.path(), "other", "#!/bin/sh\n", 0o755);
        assert_eq!(
            find_rrsync_in(Some(&good), &[other], &NO_DOCS, &no_lookup).unwrap(),
            good
        );

        for (path, what) in [
            (noexec, "not executable"),
            (d.path().to_path_buf(), "not a file"),
            (d.path().join("missing"), "--rrsync"),
        ] {
            let err = find_rrsync_in(Some(&path), &[&good], &NO_DOCS, &no_lookup).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("--rrsync") && msg.contains(what), "{msg}");
            assert!(is_input_err(&err), "{msg}");
        }
    }
}
