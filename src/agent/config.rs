//! A host's pull settings in one file (`pull --config FILE`, e.g. `/etc/offsync/pull.yaml`),
//! so that a configuration-management tool can drop it in.
//!
//! ```yaml
//! version: 1
//! mirror: s3://deploy-bucket/site        # or file:///mnt/mirror, or a directory
//! endpoint: https://s3.example.net       # S3-compatible stores; optional
//! region: eu-west-1                      # optional
//! identity: /etc/offsync/age-identity.txt
//! trust:                                 # writer keys (lines or files), as --trust
//!   - ssh-ed25519 AAAAC3… controller
//! dest: /srv/app
//! layout: releases                       # or in-place (the default)
//! keep: 5
//! delete: true
//! max_delete: 1000
//! interval: 60                           # --watch only
//! exec: /usr/local/bin/app-reload        # the hook, run with /bin/sh -c
//! rollback_on_hook_failure: true
//! status_file: /var/lib/offsync/pull-status.json
//! heartbeat: true                        # hosts/<host_id>.age in the mirror
//! host_id: web-017                       # default: the host name
//! ```
//!
//! Every key is optional; a flag given on the command line wins over its key (`delete` and
//! `rollback_on_hook_failure` are on when either says so). Unknown keys, wrong types and
//! relative paths are bad input (exit 64) with one line naming the file, line and key, like
//! `config.yaml`. The file holds no secret: S3 credentials come from the environment or the
//! AWS profile files, the mirror key from the age identity file, exactly as for `pull`.
//! The file is read only when `--config` names it: a plain `pull URL DEST` never reads
//! anything under /etc.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::cli::PullArgs;
use crate::input_err;
use crate::releases::Layout;

/// The format version this offsync reads.
pub const VERSION: u32 = 1;

fn default_version() -> u32 {
    VERSION
}

/// `pull.yaml` (see the module docs); the fields mean what the `pull` flags of the same
/// name mean.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Format version (1).
    #[serde(default = "default_version")]
    pub version: u32,
    /// The mirror URL (`s3://BUCKET/PREFIX`, `file:///DIR` or an absolute directory).
    pub mirror: Option<String>,
    /// S3 endpoint for S3-compatible stores.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// The age identity file that opens the mirror key (absolute).
    pub identity: Option<PathBuf>,
    /// Writer keys whose signatures this host accepts: `ssh-ed25519 …` lines or files.
    #[serde(default)]
    pub trust: Vec<String>,
    /// The directory to keep up to date (absolute).
    pub dest: Option<PathBuf>,
    /// `in-place` or `releases`.
    pub layout: Option<Layout>,
    /// Releases to keep (layout releases), at least 1.
    pub keep: Option<u64>,
    /// Delete DEST-only paths.
    #[serde(default)]
    pub delete: bool,
    /// The mass-delete guard's limit.
    pub max_delete: Option<u64>,
    /// Seconds between checks with `--watch` (1 to 86400).
    pub interval: Option<u64>,
    /// The post-switch hook (`--exec`).
    pub exec: Option<String>,
    /// Switch back when the hook fails (`--rollback-on-hook-failure`).
    #[serde(default)]
    pub rollback_on_hook_failure: bool,
    /// The status file (`--status-file`, absolute).
    pub status_file: Option<PathBuf>,
    /// Write heartbeats to the mirror (`--heartbeat`).
    #[serde(default)]
    pub heartbeat: bool,
    /// The heartbeat's name (`--host-id`).
    pub host_id: Option<String>,
}

impl PullConfig {
    /// Read and check `path` (bad content: exit 64; a missing file: exit 64 too, naming it).
    pub fn load(path: &Path) -> Result<PullConfig> {
        let Some(bytes) = crate::fsutil::read_optional(path)? else {
            return Err(input_err!(
                "--config {}: no such file; check the path (a plain `pull URL DEST` needs no config file)",
                path.display()
            ));
        };
        Self::parse(&bytes, path)
    }

    /// Parse and check config text read from `path`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<PullConfig> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| input_err!("{} is not UTF-8 text", path.display()))?;
        let cfg: PullConfig = if text.trim().is_empty() {
            PullConfig::default()
        } else {
            crate::config::parse_yaml(text, path)?
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let file = path.display();
        if self.version != VERSION {
            return Err(input_err!(
                "{file}: unsupported version {} (this offsync reads version {VERSION})",
                self.version
            ));
        }
        if let Some(m) = &self.mirror {
            crate::location::Location::parse(m).map_err(|e| input_err!("{file}: mirror: {e:#}"))?;
        }
        for (key, p) in [
            ("dest", &self.dest),
            ("identity", &self.identity),
            ("status_file", &self.status_file),
        ] {
            if let Some(p) = p
                && !p.is_absolute()
            {
                return Err(input_err!(
                    "{file}: {key}: {} is not an absolute path; write it from /",
                    p.display()
                ));
            }
        }
        if self.keep == Some(0) {
            return Err(input_err!(
                "{file}: keep: must be at least 1 (the release `current` points at is always kept)"
            ));
        }
        if let Some(i) = self.interval
            && !(1..=86400).contains(&i)
        {
            return Err(input_err!(
                "{file}: interval: {i} is out of range; set a number of seconds from 1 to 86400"
            ));
        }
        if self.exec.as_deref().is_some_and(|e| e.trim().is_empty()) {
            return Err(input_err!(
                "{file}: exec: is empty; name the command to run, or remove the line"
            ));
        }
        Ok(())
    }

    /// Fill what the command line left unset (see the module docs).
    pub fn apply_to(self, args: &mut PullArgs) -> Result<()> {
        args.url = args.url.take().or(self.mirror);
        args.dest = args.dest.take().or(self.dest);
        args.identity = args.identity.take().or(self.identity);
        if args.trust.iter().all(|t| t.trim().is_empty()) {
            args.trust = self.trust;
        }
        args.s3.endpoint = args.s3.endpoint.take().or(self.endpoint);
        args.s3.region = args.s3.region.take().or(self.region);
        args.layout = args.layout.or(self.layout);
        if args.layout != Some(Layout::InPlace) && !args.rollback {
            args.keep = args.keep.or(self.keep);
        }
        if !args.rollback {
            args.delete |= self.delete;
            args.max_delete = args.max_delete.or(self.max_delete);
        }
        if args.watch {
            args.interval = args.interval.or(self.interval);
        }
        // The hook and the status file belong to pulls that change DEST: a --rollback or a
        // --dry-run with the same file leaves them out.
        if !args.rollback && !args.dry_run {
            if args.exec.is_none() {
                args.exec = self.exec;
                args.rollback_on_hook_failure |= self.rollback_on_hook_failure;
            }
            args.status_file = args.status_file.take().or(self.status_file);
            args.heartbeat |= self.heartbeat;
            args.host_id = args.host_id.take().or(self.host_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PullConfig> {
        PullConfig::parse(text.as_bytes(), Path::new("pull.yaml"))
    }

    fn is_input(e: &anyhow::Error) -> bool {
        e.downcast_ref::<crate::error::InputError>().is_some()
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            "version: 1\nmirror: s3://b/p\nendpoint: http://127.0.0.1:9000\nregion: r\nidentity: /etc/offsync/id.txt\ntrust: ['ssh-ed25519 AAAA x']\ndest: /srv/app\nlayout: releases\nkeep: 3\ndelete: true\nmax_delete: 10\ninterval: 5\nexec: /bin/true\nrollback_on_hook_failure: true\nstatus_file: /run/s.json\n",
        )
        .unwrap();
        assert_eq!(c.mirror.as_deref(), Some("s3://b/p"));
        assert_eq!(c.layout, Some(Layout::Releases));
        assert_eq!(c.keep, Some(3));
        assert_eq!(c.interval, Some(5));
        assert!(c.delete && c.rollback_on_hook_failure);
    }

    #[test]
    fn unknown_keys_are_bad_input_naming_the_key_and_line() {
        let e = parse("mirror: s3://b/p\ndestination: /srv/app\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(is_input(&e), "{msg}");
        assert!(msg.starts_with("pull.yaml:2:"), "{msg}");
        assert!(msg.contains("destination"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }

    #[test]
    fn relative_paths_bad_ranges_and_bad_urls_are_bad_input() {
        for (text, needle) in [
            ("dest: srv/app\n", "dest: srv/app is not an absolute path"),
            ("identity: id.txt\n", "identity: id.txt"),
            ("interval: 0\n", "interval: 0 is out of range"),
            ("keep: 0\n", "keep: must be at least 1"),
            ("exec: ' '\n", "exec: is empty"),
            ("mirror: ftp://x\n", "mirror:"),
            ("version: 2\n", "unsupported version 2"),
        ] {
            let e = parse(text).unwrap_err();
            let msg = format!("{e:#}");
            assert!(is_input(&e), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }
}
