//! Snapshot manifests: one per generation, `snapshots/<generation, 10 digits>.age`.
//!
//! Plaintext layout (before age encryption to the mirror key): one line of compact JSON
//! (format `offsync-mirror-snapshot/1`), then `mac <hex>` — BLAKE3-keyed over the JSON line
//! with the mirror's MAC key. The chain digest of a generation is BLAKE3 of its whole
//! plaintext; each snapshot records its predecessor's, so a reader that remembers one
//! generation can check every later one.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::crypto::MirrorKey;
use crate::plan::manifest::{Entry, Kind, Manifest};

pub const FORMAT: &str = "offsync-mirror-snapshot/1";

/// The object name for a snapshot generation.
pub fn snapshot_path(generation: u64) -> String {
    format!("snapshots/{generation:010}.age")
}

/// The generation a snapshot object name stands for.
pub fn parse_snapshot_path(path: &str) -> Option<u64> {
    let g = path.strip_prefix("snapshots/")?.strip_suffix(".age")?;
    (g.len() == 10 && g.bytes().all(|b| b.is_ascii_digit()))
        .then(|| g.parse().ok())
        .flatten()
}

/// The object name for an object id.
pub fn object_path(id: &str) -> String {
    format!("objects/{}/{id}", &id[..2])
}

/// One path in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapEntry {
    /// Lossy text of the path (exact bytes in `path_hex` when not UTF-8).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub mode: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Object id (`objects/<id[0..2]>/<id>`), files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Size of the stored (encrypted) object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    /// Symlink target, as text or hex when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
}

use crate::plan::{decode_hex as unhex, encode_path as text_and_hex};

fn exact(text: &str, hex: &Option<String>) -> Result<Vec<u8>> {
    match hex {
        Some(h) => unhex(h).context("a snapshot entry has invalid hex"),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl SnapEntry {
    pub fn from_entry(path: &[u8], e: &Entry, object: Option<(String, u64)>) -> SnapEntry {
        let (p, ph) = text_and_hex(path);
        let mut s = SnapEntry {
            path: p,
            path_hex: ph,
            kind: e.kind_name().to_string(),
            mode: e.mode,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            size: None,
            blake3: None,
            object: None,
            stored_size: None,
            target: None,
            target_hex: None,
        };
        match &e.kind {
            Kind::File { size, .. } => {
                s.size = Some(*size);
                s.blake3 = e.hash_hex();
                if let Some((id, stored)) = object {
                    s.object = Some(id);
                    s.stored_size = Some(stored);
                }
            }
            Kind::Symlink { target } => {
                let (t, th) = text_and_hex(target);
                s.target = Some(t);
                s.target_hex = th;
            }
            Kind::Dir => {}
        }
        s
    }

    pub fn raw_path(&self) -> Result<Vec<u8>> {
        exact(&self.path, &self.path_hex)
    }

    /// The entry as the planner sees it.
    pub fn to_entry(&self) -> Result<Entry> {
        let kind = match self.kind.as_str() {
            "file" => {
                let hash = self
                    .blake3
                    .as_deref()
                    .and_then(unhex)
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .with_context(|| {
                        format!("snapshot entry {:?} has no valid blake3", self.path)
                    })?;
                Kind::File {
                    size: self.size.unwrap_or(0),
                    hash,
                }
            }
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink {
                target: exact(self.target.as_deref().unwrap_or(""), &self.target_hex)?,
            },
            other => anyhow::bail!("snapshot entry {:?} has unknown kind {other:?}", self.path),
        };
        Ok(Entry {
            kind,
            mode: self.mode,
            mtime_s: self.mtime_s,
            mtime_ns: self.mtime_ns,
        })
    }
}

/// The source a snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapSource {
    pub path: String,
    pub digest: String,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    pub generation: u64,
    /// UTC, RFC 3339.
    pub created: String,
    /// Chain digest of the previous generation (`None` for the first).
    pub previous: Option<String>,
    pub source: SnapSource,
    /// Id of the mirror key that wrote it (public fingerprint).
    pub key_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Set by `mirror rekey`: this generation's chain digest before it was re-encrypted, so
    /// machines that remember the old digest accept the rewrite (the MAC proves a holder of
    /// the new key made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekeyed_from: Option<String>,
    /// Sorted by exact path bytes.
    pub entries: Vec<SnapEntry>,
}

impl Snapshot {
    /// Sealed plaintext: JSON line + MAC line.
    pub fn to_plaintext(&self, key: &MirrorKey) -> Vec<u8> {
        let json = serde_json::to_string(self).expect("a snapshot serialises");
        let mac = key.mac(json.as_bytes());
        format!("{json}\nmac {mac}\n").into_bytes()
    }

    /// Parse and authenticate plaintext.
    pub fn from_plaintext(text: &[u8], key: &MirrorKey, name: &str) -> Result<Snapshot> {
        let text = std::str::from_utf8(text).with_context(|| format!("{name} is not text"))?;
        let (json, rest) = text
            .split_once('\n')
            .with_context(|| format!("{name} has no MAC line"))?;
        let mac = rest
            .trim_end()
            .strip_prefix("mac ")
            .with_context(|| format!("{name} has no MAC line"))?;
        if key.mac(json.as_bytes()) != mac {
            anyhow::bail!(
                "{name} failed authentication (its MAC does not match the mirror key): it was not written by a holder of the mirror key"
            );
        }
        let s: Snapshot =
            serde_json::from_str(json).with_context(|| format!("{name} is not a snapshot"))?;
        if s.format != FORMAT {
            anyhow::bail!("{name} has format {:?}, expected {FORMAT}", s.format);
        }
        Ok(s)
    }

    /// Entries keyed by exact path.
    pub fn entry_map(&self) -> Result<BTreeMap<Vec<u8>, &SnapEntry>> {
        self.entries
            .iter()
            .map(|e| Ok((e.raw_path()?, e)))
            .collect()
    }

    /// The listing the planner compares the source with.
    pub fn listing(&self) -> Result<BTreeMap<Vec<u8>, Entry>> {
        self.entries
            .iter()
            .map(|e| Ok((e.raw_path()?, e.to_entry()?)))
            .collect()
    }

    /// The snapshot as a source manifest (for `pull`, which plans a directory against it).
    pub fn to_manifest(&self, root: PathBuf) -> Result<Manifest> {
        let mut entries = self.listing()?;
        // A snapshot written before offsync stripped setuid/setgid bits may still hold them;
        // pull never recreates them (see `plan::manifest`).
        let mut modes_stripped = Vec::new();
        for (p, e) in entries.iter_mut() {
            if e.mode & crate::plan::manifest::SETID_BITS != 0 {
                e.mode &= !crate::plan::manifest::SETID_BITS;
                modes_stripped.push(p.clone());
            }
        }
        let digest = crate::plan::manifest::digest(&entries);
        Ok(Manifest {
            root,
            entries,
            skipped: Vec::new(),
            modes_stripped,
            digest,
        })
    }

    /// Build a snapshot from entries (computes files/bytes; sorts).
    pub fn assemble(
        generation: u64,
        previous: Option<String>,
        source: SnapSource,
        key_id: String,
        map: BTreeMap<Vec<u8>, SnapEntry>,
    ) -> Snapshot {
        let entries: Vec<SnapEntry> = map.into_values().collect();
        let files = entries.iter().filter(|e| e.kind != "dir").count() as u64;
        let bytes = entries.iter().filter_map(|e| e.size).sum();
        Snapshot {
            format: FORMAT.to_string(),
            generation,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            previous,
            source,
            key_id,
            files,
            bytes,
            rekeyed_from: None,
            entries,
        }
    }
}

/// The chain digest of a snapshot's plaintext.
pub fn chain_digest(plaintext: &[u8]) -> String {
    blake3::hash(plaintext).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_entries_round_trip() {
        assert_eq!(snapshot_path(7), "snapshots/0000000007.age");
        assert_eq!(parse_snapshot_path("snapshots/0000000007.age"), Some(7));
        assert_eq!(parse_snapshot_path("snapshots/7.age"), None);
        let e = Entry {
            kind: Kind::Symlink {
                target: b"t\xff".to_vec(),
            },
            mode: 0o777,
            mtime_s: 5,
            mtime_ns: 6,
        };
        let s = SnapEntry::from_entry(b"a\xfe", &e, None);
        assert_eq!(s.raw_path().unwrap(), b"a\xfe");
        assert_eq!(s.to_entry().unwrap(), e);
        let k = MirrorKey::generate();
        let snap = Snapshot::assemble(
            1,
            None,
            SnapSource {
                path: "/s".into(),
                digest: "d".into(),
            },
            k.key_id(),
            [(b"a\xfe".to_vec(), s)].into_iter().collect(),
        );
        let pt = snap.to_plaintext(&k);
        assert_eq!(Snapshot::from_plaintext(&pt, &k, "x").unwrap(), snap);
        let forged = String::from_utf8(pt).unwrap().replace("\"/s\"", "\"/t\"");
        assert!(Snapshot::from_plaintext(forged.as_bytes(), &k, "x").is_err());
    }
}
