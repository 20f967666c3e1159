//! `mirror prune` as a plan and its execution (rustic's `prune_plan()` → `prune(plan)`):
//! [`prune_plan`] decides, reading only, which generations go and which objects no kept
//! generation references; the command shows that [`PrunePlan`] and [`prune`] deletes exactly
//! what it lists.
//!
//! Safety rules (the same whether the plan is executed at once or later):
//! - the newest `keep` generations stay, and every object any of them references (walked
//!   through the verified chain, so an untrusted newest generation stops the prune);
//! - an unreferenced object younger than `min_age` stays: an apply may still be uploading it
//!   and about to publish a generation that references it;
//! - before deleting, [`prune`] lists the generations again: objects referenced by a
//!   generation published since the plan are spared, never deleted.

use anyhow::Result;
use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::Mirror;
use super::index::ObjectIndex;
use super::snapshot;

/// One object a prune deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoomedObject {
    pub id: String,
    /// Path relative to the mirror root.
    pub path: String,
    /// Stored size.
    pub size: u64,
}

/// What a prune deletes and keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// Generations kept (the newest `keep`), ascending.
    pub keep: Vec<u64>,
    /// Generations deleted, ascending.
    pub delete_generations: Vec<u64>,
    /// Objects no kept generation references, older than `min_age`.
    pub delete_objects: Vec<DoomedObject>,
    /// Unreferenced objects kept because they are younger than `min_age`.
    pub young_unreferenced_objects: usize,
    pub min_age: Duration,
}

impl PrunePlan {
    /// Stored bytes of the objects deleted.
    pub fn delete_bytes(&self) -> u64 {
        self.delete_objects.iter().map(|o| o.size).sum()
    }

    /// Whether executing the plan deletes anything.
    pub fn is_empty(&self) -> bool {
        self.delete_generations.is_empty() && self.delete_objects.is_empty()
    }
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub generations: usize,
    pub objects: usize,
    pub bytes: u64,
    /// Planned objects kept because a generation published since the plan references them.
    pub spared: usize,
}

/// Plan a prune keeping the newest `keep` generations and the objects they reference.
pub fn prune_plan(mirror: &Mirror, keep: NonZeroUsize, min_age: Duration) -> Result<PrunePlan> {
    mirror.latest()?;
    let gens = mirror.generations()?;
    let cut = gens.len().saturating_sub(keep.get());
    let (old, kept) = gens.split_at(cut);
    let referenced = match kept.first() {
        Some(&first) => referenced_from(mirror, first)?,
        None => BTreeSet::new(),
    };
    let mut delete_objects = Vec::new();
    let mut young = 0usize;
    for o in ObjectIndex::load(&mirror.store)?.iter() {
        if referenced.contains(&o.id) {
            continue;
        }
        if o.age < min_age {
            young += 1;
            continue;
        }
        delete_objects.push(DoomedObject {
            id: o.id.clone(),
            path: o.path.clone(),
            size: o.size,
        });
    }
    Ok(PrunePlan {
        keep: kept.to_vec(),
        delete_generations: old.to_vec(),
        delete_objects,
        young_unreferenced_objects: young,
        min_age,
    })
}

/// Execute `plan`: delete its generations, then its objects, except any object a generation
/// published after the plan references.
pub fn prune(mirror: &Mirror, plan: &PrunePlan) -> Result<Pruned> {
    let newest_planned = plan.keep.last().copied().unwrap_or(0);
    let newer = mirror
        .generations()?
        .into_iter()
        .find(|&g| g > newest_planned);
    let still_needed = match newer {
        Some(g) => referenced_from(mirror, g)?,
        None => BTreeSet::new(),
    };
    let (spared, doomed): (Vec<&DoomedObject>, Vec<&DoomedObject>) = plan
        .delete_objects
        .iter()
        .partition(|o| still_needed.contains(&o.id));
    let names: Vec<String> = plan
        .delete_generations
        .iter()
        .map(|g| snapshot::snapshot_path(*g))
        .collect();
    mirror.store.delete(&names)?;
    let paths: Vec<String> = doomed.iter().map(|o| o.path.clone()).collect();
    mirror.store.delete(&paths)?;
    Ok(Pruned {
        generations: names.len(),
        objects: doomed.len(),
        bytes: doomed.iter().map(|o| o.size).sum(),
        spared: spared.len(),
    })
}

/// Every object referenced by generation `from` and the generations after it.
fn referenced_from(mirror: &Mirror, from: u64) -> Result<BTreeSet<String>> {
    let mut referenced = BTreeSet::new();
    mirror.walk_verified(from, |s, _| {
        referenced.extend(s.entries.iter().filter_map(|e| e.object.clone()));
        Ok(())
    })?;
    Ok(referenced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::check::check_objects;
    use crate::mirror::commit::{self, Published};
    use crate::mirror::testutil::{TestMirror, object_ids};

    fn n(k: usize) -> NonZeroUsize {
        NonZeroUsize::new(k).unwrap()
    }

    #[test]
    fn prune_plans_then_deletes_old_generations_and_only_their_objects() {
        let t = TestMirror::new();
        let m = t.open(0);
        TestMirror::commit(&m, &t.source("1", &[("a", b"A"), ("b", b"B")]));
        TestMirror::commit(&m, &t.source("2", &[("a", b"A"), ("c", b"C")]));
        TestMirror::commit(&m, &t.source("3", &[("c", b"C"), ("d", b"D")]));
        let ids = object_ids(&m);
        assert_eq!(ids.len(), 4);

        // Everything unreferenced is young: the plan keeps it, and says so.
        let young = prune_plan(&m, n(2), Duration::from_secs(3600)).unwrap();
        assert_eq!(
            (young.keep.as_slice(), young.delete_generations.as_slice()),
            (&[2, 3][..], &[1][..])
        );
        assert!(young.delete_objects.is_empty());
        assert_eq!(young.young_unreferenced_objects, 1);

        let plan = prune_plan(&m, n(2), Duration::ZERO).unwrap();
        assert_eq!(plan.delete_objects.len(), 1, "only B's object");
        assert_eq!(plan.delete_bytes(), plan.delete_objects[0].size);
        // Planning changed nothing.
        assert_eq!(m.generations().unwrap(), [1, 2, 3]);
        assert_eq!(object_ids(&m), ids);

        let done = prune(&m, &plan).unwrap();
        assert_eq!((done.generations, done.objects, done.spared), (1, 1, 0));
        assert_eq!(m.generations().unwrap(), [2, 3]);
        let left = object_ids(&m);
        assert_eq!(left.len(), 3);
        assert!(!left.contains(&plan.delete_objects[0].id));
        // What is kept still walks, verifies and decrypts.
        m.walk_verified(2, |s, _| check_objects(&m, s, true))
            .unwrap();
        // Nothing left to prune.
        assert!(prune_plan(&m, n(2), Duration::ZERO).unwrap().is_empty());
    }

    /// The plan lists the objects of an apply that has uploaded but not yet published; when
    /// that apply publishes before the plan is executed, prune spares them.
    #[test]
    fn prune_never_deletes_what_a_generation_published_after_the_plan_references() {
        let t = TestMirror::new();
        let (w0, w1) = (t.open(0), t.open(1));
        TestMirror::commit(&w0, &t.source("1", &[("a", b"A")]));
        let pending = TestMirror::prepare(&w1, &t.source("2", &[("a", b"A"), ("b", b"B")]));
        let plan = prune_plan(&w0, n(1), Duration::ZERO).unwrap();
        assert_eq!(
            plan.delete_objects.len(),
            1,
            "B's object, not yet referenced"
        );
        assert_eq!(commit::publish(&w1, &pending).unwrap(), Published::Written);
        let done = prune(&w0, &plan).unwrap();
        assert_eq!((done.objects, done.spared), (0, 1));
        let (latest, _) = w0.latest().unwrap().unwrap();
        assert_eq!(latest.generation, 2);
        check_objects(&w0, &latest, true).unwrap();
    }
}
