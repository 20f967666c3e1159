//! Building ssh command lines and reading ssh's failures. Nothing here runs a program; the
//! argv goes to `process`.
//!
//! Invariants: every connection uses the dedicated key only (`IdentitiesOnly`, no agent),
//! never asks a question (`BatchMode`, no password or keyboard-interactive auth), checks the
//! host key strictly against offsync's own known_hosts (never the user's or the system's), and
//! gives up after a connect timeout. The user's `~/.ssh/config` still applies (ProxyJump,
//! HostName, User), except for the options above, which we pass on the command line because
//! ssh takes the first value it sees. A login is validated before it reaches argv, so it can
//! never become an option (`-oProxyCommand=…`).

use crate::error::InputError;
use crate::sanitize;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Seconds to wait for a TCP connection.
pub const CONNECT_TIMEOUT: u32 = 10;

/// A validated `user@host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    /// Without brackets, also for IPv6.
    pub host: String,
}

impl Login {
    /// Parse and validate `user@host`, `user@192.0.2.1` or `user@[2001:db8::1]`.
    pub fn parse(s: &str) -> Result<Login, InputError> {
        let shown = sanitize::for_terminal(s);
        let bad = |why: &str| InputError(format!("login {shown:?} {why}; expected user@host"));
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (user, host) = s.rsplit_once('@').ok_or_else(|| bad("has no `@`"))?;
        validate_user(user).map_err(&bad)?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad("has an unclosed `[`"))?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("has an invalid IPv6 address in brackets"))?;
            inner.to_string()
        } else {
            if host.contains(':') {
                return Err(bad(
                    "has a `:` in the host; put IPv6 addresses in brackets and the port in --port",
                ));
            }
            validate_host(host).map_err(&bad)?;
            host.to_string()
        };
        Ok(Login {
            user: user.to_string(),
            host,
        })
    }

    /// The host as rsync and ssh want it in `user@host:` (IPv6 in brackets).
    pub fn host_for_rsync(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// rsync's remote spec for the root of the restricted directory. Always relative (no
    /// leading `/`): the meaning of an absolute path under rrsync changed across rsync
    /// releases, while an empty path is the restricted directory itself in all of them.
    pub fn rsync_dest(&self) -> String {
        format!("{}@{}:", self.user, self.host_for_rsync())
    }
}

impl std::fmt::Display for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host_for_rsync())
    }
}

fn validate_user(u: &str) -> Result<(), &'static str> {
    if u.is_empty() {
        return Err("has an empty user");
    }
    if u.len() > 64 {
        return Err("has a user name longer than 64 characters");
    }
    if u.starts_with('-') {
        return Err("has a user starting with `-`");
    }
    if !u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("has characters other than letters, digits, `.`, `_`, `-` in the user");
    }
    Ok(())
}

fn validate_host(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("has an empty host");
    }
    if h.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if h.len() > 253 {
        return Err("has a host name longer than 253 characters");
    }
    for label in h.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label in the host name");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a host label starting or ending with `-`");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("has characters other than letters, digits, `-`, `.` in the host");
        }
    }
    Ok(())
}

/// How offsync connects: the dedicated key and its own known_hosts.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub connect_timeout: u32,
    /// A running ControlMaster's socket: every session rides on that one connection.
    pub control_path: Option<PathBuf>,
}

impl SshSettings {
    pub fn new(key: &Path, known_hosts: &Path) -> Self {
        SshSettings {
            key: key.to_path_buf(),
            known_hosts: known_hosts.to_path_buf(),
            connect_timeout: CONNECT_TIMEOUT,
            control_path: None,
        }
    }

    /// The `-o` options every connection uses (see module docs), with the control socket.
    pub fn options(&self) -> Vec<String> {
        let mut o = self.base_options();
        match &self.control_path {
            Some(p) => {
                o.push("-o".to_string());
                o.push(format!("ControlPath={}", ssh_config_value(p)));
                o.push("-o".to_string());
                o.push("ControlMaster=no".to_string());
            }
            None => {
                // Never ride on (or become) a master from the user's ~/.ssh/config: that
                // connection may use another key.
                o.push("-o".to_string());
                o.push("ControlPath=none".to_string());
            }
        }
        o
    }

    /// The options without any ControlMaster setting.
    pub fn base_options(&self) -> Vec<String> {
        let mut o = vec!["-i".to_string(), self.key.display().to_string()];
        for opt in [
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            "BatchMode=yes".to_string(),
            "PasswordAuthentication=no".to_string(),
            "KbdInteractiveAuthentication=no".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", ssh_config_value(&self.known_hosts)),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "UpdateHostKeys=no".to_string(),
            "CheckHostIP=no".to_string(),
            format!("ConnectTimeout={}", self.connect_timeout),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
            "ForwardAgent=no".to_string(),
            "ForwardX11=no".to_string(),
            "ClearAllForwardings=yes".to_string(),
            "PermitLocalCommand=no".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            o.push("-o".to_string());
            o.push(opt);
        }
        o
    }

    /// Full argv (after the program name) for `ssh … login [command…]`.
    pub fn ssh_argv(&self, login: &Login, port: Option<u16>, command: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = self.options().into_iter().map(Into::into).collect();
        a.push("-o".into());
        a.push("RequestTTY=no".into());
        push_destination(&mut a, login, port);
        a.extend(command.iter().map(OsString::from));
        a
    }

    /// The `-e` value for rsync: ssh with our options, quoted for rsync's own word splitter
    /// (which knows single and double quotes, but not backslashes).
    pub fn rsync_rsh(&self, port: Option<u16>) -> String {
        // ssh is rsync's child, not offsync's: started through offsync's exec wrapper, it
        // dies with rsync even when offsync is killed with SIGKILL (see `process`).
        let mut words = crate::process::rsh_prefix();
        words.push("ssh".to_string());
        words.extend(self.options());
        if let Some(p) = port {
            words.push("-p".to_string());
            words.push(p.to_string());
        }
        words
            .iter()
            .map(|w| rsh_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// argv (after `ssh`) that starts a ControlMaster on `socket` and keeps it open without a
/// session (`-N`): the forced command runs only for the sessions rsync opens through it.
pub fn master_argv(
    settings: &SshSettings,
    login: &Login,
    port: Option<u16>,
    socket: &Path,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = settings
        .base_options()
        .into_iter()
        .map(Into::into)
        .collect();
    for o in [
        "ControlMaster=yes".to_string(),
        format!("ControlPath={}", ssh_config_value(socket)),
        "ControlPersist=no".to_string(),
    ] {
        a.push("-o".into());
        a.push(o.into());
    }
    a.push("-N".into());
    push_destination(&mut a, login, port);
    a
}

/// `[-p PORT] -l USER -- HOST`: the end of every ssh argv. `--` keeps a host from ever being
/// read as an option.
fn push_destination(a: &mut Vec<OsString>, login: &Login, port: Option<u16>) {
    if let Some(p) = port {
        a.push("-p".into());
        a.push(p.to_string().into());
    }
    a.push("-l".into());
    a.push(login.user.clone().into());
    a.push("--".into());
    a.push(login.host.clone().into());
}

/// A path as the value of an `-o Option=value`: ssh splits values on whitespace (several
/// known_hosts files may be listed), so a path with spaces goes in double quotes, with `"` and
/// `\` escaped by a backslash as ssh's own argument splitter expects.
pub fn ssh_config_value(p: &Path) -> String {
    let s = p.display().to_string();
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b'\\' || b == b'\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// Quote a word for rsync's `-e` splitter: inside single quotes, a doubled `''` is one `'`.
pub fn rsh_quote(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "''"))
    }
}

/// argv (after `ssh`) that fetches a host's key into `scratch_known_hosts` without
/// authenticating: every auth method is off, so the connection ends right after key exchange
/// (with "Permission denied"), and ssh has written the key under the exact host pattern it will
/// look up later. `host_key_algorithms` asks for a particular key type.
pub fn fetch_host_key_argv(
    login: &Login,
    port: Option<u16>,
    scratch_known_hosts: &Path,
    host_key_algorithms: Option<&str>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut opt = |s: String| {
        a.push("-o".into());
        a.push(s.into());
    };
    opt("StrictHostKeyChecking=accept-new".into());
    opt(format!(
        "UserKnownHostsFile={}",
        ssh_config_value(scratch_known_hosts)
    ));
    opt("GlobalKnownHostsFile=/dev/null".into());
    opt("HashKnownHosts=no".into());
    opt("CheckHostIP=no".into());
    opt("UpdateHostKeys=no".into());
    opt("BatchMode=yes".into());
    opt("PubkeyAuthentication=no".into());
    opt("PasswordAuthentication=no".into());
    opt("KbdInteractiveAuthentication=no".into());
    opt("HostbasedAuthentication=no".into());
    opt("GSSAPIAuthentication=no".into());
    opt("IdentityAgent=none".into());
    opt(format!("ConnectTimeout={CONNECT_TIMEOUT}"));
    opt("RequestTTY=no".into());
    opt("ClearAllForwardings=yes".into());
    opt("LogLevel=ERROR".into());
    if let Some(alg) = host_key_algorithms {
        opt(format!("HostKeyAlgorithms={alg}"));
    }
    push_destination(&mut a, login, port);
    a.push("true".into());
    a
}

/// Why an ssh connection failed, read from ssh's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    HostKeyChanged,
    HostKeyUnknown,
    AuthDenied,
    ConnectionRefused,
    Timeout,
    UnknownHost,
    Unreachable,
}

impl SshFailure {
    /// Classify ssh's stderr; `None` when nothing ssh-specific is in it.
    pub fn from_stderr(stderr: &str) -> Option<SshFailure> {
        let s = stderr;
        if s.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || s.contains("has changed and you have requested strict checking")
        {
            Some(SshFailure::HostKeyChanged)
        } else if s.contains("Host key verification failed")
            || s.contains("No matching host key")
            || s.contains("host key is known for")
        {
            Some(SshFailure::HostKeyUnknown)
        } else if s.contains("Permission denied") || s.contains("Too many authentication failures")
        {
            Some(SshFailure::AuthDenied)
        } else if s.contains("Connection refused") {
            Some(SshFailure::ConnectionRefused)
        } else if s.contains("timed out") {
            Some(SshFailure::Timeout)
        } else if s.contains("Could not resolve hostname")
            || s.contains("Name or service not known")
        {
            Some(SshFailure::UnknownHost)
        } else if s.contains("No route to host")
            || s.contains("Network is unreachable")
            || s.contains("Connection closed by")
            || s.contains("Connection reset")
        {
            Some(SshFailure::Unreachable)
        } else {
            None
        }
    }

    /// The typed kind of this failure.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            SshFailure::HostKeyChanged => K::HostKeyChanged,
            SshFailure::HostKeyUnknown => K::HostKeyUnknown,
            SshFailure::AuthDenied => K::AuthFailed,
            SshFailure::ConnectionRefused
            | SshFailure::Timeout
            | SshFailure::UnknownHost
            | SshFailure::Unreachable => K::Unreachable,
        }
    }

    /// What it means and what to do, in one sentence.
    pub fn explain(&self) -> &'static str {
        match self {
            SshFailure::HostKeyChanged => {
                "the host key differs from the one pinned in offsync's known_hosts (a reinstalled host, or someone in the middle); check with the target's operator, then `offsync target remove` and `target add --fingerprint …` again"
            }
            SshFailure::HostKeyUnknown => {
                "no pinned host key matches; run `offsync target add … --fingerprint SHA256:…` to pin it"
            }
            SshFailure::AuthDenied => {
                "the target refused offsync's key; run `offsync link --key-file id_ed25519.pub` there for this user (see `offsync init` for the key)"
            }
            SshFailure::ConnectionRefused => {
                "nothing listens on that port; check the host, --port and that sshd runs"
            }
            SshFailure::Timeout => {
                "the connection timed out; check the host name, port and firewalls"
            }
            SshFailure::UnknownHost => "the host name does not resolve; check the spelling or DNS",
            SshFailure::Unreachable => "the host cannot be reached or closed the connection",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        let l = Login::parse("deploy@node02.example.com").unwrap();
        assert_eq!(
            (l.user.as_str(), l.host.as_str()),
            ("deploy", "node02.example.com")
        );
        assert_eq!(Login::parse("a@[::1]").unwrap().rsync_dest(), "a@[::1]:");
        assert_eq!(Login::parse("a@10.0.0.1").unwrap().host, "10.0.0.1");
        for bad in [
            "-oProxyCommand=x@h",
            "u@-oProxyCommand=x",
            "host-only",
            "u@h;rm -rf /",
            "u@h x",
            "u@$(id)",
            "u@`id`",
            "u@::1",
            "u@[nonsense]",
            "u@",
            "@h",
            "u@h\n",
            "u@h:22",
        ] {
            assert!(Login::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rsh_quoting() {
        assert_eq!(rsh_quote("/a/b"), "/a/b");
        assert_eq!(rsh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(rsh_quote("it's"), "'it''s'");
    }

    #[test]
    fn options_pin_known_hosts_and_key() {
        let s = SshSettings::new(Path::new("/h/id"), Path::new("/h/known hosts"));
        let rsh = s.rsync_rsh(Some(2222));
        // ssh runs through offsync's exec wrapper, so it dies with rsync.
        assert!(
            rsh.contains(" __exec-dying-with-parent ssh -i /h/id -o IdentitiesOnly=yes"),
            "{rsh}"
        );
        assert!(
            rsh.contains("'UserKnownHostsFile=\"/h/known hosts\"'"),
            "{rsh}"
        );
        assert!(rsh.ends_with("-p 2222"), "{rsh}");
        assert!(rsh.contains("StrictHostKeyChecking=yes"));
        assert!(rsh.contains("BatchMode=yes"));
    }

    #[test]
    fn classify_failures() {
        assert_eq!(
            SshFailure::from_stderr("root@h: Permission denied (publickey)."),
            Some(SshFailure::AuthDenied)
        );
        assert_eq!(
            SshFailure::from_stderr(
                "No ED25519 host key is known for [h]:2 and you have requested strict checking.\nHost key verification failed."
            ),
            Some(SshFailure::HostKeyUnknown)
        );
        assert_eq!(
            SshFailure::from_stderr(
                "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed."
            ),
            Some(SshFailure::HostKeyChanged)
        );
        assert_eq!(
            SshFailure::from_stderr("ssh: connect to host 127.0.0.1 port 1: Connection refused"),
            Some(SshFailure::ConnectionRefused)
        );
        assert_eq!(SshFailure::from_stderr("rsync error"), None);
    }
}
