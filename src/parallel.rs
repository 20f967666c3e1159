//! Bounded parallel fan-out over a slice, for targets, uploads and restores.
//!
//! Invariants: at most `workers` items run at once on scoped threads; results come back in
//! input order; a panicking worker's poisoned lock is recovered, never propagated as a second
//! panic. It knows nothing about targets, so the engine, mirrors and restores all use it
//! without depending on each other.

use std::sync::Mutex;

/// Run `f` on every item, at most `workers` at a time; results keep the input order.
pub fn parallel<T: Send, R: Send>(
    items: &mut [T],
    workers: usize,
    f: impl Fn(&mut T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    let queue = Mutex::new(items.iter_mut().enumerate());
    let results: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item ran")
        })
        .collect()
}
