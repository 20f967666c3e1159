//! Checking a generation's objects (`verify`, `target check`): every object it references is
//! stored with the size the snapshot records; `deep` also downloads, decrypts and re-hashes
//! each one. Reads only.

use anyhow::Result;

use super::index::ObjectIndex;
use super::snapshot::{self, SnapEntry, Snapshot};
use super::{Mirror, WORKERS};

/// Check that every object `snap` references exists with the right size; with `deep`, also
/// download, decrypt and re-hash each one. Errors name the paths (at most ten).
pub fn check_objects(mirror: &Mirror, snap: &Snapshot, deep: bool) -> Result<()> {
    let present = ObjectIndex::load(&mirror.store)?;
    let packs = mirror.pack_index()?;
    let mut problems = Vec::new();
    let mut files: Vec<&SnapEntry> = Vec::new();
    for e in snap.entries.iter().filter(|e| e.kind == "file") {
        let (Some(id), Some(size)) = (&e.object, e.size) else {
            problems.push(format!("{:?} has no object", e.path));
            continue;
        };
        if let Some(at) = packs.locate(id) {
            if at.member.len == size {
                files.push(e);
            } else {
                problems.push(format!(
                    "{:?}: object {id} has {} bytes in pack {}, the snapshot says {size}",
                    e.path,
                    at.member.len,
                    super::packs::pack_path(&at.pack)
                ));
            }
            continue;
        }
        match present.size(id) {
            None => problems.push(format!(
                "{:?}: object {id} is missing (in no pack, and no {})",
                e.path,
                snapshot::object_path(id)
            )),
            Some(n)
                if e.stored_size
                    .map_or(!super::crypto::plausible_len(size, n), |s| s != n) =>
            {
                problems.push(format!(
                    "{:?}: object {} has {n} bytes, which does not fit the snapshot's {size}",
                    e.path,
                    snapshot::object_path(id)
                ))
            }
            Some(_) => files.push(e),
        }
    }
    if deep {
        // The fast pass reads each pack once; when it fails, every file again on its own, so
        // each bad object names its path and the rest still run.
        let mut one_by_one: Vec<&SnapEntry> = Vec::new();
        if mirror
            .fetch_each(
                &files,
                WORKERS,
                |e| e,
                |_| Ok(std::io::sink()),
                |_, _| Ok(()),
            )
            .is_err()
        {
            one_by_one = files.clone();
        }
        let results = crate::parallel::parallel(&mut one_by_one, WORKERS, |e| {
            mirror.fetch_into(e, &mut std::io::sink())
        });
        for r in results {
            if let Err(e) = r {
                problems.push(format!("{e:#}"));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(10);
    anyhow::bail!(
        "generation {} of {}: {n} problem(s): {}{}",
        snap.generation,
        mirror.store.display(),
        problems.join("; "),
        if n > 10 { "; …" } else { "" }
    )
}
