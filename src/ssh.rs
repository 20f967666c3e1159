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
//!
//! A login without `@` is a host alias: no `-l` is passed (nor `-p` unless the target has a
//! port), so `User`, `Port` and `HostName` come from `~/.ssh/config` on every run and follow
//! later edits of that file. `OFFSYNC_SSH_CONFIG=FILE` makes every ssh read FILE instead
//! (`-F`), for tests and for controllers that keep offsync's hosts apart.

use crate::error::InputError;
use crate::sanitize;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Seconds to wait for a TCP connection.
pub const CONNECT_TIMEOUT: u32 = 10;

/// A validated `user@host`, or a host alias (`user: None`) that ssh resolves from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: Option<String>,
    /// Without brackets, also for IPv6.
    pub host: String,
}

impl Login {
    /// Parse and validate `user@host`, `user@192.0.2.1`, `user@[2001:db8::1]`, or a host
    /// alias from `~/.ssh/config` (`web1`: no `@`).
    pub fn parse(s: &str) -> Result<Login, InputError> {
        let shown = sanitize::for_terminal(s);
        let bad = |why: &str| {
            InputError(format!(
                "login {shown:?} {why}; expected user@host or a host alias from ~/.ssh/config"
            ))
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let Some((user, host)) = s.rsplit_once('@') else {
            if s.contains(['[', ']', ':']) {
                return Err(bad(
                    "is neither user@host nor a host alias (an alias has no `[`, `]` or `:`)",
                ));
            }
            validate_host(s).map_err(&bad)?;
            return Ok(Login {
                user: None,
                host: s.to_string(),
            });
        };
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
            user: Some(user.to_string()),
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
        format!("{self}:")
    }
}

impl std::fmt::Display for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user {
            Some(u) => write!(f, "{u}@{}", self.host_for_rsync()),
            None => f.write_str(&self.host),
        }
    }
}

/// `-F FILE` when `OFFSYNC_SSH_CONFIG` names one (see the module docs).
pub fn config_file_args() -> Vec<String> {
    match std::env::var_os("OFFSYNC_SSH_CONFIG") {
        Some(f) if !f.is_empty() => vec!["-F".to_string(), f.to_string_lossy().into_owned()],
        _ => Vec::new(),
    }
}

/// argv (after `ssh`) of `ssh -G`: prints the configuration ssh would use for `login`, with
/// no network access.
pub fn resolve_argv(login: &Login, port: Option<u16>) -> Vec<OsString> {
    let mut a: Vec<OsString> = config_file_args().into_iter().map(Into::into).collect();
    a.push("-G".into());
    push_destination(&mut a, login, port);
    a
}

/// `(user, hostname, port)` from `ssh -G` output.
pub fn parse_resolved(text: &str) -> (Option<String>, Option<String>, Option<u16>) {
    let mut r = (None, None, None);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("user", v)) if r.0.is_none() => r.0 = Some(v.trim().to_string()),
            Some(("hostname", v)) if r.1.is_none() => r.1 = Some(v.trim().to_string()),
            Some(("port", v)) if r.2.is_none() => r.2 = v.trim().parse().ok(),
            _ => {}
        }
    }
    r
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
    /// The target's `ssh_options:` as `Key=Value`, validated against [`SSH_OPTIONS_ALLOWED`].
    pub extra: Vec<String>,
}

/// The `ssh_options:` a target may set: connection tuning and routing only. Everything that
/// decides which key is used, which host key is trusted, what is forwarded or what runs
/// locally stays forced (see the module docs), so it is not here. `ProxyCommand` is left out
/// too (it runs a local shell command; `ProxyJump` covers the common case and `~/.ssh/config`
/// still applies for the rest).
pub const SSH_OPTIONS_ALLOWED: &[&str] = &[
    "AddressFamily",
    "BindAddress",
    "BindInterface",
    "Ciphers",
    "Compression",
    "ConnectionAttempts",
    "ConnectTimeout",
    "IPQoS",
    "KexAlgorithms",
    "MACs",
    "ProxyJump",
    "RekeyLimit",
    "ServerAliveCountMax",
    "ServerAliveInterval",
    "TCPKeepAlive",
];

/// A target's `ssh_options:` as `Key=Value` words (entries that fail [`ssh_option`] are
/// dropped; `Config::load` refused them already).
pub fn option_words(options: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    options
        .iter()
        .filter_map(|(k, v)| ssh_option(k, v).ok())
        .collect()
}

/// Validate one `ssh_options:` entry and return it as ssh's `Key=Value` (the key spelled as in
/// [`SSH_OPTIONS_ALLOWED`]). The value is one word of safe characters, so it can neither add an
/// option nor split into several words in ssh's or rsync's `-e` parser.
pub fn ssh_option(key: &str, value: &str) -> Result<String, String> {
    let Some(canonical) = SSH_OPTIONS_ALLOWED
        .iter()
        .find(|k| k.eq_ignore_ascii_case(key))
    else {
        return Err(format!(
            "ssh_options: {:?} is not allowed (offsync forces the security options); allowed: {}",
            sanitize::for_terminal(key),
            SSH_OPTIONS_ALLOWED.join(", ")
        ));
    };
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+:,./_-[]".contains(&b));
    if !ok {
        return Err(format!(
            "ssh_options: {canonical}: value {:?} must be one word of letters, digits and @%+:,./_-[]",
            sanitize::for_terminal(value)
        ));
    }
    Ok(format!("{canonical}={value}"))
}

impl SshSettings {
    pub fn new(key: &Path, known_hosts: &Path) -> Self {
        SshSettings {
            key: key.to_path_buf(),
            known_hosts: known_hosts.to_path_buf(),
            connect_timeout: CONNECT_TIMEOUT,
            control_path: None,
            extra: Vec::new(),
        }
    }

    /// These settings with a target's `ssh_options:` (validated when the config was loaded).
    pub fn with_options(mut self, options: &std::collections::BTreeMap<String, String>) -> Self {
        self.extra = option_words(options);
        self
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
        let mut o = config_file_args();
        o.extend(["-i".to_string(), self.key.display().to_string()]);
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
            "ForwardAgent=no".to_string(),
            "ForwardX11=no".to_string(),
            "ClearAllForwardings=yes".to_string(),
            "PermitLocalCommand=no".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            o.push("-o".to_string());
            o.push(opt);
        }
        // The target's own tuning goes before offsync's defaults for the same keys: ssh keeps
        // the first value, so `ssh_options: {ConnectTimeout: 30}` wins over the default 10.
        for opt in self.extra.iter().cloned().chain([
            format!("ConnectTimeout={}", self.connect_timeout),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
        ]) {
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

/// `[-p PORT] [-l USER] -- HOST`: the end of every ssh argv (no `-l` for a host alias, so its
/// `User` applies). `--` keeps a host from ever being read as an option.
fn push_destination(a: &mut Vec<OsString>, login: &Login, port: Option<u16>) {
    if let Some(p) = port {
        a.push("-p".into());
        a.push(p.to_string().into());
    }
    if let Some(u) = &login.user {
        a.push("-l".into());
        a.push(u.clone().into());
    }
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
    extra: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = config_file_args().into_iter().map(Into::into).collect();
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
    // The target's `ssh_options:` (ProxyJump, timeouts), before the defaults they override.
    for o in extra {
        opt(o.clone());
    }
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

/// The fingerprint in ssh's "REMOTE HOST IDENTIFICATION HAS CHANGED" warning ("The
/// fingerprint for the ED25519 key sent by the remote host is\nSHA256:…."). Only a string that
/// parses as a fingerprint comes back, so nothing else from the network reaches the terminal.
fn offered_fingerprint(stderr: &str) -> Option<String> {
    let at = stderr.find("sent by the remote host is")?;
    stderr[at..]
        .split(|c: char| c.is_whitespace())
        .find(|w| w.starts_with("SHA256:"))
        .and_then(|w| crate::keys::parse_fingerprint(w.trim_end_matches('.')).ok())
}

/// Why an ssh connection failed, read from ssh's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    /// With the fingerprint the host offers now, as ssh printed it (validated, so safe to show).
    HostKeyChanged {
        offered: Option<String>,
    },
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
            Some(SshFailure::HostKeyChanged {
                offered: offered_fingerprint(s),
            })
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
            SshFailure::HostKeyChanged { .. } => K::HostKeyChanged,
            SshFailure::HostKeyUnknown => K::HostKeyUnknown,
            SshFailure::AuthDenied => K::AuthFailed,
            SshFailure::ConnectionRefused
            | SshFailure::Timeout
            | SshFailure::UnknownHost
            | SshFailure::Unreachable => K::Unreachable,
        }
    }

    /// What it means and what to do, in one sentence.
    pub fn explain(&self) -> String {
        self.explain_for("NAME")
    }

    /// [`Self::explain`] for the target called `name` (named in the fix it suggests).
    pub fn explain_for(&self, name: &str) -> String {
        let text = match self {
            SshFailure::HostKeyChanged { offered } => {
                return format!(
                    "the host key differs from the one pinned in offsync's known_hosts (a reinstalled host, or someone in the middle); the host now offers {}; check with the target's operator (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there), then run `offsync target repin {name} --fingerprint {}`",
                    offered.as_deref().unwrap_or("a key ssh did not name"),
                    offered.as_deref().unwrap_or("SHA256:…"),
                );
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
        };
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        let l = Login::parse("deploy@node02.example.com").unwrap();
        assert_eq!(
            (l.user.as_deref().unwrap(), l.host.as_str()),
            ("deploy", "node02.example.com")
        );
        assert_eq!(Login::parse("a@[::1]").unwrap().rsync_dest(), "a@[::1]:");
        assert_eq!(Login::parse("a@10.0.0.1").unwrap().host, "10.0.0.1");
        let alias = Login::parse("web1").unwrap();
        assert_eq!(
            (alias.user.as_deref(), alias.to_string()),
            (None, "web1".into())
        );
        assert_eq!(alias.rsync_dest(), "web1:");
        assert!(
            !SshSettings::new(Path::new("/k"), Path::new("/kh"))
                .ssh_argv(&alias, None, &[])
                .contains(&OsString::from("-l"))
        );
        assert_eq!(
            parse_resolved("user deploy\nhostname 10.0.0.5\nport 2222\nuser x\n"),
            (Some("deploy".into()), Some("10.0.0.5".into()), Some(2222))
        );
        for bad in [
            "-oProxyCommand=x@h",
            "u@-oProxyCommand=x",
            "-oProxyCommand=x",
            "h:22",
            "[::1]",
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
    fn ssh_options_allow_list() {
        assert_eq!(
            ssh_option("connecttimeout", "30").unwrap(),
            "ConnectTimeout=30"
        );
        assert_eq!(
            ssh_option("ProxyJump", "me@bastion:2222").unwrap(),
            "ProxyJump=me@bastion:2222"
        );
        for key in [
            "StrictHostKeyChecking",
            "IdentityFile",
            "ForwardAgent",
            "PermitLocalCommand",
            "LocalCommand",
            "UserKnownHostsFile",
            "ControlPath",
            "ProxyCommand",
        ] {
            let e = ssh_option(key, "x").unwrap_err();
            assert!(e.contains(key) && e.contains("ConnectTimeout"), "{e}");
        }
        for value in [
            "",
            "a b",
            "x\nProxyCommand=sh",
            "-oX",
            "a\"b",
            "a;b",
            "$(id)",
        ] {
            assert!(ssh_option("ConnectTimeout", value).is_err(), "{value:?}");
        }
        // A target's value comes before offsync's default, so ssh keeps it.
        let mut m = std::collections::BTreeMap::new();
        m.insert("ConnectTimeout".to_string(), "31".to_string());
        let o = SshSettings::new(Path::new("/k"), Path::new("/kh"))
            .with_options(&m)
            .options();
        let at = |needle: &str| o.iter().position(|w| w.starts_with(needle)).unwrap();
        assert!(at("ConnectTimeout=31") < at("ConnectTimeout=10"), "{o:?}");
        assert!(at("IdentitiesOnly=yes") < at("ConnectTimeout=31"), "{o:?}");
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
            Some(SshFailure::HostKeyChanged { offered: None })
        );
        let changed = SshFailure::from_stderr(
            "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nThe fingerprint for the ED25519 key sent by the remote host is\nSHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s.\nHost key verification failed.",
        )
        .unwrap();
        assert!(
            changed.explain().contains(
                "repin NAME --fingerprint SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s`"
            ),
            "{}",
            changed.explain()
        );
        assert_eq!(
            SshFailure::from_stderr("ssh: connect to host 127.0.0.1 port 1: Connection refused"),
            Some(SshFailure::ConnectionRefused)
        );
        assert_eq!(SshFailure::from_stderr("rsync error"), None);
    }
}
