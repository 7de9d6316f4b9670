//! One helper thread for work beside the calling thread (the validator hashes a large
//! extension cluster while the helper runs the rules after the checksum).
//!
//! The helper is started on first use and kept. Only one caller at a time may have it: callers
//! working side by side would otherwise queue for the one helper while their own threads wait,
//! so a caller that finds it busy does its work alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The name of the helper thread.
pub(crate) const THREAD_NAME: &str = "parallels-image-validate";

/// Runs `side` on the helper while `here` runs on the calling thread, and returns both
/// results; or `None`, having run neither, when the machine has one CPU, the system will not
/// start a thread, or another caller has the helper.
pub(crate) fn beside<A, B: Send>(here: impl FnOnce() -> A, side: impl FnOnce() -> B + Send) -> Option<(A, B)> {
    let pool = pool()?;
    let _claim = Claim::take()?;
    let mut done = None;
    let mut mine = None;
    pool.in_place_scope(|s| {
        s.spawn(|_| done = Some(side()));
        mine = Some(here());
    });
    // The scope waits for its job, so both are set.
    Some((mine?, done?))
}

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(|_| THREAD_NAME.into())
                    .build()
                    .ok()
            })
            .flatten()
    })
    .as_ref()
}

/// The helper, claimed by one caller until dropped.
struct Claim;

static BUSY: AtomicBool = AtomicBool::new(false);

impl Claim {
    /// `None` when another caller has the helper.
    fn take() -> Option<Claim> {
        BUSY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}
