//! glibc's allocator, told to keep the memory it is given back.
//!
//! Nodes and mounts move data in buffers of up to a chunk (1 MiB by
//! default): a frame read off the network, a reply being built. By default
//! glibc hands such a block back to the kernel when it is freed (an mmap of
//! its own, or a trim of the arena's top), and the next one is faulted in
//! again a page at a time, each page zeroed by the kernel: a profile of a
//! node taking 1 MiB writes showed page faults and page clearing at about
//! a sixth of its CPU. With these settings blocks below 32 MiB come from
//! the arenas, and an arena keeps up to 64 MiB free at its top, so a
//! steady stream of buffers reuses the same pages. The price: memory a
//! process used at its busiest stays with it, up to that much per arena.

/// Blocks of at least this many bytes get an mmap of their own (glibc's
/// largest allowed threshold on 64-bit; its default is 128 KiB, raised
/// dynamically as large blocks are freed).
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the top of an arena beyond this is given back (glibc's
/// default is 128 KiB, also raised dynamically).
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Sets the allocator's thresholds; call first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets the allocator's parameters; a value it
    // does not accept is refused with 0 and changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
