//! Confirm or revert: a network change that could cut the admin off is put back unless
//! confirmed in time. One change waits at a time; a newer one replaces the older's timer
//! (its revert then goes back to the settings before the newer change, which the caller
//! passes).

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Pending {
    generation: u64,
    deadline: Instant,
}

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn pending() -> std::sync::MutexGuard<'static, Option<Pending>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Arms the timer: unless [`confirm`] is called within `wait`, `revert` runs (on a thread
/// of its own).
pub fn arm(wait: Duration, revert: impl FnOnce() + Send + 'static) {
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let deadline = Instant::now() + wait;
    *pending() = Some(Pending {
        generation,
        deadline,
    });
    std::thread::spawn(move || {
        loop {
            let now = Instant::now();
            {
                let mut p = pending();
                match &*p {
                    Some(x) if x.generation == generation => {
                        if now >= x.deadline {
                            *p = None;
                            break;
                        }
                    }
                    // Confirmed, or replaced by a newer change.
                    _ => return,
                }
            }
            std::thread::sleep(Duration::from_millis(100).min(deadline - now));
        }
        tracing::warn!("network change not confirmed in time: putting the previous settings back");
        revert();
    });
}

/// Confirms the waiting change; false if none waits.
pub fn confirm() -> bool {
    pending().take().is_some()
}

/// Seconds left to confirm the waiting change, if one waits.
pub fn seconds_left() -> Option<u64> {
    pending().as_ref().map(|p| {
        p.deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
    })
}
