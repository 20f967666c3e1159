//! The list-objects index: what is stored under `objects/`, by object id.
//!
//! Every part of offsync that needs to know which objects exist (apply's dedupe, `check`,
//! `prune`, `rekey`) reads it through [`ObjectIndex::load`], so they all agree on what an
//! object is: a listed path under `objects/` (staging files of an interrupted local upload are
//! already left out by [`Store::list`]) whose id is its last path component.

use anyhow::Result;
use std::collections::HashMap;
use std::time::Duration;

use super::store::Store;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Object id (the last component of `path`).
    pub id: String,
    /// Path relative to the mirror root (`objects/ab/abcd…`): what a delete names.
    pub path: String,
    /// Stored (encrypted) size.
    pub size: u64,
    /// Time since it was last written.
    pub age: Duration,
}

/// Every object in a mirror, listed once.
#[derive(Debug, Clone, Default)]
pub struct ObjectIndex {
    /// Sorted by path.
    objects: Vec<StoredObject>,
    /// Id → position in `objects` (the last path listed wins if an id shows up twice).
    by_id: HashMap<String, usize>,
}

impl ObjectIndex {
    /// List `objects/` of `store`.
    pub fn load(store: &Store) -> Result<ObjectIndex> {
        let objects: Vec<StoredObject> = store
            .list("objects")?
            .into_iter()
            .map(|m| StoredObject {
                id: m.path.rsplit('/').next().unwrap_or("").to_string(),
                path: m.path,
                size: m.size,
                age: m.age,
            })
            .collect();
        let by_id = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), i))
            .collect();
        Ok(ObjectIndex { objects, by_id })
    }

    /// The object with id `id`.
    pub fn get(&self, id: &str) -> Option<&StoredObject> {
        self.by_id.get(id).map(|&i| &self.objects[i])
    }

    /// The stored size of object `id`.
    pub fn size(&self, id: &str) -> Option<u64> {
        self.get(id).map(|o| o.size)
    }

    /// Every listed object, by path.
    pub fn iter(&self) -> impl Iterator<Item = &StoredObject> {
        self.objects.iter()
    }

    /// Id → stored size.
    pub fn sizes(&self) -> HashMap<String, u64> {
        self.by_id
            .iter()
            .map(|(id, &i)| (id.clone(), self.objects[i].size))
            .collect()
    }
}
