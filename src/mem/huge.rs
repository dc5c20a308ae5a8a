//! Big per-worker tables in transparent huge pages.
//!
//! A worker's connection table is tens of MiB that every packet touches at a random place.
//! On 4 KiB pages nearly every such access also misses the TLB, and in a virtual machine a
//! TLB miss walks two sets of page tables. [`HugeSlice`] maps the memory 2 MiB-aligned and
//! asks the kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`, honoured when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or `always`), so a 56 MiB
//! table needs 28 TLB entries instead of 14336.
//!
//! This needs no EAL and does not use DPDK's hugepage pool: it is ordinary anonymous
//! memory, and when the kernel has no huge page to give it quietly uses small pages (the
//! table works the same, only slower).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size the mapping is aligned to (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length slice in its own anonymous mapping, advised to use huge pages. Every
/// element is written at construction, so no page fault is left for the hot path.
pub struct HugeSlice<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped at `ptr` (0 when nothing is mapped: zero-sized contents).
    mapped: usize,
    _owns: PhantomData<T>,
}

// SAFETY: a HugeSlice owns its elements exclusively (like a Box<[T]>); sending it sends them.
unsafe impl<T: Copy + Send> Send for HugeSlice<T> {}
// SAFETY: shared access only hands out &[T], which is Sync when T is.
unsafe impl<T: Copy + Sync> Sync for HugeSlice<T> {}

impl<T: Copy> HugeSlice<T> {
    /// `len` copies of `value`, or `None` when the memory cannot be mapped.
    pub fn filled(len: usize, value: T) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>())?;
        if bytes == 0 {
            return Some(HugeSlice {
                ptr: NonNull::dangling(),
                len,
                mapped: 0,
                _owns: PhantomData,
            });
        }
        if align_of::<T>() > HUGE_PAGE {
            return None;
        }
        let mapped = bytes.checked_next_multiple_of(HUGE_PAGE)?;
        // Over-map by one huge page so a 2 MiB-aligned start exists inside the mapping.
        let reserve = mapped.checked_add(HUGE_PAGE)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory; the result is checked for MAP_FAILED below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        let head = aligned - start;
        let tail = reserve - head - mapped;
        // SAFETY: [start, aligned) and [aligned + mapped, start + reserve) lie inside the
        // mapping just made and nothing refers to them; both lengths are page multiples
        // (start is page-aligned, reserve and mapped are huge-page multiples).
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + mapped) as *mut libc::c_void, tail);
            }
        }
        let base = aligned as *mut libc::c_void;
        // SAFETY: [base, base + mapped) is our mapping. The advice only changes how the
        // kernel backs it; failing (no THP in this kernel) leaves small pages, which is fine.
        unsafe {
            libc::madvise(base, mapped, libc::MADV_HUGEPAGE);
        }
        let ptr = NonNull::new(base.cast::<T>())?;
        for i in 0..len {
            // SAFETY: i < len, and len elements fit in the mapping (bytes <= mapped); the
            // start is 2 MiB-aligned, hence aligned for T, and size_of::<T>() keeps every
            // element aligned. Writing (not assigning) never reads the old bytes.
            unsafe { ptr.as_ptr().add(i).write(value) };
        }
        Some(HugeSlice {
            ptr,
            len,
            mapped,
            _owns: PhantomData,
        })
    }
}

impl<T: Copy> Deref for HugeSlice<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: ptr points to len initialised, aligned elements that live as long as self
        // (or is dangling with a zero-byte length, which from_raw_parts allows).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeSlice<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        if self.mapped > 0 {
            // SAFETY: [ptr, ptr + mapped) is the mapping made in `filled`, unmapped once;
            // T: Copy has no destructor to run first.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
            }
        }
    }
}

impl<T: Copy> std::fmt::Debug for HugeSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeSlice")
            .field("len", &self.len)
            .field("mapped", &self.mapped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq, Debug)]
    #[repr(C, align(64))]
    struct Line([u64; 8]);

    #[test]
    fn filled_holds_the_value_everywhere_and_is_writable() {
        let n = 40_000; // 2.4 MiB: more than one huge page
        let mut s = HugeSlice::filled(n, Line([7; 8])).unwrap();
        assert_eq!(s.len(), n);
        assert!(s.iter().all(|l| *l == Line([7; 8])));
        assert_eq!(s.as_ptr() as usize % HUGE_PAGE, 0, "2 MiB aligned");
        s[n - 1] = Line([1; 8]);
        s[0].0[3] = 9;
        assert_eq!(s[n - 1], Line([1; 8]));
        assert_eq!(s[0].0, [7, 7, 7, 9, 7, 7, 7, 7]);
        assert_eq!(s.mapped, 4 << 20);
    }

    #[test]
    fn empty_and_zero_sized_slices_map_nothing() {
        let e = HugeSlice::filled(0, 1u32).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.mapped, 0);
        let z = HugeSlice::filled(5, ()).unwrap();
        assert_eq!(z.len(), 5);
        assert_eq!(z.mapped, 0);
    }

    #[test]
    fn absurd_sizes_are_refused() {
        assert!(HugeSlice::filled(usize::MAX / 2, 0u64).is_none());
    }
}
