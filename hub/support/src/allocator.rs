//! The hub's and the spoke's memory allocator: jemalloc, with background threads that give
//! freed memory back to the operating system.
//!
//! A spoke spends most of its life idle after bursts (a sync of a thousand objects renders,
//! applies and reads back megabytes, then frees them). glibc's malloc keeps what such a burst
//! freed in its per-thread arenas, so an idle spoke stayed at its peak: 35-40 MiB resident in
//! `spoke-bench` with about 3 MiB in use. jemalloc with background purging returns it within
//! seconds (about 25 MiB there; see docs/benchmarks.md).
//!
//! The hub holds hundreds of thousands of small records (Targets, reports, rollout entries)
//! and rewrites many of them on every change: under glibc's malloc, a third of the hub's CPU in
//! a commit to one App at 10,000 clusters × 50 Apps went to malloc's own bookkeeping
//! (`malloc_consolidate`, `unlink_chunk`; docs/benchmarks.md).
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOCATOR: Allocator = Allocator;` and calls
//! [`return_freed_memory`] once at startup.

pub use tikv_jemallocator::Jemalloc as Allocator;

/// Starts jemalloc's background threads, which purge freed pages after its decay time (10 s)
/// even when the process does nothing else. Without them jemalloc purges only on later
/// allocations, which an idle spoke hardly makes.
pub fn return_freed_memory() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "cannot start jemalloc's background purging; freed memory is returned later");
    }
}
