//! Encrypted mirrors: a directory tree stored as age-encrypted, content-addressed objects plus
//! one encrypted snapshot manifest per generation, in S3 or a local directory.
//!
//! Layout under the mirror root (nothing here reveals a path or a file's content):
//! - `offsync-mirror` — plaintext marker: format name and where the format is documented;
//! - `keys/mirror-key.age` — the mirror key, age-encrypted to every recipient;
//! - `keys/mirror-key.next.age` — only while a `rekey` is in progress;
//! - `objects/<id[0..2]>/<id>` — one age file per distinct content, encrypted to the mirror key;
//! - `snapshots/<generation>.age` — one per apply, written create-only after all its objects.
//!
//! Invariants:
//! - a snapshot is written only after every object it references is stored, and only with
//!   a create-only write, so two writers can never replace each other's generation and a
//!   killed apply leaves the previous generation intact;
//! - every read of the latest generation checks rollback: this machine remembers the highest
//!   generation (and its chain digest) it has seen per mirror URL and refuses an older one, a
//!   different one under the same number, or a broken chain;
//! - every file written out of the mirror is decrypted, hashed and compared with the
//!   snapshot's BLAKE3 before it is renamed into place;
//! - writers sign, readers verify: every snapshot a writer publishes carries an SSH signature
//!   by its controller key (see [`snapshot`]); a reader acts on a generation only when the
//!   newest generation is signed by a writer it trusts ([`Trust`]) and the generation chains
//!   to it. The mirror key alone (which every recipient holds) can decrypt, but can no longer
//!   publish anything another reader accepts;
//! - downgrade: once this machine accepted a signed generation of a mirror, it refuses an
//!   unsigned one (remembered in `mirror-state/`); a controller migrating an unsigned mirror
//!   also refuses if any older generation is signed;
//! - every snapshot passes [`Snapshot::validate`] before a caller sees it, and its `key_id`
//!   must be the mirror key that decrypted it (a signed snapshot cannot be replayed into
//!   another mirror).

pub mod check;
pub mod commit;
pub mod crypto;
pub mod index;
pub mod pack;
pub mod packs;
pub mod prune;
pub mod rekey;
pub mod restore;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod upgrade;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{fsutil, sanitize};
use crypto::{Identity, MirrorKey, OpenError};
use snapshot::{SnapEntry, Snapshot};
use ssh_key::{PrivateKey, PublicKey};
use store::{Location, Store};

pub const KEY_FILE: &str = "keys/mirror-key.age";
pub const NEXT_KEY_FILE: &str = "keys/mirror-key.next.age";
pub const MARKER: &str = "offsync-mirror";
/// The format this offsync writes: `/2` stores small files in packs (see [`packs`]).
pub const FORMAT: u32 = 2;
const MARKER_TEXT: &str = "offsync-mirror/2\nAn offsync encrypted mirror. Format and manual recovery: `man offsync-mirror`, or the README section \"Mirror format\".\n";

/// The format version a marker names: `offsync-mirror/N` on its first line (`None`: not a
/// marker offsync wrote).
pub fn marker_version(text: &[u8]) -> Option<u32> {
    let first = text.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(first)
        .ok()?
        .strip_prefix("offsync-mirror/")?
        .trim()
        .parse()
        .ok()
}

/// Parallel downloads per mirror, and re-encryptions of a rekey.
pub const WORKERS: usize = 16;

/// Object uploads in flight when `mirrors[].uploads` is unset: on S3 each request waits a
/// round trip, so many overlap (16, as before the key existed); a local directory is bound by
/// the disk and the cores, where 1 to 16 measured the same on 2,000 small files and each
/// slot costs memory (README, Performance, Mirrors).
pub fn default_uploads(location: &Location) -> usize {
    match location {
        Location::S3 { .. } => 16,
        Location::Local(_) => 8,
    }
}

/// Files up to this size are encrypted in memory and stored with one PUT.
pub const SMALL_OBJECT: u64 = 8 << 20;
/// Multipart part size (S3 needs ≥ 5 MiB for all but the last part).
const PART_SIZE: usize = 8 << 20;

/// Where this controller's (or host's) own age identity lives.
pub fn identity_path(home: &Path) -> PathBuf {
    home.join("age-identity.txt")
}

/// Which writers a reader accepts.
#[derive(Default)]
pub struct Trust {
    /// Writer keys whose signatures are accepted (plus any pinned in `mirror-state/`).
    pub writers: Vec<PublicKey>,
    /// Accept an unsigned newest generation of a mirror this machine never saw signed, with
    /// no signed generation before it: only for controllers that write the mirror (their next
    /// snapshot is signed and vouches for the unsigned history), never for hosts.
    pub accept_legacy: bool,
    /// With no writer trusted at all (none given, none pinned): asked whether to pin the key
    /// that signed the newest generation. Must get an explicit yes (terminal or flag).
    pub first_use: Option<FirstUse>,
    /// How the user makes a writer trusted (ends the "not a trusted writer" error).
    pub hint: String,
}

/// Decides whether to pin `key`, the signer of generation `generation`.
pub type FirstUse = Box<dyn Fn(&PublicKey, u64) -> Result<bool> + Send + Sync>;

impl Trust {
    fn trusts(&self, key: &PublicKey, pinned: &[String]) -> bool {
        self.writers.iter().any(|w| w.key_data() == key.key_data())
            || pinned
                .iter()
                .filter_map(|p| PublicKey::from_openssh(p).ok())
                .any(|w| w.key_data() == key.key_data())
    }
}

/// A public key as one line without its comment (the comment comes from whoever made the
/// key and is not shown), e.g. `ssh-ed25519 AAAA…`.
pub fn key_line(key: &PublicKey) -> String {
    PublicKey::new(key.key_data().clone(), "")
        .to_openssh()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `SHA256:… (ssh-ed25519 AAAA…)`, for messages.
pub fn describe_key(key: &PublicKey) -> String {
    format!("{} ({})", crate::keys::fingerprint(key), key_line(key))
}

/// Parse writer keys from `arg`: an `ssh-ed25519 AAAA… [comment]` line, an
/// `allowed_signers` line (`PRINCIPALS [OPTIONS] ssh-ed25519 AAAA…`), or a file of such lines
/// (`#` comments and blank lines skipped). `origin` names the flag in errors.
pub fn parse_writer_keys(arg: &str, origin: &str) -> Result<Vec<PublicKey>> {
    let arg = arg.trim();
    let looks_like_key = arg.split_ascii_whitespace().any(|f| f.starts_with("ssh-"));
    let (text, from) = if looks_like_key {
        (arg.to_string(), None)
    } else {
        let path = crate::context::expand_tilde(Path::new(arg))?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            crate::input_err!(
                "{origin} {:?}: not an `ssh-ed25519 AAAA…` key line and not a readable file ({e}); pass the writer's id_ed25519.pub line or a file of them",
                sanitize::for_terminal(arg)
            )
        })?;
        (text, Some(path))
    };
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let key = fields
            .iter()
            .position(|f| *f == "ssh-ed25519")
            .and_then(|i| PublicKey::from_openssh(&fields[i..].join(" ")).ok())
            .ok_or_else(|| {
                crate::input_err!(
                    "{origin}{}: {:?} is not an ssh-ed25519 public key line; writers sign with the ed25519 key `offsync init` made (id_ed25519.pub)",
                    from.as_ref()
                        .map(|p| format!(" {}", p.display()))
                        .unwrap_or_default(),
                    sanitize::for_terminal(&line.chars().take(60).collect::<String>())
                )
            })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(crate::input_err!(
            "{origin} {:?} holds no ssh-ed25519 key; pass the writer's id_ed25519.pub line",
            sanitize::for_terminal(arg)
        ));
    }
    Ok(keys)
}

/// This controller's own public key (`$OFFSYNC_HOME/id_ed25519.pub`), if `init` made one.
pub fn own_public_key(home: &Path) -> Result<Option<PublicKey>> {
    let p = home.join("id_ed25519.pub");
    if !p.exists() {
        return Ok(None);
    }
    crate::keys::read_public(&p).map(Some)
}

/// This controller's signing key (`$OFFSYNC_HOME/id_ed25519`, made by `offsync init`).
pub fn own_signing_key(home: &Path) -> Result<PrivateKey> {
    let p = home.join("id_ed25519");
    if !p.exists() {
        return Err(crate::input_err!(
            "{} is missing: snapshots are signed with this controller's ed25519 key; run `offsync init` to create it",
            p.display()
        ));
    }
    let key = crate::keys::read_private(&p)?;
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(crate::input_err!(
            "{} is not an ed25519 key; snapshots are signed with the ed25519 key `offsync init` makes",
            p.display()
        ));
    }
    Ok(key)
}

/// What a controller trusts for the configured mirror `name`: its own key and the writers
/// added with `offsync mirror writers add`.
pub fn controller_trust(
    home: &Path,
    name: &str,
    writers: &[String],
    accept_legacy: bool,
) -> Result<Trust> {
    let mut keys: Vec<PublicKey> = own_public_key(home)?.into_iter().collect();
    for w in writers {
        keys.extend(parse_writer_keys(w, "config.yaml writer")?);
    }
    Ok(Trust {
        writers: keys,
        accept_legacy,
        first_use: None,
        hint: format!(
            "if that key belongs to a controller that writes this mirror, run `offsync mirror writers add {name} 'KEY'`; otherwise delete that snapshot from the mirror"
        ),
    })
}

/// An opened mirror: store, key and rollback state.
pub struct Mirror {
    pub store: Store,
    pub key: MirrorKey,
    /// Who can open the mirror key (recipient strings).
    pub recipients: Vec<String>,
    state_path: PathBuf,
    /// A second key while a rekey is unfinished (snapshots may be under either).
    next_key: Option<MirrorKey>,
    /// Whose signatures this reader accepts.
    trust: Trust,
    /// This controller's signing key (writers only).
    signer: Option<PrivateKey>,
    /// Object uploads in flight at once (see [`default_uploads`]).
    uploads: usize,
    /// The format version the marker names (1 or 2).
    format: std::sync::atomic::AtomicU32,
    /// The pack index, loaded on first use (and again when a pack it names has gone).
    packs: std::sync::Mutex<Option<std::sync::Arc<packs::PackIndex>>>,
}

/// What this machine remembers about a mirror, for rollback and downgrade protection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenState {
    url: String,
    generation: u64,
    digest: String,
    /// A signed generation was accepted: unsigned ones are refused from now on.
    #[serde(default)]
    signed: bool,
    /// Writer keys pinned on first use (`pull --trust-on-first-use` or a typed `yes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pinned_writers: Vec<String>,
}

fn state_path(state_dir: &Path, store: &Store) -> PathBuf {
    let url = store.display().to_string();
    let h = blake3::hash(url.as_bytes()).to_hex();
    state_dir.join(format!("{}.json", &h[..24]))
}

/// Open the key file with any of `identities`.
fn open_key(
    store: &Store,
    name: &str,
    identities: &[Identity],
) -> Result<Option<(MirrorKey, Vec<String>)>> {
    let Some(sealed) = store.get(name)? else {
        return Ok(None);
    };
    let ids: Vec<&age::x25519::Identity> = identities.iter().map(|i| &i.identity).collect();
    match crypto::decrypt_with(&ids, &sealed) {
        Ok(text) => {
            let text = String::from_utf8(text).context("the mirror key file is not text")?;
            Ok(Some(MirrorKey::parse_key_file(&text)?))
        }
        Err(OpenError::NoMatchingKey) => {
            let mine: Vec<&str> = identities.iter().map(|i| i.recipient.as_str()).collect();
            Err(crate::input_err!(
                "no matching key: {} is not encrypted to this identity ({}); ask its admin to run `offsync mirror recipients add NAME {}`, or pass the right --identity",
                store.display(),
                mine.join(", "),
                mine.first().copied().unwrap_or("age1…")
            ))
        }
        Err(OpenError::Corrupt) => anyhow::bail!(
            "{name} in {} failed authentication (changed or truncated); restore it from a backup of the mirror or re-create the mirror",
            store.display()
        ),
    }
}

/// The format version of the mirror in `store`, from its marker: a mirror without one is
/// read as `/1` (every `/1` mirror has one, but it is not needed to read it); a version newer
/// than this offsync knows is refused before anything is read or written.
fn read_format(store: &Store) -> Result<u32> {
    let Some(text) = store.get(MARKER)? else {
        return Ok(1);
    };
    match marker_version(&text) {
        Some(v) if v <= FORMAT => Ok(v.max(1)),
        Some(v) => Err(crate::input_err!(
            "{} is an offsync-mirror/{v} mirror, and this offsync reads formats up to /{FORMAT}; upgrade offsync on this machine (hosts upgrade together with the controller)",
            store.display()
        )),
        None => Err(crate::input_err!(
            "{} has an {MARKER} file that does not name a format (`offsync-mirror/N` on its first line); it is not an offsync mirror, or its marker was overwritten: check the URL",
            store.display()
        )),
    }
}

impl Mirror {
    /// Initialise a mirror (or join an existing one this identity can open).
    /// Returns the mirror and whether it was created now.
    pub fn init(
        store: Store,
        me: &Identity,
        extra: &[String],
        state_dir: &Path,
    ) -> Result<(Mirror, bool)> {
        if store.get(KEY_FILE)?.is_some() {
            let m = Mirror::open(store, std::slice::from_ref(me), state_dir)?;
            return Ok((m, false));
        }
        let key = MirrorKey::generate();
        let mut recipients = vec![me.recipient.clone()];
        for r in extra {
            crypto::parse_recipient(r)?;
            if !recipients.contains(r) {
                recipients.push(r.clone());
            }
        }
        store.put_create(MARKER, MARKER_TEXT.as_bytes().to_vec())?;
        if !store.put_create(KEY_FILE, key.seal(&recipients)?)? {
            // Another controller initialised it at the same moment: join theirs.
            let m = Mirror::open(store, std::slice::from_ref(me), state_dir)?;
            return Ok((m, false));
        }
        // A mirror created now starts a new history at this URL: forget the old one (the
        // user asked for it; an attacker who wipes a mirror cannot make us run `mirror add`).
        let state_path = state_path(state_dir, &store);
        if state_path.exists() {
            fs_err::remove_file(&state_path)?;
        }
        Ok((
            Mirror {
                uploads: default_uploads(store.location()),
                format: FORMAT.into(),
                packs: Default::default(),
                store,
                key,
                recipients,
                state_path,
                next_key: None,
                trust: Trust::default(),
                signer: None,
            },
            true,
        ))
    }

    /// Open an existing mirror with any of `identities`.
    pub fn open(store: Store, identities: &[Identity], state_dir: &Path) -> Result<Mirror> {
        let Some((key, recipients)) = open_key(&store, KEY_FILE, identities)? else {
            return Err(crate::input_err!(
                "{} is not an offsync mirror (no {KEY_FILE}); check the URL, or create it with `offsync mirror add`",
                store.display()
            ));
        };
        let format = read_format(&store)?;
        let next_key = open_key(&store, NEXT_KEY_FILE, identities)?.map(|(k, _)| k);
        let state_path = state_path(state_dir, &store);
        let uploads = default_uploads(store.location());
        Ok(Mirror {
            uploads,
            format: format.into(),
            packs: Default::default(),
            store,
            key,
            recipients,
            state_path,
            next_key,
            trust: Trust::default(),
            signer: None,
        })
    }

    /// Set whose signatures this reader accepts (the default trusts nobody).
    pub fn with_trust(mut self, trust: Trust) -> Mirror {
        self.trust = trust;
        self
    }

    /// Set the key this writer signs snapshots with.
    pub fn with_signer(mut self, key: PrivateKey) -> Mirror {
        self.signer = Some(key);
        self
    }

    /// Upload at most `n` objects at once (`mirrors[].uploads`; `None` keeps the default).
    pub fn with_uploads(mut self, n: Option<usize>) -> Mirror {
        if let Some(n) = n {
            self.uploads = n.max(1);
        }
        self
    }

    /// Object uploads in flight at once.
    pub fn uploads(&self) -> usize {
        self.uploads
    }

    /// The format version the mirror's marker names (1 or [`FORMAT`]).
    pub fn format(&self) -> u32 {
        self.format.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Mark the mirror as `/2` before the first pack is written, so an older offsync refuses
    /// it instead of finding packed objects "missing". Racing writers write the same bytes.
    pub fn mark_current_format(&self) -> Result<()> {
        if self.format() < FORMAT {
            self.store.put(MARKER, MARKER_TEXT.as_bytes().to_vec())?;
            self.format
                .store(FORMAT, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The keys objects may be under: the mirror key and, during a rekey, the next one.
    pub fn keys(&self) -> Vec<&MirrorKey> {
        std::iter::once(&self.key)
            .chain(self.next_key.as_ref())
            .collect()
    }

    /// The pack index (loaded on first use; a `/1` mirror has an empty one).
    pub fn pack_index(&self) -> Result<std::sync::Arc<packs::PackIndex>> {
        let mut slot = self.packs.lock().expect("pack index lock");
        if let Some(i) = &*slot {
            return Ok(i.clone());
        }
        let i = std::sync::Arc::new(packs::PackIndex::load(&self.store, &self.keys())?);
        *slot = Some(i.clone());
        Ok(i)
    }

    /// Forget the loaded pack index (a pack it named has gone: a prune repacked it).
    pub fn reload_pack_index(&self) {
        *self.packs.lock().expect("pack index lock") = None;
    }

    /// The key whose id is `key_id`.
    fn key_by_id(&self, key_id: &str) -> Option<&MirrorKey> {
        self.keys().into_iter().find(|k| k.key_id() == key_id)
    }

    /// The key this writer signs with, if any.
    pub fn signer(&self) -> Option<&PrivateKey> {
        self.signer.as_ref()
    }

    /// Prove the store accepts writes without changing it: a create-only write of the format
    /// marker, which already exists (and, were it missing, would be exactly right to create).
    /// A store that refuses the write (read-only directory, no `s3:PutObject`) fails here.
    pub fn probe_write(&self) -> Result<()> {
        self.store
            .put_create(MARKER, MARKER_TEXT.as_bytes().to_vec())
            .map(|_| ())
    }

    /// Whether a rekey was started and not finished.
    pub fn rekey_pending(&self) -> Option<&MirrorKey> {
        self.next_key.as_ref()
    }

    /// All generations present, ascending.
    pub fn generations(&self) -> Result<Vec<u64>> {
        let mut g: Vec<u64> = self
            .store
            .list("snapshots")?
            .iter()
            .filter_map(|m| snapshot::parse_snapshot_path(&m.path))
            .collect();
        g.sort_unstable();
        Ok(g)
    }

    /// Read and authenticate one generation (MAC, any signature, generation number, mirror
    /// key id), *without* deciding whether its writer is trusted and without validating its
    /// entries: returns it with its chain digest and the key that signed it. Readers use
    /// [`Mirror::latest`], [`Mirror::verified`] and [`Mirror::walk_verified`], which check the
    /// writer first and then validate; anything else that acts on entries must call
    /// [`Snapshot::validate`] itself.
    pub fn read_unverified(
        &self,
        generation: u64,
    ) -> Result<(Snapshot, String, Option<PublicKey>)> {
        let name = snapshot::snapshot_path(generation);
        let sealed = self
            .store
            .get(&name)?
            .with_context(|| format!("{name} is missing from {}", self.store.display()))?;
        let keys = std::iter::once(&self.key).chain(self.next_key.as_ref());
        let mut last_err = None;
        let mut opened = None;
        for key in keys {
            match key.decrypt(&sealed) {
                Ok(pt) => {
                    opened = Some((key, pt));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        // The ciphertext is as large as the snapshot: free it before the snapshot is parsed.
        drop(sealed);
        let Some((key, pt)) = opened else {
            match last_err {
                Some(OpenError::NoMatchingKey) => anyhow::bail!(
                    "{name} in {} is not encrypted to the mirror key (tampered with, or written under another key)",
                    self.store.display()
                ),
                _ => anyhow::bail!(
                    "{name} in {} failed authentication (changed or truncated, e.g. a torn write); nothing was written; remove that generation's file by hand only if it is the newest and a write was interrupted",
                    self.store.display()
                ),
            }
        };
        let (snap, signer) = Snapshot::from_plaintext(&pt, key, &name)?;
        if snap.generation != generation {
            anyhow::bail!(
                "{name} claims generation {}: the mirror was tampered with",
                snap.generation
            );
        }
        if snap.key_id != key.key_id() {
            anyhow::bail!(
                "{name} names mirror key {} but is encrypted to {}: it was copied from another mirror; refusing it",
                sanitize::for_terminal(&snap.key_id),
                key.key_id()
            );
        }
        Ok((snap, snapshot::chain_digest(&pt), signer))
    }

    fn load_seen(&self) -> Result<Option<SeenState>> {
        match fsutil::read_optional(&self.state_path)? {
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    /// Remember `generation` as the highest seen (never lowers what is remembered), whether
    /// it was signed (never forgotten once true) and any newly pinned writer.
    fn remember(
        &self,
        generation: u64,
        digest: &str,
        signed: bool,
        pin: Option<&str>,
    ) -> Result<()> {
        let old = self.load_seen()?;
        let mut s = old.clone().unwrap_or(SeenState {
            url: self.store.display().to_string(),
            generation,
            digest: digest.to_string(),
            signed: false,
            pinned_writers: Vec::new(),
        });
        if s.generation <= generation {
            s.generation = generation;
            s.digest = digest.to_string();
        }
        s.signed |= signed;
        if let Some(p) = pin
            && !s.pinned_writers.iter().any(|x| x == p)
        {
            s.pinned_writers.push(p.to_string());
        }
        if old.as_ref() == Some(&s) {
            return Ok(());
        }
        if let Some(dir) = self.state_path.parent() {
            fsutil::ensure_private_dir_keep(dir)?;
        }
        fsutil::atomic_write(
            &self.state_path,
            serde_json::to_string_pretty(&s)?.as_bytes(),
            fsutil::FILE_MODE,
        )
    }

    /// Decide whether the newest generation `generation`, signed by `signer`, may be used.
    /// Returns a key to pin (first use, confirmed).
    fn check_writer(
        &self,
        generation: u64,
        signer: Option<&PublicKey>,
        seen: Option<&SeenState>,
    ) -> Result<Option<String>> {
        let url = self.store.display();
        let pinned = seen.map(|s| s.pinned_writers.as_slice()).unwrap_or(&[]);
        let Some(key) = signer else {
            if seen.is_some_and(|s| s.signed) {
                anyhow::bail!(
                    "downgrade: generation {generation} of {url} is not signed, but this machine has accepted signed generations of it before; someone holding only the mirror key wrote it; refusing it (nothing was written)"
                );
            }
            if !self.trust.accept_legacy {
                anyhow::bail!(
                    "generation {generation} of {url} is not signed by a writer (written by an offsync without snapshot signatures, or forged by a holder of the mirror key); refusing it, nothing was written; on the controller that writes this mirror run `offsync mirror sign NAME` (or apply), then try again"
                );
            }
            // Migration of an unsigned mirror by its writer: only if no generation was ever
            // signed (an attacker cannot downgrade a signed mirror by appending to it).
            for g in self
                .generations()?
                .into_iter()
                .rev()
                .filter(|&g| g < generation)
            {
                if self.read_unverified(g)?.2.is_some() {
                    anyhow::bail!(
                        "downgrade: generation {generation} of {url} is not signed but generation {g} is; someone holding only the mirror key wrote it; refusing it (delete snapshots/{generation:010}.age from the mirror if you did not write it)"
                    );
                }
            }
            eprintln!(
                "warning: generation {generation} of {url} is not signed (written before offsync signed snapshots); the next apply or `offsync mirror sign NAME` signs the mirror"
            );
            return Ok(None);
        };
        if self.trust.trusts(key, pinned) {
            return Ok(None);
        }
        if self.trust.writers.is_empty()
            && pinned.is_empty()
            && let Some(ask) = &self.trust.first_use
        {
            if ask(key, generation)? {
                return Ok(Some(key_line(key)));
            }
            anyhow::bail!(
                "not trusting {} for {url}; nothing was written",
                describe_key(key)
            );
        }
        anyhow::bail!(
            "generation {generation} of {url} is signed by {}, which is not a writer this machine trusts; refusing it, nothing was written ({})",
            describe_key(key),
            self.trust.hint
        )
    }

    /// The newest generation, checked against what this machine has seen before.
    pub fn latest(&self) -> Result<Option<(Snapshot, String)>> {
        let gens = self.generations()?;
        let seen = self.load_seen()?;
        let Some(&last) = gens.last() else {
            if let Some(s) = seen.filter(|s| s.generation > 0) {
                anyhow::bail!(
                    "rollback: {} shows no snapshot, but this machine has seen generation {}; refusing to use it (check the URL or restore the mirror's snapshots; if it was wiped on purpose, delete what is left of it, then `offsync target remove` and `offsync mirror add` it again)",
                    self.store.display(),
                    s.generation
                );
            }
            return Ok(None);
        };
        let Some(seen) = seen else {
            let (snap, digest, signer) = self.read_unverified(last)?;
            let pin = self.check_writer(last, signer.as_ref(), None)?;
            snap.validate(&snapshot::snapshot_path(last))?;
            self.remember(last, &digest, signer.is_some(), pin.as_deref())?;
            return Ok(Some((snap, digest)));
        };
        if last < seen.generation {
            anyhow::bail!(
                "rollback: {} shows generation {last} as the newest, but this machine has seen generation {}; refusing an older mirror state",
                self.store.display(),
                seen.generation
            );
        }
        // Walk the chain from the remembered generation (or the oldest kept after it, when a
        // prune removed it) up to the newest.
        let start = gens
            .iter()
            .copied()
            .find(|&g| g >= seen.generation)
            .unwrap_or(last);
        let (mut snap, mut digest, mut signer) = self.read_unverified(start)?;
        if start == seen.generation
            && digest != seen.digest
            && snap.rekeyed_from.as_deref() != Some(seen.digest.as_str())
        {
            anyhow::bail!(
                "rollback: generation {start} of {} is not the one this machine saw before (digest differs); refusing a rewritten mirror history",
                self.store.display()
            );
        }
        for g in start + 1..=last {
            if !gens.contains(&g) {
                anyhow::bail!(
                    "broken chain: {} has generation {last} but not {g}; refusing it",
                    self.store.display()
                );
            }
            let (next, next_digest, next_signer) = self.read_unverified(g)?;
            if next.previous.as_deref() != Some(digest.as_str()) {
                anyhow::bail!(
                    "broken chain: generation {g} of {} does not follow generation {} (previous-digest mismatch); refusing it",
                    self.store.display(),
                    g - 1
                );
            }
            snap = next;
            digest = next_digest;
            signer = next_signer;
        }
        let pin = self.check_writer(last, signer.as_ref(), Some(&seen))?;
        snap.validate(&snapshot::snapshot_path(last))?;
        self.remember(last, &digest, signer.is_some(), pin.as_deref())?;
        Ok(Some((snap, digest)))
    }

    /// Generation `generation`, trusted because the newest generation is (see
    /// [`Mirror::latest`]) and every generation from `generation` up to it links to the
    /// next by its chain digest. Returns it with its chain digest.
    pub fn verified(&self, generation: u64) -> Result<(Snapshot, String)> {
        let mut found = None;
        self.walk_verified(generation, |s, d| {
            if s.generation == generation {
                found = Some((s.clone(), d.to_string()));
            }
            Ok(())
        })?;
        found.context("the generation was walked")
    }

    /// Call `f` for every generation from `from` up to the newest, each vouched for by the
    /// newest (trusted writer) through the chain. `from` must exist.
    pub fn walk_verified(
        &self,
        from: u64,
        mut f: impl FnMut(&Snapshot, &str) -> Result<()>,
    ) -> Result<()> {
        let Some((_, last_digest)) = self.latest()? else {
            anyhow::bail!("{} has no snapshot", self.store.display());
        };
        let gens = self.generations()?;
        let Some(&last) = gens.last() else {
            anyhow::bail!("{} has no snapshot", self.store.display());
        };
        if !gens.contains(&from) {
            return Err(crate::input_err!(
                "{} has no generation {from}; see `offsync mirror snapshots`",
                self.store.display()
            ));
        }
        let mut prev: Option<(Snapshot, String)> = None;
        for g in from..=last {
            if !gens.contains(&g) {
                anyhow::bail!(
                    "broken chain: {} has generation {last} but not {g}; refusing it",
                    self.store.display()
                );
            }
            let (s, d, _) = self.read_unverified(g)?;
            if let Some((p, pd)) = &prev {
                if s.previous.as_deref() != Some(pd.as_str()) {
                    anyhow::bail!(
                        "broken chain: generation {g} of {} does not follow generation {} (previous-digest mismatch); refusing it",
                        self.store.display(),
                        p.generation
                    );
                }
                p.validate(&snapshot::snapshot_path(p.generation))?;
                f(p, pd)?;
            }
            prev = Some((s, d));
        }
        let (s, d) = prev.context("at least one generation was read")?;
        if d != last_digest {
            anyhow::bail!(
                "generation {last} of {} changed while it was being read; try again",
                self.store.display()
            );
        }
        s.validate(&snapshot::snapshot_path(last))?;
        f(&s, &d)
    }

    /// Write generation `snap.generation` create-only. `Ok(false)` if it already exists.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<bool> {
        let name = snapshot::snapshot_path(snap.generation);
        // A writer never publishes what a reader would refuse.
        snap.validate(&name)?;
        let signer = self.signer.as_ref().context(
            "this controller has no signing key loaded; run `offsync init` to create id_ed25519",
        )?;
        self.store.flush()?;
        let pt = snap.to_plaintext(&self.key, Some(signer))?;
        let digest = snapshot::chain_digest(&pt);
        let sealed = self.key.encrypt(&pt)?;
        if !self
            .store
            .put_create(&snapshot::snapshot_path(snap.generation), sealed)?
        {
            return Ok(false);
        }
        self.remember(snap.generation, &digest, true, None)?;
        Ok(true)
    }

    /// Replace the sealed key file (recipients change, rekey).
    pub fn reseal(&mut self, recipients: Vec<String>) -> Result<()> {
        self.store.put(KEY_FILE, self.key.seal(&recipients)?)?;
        self.recipients = recipients;
        Ok(())
    }

    /// Encrypt and store the file at `src`, whose content must hash to `hash` (it is hashed
    /// again while it is read, so a file that changed since planning is never stored under
    /// the old id). Returns the object id and stored size.
    pub fn store_file(&self, src: &Path, size: u64, hash: &[u8; 32]) -> Result<(String, u64)> {
        self.store_file_with(&self.key, src, size, hash)
    }

    /// [`Mirror::store_file`] under another key (the next key, during a rekey).
    pub fn store_file_with(
        &self,
        key: &MirrorKey,
        src: &Path,
        size: u64,
        hash: &[u8; 32],
    ) -> Result<(String, u64)> {
        let id = key.object_id(hash);
        let name = snapshot::object_path(&id);
        let changed = || {
            anyhow::anyhow!(
                "{} changed while it was being uploaded; run `offsync plan` again",
                src.display()
            )
        };
        if size <= SMALL_OBJECT {
            // Hash and encrypt while reading: only the ciphertext is held, never both.
            let mut file = fs_err::File::open(src)?;
            let mut hasher = blake3::Hasher::new();
            let mut enc = key.encrypt_stream(Vec::with_capacity(size as usize + 512))?;
            let n_total = copy_hashing(&mut file, &mut enc, &mut hasher, 256 << 10)?;
            let sealed = enc.finish()?;
            if n_total != size || hasher.finalize().as_bytes() != hash {
                return Err(changed());
            }
            let stored = sealed.len() as u64;
            self.store.put_object(&name, sealed)?;
            return Ok((id, stored));
        }
        let mut file = fs_err::File::open(src)?;
        let upload = self.store.upload(&name)?;
        let mut parts = PartWriter {
            upload: Some(upload),
            buf: Vec::with_capacity(PART_SIZE + (64 << 10)),
            part_size: part_size(size),
            written: 0,
        };
        let result = (|| -> Result<()> {
            let mut hasher = blake3::Hasher::new();
            let mut enc = key.encrypt_stream(&mut parts)?;
            let n_total = copy_hashing(&mut file, &mut enc, &mut hasher, 1 << 20)?;
            enc.finish()?;
            if n_total != size || hasher.finalize().as_bytes() != hash {
                return Err(changed());
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let stored = parts.finish()?;
                Ok((id, stored))
            }
            Err(e) => {
                if let Some(u) = parts.upload.take() {
                    u.abort();
                }
                Err(e)
            }
        }
    }

    /// Download, decrypt and verify one file's object into `out`. Nothing is trusted until
    /// the BLAKE3 of the plaintext matches the snapshot. A packed object is one ranged GET; a
    /// pack that has gone since the index was loaded (a concurrent prune repacked it) makes
    /// the index load again once.
    pub fn fetch_into(&self, e: &SnapEntry, out: &mut dyn Write) -> Result<()> {
        let object = e
            .object
            .as_deref()
            .with_context(|| format!("snapshot entry {:?} has no object", e.path))?;
        // The index may be older than the snapshot (a long-running reader): a miss, or a
        // pack that has gone (a prune repacked it), loads it again once.
        for attempt in 0..2 {
            let index = self.pack_index()?;
            // A location must hold exactly the snapshot's size: an index written by a holder
            // of the mirror key cannot make a reader allocate or read more than the file.
            if let Some(at) = index
                .locate(object)
                .filter(|at| Some(at.member.len) == e.size)
            {
                let read = self.read_packed(&index, at).with_context(|| {
                    format!(
                        "{}: {} for {:?}",
                        self.store.display(),
                        packs::pack_path(&at.pack),
                        e.path
                    )
                })?;
                if let Some(bytes) = read {
                    self.check_content(e, &packs::pack_path(&at.pack), &bytes)?;
                    return Ok(out.write_all(&bytes)?);
                }
            } else if self.fetch_single(e, object, out)? {
                return Ok(());
            }
            if attempt == 0 {
                self.reload_pack_index();
            }
        }
        anyhow::bail!(
            "{}: object {object} for {:?} is missing (in no pack, and no {}); run `offsync verify --deep`",
            self.store.display(),
            e.path,
            snapshot::object_path(object)
        )
    }

    /// One packed object's bytes (unverified: the caller checks them against the snapshot);
    /// `None` when its pack is not there any more.
    fn read_packed(
        &self,
        index: &packs::PackIndex,
        at: &packs::PackedAt,
    ) -> Result<Option<Vec<u8>>> {
        let meta = index
            .packs
            .get(&at.pack)
            .context("a located pack is listed")?;
        let p = meta.indexed.as_ref().context("a located pack is indexed")?;
        let key = meta
            .key_id
            .as_deref()
            .and_then(|k| self.key_by_id(k))
            .context("the pack's key is not loaded")?;
        let name = packs::pack_path(&at.pack);
        let gone = std::cell::Cell::new(false);
        let r = pack::read_member(
            key,
            &p.header_bytes()?,
            p.stored_size,
            &at.member,
            |range| match self.store.get_range(&name, range) {
                Ok(Some(b)) => Ok(b),
                Ok(None) => {
                    gone.set(true);
                    Err(std::io::Error::from(std::io::ErrorKind::NotFound))
                }
                Err(e) => Err(std::io::Error::other(format!("{e:#}"))),
            },
        );
        match r {
            Ok(b) => Ok(Some(b)),
            Err(_) if gone.get() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Check downloaded plaintext against the snapshot entry.
    fn check_content(&self, e: &SnapEntry, name: &str, bytes: &[u8]) -> Result<()> {
        let want = e.blake3.as_deref().unwrap_or("");
        if blake3::hash(bytes).to_hex().as_str() != want || Some(bytes.len() as u64) != e.size {
            anyhow::bail!(
                "{}: {name} holds other content for {:?} than the snapshot's BLAKE3; it was tampered with",
                self.store.display(),
                e.path
            );
        }
        Ok(())
    }

    /// A single (not packed) object, streamed and verified; `Ok(false)` when there is none.
    fn fetch_single(&self, e: &SnapEntry, object: &str, out: &mut dyn Write) -> Result<bool> {
        let name = snapshot::object_path(object);
        let Some(reader) = self.store.reader_opt(&name)? else {
            return Ok(false);
        };
        let mut plain = self.key.decrypt_stream(reader).map_err(|err| {
            anyhow::anyhow!(
                "{}: object {name} for {:?}: {err}",
                self.store.display(),
                e.path
            )
        })?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut n_total = 0u64;
        loop {
            let n = plain.read(&mut buf).map_err(|err| {
                anyhow::anyhow!(
                    "{}: object {name} for {:?} failed decryption ({err}); it was changed or truncated",
                    self.store.display(),
                    e.path
                )
            })?;
            if n == 0 {
                break;
            }
            n_total += n as u64;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        let want = e.blake3.as_deref().unwrap_or("");
        if hasher.finalize().to_hex().as_str() != want || Some(n_total) != e.size {
            anyhow::bail!(
                "{}: object {name} for {:?} does not match the snapshot's BLAKE3; it was tampered with",
                self.store.display(),
                e.path
            );
        }
        Ok(true)
    }

    /// Download, decrypt and verify the content of many file entries, `workers` at once, and
    /// hand each to `deliver(item, bytes_or_stream)`: `open(item)` makes the writer for one
    /// item and `done(item, writer)` finishes it once its content was verified and written.
    ///
    /// Requests: a pack of which several members are needed is streamed once (one GET); a
    /// lone member of a pack is one ranged GET; a single object is one GET. Two entries with
    /// the same content are served from one read.
    pub fn fetch_each<T, W>(
        &self,
        items: &[T],
        workers: usize,
        entry: impl Fn(&T) -> &SnapEntry + Sync,
        open: impl Fn(&T) -> Result<W> + Sync,
        done: impl Fn(&T, W) -> Result<()> + Sync,
    ) -> Result<()>
    where
        T: Sync,
        W: Write,
    {
        enum Unit<'a> {
            One(usize),
            Pack(&'a str, Vec<(packs::PackedAt, Vec<usize>)>),
        }
        let index = self.pack_index()?;
        let mut by_pack: std::collections::BTreeMap<
            &str,
            std::collections::BTreeMap<String, (packs::PackedAt, Vec<usize>)>,
        > = Default::default();
        let mut units: Vec<Unit> = Vec::new();
        for (i, t) in items.iter().enumerate() {
            let e = entry(t);
            let at = e.object.as_deref().and_then(|o| index.locate(o));
            match at.filter(|at| Some(at.member.len) == e.size) {
                Some(at) => by_pack
                    .entry(at.pack.as_str())
                    .or_default()
                    .entry(at.member.id.clone())
                    .or_insert_with(|| (at.clone(), Vec::new()))
                    .1
                    .push(i),
                None => units.push(Unit::One(i)),
            }
        }
        for (pack, members) in by_pack {
            let mut members: Vec<_> = members.into_values().collect();
            members.sort_by_key(|(at, _)| at.member.offset);
            let stored = index.packs.get(pack).map(|m| m.stored_size).unwrap_or(0);
            let wanted: u64 = members.iter().map(|(at, _)| at.member.len + 512).sum();
            // Streaming the whole pack is one request; a ranged read per member costs a
            // request and up to two 64 KiB chunks each.
            if members.len() >= 4 || wanted.saturating_mul(4) >= stored {
                units.push(Unit::Pack(pack, members));
            } else {
                units.extend(
                    members
                        .iter()
                        .flat_map(|(_, is)| is.iter().map(|&i| Unit::One(i))),
                );
            }
        }
        let deliver = |i: usize, bytes: Option<&[u8]>| -> Result<()> {
            let t = &items[i];
            let mut w = open(t)?;
            match bytes {
                Some(b) => w.write_all(b)?,
                None => self.fetch_into(entry(t), &mut w)?,
            }
            done(t, w)
        };
        let results = crate::parallel::parallel(&mut units, workers, |u| -> Result<()> {
            if crate::interrupt::interrupted() {
                anyhow::bail!("interrupted");
            }
            match u {
                Unit::One(i) => deliver(*i, None),
                Unit::Pack(pack, members) => {
                    let delivered = std::cell::Cell::new(0usize);
                    let failed = std::cell::Cell::new(false);
                    let r =
                        self.stream_pack(&index, pack, members, &|is: &[usize], bytes: &[u8]| {
                            for &i in is {
                                let r = self
                                    .check_content(entry(&items[i]), &packs::pack_path(pack), bytes)
                                    .and_then(|()| deliver(i, Some(bytes)));
                                failed.set(r.is_err());
                                r?;
                            }
                            delivered.set(delivered.get() + 1);
                            Ok(())
                        });
                    let streamed = match r {
                        Ok(n) => n,
                        Err(e) if failed.get() => return Err(e),
                        // The pack did not read as its index says: each member on its own,
                        // so the error names the path.
                        Err(_) => delivered.get(),
                    };
                    // Members a vanished (or unreadable) pack could not give: read each on
                    // its own, which reloads the index and finds where a prune put them.
                    for (_, is) in &members[streamed..] {
                        for &i in is {
                            deliver(i, None)?;
                        }
                    }
                    Ok(())
                }
            }
        });
        results.into_iter().collect()
    }

    /// Stream pack `pack` once and pass each member in `members` (sorted by offset) to
    /// `each`; returns how many members were passed (fewer only when the pack is gone).
    fn stream_pack(
        &self,
        index: &packs::PackIndex,
        pack: &str,
        members: &[(packs::PackedAt, Vec<usize>)],
        each: &MemberSink,
    ) -> Result<usize> {
        let name = packs::pack_path(pack);
        let Some(meta) = index.packs.get(pack) else {
            return Ok(0);
        };
        let Some(key) = meta.key_id.as_deref().and_then(|k| self.key_by_id(k)) else {
            return Ok(0);
        };
        let Some(reader) = self.store.reader_opt(&name)? else {
            return Ok(0);
        };
        let bad = |why: String| {
            anyhow::anyhow!(
                "{}: {name}: {why}; it was changed or truncated",
                self.store.display()
            )
        };
        let mut plain = key.decrypt_stream(reader).map_err(|e| bad(e.to_string()))?;
        let mut pos = 0u64;
        let mut buf = Vec::new();
        for (n, (at, is)) in members.iter().enumerate() {
            let start = at.member.offset - 512;
            if start < pos {
                return Err(bad("its index lists overlapping members".into()));
            }
            std::io::copy(&mut (&mut plain).take(start - pos), &mut std::io::sink())
                .map_err(|e| bad(e.to_string()))?;
            buf.resize((512 + at.member.len) as usize, 0);
            plain.read_exact(&mut buf).map_err(|e| bad(e.to_string()))?;
            pos = at.member.offset + at.member.len;
            if !pack::header_names(&buf[..512], &at.member.id, at.member.len) {
                return Err(bad(format!(
                    "the index does not fit the pack at object {}",
                    at.member.id
                )));
            }
            each(is, &buf[512..]).map(|_| n)?;
        }
        Ok(members.len())
    }
}

/// Takes one verified-to-be-read pack member: the items that need it and its bytes.
type MemberSink<'a> = dyn Fn(&[usize], &[u8]) -> Result<()> + 'a;

/// Copy `src` into `dst` in `chunk`-sized reads, hashing what passes; returns the byte count.
fn copy_hashing(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    hasher: &mut blake3::Hasher,
    chunk: usize,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
    }
}

/// Part size for a file of `size` bytes: 8 MiB, larger for files that would need more than
/// 9,000 parts (S3 allows 10,000).
fn part_size(size: u64) -> usize {
    let min = PART_SIZE as u64;
    let needed = size.div_ceil(9000).div_ceil(1 << 20) << 20;
    min.max(needed) as usize
}

/// A `Write` that sends fixed-size parts of a multipart upload as they fill.
struct PartWriter {
    upload: Option<store::Upload>,
    buf: Vec<u8>,
    part_size: usize,
    written: u64,
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            self.upload
                .as_mut()
                .ok_or_else(|| std::io::Error::other("upload already finished"))?
                .put_part(part)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartWriter {
    fn finish(&mut self) -> Result<u64> {
        let mut upload = self.upload.take().context("upload already finished")?;
        if !self.buf.is_empty() {
            upload.put_part(std::mem::take(&mut self.buf))?;
        }
        upload.complete()?;
        Ok(self.written)
    }
}
