//! offsync's own `known_hosts` (in `$OFFSYNC_HOME`, never the user's).
//!
//! Invariants: lines for other hosts, comments and marker lines stay byte-identical; a host
//! pattern is written exactly as ssh itself wrote it while fetching the key (so later lookups
//! match, whatever `~/.ssh/config` does with ports or aliases); only keys the operator pinned
//! (by fingerprint or a typed `yes`) ever reach this file.

use ssh_key::public::KeyData;

/// A parsed known_hosts line: host patterns and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    pub patterns: String,
    pub key: KeyData,
}

/// Parse one line (`patterns keytype base64 [comment]`); `None` for comments, markers
/// (`@cert-authority`, `@revoked`) and anything unparsable.
pub fn parse_line(line: &str) -> Option<HostLine> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
        return None;
    }
    let mut fields = line.split_ascii_whitespace();
    let patterns = fields.next()?.to_string();
    let kind = fields.next()?;
    let blob = fields.next()?;
    let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}")).ok()?;
    Some(HostLine {
        patterns,
        key: key.key_data().clone(),
    })
}

/// All parsable lines of a file.
pub fn parse_all(content: &[u8]) -> Vec<HostLine> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// The line we write for `pattern` and `key`.
pub fn format_line(pattern: &str, key: &KeyData) -> String {
    let pk = ssh_key::PublicKey::new(key.clone(), "");
    let text = pk.to_openssh().unwrap_or_default();
    format!("{pattern} {}", text.trim())
}

/// Replace every line whose patterns are exactly `pattern` with lines for `keys`.
pub fn replace_host(content: &[u8], pattern: &str, keys: &[KeyData]) -> Vec<u8> {
    let mut out = remove_host(content, pattern);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    for k in keys {
        out.extend_from_slice(format_line(pattern, k).as_bytes());
        out.push(b'\n');
    }
    out
}

/// Remove every line whose patterns are exactly `pattern`.
pub fn remove_host(content: &[u8], pattern: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        let matches = std::str::from_utf8(line)
            .ok()
            .and_then(parse_line)
            .is_some_and(|l| l.patterns == pattern);
        if !matches {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Whether any line is for `pattern`.
pub fn has_host(content: &[u8], pattern: &str) -> bool {
    parse_all(content).iter().any(|l| l.patterns == pattern)
}

/// The pattern OpenSSH uses for a host and port: `host` for 22, `[host]:port` otherwise.
pub fn pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyData {
        crate::keys::generate("h")
            .unwrap()
            .public_key()
            .key_data()
            .clone()
    }

    #[test]
    fn replace_and_remove_keep_other_lines() {
        let k1 = key();
        let k2 = key();
        let other = format_line("other.example", &k1);
        let content = format!("# comment\n{other}\n@revoked * ssh-ed25519 AAAA\n");
        let with = replace_host(content.as_bytes(), "[h]:2222", std::slice::from_ref(&k2));
        assert!(with.starts_with(content.as_bytes()));
        assert!(has_host(&with, "[h]:2222"));
        let again = replace_host(&with, "[h]:2222", std::slice::from_ref(&k1));
        assert_eq!(
            parse_all(&again)
                .iter()
                .filter(|l| l.patterns == "[h]:2222")
                .count(),
            1
        );
        assert_eq!(remove_host(&again, "[h]:2222"), content.as_bytes());
    }

    #[test]
    fn patterns() {
        assert_eq!(pattern("h", 22), "h");
        assert_eq!(pattern("::1", 2222), "[::1]:2222");
    }
}
