//! Small in-process mirrors for unit tests: a local-directory store in a temp dir, one age
//! identity shared by two writers (each with its own ed25519 signing key and its own
//! rollback state, like two controllers), and generations committed through the real
//! [`commit`] path from real source directories. No sshd, no S3.

use std::path::{Path, PathBuf};

use super::commit::{self, Prepared, Published};
use super::crypto::{self, Identity};
use super::store::{Location, S3Settings, Store};
use super::{Mirror, Trust};
use crate::plan::diff::{TargetView, diff};
use crate::plan::excludes::Excludes;
use crate::plan::manifest;
use ssh_key::{Algorithm, PrivateKey};

pub struct TestMirror {
    pub tmp: tempfile::TempDir,
    pub identity: Identity,
    /// Signing keys of writer 0 and writer 1; each trusts both.
    pub writers: [PrivateKey; 2],
}

fn signing_key() -> PrivateKey {
    PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap()
}

impl TestMirror {
    /// An empty, initialised mirror.
    pub fn new() -> TestMirror {
        let t = TestMirror {
            tmp: tempfile::tempdir().unwrap(),
            identity: crypto::generate(),
            writers: [signing_key(), signing_key()],
        };
        let (_, created) =
            Mirror::init(t.store(), &t.identity, &[], &t.tmp.path().join("state-0")).unwrap();
        assert!(created);
        t
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("mirror")
    }

    fn store(&self) -> Store {
        Store::open(&Location::Local(self.root()), &S3Settings::default(), true).unwrap()
    }

    /// The mirror as writer `w` opens it (its own rollback state).
    pub fn open(&self, w: usize) -> Mirror {
        let trust = Trust {
            writers: self
                .writers
                .iter()
                .map(|k| k.public_key().clone())
                .collect(),
            accept_legacy: true,
            ..Default::default()
        };
        Mirror::open(
            self.store(),
            std::slice::from_ref(&self.identity),
            &self.tmp.path().join(format!("state-{w}")),
        )
        .unwrap()
        .with_trust(trust)
        .with_signer(self.writers[w].clone())
    }

    /// A source directory `name` holding exactly `files` (path, content).
    pub fn source(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.tmp.path().join("src").join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        for (p, content) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Plan `src` against the newest generation `m` sees and store its objects (like `apply`,
    /// deleting what `src` lacks), without publishing.
    pub fn prepare(m: &Mirror, src: &Path) -> Prepared {
        let (source, _) = manifest::build(src, &Excludes::new(&[]).unwrap(), None).unwrap();
        let base = m.latest().unwrap();
        let listing = match &base {
            Some((s, _)) => s.listing().unwrap(),
            None => Default::default(),
        };
        let changes = diff(&source, &TargetView::Listing(listing));
        commit::prepare(m, base.as_ref(), &source, &changes, true, &|_| {}).unwrap()
    }

    /// Commit `src` as the next generation; returns its number.
    pub fn commit(m: &Mirror, src: &Path) -> u64 {
        let p = Self::prepare(m, src);
        assert_eq!(commit::publish(m, &p).unwrap(), Published::Written);
        p.snapshot.generation
    }
}

/// Every object id in the mirror: single objects and indexed pack members.
pub fn object_ids(m: &Mirror) -> std::collections::BTreeSet<String> {
    let packs = super::packs::PackIndex::load(&m.store, &m.keys()).unwrap();
    super::index::ObjectIndex::load(&m.store)
        .unwrap()
        .iter()
        .map(|o| o.id.clone())
        .chain(packs.ids().map(|(id, _)| id.clone()))
        .collect()
}
