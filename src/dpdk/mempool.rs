use std::ffi::CString;
use std::ptr::NonNull;

use super::{DpdkError, Mbuf};

/// Bytes in front of each packet's data, room for encapsulation headers
/// (`RTE_PKTMBUF_HEADROOM`).
pub const MBUF_HEADROOM: usize = dpdk_sys::RTE_PKTMBUF_HEADROOM as usize;
/// Bytes a frame has beyond its MTU: the Ethernet header, two VLAN tags and a frame check
/// sequence the PMD may leave in place.
pub const FRAME_OVERHEAD: usize = 14 + 2 * 4 + 4;
/// The smallest data area a pool gets: DPDK's default (`RTE_MBUF_DEFAULT_DATAROOM` plus its
/// headroom), which every PMD accepts.
const MIN_FRAME_ROOM: usize = 2176;

/// The data room (headroom included) for ports of at most `mtu` bytes: one segment holds a
/// whole frame, so no PMD needs to chain a received frame and the pipeline sees it whole.
/// Rounded up to a cache line.
pub fn data_room_for_mtu(mtu: u16) -> u16 {
    let frame = (usize::from(mtu) + FRAME_OVERHEAD).max(MIN_FRAME_ROOM);
    let room = frame.div_ceil(64) * 64 + MBUF_HEADROOM;
    // mtu <= 65535 gives at most 65728; saturate rather than wrap for the last few MTUs.
    u16::try_from(room).unwrap_or(u16::MAX)
}

/// A pool of packet buffers (`rte_pktmbuf_pool_create`). Thread-safe: DPDK's mempool ring
/// with per-lcore caches.
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    size: u32,
    data_room: u16,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many lcores and threads
// (lock-free ring plus per-lcore caches); the handle is only a pointer to it.
unsafe impl Send for Mempool {}
// SAFETY: as above; every operation on a mempool is thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with `data_room` bytes each (headroom included) on the
    /// caller's NUMA socket. `cache` is the per-lcore cache size (0 disables it).
    pub fn new(name: &str, size: u32, cache: u32, data_room: u16) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("mempool name {name:?} contains NUL")))?;
        // SAFETY: the EAL must be initialised (callers hold an `Eal`); cname is a valid C string
        // that outlives the call (DPDK copies the name).
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                size,
                cache,
                0,
                data_room,
                dpdk_sys::rte_socket_id() as i32,
            )
        };
        NonNull::new(raw)
            .map(|raw| Mempool {
                raw,
                size,
                data_room,
            })
            .ok_or_else(|| DpdkError::from_errno("rte_pktmbuf_pool_create"))
    }

    /// The number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes of buffer each mbuf has, headroom included.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// Mbufs currently free in the pool (including the per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently taken out of the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Takes one mbuf, reset and empty; `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pktmbuf pool; the returned mbuf (if any) is ours alone.
        let m = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(|m| {
            // SAFETY: a freshly allocated mbuf is exclusively owned by the caller.
            unsafe { Mbuf::from_raw(m) }
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours; ports that referenced it are stopped by then (Port holds no
        // reference to the pool after stop) and every `Mbuf` borrowed from it has been freed,
        // since an mbuf cannot outlive the code that owns the pool in fulcrum's structure.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
