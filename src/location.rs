//! Where a mirror lives: `s3://BUCKET/PREFIX`, `file:///DIR` or an absolute directory. A plain
//! value, parsed and validated without touching the store, so `config.yaml` can be checked on
//! load without depending on the mirror machinery.

use anyhow::Result;
use std::path::{Path, PathBuf};

/// Where a mirror lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

impl Location {
    /// Parse `s3://bucket/prefix`, `file:///abs/path` or an absolute directory path.
    pub fn parse(url: &str) -> Result<Location> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = !bucket.is_empty()
                && bucket.len() <= 63
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(crate::input_err!(
                    "mirror URL {url:?}: {bucket:?} is not an S3 bucket name; use s3://BUCKET/PREFIX with a lowercase bucket name"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
                return Err(crate::input_err!(
                    "mirror URL {url:?}: the prefix must not contain `.`, `..` or empty segments"
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => p,
            None if url.contains("://") => {
                return Err(crate::input_err!(
                    "mirror URL {url:?}: unsupported scheme; use s3://BUCKET/PREFIX, file:///DIR or an absolute directory"
                ));
            }
            None => url,
        };
        let p = crate::context::expand_tilde(Path::new(path))?;
        if !p.is_absolute() {
            return Err(crate::input_err!(
                "mirror URL {url:?}: a local mirror needs an absolute directory (or file:///DIR)"
            ));
        }
        Ok(Location::Local(p))
    }

    /// The canonical text form (`s3://bucket/prefix` or `file:///dir`).
    pub fn url(&self) -> String {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Location::Local(p) => format!("file://{}", p.display()),
        }
    }
}
