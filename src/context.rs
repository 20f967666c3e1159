//! Resolved settings: what commands receive instead of raw flags.
//!
//! Invariant: every path in a [`Context`] is absolute, so commands never depend on the
//! working directory after start-up.

use anyhow::{Context as _, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where offsync keeps its state and how it may talk to the user.
#[derive(Debug, Clone)]
pub struct Context {
    /// `$OFFSYNC_HOME`, `--home`, or `~/.offsync`.
    pub home: PathBuf,
    /// Both stdin and stderr are terminals: we may ask questions.
    pub interactive: bool,
}

impl Context {
    pub fn new(home: Option<PathBuf>) -> Result<Self> {
        let home = match home {
            Some(h) if !h.as_os_str().is_empty() => absolute(&expand_tilde(&h)?)?,
            _ => home_dir()?.join(".offsync"),
        };
        Ok(Context {
            home,
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.join("config.yaml")
    }
    pub fn key_path(&self) -> PathBuf {
        self.home.join("id_ed25519")
    }
    pub fn pub_key_path(&self) -> PathBuf {
        self.home.join("id_ed25519.pub")
    }
    pub fn known_hosts_path(&self) -> PathBuf {
        self.home.join("known_hosts")
    }
}

/// The user's home directory from `$HOME`.
pub fn home_dir() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => anyhow::bail!("$HOME is not set; set it or pass --home DIR"),
    }
}

/// Expand a leading `~/` (or a lone `~`) to `$HOME`.
pub fn expand_tilde(p: &Path) -> Result<PathBuf> {
    let s = p.as_os_str().as_encoded_bytes();
    if s == b"~" {
        return home_dir();
    }
    if let Ok(rest) = p.strip_prefix("~") {
        return Ok(home_dir()?.join(rest));
    }
    Ok(p.to_path_buf())
}

/// Make `p` absolute against the current directory, without touching the filesystem.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// The login name of this process: `$USER`, `$LOGNAME`, else the passwd entry for our uid.
pub fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    passwd_user().unwrap_or_else(|| "USER".to_string())
}

/// The login name in `/etc/passwd` for the uid of this process, ignoring `$USER`/`$LOGNAME`
/// (which `runuser` or `sudo` may leave stale). `None` for users only NSS knows.
pub fn passwd_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}
