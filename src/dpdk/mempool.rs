use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::{DpdkError, Eal, Mbuf};

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
///
/// It borrows the [`Eal`] it was made in, and every [`Mbuf`] and [`Port`](super::Port)
/// borrows the pool, so the compiler frees them in order: mbufs and ports, then the pool,
/// then the EAL.
///
/// A pool needs a running EAL:
///
/// ```compile_fail,E0061
/// # use fulcrum::dpdk::Mempool;
/// let pool = Mempool::new("p", 1023, 0, 2176); // no &Eal to give
/// ```
///
/// An mbuf cannot outlive its pool (a use after free):
///
/// ```compile_fail,E0505
/// # use fulcrum::dpdk::{Eal, Mempool};
/// # fn f(eal: &Eal) {
/// let pool = Mempool::new(eal, "p", 1023, 0, 2176).unwrap();
/// let m = pool.alloc().unwrap();
/// drop(pool);
/// drop(m);
/// # }
/// ```
///
/// nor can the pool outlive the EAL:
///
/// ```compile_fail,E0505
/// # use fulcrum::dpdk::{Eal, Mempool};
/// # fn f(eal: Eal) {
/// let pool = Mempool::new(&eal, "p", 1023, 0, 2176).unwrap();
/// eal.cleanup();
/// drop(pool);
/// # }
/// ```
///
/// In the right order, the same code compiles:
///
/// ```no_run
/// # use fulcrum::dpdk::{Eal, Mempool};
/// # fn f(eal: Eal) {
/// let pool = Mempool::new(&eal, "p", 1023, 0, 2176).unwrap();
/// let m = pool.alloc().unwrap();
/// drop(m);
/// drop(pool);
/// eal.cleanup();
/// # }
/// ```
pub struct Mempool<'eal> {
    raw: NonNull<dpdk_sys::rte_mempool>,
    size: u32,
    data_room: u16,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many lcores and threads
// (lock-free ring plus per-lcore caches); the handle is only a pointer to it.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above; every operation on a mempool is thread-safe.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// Creates a pool of `size` mbufs with `data_room` bytes each (headroom included) on the
    /// caller's NUMA socket. `cache` is the per-lcore cache size (0 disables it).
    pub fn new(
        _eal: &'eal Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Mempool<'eal>, DpdkError> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("mempool name {name:?} contains NUL")))?;
        // SAFETY: the EAL is initialised and stays so while the pool lives (the `&'eal Eal`);
        // cname is a valid C string that outlives the call (DPDK copies the name).
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
                _eal: PhantomData,
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

    /// Takes one mbuf, reset and empty; `None` when the pool is exhausted. The mbuf borrows
    /// the pool: it cannot outlive it.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: raw is a live pktmbuf pool; the returned mbuf (if any) is ours alone.
        let m = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(|m| {
            // SAFETY: a freshly allocated mbuf is direct, has refcnt 1 and nobody else holds
            // it; it belongs to this pool, which the returned Mbuf<'_> borrows.
            unsafe { Mbuf::from_raw(m) }
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: the pool is ours and freed once. Every `Mbuf` and every `Port` borrows it,
        // so none is alive: the mbufs were freed back into it and the ports that filled their
        // RX rings from it (or held its mbufs in TX rings) were closed. An mbuf leaked with
        // mem::forget is never touched again.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
