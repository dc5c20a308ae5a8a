use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::{addr_of_mut, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use super::Mempool;
use crate::packet::PacketBuf;

/// One packet buffer, owned. Freed back to its pool on drop.
///
/// `'pool` is a borrow of the [`Mempool`] the mbuf belongs to (or of the port whose RX queue
/// delivered it, which borrows that pool): an mbuf cannot outlive its pool.
///
/// `Send` (ownership can move to another thread, e.g. through a ring) but not `Sync`: one
/// owner touches it at a time. Data access covers the first segment; fulcrum's pools use
/// single-segment buffers large enough for the MTU, and multi-segment packets are dropped by
/// the worker (see [`Mbuf::is_contiguous`]).
///
/// An mbuf can be *shared* ([`Mbuf::share`], or a PMD that hands out indirect or external
/// buffers): its bytes are then seen by other holders too. A shared mbuf is read-only: every
/// method that would change it refuses (see [`Mbuf::is_exclusive`]).
#[repr(transparent)]
pub struct Mbuf<'pool> {
    raw: NonNull<dpdk_sys::rte_mbuf>,
    _pool: PhantomData<(&'pool (), Cell<()>)>,
}

// SAFETY: an mbuf has one owner of this reference; moving ownership between threads is how
// DPDK passes packets between lcores, and its pool is thread-safe. Not Sync: shared
// references across threads would allow concurrent mutation through the raw pointer.
unsafe impl Send for Mbuf<'_> {}

/// Reads field `$f` of the mbuf at `$p` (a `NonNull<rte_mbuf>`) through the raw pointer,
/// without making a reference to the whole struct (whose refcnt other holders may change).
macro_rules! field {
    ($p:expr, $f:ident) => {
        // SAFETY: the pointer is a live mbuf (an Mbuf holds one reference to it); only its
        // holder changes this field, and the holder of a shared mbuf changes nothing but
        // refcnt (atomically): a plain read of another field races with no write.
        unsafe { (*$p.as_ptr()).$f }
    };
}

/// The reference count of `m`, read atomically: other holders change it atomically.
///
/// # Safety
/// `m` must point to a live mbuf.
#[inline]
unsafe fn refcnt(m: *mut dpdk_sys::rte_mbuf) -> u16 {
    // SAFETY: caller contract: m is live; refcnt is a naturally aligned u16 that DPDK only
    // changes with atomic operations once it can be shared (refcnt > 1).
    unsafe { AtomicU16::from_ptr(addr_of_mut!((*m).refcnt)) }.load(Ordering::Relaxed)
}

/// Whether `m`'s metadata and bytes are ours alone: one reference, a direct buffer (not
/// attached to another mbuf's data) or an external buffer nobody else references.
///
/// # Safety
/// `m` must point to a live mbuf.
#[inline]
unsafe fn segment_is_exclusive(m: *mut dpdk_sys::rte_mbuf) -> bool {
    // SAFETY: caller contract; ol_flags and shinfo are changed only by the mbuf's holder.
    let (flags, shinfo) = unsafe { ((*m).ol_flags, (*m).shinfo) };
    // SAFETY: as above.
    if unsafe { refcnt(m) } != 1 || flags & dpdk_sys::RTE_MBUF_F_INDIRECT != 0 {
        return false;
    }
    if flags & dpdk_sys::RTE_MBUF_F_EXTERNAL == 0 {
        return true;
    }
    // SAFETY: an external-buffer mbuf's shinfo points to the buffer's live shared info,
    // whose refcnt DPDK changes atomically.
    !shinfo.is_null()
        && unsafe { AtomicU16::from_ptr(addr_of_mut!((*shinfo).refcnt)) }.load(Ordering::Relaxed)
            == 1
}

impl<'pool> Mbuf<'pool> {
    /// Wraps a raw mbuf.
    ///
    /// # Safety
    /// The caller hands over one reference to `raw`: a valid mbuf whose segments belong to
    /// pools that live for at least `'pool`, freed by nobody else on this reference's
    /// behalf. Other holders of the same mbuf (a refcnt above 1) or of its data (indirect or
    /// external buffers) only read it and change reference counts atomically.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf<'pool> {
        Mbuf {
            raw,
            _pool: PhantomData,
        }
    }

    /// Gives up ownership; the caller must free or hand over the returned pointer.
    #[inline]
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    /// The mbuf's fields, mutable. Only for an exclusive mbuf.
    ///
    /// # Safety
    /// The mbuf must be exclusive ([`Mbuf::is_exclusive`]).
    #[inline]
    unsafe fn m_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: caller contract: refcnt 1, so nobody else holds the struct; &mut self
        // makes this the only reference to it.
        unsafe { self.raw.as_mut() }
    }

    /// The port the packet arrived on.
    #[inline]
    pub fn port(&self) -> u16 {
        field!(self.raw, port)
    }

    /// The RSS hash the NIC computed (0 when the PMD gives none).
    #[inline]
    pub fn rss_hash(&self) -> u32 {
        let hash = field!(self.raw, __bindgen_anon_2);
        // SAFETY: reading a u32 out of a union of plain integers is always defined.
        unsafe { hash.hash.rss }
    }

    /// Whether the whole packet lies in this one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        field!(self.raw, nb_segs) == 1
    }

    /// The number of segments (1 unless chained).
    #[inline]
    pub fn segments(&self) -> u16 {
        field!(self.raw, nb_segs)
    }

    /// Whether this mbuf and its bytes are ours alone, in every segment: a reference count
    /// of 1 and no data shared with another mbuf (indirect) or another holder (external).
    /// Only an exclusive mbuf can be changed; a shared one is read-only.
    #[inline]
    pub fn is_exclusive(&self) -> bool {
        let mut seg = self.raw.as_ptr();
        loop {
            // SAFETY: seg is this mbuf or one of its segments, all live while we hold it.
            if !unsafe { segment_is_exclusive(seg) } {
                return false;
            }
            // SAFETY: as above; `next` is changed only by the chain's holder.
            seg = unsafe { (*seg).next };
            if seg.is_null() {
                return true;
            }
        }
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        field!(self.raw, data_off) as usize
    }

    /// Bytes free behind the data in the first segment.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let (buf_len, off, len) = (
            field!(self.raw, buf_len),
            field!(self.raw, data_off),
            field!(self.raw, data_len),
        );
        (buf_len as usize).saturating_sub(off as usize + len as usize)
    }

    /// Prefetches the first cache line of the packet data. In Rust rather than through
    /// `rte_prefetch0`, whose C wrapper is a call per packet.
    #[inline]
    pub fn prefetch_data(&self) {
        let (addr, off) = (field!(self.raw, buf_addr), field!(self.raw, data_off));
        crate::mem::prefetch::prefetch_line((addr as *const u8).wrapping_add(off as usize));
    }

    /// The packet's first-segment bytes, mutable; `None` when the mbuf is shared (another
    /// holder sees the same bytes).
    #[inline]
    pub fn try_data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: checked exclusive just above.
        let m = unsafe { self.m_mut() };
        // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's buffer (an mbuf
        // invariant DPDK maintains); the mbuf is exclusive (nobody else sees these bytes) and
        // &mut self makes the slice the only reference to them while it lives.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        })
    }

    /// Sets the packet to `bytes` (replacing any data). `false`, and the mbuf unchanged, if it
    /// is chained or shared or `bytes` does not fit behind the headroom.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        if !self.is_contiguous() || !self.is_exclusive() {
            return false;
        }
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        // SAFETY: checked exclusive above.
        let m = unsafe { self.m_mut() };
        if usize::from(len) > (m.buf_len as usize).saturating_sub(m.data_off as usize) {
            return false;
        }
        m.data_len = len;
        m.pkt_len = u32::from(len);
        match self.try_data_mut() {
            Some(d) => {
                d.copy_from_slice(bytes);
                true
            }
            // Unreachable: checked exclusive above.
            None => false,
        }
    }

    /// A second mbuf, from `pool`, that shares this one's bytes (`rte_pktmbuf_clone`): both
    /// are read-only while the other lives. `None` when `pool` is empty.
    pub fn share<'q>(&self, pool: &'q Mempool<'_>) -> Option<Mbuf<'q>>
    where
        'pool: 'q,
    {
        // SAFETY: self.raw is a live mbuf and pool a live pktmbuf pool. The clone attaches to
        // our segments' data and raises their reference counts atomically, which holders of
        // a shared mbuf expect. The data's pools live for 'pool, which outlives 'q.
        let c = unsafe { dpdk_sys::rte_pktmbuf_clone(self.raw.as_ptr(), pool.as_ptr()) };
        // SAFETY: a fresh clone is one reference we own; its own structs come from `pool`
        // ('q) and the data it shares from pools that live for 'pool: 'q. We and it only read
        // shared data (both are now non-exclusive).
        NonNull::new(c).map(|c| unsafe { Mbuf::from_raw(c) })
    }

    /// Appends `tail`'s segments to this mbuf (`rte_pktmbuf_chain`). Gives `tail` back, and
    /// changes nothing, when either is shared or the chain would be too long.
    pub fn chain(&mut self, tail: Mbuf<'pool>) -> Result<(), Mbuf<'pool>> {
        if !self.is_exclusive() || !tail.is_exclusive() {
            return Err(tail);
        }
        // SAFETY: both mbufs are live and exclusive; rte_pktmbuf_chain checks the segment
        // count first and returns an error (changing nothing) when it would overflow.
        let ret = unsafe { dpdk_sys::rte_pktmbuf_chain(self.raw.as_ptr(), tail.raw.as_ptr()) };
        if ret != 0 {
            return Err(tail);
        }
        // The chain owns tail's segments now: freeing self frees them.
        let _ = tail.into_raw();
        Ok(())
    }
}

impl PacketBuf for Mbuf<'_> {
    #[inline]
    fn prefetch(&self) {
        self.prefetch_data();
    }

    #[inline]
    fn is_contiguous(&self) -> bool {
        Mbuf::is_contiguous(self)
    }

    #[inline]
    fn data(&self) -> &[u8] {
        let (addr, off, len) = (
            field!(self.raw, buf_addr),
            field!(self.raw, data_off),
            field!(self.raw, data_len),
        );
        // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's buffer (an mbuf
        // invariant DPDK maintains). &self keeps the mbuf alive, and nobody writes these
        // bytes while the slice lives: &self excludes our own writes, and holders of shared
        // data only read it.
        unsafe { std::slice::from_raw_parts((addr as *const u8).add(off as usize), len as usize) }
    }

    /// The bytes, mutable. A shared mbuf ([`Mbuf::is_exclusive`] false) gives an empty
    /// slice instead of `&mut` to bytes others see; the worker drops shared mbufs before
    /// the pipeline, so it never meets one.
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.try_data_mut().unwrap_or_default()
    }

    /// `rte_pktmbuf_prepend` written out: it is inline in DPDK, and through its C wrapper it
    /// was a call per encapsulated packet.
    #[inline]
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: checked exclusive just above.
        let m = unsafe { self.m_mut() };
        if n16 > m.data_off {
            return None;
        }
        // data_len + n stays within buf_len (a u16): the bytes move inside the buffer.
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        self.try_data_mut()
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        if !self.is_exclusive() {
            return false;
        }
        // SAFETY: the mbuf is live and exclusive; rte_pktmbuf_adj checks the length and
        // returns NULL (changing nothing) when the first segment is shorter than n.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.raw.as_ptr(), n16) }.is_null()
    }

    /// Appends to a one-segment mbuf. A chained mbuf is refused, unchanged: the data of a
    /// chain is not one slice to hand back.
    #[inline]
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        if !self.is_contiguous() || n > self.tailroom() || !self.is_exclusive() {
            return None;
        }
        // SAFETY: checked exclusive just above.
        let m = unsafe { self.m_mut() };
        // n <= tailroom, so data_off + data_len + n <= buf_len: no u16 overflow.
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        self.try_data_mut()
    }

    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        if !self.is_exclusive() {
            return false;
        }
        // One segment, the data path's case (Ethernet padding after encapsulation): what
        // rte_pktmbuf_trim does, inline instead of a call through its C wrapper.
        if self.is_contiguous() {
            // SAFETY: checked exclusive above.
            let m = unsafe { self.m_mut() };
            if n16 > m.data_len {
                return false;
            }
            m.data_len -= n16;
            m.pkt_len -= u32::from(n16);
            return true;
        }
        // SAFETY: the chain is live and exclusive in every segment; rte_pktmbuf_trim checks
        // the last segment's length and returns -1 (changing nothing) when it is shorter
        // than n.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.raw.as_ptr(), n16) == 0 }
    }
}

impl Drop for Mbuf<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we hold one reference (constructor contract) that was not handed over
        // (into_raw forgets self), so it is released exactly once; rte_pktmbuf_free drops
        // the reference counts of shared segments and frees only what reaches zero, into
        // pools that are still alive ('pool).
        unsafe { dpdk_sys::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &field!(self.raw, data_len))
            .field("segments", &field!(self.raw, nb_segs))
            .field("port", &field!(self.raw, port))
            .finish()
    }
}
