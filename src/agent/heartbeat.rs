//! Heartbeats (`pull --heartbeat`): a pulling host reports which generation it holds by
//! writing one small object, `hosts/<host-id>.age`, into the mirror; `offsync mirror fleet
//! NAME` on the controller lists them.
//!
//! The object is the heartbeat's JSON line followed by an SSHSIG signature over it (namespace
//! `offsync-heartbeat`) by the host's own ed25519 key (`$OFFSYNC_HOME/heartbeat_ed25519`,
//! made on first use; never a writer key, so a host that can write heartbeats still cannot
//! publish a snapshot), the whole encrypted with the mirror key like every other object: the
//! store's operator learns no host name. The controller shows each heartbeat with its signing
//! key's fingerprint; a heartbeat that does not decrypt or verify is listed as such, never
//! trusted. A heartbeat is information for the operator, nothing acts on it.
//!
//! Cost: written after a cycle that pulled, and otherwise at most every
//! [`HEARTBEAT_EVERY_SECS`] (it opens the mirror: 2 GETs, then 1 PUT). A host needs write
//! access to `hosts/<its id>.age` only (see the README's S3 policy); prune and rekey never
//! touch `hosts/`.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::mirror::Mirror;
use crate::sanitize;

/// The heartbeat's `format`.
pub const FORMAT: &str = "offsync-heartbeat/1";
/// The SSHSIG namespace of heartbeat signatures.
pub const NAMESPACE: &str = "offsync-heartbeat";
/// Where heartbeats live in the mirror.
pub const PREFIX: &str = "hosts";
/// The longest time between two heartbeats of a running agent.
pub const HEARTBEAT_EVERY_SECS: u64 = 300;
/// The host's heartbeat key, in `$OFFSYNC_HOME`.
pub const KEY_FILE: &str = "heartbeat_ed25519";

/// What a host reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub format: String,
    pub host_id: String,
    /// The host's name (`/proc/sys/kernel/hostname`).
    pub host: String,
    pub version: String,
    /// When it was written (UTC, RFC 3339).
    pub at: String,
    /// The generation DEST holds.
    pub generation: Option<u64>,
    /// The newest generation the host saw in the mirror.
    pub newest_generation: Option<u64>,
    /// The status file's `last_result`.
    pub last_result: String,
    pub consecutive_failures: u32,
    pub failed_generation: Option<u64>,
}

/// `--host-id`: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-` (it becomes an object
/// name). The default is the host name, when it is such a name.
pub fn host_id(explicit: Option<&str>) -> Result<String> {
    let id = explicit
        .map(str::to_string)
        .unwrap_or_else(crate::keys::hostname);
    if crate::releases::valid_id(&id) {
        Ok(id)
    } else {
        Err(crate::input_err!(
            "host id {:?} cannot name a heartbeat object; pass --host-id with 1-64 letters, digits, '.', '_' or '-'",
            sanitize::for_terminal(&id)
        ))
    }
}

/// The object name of `id`'s heartbeat.
pub fn object_path(id: &str) -> String {
    format!("{PREFIX}/{id}.age")
}

/// This host's heartbeat key, created (0600) on first use.
pub fn host_key(home: &Path) -> Result<ssh_key::PrivateKey> {
    let private = home.join(KEY_FILE);
    if !private.exists() {
        crate::fsutil::ensure_private_dir_keep(home)?;
        let key = crate::keys::generate(&format!("offsync-heartbeat@{}", crate::keys::hostname()))?;
        crate::keys::write_pair(&key, &private, &home.join(format!("{KEY_FILE}.pub")))?;
    }
    crate::keys::read_private(&private)
}

/// Sign, encrypt and write `hb` into `mirror`.
pub fn write(mirror: &Mirror, key: &ssh_key::PrivateKey, hb: &Heartbeat) -> Result<()> {
    let json = serde_json::to_string(hb)?;
    let sig = key
        .sign(NAMESPACE, ssh_key::HashAlg::Sha512, json.as_bytes())
        .context("cannot sign the heartbeat")?
        .to_pem(ssh_key::LineEnding::LF)
        .context("cannot encode the heartbeat signature")?;
    let text = format!("{json}\n{sig}");
    let sealed = mirror.key.encrypt(text.as_bytes())?;
    mirror.store.put(&object_path(&hb.host_id), sealed)
}

/// One listed heartbeat: its object name and either the heartbeat with its signing key's
/// fingerprint, or why it cannot be read.
pub type Listed = (String, std::result::Result<(Heartbeat, String), String>);

/// Every heartbeat in `mirror`, sorted by object name.
pub fn read_all(mirror: &Mirror) -> Result<Vec<Listed>> {
    let mut metas = mirror.store.list(PREFIX)?;
    metas.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for m in metas {
        let r = match mirror.store.get(&m.path)? {
            None => continue,
            Some(bytes) => open(mirror, &bytes),
        };
        out.push((m.path.clone(), r));
    }
    Ok(out)
}

/// Decrypt and verify one heartbeat object.
fn open(mirror: &Mirror, bytes: &[u8]) -> std::result::Result<(Heartbeat, String), String> {
    let text = mirror.key.decrypt(bytes).map_err(|_| {
        "does not decrypt with the mirror key (written before a rekey?)".to_string()
    })?;
    let text = String::from_utf8(text).map_err(|_| "not text".to_string())?;
    let (json, pem) = text
        .split_once('\n')
        .ok_or_else(|| "no signature".to_string())?;
    let sig =
        ssh_key::SshSig::from_pem(pem.as_bytes()).map_err(|_| "malformed signature".to_string())?;
    if sig.namespace() != NAMESPACE {
        return Err("signed for another namespace".into());
    }
    let signer = ssh_key::PublicKey::from(sig.public_key().clone());
    signer
        .verify(NAMESPACE, json.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())?;
    let hb: Heartbeat = serde_json::from_str(json).map_err(|_| "not a heartbeat".to_string())?;
    if hb.format != FORMAT {
        return Err(format!(
            "format {:?}, not {FORMAT}",
            sanitize::for_terminal(&hb.format)
        ));
    }
    Ok((hb, crate::keys::fingerprint(&signer)))
}
