//! The allocator, and giving memory that stream sessions free back to the system.
//!
//! The glibc build keeps glibc's malloc. The static musl build, the one that ships, uses
//! jemalloc: musl's own allocator hands freed memory back to the kernel at once and maps it
//! again under steady load (strace over ~6,100 proxied `/api` requests: 525 `mmap` and 524
//! `munmap`, none with glibc), which made that build 0.79× the glibc one on `/api` and 0.25× on
//! brotli responses (BENCHMARKS.md, issue 15).
//!
//! Either way, RSS must follow what takgate holds, or the stream memory budget does not bound
//! it. glibc keeps freed chunks in its arenas and returns only the top of each (seen: 60 MiB
//! resident with nothing held, 10 MiB after `malloc_trim`), so a task trims it once sessions
//! have given back enough of the budget. jemalloc is told (`MALLOC_CONF` below) to return freed
//! pages at once instead, and to keep a few large blocks per thread for reuse.

use std::sync::Arc;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::time::Duration;

use cot::gateway::MemoryBudget;

#[cfg(target_env = "musl")]
#[global_allocator]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read by jemalloc itself at its first allocation (a `_RJEM_MALLOC_CONF`
/// environment variable overrides them, for experiments):
/// - `dirty_decay_ms:0,muzzy_decay_ms:0`: freed pages go back to the system at once. By
///   default jemalloc keeps them for ten seconds; sessions growing their frame buffers free the
///   smaller ones faster than that, and the overload test's trickling sessions grew its RSS by
///   105 MiB against a 64 MiB budget (68–70 MiB with these settings, 72 allowed).
/// - `tcache_max:1048576,tcache_nslots_large:2`: each thread keeps up to two freed blocks of
///   each size up to 1 MiB and reuses them without the kernel. An on-the-fly brotli encoder
///   allocates about a megabyte and frees it per response; returned at once, those pages fault
///   in again every time (loadtest/bench api-json-br, 3 runs each: 805 responses/s without
///   the cache against 3,059 for the glibc build in the same run; 1.01× the glibc build with
///   it, BENCHMARKS.md).
#[cfg(target_env = "musl")]
#[allow(
    unsafe_code,
    reason = "jemalloc reads its options from this exported symbol; the name is the contract"
)]
#[export_name = "_rjem_malloc_conf"]
// A reference to an array is a thin pointer, as C's `const char *` is.
static MALLOC_CONF: &[u8; 75] =
    b"dirty_decay_ms:0,muzzy_decay_ms:0,tcache_max:1048576,tcache_nslots_large:2\0";

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
    reason = "malloc_trim has no safe wrapper; one of takgate's two audited unsafe items"
)]
fn trim() {
    // SAFETY: malloc_trim takes the allocator's own locks and may be called from any thread at
    // any time; it has no arguments that point anywhere.
    unsafe {
        libc::malloc_trim(0);
    }
}
