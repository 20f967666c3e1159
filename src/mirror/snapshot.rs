//! Snapshot manifests: one per generation, `snapshots/<generation, 10 digits>.age`.
//!
//! Plaintext layout (before age encryption to the mirror key):
//! 1. one line of compact JSON (format `offsync-mirror-snapshot/1`), ending in `\n`;
//! 2. `mac <hex>` — BLAKE3-keyed over the JSON line with the mirror's MAC key;
//! 3. the writer's signature: an armored SSH signature (`-----BEGIN SSH SIGNATURE-----` …
//!    `-----END SSH SIGNATURE-----`, OpenSSH's SSHSIG format, namespace `offsync-mirror`,
//!    SHA-512) over exactly the bytes of line 1 *including its newline*. Snapshots written
//!    before signatures existed end after line 2 ("unsigned").
//!
//! Why the signature signs line 1 and sits inside the encrypted envelope:
//! - line 1 is everything a reader acts on (generation, chain link, mirror key id, every
//!   path, mode, hash and object id); the MAC adds nothing a signature does not, and
//!   `age -d … | head -n 1` produces those bytes by hand, so `ssh-keygen -Y verify` checks
//!   them without offsync;
//! - inside the envelope, the snapshot stays one object written create-only (no window where
//!   a snapshot exists without its signature, no second object two writers could race for),
//!   and the bucket does not show who wrote what;
//! - the MAC key is derived from the mirror key, which every recipient can open: the MAC only
//!   proves "written by a holder of the mirror key". The signature proves "written by a
//!   writer", whose private key never leaves its controller.
//!
//! The chain digest of a generation is BLAKE3 of its whole plaintext (signature included);
//! each snapshot records its predecessor's, so a reader that remembers one generation can
//! check every later one, and a signed generation vouches for every generation it chains to.
//!
//! [`Snapshot::validate`] is the one place that decides whether a snapshot's entries are
//! safe to act on; every read runs it before a caller sees the snapshot.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::crypto::MirrorKey;
use crate::plan::manifest::{Entries, Entry, Kind, Manifest};
use crate::sanitize;

pub const FORMAT: &str = "offsync-mirror-snapshot/1";

/// The SSHSIG namespace of snapshot signatures (`ssh-keygen -Y verify -n offsync-mirror`).
pub const SIG_NAMESPACE: &str = "offsync-mirror";

/// Mode bits a snapshot may carry: permissions plus setuid/setgid/sticky.
pub const MODE_BITS: u32 = 0o7777;
/// setuid, setgid and sticky: stripped when restoring unless asked to keep them.
pub const SPECIAL_BITS: u32 = 0o7000;
/// Sanity limits for what a snapshot may describe.
pub const MAX_ENTRIES: usize = 50_000_000;
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_TARGET_BYTES: usize = 4096;
/// 1 PiB: larger than any file offsync will meet, small enough that sums cannot overflow.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

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

/// The newest generation in `store`, from one LIST of `snapshots/` (no object is read and no
/// signature checked: a cheap "anything new?" for `pull --watch`, never a reason to trust a
/// snapshot; `Mirror::latest` does that). `Mirror::generations` lists the same names.
pub fn newest_generation(store: &super::store::Store) -> anyhow::Result<Option<u64>> {
    Ok(store
        .list("snapshots")?
        .iter()
        .filter_map(|m| parse_snapshot_path(&m.path))
        .max())
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
    /// Size of the stored (encrypted) object when the content was stored as a single
    /// object; absent when it went into a pack (`offsync-mirror/2`). Informational: where an
    /// object is stored is answered by the pack index and the listing, never by a snapshot.
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
    pub fn from_entry(path: &[u8], e: &Entry, object: Option<(String, Option<u64>)>) -> SnapEntry {
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
                    s.stored_size = stored;
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
    /// Sealed plaintext: JSON line, MAC line and (with `signer`) the writer's signature.
    pub fn to_plaintext(
        &self,
        key: &MirrorKey,
        signer: Option<&ssh_key::PrivateKey>,
    ) -> Result<Vec<u8>> {
        let json = serde_json::to_string(self).expect("a snapshot serialises");
        let mac = key.mac(json.as_bytes());
        let mut out = format!("{json}\nmac {mac}\n").into_bytes();
        if let Some(k) = signer {
            let sig = k
                .sign(
                    SIG_NAMESPACE,
                    ssh_key::HashAlg::Sha512,
                    &out[..json.len() + 1],
                )
                .context("cannot sign the snapshot with this controller's key")?;
            let pem = sig
                .to_pem(ssh_key::LineEnding::LF)
                .context("cannot encode the snapshot signature")?;
            out.extend_from_slice(pem.as_bytes());
            if !pem.ends_with('\n') {
                out.push(b'\n');
            }
        }
        Ok(out)
    }

    /// Parse and authenticate plaintext: the MAC must match the mirror key and a signature,
    /// when present, must verify. Returns the snapshot and the key that signed it (`None`:
    /// unsigned). Whether that key is trusted is the caller's decision.
    pub fn from_plaintext(
        text: &[u8],
        key: &MirrorKey,
        name: &str,
    ) -> Result<(Snapshot, Option<ssh_key::PublicKey>)> {
        let text = std::str::from_utf8(text).with_context(|| format!("{name} is not text"))?;
        let (json, rest) = text
            .split_once('\n')
            .with_context(|| format!("{name} has no MAC line"))?;
        let (mac_line, sig) = rest.split_once('\n').unwrap_or((rest, ""));
        let mac = mac_line
            .strip_prefix("mac ")
            .with_context(|| format!("{name} has no MAC line"))?;
        if key.mac(json.as_bytes()) != mac {
            anyhow::bail!(
                "{name} failed authentication (its MAC does not match the mirror key): it was not written by a holder of the mirror key"
            );
        }
        let signer = if sig.trim().is_empty() {
            None
        } else {
            let parsed = ssh_key::SshSig::from_pem(sig.as_bytes()).map_err(|_| {
                anyhow::anyhow!("{name} has a malformed writer signature; refusing it")
            })?;
            if parsed.namespace() != SIG_NAMESPACE {
                anyhow::bail!(
                    "{name} is signed for namespace {:?}, not {SIG_NAMESPACE:?}; refusing it",
                    sanitize::for_terminal(parsed.namespace())
                );
            }
            let signer = ssh_key::PublicKey::from(parsed.public_key().clone());
            signer
                .verify(SIG_NAMESPACE, &text.as_bytes()[..json.len() + 1], &parsed)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{name}: the writer signature does not verify (the snapshot was changed after it was signed); refusing it"
                    )
                })?;
            Some(signer)
        };
        let s: Snapshot =
            serde_json::from_str(json).with_context(|| format!("{name} is not a snapshot"))?;
        if s.format != FORMAT {
            anyhow::bail!(
                "{name} has format {:?}, expected {FORMAT}",
                sanitize::for_terminal(&s.format)
            );
        }
        Ok((s, signer))
    }

    /// Refuse a snapshot that would make a reader write outside DEST, through a symlink, or
    /// something no writer produces. Checked on every read, before any caller acts on it, and
    /// by writers before they publish. The error names the first offending entry.
    pub fn validate(&self, name: &str) -> Result<()> {
        let refuse = |path: &[u8], why: &str| -> anyhow::Error {
            anyhow::anyhow!(
                "{name} (generation {}) is refused as a whole: entry \"{}\" {why}; nothing was written",
                self.generation,
                sanitize::bytes_for_terminal(path)
            )
        };
        if self.entries.len() > MAX_ENTRIES {
            anyhow::bail!(
                "{name} lists {} entries (more than {MAX_ENTRIES}); refusing it, nothing was written",
                self.entries.len()
            );
        }
        let mut dirs: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let raws: Vec<Vec<u8>> = self
            .entries
            .iter()
            .map(|e| {
                e.raw_path()
                    .map_err(|_| refuse(e.path.as_bytes(), "has an invalid path_hex"))
            })
            .collect::<Result<_>>()?;
        let mut files = 0u64;
        let mut bytes = 0u64;
        let mut previous: Option<&[u8]> = None;
        for (e, raw) in self.entries.iter().zip(&raws) {
            let raw = raw.as_slice();
            check_path(raw).map_err(|why| refuse(raw, why))?;
            if text_and_hex(raw) != (e.path.clone(), e.path_hex.clone()) {
                return Err(refuse(
                    raw,
                    "has a path text that disagrees with its exact bytes",
                ));
            }
            if previous.is_some_and(|p| p >= raw) {
                return Err(refuse(
                    raw,
                    "is listed twice or out of order (entries must be unique and sorted)",
                ));
            }
            previous = Some(raw);
            if let Some(i) = raw.iter().rposition(|&b| b == b'/')
                && !dirs.contains(&raw[..i])
            {
                return Err(refuse(
                    raw,
                    "has a parent that is not a directory entry of this snapshot (a symlink or file is never a parent)",
                ));
            }
            if e.mode & !MODE_BITS != 0 {
                return Err(refuse(
                    raw,
                    "has a mode with bits beyond the permission bits",
                ));
            }
            if e.mtime_ns >= 1_000_000_000 {
                return Err(refuse(raw, "has an invalid mtime"));
            }
            let has_file_fields = e.size.is_some()
                || e.blake3.is_some()
                || e.object.is_some()
                || e.stored_size.is_some();
            let has_target = e.target.is_some() || e.target_hex.is_some();
            match e.kind.as_str() {
                "dir" => {
                    if has_file_fields || has_target {
                        return Err(refuse(raw, "is a directory with file or symlink fields"));
                    }
                    dirs.insert(raw);
                }
                "file" => {
                    if has_target {
                        return Err(refuse(raw, "is a file with a symlink target"));
                    }
                    let Some(size) = e.size else {
                        return Err(refuse(raw, "is a file without a size"));
                    };
                    if !e.blake3.as_deref().is_some_and(is_hex64) {
                        return Err(refuse(raw, "is a file without a valid BLAKE3"));
                    }
                    if !e.object.as_deref().is_some_and(is_hex64) {
                        return Err(refuse(raw, "is a file without a valid object id"));
                    }
                    if size > MAX_FILE_SIZE {
                        return Err(refuse(raw, "claims an impossible size"));
                    }
                    if e.stored_size
                        .is_some_and(|stored| !super::crypto::plausible_len(size, stored))
                    {
                        return Err(refuse(
                            raw,
                            "has a stored size that cannot be an age file of its size",
                        ));
                    }
                    files += 1;
                    bytes += size;
                }
                "symlink" => {
                    if has_file_fields {
                        return Err(refuse(raw, "is a symlink with file fields"));
                    }
                    let target = exact(e.target.as_deref().unwrap_or(""), &e.target_hex)
                        .map_err(|_| refuse(raw, "has an invalid target_hex"))?;
                    if target.is_empty() || target.contains(&0) || target.len() > MAX_TARGET_BYTES {
                        return Err(refuse(
                            raw,
                            "has an empty, over-long or NUL-containing symlink target",
                        ));
                    }
                    if text_and_hex(&target)
                        != (e.target.clone().unwrap_or_default(), e.target_hex.clone())
                    {
                        return Err(refuse(
                            raw,
                            "has a target text that disagrees with its exact bytes",
                        ));
                    }
                    files += 1;
                }
                _ => return Err(refuse(raw, "has an unknown kind")),
            }
        }
        if files != self.files || bytes != self.bytes {
            anyhow::bail!(
                "{name} (generation {}) says {} files and {} bytes but lists {files} and {bytes}; refusing it, nothing was written",
                self.generation,
                self.files,
                self.bytes
            );
        }
        Ok(())
    }

    /// Entries keyed by exact path.
    pub fn entry_map(&self) -> Result<BTreeMap<Vec<u8>, &SnapEntry>> {
        self.entries
            .iter()
            .map(|e| Ok((e.raw_path()?, e)))
            .collect()
    }

    /// The listing the planner compares the source with.
    pub fn listing(&self) -> Result<Entries> {
        self.entries
            .iter()
            .map(|e| Ok((e.raw_path()?, e.to_entry()?)))
            .collect()
    }

    /// The snapshot as a source manifest (for `pull`, which plans a directory against it).
    pub fn to_manifest(&self, root: PathBuf) -> Result<Manifest> {
        self.to_manifest_with(root, false)
    }

    /// [`Self::to_manifest`]; `keep_special`: keep setuid/setgid/sticky bits (only `mirror
    /// restore --keep-special-modes` asks for them).
    pub fn to_manifest_with(&self, root: PathBuf, keep_special: bool) -> Result<Manifest> {
        let mut entries = self.listing()?;
        // A snapshot may hold setuid/setgid/sticky bits (written before offsync stripped them,
        // or by a hostile writer); pull never recreates them (see `restore`).
        let mut modes_stripped = Vec::new();
        for (p, e) in entries.iter_mut() {
            if !keep_special && e.mode & SPECIAL_BITS != 0 {
                e.mode &= !SPECIAL_BITS;
                modes_stripped.push(p.to_vec());
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

/// Why `raw` is not a clean relative path (no empty, `.` or `..` component, no leading `/`,
/// no NUL, bounded lengths).
fn check_path(raw: &[u8]) -> Result<(), &'static str> {
    if raw.is_empty() {
        return Err("has an empty path");
    }
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    if raw[0] == b'/' {
        return Err("is an absolute path");
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err("has an over-long path");
    }
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" => return Err("has an empty path component"),
            b"." | b".." => return Err("has a `.` or `..` component"),
            c if c.len() > MAX_NAME_BYTES => return Err("has an over-long name"),
            _ => {}
        }
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        let pt = snap.to_plaintext(&k, None).unwrap();
        assert_eq!(
            Snapshot::from_plaintext(&pt, &k, "x").unwrap(),
            (snap.clone(), None)
        );
        let forged = String::from_utf8(pt).unwrap().replace("\"/s\"", "\"/t\"");
        assert!(Snapshot::from_plaintext(forged.as_bytes(), &k, "x").is_err());

        // Signed: the signer comes back; a change to line 1 breaks the signature even with a
        // recomputed MAC (what a holder of the mirror key can do).
        let writer = crate::keys::generate("w").unwrap();
        let pt = snap.to_plaintext(&k, Some(&writer)).unwrap();
        let (back, signer) = Snapshot::from_plaintext(&pt, &k, "x").unwrap();
        assert_eq!(back, snap);
        assert_eq!(signer.unwrap().key_data(), writer.public_key().key_data());
        let text = String::from_utf8(pt).unwrap();
        let (json, rest) = text.split_once('\n').unwrap();
        let sig = rest.split_once('\n').unwrap().1;
        let json2 = json.replace("\"/s\"", "\"/t\"");
        let forged = format!("{json2}\nmac {}\n{sig}", k.mac(json2.as_bytes()));
        let err = Snapshot::from_plaintext(forged.as_bytes(), &k, "x").unwrap_err();
        assert!(format!("{err}").contains("does not verify"), "{err}");
    }

    fn snap_of(entries: serde_json::Value) -> Snapshot {
        let entries: Vec<SnapEntry> = serde_json::from_value(entries).unwrap();
        let files = entries.iter().filter(|e| e.kind != "dir").count() as u64;
        let bytes = entries.iter().filter_map(|e| e.size).sum();
        Snapshot {
            format: FORMAT.into(),
            generation: 3,
            created: String::new(),
            previous: None,
            source: SnapSource {
                path: "/s".into(),
                digest: "d".into(),
            },
            key_id: "k".into(),
            files,
            bytes,
            rekeyed_from: None,
            entries,
        }
    }

    #[test]
    fn validation_refuses_every_hostile_entry_and_names_it() {
        let h = "ab".repeat(32);
        let file = |p: &str, mode: u32| {
            serde_json::json!({"path": p, "kind": "file", "mode": mode, "mtime_s": 0, "mtime_ns": 0,
                "size": 1, "blake3": h, "object": h, "stored_size": 250})
        };
        let dir = |p: &str| serde_json::json!({"path": p, "kind": "dir", "mode": 0o755, "mtime_s": 0, "mtime_ns": 0});
        let link = |p: &str, t: &str| serde_json::json!({"path": p, "kind": "symlink", "mode": 0o777, "mtime_s": 0, "mtime_ns": 0, "target": t});
        let ok = snap_of(serde_json::json!([
            dir("a"),
            file("a/b", 0o4755),
            link("a/c", "/etc"),
            file("z", 0o644)
        ]));
        ok.validate("s").unwrap();
        let cases = [
            (serde_json::json!([file("../x", 0o644)]), "../x", "`..`"),
            (
                serde_json::json!([dir("sub"), file("sub/../../x", 0o644)]),
                "sub/../../x",
                "`..`",
            ),
            (
                serde_json::json!([file("/tmp/x", 0o644)]),
                "/tmp/x",
                "absolute",
            ),
            (serde_json::json!([file("", 0o644)]), "", "empty"),
            (
                serde_json::json!([dir("a"), file("a//b", 0o644)]),
                "a//b",
                "empty path component",
            ),
            (serde_json::json!([file("./x", 0o644)]), "./x", "`.`"),
            (
                serde_json::json!([file("a\u{0}b", 0o644)]),
                "a\\u{0}b",
                "NUL",
            ),
            (
                serde_json::json!([link("evil", "/elsewhere"), file("evil/planted", 0o644)]),
                "evil/planted",
                "parent",
            ),
            (
                serde_json::json!([file("nodir/x", 0o644)]),
                "nodir/x",
                "parent",
            ),
            (
                serde_json::json!([file("x", 0o644), file("x", 0o644)]),
                "x",
                "twice",
            ),
            (serde_json::json!([file("x", 0o104755)]), "x", "mode"),
            (serde_json::json!([link("l", "")]), "l", "target"),
            (
                serde_json::json!([{"path": "y", "kind": "fifo", "mode": 0o644, "mtime_s": 0, "mtime_ns": 0}]),
                "y",
                "unknown kind",
            ),
            (
                serde_json::json!([{"path": "f", "kind": "file", "mode": 0o644, "mtime_s": 0, "mtime_ns": 0,
                "size": 1, "blake3": h, "object": "../../keys/mirror-key", "stored_size": 250}]),
                "f",
                "object id",
            ),
            (
                serde_json::json!([{"path": "f", "kind": "file", "mode": 0o644, "mtime_s": 0, "mtime_ns": 0,
                "size": 1u64 << 60, "blake3": h, "object": h, "stored_size": 250}]),
                "f",
                "size",
            ),
        ];
        for (entries, path, why) in cases {
            let s = snap_of(entries);
            let err = format!("{:#}", s.validate("snapshots/3.age").unwrap_err());
            assert!(
                err.contains(&format!("{path:?}")) || err.contains(path),
                "{path}: {err}"
            );
            assert!(err.contains(why), "{path}: {err}");
            assert!(err.contains("nothing was written"), "{err}");
        }
        // Counts that disagree with the entries.
        let mut s = ok.clone();
        s.files += 1;
        assert!(s.validate("s").is_err());
    }
}
