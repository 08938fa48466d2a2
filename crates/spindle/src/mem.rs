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
