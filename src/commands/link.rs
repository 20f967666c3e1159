//! `offsync link` / `offsync unlink`, run on a target.
//!
//! Invariants: every input (key, path, rrsync) is validated before any file is created or
//! changed; authorized_keys is rewritten atomically with every unrelated line byte-identical;
//! the same key linked twice leaves one line. The forced command is the only thing the key can
//! run: `rrsync -wo [-no-del] DIR`, under `restrict` and the explicit `no-*` options.

use anyhow::{Context as _, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use crate::authorized_keys::{self, Change};
use crate::cli::{KeyInput, LinkArgs, UnlinkArgs};
use crate::context::{self, Context};
use crate::error::InputError;
use crate::{deps, fsutil, input_err, keys, prompt, sanitize};

/// Longest public key input we read (RSA 16384 lines are about 2.8 KiB).
const MAX_KEY_INPUT: u64 = 16 * 1024;

pub fn run(ctx: &Context, args: LinkArgs) -> Result<ExitCode> {
    let key = read_key(ctx, &args.key)?;
    let dir = validate_dir(&args.path)?;
    let rrsync = deps::find_rrsync(args.rrsync.as_deref())?;
    let rrsync_str = rrsync
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| input_err!("--rrsync {} is not valid UTF-8", rrsync.display()))?;
    check_safe_text("--rrsync", &rrsync_str)?;
    let ak_path = authorized_keys_path(&args.key)?;
    let existing = fsutil::read_optional(&ak_path)?.unwrap_or_default();
    refuse_root(nix::unistd::geteuid().is_root(), args.allow_root, &dir)?;

    if ctx.interactive && !args.yes {
        eprintln!(
            "This lets key {} write into {} (and nothing else) through {}.",
            keys::fingerprint(&key),
            dir.display(),
            rrsync_str
        );
        if !prompt::confirm(&format!("Update {}?", ak_path.display()))? {
            anyhow::bail!("cancelled; nothing was changed");
        }
    }

    // Inputs are valid: now create the directory and resolve it for good.
    let created = fsutil::ensure_private_dir_keep(&dir)?;
    let canonical =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let canonical_str = canonical.to_str().map(str::to_string).ok_or_else(|| {
        input_err!(
            "--path resolves to {}, which is not UTF-8",
            canonical.display()
        )
    })?;
    check_safe_text("--path", &canonical_str)?;
    if canonical == Path::new("/") {
        return Err(input_err!(
            "--path resolves to `/`: the key could write anywhere; pass a dedicated directory"
        ));
    }

    let comment = format!(
        "{} linked {}",
        sanitize::for_terminal(key.comment()),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let line = authorized_keys::build_line(
        &key,
        &rrsync_str,
        &canonical_str,
        args.no_delete,
        comment.trim(),
    );
    let (content, change) = authorized_keys::upsert(&existing, &key, &line);
    if change != Change::Unchanged {
        if let Some(parent) = ak_path.parent() {
            fsutil::ensure_private_dir(parent)?;
        }
        fsutil::atomic_write(&ak_path, &content, fsutil::FILE_MODE)?;
    }

    let what = match change {
        Change::Added => "added a line to",
        Change::Replaced => "replaced this key's line in",
        _ => "already up to date:",
    };
    eprintln!("{what} {}", ak_path.display());
    if created {
        eprintln!("created {} (mode 0700)", canonical.display());
    }
    eprintln!(
        "the key {} may only run: {}",
        keys::fingerprint(&key),
        authorized_keys::forced_command(&rrsync_str, &canonical_str, args.no_delete)
    );
    print_controller_command(&args.sshd_config, &canonical_str, &rrsync_str)?;
    Ok(ExitCode::SUCCESS)
}

/// A key linked by root logs in as root: rrsync then writes as root, so files below DIR are
/// created root-owned, and a raw `rsync -p` through the same key (not offsync, which sends
/// `--chmod=ug-s`) could plant setuid-root programs. Refused unless `--allow-root`; checked
/// before any file is touched.
fn refuse_root(is_root: bool, allow_root: bool, dir: &Path) -> Result<()> {
    if !is_root {
        return Ok(());
    }
    let why = format!(
        "linking as root lets the key write any file below {} as root, including setuid files sent by raw rsync",
        dir.display()
    );
    if allow_root {
        eprintln!("warning: {why} (--allow-root given)");
        return Ok(());
    }
    Err(input_err!(
        "{why}; run `offsync link` as a dedicated user, or make {} a nosuid mount, or pass --allow-root",
        dir.display()
    ))
}

pub fn unlink(ctx: &Context, args: UnlinkArgs) -> Result<ExitCode> {
    let key = read_key(ctx, &args.key)?;
    let ak_path = authorized_keys_path(&args.key)?;
    let Some(existing) = fsutil::read_optional(&ak_path)? else {
        eprintln!("{} does not exist; nothing to remove", ak_path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let (content, change) = authorized_keys::remove(&existing, &key);
    match change {
        Change::Removed(n) => {
            fsutil::atomic_write(&ak_path, &content, fsutil::FILE_MODE)?;
            eprintln!(
                "removed {n} line(s) for {} from {}",
                keys::fingerprint(&key),
                ak_path.display()
            );
        }
        _ => eprintln!(
            "no line for {} in {}; nothing to remove",
            keys::fingerprint(&key),
            ak_path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The controller's public key from `--key`, `--key-file` (or `-`), or a prompt.
fn read_key(ctx: &Context, input: &KeyInput) -> Result<ssh_key::PublicKey> {
    let text = if let Some(k) = &input.key {
        k.clone()
    } else if let Some(f) = &input.key_file {
        let mut buf = Vec::new();
        if f == Path::new("-") {
            std::io::stdin()
                .take(MAX_KEY_INPUT + 1)
                .read_to_end(&mut buf)
                .context("cannot read the key from stdin")?;
        } else {
            std::fs::File::open(f)
                .map_err(|e| input_err!("--key-file {}: {e}", f.display()))?
                .take(MAX_KEY_INPUT + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", f.display()))?;
        }
        if buf.len() as u64 > MAX_KEY_INPUT {
            return Err(input_err!(
                "--key-file {} is larger than a public key; pass the id_ed25519.pub file",
                f.display()
            ));
        }
        String::from_utf8(buf)
            .map_err(|_| input_err!("--key-file {} is not text; pass the .pub file", f.display()))?
    } else if ctx.interactive {
        prompt::line("Paste the controller's public key (from `offsync init`)")?
    } else {
        return Err(input_err!(
            "no public key given; pass --key 'ssh-ed25519 AAAA…' or --key-file FILE (the .pub that `offsync init` printed)"
        ));
    };
    Ok(keys::parse_authorized_input(&text)?)
}

fn authorized_keys_path(input: &KeyInput) -> Result<PathBuf> {
    match &input.authorized_keys {
        Some(p) => context::absolute(&context::expand_tilde(p)?),
        None => Ok(context::home_dir()?.join(".ssh").join("authorized_keys")),
    }
}

/// Validate `--path` as typed: absolute after `~` expansion, no `..`, no control characters.
pub fn validate_dir(raw: &str) -> Result<PathBuf, InputError> {
    check_safe_text("--path", raw)?;
    let expanded = context::expand_tilde(Path::new(raw)).map_err(|e| InputError(e.to_string()))?;
    if expanded
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(InputError(format!(
            "--path {raw:?} contains `..`; pass the directory without it"
        )));
    }
    let abs = context::absolute(&expanded).map_err(|e| InputError(e.to_string()))?;
    if abs == Path::new("/") {
        return Err(InputError(
            "--path `/` would let the key write anywhere; pass a dedicated directory".into(),
        ));
    }
    Ok(abs)
}

/// Refuse text that cannot be expressed safely in an authorized_keys option.
fn check_safe_text(flag: &str, s: &str) -> Result<(), InputError> {
    if s.is_empty() {
        return Err(InputError(format!("{flag} is empty")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(InputError(format!(
            "{flag} {:?} contains control characters (newline, tab, …); choose a plain path",
            sanitize::for_terminal(s)
        )));
    }
    Ok(())
}

/// Print the `offsync target add` command for the controller, with this host's key
/// fingerprints so the controller can pin them without trusting the network.
fn print_controller_command(sshd_config: &Path, dir: &str, rrsync: &str) -> Result<()> {
    let SshdSettings { port, host_keys } = read_sshd_config(sshd_config);
    let user = context::current_user();
    let host = keys::hostname();
    let fingerprints: Vec<(String, String)> = host_keys
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let key = ssh_key::PublicKey::from_openssh(text.trim()).ok()?;
            Some((
                key.algorithm().as_str().to_string(),
                keys::fingerprint(&key),
            ))
        })
        .collect();
    let mut cmd = format!(
        "offsync target add {user}@{host} --path {}",
        crate::process::shell_quote(dir)
    );
    if port != 22 {
        cmd.push_str(&format!(" --port {port}"));
    }
    if rrsync != "/usr/bin/rrsync" {
        cmd.push_str(&format!(
            " --rrsync {}",
            crate::process::shell_quote(rrsync)
        ));
    }
    // Prefer ed25519: it is what OpenSSH clients negotiate first.
    let preferred = fingerprints
        .iter()
        .find(|(alg, _)| alg == "ssh-ed25519")
        .or_else(|| fingerprints.first());
    if let Some((_, fp)) = preferred {
        cmd.push_str(&format!(" --fingerprint {fp}"));
    }
    eprintln!("on the controller, run:");
    crate::outln!("{cmd}")?;
    if fingerprints.is_empty() {
        eprintln!(
            "(no sshd host key readable from {}; add --fingerprint from `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)",
            sshd_config.display()
        );
    } else {
        for (alg, fp) in &fingerprints {
            eprintln!("host key {alg}: {fp}");
        }
    }
    Ok(())
}

/// What `link` needs from the target's sshd: the first port it listens on and its public host
/// key files (defaults when absent).
#[derive(Debug, PartialEq, Eq)]
struct SshdSettings {
    port: u16,
    host_keys: Vec<PathBuf>,
}

/// The effective sshd settings: `sshd -T -f FILE` when sshd can print them (usually as root,
/// since it loads the host keys), else [`parse_sshd_config`] on the files. `sshd -T` is the only
/// way to get `Match` blocks and compiled-in defaults right, so it goes first.
fn read_sshd_config(path: &Path) -> SshdSettings {
    let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("sshd"));
    let effective = crate::process::Cmd::new(sshd)
        .arg("-T")
        .arg("-f")
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if let Some(text) = effective
        && let Some(s) = settings_from_lines(&text)
    {
        return s;
    }
    let base = path.parent().unwrap_or(Path::new("/etc/ssh"));
    let lines = parse_sshd_config(path, base, &|p| std::fs::read_to_string(p).ok());
    settings_from_pairs(&lines)
}

/// `sshd -T` prints one `keyword value` per line, lower-case; `None` when it printed no port.
fn settings_from_lines(text: &str) -> Option<SshdSettings> {
    let pairs: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            Some((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    pairs
        .iter()
        .any(|(k, _)| k == "port")
        .then(|| settings_from_pairs(&pairs))
}

/// Port (first value wins, as in sshd) and host keys (every `HostKey`) from keyword/value pairs.
fn settings_from_pairs(pairs: &[(String, String)]) -> SshdSettings {
    let port = pairs
        .iter()
        .find(|(k, _)| k == "port")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(22);
    let mut host_keys: Vec<PathBuf> = pairs
        .iter()
        .filter(|(k, _)| k == "hostkey")
        .map(|(_, v)| PathBuf::from(format!("{v}.pub")))
        .collect();
    if host_keys.is_empty() {
        for alg in ["ed25519", "ecdsa", "rsa"] {
            host_keys.push(PathBuf::from(format!("/etc/ssh/ssh_host_{alg}_key.pub")));
        }
    }
    SshdSettings { port, host_keys }
}

/// The keyword/value pairs of an sshd_config in the order sshd reads them: keywords
/// lower-cased, comments dropped, `Include` expanded in place (relative patterns against
/// `base`, the config's directory — `/etc/ssh` for the real one; `*` and `?` in the last
/// component, matches in lexical order, as sshd's glob). A `Match` block is conditional, so
/// everything after it in the same file is skipped; `sshd -T` is the way to see through it.
fn parse_sshd_config(
    path: &Path,
    base: &Path,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    include_file(path, base, read, 0, &mut out);
    out
}

fn include_file(
    path: &Path,
    base: &Path,
    read: &dyn Fn(&Path) -> Option<String>,
    depth: u32,
    out: &mut Vec<(String, String)>,
) {
    // sshd refuses deeper nesting too; this also stops an Include loop.
    if depth > 16 {
        return;
    }
    let Some(text) = read(path) else { return };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once(|c: char| c.is_whitespace() || c == '=') else {
            continue;
        };
        let k = k.to_ascii_lowercase();
        let v = v
            .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
            .trim();
        match k.as_str() {
            "match" => break,
            "include" => {
                for pattern in v.split_whitespace() {
                    let full = if pattern.starts_with('/') {
                        PathBuf::from(pattern)
                    } else {
                        base.join(pattern)
                    };
                    for f in glob_last_component(&full) {
                        include_file(&f, base, read, depth + 1, out);
                    }
                }
            }
            _ => out.push((k, v.trim_matches('"').to_string())),
        }
    }
}

/// Files matching `pattern`, whose wildcards may sit only in the last component.
fn glob_last_component(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// `*` and `?` matching, as glob(3) does within one component (no leading-dot matches).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_validation() {
        assert!(validate_dir("/srv/app").is_ok());
        assert!(validate_dir("/srv/my app/$x").is_ok());
        assert!(validate_dir("/srv/../etc").is_err());
        assert!(validate_dir("/srv/a\nb").is_err());
        assert!(validate_dir("/").is_err());
        assert!(validate_dir("").is_err());
    }

    #[test]
    fn sshd_config_include_first_wins_comments_case() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sshd_config.d")).unwrap();
        std::fs::write(
            d.join("sshd_config.d/10-port.conf"),
            "# set by ops\nPORT 2222\n",
        )
        .unwrap();
        std::fs::write(d.join("sshd_config.d/20-late.conf"), "Port 3333\n").unwrap();
        std::fs::write(d.join("sshd_config.d/.hidden.conf"), "Port 4444\n").unwrap();
        std::fs::write(
            d.join("sshd_config"),
            "# Port 1111\nInclude sshd_config.d/*.conf\nPort 5555\nHostKey=/k/ed\nMatch User x\nHostKey /k/never\n",
        )
        .unwrap();
        let pairs = parse_sshd_config(&d.join("sshd_config"), d, &|p| {
            std::fs::read_to_string(p).ok()
        });
        let s = settings_from_pairs(&pairs);
        assert_eq!(s.port, 2222);
        assert_eq!(s.host_keys, vec![PathBuf::from("/k/ed.pub")]);
        assert_eq!(
            pairs.iter().filter(|(k, _)| k == "port").count(),
            3,
            "{pairs:?}"
        );
    }

    #[test]
    fn sshd_config_defaults_and_loops() {
        // A file that includes itself ends (depth limit); no Port means 22.
        let read = |_: &Path| Some("Include /self\n".to_string());
        let s = settings_from_pairs(&parse_sshd_config(
            Path::new("/self"),
            Path::new("/"),
            &read,
        ));
        assert_eq!(s.port, 22);
        assert!(s.host_keys[0].ends_with("ssh_host_ed25519_key.pub"));
        assert_eq!(
            settings_from_lines("port 2200\nport 2201\nhostkey /h/k\n"),
            Some(SshdSettings {
                port: 2200,
                host_keys: vec![PathBuf::from("/h/k.pub")]
            })
        );
        assert_eq!(settings_from_lines("garbage"), None);
        assert!(wildcard_match("*.conf", "a.conf") && !wildcard_match("*.conf", "a.confx"));
    }
}
