use std::mem::MaybeUninit;

use super::Mbuf;
use crate::packet::BURST;

/// A fixed-capacity burst of owned mbufs, kept on the stack: receiving and transmitting a
/// burst allocates nothing. Dropping a batch frees the mbufs still in it. `'pool` is the
/// mbufs' (see [`Mbuf`]).
pub struct Batch<'pool, const N: usize = BURST> {
    slots: [MaybeUninit<Mbuf<'pool>>; N],
    len: usize,
}

impl<const N: usize> Default for Batch<'_, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'pool, const N: usize> Batch<'pool, N> {
    pub const CAPACITY: usize = N;

    /// An empty batch.
    #[inline]
    pub fn new() -> Self {
        Batch {
            slots: [const { MaybeUninit::uninit() }; N],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Free slots left.
    #[inline]
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// Adds an mbuf; gives it back when the batch is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf<'pool>) -> Result<(), Mbuf<'pool>> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf<'pool>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slots[..len] are initialised; slot `len` was initialised and is now outside
        // the live range, so it is read exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// The mbufs in the batch.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf<'pool>] {
        // SAFETY: slots[..len] are initialised, and MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr() as *const Mbuf<'pool>, self.len) }
    }

    /// The mbufs in the batch, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf<'pool>] {
        // SAFETY: as in as_slice; &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(self.slots.as_mut_ptr() as *mut Mbuf<'pool>, self.len)
        }
    }

    /// Frees every mbuf in the batch.
    pub fn clear(&mut self) {
        while let Some(m) = self.pop() {
            drop(m);
        }
    }

    /// Moves every mbuf out, in order, into `f`.
    #[inline]
    pub fn drain_into(&mut self, mut f: impl FnMut(Mbuf<'pool>)) {
        let n = self.len;
        self.len = 0;
        for slot in &mut self.slots[..n] {
            // SAFETY: slots[..n] were initialised; len was set to 0 first, so each is read
            // exactly once even if f panics.
            f(unsafe { slot.assume_init_read() });
        }
    }

    /// Raw pointer to the first free slot, for rx_burst to fill.
    #[inline]
    pub(crate) fn spare_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        // Mbuf is repr(transparent) over NonNull<rte_mbuf>, which has the layout of *mut.
        self.slots[self.len..].as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf
    }

    /// Records that rx_burst initialised `n` more slots.
    ///
    /// # Safety
    /// The `n` slots after the current length must now hold mbuf pointers that satisfy
    /// [`Mbuf::from_raw`]'s contract for `'pool`, and `len + n` must not exceed `N`.
    #[inline]
    pub(crate) unsafe fn assume_filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= N);
        self.len = (self.len + n).min(N);
    }

    /// Raw pointer to the first mbuf, for tx_burst.
    #[inline]
    pub(crate) fn as_raw_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        self.slots.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf
    }

    /// Forgets the first `n` mbufs (now owned by the PMD) and moves the rest to the front.
    ///
    /// # Safety
    /// Ownership of the first `n` mbufs must have passed elsewhere (tx_burst accepted them).
    #[inline]
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        let n = n.min(self.len);
        let rest = self.len - n;
        // SAFETY: slots[n..len] are initialised and both ranges lie inside slots (n <= len
        // <= N); ptr::copy handles the overlap. The first n were handed over (caller
        // contract), so overwriting them leaks nothing, and after the copy slots[..rest] are
        // the live ones, each owned once.
        unsafe { std::ptr::copy(self.slots.as_ptr().add(n), self.slots.as_mut_ptr(), rest) };
        self.len = rest;
    }
}

impl<const N: usize> Drop for Batch<'_, N> {
    fn drop(&mut self) {
        self.clear();
    }
}
