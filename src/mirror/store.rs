//! Blocking access to a mirror's object store (S3 or a local directory) through `object_store`.
//!
//! Invariants:
//! - this is the only module that talks to a store; callers see synchronous calls and errors
//!   that name the mirror and say what to do (missing bucket, refused credentials,
//!   unreachable endpoint), never a credential;
//! - credentials come only from the environment or the AWS shared files, never from argv
//!   or `config.yaml`; without any, opening an S3 mirror fails at once instead of waiting
//!   on the EC2 metadata service;
//! - S3 is the cargo feature `s3` (default on; it brings object_store's AWS client, an HTTP and
//!   TLS stack of some 140 crates including a C build): without it, local directory mirrors
//!   work as before and opening an `s3://` mirror is bad input naming the URL and the fix;
//! - retries are bounded (3 tries, 20 s) so a dead endpoint fails in seconds;
//! - [`Store::put_create`] is create-only: on S3 and on local filesystems with hard links it is
//!   atomic; where hard links are missing (exFAT/FAT) it falls back to an exclusive create of
//!   the final name plus fsync, and a torn write is caught later by age's authentication.

use anyhow::{Context as _, Result};
use futures::StreamExt;
#[cfg(feature = "s3")]
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, local::LocalFileSystem,
};
#[cfg(feature = "s3")]
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::location::Location;

/// S3 connection settings that are not secrets (stored in config.yaml or given as flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// One shared multi-thread runtime: `object_store` needs tokio; offsync's threads call into
/// it with `block_on`.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("offsync-io")
            .enable_all()
            .build()
            .expect("the I/O runtime starts")
    })
}

/// Run a future to completion from synchronous code.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// An opened store, scoped to the mirror's prefix.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Where objects go: locally without a per-file fsync (one `syncfs` in [`Store::flush`]
    /// before a snapshot is written covers them all); on S3 the same client as `inner`.
    bulk: Arc<dyn ObjectStore>,
    location: Location,
    /// Description for errors (`s3://b/p at http://127.0.0.1:9000`).
    display: String,
    /// Local filesystem without hard links: create-only writes use `O_EXCL` instead.
    exclusive_fallback: Arc<OnceLock<bool>>,
    /// Reads made through this store (and its clones), for tests that count requests.
    #[cfg(test)]
    pub reads: Arc<Reads>,
}

/// Read requests counted in tests: whole-object reads ([`Store::reader`]) and ranged ones.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Reads {
    pub whole: std::sync::atomic::AtomicUsize,
    pub ranged: std::sync::atomic::AtomicUsize,
}

/// Object metadata from a listing.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Path relative to the mirror root (`objects/ab/abcd…`).
    pub path: String,
    pub size: u64,
    pub age: Duration,
}

impl Store {
    /// Open the store at `location`; `create` makes a missing local directory (0700).
    pub fn open(location: &Location, s3: &S3Settings, create: bool) -> Result<Store> {
        let (inner, bulk, display): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, String) =
            match location {
                Location::Local(dir) => {
                    if create && !dir.exists() {
                        fs_err::create_dir_all(dir)?;
                        crate::fsutil::ensure_private_dir(dir)?;
                    }
                    if !dir.is_dir() {
                        return Err(crate::input_err!(
                            "mirror directory {} does not exist; create it (or mount the disk) and try again",
                            dir.display()
                        ));
                    }
                    let open = |fsync: bool| -> Result<Arc<dyn ObjectStore>> {
                        Ok(Arc::new(
                            LocalFileSystem::new_with_prefix(dir)
                                .with_context(|| format!("cannot open {}", dir.display()))?
                                .with_fsync(fsync)
                                .with_automatic_cleanup(true),
                        ))
                    };
                    // Without syncfs (non-Linux), every object is fsynced on its own.
                    let bulk_fsync = !cfg!(target_os = "linux");
                    (open(true)?, open(bulk_fsync)?, location.url())
                }
                #[cfg(not(feature = "s3"))]
                Location::S3 { .. } => {
                    let _ = s3;
                    return Err(crate::input_err!(
                        "mirror {}: this offsync was built without S3 support; rebuild it with `cargo build --release --features s3` (on by default) or use a directory mirror",
                        location.url()
                    ));
                }
                #[cfg(feature = "s3")]
                Location::S3 { bucket, prefix } => {
                    let (store, endpoint) = s3_store(bucket, s3)?;
                    let display = match &endpoint {
                        Some(e) => format!("{} at {e}", location.url()),
                        None => location.url(),
                    };
                    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                        Arc::new(store)
                    } else {
                        Arc::new(object_store::prefix::PrefixStore::new(
                            store,
                            prefix.as_str(),
                        ))
                    };
                    (store.clone(), store, display)
                }
            };
        Ok(Store {
            inner,
            bulk,
            location: location.clone(),
            display,
            exclusive_fallback: Arc::new(OnceLock::new()),
            #[cfg(test)]
            reads: Default::default(),
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn explain(&self, e: object_store::Error, what: &str) -> anyhow::Error {
        explain(e, &self.display, &self.location, what)
    }

    /// Read a whole object; `Ok(None)` when it does not exist.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let p = ObjPath::from(path);
        let r = block_on(async {
            let r = self.inner.get(&p).await?;
            r.bytes().await
        });
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.explain(e, &format!("cannot read {path}"))),
        }
    }

    /// Read bytes `range` of an object (one ranged GET); `Ok(None)` when it does not exist.
    /// Fewer bytes than asked come back only when the object is shorter.
    pub fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Option<Vec<u8>>> {
        let p = ObjPath::from(path);
        #[cfg(test)]
        self.reads
            .ranged
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match block_on(self.inner.get_range(&p, range)) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.explain(e, &format!("cannot read {path}"))),
        }
    }

    /// Stream an object into `sink`, chunk by chunk (constant memory).
    pub fn get_into(&self, path: &str, sink: &mut dyn std::io::Write) -> Result<u64> {
        let p = ObjPath::from(path);
        block_on(async {
            let r = self
                .inner
                .get(&p)
                .await
                .map_err(|e| self.explain(e, &format!("cannot read {path}")))?;
            let mut stream = r.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.explain(e, &format!("cannot read {path}")))?;
                n += chunk.len() as u64;
                sink.write_all(&chunk)?;
            }
            Ok(n)
        })
    }

    /// Stream an object through a bounded channel: constant memory, readable with `Read`.
    pub fn reader(&self, path: &str) -> Result<ObjectReader> {
        self.reader_opt(path)?
            .with_context(|| format!("cannot read {path} in {}: it does not exist", self.display))
    }

    /// [`Store::reader`], `Ok(None)` when the object does not exist.
    pub fn reader_opt(&self, path: &str) -> Result<Option<ObjectReader>> {
        let p = ObjPath::from(path);
        #[cfg(test)]
        self.reads
            .whole
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = match block_on(self.inner.get(&p)) {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.explain(e, &format!("cannot read {path}"))),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let store = self.clone();
        let name = path.to_string();
        runtime().spawn(async move {
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| store.explain(e, &format!("cannot read {name}")));
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Some(ObjectReader {
            rx,
            current: bytes::Bytes::new(),
        }))
    }

    /// Write an object, replacing any previous one (atomic).
    pub fn put(&self, path: &str, data: Vec<u8>) -> Result<()> {
        let p = ObjPath::from(path);
        block_on(self.inner.put(&p, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.explain(e, &format!("cannot write {path}")))
    }

    /// Write a content object (atomic; durable after [`Store::flush`]).
    pub fn put_object(&self, path: &str, data: Vec<u8>) -> Result<()> {
        let p = ObjPath::from(path);
        block_on(self.bulk.put(&p, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.explain(e, &format!("cannot write {path}")))
    }

    /// Make every object written so far durable before something that references them is
    /// written: one `syncfs` for a local mirror (10,000 per-file fsyncs cost seconds on a
    /// 10,000-file apply); nothing for S3, whose PUTs are durable when they return.
    pub fn flush(&self) -> Result<()> {
        #[cfg(target_os = "linux")]
        if let Location::Local(root) = &self.location {
            let dir = fs_err::File::open(root)?;
            nix::unistd::syncfs(dir.file())
                .with_context(|| format!("cannot sync the filesystem of {}", root.display()))?;
        }
        Ok(())
    }

    /// Write an object only if none exists there. `Ok(false)` when one already does.
    pub fn put_create(&self, path: &str, data: Vec<u8>) -> Result<bool> {
        if self.exclusive_fallback.get() == Some(&true) {
            return self.put_exclusive(path, &data);
        }
        let p = ObjPath::from(path);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match block_on(
            self.inner
                .put_opts(&p, PutPayload::from(data.clone()), opts),
        ) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) if matches!(self.location, Location::Local(_)) && no_hard_links(&e) => {
                let _ = self.exclusive_fallback.set(true);
                self.put_exclusive(path, &data)
            }
            Err(e) => Err(self.explain(e, &format!("cannot create {path}"))),
        }
    }

    /// The fallback for filesystems without hard links: `O_CREAT|O_EXCL` on the final name,
    /// then fsync of the file and its directory. Not atomic for readers: a crash can leave a
    /// short file, which age's authentication rejects when it is read.
    pub fn put_exclusive(&self, path: &str, data: &[u8]) -> Result<bool> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Location::Local(root) = &self.location else {
            anyhow::bail!("exclusive create is only for local mirrors");
        };
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            crate::fsutil::create_dir_all_mode(parent, crate::fsutil::DIR_MODE)?;
        }
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::fsutil::FILE_MODE)
            .open(&full)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", full.display())),
        };
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", full.display()))?;
        if let Some(parent) = full.parent() {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(true)
    }

    /// Start a multipart upload (for large objects, written part by part).
    pub fn upload(&self, path: &str) -> Result<Upload> {
        let p = ObjPath::from(path);
        let inner = block_on(self.bulk.put_multipart(&p))
            .map_err(|e| self.explain(e, &format!("cannot start uploading {path}")))?;
        Ok(Upload {
            inner,
            path: path.to_string(),
            store: self.clone(),
        })
    }

    /// Every object under `prefix` (`objects`, `snapshots`), sorted by path.
    pub fn list(&self, prefix: &str) -> Result<Vec<Meta>> {
        let p = ObjPath::from(prefix);
        let now = chrono::Utc::now();
        let metas: Vec<object_store::Result<object_store::ObjectMeta>> =
            block_on(self.inner.list(Some(&p)).collect());
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let m = m.map_err(|e| self.explain(e, &format!("cannot list {prefix}/")))?;
            let path = m.location.to_string();
            // Staging files of an interrupted local upload are not objects.
            if path.contains('#') {
                continue;
            }
            out.push(Meta {
                path,
                size: m.size,
                age: (now - m.last_modified).to_std().unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Delete objects (missing ones are fine).
    pub fn delete(&self, paths: &[String]) -> Result<()> {
        for chunk in paths.chunks(1000) {
            let locations: Vec<object_store::Result<ObjPath>> = chunk
                .iter()
                .map(|p| Ok(ObjPath::from(p.as_str())))
                .collect();
            let results: Vec<object_store::Result<ObjPath>> = block_on(
                self.inner
                    .delete_stream(futures::stream::iter(locations).boxed())
                    .collect(),
            );
            for r in results {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.explain(e, "cannot delete")),
                }
            }
        }
        Ok(())
    }
}

/// A streaming object download (see [`Store::reader`]).
pub struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(format!("{e:#}"))),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A multipart upload in progress; parts are sent one at a time so memory stays bounded.
pub struct Upload {
    inner: Box<dyn object_store::MultipartUpload>,
    path: String,
    store: Store,
}

impl Upload {
    pub fn put_part(&mut self, data: Vec<u8>) -> Result<()> {
        let fut = self.inner.put_part(PutPayload::from(data));
        block_on(fut).map_err(|e| {
            self.store
                .explain(e, &format!("cannot upload {}", self.path))
        })
    }
    pub fn complete(mut self) -> Result<()> {
        block_on(self.inner.complete()).map(|_| ()).map_err(|e| {
            self.store
                .explain(e, &format!("cannot finish {}", self.path))
        })
    }
    pub fn abort(mut self) {
        let _ = block_on(self.inner.abort());
    }
}

fn no_hard_links(e: &object_store::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK)
            );
        }
        src = s.source();
    }
    false
}

/// Turn an `object_store` error into one line that names the mirror and the fix.
fn explain(
    e: object_store::Error,
    display: &str,
    location: &Location,
    what: &str,
) -> anyhow::Error {
    let full = format!("{e}");
    let mut chain = full.clone();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    let bucket = match location {
        Location::S3 { bucket, .. } => bucket.as_str(),
        Location::Local(_) => "",
    };
    let msg = if chain.contains("NoSuchBucket") {
        format!(
            "bucket {bucket:?} does not exist at {display}; create it or fix the mirror URL/--endpoint"
        )
    } else if chain.contains("InvalidAccessKeyId")
        || chain.contains("SignatureDoesNotMatch")
        || chain.contains("AccessDenied")
        || chain.contains("403 Forbidden")
    {
        format!(
            "{display} refused the request ({what}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE and the bucket policy"
        )
    } else if chain.contains("error sending request")
        || chain.contains("Connection refused")
        || chain.contains("dns error")
        || chain.contains("timed out")
    {
        format!(
            "cannot reach {display} ({what}); check the endpoint (--endpoint or AWS_ENDPOINT_URL) and the network"
        )
    } else {
        let first = chain.lines().next().unwrap_or("").to_string();
        format!("{display}: {what}: {}", truncate(&first, 400))
    };
    anyhow::anyhow!(crate::sanitize::for_terminal(&msg))
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(feature = "s3")]
/// Credentials from the environment or `~/.aws/credentials`; never from argv or config.
#[derive(Debug, Default)]
struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

#[cfg(feature = "s3")]
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(feature = "s3")]
/// Minimal INI reader for the AWS shared files: `[section]` and `key = value` lines.
fn ini_section(text: &str, section: &str) -> Option<std::collections::HashMap<String, String>> {
    let mut current: Option<String> = None;
    let mut out = std::collections::HashMap::new();
    let mut found = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            found |= current.as_deref() == Some(section);
            continue;
        }
        if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
        {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    found.then_some(out)
}

#[cfg(feature = "s3")]
fn aws_file(var: &str, default: &str) -> Option<String> {
    let path = env(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws").join(default)))?;
    std::fs::read_to_string(path).ok()
}

#[cfg(feature = "s3")]
fn credentials() -> Option<Credentials> {
    if let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some(Credentials {
            key_id,
            secret,
            token: env("AWS_SESSION_TOKEN"),
        });
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let text = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?;
    let s = ini_section(&text, &profile)?;
    Some(Credentials {
        key_id: s.get("aws_access_key_id")?.clone(),
        secret: s.get("aws_secret_access_key")?.clone(),
        token: s.get("aws_session_token").cloned(),
    })
}

#[cfg(feature = "s3")]
/// A value from `~/.aws/config` for the active profile.
fn profile_config(key: &str) -> Option<String> {
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let text = aws_file("AWS_CONFIG_FILE", "config")?;
    let section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&text, &section)?.get(key).cloned()
}

#[cfg(feature = "s3")]
/// Build the S3 client: path-style requests (works with MinIO, Garage, moto), bounded
/// retries, explicit credentials.
fn s3_store(
    bucket: &str,
    s3: &S3Settings,
) -> Result<(object_store::aws::AmazonS3, Option<String>)> {
    let endpoint = s3
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| profile_config("endpoint_url"));
    let region = s3
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile_config("region"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        })
        .with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(300)),
        );
    if let Some(e) = &endpoint {
        b = b
            .with_endpoint(e)
            .with_allow_http(e.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    match credentials() {
        Some(c) => {
            b = b
                .with_access_key_id(c.key_id)
                .with_secret_access_key(c.secret);
            if let Some(t) = c.token {
                b = b.with_token(t);
            }
        }
        None if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some() =>
        {
            // Let object_store pick up web-identity or container credentials itself.
            for (k, v) in std::env::vars() {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
        }
        None => {
            return Err(crate::input_err!(
                "no S3 credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or AWS_PROFILE with ~/.aws/credentials"
            ));
        }
    }
    let store = b
        .build()
        .map_err(|e| crate::input_err!("S3 settings for s3://{bucket}: {e}"))?;
    Ok((store, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Location::parse("s3://b-1/a/b/").unwrap(),
            Location::S3 {
                bucket: "b-1".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("file:///mnt/usb").unwrap(),
            Location::Local("/mnt/usb".into())
        );
        assert_eq!(Location::parse("/x").unwrap().url(), "file:///x");
        for bad in [
            "s3://",
            "s3://Bad_Bucket/x",
            "gs://x",
            "relative/dir",
            "s3://b/../x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    /// Run by `cargo test --lib --no-default-features mirror::store`.
    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_is_bad_input_naming_the_url_and_the_fix() {
        let loc = Location::parse("s3://b/p").unwrap();
        let Err(err) = Store::open(&loc, &S3Settings::default(), false) else {
            panic!("opened an S3 store without the s3 feature");
        };
        let msg = format!("{err:#}");
        assert!(
            err.downcast_ref::<crate::error::InputError>().is_some(),
            "{msg}"
        );
        assert!(
            msg.contains("s3://b/p") && msg.contains("--features s3"),
            "{msg}"
        );
    }

    #[cfg(feature = "s3")]
    #[test]
    fn ini() {
        let t = "[default]\naws_access_key_id = A\n# c\n[profile x]\nregion=eu\n";
        assert_eq!(ini_section(t, "default").unwrap()["aws_access_key_id"], "A");
        assert_eq!(ini_section(t, "profile x").unwrap()["region"], "eu");
        assert!(ini_section(t, "nope").is_none());
    }

    #[test]
    fn missing_hard_links_are_recognised_through_the_error_chain() {
        let wrap = |errno| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(errno)),
        };
        assert!(no_hard_links(&wrap(libc::EPERM)), "vfat/exfat answer EPERM");
        assert!(no_hard_links(&wrap(libc::EOPNOTSUPP)));
        assert!(
            !no_hard_links(&wrap(libc::ENOSPC)),
            "a full disk is a real error"
        );
        assert!(!no_hard_links(&wrap(libc::EACCES)));
    }

    #[test]
    fn local_create_only_and_fallback() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            &Location::Local(d.path().into()),
            &S3Settings::default(),
            false,
        )
        .unwrap();
        assert!(s.put_create("snapshots/1", b"one".to_vec()).unwrap());
        assert!(!s.put_create("snapshots/1", b"two".to_vec()).unwrap());
        assert_eq!(s.get("snapshots/1").unwrap().unwrap(), b"one");
        // The FAT fallback keeps the same create-only contract.
        assert!(s.put_exclusive("snapshots/2", b"x").unwrap());
        assert!(!s.put_exclusive("snapshots/2", b"y").unwrap());
        assert_eq!(s.get("snapshots/2").unwrap().unwrap(), b"x");
        assert_eq!(
            s.list("snapshots")
                .unwrap()
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>(),
            ["snapshots/1", "snapshots/2"]
        );
        s.delete(&["snapshots/1".into(), "snapshots/none".into()])
            .unwrap();
        assert!(s.get("snapshots/1").unwrap().is_none());
    }
}
