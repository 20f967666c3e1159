//! rsync's itemized output (`--out-format='%i %n'`), parsed exactly.
//!
//! Invariants: a line is classified only by its fixed 11-character itemize field and the
//! single space after it — never by what the file name starts with, because names may begin
//! with anything, including `*deleting` or `created directory`. Lines that do not carry a valid
//! itemize field (rsync's own messages, "created directory …" with 3.5.0's pinned
//! `/proc/self/fd/N/…` paths) are not file entries and are returned separately. Names are
//! unescaped from rsync's `\#ooo` octal form into raw bytes (3.5.0 also escapes a literal `\#`
//! as `\#134`, which decodes the same way), so names with newlines, tabs, backslashes, quotes
//! or non-UTF-8 bytes round-trip.

/// What kind of filesystem object an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    File,
    Dir,
    Symlink,
    Device,
    Special,
}

/// What rsync would do (or did) to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemChange {
    /// Exists only on the receiver; `--delete` removes it.
    Deleting,
    /// New on the receiver.
    Created,
    /// Content differs (checksum or size; for symlinks, the link target).
    Content,
    /// Only attributes differ (permissions, times, owner…).
    Metadata,
    /// Listed but unchanged (only with `-ii`).
    Unchanged,
}

/// One itemized line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub change: ItemChange,
    pub kind: ItemKind,
    /// Path relative to the transfer root, raw bytes, without a trailing `/`.
    pub path: Vec<u8>,
    /// The attribute flags a quick check sees (`s`ize, `t`ime, `p`erms, …: the itemize
    /// field after the type letter, with a regular file's `c`hecksum flag blanked, because
    /// only `-c` computes it); `+++++++++` for a created item, empty for a deletion. See
    /// [`quick_signature`].
    pub quick: [u8; 9],
}

/// The line a quick check (size and mtime, rsync's default) would print for this item,
/// normalised so the same target state gives the same line in checksum and in quick mode:
/// `-c` adds the `c` flag for regular files whose content differs (and drops nothing else),
/// the update letter (`>`, `.`, `c`) depends on whether content would move, and unchanged
/// items are not printed. `None` when the quick check would not print the item at all (a
/// file whose content differs while size, mtime and mode agree: the quick check's blind
/// spot).
pub fn quick_signature(item: &Item) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(item.path.len() + 12);
    if item.change == ItemChange::Deleting {
        line.extend_from_slice(b"*deleting");
        line.push(if item.kind == ItemKind::Dir {
            b'/'
        } else {
            b' '
        });
    } else {
        if item.quick.iter().all(|&b| b == b'.' || b == b' ') {
            return None;
        }
        line.push(match item.kind {
            ItemKind::File => b'f',
            ItemKind::Dir => b'd',
            ItemKind::Symlink => b'L',
            ItemKind::Device => b'D',
            ItemKind::Special => b'S',
        });
        line.extend_from_slice(&item.quick);
    }
    line.push(b' ');
    line.extend_from_slice(&item.path);
    Some(line)
}

/// BLAKE3 (hex) over the sorted, distinct quick signatures of `items`: a fingerprint of the
/// target relative to the source as a quick check sees it (see [`quick_signature`]). Each
/// signature is reduced to its own BLAKE3 first, so 100,000 items cost 3 MB here, not a copy
/// of every line.
pub fn quick_state<'a>(items: impl IntoIterator<Item = &'a Item>) -> String {
    let mut digests: Vec<[u8; 32]> = items
        .into_iter()
        .filter_map(quick_signature)
        .map(|l| *blake3::hash(&l).as_bytes())
        .collect();
    digests.sort_unstable();
    digests.dedup();
    let mut h = blake3::Hasher::new();
    for d in &digests {
        h.update(d);
    }
    h.finalize().to_hex().to_string()
}

/// Parse one line of `%i %n` output. `None` when the line is not an itemized entry.
pub fn parse_line(line: &[u8]) -> Option<Item> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() < 13 || line[11] != b' ' {
        return None;
    }
    let (field, name) = (&line[..11], &line[12..]);
    let mut quick = [b'.'; 9];
    let (change, kind) = if field == b"*deleting  " {
        let kind = if name.ends_with(b"/") {
            ItemKind::Dir
        } else {
            ItemKind::File
        };
        (ItemChange::Deleting, kind)
    } else {
        let kind = match field[1] {
            b'f' => ItemKind::File,
            b'd' => ItemKind::Dir,
            b'L' => ItemKind::Symlink,
            b'D' => ItemKind::Device,
            b'S' => ItemKind::Special,
            _ => return None,
        };
        if !b"<>ch.".contains(&field[0]) {
            return None;
        }
        let flags = &field[2..];
        if !flags.iter().all(|b| b" .+?cstpoguaxnTbL".contains(b)) {
            return None;
        }
        quick.copy_from_slice(flags);
        if kind == ItemKind::File && quick[0] == b'c' {
            quick[0] = b'.';
        }
        let change = if flags.iter().all(|&b| b == b'+') {
            ItemChange::Created
        } else if flags[0] == b'c' || flags[1] == b's' {
            ItemChange::Content
        } else if flags.iter().any(|&b| b != b'.' && b != b' ') {
            ItemChange::Metadata
        } else {
            ItemChange::Unchanged
        };
        (change, kind)
    };
    let mut path = unescape(name);
    if kind == ItemKind::Dir && path.ends_with(b"/") {
        path.pop();
    }
    // `./` is the transfer root itself, not an entry.
    if path.is_empty() || path == b"." {
        return None;
    }
    Some(Item {
        change,
        kind,
        path,
        quick,
    })
}

/// Parse a whole output; returns the items and the lines that were not items.
pub fn parse_output(out: &[u8]) -> (Vec<Item>, Vec<Vec<u8>>) {
    let mut c = Collector::default();
    for line in out.split(|&b| b == b'\n') {
        c.push(line);
    }
    c.finish()
}

/// [`parse_output`] fed one line at a time, as rsync writes them (see
/// `process::Cmd::output_lines`): a dry run of many files is parsed as it streams instead of
/// being held whole first. The same lines give the same result as [`parse_output`].
#[derive(Debug, Default)]
pub struct Collector {
    items: Vec<Item>,
    other: Vec<Vec<u8>>,
}

impl Collector {
    /// One line, with or without its `\n`; empty lines are ignored.
    pub fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        match parse_line(line) {
            Some(i) => self.items.push(i),
            None => self.other.push(line.to_vec()),
        }
    }

    /// The items and the lines that were not items, in the order they came.
    pub fn finish(self) -> (Vec<Item>, Vec<Vec<u8>>) {
        (self.items, self.other)
    }
}

/// rsync's message for a target-only directory it will not delete because it still holds
/// excluded (protected) files. A dry run prints it *and* may still itemize `*deleting dir/`.
const UNDELETABLE: &[u8] = b"cannot delete non-empty directory: ";

/// Paths (unescaped) that rsync said it cannot delete, from the non-item lines of its output.
/// The message is printed by rsync itself (not from a file name), and names are escaped in it
/// like in item lines, so a name cannot forge one.
pub fn undeletable(other: &[Vec<u8>]) -> Vec<Vec<u8>> {
    other
        .iter()
        .filter_map(|l| l.strip_prefix(UNDELETABLE))
        .map(|name| unescape(name.strip_suffix(b"/").unwrap_or(name)))
        .collect()
}

/// Undo rsync's `\#ooo` escapes.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 4 < s.len()
            && s[i + 1] == b'#'
            && s[i + 2..i + 5].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (s[i + 2] - b'0') as u32 * 64
                + (s[i + 3] - b'0') as u32 * 8
                + (s[i + 4] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 5;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Escape bytes the way rsync 3.5.0 prints names (the inverse of [`unescape`]); used by tests
/// and to show names safely.
pub fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for (i, &b) in name.iter().enumerate() {
        let backslash_hash = b == b'\\' && name.get(i + 1) == Some(&b'#');
        if !(0x20..0x7f).contains(&b) || backslash_hash {
            out.extend_from_slice(format!("\\#{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(line: &str) -> Option<Item> {
        parse_line(line.as_bytes())
    }

    #[test]
    fn classifies_by_field_only() {
        let i = p("<f+++++++++ *deleting  x").unwrap();
        assert_eq!(
            (i.change, i.kind, i.path.as_slice()),
            (ItemChange::Created, ItemKind::File, &b"*deleting  x"[..])
        );
        let i = p("*deleting   created directory y").unwrap();
        assert_eq!(i.change, ItemChange::Deleting);
        assert_eq!(i.path, b"created directory y");
        assert_eq!(p("created directory /proc/self/fd/4/dest"), None);
        assert_eq!(p("sending incremental file list"), None);
        let i = p("*deleting   old/").unwrap();
        assert_eq!((i.kind, i.path.as_slice()), (ItemKind::Dir, &b"old"[..]));
    }

    #[test]
    fn changes() {
        assert_eq!(p("<fcs.p..... a").unwrap().change, ItemChange::Content);
        assert_eq!(p(">fc........ a").unwrap().change, ItemChange::Content);
        assert_eq!(p(".f..t...... a").unwrap().change, ItemChange::Metadata);
        assert_eq!(p(".f...p..... a").unwrap().change, ItemChange::Metadata);
        assert_eq!(p("cd+++++++++ d/").unwrap().kind, ItemKind::Dir);
        assert_eq!(p("cL+++++++++ l").unwrap().kind, ItemKind::Symlink);
        assert_eq!(p("cLc.t...... l").unwrap().change, ItemChange::Content);
        assert_eq!(p(".f          a").unwrap().change, ItemChange::Unchanged);
        assert_eq!(p(".d..t...... ./"), None, "the root itself is not an entry");
    }

    #[test]
    fn quick_signatures_agree_between_modes() {
        // The same target state as printed by `rsync -c` and by rsync's quick check (rsync
        // 3.5.0, see tests: contentdiff_time, sizediff, timeonly, perm, link, new dir).
        let checksum = b"*deleting   extra\n>fc.t...... contentdiff_time\n>fc........ same_size_and_time\ncLc........ link\n.f...p..... perm\n>fcst...... sizediff\n.f..t...... timeonly\ncd+++++++++ newdir/\n>f+++++++++ newdir/f\n";
        let quick = b"*deleting   extra\n>f..t...... contentdiff_time\ncLc........ link\n.f...p..... perm\n>f.st...... sizediff\n>f..t...... timeonly\ncd+++++++++ newdir/\n>f+++++++++ newdir/f\n";
        let (a, _) = parse_output(checksum);
        let (b, _) = parse_output(quick);
        assert_eq!(quick_state(&a), quick_state(&b));
        let blind: Vec<Vec<u8>> = a
            .iter()
            .filter(|i| quick_signature(i).is_none())
            .map(|i| i.path.clone())
            .collect();
        assert_eq!(blind, vec![b"same_size_and_time".to_vec()]);
        // Any other difference changes the fingerprint.
        let (c, _) = parse_output(b"*deleting   extra\n>f..t...... contentdiff_time\n");
        assert_ne!(quick_state(&b), quick_state(&c));
        let (d, _) = parse_output(b"*deleting   extra/\n");
        let (e, _) = parse_output(b"*deleting   extra\n");
        assert_ne!(
            quick_state(&d),
            quick_state(&e),
            "a directory is not a file"
        );
    }

    #[test]
    fn undeletable_directories() {
        let out = b"cannot delete non-empty directory: old/sub\n*deleting   old/sub/\ncannot delete non-empty directory: o\\#012ld\n";
        let (items, other) = parse_output(out);
        assert_eq!(items.len(), 1);
        assert_eq!(
            undeletable(&other),
            vec![b"old/sub".to_vec(), b"o\nld".to_vec()]
        );
    }

    #[test]
    fn collector_matches_parse_output() {
        let out: &[u8] = b"sending incremental file list\n<f+++++++++ a\n\ncd+++++++++ d/\n*deleting   old/\ncannot delete non-empty directory: old\n.f..t...... l\\#012ine";
        let mut c = Collector::default();
        for line in out.split_inclusive(|&b| b == b'\n') {
            c.push(line);
        }
        let (items, other) = c.finish();
        assert_eq!((items.clone(), other.clone()), parse_output(out));
        assert_eq!(items.len(), 4);
        assert_eq!(items[3].path, b"l\nine");
        assert_eq!(undeletable(&other), vec![b"old".to_vec()]);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(br"a\#012b"), b"a\nb");
        assert_eq!(unescape(br"a\#134#012"), br"a\#012");
        assert_eq!(unescape(br"back\slash"), br"back\slash");
        assert_eq!(unescape(br"\#37"), br"\#37");
        assert_eq!(unescape(br"\#377"), [255]);
    }

    /// Any byte a file name may hold: everything but NUL and `/`.
    fn name_byte() -> impl Strategy<Value = u8> {
        (1u8..=254).prop_map(|b| if b == b'/' { 255 } else { b })
    }

    proptest! {
        #[test]
        fn names_round_trip(name in proptest::collection::vec(name_byte(), 1..40)) {
            // `.` and `..` are not file names (a lone `.` is the transfer root itself).
            prop_assume!(!name.contains(&b'/') && !name.contains(&0) && name != b"." && name != b"..");
            prop_assert_eq!(unescape(&escape(&name)), name.clone());
            let mut line = b"<f+++++++++ ".to_vec();
            line.extend(escape(&name));
            let item = parse_line(&line).unwrap();
            prop_assert_eq!(item.path, name);
        }

        #[test]
        fn paths_with_dirs_round_trip(parts in proptest::collection::vec(proptest::collection::vec(name_byte(), 1..8), 1..4)) {
            prop_assume!(parts.iter().all(|p| !p.contains(&b'/') && p != b"." && p != b".."));
            let path = parts.join(&b'/');
            let mut line = b"*deleting   ".to_vec();
            line.extend(escape(&path));
            let (items, other) = parse_output(&line);
            prop_assert!(other.is_empty());
            prop_assert_eq!(&items[0].path, &path);
        }
    }
}
