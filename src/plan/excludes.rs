//! Exclude rules: one set of gitignore-style patterns, applied identically by our walker and
//! by rsync (planning, transfer, verification, and target-only detection).
//!
//! Semantics (a subset of gitignore that rsync's filter rules can express exactly):
//! - `name` (no `/` except a trailing one) matches that name at any depth;
//! - a pattern with a `/` inside, or a leading `/`, is anchored at the source root;
//! - a trailing `/` matches directories only; `*`, `?`, `[…]` do not cross `/`; `**` does;
//! - `!pattern` re-includes; the last matching rule wins, as in gitignore;
//! - an excluded directory is not descended into (a `!` rule cannot re-include inside it).
//!
//! `.git/` and rsync's holding directory `.~tmp~/` are always excluded first. An excluded path on a target
//! is never reported and never deleted: rsync's `--delete` leaves excluded files alone.

use anyhow::{Context as _, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::path::Path;

/// The rules every plan starts with: `.git/` (as the Python offsync), and rsync's
/// `--delay-updates` holding directory, which may hold a partly sent file for resuming.
pub const DEFAULT_EXCLUDES: &[&str] = &[".git/", ".~tmp~/"];

/// The holding directory for files not yet in place: rsync's `--delay-updates` directory, and
/// where `pull`/`mirror restore` stage verified files before renaming them. Always excluded.
pub const HOLDING_DIR: &str = ".~tmp~";

/// offsync's target markers (see `marker`) at the root of a target: never part of a source,
/// never planned, never deleted. Matched after (so above) every other rule, and not listed in
/// [`Excludes::patterns`], because it is offsync's own business rather than the user's.
pub const MARKER_RULE: &str = "/.offsync-marker-*";

/// The tags of releases (see `releases`) at the root of a release: like markers, offsync's
/// own, never planned, sent or deleted as content.
pub const RELEASE_TAG_RULE: &str = "/.offsync-release-*";

/// Compiled exclude rules.
#[derive(Debug, Clone)]
pub struct Excludes {
    patterns: Vec<String>,
    matcher: Gitignore,
}

impl Excludes {
    /// Build from the config's `exclude:` list (the defaults are prepended).
    pub fn new(user: &[String]) -> Result<Excludes> {
        let mut patterns: Vec<String> = DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect();
        for p in user {
            validate(p)?;
            patterns.push(p.clone());
        }
        // Matching happens against relative paths; the root given here is only a label.
        let mut b = GitignoreBuilder::new("/");
        for p in patterns
            .iter()
            .map(String::as_str)
            .chain([MARKER_RULE, RELEASE_TAG_RULE])
        {
            b.add_line(None, p)
                .with_context(|| format!("exclude pattern {p:?} is not valid"))?;
        }
        let matcher = b.build().context("cannot compile exclude patterns")?;
        Ok(Excludes { patterns, matcher })
    }

    /// These rules plus `extra` patterns after them (a target's own `exclude:`).
    pub fn with(&self, extra: &[String]) -> Result<Excludes> {
        let user = &self.patterns[DEFAULT_EXCLUDES.len()..];
        Excludes::new(&[user, extra].concat())
    }

    /// The patterns in force, defaults first.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel` (relative to the source root) is excluded. Parents are not consulted:
    /// the walker never descends into an excluded directory.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        self.matcher
            .matched(Path::new("/").join(rel), is_dir)
            .is_ignore()
    }

    /// Whether the listed path `rel` (exact bytes) is hidden: it or any parent directory is
    /// excluded. For listings that were not produced by our walker (mirror snapshots, tests).
    pub fn hides(&self, rel: &[u8], is_dir: bool) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(rel));
        path.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.is_excluded(a, a != path || is_dir))
    }

    /// The same rules as rsync `--filter` rules, in rsync's order (first match wins, so the
    /// gitignore list is reversed).
    pub fn rsync_rules(&self) -> Vec<String> {
        self.patterns
            .iter()
            .rev()
            .map(|p| {
                let (sign, pat) = match p.strip_prefix('!') {
                    Some(rest) => ('+', rest),
                    None => ('-', p.as_str()),
                };
                let pat = pat.strip_prefix('\\').unwrap_or(pat);
                let inner = pat.trim_end_matches('/');
                // gitignore anchors any pattern with an inner slash; rsync would match it at
                // any depth, so anchor it explicitly.
                let anchored = if inner.contains('/') && !pat.starts_with('/') {
                    format!("/{pat}")
                } else {
                    pat.to_string()
                };
                format!("{sign} {anchored}")
            })
            .collect()
    }

    /// The `--filter` arguments for rsync (the marker and release-tag rules first).
    pub fn rsync_args(&self) -> Vec<String> {
        [format!("- {MARKER_RULE}"), format!("- {RELEASE_TAG_RULE}")]
            .into_iter()
            .chain(self.rsync_rules())
            .map(|r| format!("--filter={r}"))
            .collect()
    }
}

/// Refuse patterns whose meaning rsync and gitignore would not share.
fn validate(p: &str) -> Result<()> {
    check_pattern(p).map_err(|why| {
        crate::input_err!(
            "exclude pattern {p:?} in config.yaml {why}; use a plain gitignore-style pattern"
        )
    })
}

/// Why `p` cannot be an exclude pattern (`Err(reason)`), or `Ok` when our gitignore matcher
/// and its rsync translation ([`Excludes::rsync_rules`]) mean the same thing by it. Config
/// loading calls this for every `exclude:` entry, so a bad pattern is reported with its place
/// in `config.yaml` before anything runs.
pub fn check_pattern(p: &str) -> std::result::Result<(), String> {
    if p.trim().is_empty() || p.starts_with('#') {
        return Err("is empty or a comment".into());
    }
    // What is left after the `!` (re-include) and the escaping backslash is what both sides
    // match; it must name something.
    let body = p.strip_prefix('!').unwrap_or(p);
    if p.starts_with('!') && body.trim().is_empty() {
        return Err("is a bare `!` (it re-includes nothing); write `!PATTERN`".into());
    }
    if p != p.trim_end() {
        return Err("has trailing whitespace".into());
    }
    if p.chars().any(char::is_control) {
        return Err("contains a line break or control character".into());
    }
    // rsync reads a leading "+ " / "- " as a rule prefix; gitignore reads it as a name.
    if p.starts_with("+ ") || p.starts_with("- ") || p.starts_with(',') {
        return Err("starts with an rsync rule prefix".into());
    }
    if body.starts_with(char::is_whitespace) {
        return Err("has whitespace after `!` or at the start".into());
    }
    let inner = body.strip_prefix('\\').unwrap_or(body);
    if inner.is_empty() || inner.trim_matches('/').is_empty() {
        return Err("matches nothing (only `/`, `!` or `\\`)".into());
    }
    if inner.ends_with('\\') && !inner.ends_with("\\\\") {
        return Err("ends with a lone `\\`".into());
    }
    let mut b = GitignoreBuilder::new("/");
    b.add_line(None, p)
        .map_err(|e| format!("is not valid ({e})"))?;
    b.build().map_err(|e| format!("is not valid ({e})"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let e = ex(&["*.log", "build/", "docs/private", "!keep.log"]);
        assert!(e.is_excluded(Path::new(".git"), true));
        assert!(!e.is_excluded(Path::new(".git"), false));
        assert!(e.is_excluded(Path::new("a/b/x.log"), false));
        assert!(!e.is_excluded(Path::new("a/keep.log"), false));
        assert!(e.is_excluded(Path::new("sub/build"), true));
        assert!(!e.is_excluded(Path::new("sub/build"), false));
        assert!(e.is_excluded(Path::new("docs/private"), false));
        assert!(!e.is_excluded(Path::new("x/docs/private"), false));
        assert!(e.is_excluded(Path::new(".offsync-marker-0a1b"), false));
        assert!(!e.is_excluded(Path::new("sub/.offsync-marker-0a1b"), false));
        let bang = ex(&["!.offsync-marker-*"]);
        assert!(bang.is_excluded(Path::new(".offsync-marker-0a1b"), false));
        assert_eq!(bang.rsync_args()[0], "--filter=- /.offsync-marker-*");
    }

    #[test]
    fn rsync_rules_are_reversed_and_anchored() {
        let e = ex(&["*.log", "docs/private", "!keep.log"]);
        assert_eq!(
            e.rsync_rules(),
            [
                "+ keep.log",
                "- /docs/private",
                "- *.log",
                "- .~tmp~/",
                "- .git/"
            ]
        );
    }

    #[test]
    fn refuses_ambiguous_patterns() {
        assert!(Excludes::new(&["- foo".to_string()]).is_err());
        assert!(Excludes::new(&["".to_string()]).is_err());
        assert!(Excludes::new(&["a ".to_string()]).is_err());
        for bad in [
            "!", "! ", "!\t", "!/", "/", "//", "\\", "!\\", "a\\", "! a", "a\u{1b}b",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["a", "!a", "\\!a", "\\#a", "/a/", "**/x", "a\\\\", "*.log"] {
            assert_eq!(check_pattern(good), Ok(()), "{good:?}");
        }
    }
}
