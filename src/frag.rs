//! The fragment table: where the later fragments of a datagram go, learnt from its first.
//!
//! Only a datagram's first fragment carries the transport header, so only it can be
//! classified by its ports. The worker records the first fragment's decision here, keyed
//! by the datagram's identity (source, destination, protocol, IP identification: 16 bits
//! for IPv4, the fragment header's 32 for IPv6), and every later fragment of the datagram
//! looks it up: the backend (and flow hash) its first fragment got, or the kernel when the
//! first fragment was for no VIP port.
//!
//! One table per worker (a datagram's fragments reach one worker: RSS hashes fragments on
//! their addresses only), allocated once at start with a fixed number of entries, so the hot
//! path never allocates. Entries are grouped in sets of [`WAYS`]; a set is chosen by a hash
//! keyed per table at start, so a sender cannot aim many datagrams at one set. An entry
//! lives [`FragmentTable::timeout`] ticks after its first fragment (a datagram's fragments
//! arrive back to back; the timeout only bounds how long a lost datagram holds a slot). A
//! full set gives its oldest entry to the newcomer: under a flood of first fragments the
//! table forgets old datagrams (their later fragments are then dropped as
//! `fragment_no_first`), never new ones.

use std::hash::{BuildHasher, Hash};

/// Entries per set: one probe reads a few neighbouring entries, and a set rarely fills.
pub const WAYS: usize = 4;

/// A datagram's identity: what every one of its fragments carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    /// IPv4 addresses IPv4-mapped, like [`crate::flow::FiveTuple`].
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The IPv4 identification or the IPv6 fragment header's identification.
    pub id: u32,
    pub proto: u8,
}

/// What the first fragment of a datagram decided for the rest of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstFragment {
    /// The first fragment was for no VIP port: the kernel gets the whole datagram, as it
    /// would get the same packet unfragmented.
    Kernel,
    /// The first fragment went to `backend` of the VIP at snapshot index `vip_index` (whose id is
    /// `vip_id`, so a later fragment can tell that the VIP list changed), encapsulated with
    /// `hash` (the GUE source port is taken from it).
    Backend {
        vip_index: u16,
        vip_id: u32,
        backend: u32,
        hash: u64,
    },
}

#[derive(Clone, Copy)]
struct Entry {
    key: DatagramKey,
    /// Tick at which the entry stops answering; 0 for a free entry.
    expires: u64,
    first: FirstFragment,
}

impl Entry {
    const FREE: Entry = Entry {
        key: DatagramKey {
            src: [0; 16],
            dst: [0; 16],
            id: 0,
            proto: 0,
        },
        expires: 0,
        first: FirstFragment::Kernel,
    };

    #[inline]
    fn live(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// What the table has done, for tests and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentTableStats {
    pub inserts: u64,
    /// Live entries replaced by a newer datagram because their set was full.
    pub evictions: u64,
    pub hits: u64,
    pub misses: u64,
}

/// One worker's fragment table (see the module documentation).
pub struct FragmentTable {
    entries: Box<[Entry]>,
    /// Number of sets minus one (a power of two minus one).
    set_mask: usize,
    timeout: u64,
    placement: std::collections::hash_map::RandomState,
    stats: FragmentTableStats,
}

impl FragmentTable {
    /// A table of at least `capacity` entries (rounded up to a power of two, and to one set),
    /// each living `timeout` ticks of the clock the caller passes as `now`.
    pub fn new(capacity: usize, timeout: u64) -> FragmentTable {
        let sets = capacity.max(WAYS).div_ceil(WAYS).next_power_of_two();
        FragmentTable {
            entries: vec![Entry::FREE; sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            timeout: timeout.max(1),
            placement: std::collections::hash_map::RandomState::new(),
            stats: FragmentTableStats::default(),
        }
    }

    /// How many entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// How long an entry lives, in ticks.
    pub fn timeout(&self) -> u64 {
        self.timeout
    }

    pub fn stats(&self) -> FragmentTableStats {
        self.stats
    }

    /// Live entries (a full scan: for tests and diagnostics, not the hot path).
    pub fn len(&self, now: u64) -> usize {
        self.entries.iter().filter(|e| e.live(now)).count()
    }

    pub fn is_empty(&self, now: u64) -> bool {
        self.len(now) == 0
    }

    #[inline]
    fn set(&mut self, key: &DatagramKey) -> &mut [Entry] {
        let set = self.placement.hash_one(key) as usize & self.set_mask;
        let start = set * WAYS;
        // `start + WAYS <= entries.len()` since `set <= set_mask`; `get_mut` keeps it
        // panic-free all the same.
        self.entries
            .get_mut(start..start + WAYS)
            .unwrap_or_default()
    }

    /// Records what a datagram's first fragment decided, for `timeout` ticks from `now`.
    /// A first fragment seen again (a retransmission, or a forged one) replaces the entry.
    #[inline]
    pub fn insert(&mut self, key: DatagramKey, first: FirstFragment, now: u64) {
        let expires = now.saturating_add(self.timeout);
        let set = self.set(&key);
        let mut evicted = false;
        let slot = match set.iter().position(|e| e.live(now) && e.key == key) {
            Some(i) => i,
            None => match set.iter().position(|e| !e.live(now)) {
                Some(i) => i,
                None => {
                    evicted = true;
                    // Every way is live: the oldest goes.
                    set.iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.expires)
                        .map_or(0, |(i, _)| i)
                }
            },
        };
        if let Some(e) = set.get_mut(slot) {
            *e = Entry {
                key,
                expires,
                first,
            };
        }
        self.stats.inserts += 1;
        if evicted {
            self.stats.evictions += 1;
        }
    }

    /// What the first fragment of `key`'s datagram decided, if it was seen less than
    /// `timeout` ticks ago.
    #[inline]
    pub fn lookup(&mut self, key: &DatagramKey, now: u64) -> Option<FirstFragment> {
        let found = self
            .set(key)
            .iter()
            .find(|e| e.live(now) && e.key == *key)
            .map(|e| e.first);
        match found {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> DatagramKey {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[198, 18, (i >> 8) as u8, i as u8]);
        DatagramKey {
            src,
            dst: [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ],
            id: i,
            proto: 17,
        }
    }

    fn backend(b: u32) -> FirstFragment {
        FirstFragment::Backend {
            vip_index: 0,
            vip_id: 7,
            backend: b,
            hash: u64::from(b) * 31,
        }
    }

    #[test]
    fn a_recorded_datagram_is_found_until_it_expires() {
        let mut t = FragmentTable::new(64, 100);
        t.insert(key(1), backend(3), 1000);
        t.insert(key(2), FirstFragment::Kernel, 1000);
        assert_eq!(t.lookup(&key(1), 1000), Some(backend(3)));
        assert_eq!(t.lookup(&key(2), 1099), Some(FirstFragment::Kernel));
        assert_eq!(t.lookup(&key(3), 1000), None, "never seen");
        assert_eq!(t.lookup(&key(1), 1100), None, "expired after the timeout");
        assert!(t.is_empty(1100));
        let s = t.stats();
        assert_eq!((s.inserts, s.hits, s.misses, s.evictions), (2, 2, 2, 0));
    }

    #[test]
    fn every_field_of_the_key_counts() {
        let mut t = FragmentTable::new(64, 100);
        t.insert(key(1), backend(3), 0);
        let k = key(1);
        for other in [
            DatagramKey { id: 2, ..k },
            DatagramKey { proto: 6, ..k },
            DatagramKey { src: k.dst, ..k },
            DatagramKey { dst: k.src, ..k },
        ] {
            assert_eq!(t.lookup(&other, 1), None, "{other:?}");
        }
    }

    #[test]
    fn a_new_first_fragment_replaces_the_entry_and_renews_it() {
        let mut t = FragmentTable::new(64, 100);
        t.insert(key(1), backend(3), 0);
        t.insert(key(1), backend(4), 50);
        assert_eq!(t.lookup(&key(1), 120), Some(backend(4)));
        assert_eq!(t.len(120), 1, "replaced, not added");
        assert_eq!(t.stats().evictions, 0);
    }

    #[test]
    fn the_table_is_bounded_and_a_full_set_evicts_its_oldest() {
        let mut t = FragmentTable::new(16, 1_000_000);
        assert_eq!(t.capacity(), 16);
        for i in 0..1000u32 {
            t.insert(key(i), backend(i), u64::from(i));
        }
        assert_eq!(t.len(1000), 16, "never more entries than its capacity");
        assert_eq!(t.stats().evictions, 1000 - 16);
        // What is left is the newest entry of each set: the last datagram inserted is always
        // there, and nothing survives that is older than every entry of its set.
        assert_eq!(t.lookup(&key(999), 1000), Some(backend(999)));
        let survivors: Vec<u32> = (0..1000)
            .filter(|&i| t.lookup(&key(i), 1000).is_some())
            .collect();
        assert_eq!(survivors.len(), 16);
        assert!(
            survivors.iter().all(|&i| i >= 1000 - 16 * 16),
            "old datagrams are forgotten first: {survivors:?}"
        );
    }

    #[test]
    fn expired_entries_are_reused_before_live_ones_are_evicted() {
        let mut t = FragmentTable::new(16, 10);
        for i in 0..16u32 {
            t.insert(key(i), backend(i), 0);
        }
        // All 16 expired at tick 10: a later batch takes their places with no eviction,
        // whichever sets it lands in, as long as no set gets more than WAYS of it.
        let mut evictions = t.stats().evictions;
        for i in 100..104u32 {
            t.insert(key(i), backend(i), 20);
            assert_eq!(t.stats().evictions, evictions, "reused an expired way");
            evictions = t.stats().evictions;
            assert_eq!(t.lookup(&key(i), 21), Some(backend(i)));
        }
    }

    #[test]
    fn capacity_rounds_up_to_whole_sets() {
        assert_eq!(FragmentTable::new(0, 1).capacity(), WAYS);
        assert_eq!(FragmentTable::new(5, 1).capacity(), 8);
    }
}
