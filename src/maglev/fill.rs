//! Filling the table: each backend's preference list (a permutation of the slots, from two
//! hashes of its key), and the walk that gives each turn of the schedule (`schedule.rs`) the
//! first still-empty slot of that backend's list.

use xxhash_rust::xxh64::xxh64;

use super::schedule;

/// Seed of the xxh64 hash that places a backend's first preferred slot: the ASCII bytes of
/// "maglev-o" read as a big-endian integer. Part of the compatibility promise: never change it.
pub const OFFSET_SEED: u64 = 0x6d61_676c_6576_2d6f;

/// Seed of the xxh64 hash that sets the stride of a backend's preference list: the ASCII bytes
/// of "maglev-s" read as a big-endian integer. Part of the compatibility promise.
pub const SKIP_SEED: u64 = 0x6d61_676c_6576_2d73;

/// A backend's preference list: slot `offset + j * skip (mod M)` for j = 0, 1, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Permutation {
    pub(super) offset: u32,
    pub(super) skip: u32,
}

impl Permutation {
    pub(super) fn for_key(key: &str, size: u32) -> Permutation {
        let offset = xxh64(key.as_bytes(), OFFSET_SEED) % u64::from(size);
        // A size of 2 leaves one possible skip; `max(1)` keeps the modulus non-zero for it.
        let skip = xxh64(key.as_bytes(), SKIP_SEED) % u64::from(size - 1).max(1) + 1;
        // Both are below `size`, which is a u32.
        Permutation {
            offset: offset as u32,
            skip: skip as u32,
        }
    }
}

/// Fills `entries` (M slots) from the preference lists: backend i takes `quotas[i]` slots,
/// its k-th in round floor(k * Q / quotas[i]) (Q = the largest quota), and within a round the
/// backends go in index order. The quotas must sum to M, and M must be prime.
pub(super) fn fill(permutations: &[Permutation], quotas: &[u32], size: u32, entries: &mut [u32]) {
    fill_with(permutations, quotas, size, entries, Strategy::fast(size));
}

/// How [`Filling`] finds a backend's next empty slot; every strategy gives the same table (a
/// test checks), they differ only in speed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Strategy {
    /// Walk four probes per step ([`walk_four`]) rather than one.
    pub(super) four_probes: bool,
    /// Search the empty slots instead of walking once no more than this many are left.
    pub(super) tail_length: u32,
}

impl Strategy {
    pub(super) fn fast(size: u32) -> Strategy {
        Strategy {
            four_probes: true,
            // Walking costs about M/E probes per slot when E slots are empty, searching them
            // costs E: they meet near sqrt(M).
            tail_length: size.isqrt().max(16),
        }
    }

    /// One probe at a time, as in the paper: the reference the others are tested against.
    #[cfg(test)]
    pub(super) fn plain() -> Strategy {
        Strategy {
            four_probes: false,
            tail_length: 0,
        }
    }
}

pub(super) fn fill_with(
    permutations: &[Permutation],
    quotas: &[u32],
    size: u32,
    entries: &mut [u32],
    strategy: Strategy,
) {
    debug_assert_eq!(
        quotas.iter().map(|&q| u64::from(q)).sum::<u64>(),
        u64::from(size)
    );
    debug_assert_eq!(entries.len(), size as usize);
    let mut filling = Filling::new(permutations, size, entries, strategy);
    schedule::turns(quotas, size, |due| filling.take_turns(due));
}

/// Where a backend's preference list continues (the paper's next[i], kept as a slot number so
/// stepping is an add and a conditional subtract, not a modulo), and its stride. The stride's
/// multiples let a walk compute four probes at once.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    slot: u32,
    skip: u32,
    /// 2 * skip mod M.
    skip2: u32,
    /// 4 * skip mod M.
    skip4: u32,
}

/// The table while it fills. A backend's turn takes the first still-empty slot of its
/// preference list, found in one of two ways that give the same slot:
/// * by walking the list, four probes per step ([`walk_four`]);
/// * once only `tail_length` slots are empty, by searching them for the one the list reaches
///   first ([`Filling::take_from_tail`]): by then a walk passes hundreds of taken slots (the
///   last slots of a 65537-entry table cost half of all probes).
pub(super) struct Filling<'a> {
    size: u32,
    entries: &'a mut [u32],
    /// Which slots are taken, one bit each: 8 KiB for M = 65537, so probes hit L1 even when the
    /// table itself does not fit.
    taken: Vec<u64>,
    cursors: Vec<Cursor>,
    empty: u32,
    strategy: Strategy,
    /// The empty slots, in no order, once `empty <= tail_length`.
    tail: Vec<u32>,
    /// Per backend, ceil(skip^-1 * 2^64 / M), which ranks the tail's slots by distance along
    /// the backend's list; computed on the backend's first turn in the tail (0 = not yet).
    step_scale: Vec<u64>,
}

impl<'a> Filling<'a> {
    pub(super) fn new(
        permutations: &[Permutation],
        size: u32,
        entries: &'a mut [u32],
        strategy: Strategy,
    ) -> Filling<'a> {
        let mut filling = Filling {
            size,
            entries,
            taken: vec![0; (size as usize).div_ceil(64)],
            cursors: permutations
                .iter()
                .map(|p| {
                    let skip2 = advance(p.skip, p.skip, size);
                    Cursor {
                        slot: p.offset,
                        skip: p.skip,
                        skip2,
                        skip4: advance(skip2, skip2, size),
                    }
                })
                .collect(),
            empty: size,
            strategy,
            tail: Vec::new(),
            step_scale: Vec::new(),
        };
        if size <= strategy.tail_length {
            filling.start_tail();
        }
        filling
    }

    /// Gives each turn of `due` (backend indices in turn order; a backend may recur) its
    /// backend's next preferred empty slot; there must be as many empty slots left.
    pub(super) fn take_turns(&mut self, due: &[u32]) {
        let walks = (self.empty.saturating_sub(self.strategy.tail_length) as usize).min(due.len());
        let (walked, searched) = due.split_at(walks);
        if self.strategy.four_probes {
            self.walk_turns(walked, walk_four);
        } else {
            self.walk_turns(walked, walk_one);
        }
        if walks > 0 && self.empty == self.strategy.tail_length && self.empty > 0 {
            self.start_tail();
        }
        for &index in searched {
            self.take_from_tail(index);
        }
    }

    /// The walking turns in one tight loop over locals: the filling's fields stay in registers,
    /// which roughly halves the time per turn while the table is mostly empty.
    #[inline(always)]
    fn walk_turns(&mut self, due: &[u32], walk: impl Fn(&mut [u64], &mut Cursor, u32) -> u32) {
        let size = self.size;
        let taken = &mut self.taken[..];
        let cursors = &mut self.cursors[..];
        let entries = &mut *self.entries;
        let mut empty = self.empty;
        for &index in due {
            let Some(cursor) = cursors.get_mut(index as usize) else {
                continue;
            };
            let slot = walk(taken, cursor, size);
            if let Some(entry) = entries.get_mut(slot as usize) {
                *entry = index;
            }
            empty -= 1;
        }
        self.empty = empty;
    }

    fn start_tail(&mut self) {
        self.tail.clear();
        for (word_index, &word) in self.taken.iter().enumerate() {
            let mut empty = !word;
            while empty != 0 {
                let slot = (word_index * 64) as u32 + empty.trailing_zeros();
                // The last word's bits past M are not slots.
                if slot < self.size {
                    self.tail.push(slot);
                }
                empty &= empty - 1;
            }
        }
        self.step_scale = vec![0; self.cursors.len()];
    }

    /// Takes the empty slot that backend `index`'s list reaches first. Every slot the list
    /// passed is taken, so that is the empty slot s with the fewest steps from the cursor,
    /// d = (s - cursor) * skip^-1 mod M.
    ///
    /// d is ranked without a division: with F = ceil(skip^-1 * 2^64 / M) and x = s + M - cursor
    /// (in [1, 2M)), the wrapping product x * F equals d * 2^64 / M plus an error below 2M.
    /// Different d are at least 2^64 / M >= 2^40 apart, far more than the error, and the
    /// largest product stays below 2^64, so the products rank the slots as d does, even with
    /// their low 32 bits replaced by the slot's position in `tail`.
    fn take_from_tail(&mut self, index: u32) {
        let index = index as usize;
        let (Some(&cursor), Some(known_scale)) =
            (self.cursors.get(index), self.step_scale.get_mut(index))
        else {
            return;
        };
        if *known_scale == 0 {
            let inverse = u128::from(inverse_mod(cursor.skip, self.size));
            // inverse < M, so the quotient is below 2^64.
            *known_scale = (inverse << 64).div_ceil(u128::from(self.size)) as u64;
        }
        let scale = *known_scale;
        let from = self.size - cursor.slot;
        // The rank in the high half and the position in the low half: one `min` finds both
        // without a branch per slot.
        let mut best = u64::MAX;
        for (position, &slot) in self.tail.iter().enumerate() {
            let rank = u64::from(slot + from).wrapping_mul(scale);
            best = best.min((rank & !u64::from(u32::MAX)) | position as u64);
        }
        let position = (best & u64::from(u32::MAX)) as usize;
        if position >= self.tail.len() {
            return;
        }
        let slot = self.tail.swap_remove(position);
        if let Some(cursor) = self.cursors.get_mut(index) {
            cursor.slot = advance(slot, cursor.skip, self.size);
        }
        if let Some(entry) = self.entries.get_mut(slot as usize) {
            *entry = index as u32;
        }
        self.empty -= 1;
    }
}

#[inline(always)]
fn is_taken(taken: &[u64], slot: u32) -> u64 {
    // Every slot is below M, so the index is in bounds.
    (taken[slot as usize / 64] >> (slot % 64)) & 1
}

#[inline(always)]
fn mark_taken(taken: &mut [u64], slot: u32) {
    taken[slot as usize / 64] |= 1 << (slot % 64);
}

/// Takes the first empty slot on `cursor`'s list and moves the cursor past it, four probes per
/// step: four independent loads and one branch, which is rarely mispredicted while the table
/// is mostly empty. Probing one slot at a time puts a coin-toss branch on every turn then, and
/// a dependent add and a branch on every probe later.
#[inline(always)]
fn walk_four(taken: &mut [u64], cursor: &mut Cursor, size: u32) -> u32 {
    let Cursor {
        slot,
        skip,
        skip2,
        skip4,
    } = *cursor;
    let mut p0 = slot;
    let mut p1 = advance(slot, skip, size);
    let mut p2 = advance(slot, skip2, size);
    let mut p3 = advance(p1, skip2, size);
    loop {
        let w0 = taken[p0 as usize / 64] >> (p0 % 64);
        let w1 = taken[p1 as usize / 64] >> (p1 % 64);
        let w2 = taken[p2 as usize / 64] >> (p2 % 64);
        let w3 = taken[p3 as usize / 64] >> (p3 % 64);
        if w0 & w1 & w2 & w3 & 1 == 0 {
            let free = (!w0 & 1) | (!w1 & 1) << 1 | (!w2 & 1) << 2 | (!w3 & 1) << 3;
            let found = [p0, p1, p2, p3][free.trailing_zeros() as usize & 3];
            mark_taken(taken, found);
            cursor.slot = advance(found, skip, size);
            return found;
        }
        p0 = advance(p0, skip4, size);
        p1 = advance(p1, skip4, size);
        p2 = advance(p2, skip4, size);
        p3 = advance(p3, skip4, size);
    }
}

/// The paper's walk, one probe at a time: the reference the fast path is tested against.
#[inline(always)]
fn walk_one(taken: &mut [u64], cursor: &mut Cursor, size: u32) -> u32 {
    let mut slot = cursor.slot;
    while is_taken(taken, slot) != 0 {
        slot = advance(slot, cursor.skip, size);
    }
    mark_taken(taken, slot);
    cursor.slot = advance(slot, cursor.skip, size);
    slot
}

/// a^-1 mod m for a prime m and 0 < a < m (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let quotient = r0 / r1;
        (r0, r1) = (r1, r0 - quotient * r1);
        (t0, t1) = (t1, t0 - quotient * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
}

/// The next slot of a preference list: `slot + skip (mod M)` for slot, skip < M.
#[inline(always)]
fn advance(slot: u32, skip: u32, size: u32) -> u32 {
    // slot + skip < 2M <= 2^25, so no overflow. When next < M the subtraction wraps to a huge
    // number and `min` keeps next: a conditional move, where an `if next >= size` compiles to
    // a branch that mispredicts every time a list wraps around the table.
    let next = slot + skip;
    next.min(next.wrapping_sub(size))
}
