//! Packs for `offsync-mirror/2` (issue 14; a building block, not yet used by apply): many
//! small objects in one age file whose plaintext is a POSIX tar archive with one member per
//! object, named by its object id. The design, and how the rest of the mirror will use packs,
//! is `docs/mirror-v2.md`.
//!
//! Invariants:
//! - the plaintext is a ustar archive that `tar -x` extracts as it is: every member is a
//!   regular file named by its object id (lowercase hex, at most 100 bytes, so the name fits
//!   the ustar header and no pax or GNU extension header is ever written), mode 0600, mtime 0,
//!   uid/gid 0 — nothing in a member header says more than the id and the length. Hence every
//!   member's 512-byte header sits directly before its data;
//! - a [`Member`] records the plaintext offset of the member's data and its exact length:
//!   what an index entry `{id, pack, offset, len}` needs; [`PackInfo::header`] is the
//!   ciphertext before the first STREAM chunk (the age header and the 16-byte nonce);
//! - the pack is one age file encrypted to the mirror key, so
//!   `age -d -i mirror-key.txt PACK | tar -x` recovers every member without offsync;
//! - [`read_member`] fetches only the STREAM chunks that cover one member and its tar header
//!   (one range request when the caller has the pack's stored header), lets age authenticate
//!   each chunk, and checks that the tar header names the expected id and length, so an index
//!   that points at the wrong place fails instead of returning another object's bytes;
//! - a [`PackWriter`] whose member came out shorter or longer than announced refuses further
//!   members and `finish`: the caller discards that pack (nothing references it yet).

use anyhow::{Context as _, Result, anyhow, ensure};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

use super::crypto::{CHUNK, ENCRYPTED_CHUNK, MirrorKey, payload_len};

/// tar's block size: headers are one block, data is padded to whole blocks.
const BLOCK: u64 = 512;
/// The longest name a ustar header holds without an extension header.
const MAX_NAME: usize = 100;
/// Members are small by design (the pack threshold is far lower); the bound keeps every size
/// in ustar's 11 octal digits, so no GNU binary size field is ever written.
const MAX_MEMBER: u64 = (1 << 33) - 1;
/// How much of the ciphertext's start [`PackWriter`] keeps to return the age header: age's
/// X25519 header with its random "grease" stanza is a few hundred bytes
/// (`crypto::plausible_len` relies on the same bound).
const HEAD_KEEP: usize = 4096;

/// One object inside a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The object id (the tar member name).
    pub id: String,
    /// Plaintext offset of the member's data in the tar stream.
    pub offset: u64,
    /// Length of the member's data.
    pub len: u64,
}

/// What [`PackWriter::finish`] reports about a pack: everything an index needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// The ciphertext before the first STREAM chunk: the age header plus the nonce. Kept in
    /// the index, it makes a member read one range request.
    pub header: Vec<u8>,
    /// The members, in archive order.
    pub members: Vec<Member>,
    /// Length of the tar stream.
    pub plaintext_len: u64,
    /// Length of the stored (encrypted) pack.
    pub stored_len: u64,
}

/// A writer that counts what passes through and keeps the first `keep` bytes.
struct Tap<W> {
    inner: W,
    written: u64,
    head: Vec<u8>,
    keep: usize,
}

impl<W> Tap<W> {
    fn new(inner: W, keep: usize) -> Tap<W> {
        Tap {
            inner,
            written: 0,
            head: Vec::new(),
            keep,
        }
    }
}

impl<W: Write> Write for Tap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let room = self.keep.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams members into an age-encrypted tar archive written to `W`. Memory stays at one
/// STREAM chunk plus what `W` buffers, whatever the pack size.
pub struct PackWriter<W: Write> {
    tar: tar::Builder<Tap<age::stream::StreamWriter<Tap<W>>>>,
    members: Vec<Member>,
    /// Set while a member is being written and left set when it failed.
    broken: bool,
}

impl<W: Write> PackWriter<W> {
    /// Start a pack encrypted to `key`, written to `out`.
    pub fn new(key: &MirrorKey, out: W) -> Result<PackWriter<W>> {
        let stream = key.encrypt_stream(Tap::new(out, HEAD_KEEP))?;
        Ok(PackWriter {
            tar: tar::Builder::new(Tap::new(stream, 0)),
            members: Vec::new(),
            broken: false,
        })
    }

    /// Plaintext bytes written so far: what a caller compares with the target pack size.
    pub fn len(&self) -> u64 {
        self.tar.get_ref().written
    }

    /// Whether no member was added yet.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members added so far.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Add object `id` with content `data`.
    pub fn add(&mut self, id: &str, data: &[u8]) -> Result<&Member> {
        self.add_reader(id, data.len() as u64, data)
    }

    /// Add object `id` whose content is the `len` bytes `data` yields (a file being read as it
    /// is hashed). A reader that yields fewer or more bytes leaves the pack unusable.
    pub fn add_reader(&mut self, id: &str, len: u64, mut data: impl Read) -> Result<&Member> {
        ensure!(
            !self.broken,
            "an earlier member of this pack failed; the pack must be discarded"
        );
        check_id(id)?;
        ensure!(
            len <= MAX_MEMBER,
            "object {id}: {len} bytes is too large for a pack member"
        );
        let mut header = tar::Header::new_ustar();
        header.set_path(id)?;
        header.set_size(len);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let start = self.len();
        self.broken = true;
        let mut limited = (&mut data).take(len);
        self.tar.append(&header, &mut limited)?;
        // tar pads whatever it got, so a short read would leave a header that lies.
        ensure!(
            limited.limit() == 0,
            "object {id}: {} of {len} bytes could be read (the file changed while it was packed)",
            len - limited.limit()
        );
        let mut probe = [0u8; 1];
        ensure!(
            data.read(&mut probe)? == 0,
            "object {id}: longer than {len} bytes (the file changed while it was packed)"
        );
        self.broken = false;
        self.members.push(Member {
            id: id.to_string(),
            offset: start + BLOCK,
            len,
        });
        Ok(self.members.last().expect("just pushed"))
    }

    /// End the archive and the age stream; returns the writer and the pack's index data.
    pub fn finish(self) -> Result<(W, PackInfo)> {
        ensure!(
            !self.broken,
            "a member of this pack failed; the pack must be discarded"
        );
        let plain = self.tar.into_inner()?;
        let plaintext_len = plain.written;
        let cipher = plain.inner.finish()?;
        let stored_len = cipher.written;
        // Everything after the header is the nonce and the chunks, whose size age fixes.
        let header_len = stored_len + 16 - payload_len(plaintext_len);
        let mut header = cipher.head;
        ensure!(
            header_len as usize <= header.len(),
            "the age header is longer than {HEAD_KEEP} bytes"
        );
        header.truncate(header_len as usize);
        Ok((
            cipher.inner,
            PackInfo {
                header,
                members: self.members,
                plaintext_len,
                stored_len,
            },
        ))
    }
}

/// Object ids are lowercase hex that fits a ustar name.
fn check_id(id: &str) -> Result<()> {
    ensure!(
        !id.is_empty()
            && id.len() <= MAX_NAME
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id:?} is not an object id (lowercase hex, at most {MAX_NAME} characters)"
    );
    Ok(())
}

/// The ciphertext range holding the STREAM chunks that cover plaintext `plain`, in a pack of
/// `stored_len` bytes whose header is `header_len` bytes.
pub fn chunk_range(header_len: u64, stored_len: u64, plain: Range<u64>) -> Range<u64> {
    let first = plain.start / CHUNK;
    let last = plain.end.max(plain.start + 1).div_ceil(CHUNK);
    let start = header_len + first * ENCRYPTED_CHUNK;
    let end = (header_len + last * ENCRYPTED_CHUNK).min(stored_len);
    start..end.max(start)
}

/// A `Read + Seek` view of a pack that holds only the ranges fetched so far and fetches
/// missing bytes (one chunk at a time) through `fetch` when age asks for them.
struct Ranged<F> {
    fetch: F,
    len: u64,
    pos: u64,
    pieces: Vec<(u64, Vec<u8>)>,
}

impl<F: FnMut(Range<u64>) -> io::Result<Vec<u8>>> Ranged<F> {
    fn load(&mut self, range: Range<u64>) -> io::Result<()> {
        let want = range.end - range.start;
        let bytes = (self.fetch)(range.clone())?;
        if bytes.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "asked for bytes {}..{} of the pack, got {}",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        self.pieces.push((range.start, bytes));
        Ok(())
    }
}

impl<F: FnMut(Range<u64>) -> io::Result<Vec<u8>>> Read for Ranged<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let held = |pieces: &[(u64, Vec<u8>)]| {
            pieces
                .iter()
                .position(|(at, b)| *at <= pos && pos < at + b.len() as u64)
        };
        let i = match held(&self.pieces) {
            Some(i) => i,
            None => {
                self.load(pos..(pos + ENCRYPTED_CHUNK).min(self.len))?;
                self.pieces.len() - 1
            }
        };
        let (at, bytes) = &self.pieces[i];
        let from = (pos - at) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F> Seek for Ranged<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the pack's start")
        })?;
        Ok(self.pos)
    }
}

/// Read `member` of a pack without downloading the rest of it. `header` is the pack's
/// [`PackInfo::header`], `stored_len` its stored size, and `fetch(range)` returns exactly
/// those bytes of the stored pack (an object-store range GET, or a slice of a pack in memory).
/// Fetches one range: the STREAM chunks covering the member's tar header and data.
pub fn read_member<F>(
    key: &MirrorKey,
    header: &[u8],
    stored_len: u64,
    member: &Member,
    fetch: F,
) -> Result<Vec<u8>>
where
    F: FnMut(Range<u64>) -> io::Result<Vec<u8>>,
{
    let id = &member.id;
    let bad_index = || anyhow!("pack index entry for object {id} does not fit its pack");
    let start = member.offset.checked_sub(BLOCK).ok_or_else(bad_index)?;
    let end = member
        .offset
        .checked_add(member.len)
        .ok_or_else(bad_index)?;
    let header_len = header.len() as u64;
    let range = chunk_range(header_len, stored_len, start..end);
    ensure!(
        header_len < stored_len && !range.is_empty(),
        "{}",
        bad_index()
    );
    let mut src = Ranged {
        fetch,
        len: stored_len,
        pos: 0,
        pieces: vec![(0, header.to_vec())],
    };
    src.load(range)
        .with_context(|| format!("reading object {id} from its pack"))?;
    let opened = || format!("object {id}: its pack does not decrypt (changed or truncated)");
    let mut plain = key
        .decrypt_stream(src)
        .map_err(|e| anyhow!("{}: {e}", opened()))?;
    // A seek to the very start of chunk k > 0 makes age authenticate the stream's length by
    // decrypting the pack's last chunk (one more request and up to 64 KiB). Landing one byte
    // in decrypts chunk k instead; the second seek then stays inside it and costs nothing.
    if start % CHUNK == 0 && start > 0 {
        plain
            .seek(SeekFrom::Start(start + 1))
            .with_context(opened)?;
    }
    plain.seek(SeekFrom::Start(start)).with_context(opened)?;
    let mut buf = vec![0u8; (end - start) as usize];
    plain.read_exact(&mut buf).with_context(opened)?;
    ensure!(
        header_names(&buf[..BLOCK as usize], id, member.len),
        "{}: the pack holds another member there",
        bad_index()
    );
    Ok(buf.split_off(BLOCK as usize))
}

/// Whether the 512-byte tar header `block` is a regular-file member named `id` of `len`
/// bytes: an index that points at the wrong place fails here instead of returning another
/// object's bytes.
pub fn header_names(block: &[u8], id: &str, len: u64) -> bool {
    if block.len() != BLOCK as usize {
        return false;
    }
    let h = tar::Header::from_byte_slice(block);
    h.path_bytes().as_ref() == id.as_bytes()
        && h.entry_size().ok() == Some(len)
        && h.entry_type() == tar::EntryType::Regular
}

/// Every member of a whole pack, read from its decrypted tar stream: how an index is rebuilt
/// from the packs alone (and how tests check what [`PackWriter`] recorded).
pub fn scan(key: &MirrorKey, pack: impl Read) -> Result<Vec<Member>> {
    let mut members = Vec::new();
    read_members(key, pack, |m, _| {
        members.push(m.clone());
        Ok(())
    })?;
    Ok(members)
}

/// Decrypt a whole pack as it streams and hand each member, with a reader of its data, to
/// `each` (what a repack copies from). Data `each` does not read is skipped.
pub fn read_members(
    key: &MirrorKey,
    pack: impl Read,
    mut each: impl FnMut(&Member, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let plain = key
        .decrypt_stream(pack)
        .map_err(|e| anyhow!("the pack does not decrypt: {e}"))?;
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries()? {
        let mut entry = entry.context("the pack is not a valid tar archive")?;
        let id = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| anyhow!("a pack member name is not an object id"))?;
        check_id(&id)?;
        let member = Member {
            offset: entry.raw_file_position(),
            len: entry.size(),
            id,
        };
        each(&member, &mut entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::process::{Command, Stdio};

    /// Deterministic, incompressible-looking bytes (a different stream per `seed`).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut i = 0u64;
        while out.len() < n {
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(&i.to_le_bytes());
            out.extend_from_slice(h.finalize().as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn slice(s: &[u8], r: Range<u64>) -> Vec<u8> {
        s[r.start as usize..r.end as usize].to_vec()
    }

    fn id_of(key: &MirrorKey, data: &[u8]) -> String {
        key.object_id(blake3::hash(data).as_bytes())
    }

    /// Pack `contents`; returns the stored pack and its info.
    fn pack(key: &MirrorKey, contents: &[Vec<u8>]) -> (Vec<u8>, PackInfo) {
        let mut w = PackWriter::new(key, Vec::new()).unwrap();
        for c in contents {
            w.add(&id_of(key, c), c).unwrap();
        }
        w.finish().unwrap()
    }

    /// The awkward sizes: empty, around a tar block, around an age chunk, and large.
    const SIZES: [usize; 10] = [0, 1, 511, 512, 513, 65535, 65536, 65537, 1 << 20, 65024];

    fn awkward() -> Vec<Vec<u8>> {
        // 65024 first puts the second member's tar header exactly on chunk 1 (512 + 65024 =
        // 65536): the case where `read_member` must not seek to a chunk start.
        let mut v = vec![bytes(99, 65024)];
        v.extend(SIZES.iter().enumerate().map(|(i, &n)| bytes(i as u64, n)));
        v
    }

    #[test]
    fn members_round_trip_through_ranged_reads_and_a_full_scan() {
        let key = MirrorKey::generate();
        let contents = awkward();
        let (stored, info) = pack(&key, &contents);
        assert_eq!(info.stored_len, stored.len() as u64);
        assert!(info.header.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(&stored[..info.header.len()], &info.header[..]);
        assert_eq!(info.members.len(), contents.len());
        assert_eq!(info.members[1].offset - BLOCK, CHUNK, "the alignment case");

        // The plaintext is a tar archive whose members sit where the writer said.
        let plain = key.decrypt(&stored).unwrap();
        assert_eq!(plain.len() as u64, info.plaintext_len);
        for (m, c) in info.members.iter().zip(&contents) {
            let at = m.offset as usize;
            assert_eq!(&plain[at..at + c.len()], &c[..], "{}", m.len);
        }
        assert_eq!(scan(&key, &stored[..]).unwrap(), info.members);

        let fetches = Cell::new(0usize);
        for (m, c) in info.members.iter().zip(&contents) {
            fetches.set(0);
            let got = read_member(&key, &info.header, info.stored_len, m, |r| {
                fetches.set(fetches.get() + 1);
                Ok(slice(&stored, r))
            })
            .unwrap();
            assert_eq!(got, *c, "member of {} bytes", c.len());
            assert_eq!(fetches.get(), 1, "member of {} bytes: one range", c.len());
        }
    }

    #[test]
    fn a_wrong_index_entry_or_a_changed_pack_fails() {
        let key = MirrorKey::generate();
        let contents = vec![bytes(1, 1000), bytes(2, 70_000), bytes(3, 10)];
        let (mut stored, info) = pack(&key, &contents);
        let read = |s: &[u8], m: &Member| {
            read_member(&key, &info.header, s.len() as u64, m, |r| Ok(slice(s, r)))
        };

        // Another member's offset, a wrong length, an id that is not there, an offset with no
        // room for a tar header, an offset past the pack's end.
        let m = &info.members[1];
        for wrong in [
            Member {
                offset: info.members[2].offset,
                ..m.clone()
            },
            Member {
                len: m.len - 1,
                ..m.clone()
            },
            Member {
                id: "ab".into(),
                ..m.clone()
            },
            Member {
                offset: 100,
                ..m.clone()
            },
            Member {
                offset: info.plaintext_len + 10 * CHUNK,
                ..m.clone()
            },
        ] {
            assert!(read(&stored, &wrong).is_err(), "{wrong:?}");
        }
        // Another key cannot open it.
        let other = MirrorKey::generate();
        let len = stored.len() as u64;
        assert!(read_member(&other, &info.header, len, m, |r| Ok(slice(&stored, r))).is_err());
        // One flipped ciphertext byte inside the member's chunk.
        let at = (info.header.len() as u64 + m.offset + 5) as usize;
        stored[at] ^= 1;
        let err = read(&stored, m).unwrap_err();
        assert!(format!("{err:#}").contains("does not decrypt"), "{err:#}");
        stored[at] ^= 1;
        assert_eq!(read(&stored, m).unwrap(), contents[1]);
    }

    #[test]
    fn a_member_that_is_not_as_long_as_announced_spoils_the_pack() {
        let key = MirrorKey::generate();
        for (announced, actual) in [(10u64, 9usize), (10, 11)] {
            let mut w = PackWriter::new(&key, Vec::new()).unwrap();
            w.add("aa", b"fine").unwrap();
            let err = w
                .add_reader("bb", announced, &bytes(1, actual)[..])
                .unwrap_err();
            assert!(
                err.to_string().contains("changed while it was packed"),
                "{err}"
            );
            assert!(w.add("cc", b"x").is_err());
            assert!(w.finish().is_err());
        }
        let mut w = PackWriter::new(&key, Vec::new()).unwrap();
        let long = "a".repeat(101);
        for bad in ["", "AB", "../x", "a/b", long.as_str()] {
            assert!(w.add(bad, b"x").is_err(), "{bad:?}");
        }
        assert!(w.is_empty());
    }

    /// A member in the middle of a 16 MiB pack costs one range of at most the member's
    /// chunks: the measured bytes are quoted in docs/mirror-v2.md.
    #[test]
    fn a_ranged_read_fetches_only_the_members_chunks() {
        let key = MirrorKey::generate();
        // 16 MiB of 60,000-byte members (not chunk-aligned), then the small one, then more.
        let mut contents: Vec<Vec<u8>> = (0..140).map(|i| bytes(i, 60_000)).collect();
        contents.push(bytes(1000, 1000));
        // 140 + 1 + 141 members of 60,000 bytes: ≈ 16.1 MiB of plaintext.
        contents.extend((200..341).map(|i| bytes(i, 60_000)));
        let (stored, info) = pack(&key, &contents);
        assert!(info.stored_len >= 16 << 20, "{}", info.stored_len);
        let m = &info.members[140];
        let requested = Cell::new(Vec::new());
        let got = read_member(&key, &info.header, info.stored_len, m, |r| {
            let mut v = requested.take();
            v.push(r.clone());
            requested.set(v);
            Ok(slice(&stored, r))
        })
        .unwrap();
        assert_eq!(got, contents[140]);
        let requested = requested.take();
        let bytes: u64 = requested.iter().map(|r| r.end - r.start).sum();
        // Worked out independently of `chunk_range`: the chunks from the one holding the tar
        // header's first byte to the one holding the data's last byte.
        let chunks = (m.offset + m.len - 1) / CHUNK - (m.offset - BLOCK) / CHUNK + 1;
        eprintln!(
            "ranged read of a {}-byte member at plaintext {} of a {}-byte pack: {} request(s), {bytes} bytes (+ {} header bytes from the index)",
            m.len,
            m.offset,
            info.stored_len,
            requested.len(),
            info.header.len()
        );
        assert_eq!(requested.len(), 1);
        assert_eq!(bytes, chunks * ENCRYPTED_CHUNK);
        assert!(
            chunks <= 2,
            "a member under 64 KiB spans at most two chunks"
        );
    }

    /// Is `tool` on PATH? Otherwise SKIP, or fail under `OFFSYNC_REQUIRE_E2E=1` (the same rule
    /// as tests/it/util, which unit tests cannot reach).
    fn have(tool: &str) -> bool {
        if which::which(tool).is_ok() {
            return true;
        }
        if std::env::var("OFFSYNC_REQUIRE_E2E").is_ok_and(|v| v == "1") {
            panic!("OFFSYNC_REQUIRE_E2E=1 but `{tool}` is missing (scripts/test installs it)");
        }
        eprintln!(
            "SKIP: `{tool}` is not installed (set OFFSYNC_REQUIRE_E2E=1 to make this an error)"
        );
        false
    }

    /// The documented recovery by hand: `age -d -i mirror-key.txt PACK | tar -x` with the
    /// real tools gives every member, named by its object id, byte for byte.
    #[test]
    fn the_real_age_and_tar_recover_every_member() {
        if !have("age") || !have("tar") {
            return;
        }
        let key = MirrorKey::generate();
        let contents = awkward();
        let (stored, info) = pack(&key, &contents);
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("mirror-key.txt");
        std::fs::write(&key_file, key.key_file_text(&[])).unwrap();
        let pack_file = dir.path().join("pack");
        std::fs::write(&pack_file, &stored).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();

        let mut age = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&key_file)
            .arg(&pack_file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&out)
            .stdin(age.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(age.wait().unwrap().success(), "age -d failed");
        assert!(tar.success(), "tar -x failed");

        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut ids: Vec<String> = info.members.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(names, ids, "tar -x gives exactly the members, named by id");
        for (m, c) in info.members.iter().zip(&contents) {
            let got = std::fs::read(out.join(&m.id)).unwrap();
            assert_eq!(got, *c, "member {} ({} bytes)", m.id, m.len);
        }
    }
}
