//! Target markers: proof, on every connection, that a target's forced command still points
//! at the directory offsync wrote to.
//!
//! The confinement probe (a refused read) shows that rrsync is in force, but not *which*
//! directory it allows: an edited `authorized_keys` line could now allow `/` or someone's home.
//! So `target add` (and, for targets added before markers existed, the first apply) writes an
//! empty file `.offsync-marker-<id>` at the root of the allowed directory and records the id
//! in `$OFFSYNC_HOME/markers/<target>`. Every dry run then sends the marker along as a second
//! source: when rsync would create it, the directory is not the one offsync wrote to, and the
//! target is refused before anything is listed as a change, written or deleted. The check
//! reads nothing from the target (the key cannot read) and works with any comparison mode,
//! because the id is in the name.
//!
//! Invariants: markers are excluded from every plan, transfer and delete (`plan::excludes::
//! MARKER_RULE`); a marker id is 128 random bits; the record is written only after the marker
//! reached the target, and removed by `target remove`.

use anyhow::Result;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// File-name prefix of a marker on a target.
pub const PREFIX: &str = ".offsync-marker-";

/// The marker file name for `id`.
pub fn file_name(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// A fresh random id (32 hex digits).
pub fn new_id() -> String {
    use ssh_key::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn record_path(home: &Path, target: &str) -> PathBuf {
    home.join("markers").join(target)
}

/// The id recorded for `target`, if its marker was written.
pub fn load(home: &Path, target: &str) -> Result<Option<String>> {
    let Some(bytes) = fsutil::read_optional(&record_path(home, target))? else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(&bytes).trim().to_string();
    let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    Ok(valid.then_some(id))
}

/// Record that `target` carries the marker `id`.
pub fn save(home: &Path, target: &str, id: &str) -> Result<()> {
    let dir = home.join("markers");
    fsutil::ensure_private_dir(&dir)?;
    fsutil::atomic_write(
        &record_path(home, target),
        format!("{id}\n").as_bytes(),
        fsutil::FILE_MODE,
    )
}

/// Forget `target`'s marker and whether it was ever applied to (target remove).
pub fn forget(home: &Path, target: &str) -> Result<()> {
    for p in [record_path(home, target), applied_path(home, target)] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

fn applied_path(home: &Path, target: &str) -> PathBuf {
    home.join("applied").join(target)
}

/// Whether an apply to `target` ever completed (`$OFFSYNC_HOME/applied/<target>` exists). A target never applied to is probably empty,
/// so its first checksum plan tries the quick check first (exact when the target holds none
/// of the source's paths; see `targets::ssh`). Only a hint: a wrong answer costs one dry run,
/// never correctness.
pub fn was_applied(home: &Path, target: &str) -> bool {
    applied_path(home, target).exists()
}

/// Record that an apply to `target` completed (see [`was_applied`]).
pub fn note_applied(home: &Path, target: &str) -> Result<()> {
    let p = applied_path(home, target);
    if p.exists() {
        return Ok(());
    }
    fsutil::ensure_private_dir(&home.join("applied"))?;
    fsutil::atomic_write(&p, b"", fsutil::FILE_MODE)
}

/// Create `dir/.offsync-marker-<id>` (empty): the second source of a dry run, or what a
/// marker push sends.
pub fn write_source(dir: &Path, id: &str) -> Result<()> {
    // Scratch: nothing to make durable.
    fsutil::write_volatile(&dir.join(file_name(id)), b"", 0o644)
}

/// Write the marker `id` to the target behind `rsh`/`dest` (a relative `user@host:`), with
/// `run` executing the rsync argv (callers add their own connection handling), then record it.
pub fn push(
    home: &Path,
    target: &str,
    id: &str,
    rsh: &str,
    dest: &str,
    run: &dyn Fn(Vec<std::ffi::OsString>) -> Result<crate::process::Output>,
) -> Result<()> {
    let dir = fsutil::ScratchDir::new(&home.join("tmp"), "marker")?;
    write_source(dir.path(), id)?;
    let out = run(crate::rsync::marker_push_argv(rsh, dir.path(), dest))?;
    if !out.success() {
        let d = crate::rsync::Diagnosis::from_output(out.code(), &out.stderr);
        return Err(d.error("cannot write the target marker"));
    }
    save(home, target, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path(), "t1").unwrap(), None);
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_id());
        save(d.path(), "t1", &id).unwrap();
        assert_eq!(load(d.path(), "t1").unwrap(), Some(id));
        forget(d.path(), "t1").unwrap();
        forget(d.path(), "t1").unwrap();
        assert_eq!(load(d.path(), "t1").unwrap(), None);
    }
}
