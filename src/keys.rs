//! The controller's dedicated key, and validation of public keys pasted on a target.
//!
//! The keypair is generated in-process (no ssh-keygen): `id_ed25519` in OpenSSH format, 0600,
//! unencrypted because offsync runs unattended; `id_ed25519.pub` with comment
//! `offsync@<hostname>`. A public key given to `link` must be exactly one OpenSSH public key
//! line of an allowed type; anything else (options, several keys, private keys, bad base64)
//! is refused before any file is read for writing.

use anyhow::{Context as _, Result};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, public::KeyData};
use std::path::Path;

use crate::error::InputError;
use crate::fsutil;

/// Key types `link` accepts.
pub const ALLOWED_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// Smallest RSA modulus `link` accepts.
pub const MIN_RSA_BITS: usize = 2048;

/// Generate a fresh ed25519 keypair with the given comment.
pub fn generate(comment: &str) -> Result<PrivateKey> {
    let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .context("cannot generate an ed25519 key")?;
    key.set_comment(comment);
    Ok(key)
}

/// Write a keypair: private 0600, public 0600 (state files stay tight; it is not secret).
pub fn write_pair(key: &PrivateKey, private: &Path, public: &Path) -> Result<()> {
    let priv_text = key
        .to_openssh(LineEnding::LF)
        .context("cannot encode the private key")?;
    let mut pub_text = key
        .public_key()
        .to_openssh()
        .context("cannot encode the public key")?;
    pub_text.push('\n');
    // Public first: a crash in between leaves a lone .pub, which `init` reports as a
    // half-present pair instead of silently regenerating a key that may be deployed.
    fsutil::atomic_write(public, pub_text.as_bytes(), fsutil::FILE_MODE)?;
    fsutil::atomic_write(private, priv_text.as_bytes(), fsutil::FILE_MODE)
}

/// Read the controller's public key file.
pub fn read_public(path: &Path) -> Result<PublicKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PublicKey::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH public key", path.display()))
}

/// Read the controller's private key and check that it matches the public one.
pub fn read_private(path: &Path) -> Result<PrivateKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PrivateKey::from_openssh(text.as_bytes())
        .with_context(|| format!("{} is not an OpenSSH private key", path.display()))
}

/// `SHA256:…` fingerprint, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Same, for raw key data (host keys have no comment).
pub fn fingerprint_of(data: &KeyData) -> String {
    data.fingerprint(HashAlg::Sha256).to_string()
}

/// Check that `s` looks like an OpenSSH SHA256 fingerprint; returns it normalised (with
/// padding removed, as OpenSSH prints it).
pub fn parse_fingerprint(s: &str) -> Result<String, InputError> {
    let t = s.trim();
    let body = t.strip_prefix("SHA256:").ok_or_else(|| {
        InputError(format!(
            "--fingerprint {:?} is not a SHA256 fingerprint; pass it as `link` printed it, e.g. SHA256:AbC…",
            crate::sanitize::for_terminal(s)
        ))
    })?;
    let body = body.trim_end_matches('=');
    let ok = body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !ok {
        return Err(InputError(format!(
            "--fingerprint {:?} is not a SHA256 fingerprint (43 base64 characters after `SHA256:`)",
            crate::sanitize::for_terminal(s)
        )));
    }
    Ok(format!("SHA256:{body}"))
}

/// Validate pasted public key text for `link`: exactly one key line of an allowed type.
pub fn parse_authorized_input(input: &str) -> Result<PublicKey, InputError> {
    let bad = |why: &str| InputError(format!("the public key {why}"));
    if input.contains('\0') {
        return Err(bad(
            "contains a NUL byte; paste the single line from id_ed25519.pub",
        ));
    }
    if input.contains("PRIVATE KEY") {
        return Err(bad(
            "is a PRIVATE key; never copy it off the controller: pass the contents of id_ed25519.pub",
        ));
    }
    let lines: Vec<&str> = input
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = match lines.as_slice() {
        [] => {
            return Err(bad(
                "is empty; pass --key 'ssh-ed25519 AAAA…' or --key-file FILE",
            ));
        }
        [one] => *one,
        _ => {
            return Err(bad(
                "spans several lines; pass exactly one key line (the contents of id_ed25519.pub)",
            ));
        }
    };
    if line.starts_with('#') {
        return Err(bad("is a comment line; pass the key itself"));
    }
    let mut fields = line.split_ascii_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next();
    if !ALLOWED_TYPES.contains(&kind) {
        if kind.contains('=')
            || kind.contains('"')
            || kind.contains(',')
            || blob.is_some_and(|b| ALLOWED_TYPES.contains(&b))
        {
            return Err(bad(
                "has an options prefix (like `command=\"…\"`); pass the bare key: offsync writes the options itself",
            ));
        }
        return Err(bad(&format!(
            "has type {:?}, which is not accepted; use one of: {}",
            crate::sanitize::for_terminal(kind),
            ALLOWED_TYPES.join(", ")
        )));
    }
    if blob.is_none() {
        return Err(bad("has no key data after its type"));
    }
    let key = PublicKey::from_openssh(line).map_err(|_| {
        bad("is not valid: its base64 key data does not decode to a key of that type")
    })?;
    if key.algorithm().as_str() != kind {
        return Err(bad("is not valid: its type and key data disagree"));
    }
    if let KeyData::Rsa(rsa) = key.key_data() {
        let bits = rsa_bits(rsa.n.as_positive_bytes().unwrap_or_default());
        if bits < MIN_RSA_BITS {
            return Err(bad(&format!(
                "is a {bits}-bit RSA key; RSA keys need at least {MIN_RSA_BITS} bits (better: ed25519)"
            )));
        }
    }
    Ok(key)
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// This machine's host name, for key comments.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        generate("offsync@test")
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap()
    }

    #[test]
    fn accepts_one_ed25519_line() {
        let line = sample();
        let key = parse_authorized_input(&format!("  {line}\n")).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn rejects_bad_inputs() {
        let line = sample();
        let cases = [
            (String::new(), "empty"),
            (format!("command=\"x\" {line}"), "options prefix"),
            (format!("restrict {line}"), "options prefix"),
            (format!("{line}\n{line}"), "several lines"),
            (format!("{line}\0"), "NUL"),
            ("ssh-ed25519 AAAA!!!notbase64 c".to_string(), "base64"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n".to_string(),
                "PRIVATE",
            ),
            ("ssh-dss AAAAB3NzaC1kc3M= x".to_string(), "not accepted"),
            ("ssh-ed25519".to_string(), "no key data"),
        ];
        for (input, want) in cases {
            let err = parse_authorized_input(&input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn type_and_blob_must_agree() {
        let line = sample();
        let swapped = line.replacen("ssh-ed25519", "ecdsa-sha2-nistp256", 1);
        assert!(parse_authorized_input(&swapped).is_err());
    }

    #[test]
    fn fingerprints() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(parse_fingerprint(fp).unwrap(), fp);
        assert_eq!(parse_fingerprint(&format!("{fp}=")).unwrap(), fp);
        assert!(parse_fingerprint("MD5:aa:bb").is_err());
        assert!(parse_fingerprint("SHA256:short").is_err());
    }

    #[test]
    fn rsa_bit_count() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0]), 9);
    }
}
