//! Ctrl-C handling. The terminal sends SIGINT to the whole foreground process group, so
//! rsync and ssh children stop on their own; offsync itself must not die mid-way, so that it
//! can log an `interrupted` record and exit 130. [`install`] catches SIGINT on a background
//! thread and sets a flag the engine checks.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Start catching SIGINT (idempotent enough: call once per command that changes targets).
pub fn install() {
    let _ = std::thread::Builder::new()
        .name("offsync-sigint".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                    eprintln!("\noffsync: interrupted; stopping and logging");
                }
            });
        });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
