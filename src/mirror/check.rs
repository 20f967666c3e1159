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
    let mut problems = Vec::new();
    let mut files: Vec<&SnapEntry> = Vec::new();
    for e in snap.entries.iter().filter(|e| e.kind == "file") {
        let (Some(id), Some(size)) = (&e.object, e.stored_size) else {
            problems.push(format!("{:?} has no object", e.path));
            continue;
        };
        match present.size(id) {
            None => problems.push(format!(
                "{:?}: object {} is missing",
                e.path,
                snapshot::object_path(id)
            )),
            Some(n) if n != size => problems.push(format!(
                "{:?}: object {} has {n} bytes, the snapshot says {size}",
                e.path,
                snapshot::object_path(id)
            )),
            Some(_) => files.push(e),
        }
    }
    if deep {
        let results = crate::parallel::parallel(&mut files, WORKERS, |e| {
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
