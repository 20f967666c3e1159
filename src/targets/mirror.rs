//! An encrypted mirror as a [`Target`]: scanning reads the newest snapshot (one download plus
//! a rollback check), applying commits the plan on top of it ([`commit::prepare`] stores the
//! missing objects, [`commit::publish`] writes the next generation create-only).
//!
//! Invariants: apply builds the new generation from the generation it scanned, changing
//! exactly the plan's paths (see [`commit`]); if another writer created that generation
//! first, this apply fails without touching it and its stored objects stay unreferenced
//! until `mirror prune`.

use anyhow::Result;

use super::{ApplyOutcome, Target, TargetInfo};
use crate::config::MirrorConfig;
use crate::context::Context;
use crate::mirror::check::check_objects;
use crate::mirror::commit::{self, Published};
use crate::mirror::snapshot::Snapshot;
use crate::mirror::store::{Location, S3Settings, Store};
use crate::mirror::{self, Mirror};
use crate::plan::TargetPlan;
use crate::plan::diff::TargetView;
use crate::plan::excludes::Excludes;
use crate::plan::manifest::Manifest;

pub use crate::mirror::WORKERS;

pub struct MirrorTarget {
    info: TargetInfo,
    location: Location,
    s3: S3Settings,
    home: std::path::PathBuf,
    /// Other trusted writers (config.yaml).
    writers: Vec<String>,
    /// `mirrors[].uploads` (config.yaml).
    uploads: Option<usize>,
    mirror: Option<Mirror>,
    /// The generation the last scan saw (`None`: the mirror is empty).
    base: Option<(Snapshot, String)>,
    scanned: bool,
}

impl MirrorTarget {
    pub fn from_config(ctx: &Context, m: &MirrorConfig) -> Result<MirrorTarget> {
        let location = Location::parse(&m.url)?;
        Ok(MirrorTarget {
            info: TargetInfo {
                name: m.name.clone(),
                kind: crate::plan::TargetKind::Mirror,
                address: location.url(),
                host: match &location {
                    Location::S3 { bucket, .. } => format!("s3:{bucket}"),
                    Location::Local(_) => "local".into(),
                },
                delete_allowed: true,
                exclude: Vec::new(),
            },
            location,
            s3: S3Settings {
                endpoint: m.endpoint.clone(),
                region: m.region.clone(),
            },
            home: ctx.home.clone(),
            writers: m.writers.clone(),
            uploads: m.uploads,
            mirror: None,
            base: None,
            scanned: false,
        })
    }

    /// Open the mirror with this controller's identity (once).
    pub fn mirror(&mut self) -> Result<&Mirror> {
        if self.mirror.is_none() {
            let store = Store::open(&self.location, &self.s3, false)?;
            let idp = mirror::identity_path(&self.home);
            if !idp.exists() {
                return Err(crate::input_err!(
                    "{} is missing: this controller has no age identity; run `offsync mirror add {} {}` to create it (or copy the identity that opens this mirror there)",
                    idp.display(),
                    self.info.name,
                    self.location.url()
                ));
            }
            let ids = mirror::crypto::read_identity_file(&idp)?;
            // This controller writes the mirror: it signs what it publishes, accepts its own
            // and its co-writers' signatures, and may migrate a never-signed mirror.
            let trust = mirror::controller_trust(&self.home, &self.info.name, &self.writers, true)?;
            let m = Mirror::open(store, &ids, &self.home.join("mirror-state"))?
                .with_trust(trust)
                .with_signer(mirror::own_signing_key(&self.home)?)
                .with_uploads(self.uploads);
            if m.rekey_pending().is_some() {
                anyhow::bail!(
                    "a rekey of {} was interrupted; finish it with `offsync mirror rekey {}` before applying",
                    self.location.url(),
                    self.info.name
                );
            }
            self.mirror = Some(m);
        }
        Ok(self.mirror.as_ref().expect("opened above"))
    }

    /// The mirror side of `target check`, changing nothing: the credentials and the bucket
    /// work, this controller's identity opens the mirror key, the newest generation
    /// decrypts, passes its MAC, its writer signature and the rollback check, every object it references is
    /// present with its size, and the store accepts a create-only write. Returns the newest
    /// generation (`None`: the mirror is empty).
    pub fn probe(&mut self) -> Result<Option<&Snapshot>> {
        self.scan_base()?;
        let m = self.mirror.as_ref().expect("opened by scan_base");
        if let Some((snap, _)) = &self.base {
            check_objects(m, snap, false)?;
        }
        m.probe_write()?;
        Ok(self.base.as_ref().map(|(s, _)| s))
    }

    fn scan_base(&mut self) -> Result<()> {
        let base = self.mirror()?.latest()?;
        self.base = base;
        self.scanned = true;
        Ok(())
    }
}

impl Target for MirrorTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn scan(
        &mut self,
        _source: &Manifest,
        excludes: &Excludes,
        _check: crate::plan::CheckMode,
    ) -> Result<TargetView> {
        self.scan_base()?;
        let listing = match &self.base {
            None => Default::default(),
            Some((snap, _)) => {
                let mut listing = snap.listing()?;
                listing.retain(|p, e| !excludes.hides(p, e.kind_name() == "dir"));
                listing
            }
        };
        Ok(TargetView::Listing(listing))
    }

    fn apply(
        &mut self,
        source: &Manifest,
        _excludes: &Excludes,
        plan: &TargetPlan,
        delete: bool,
        progress: &(dyn Fn(crate::engine::Sent) + Sync),
    ) -> Result<ApplyOutcome> {
        if !self.scanned {
            self.scan_base()?;
        }
        // The base is used once: any later apply or check scans again.
        let base = self.base.take();
        self.scanned = false;
        let url = self.location.url();
        let mirror = self.mirror()?;
        let prepared = commit::prepare(
            mirror,
            base.as_ref(),
            source,
            &plan.changes,
            delete,
            progress,
        )?;
        if commit::publish(mirror, &prepared)? == Published::Conflict {
            anyhow::bail!(
                "another apply wrote generation {} of {url} first; nothing of this apply is visible (its objects are harmless and `mirror prune` removes them); run `offsync plan` again",
                prepared.snapshot.generation
            );
        }
        Ok(ApplyOutcome {
            changed: prepared.changed,
            deleted: prepared.deleted,
            bytes: plan.summary.bytes,
            partial: false,
        })
    }

    fn check(&mut self, deep: bool) -> Result<()> {
        if !self.scanned {
            self.scan_base()?;
        }
        let Some((snap, _)) = self.base.clone() else {
            return Ok(());
        };
        let mirror = self.mirror()?;
        check_objects(mirror, &snap, deep)
    }
}
