//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Partial sums are plain `u64` accumulators: add as many [`sum`]s and pseudo-headers as a
//! header needs, then [`finish`] once. Summing 32-bit words into 64 bits is exact for any
//! packet (2^16 words of 2^32 cannot overflow), and because 2^16 = 1 modulo 0xffff the result
//! folds to the same value as summing 16-bit words.

/// Adds `data` as big-endian 16-bit words to nothing, returning a partial sum.
/// An odd trailing byte counts as the high byte of a word padded with zero, so when sums of
/// several pieces are added, every piece but the last must have even length.
///
/// Works 8 bytes at a time in the machine's byte order with end-around carry (an add and an
/// add-with-carry per word), then folds and swaps once: the ones-complement sum is
/// byte-order independent (RFC 1071 section 2(B)), and 0xffff divides 2^64 - 1, so the
/// 64-bit sum folds to the 16-bit one.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let (words, rest) = data.as_chunks::<8>();
    let mut acc: u64 = 0;
    for word in words {
        acc = add_with_carry(acc, u64::from_ne_bytes(*word));
    }
    // Zero padding after the last bytes in memory order is exactly RFC 1071's padding.
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    acc = add_with_carry(acc, u64::from_ne_bytes(tail));
    let folded = fold(acc);
    u64::from(if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    })
}

#[inline(always)]
fn add_with_carry(acc: u64, word: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(word);
    // Cannot overflow: with a carry, `sum` is at most 2^64 - 2.
    sum + u64::from(carry)
}

/// Folds a partial sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The value to write into a checksum field whose bytes summed (with the field zero) to `acc`.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// Whether bytes that include their checksum field sum to the all-ones of a valid checksum.
#[inline]
pub fn is_valid(acc: u64) -> bool {
    fold(acc) == 0xffff
}

/// The IPv4 pseudo-header TCP and UDP checksums cover.
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u64 {
    u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(protocol)
        + u64::from(length)
}

/// The IPv6 pseudo-header (RFC 8200 section 8.1) UDP and ICMPv6 checksums cover.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, length: u32) -> u64 {
    sum(src) + sum(dst) + u64::from(length) + u64::from(next_header)
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`,
/// by RFC 1624 equation 3 (`HC' = ~(~HC + ~m + m')`), which cannot produce the -0 that
/// RFC 1141's form does.
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for a 32-bit field such as an IPv4 address.
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!checksum)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from(new >> 16)
        + u64::from(new as u16);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference RFC 1071 loop, one 16-bit word at a time, to check the wide sum against.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn rfc1071_example_sums_to_the_published_value() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum (folded) to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn wide_sum_matches_the_word_by_word_reference_for_every_length() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(finish(sum(&data)), reference(&data), "len {len}");
        }
        let ones = vec![0xffu8; 65_535];
        assert_eq!(finish(sum(&ones)), reference(&ones));
    }

    #[test]
    fn sums_of_pieces_split_at_even_offsets_add_up_to_the_whole() {
        let mut rng = Rng(0xfeed);
        for _ in 0..2_000 {
            let len = (rng.next() % 300) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let split = ((rng.next() as usize) % (len + 1)) & !1;
            let (a, b) = data.split_at(split);
            assert_eq!(
                fold(sum(a) + sum(b)),
                fold(sum(&data)),
                "len {len} split {split}"
            );
        }
    }

    #[test]
    fn known_ipv4_header_checksum_and_validation() {
        // A header whose checksum (0xb861) is the classic worked example.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&header)), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(is_valid(sum(&header)));
        header[8] = 0x3f;
        assert!(!is_valid(sum(&header)));
    }

    #[test]
    fn incremental_update_equals_full_recompute() {
        let mut rng = Rng(42);
        for _ in 0..5_000 {
            let mut data: Vec<u8> = (0..20).map(|_| rng.next() as u8).collect();
            data[10] = 0;
            data[11] = 0;
            let check = finish(sum(&data));

            let old16 = u16::from_be_bytes([data[8], data[9]]);
            let new16 = rng.next() as u16;
            data[8..10].copy_from_slice(&new16.to_be_bytes());
            let updated = update16(check, old16, new16);
            assert_eq!(updated, finish(sum(&data)));

            let old32 = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let new32 = rng.next() as u32;
            data[12..16].copy_from_slice(&new32.to_be_bytes());
            assert_eq!(update32(updated, old32, new32), finish(sum(&data)));
        }
    }

    #[test]
    fn pseudo_headers_equal_summing_their_byte_layout() {
        let src4 = [192, 0, 2, 1];
        let dst4 = [198, 51, 100, 7];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src4);
        bytes.extend_from_slice(&dst4);
        bytes.extend_from_slice(&[0, 17, 0x01, 0x2c]);
        assert_eq!(
            fold(pseudo_header_v4(src4, dst4, 17, 300)),
            fold(sum(&bytes))
        );

        let src6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd,
        ];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src6);
        bytes.extend_from_slice(&dst6);
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            fold(pseudo_header_v6(&src6, &dst6, 58, 70_000)),
            fold(sum(&bytes))
        );
    }
}
