//! `config.yaml`: what the controller pushes and where.
//!
//! Compatibility: the Python offsync's file (`version, source, delete, overwrite, verify,
//! targets[login, user, host, remote_path, rrsync]`) is read unchanged; offsync adds optional
//! fields (`name`, `port`, `fingerprint`, `no_delete`, `exclude`, `concurrency`). Unknown keys
//! are an error with line and column, because a typo in a deploy tool's config must not be
//! silently ignored. Writes are atomic, targets are kept sorted by name, and mode is 0600.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::fsutil;

/// Current config format version.
pub const VERSION: u32 = 1;

fn default_version() -> u32 {
    VERSION
}
fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version (1).
    #[serde(default = "default_version")]
    pub version: u32,
    /// Absolute path of the directory to push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Allow deleting target-only files without `--delete` on every apply.
    #[serde(default)]
    pub delete: bool,
    /// Overwrite files that differ on a target (the Python offsync's switch; default true).
    #[serde(default = "yes")]
    pub overwrite: bool,
    /// Refuse an apply that would delete more than this many paths on a target (rsync's and
    /// rclone's `--max-delete`). Unset: refuse deleting more than half of a target's paths, or
    /// anything when the source has no files. `--max-delete N` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete: Option<u64>,
    /// Verify every target after apply (default true). Written in the file as `verify:`,
    /// with the spelling it was read with (see [`Verify`]); [`Config::verify`] is the value
    /// the code uses, and wins when the two disagree at save time.
    #[serde(rename = "verify", default)]
    verify_setting: Verify,
    /// Verify every target after apply: content hashes compared again (default true).
    #[serde(skip, default = "yes")]
    pub verify: bool,
    /// gitignore-style patterns excluded from planning, transfer and verification (in addition
    /// to `.git/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How many targets to work on at once (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// How SSH targets' content is compared when planning: `checksum` (default) or `quick`
    /// (size and mtime, like rsync's default). Per target with a target's own `check:`;
    /// `--check` overrides both. `offsync verify` always compares content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::plan::CheckMode>,
    /// How SSH targets hold the tree: `in-place` (default: the linked directory is the tree)
    /// or `releases` (each apply uploads `releases/<id>/` beside the live one, verifies it and
    /// switches the `current` symlink atomically; see `releases`). Per target with a target's
    /// own `layout:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::releases::Layout>,
    /// How many releases a `releases` target keeps (default 5, at least 1; the one `current`
    /// points at is always kept). Per target with a target's own `keep:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// What apply does with SSH targets' target-only paths: `refuse` (default: the target is
    /// refused unless `--delete`), `keep` (sync the rest, report them), `delete` (as if
    /// `--delete` were given). Per target with a target's own `extra:`. Unset, `delete: true`
    /// means `delete`. Mirrors follow `refuse`/`delete` only (a snapshot cannot keep paths the
    /// source no longer has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<crate::plan::ExtraPolicy>,
    /// The targets, sorted by name.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Encrypted mirrors (S3 or a directory), sorted by name; targets like the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
}

/// One encrypted mirror. Holds no secrets: S3 credentials come from the environment or the
/// AWS shared files, the age identity from `$OFFSYNC_HOME/age-identity.txt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Unique name used with `--target`.
    pub name: String,
    /// `s3://bucket/prefix` or `file:///dir`.
    pub url: String,
    /// S3 endpoint for S3-compatible stores (MinIO, Garage, moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Other controllers whose snapshot signatures this controller accepts (`ssh-ed25519 …`
    /// lines; its own key is always trusted). Managed with `offsync mirror writers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<String>,
    /// Object uploads in flight at once (1..=[`MAX_UPLOADS`]); unset: the mirror kind's
    /// default ([`crate::mirror::default_uploads`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads: Option<usize>,
}

/// The most `mirrors[].uploads` accepts: each upload slot holds up to one object's
/// ciphertext (8 MiB), so the bound keeps a typo from costing gigabytes.
pub const MAX_UPLOADS: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config {
            version: VERSION,
            source: None,
            delete: false,
            overwrite: true,
            max_delete: None,
            verify_setting: Verify::default(),
            verify: true,
            exclude: Vec::new(),
            concurrency: None,
            check: None,
            layout: None,
            keep: None,
            extra: None,
            targets: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

/// `verify:` as written. offsync and the Python offsync it replaces accept a boolean; the
/// Python offsync documents `hash` as its default (verify by content hash, which is what
/// offsync's `true` does) and also reads `checksum` the same way, and `none`/`off` as false.
/// The spelling is kept so that a config written back says what the operator wrote (a plain
/// `off` is YAML's boolean false to our reader, and is written back as `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Bool(bool),
    /// `hash`: verify by content hash (= `true`).
    Hash,
    /// `checksum`: the same as `hash`.
    Checksum,
    /// `none`: do not verify (= `false`).
    None,
    /// `off`: the same as `none`.
    Off,
}

impl Default for Verify {
    fn default() -> Self {
        Verify::Bool(true)
    }
}

impl Verify {
    /// Whether targets are verified after apply.
    pub fn enabled(self) -> bool {
        match self {
            Verify::Bool(b) => b,
            Verify::Hash | Verify::Checksum => true,
            Verify::None | Verify::Off => false,
        }
    }

    fn word(self) -> Option<&'static str> {
        match self {
            Verify::Bool(_) => Option::None,
            Verify::Hash => Some("hash"),
            Verify::Checksum => Some("checksum"),
            Verify::None => Some("none"),
            Verify::Off => Some("off"),
        }
    }
}

impl Serialize for Verify {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match (self, self.word()) {
            (Verify::Bool(b), _) => s.serialize_bool(*b),
            (_, Some(w)) => s.serialize_str(w),
            (_, Option::None) => unreachable!("every non-bool setting has a word"),
        }
    }
}

impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Verify;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, hash, checksum, none or off")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Verify, E> {
                Ok(Verify::Bool(b))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Verify, E> {
                Ok(match v {
                    "true" => Verify::Bool(true),
                    "false" => Verify::Bool(false),
                    "hash" => Verify::Hash,
                    "checksum" => Verify::Checksum,
                    "none" => Verify::None,
                    "off" => Verify::Off,
                    _ => return Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The Python offsync stored `rrsync` either as a flag or as the path on the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RrsyncSetting {
    Enabled(bool),
    Path(String),
}

/// One SSH target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Unique name used with `--target` (default: the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user@host` as given to `target add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// Remote user (redundant with `login`; kept for the Python offsync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Remote host (redundant with `login`; kept for the Python offsync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SSH port, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The directory `link --path` allowed on the target.
    pub remote_path: String,
    /// rrsync on the target, as `link` printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrsync: Option<RrsyncSetting>,
    /// Pinned host key fingerprint (`SHA256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The target refuses deletions (`link --no-delete`); found by the probe.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_delete: bool,
    /// This target's comparison mode (overrides the top-level `check:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::plan::CheckMode>,
    /// This target's layout (overrides the top-level `layout:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::releases::Layout>,
    /// How many releases this target keeps (overrides the top-level `keep:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Extra ssh options for this target (`ConnectTimeout: 30`, `ProxyJump: bastion`), from
    /// the allow-list in `ssh::SSH_OPTIONS_ALLOWED`; the security options stay forced.
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "scalar_map"
    )]
    pub ssh_options: std::collections::BTreeMap<String, String>,
    /// More gitignore-style patterns excluded for this target only, after the top-level
    /// `exclude:` list (same rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// What apply does with this target's target-only paths (overrides the top-level
    /// `extra:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<crate::plan::ExtraPolicy>,
}

/// A map whose values may be written as YAML numbers or booleans (`ConnectTimeout: 30`,
/// `Compression: yes`): each is kept as the text ssh will see.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<std::collections::BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        B(bool),
    }
    let m: std::collections::BTreeMap<String, Scalar> = Deserialize::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::B(b) => if b { "yes" } else { "no" }.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl TargetConfig {
    /// The name used on the command line and in output.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        self.resolved_host().unwrap_or_default()
    }

    /// The remote user, from `user` or `login`.
    pub fn resolved_user(&self) -> Option<String> {
        if let Some(u) = &self.user {
            return Some(u.clone());
        }
        self.login
            .as_deref()
            .and_then(|l| l.rsplit_once('@'))
            .map(|(u, _)| u.to_string())
    }

    /// The host (without brackets), from `host` or `login`.
    pub fn resolved_host(&self) -> Option<String> {
        let raw = match &self.host {
            Some(h) => h.clone(),
            None => match self.login.as_deref() {
                Some(l) => l.rsplit_once('@').map_or(l, |(_, h)| h).to_string(),
                None => return None,
            },
        };
        Some(
            raw.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
    }
}

impl Config {
    /// Load `path`; a missing file is an error that says to run `offsync init`.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes = match fsutil::read_optional(path)? {
            Some(b) => b,
            None => anyhow::bail!(
                "no config at {}; run `offsync init --source DIR` first (or pass --home)",
                path.display()
            ),
        };
        Self::parse(&bytes, path)
    }

    /// Load `path` if it exists.
    pub fn load_optional(path: &Path) -> Result<Option<Config>> {
        match fsutil::read_optional(path)? {
            Some(b) => Ok(Some(Self::parse(&b, path)?)),
            None => Ok(None),
        }
    }

    /// Parse config text; errors carry the file name, line and column.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Config> {
        let text = std::str::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            parse_yaml(text, path)?
        };
        cfg.validate(path)?;
        let mut cfg = cfg;
        cfg.verify = cfg.verify_setting.enabled();
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if self.version != VERSION {
            anyhow::bail!(
                "{}: unsupported version {} (this offsync reads version {VERSION})",
                path.display(),
                self.version
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.targets {
            let name = t.name();
            if name.is_empty() {
                anyhow::bail!(
                    "{}: a target has neither name, login nor host; add `login: user@host`",
                    path.display()
                );
            }
            if !names.insert(name.clone()) {
                anyhow::bail!(
                    "{}: two targets are named {name:?}; give one a different `name:`",
                    path.display()
                );
            }
        }
        for m in &self.mirrors {
            if m.name.is_empty() || !names.insert(m.name.clone()) {
                anyhow::bail!(
                    "{}: the mirror name {:?} is empty or used twice; give it a unique `name:`",
                    path.display(),
                    m.name
                );
            }
            crate::location::Location::parse(&m.url)
                .map_err(|e| anyhow::anyhow!("{}: mirror {:?}: {e}", path.display(), m.name))?;
            if let Some(n) = m.uploads
                && !(1..=MAX_UPLOADS).contains(&n)
            {
                return Err(crate::input_err!(
                    "{}: mirror {}: uploads is {n}; set it to a number from 1 to {MAX_UPLOADS}, or remove the line for the default",
                    path.display(),
                    m.name
                ));
            }
        }
        let excludes = std::iter::once((String::new(), &self.exclude)).chain(
            self.targets
                .iter()
                .map(|t| (format!("target {}: ", t.name()), &t.exclude)),
        );
        for (whose, list) in excludes {
            for (i, p) in list.iter().enumerate() {
                crate::plan::excludes::check_pattern(p).map_err(|why| {
                    crate::input_err!(
                        "{}: {whose}exclude[{i}]: {} {why}; fix or remove it",
                        path.display(),
                        crate::sanitize::for_terminal(&format!("{p:?}"))
                    )
                })?;
            }
        }
        for t in &self.targets {
            for (k, v) in &t.ssh_options {
                crate::ssh::ssh_option(k, v).map_err(|why| {
                    crate::input_err!("{}: target {}: {why}", path.display(), t.name())
                })?;
            }
        }
        if self.concurrency == Some(0) {
            anyhow::bail!("{}: concurrency must be at least 1", path.display());
        }
        let keeps = std::iter::once(("keep".to_string(), self.keep)).chain(
            self.targets
                .iter()
                .map(|t| (format!("target {}: keep", t.name()), t.keep)),
        );
        for (what, keep) in keeps {
            if keep == Some(0) {
                return Err(crate::input_err!(
                    "{}: {what} must be at least 1 (the release `current` points at); set `keep: 5` or remove the line",
                    path.display()
                ));
            }
        }
        for t in &self.targets {
            let name = t.name();
            if let Some(why) = self.extra_conflict(t) {
                return Err(crate::input_err!(
                    "{}: target {name}: {why}",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Serialise (targets sorted by name) and write atomically with mode 0600.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.targets.sort_by_key(|t| t.name());
        self.mirrors.sort_by(|a, b| a.name.cmp(&b.name));
        if self.verify_setting.enabled() != self.verify {
            self.verify_setting = Verify::Bool(self.verify);
        }
        let text = serde_saphyr::to_string(&*self).context("cannot serialise config")?;
        fsutil::atomic_write(path, text.as_bytes(), fsutil::FILE_MODE)
    }

    /// Every configured target, typed by kind: SSH targets then mirrors, in config order.
    pub fn specs(&self) -> impl Iterator<Item = TargetSpec<'_>> {
        self.targets
            .iter()
            .map(TargetSpec::Ssh)
            .chain(self.mirrors.iter().map(TargetSpec::Mirror))
    }

    /// The target or mirror called `name`.
    pub fn find(&self, name: &str) -> Option<TargetSpec<'_>> {
        self.specs().find(|s| s.name() == name)
    }

    /// The targets named in `names` (all when empty), in config order; an unknown name is
    /// bad input naming the known ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<TargetSpec<'_>>> {
        if let Some(n) = names.iter().find(|n| self.find(n).is_none()) {
            return Err(self.unknown_target(n));
        }
        Ok(self
            .specs()
            .filter(|s| names.is_empty() || names.iter().any(|n| *n == s.name()))
            .collect())
    }

    /// The bad-input error for a name no target or mirror has.
    pub fn unknown_target(&self, name: &str) -> anyhow::Error {
        let known = self.all_names();
        crate::input_err!(
            "no target named {:?}; known targets: {}",
            crate::sanitize::for_terminal(name),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )
    }

    /// The comparison mode for SSH target `name`: `flag`, else the target's `check:`, else
    /// the top-level `check:`, else checksum.
    pub fn check_for(
        &self,
        name: &str,
        flag: Option<crate::plan::CheckMode>,
    ) -> crate::plan::CheckMode {
        flag.or_else(|| self.find_target(name).and_then(|t| t.check))
            .or(self.check)
            .unwrap_or_default()
    }

    /// The layout of SSH target `name`: its own `layout:`, else the top-level one, else
    /// in-place.
    pub fn layout_for(&self, name: &str) -> crate::releases::Layout {
        self.find_target(name)
            .and_then(|t| t.layout)
            .or(self.layout)
            .unwrap_or_default()
    }

    /// How many releases SSH target `name` keeps (`keep:`, default
    /// [`crate::releases::DEFAULT_KEEP`]).
    pub fn keep_for(&self, name: &str) -> u32 {
        self.find_target(name)
            .and_then(|t| t.keep)
            .or(self.keep)
            .unwrap_or(crate::releases::DEFAULT_KEEP)
    }

    /// What apply does with the target-only paths of target or mirror `name` (see
    /// [`Config::extra`]): its own `extra:`, else the top-level one, else `delete` when
    /// `delete: true`, else `refuse`.
    pub fn extra_for(&self, name: &str) -> crate::plan::ExtraPolicy {
        use crate::plan::ExtraPolicy;
        let fallback = if self.delete {
            ExtraPolicy::Delete
        } else {
            ExtraPolicy::Refuse
        };
        match self.find(name) {
            Some(TargetSpec::Ssh(t)) => t.extra.or(self.extra).unwrap_or(fallback),
            Some(TargetSpec::Mirror(_)) => match self.extra {
                Some(ExtraPolicy::Keep) | None => fallback,
                Some(e) => e,
            },
            None => ExtraPolicy::Refuse,
        }
    }

    /// Why target `t`'s `extra:` cannot work, if it cannot: `keep` with `layout: releases`
    /// (a new release holds the source only, so nothing could be kept), or its own
    /// `extra: delete` on a target linked with `--no-delete` (rrsync refuses deletions).
    pub fn extra_conflict(&self, t: &TargetConfig) -> Option<String> {
        use crate::plan::ExtraPolicy;
        let name = t.name();
        let extra = self.extra_for(&name);
        if extra == ExtraPolicy::Keep && self.layout_for(&name) == crate::releases::Layout::Releases
        {
            return Some(
                "`extra: keep` does not work with `layout: releases` (each release holds only the source; files only in the current release are never carried over); set `extra: refuse` or `extra: delete` for it".into(),
            );
        }
        if t.extra == Some(ExtraPolicy::Delete) && t.no_delete {
            return Some(
                "`extra: delete` needs deletions, but this target was linked with --no-delete (rrsync refuses them); set `extra: keep`, or link again without --no-delete".into(),
            );
        }
        None
    }

    pub fn find_target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name() == name)
    }

    pub fn find_mirror(&self, name: &str) -> Option<&MirrorConfig> {
        self.mirrors.iter().find(|m| m.name == name)
    }

    /// Every target and mirror name.
    pub fn all_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.targets.iter().map(|t| t.name()).collect();
        v.extend(self.mirrors.iter().map(|m| m.name.clone()));
        v.sort();
        v
    }
}

/// One configured target, tagged by kind: the one type the target factory and `target
/// check` dispatch on. (The file keeps the Python offsync's `targets:` list for SSH targets
/// and a `mirrors:` list beside it.)
#[derive(Debug, Clone, Copy)]
pub enum TargetSpec<'a> {
    Ssh(&'a TargetConfig),
    Mirror(&'a MirrorConfig),
}

impl TargetSpec<'_> {
    pub fn name(&self) -> String {
        match self {
            TargetSpec::Ssh(t) => t.name(),
            TargetSpec::Mirror(m) => m.name.clone(),
        }
    }
}

/// Parse YAML `text` read from `path` into `T`. A syntax error, a wrong type or an unknown
/// key (every offsync file type denies them) is bad input (exit 64): one line naming
/// `file:line:col` and the key, e.g. `pull.yaml:3:1: unknown field `colour`, expected one of
/// …; fix or remove it`.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML");
        let first = strip_location_prefix(first);
        crate::input_err!("{}{at}: {first}; fix or remove it", path.display())
    })
}

/// serde-saphyr starts its messages with `error: line N column M: `; we print the location
/// once, as `file:line:col`.
fn strip_location_prefix(msg: &str) -> &str {
    let m = msg.strip_prefix("error: ").unwrap_or(msg);
    if m.starts_with("line ")
        && let Some((_, rest)) = m.split_once(": ")
    {
        return rest;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_CONFIG: &str = "\
version: 1
source: /srv/build/site
delete: false
overwrite: true
verify: true
targets:
  - login: deploy@node01.example.com
    user: deploy
    host: node01.example.com
    remote_path: /srv/app
    rrsync: /usr/bin/rrsync
  - login: deploy@node02.example.com
    user: deploy
    host: node02.example.com
    remote_path: /srv/app
    rrsync: true
";

    #[test]
    fn reads_python_offsync_config_unchanged() {
        let cfg = Config::parse(PYTHON_CONFIG.as_bytes(), Path::new("c.yaml")).unwrap();
        assert_eq!(cfg.source.as_deref(), Some("/srv/build/site"));
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.targets[0].name(), "node01.example.com");
        assert_eq!(cfg.targets[0].resolved_user().as_deref(), Some("deploy"));
        assert_eq!(cfg.targets[1].rrsync, Some(RrsyncSetting::Enabled(true)));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = "version: 1\nsource: /x\ntargets:\n  - login: a@b\n    remote_path: /p\n    colour: red\n";
        let err = Config::parse(text.as_bytes(), Path::new("c.yaml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("c.yaml:6:"), "{msg}");
        assert!(!msg.contains("line 6"), "location printed once: {msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn round_trips_and_sorts() {
        let mut cfg = Config::parse(PYTHON_CONFIG.as_bytes(), Path::new("c.yaml")).unwrap();
        cfg.targets.reverse();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        cfg.save(&p).unwrap();
        let back = Config::load(&p).unwrap();
        assert_eq!(back.targets[0].name(), "node01.example.com");
        assert_eq!(back, cfg);
    }

    /// The Python offsync README's example config, with its documented default `verify: hash`.
    const PYTHON_README_CONFIG: &str = "\
version: 1
source: /srv/app
delete: false
overwrite: true
verify: hash
targets:
  - login: deploy@node01
    user: deploy
    host: node01
    remote_path: /srv/app
    rrsync: true
";

    #[test]
    fn reads_python_verify_values_and_keeps_their_spelling() {
        let cfg = Config::parse(PYTHON_README_CONFIG.as_bytes(), Path::new("c.yaml")).unwrap();
        assert!(cfg.verify);
        assert_eq!(cfg.targets[0].name(), "node01");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        // The YAML reader takes a plain `off` for the boolean false (YAML 1.1), so it is written
        // back as `false`: same meaning, other spelling.
        for (word, enabled, written_as) in [
            ("hash", true, "hash"),
            ("checksum", true, "checksum"),
            ("true", true, "true"),
            ("false", false, "false"),
            ("none", false, "none"),
            ("off", false, "false"),
            ("'off'", false, "\"off\""),
        ] {
            let text = PYTHON_README_CONFIG.replace("verify: hash", &format!("verify: {word}"));
            let mut cfg = Config::parse(text.as_bytes(), Path::new("c.yaml")).unwrap();
            assert_eq!(cfg.verify, enabled, "verify: {word}");
            cfg.save(&p).unwrap();
            let written = std::fs::read_to_string(&p).unwrap();
            assert!(
                written.contains(&format!("verify: {written_as}\n")),
                "verify: {word} written back as: {written}"
            );
            let back = Config::load(&p).unwrap();
            assert_eq!(back, cfg, "verify: {word} round-trips");
        }
        // A changed value wins over the remembered spelling.
        let mut cfg = Config::parse(PYTHON_README_CONFIG.as_bytes(), Path::new("c.yaml")).unwrap();
        cfg.verify = false;
        cfg.save(&p).unwrap();
        assert!(!Config::load(&p).unwrap().verify);
        // Anything else is refused with its location and the accepted values.
        let text = PYTHON_README_CONFIG.replace("verify: hash", "verify: sha1");
        let err = format!(
            "{:#}",
            Config::parse(text.as_bytes(), Path::new("c.yaml")).unwrap_err()
        );
        assert!(err.contains("c.yaml:5:") && err.contains("hash"), "{err}");
    }

    #[test]
    fn target_excludes_are_read_kept_and_checked() {
        let text = "targets:\n  - name: w\n    login: u@h\n    remote_path: /r\n    exclude: [\"media/\", \"*.tmp\"]\n";
        let mut cfg = Config::parse(text.as_bytes(), Path::new("config.yaml")).unwrap();
        assert_eq!(cfg.targets[0].exclude, ["media/", "*.tmp"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        cfg.save(&path).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().targets[0].exclude,
            ["media/", "*.tmp"]
        );
        // A bad pattern is bad input naming the target and the index.
        let bad = text.replace("\"*.tmp\"", "\"!\"");
        let err = Config::parse(bad.as_bytes(), Path::new("config.yaml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            err.downcast_ref::<crate::error::InputError>().is_some(),
            "{msg}"
        );
        assert!(
            msg.contains("config.yaml: target w: exclude[1]: \"!\""),
            "{msg}"
        );
    }

    #[test]
    fn bad_excludes_are_refused_with_their_index() {
        for bad in ["!", "!  ", "/", "!/"] {
            let text = format!("exclude:\n  - a\n  - b\n  - c\n  - {bad:?}\n");
            let err = Config::parse(text.as_bytes(), Path::new("config.yaml")).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                err.downcast_ref::<crate::error::InputError>().is_some(),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("config.yaml: exclude[3]: {bad:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn mirror_uploads_accepts_1_to_64_and_refuses_the_rest_as_bad_input() {
        let parse = |n: &str| {
            let text = format!("mirrors:\n  - {{name: m, url: \"file:///x\", uploads: {n}}}\n");
            Config::parse(text.as_bytes(), Path::new("config.yaml"))
        };
        for ok in [1, 8, 64] {
            let c = parse(&ok.to_string()).unwrap();
            assert_eq!(c.mirrors[0].uploads, Some(ok));
        }
        for bad in ["0", "65", "1000"] {
            let err = parse(bad).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                err.downcast_ref::<crate::error::InputError>().is_some(),
                "{msg}"
            );
            assert_eq!(
                msg,
                format!(
                    "config.yaml: mirror m: uploads is {bad}; set it to a number from 1 to 64, or remove the line for the default"
                )
            );
        }
        // Not a number: refused with its line and column, like any mistyped value.
        let msg = format!("{:#}", parse("many").unwrap_err());
        assert!(msg.starts_with("config.yaml:2:"), "{msg}");
    }

    #[test]
    fn extra_policy_top_level_and_per_target() {
        use crate::plan::ExtraPolicy;
        let parse = |t: &str| Config::parse(t.as_bytes(), Path::new("c.yaml"));
        let text = "extra: keep\ntargets:\n  - {name: a, login: a@h, remote_path: /p}\n  - {name: b, login: b@h, remote_path: /q, extra: delete}\nmirrors:\n  - {name: m, url: \"file:///x\"}\n";
        let c = parse(text).unwrap();
        assert_eq!(c.extra_for("a"), ExtraPolicy::Keep);
        assert_eq!(c.extra_for("b"), ExtraPolicy::Delete, "per target wins");
        assert_eq!(c.extra_for("m"), ExtraPolicy::Refuse, "mirrors cannot keep");
        // Default: refuse; `delete: true` means delete.
        let c = parse("targets:\n  - {name: a, login: a@h, remote_path: /p}\n").unwrap();
        assert_eq!(c.extra_for("a"), ExtraPolicy::Refuse);
        let c =
            parse("delete: true\ntargets:\n  - {name: a, login: a@h, remote_path: /p}\n").unwrap();
        assert_eq!(c.extra_for("a"), ExtraPolicy::Delete);
        // Round trip keeps it.
        let c = parse(text).unwrap();
        let again = serde_saphyr::to_string(&c).unwrap();
        assert!(
            again.contains("extra: keep") && again.contains("extra: delete"),
            "{again}"
        );
        // Bad values and impossible combinations are bad input naming the fix.
        let err = parse("extra: maybe\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("1:8")
                && format!("{err:#}").contains("refuse, keep, delete"),
            "{err:#}"
        );
        let err = parse(
            "targets:\n  - {name: a, login: a@h, remote_path: /p, layout: releases, extra: keep}\n",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("target a") && msg.contains("layout: releases"),
            "{msg}"
        );
        assert!(err.downcast_ref::<crate::error::InputError>().is_some());
        let err = parse("targets:\n  - {name: a, login: a@h, remote_path: /p, no_delete: true, extra: delete}\n").unwrap_err();
        assert!(format!("{err:#}").contains("--no-delete"), "{err:#}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text =
            "targets:\n  - {login: a@h, remote_path: /p}\n  - {login: b@h, remote_path: /q}\n";
        let err = Config::parse(text.as_bytes(), Path::new("c.yaml")).unwrap_err();
        assert!(err.to_string().contains("two targets are named"), "{err}");
    }
}
