//! Keys and encryption for mirrors: age X25519 only.
//!
//! Invariants:
//! - two levels of keys: the *mirror key* (an age X25519 identity) encrypts every object and
//!   snapshot; it is stored in the mirror only as `keys/mirror-key.age`, an age file
//!   encrypted to the recipients (each controller's or host's own identity);
//! - the decrypted key file is a valid age identity file (comments + one
//!   `AGE-SECRET-KEY-1…` line), so recovery by hand is
//!   `age -d -i mine.txt -o mirror.txt keys/mirror-key.age` then
//!   `age -d -i mirror.txt OBJECT`; its `# recipient:` comment lines list who can open it;
//! - object ids are `BLAKE3-keyed(K_id, BLAKE3(plaintext))` with `K_id` derived from the mirror
//!   key, so names reveal nothing about content but identical content is stored once;
//! - snapshots carry a MAC under `K_mac` (also derived from the mirror key): age alone
//!   does not authenticate the sender, and anyone who learnt the mirror's public recipient
//!   could otherwise forge a snapshot. The MAC proves only "a holder of the mirror key", and
//!   every recipient is one: who *wrote* a snapshot is proven by the writer's SSH signature
//!   (see `snapshot`), never by anything derived from the mirror key;
//! - secrets are never formatted into messages; identity files are written 0600.

use age::secrecy::ExposeSecret;
use anyhow::{Context as _, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use crate::fsutil;

/// age's payload chunk size (plaintext bytes per STREAM chunk).
pub const CHUNK: u64 = 64 * 1024;
/// A full STREAM chunk as stored: the plaintext plus its 16-byte Poly1305 tag.
pub const ENCRYPTED_CHUNK: u64 = CHUNK + 16;

/// A parsed X25519 identity plus the text form of its recipient.
pub struct Identity {
    pub identity: age::x25519::Identity,
    pub recipient: String,
}

/// Generate a new identity.
pub fn generate() -> Identity {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    Identity {
        identity,
        recipient,
    }
}

/// Parse `age1…` recipient text.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        crate::input_err!(
            "{:?} is not an age X25519 recipient ({e}); pass the `age1…` line that `offsync mirror add` or `age-keygen -y` prints",
            crate::sanitize::for_terminal(s)
        )
    })
}

/// Every `AGE-SECRET-KEY-1…` line in an identity file.
pub fn parse_identities(text: &str, origin: &str) -> Result<Vec<Identity>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = age::x25519::Identity::from_str(line).map_err(|_| {
            crate::input_err!(
                "{origin}: a line is not an age X25519 identity (AGE-SECRET-KEY-1…); use a file written by `offsync mirror add` or `age-keygen`"
            )
        })?;
        let recipient = identity.to_public().to_string();
        out.push(Identity {
            identity,
            recipient,
        });
    }
    if out.is_empty() {
        return Err(crate::input_err!(
            "{origin} holds no age identity; use a file written by `offsync mirror add` or `age-keygen`"
        ));
    }
    Ok(out)
}

/// Read an identity file.
pub fn read_identity_file(path: &Path) -> Result<Vec<Identity>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::input_err!(
            "identity file {}: {e}; pass --identity FILE or set OFFSYNC_IDENTITY_FILE",
            path.display()
        )
    })?;
    parse_identities(&text, &path.display().to_string())
}

/// The identity file text for `id` (age-keygen's layout).
pub fn identity_file_text(id: &Identity, what: &str) -> String {
    format!(
        "# {what}\n# created: {}\n# public key: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        id.recipient,
        id.identity.to_string().expose_secret()
    )
}

/// Load this controller's identity from `path`, generating it (0600) the first time.
/// Returns the identity and whether it was created now.
pub fn load_or_create_identity(path: &Path) -> Result<(Identity, bool)> {
    if let Some(bytes) = fsutil::read_optional(path)? {
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not text", path.display()))?;
        let mut ids = parse_identities(&text, &path.display().to_string())?;
        return Ok((ids.remove(0), false));
    }
    let id = generate();
    fsutil::atomic_write(
        path,
        identity_file_text(&id, "offsync controller age identity (keep secret)").as_bytes(),
        fsutil::FILE_MODE,
    )?;
    Ok((id, true))
}

/// Encrypt `data` to `recipients`.
pub fn encrypt_to(recipients: &[age::x25519::Recipient], data: &[u8]) -> Result<Vec<u8>> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .context("no recipients to encrypt to")?;
    let mut out = Vec::with_capacity(data.len() + 256);
    let mut w = enc.wrap_output(&mut out)?;
    w.write_all(data)?;
    w.finish()?;
    Ok(out)
}

/// Why decryption failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no matching key")]
    NoMatchingKey,
    #[error("authentication failed (the data was changed, truncated or is not an age file)")]
    Corrupt,
}

/// Decrypt a whole age file with any of `identities`.
pub fn decrypt_with(
    identities: &[&age::x25519::Identity],
    data: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let dec = age::Decryptor::new_buffered(data).map_err(|_| OpenError::Corrupt)?;
    let mut r = dec
        .decrypt(identities.iter().map(|i| *i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatchingKey,
            _ => OpenError::Corrupt,
        })?;
    let mut out = Vec::with_capacity(data.len());
    r.read_to_end(&mut out).map_err(|_| OpenError::Corrupt)?;
    Ok(out)
}

/// The mirror key and the secrets derived from it.
pub struct MirrorKey {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    id_key: [u8; 32],
    mac_key: [u8; 32],
}

impl MirrorKey {
    pub fn generate() -> MirrorKey {
        Self::from_identity(age::x25519::Identity::generate())
    }

    fn from_identity(identity: age::x25519::Identity) -> MirrorKey {
        let secret = identity.to_string();
        let bytes = secret.expose_secret().as_bytes();
        MirrorKey {
            recipient: identity.to_public(),
            id_key: blake3::derive_key("offsync mirror 2026 object ids v1", bytes),
            mac_key: blake3::derive_key("offsync mirror 2026 snapshot mac v1", bytes),
            identity,
        }
    }

    /// A short public fingerprint of the key (to tell keys apart in messages).
    pub fn key_id(&self) -> String {
        blake3::hash(self.recipient.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    /// The object id for content whose BLAKE3 is `hash`.
    pub fn object_id(&self, hash: &[u8; 32]) -> String {
        blake3::keyed_hash(&self.id_key, hash).to_hex().to_string()
    }

    pub fn mac(&self, data: &[u8]) -> String {
        blake3::keyed_hash(&self.mac_key, data).to_hex().to_string()
    }

    pub fn encrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        encrypt_to(std::slice::from_ref(&self.recipient), data)
    }

    /// A streaming encryptor writing ciphertext into `out`.
    pub fn encrypt_stream<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(std::iter::once(
            &self.recipient as &dyn age::Recipient,
        ))?;
        Ok(enc.wrap_output(out)?)
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, OpenError> {
        decrypt_with(&[&self.identity], data)
    }

    /// A streaming decryptor over `input`. The reader is also `Seek` when `input` is: age
    /// authenticates each 64 KiB chunk on its own, so a seek decrypts from the target chunk
    /// without reading the chunks before it (what [`super::pack::read_member`] relies on).
    pub fn decrypt_stream<R: Read>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, OpenError> {
        let dec = age::Decryptor::new(input).map_err(|_| OpenError::Corrupt)?;
        dec.decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => OpenError::NoMatchingKey,
                _ => OpenError::Corrupt,
            })
    }

    /// The plaintext of `keys/mirror-key.age`: an age identity file listing the recipients.
    pub fn key_file_text(&self, recipients: &[String]) -> String {
        let mut s = String::from(
            "# offsync mirror key: an age identity that decrypts this mirror's objects and snapshots\n",
        );
        for r in recipients {
            s.push_str(&format!("# recipient: {r}\n"));
        }
        s.push_str(self.identity.to_string().expose_secret());
        s.push('\n');
        s
    }

    /// Parse the plaintext of `keys/mirror-key.age` into the key and its recipients.
    pub fn parse_key_file(text: &str) -> Result<(MirrorKey, Vec<String>)> {
        let recipients = text
            .lines()
            .filter_map(|l| l.strip_prefix("# recipient: "))
            .map(|s| s.trim().to_string())
            .collect();
        let mut ids = parse_identities(text, "the mirror key file")?;
        Ok((Self::from_identity(ids.remove(0).identity), recipients))
    }

    /// Encrypt the key file to `recipients`.
    pub fn seal(&self, recipients: &[String]) -> Result<Vec<u8>> {
        let parsed = recipients
            .iter()
            .map(|r| parse_recipient(r))
            .collect::<Result<Vec<_>>>()?;
        encrypt_to(&parsed, self.key_file_text(recipients).as_bytes())
    }
}

/// Size of the age payload (nonce + chunks with their tags) for `n` plaintext bytes.
pub fn payload_len(n: u64) -> u64 {
    let chunks = n.div_ceil(CHUNK).max(1);
    16 + n + 16 * chunks
}

/// Whether `stored` bytes can be an age file (one X25519 recipient) of `n` plaintext bytes.
/// The header's length varies (age adds random "grease" stanzas), so this is a range: a
/// header of at least 100 bytes and at most 4 KiB.
pub fn plausible_len(n: u64, stored: u64) -> bool {
    let p = payload_len(n);
    stored >= p + 100 && stored <= p + 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_sizes() {
        let me = generate();
        let k = MirrorKey::generate();
        let sealed = k.seal(std::slice::from_ref(&me.recipient)).unwrap();
        let text = decrypt_with(&[&me.identity], &sealed).unwrap();
        let (k2, recips) = MirrorKey::parse_key_file(std::str::from_utf8(&text).unwrap()).unwrap();
        assert_eq!(recips, vec![me.recipient.clone()]);
        let h = *blake3::hash(b"x").as_bytes();
        assert_eq!(k.object_id(&h), k2.object_id(&h));
        assert_ne!(k.object_id(&h), MirrorKey::generate().object_id(&h));
        let other = generate();
        assert!(matches!(
            decrypt_with(&[&other.identity], &sealed),
            Err(OpenError::NoMatchingKey)
        ));
        for n in [0usize, 1, 65535, 65536, 65537, 200_000] {
            for _ in 0..20 {
                let c = k.encrypt(&vec![7u8; n]).unwrap();
                assert!(
                    plausible_len(n as u64, c.len() as u64),
                    "n={n} len={}",
                    c.len()
                );
                assert!(!plausible_len(n as u64 + 5000, c.len() as u64), "n={n}");
                assert!(!plausible_len(n as u64, payload_len(n as u64)), "no header");
                assert_eq!(k.decrypt(&c).unwrap().len(), n);
            }
        }
        let mut c = k.encrypt(b"hello world").unwrap();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert!(matches!(k.decrypt(&c), Err(OpenError::Corrupt)));
    }
}
