//! Giving memory that stream sessions free back to the system.
//!
//! glibc's malloc keeps freed chunks in its arenas and returns only the top of each: after
//! thousands of sessions have come and gone, takgate's RSS would stay where it peaked, not
//! follow what it holds, and the stream memory budget would not bound it (seen: 60 MiB resident
//! with nothing held, 10 MiB after `malloc_trim`). A task calls `malloc_trim` once sessions
//! have given back enough of the budget. musl's allocator gives memory back by itself.

use std::sync::Arc;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::time::Duration;

use cot::gateway::MemoryBudget;

/// How often the budget is looked at, and how much must have been given back for a trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const POLL: Duration = Duration::from_millis(20);
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_AFTER: usize = 1024 * 1024;

/// Trims the allocator whenever sessions have given back enough of the budget (glibc only;
/// elsewhere it returns at once). Runs until the runtime stops.
pub async fn trim_released(budget: Arc<MemoryBudget>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            poll.tick().await;
            if budget.take_released() >= TRIM_AFTER {
                // A walk of the arenas: milliseconds on a large heap, off the workers.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    drop(budget);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "malloc_trim has no safe wrapper; the one unsafe call in takgate"
)]
fn trim() {
    // SAFETY: malloc_trim takes the allocator's own locks and may be called from any thread at
    // any time; it has no arguments that point anywhere.
    unsafe {
        libc::malloc_trim(0);
    }
}
