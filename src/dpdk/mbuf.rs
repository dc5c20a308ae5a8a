use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::packet::PacketBuf;

/// One packet buffer, owned. Freed back to its pool on drop.
///
/// `Send` (ownership can move to another thread, e.g. through a ring) but not `Sync`: one
/// owner touches it at a time. Data access covers the first segment; fulcrum's pools use
/// single-segment buffers large enough for the MTU, and multi-segment packets are dropped by
/// the worker (see [`Mbuf::is_contiguous`]).
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<dpdk_sys::rte_mbuf>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: an mbuf is a plain buffer with a single owner; moving ownership between threads is
// how DPDK passes packets between lcores. Not Sync: shared references across threads would
// allow concurrent mutation through the raw pointer.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Wraps a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that the caller owns exclusively (not referenced elsewhere,
    /// not to be freed by anybody else).
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf {
            raw,
            _not_sync: PhantomData,
        }
    }

    /// Gives up ownership; the caller must free or hand over the returned pointer.
    #[inline]
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    #[inline]
    fn m(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: raw is a valid mbuf we own for as long as self lives.
        unsafe { self.raw.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: raw is a valid mbuf we own exclusively; &mut self guarantees uniqueness.
        unsafe { self.raw.as_mut() }
    }

    /// The port the packet arrived on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// The RSS hash the NIC computed (0 when the PMD gives none).
    #[inline]
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: reading a u32 out of a union of plain integers is always defined.
        unsafe { self.m().__bindgen_anon_2.hash.rss }
    }

    /// Whether the whole packet lies in this one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.m().nb_segs == 1
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.m().data_off as usize
    }

    /// Bytes free behind the data in the (last) segment.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        (m.buf_len as usize).saturating_sub(m.data_off as usize + m.data_len as usize)
    }

    /// Prefetches the first cache line of the packet data. In Rust rather than through
    /// `rte_prefetch0`, whose C wrapper is a call per packet.
    #[inline]
    pub fn prefetch_data(&self) {
        let m = self.m();
        super::prefetch::prefetch_line((m.buf_addr as *const u8).wrapping_add(m.data_off as usize));
    }

    /// Sets the packet to `bytes` (replacing any data). `false` if it does not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        let cur = self.m().data_len as usize;
        if !PacketBuf::trim(self, cur) {
            return false;
        }
        match PacketBuf::append(self, bytes.len()) {
            Some(d) => {
                d.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

impl PacketBuf for Mbuf {
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
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer (an mbuf
        // invariant DPDK maintains), and &self keeps the mbuf alive and unmodified.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(); &mut self makes this the only reference to the bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// `rte_pktmbuf_prepend` written out: it is inline in DPDK, and through its C wrapper it
    /// was a call per encapsulated packet.
    #[inline]
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        let m = self.m_mut();
        if n16 > m.data_off {
            return None;
        }
        // data_len + n stays within buf_len (a u16): the bytes move inside the buffer.
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        Some(self.data_mut())
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: rte_pktmbuf_adj checks the length and returns NULL (changing nothing) when
        // the first segment is shorter than n.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.raw.as_ptr(), n16) }.is_null()
    }

    #[inline]
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: rte_pktmbuf_append checks the tailroom of the last segment and returns NULL
        // (changing nothing) when it is too small.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.raw.as_ptr(), n16) };
        if p.is_null() || !self.is_contiguous() {
            return None;
        }
        Some(self.data_mut())
    }

    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // One segment, the data path's case (Ethernet padding after encapsulation): what
        // rte_pktmbuf_trim does, inline instead of a call through its C wrapper.
        let m = self.m_mut();
        if m.nb_segs == 1 {
            if n16 > m.data_len {
                return false;
            }
            m.data_len -= n16;
            m.pkt_len -= u32::from(n16);
            return true;
        }
        // SAFETY: rte_pktmbuf_trim checks the last segment's length and returns -1 (changing
        // nothing) when it is shorter than n.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.raw.as_ptr(), n16) == 0 }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf exclusively (constructor contract) and it was not handed
        // over (into_raw forgets self), so it is freed exactly once.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.m().data_len)
            .field("port", &self.m().port)
            .finish()
    }
}
