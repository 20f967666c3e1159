//! The controller-side lock: one apply per `$OFFSYNC_HOME` at a time. An OS file lock (released
//! by the kernel when the process dies, so it never goes stale) on `apply.lock`, which also
//! holds the holder's pid for the error message.

use anyhow::{Context as _, Result};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Held while an apply runs; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

pub fn acquire(home: &Path) -> Result<Lock> {
    let path = home.join("apply.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another offsync apply (pid {}) is running with this OFFSYNC_HOME ({}); wait for it to finish",
                holder
                    .trim()
                    .parse::<u32>()
                    .map_or("unknown".to_string(), |p| p.to_string()),
                home.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    let _ = file.sync_all();
    Ok(Lock { _file: file })
}
