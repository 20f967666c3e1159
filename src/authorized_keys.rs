//! Reading and writing `authorized_keys` lines ourselves.
//!
//! ssh-key cannot parse lines whose options contain spaces (`command="rrsync -wo /x"`), so we
//! scan lines here and hand only the key part to ssh-key. Invariants: every line that is not
//! the linked key's stays byte-identical (including CRLF endings, comments and lines we cannot
//! parse); a key appears at most once after `link` (its first line is replaced, later
//! duplicates removed); the forced command is quoted for both of its readers — sshd's option
//! parser (where only `\"` is special) and the POSIX shell that runs it.

use crate::process::shell_quote;
use ssh_key::PublicKey;

/// Options `link` writes before the forced command. `restrict` covers everything in new
/// sshd; the explicit `no-*` options keep old readers (and auditors) from guessing.
pub const RESTRICTIONS: &str =
    "restrict,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty";

/// Marker in the comment of lines offsync wrote.
pub const COMMENT_PREFIX: &str = "offsync-link";

/// The key part of an authorized_keys line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Options before the key, if any (raw text).
    pub options: Option<&'a str>,
    pub key_type: &'a str,
    /// Base64 blob: identifies the key.
    pub blob: &'a str,
}

/// Split one line into options and key. `None` for blank lines, comments and lines we cannot
/// make sense of (those are kept untouched).
pub fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim_end_matches('\r').trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let first_end = token_end(line);
    let first = &line[..first_end];
    if looks_like_key_type(first) {
        let rest = line[first_end..].trim_start();
        let blob = &rest[..token_end_plain(rest)];
        return (!blob.is_empty()).then_some(Entry {
            options: None,
            key_type: first,
            blob,
        });
    }
    let rest = line[first_end..].trim_start();
    let kt_end = token_end_plain(rest);
    let key_type = &rest[..kt_end];
    if !looks_like_key_type(key_type) {
        return None;
    }
    let rest = rest[kt_end..].trim_start();
    let blob = &rest[..token_end_plain(rest)];
    (!blob.is_empty()).then_some(Entry {
        options: Some(first),
        key_type,
        blob,
    })
}

fn looks_like_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

/// End of the options token: the first whitespace outside double quotes (`\"` escapes).
fn token_end(s: &str) -> usize {
    let b = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes && b.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => in_quotes = !in_quotes,
            b' ' | b'\t' if !in_quotes => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

fn token_end_plain(s: &str) -> usize {
    s.find([' ', '\t']).unwrap_or(s.len())
}

/// The forced command, quoted for the shell that sshd runs it with.
pub fn forced_command(rrsync: &str, dir: &str, no_delete: bool) -> String {
    let mut cmd = format!("{} -wo ", shell_quote(rrsync));
    if no_delete {
        cmd.push_str("-no-del ");
    }
    cmd.push_str(&shell_quote(dir));
    cmd
}

/// The whole authorized_keys line for `key`, without the newline.
pub fn build_line(
    key: &PublicKey,
    rrsync: &str,
    dir: &str,
    no_delete: bool,
    comment: &str,
) -> String {
    let command = forced_command(rrsync, dir, no_delete).replace('"', "\\\"");
    let key_part = format!("{} {}", key.algorithm().as_str(), key_blob(key));
    let comment: String = comment
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    format!("{RESTRICTIONS},command=\"{command}\" {key_part} {COMMENT_PREFIX}: {comment}")
}

/// The base64 blob of a public key, as in its OpenSSH line.
pub fn key_blob(key: &PublicKey) -> String {
    let mut bare = key.clone();
    bare.set_comment("");
    let text = bare.to_openssh().unwrap_or_default();
    text.split_ascii_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Replaced,
    Unchanged,
    Removed(usize),
    NotFound,
}

/// Split file bytes into lines, each with its terminator.
fn split_lines(content: &[u8]) -> Vec<&[u8]> {
    content.split_inclusive(|&b| b == b'\n').collect()
}

fn line_has_blob(line: &[u8], blob: &str) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    parse_line(text.trim_end_matches('\n')).is_some_and(|e| e.blob == blob)
}

/// Put `new_line` in place of `key`'s line(s), or append it. Other lines stay byte-identical.
pub fn upsert(content: &[u8], key: &PublicKey, new_line: &str) -> (Vec<u8>, Change) {
    let blob = key_blob(key);
    let mut out = Vec::with_capacity(content.len() + new_line.len() + 1);
    let mut change = Change::Added;
    for line in split_lines(content) {
        if line_has_blob(line, &blob) {
            if change == Change::Added {
                let old = line.strip_suffix(b"\n").unwrap_or(line);
                let old = old.strip_suffix(b"\r").unwrap_or(old);
                change = if old == new_line.as_bytes() {
                    Change::Unchanged
                } else {
                    Change::Replaced
                };
                out.extend_from_slice(new_line.as_bytes());
                // Keep the original terminator (CRLF files stay CRLF).
                if line.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.push(b'\n');
                }
            } else {
                change = Change::Replaced;
            }
            continue;
        }
        out.extend_from_slice(line);
    }
    if change == Change::Added {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(new_line.as_bytes());
        out.push(b'\n');
    }
    (out, change)
}

/// Remove every line of `key`. Other lines stay byte-identical.
pub fn remove(content: &[u8], key: &PublicKey) -> (Vec<u8>, Change) {
    let blob = key_blob(key);
    let mut out = Vec::with_capacity(content.len());
    let mut removed = 0;
    for line in split_lines(content) {
        if line_has_blob(line, &blob) {
            removed += 1;
        } else {
            out.extend_from_slice(line);
        }
    }
    let change = if removed == 0 {
        Change::NotFound
    } else {
        Change::Removed(removed)
    };
    (out, change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        crate::keys::generate("c").unwrap().public_key().clone()
    }

    #[test]
    fn parses_lines_with_quoted_spaces() {
        let line = r#"restrict,command="/usr/bin/rrsync -wo \"/a b\"" ssh-ed25519 AAAAC3Nza c d"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.key_type, "ssh-ed25519");
        assert_eq!(e.blob, "AAAAC3Nza");
        assert!(e.options.unwrap().starts_with("restrict"));
        assert_eq!(parse_line("ssh-rsa AAAAB x\r").unwrap().blob, "AAAAB");
        assert!(parse_line("# comment").is_none());
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn forced_command_quotes_for_shell() {
        assert_eq!(
            forced_command("/usr/bin/rrsync", "/srv/app", false),
            "/usr/bin/rrsync -wo /srv/app"
        );
        assert_eq!(
            forced_command("/usr/bin/rrsync", "/srv/my app/$x`y`", true),
            "/usr/bin/rrsync -wo -no-del '/srv/my app/$x`y`'"
        );
    }

    #[test]
    fn build_line_escapes_double_quotes_for_sshd() {
        let k = key();
        let line = build_line(&k, "/usr/bin/rrsync", "/srv/a\"b", false, "x");
        assert!(
            line.contains(r#"command="/usr/bin/rrsync -wo '/srv/a\"b'" ssh-ed25519 "#),
            "{line}"
        );
        let e = parse_line(&line).unwrap();
        assert_eq!(e.blob, key_blob(&k));
    }

    #[test]
    fn upsert_keeps_other_lines_and_is_idempotent() {
        let k = key();
        let other = "# my keys\r\nssh-ed25519 AAAAOTHER someone\nno newline at end";
        let line = build_line(&k, "/usr/bin/rrsync", "/srv/app", false, "c");
        let (once, c1) = upsert(other.as_bytes(), &k, &line);
        assert_eq!(c1, Change::Added);
        assert!(
            once.starts_with(b"# my keys\r\nssh-ed25519 AAAAOTHER someone\nno newline at end\n")
        );
        let (twice, c2) = upsert(&once, &k, &line);
        assert_eq!(c2, Change::Unchanged);
        assert_eq!(once, twice);
        let line2 = build_line(&k, "/usr/bin/rrsync", "/srv/other", false, "c");
        let (thrice, c3) = upsert(&twice, &k, &line2);
        assert_eq!(c3, Change::Replaced);
        assert_eq!(thrice.len(), once.len() + 2);
        let (gone, c4) = remove(&thrice, &k);
        assert_eq!(c4, Change::Removed(1));
        assert_eq!(
            gone,
            b"# my keys\r\nssh-ed25519 AAAAOTHER someone\nno newline at end\n"
        );
    }

    #[test]
    fn duplicates_collapse_to_one() {
        let k = key();
        let plain = format!("{} {}\n", k.algorithm().as_str(), key_blob(&k));
        let content = format!("{plain}x\n{plain}");
        let line = build_line(&k, "/r", "/p", false, "c");
        let (out, change) = upsert(content.as_bytes(), &k, &line);
        assert_eq!(change, Change::Replaced);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\nx\n"));
    }
}
