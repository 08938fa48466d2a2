//! Resident memory of this process: the figures reports give, and handing freed heap memory
//! back to the system between pipeline blocks.

/// The peak resident set size (`VmHWM` of `/proc/self/status`) in bytes; `None` where the
/// kernel does not report it (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:")
}

/// The current resident set size (`VmRSS`) in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:")
}

/// The memory the kernel says is available for new allocations without swapping
/// (`MemAvailable` of `/proc/meminfo`), in bytes; `None` where it is not reported.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Returns the heap's free pages to the system. glibc keeps freed memory of medium-sized
/// allocations (most activation tensors) in its arenas, so without this a block-by-block
/// pipeline's resident memory creeps up by the fragments of every block it has seen.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases memory glibc's allocator already holds as free; it
        // touches no live allocation and has no preconditions.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::malloc_trim(0) };
    }
}

/// The largest allocation glibc serves from its heap rather than a fresh `mmap` (its own cap for
/// the dynamic threshold, `DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Keeps freed activation buffers in the heap for reuse instead of handing them back to the
/// kernel after every forward pass. glibc's defaults serve every allocation over its (dynamic)
/// mmap threshold with fresh pages and trim the heap's top whenever more than twice that is
/// free, so a loop of same-sized forward passes faults its buffers in again each time (the
/// measurement is in `docs/results/bench.md`). Memory is still returned
/// where it matters: [`release_free_memory`] trims explicitly between pipeline blocks.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation thresholds; it is called once, at the
        // start of `main`, before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}
