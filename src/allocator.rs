//! The process allocator: jemalloc instead of glibc malloc.
//!
//! Every delivery allocates buffers just over glibc's 1 KiB per-thread cache (the
//! payload, the signed body, hyper's 8 KiB response read buffer), so under glibc they
//! go through its shared bins, which all threads contend on; jemalloc serves them from
//! thread caches. The trade is less CPU per delivery for a little more idle memory
//! (docs/performance.md has the measurements).
//!
//! Set here, in the library, so the binary, the benchmark's ceilings and receiver, and
//! the tests all run on the same allocator.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One arena: the two worker threads hardly contend behind their thread caches, and
/// each further arena costs idle memory. A background thread returns freed pages to
/// the system on jemalloc's decay schedule: without it pages are returned only while
/// the process allocates, so an idle process kept whatever start-up had freed (with
/// 10,000 endpoints, the parsed config: 60 MiB more idle RSS in some runs and not in
/// others). Freed pages go back after about a second instead of jemalloc's default ten:
/// with 10,000 endpoints, start-up frees ~40 MiB, which the default still held 10 s
/// after start (76 against 61 MiB idle RSS), while delivering reuses freed pages well
/// within a second, so CPU per delivery does not change (19.7–20.5 against 20.2–25.2 µs
/// in the scale bench's S0, within its noise). (`_rjem_` is the crate's symbol prefix;
/// the `_RJEM_MALLOC_CONF` environment variable overrides this at run time.)
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:1,background_thread:true,dirty_decay_ms:1000\0";
