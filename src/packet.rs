//! The packet buffer the pipeline works on.
//!
//! The data plane edits packets in place inside DPDK mbufs; tests and pure logic use
//! [`VecPacket`]. Both implement [`PacketBuf`], so parsing, encapsulation and ICMP generation
//! are written once, against bytes, and are unit-tested without an EAL.

/// The burst size fulcrum's workers use: what a worker receives, processes and sends at once.
pub const BURST: usize = 32;

/// A packet whose data can grow at the front (headroom) and at the back (tailroom).
pub trait PacketBuf {
    /// The packet's bytes, starting at the Ethernet header.
    fn data(&self) -> &[u8];
    /// The packet's bytes, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the packet by `n` bytes at the front and returns the whole new data; the first
    /// `n` bytes hold whatever was in the headroom and must be overwritten. `None` (and the
    /// packet unchanged) when the headroom is smaller than `n`.
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Removes `n` bytes from the front. `false` (and the packet unchanged) if shorter than `n`.
    fn adj(&mut self, n: usize) -> bool;
    /// Grows the packet by `n` bytes at the end and returns the whole new data. `None` (and
    /// the packet unchanged) when the tailroom is smaller than `n`.
    fn append(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Removes `n` bytes from the end. `false` (and the packet unchanged) if shorter than `n`.
    fn trim(&mut self, n: usize) -> bool;
    /// The packet's length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the packet has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether all of the packet's bytes are in [`data`](PacketBuf::data). A chained
    /// (multi-segment) mbuf is not: its first segment is only part of the frame, so the
    /// pipeline drops it (counted as `buffer`) rather than parse a truncated view.
    #[inline]
    fn is_contiguous(&self) -> bool {
        true
    }
    /// Hints that the packet's first bytes will be read soon. A no-op by default.
    #[inline]
    fn prefetch(&self) {}
}

/// A heap-backed packet with headroom, the same shape as an mbuf (default 128 bytes of
/// headroom, like `RTE_PKTMBUF_HEADROOM`). For tests, tools and pcap generation.
#[derive(Clone, Debug)]
pub struct VecPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecPacket {
    /// The headroom DPDK mbufs have by default.
    pub const DEFAULT_HEADROOM: usize = 128;

    /// A packet holding `bytes`, with the default headroom and room to grow to `capacity`.
    pub fn new(bytes: &[u8]) -> Self {
        Self::with_room(bytes, Self::DEFAULT_HEADROOM, 2048)
    }

    /// A packet holding `bytes` with `headroom` bytes in front and `tailroom` behind.
    pub fn with_room(bytes: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut buf = vec![0u8; headroom + bytes.len() + tailroom];
        buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
        Self {
            buf,
            start: headroom,
            end: headroom + bytes.len(),
        }
    }

    /// The bytes still free in front of the data.
    pub fn headroom(&self) -> usize {
        self.start
    }
}

impl PacketBuf for VecPacket {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.buf[self.start..self.end])
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.buf.len() - self.end {
            return None;
        }
        self.end += n;
        Some(&mut self.buf[self.start..self.end])
    }
    fn trim(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_adj_round_trip() {
        let mut p = VecPacket::with_room(&[1, 2, 3], 4, 0);
        assert!(p.prepend(5).is_none());
        let d = p.prepend(4).expect("headroom");
        d[..4].copy_from_slice(&[9, 9, 9, 9]);
        assert_eq!(p.data(), &[9, 9, 9, 9, 1, 2, 3]);
        assert!(p.adj(4));
        assert_eq!(p.data(), &[1, 2, 3]);
        assert!(!p.adj(4));
        assert!(p.append(1).is_none());
        assert!(p.trim(3));
        assert!(p.is_empty());
    }
}
