//! SIGINT, SIGTERM and SIGHUP: stop deliberately, log, and exit 128 + signal.
//!
//! Children run in their own process groups (see `process`), so a terminal's Ctrl-C reaches
//! offsync alone. Commands that change or inspect targets call [`install`]: from then on the
//! first of these signals records itself, stops every child group (SIGTERM; a second signal
//! sends SIGKILL) and refuses new children; the command notices through [`interrupted`],
//! writes its `interrupted` records and exits with [`exit_code`]. Commands that never call
//! [`install`] keep the default disposition (the signal ends offsync, and the kernel's
//! parent-death signal ends the children).
//!
//! Invariant: an interruption is reported only for work it stopped — a command whose work all
//! completed before the signal arrived says so and exits 0 (see `commands::apply`).

use nix::sys::signal::Signal;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

/// Start catching SIGINT, SIGTERM and SIGHUP (idempotent).
pub fn install() {
    INSTALL.call_once(|| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("offsync-signals".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                else {
                    let _ = tx.send(());
                    return;
                };
                rt.block_on(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let kinds = [
                        (SignalKind::interrupt(), Signal::SIGINT),
                        (SignalKind::terminate(), Signal::SIGTERM),
                        (SignalKind::hangup(), Signal::SIGHUP),
                    ];
                    for (kind, sig) in kinds {
                        if let Ok(mut stream) = signal(kind) {
                            tokio::spawn(async move {
                                while stream.recv().await.is_some() {
                                    received(sig);
                                }
                            });
                        }
                    }
                    // Handlers are in place: the command may go on.
                    let _ = tx.send(());
                    std::future::pending::<()>().await;
                });
            });
        if spawned.is_ok() {
            let _ = rx.recv();
        }
    });
}

fn received(sig: Signal) {
    let first = SIGNAL
        .compare_exchange(0, sig as i32, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first {
        eprintln!(
            "\noffsync: {} received; stopping and logging (again to force)",
            sig.as_str()
        );
        crate::process::children::stop_all(Signal::SIGTERM);
    } else {
        crate::process::children::stop_all(Signal::SIGKILL);
    }
}

/// Whether a signal asked offsync to stop.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal that stopped offsync, if any.
pub fn signal() -> Option<Signal> {
    Signal::try_from(SIGNAL.load(Ordering::SeqCst)).ok()
}

/// 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
pub fn exit_code() -> u8 {
    let n = SIGNAL.load(Ordering::SeqCst);
    if n == 0 { 130 } else { (128 + n) as u8 }
}
