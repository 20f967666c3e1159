//! Make untrusted text safe for a terminal.
//!
//! Remote stderr, file names and host keys' comments come from machines we do not control. They
//! may hold escape sequences, carriage returns or bidi overrides that would rewrite what the
//! operator sees. Everything from outside passes through [`for_terminal`] before it is printed.

/// Replace control and bidi-formatting characters with visible escapes; keep ordinary text.
pub fn for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_or_invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Like [`for_terminal`] for bytes that may not be UTF-8: invalid bytes become `\xNN`.
pub fn bytes_for_terminal(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(&for_terminal(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// The last `max_lines` non-empty lines of a command's stderr, sanitised and joined with "; ",
/// for one-line error messages.
pub fn stderr_tail(stderr: &[u8], max_lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..]
        .iter()
        .map(|l| for_terminal(l))
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        assert_eq!(for_terminal("a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(for_terminal("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(for_terminal("plain é"), "plain é");
        assert_eq!(bytes_for_terminal(b"a\xffb"), "a\\xffb");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(stderr_tail(b"one\n\ntwo\nthree\n", 2), "two; three");
    }
}
