//! Connection tracking: the per-worker table that pins a flow to the backend it started on.
//!
//! Maglev alone already sends a flow to the same backend while the backend set is stable; the
//! connection table keeps established flows where they are when the set changes (a backend
//! added, drained or weighted differently), which would otherwise remap a small share of them.
//!
//! # Layout
//!
//! The table is set-associative: `capacity / 8` sets of 8 ways, the set count a power of two
//! so the set is `placed & mask`, where `placed` is the flow hash mixed with the table's
//! secret key (see "Placement"). Each set is 448 bytes, 64-byte aligned:
//!
//! ```text
//! line 0      : sig[8] (u16, 0 = empty) | last_seen[8] (u32 coarse ticks) | confirmed (u8) | 15 spare
//! lines 1..=6 : entries[8], 48 bytes each: FiveTuple key (38) | backend u32 | flags u8
//! ```
//!
//! 448 / 8 = **56 bytes per flow**, key included; the default 1 Mi flows take 56 MiB per
//! worker, allocated once by [`ConnTable::new`] and never again. A lookup reads the
//! metadata line (prefetchable from the hash alone, see [`ConnTable::prefetch`]), compares
//! the 16-bit signatures (the top bits of the hash) of all eight ways at once, and touches an
//! entry only on a signature match: one entry line (two for the half of entries that
//! straddle a line boundary) on a hit, almost never one on a miss (8 / 65535 per lookup).
//! Choosing a victim to evict and sweeping for idle flows read only the metadata line.
//!
//! # Sizing
//!
//! A flow's set is fixed by its hash, so a set can fill while others have room: random
//! flows overflow like Poisson(8 x load) balls in bins of 8. At half the capacity in live
//! flows 0.8 % of new flows evict an older one; at 75 %, 5 %; at 90 %, 10 %. Configure the
//! capacity at twice the expected concurrent flows (idle-but-unexpired ones count). The
//! victim is the least recently seen of its set, usually a finished flow waiting out its
//! timeout; a live victim only moves if Maglev's answer for it changed since it started.
//!
//! # Placement
//!
//! The flow hash is public and fixed (every instance must compute it identically, since
//! Maglev picks from it), so placing flows by it would let anyone compute offline tuples
//! that all land in one set and evict its flows at will. The set index and the signature
//! come instead from the flow hash mixed with a key drawn at random per table
//! ([`ConnTable::new`]). Placement is the table's private business: nothing else, neither
//! Maglev nor another instance, ever sees it.
//!
//! # Eviction
//!
//! A flow is *confirmed* once it has been seen a second time (a lookup hit, or an insert of
//! a flow already tracked). When a set is full, a new flow takes the way of an expired
//! flow, else of the least recently seen unconfirmed flow, and only when all eight ways
//! hold confirmed flows, of the least recently seen of those. A flood of new one-packet
//! flows (spoofed SYNs, a UDP scan) thus churns among its own entries and evicts at most
//! one established flow per set, the least recently used, and only from a set that was
//! already full of established flows. [`ConnTableStats::confirmed_evictions`] counts those.
//!
//! The table is one mapping of its own ([`HugeSlice`]), 2 MiB-aligned and advised to use
//! transparent huge pages: on 4 KiB pages nearly every lookup of a large table also misses
//! the TLB, which in a virtual machine costs a two-dimensional page walk (docs/benchmarks.md,
//! step 1, has the figures). Huge pages are best effort; without them the table works the
//! same, only slower.
//!
//! # Time
//!
//! The table never reads a clock: every call takes `now` in the caller's unit (TSC cycles,
//! milliseconds...), the same unit as the idle timeout given to [`ConnTable::new`]. It
//! stores `now >> shift` truncated to 32 bits, with `shift` chosen so that the timeout spans
//! between 2^15 and 2^16 ticks (for a 60 s timeout in 3 GHz TSC cycles a tick is 1.4 ms).
//! Ages are computed in wrapping serial-number arithmetic, so the 32-bit counter wrapping
//! (every 2^32 ticks) is harmless, and a `now` slightly behind an entry's timestamp (another
//! core's clock) counts as age zero rather than a huge age. Expiry is exact to about two
//! ticks, i.e. 0.01 % of the timeout.
//!
//! The one thing wrapping arithmetic cannot do is tell an entry idle for more than 2^31
//! ticks (at least 2^15 idle timeouts: 22 days for a 60 s timeout) from a fresh one. The
//! incremental sweeper, [`ConnTable::expire_some`], frees idle entries long before that as
//! long as the worker walks the whole table once in that time, which any call rate does: a
//! 1 Mi-flow table is 131072 sets, a few milliseconds of work in total.
//!
//! # Values and staleness
//!
//! A flow remembers the backend id the control plane assigned (stable across snapshots) and
//! the VIP's small index. Both may be stale after a configuration change: the VIP index may
//! have been reused for another VIP and the backend may have left it. The table does not
//! know about configuration; the caller validates both against its current snapshot before
//! trusting a hit, and re-selects (then [`ConnTable::update_backend`]s) when they are stale.

use crate::flow::FiveTuple;
use crate::mem::huge::HugeSlice;
use crate::mem::prefetch::prefetch_line;
use std::fmt;
use std::mem::size_of;

/// Ways per set.
pub const WAYS: usize = 8;

/// The capacity a worker gets when the configuration does not say.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The largest capacity accepted: 2^30 flows, 56 GiB per worker.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Bytes of memory each flow of capacity costs, key and bookkeeping included.
pub const BYTES_PER_FLOW: usize = size_of::<Set>() / WAYS;

/// The idle timeout in ticks is kept below 2^TIMEOUT_TICK_BITS: fine enough resolution,
/// and far enough below 2^31 that ages never approach the wrap.
const TIMEOUT_TICK_BITS: u32 = 16;

/// The signature of an empty way; real signatures are never 0.
const EMPTY: u16 = 0;

const _: () = assert!(size_of::<Entry>() == 48);
const _: () = assert!(size_of::<Meta>() == 64);
const _: () = assert!(BYTES_PER_FLOW <= 64);

/// What the table remembers about a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// The backend's stable id, assigned by the control plane.
    pub backend: u32,
    /// Bits the caller owns (e.g. "TCP FIN seen"); the table stores them and never reads them.
    pub flags: u8,
}

/// What [`ConnTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertResult {
    /// The flow was new and took a free way (or one whose flow had expired).
    Inserted,
    /// The flow was already tracked; its value was replaced and it was refreshed.
    Updated,
    /// The set was full of live flows: the least recently used one, `victim`, was dropped to
    /// make room. Its packets will be re-balanced by Maglev.
    Evicted { victim: FiveTuple },
}

/// Counters a worker reads and exports. They only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTableStats {
    /// Lookups that found a live flow.
    pub hits: u64,
    /// Lookups that found nothing or an expired flow.
    pub misses: u64,
    /// Flows added by [`ConnTable::insert`] (not counting updates of a tracked flow).
    pub inserts: u64,
    /// Live flows dropped because their set was full.
    pub evictions: u64,
    /// The part of `evictions` that were confirmed flows (seen more than once): a set full
    /// of them, with no one-packet flow to give way.
    pub confirmed_evictions: u64,
    /// Flows freed for being idle longer than the timeout, by a lookup, an insert or the
    /// sweeper.
    pub expiries: u64,
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnTableError {
    #[error("conntrack capacity must be at least 1 flow (the default is {DEFAULT_CAPACITY})")]
    ZeroCapacity,
    #[error(
        "conntrack capacity {requested} is larger than the maximum {MAX_CAPACITY} flows per worker"
    )]
    CapacityTooLarge { requested: usize },
    #[error("conntrack idle timeout must be greater than zero")]
    ZeroIdleTimeout,
    #[error(
        "cannot allocate {bytes} bytes for a conntrack table of {capacity} flows \
         ({BYTES_PER_FLOW} bytes per flow): lower the capacity or add memory"
    )]
    OutOfMemory { capacity: usize, bytes: usize },
}

/// The metadata line of a set: everything a lookup scans and an eviction compares.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Meta {
    sig: [u16; WAYS],
    last_seen: [u32; WAYS],
    /// Bit i set once way i's flow has been seen a second time: see "Eviction".
    confirmed: u8,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    key: FiveTuple,
    backend: u32,
    flags: u8,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Set {
    meta: Meta,
    entries: [Entry; WAYS],
}

impl Entry {
    const EMPTY: Self = Self {
        key: FiveTuple {
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            proto: 0,
        },
        backend: 0,
        flags: 0,
    };

    fn new(key: &FiveTuple, value: FlowValue) -> Self {
        Self {
            key: *key,
            backend: value.backend,
            flags: value.flags,
        }
    }

    fn value(&self) -> FlowValue {
        FlowValue {
            backend: self.backend,
            flags: self.flags,
        }
    }
}

impl Set {
    const EMPTY: Self = Self {
        meta: Meta {
            sig: [EMPTY; WAYS],
            last_seen: [0; WAYS],
            confirmed: 0,
        },
        entries: [Entry::EMPTY; WAYS],
    };

    /// One bit per way whose signature is `sig`. The eight 16-bit signatures are compared
    /// as two 64-bit words of four lanes each: a compare-and-shift per way was ~28
    /// instructions per call, twice per packet.
    #[inline(always)]
    fn ways_with(&self, sig: u16) -> u32 {
        let s = &self.meta.sig;
        let word = |i: usize| {
            u64::from(s[i])
                | u64::from(s[i + 1]) << 16
                | u64::from(s[i + 2]) << 32
                | u64::from(s[i + 3]) << 48
        };
        lanes_equal(word(0), sig) | lanes_equal(word(4), sig) << 4
    }

    #[inline(always)]
    fn find(&self, sig: u16, key: &FiveTuple) -> Option<usize> {
        let mut candidates = self.ways_with(sig);
        while candidates != 0 {
            let way = candidates.trailing_zeros() as usize;
            if self.entries.get(way).is_some_and(|e| e.key == *key) {
                return Some(way);
            }
            candidates &= candidates - 1;
        }
        None
    }
}

/// Ticks elapsed from `then` to `now`, through the 32-bit wrap. A `then` ahead of `now` (a
/// clock slightly behind the one that stamped the entry) is age zero.
#[inline(always)]
fn age(now: u32, then: u32) -> u32 {
    (now.wrapping_sub(then) as i32).max(0) as u32
}

const _: () = assert!(
    WAYS == 8,
    "Set::ways_with compares the signatures in two words of four"
);

/// Bit i set where 16-bit lane i of `lanes` equals `sig`, i in 0..4.
#[inline(always)]
fn lanes_equal(lanes: u64, sig: u16) -> u32 {
    const LOW: u64 = 0x7fff_7fff_7fff_7fff;
    const HIGH: u64 = !LOW;
    let x = lanes ^ u64::from(sig).wrapping_mul(0x0001_0001_0001_0001);
    // Adding 0x7fff to a lane's low 15 bits carries into its top bit iff they are non-zero,
    // and never out of the lane; or-ing x in adds the lane's own top bit.
    let zero = !(((x & LOW) + LOW) | x) & HIGH;
    // The flags sit at bits 15, 31, 47 and 63; one multiplication gathers them into bits
    // 45-48 (no two partial products land on the same bit, so nothing carries).
    ((zero >> 15).wrapping_mul(1 | 1 << 15 | 1 << 30 | 1 << 45) >> 45) as u32 & 0xf
}

#[inline(always)]
fn signature(hash: u64) -> u16 {
    ((hash >> 48) as u16).max(1)
}

/// The flow hash mixed with a table's secret key: a bijection of the hash for any key (the
/// xor, then two rounds of xor-shift and multiply by an odd constant), so placement stays
/// as uniform as the flow hash, but which set a flow lands in cannot be computed without the
/// key. Not a cryptographic function: it spares the table sets filled by crafted tuples
/// computed offline from the public flow hash, for ten instructions per call.
#[inline(always)]
fn keyed_mix(hash: u64, key: u64) -> u64 {
    const M: u64 = 0xd6e8_feb8_6659_fd93;
    let mut x = hash ^ key;
    x = (x ^ x >> 32).wrapping_mul(M);
    x = (x ^ x >> 32).wrapping_mul(M);
    x ^ x >> 32
}

/// A placement key from the process's random source (std's hash keys, seeded from the OS).
fn random_key() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// A per-worker, fixed-capacity flow table. See the module documentation for the layout and
/// the time model. All methods are O(1) (`expire_some` is O(budget)), allocate nothing and
/// cannot panic.
pub struct ConnTable {
    /// Invariant: `sets.len() == set_mask + 1`, a power of two, so `hash & set_mask` is
    /// always a valid index.
    sets: HugeSlice<Set>,
    set_mask: usize,
    /// This table's secret for placing flows in sets (see "Placement").
    placement_key: u64,
    tick_shift: u32,
    timeout_ticks: u32,
    idle_timeout: u64,
    len: usize,
    sweep_cursor: usize,
    stats: ConnTableStats,
}

impl ConnTable {
    /// A table for at least `capacity` flows (rounded up to a power of two, at least 8:
    /// [`ConnTable::capacity`] tells the result), whose flows expire after `idle_timeout`
    /// without a lookup, in the unit of the `now` the caller will pass. Allocates all of its
    /// memory here.
    pub fn new(capacity: usize, idle_timeout: u64) -> Result<Self, ConnTableError> {
        Self::with_placement_key(capacity, idle_timeout, random_key())
    }

    /// [`ConnTable::new`] with a given placement key instead of a random one: for tests and
    /// benchmarks that need the same placement on every run. A daemon never uses it.
    pub fn with_placement_key(
        capacity: usize,
        idle_timeout: u64,
        placement_key: u64,
    ) -> Result<Self, ConnTableError> {
        if capacity == 0 {
            return Err(ConnTableError::ZeroCapacity);
        }
        if capacity > MAX_CAPACITY {
            return Err(ConnTableError::CapacityTooLarge {
                requested: capacity,
            });
        }
        if idle_timeout == 0 {
            return Err(ConnTableError::ZeroIdleTimeout);
        }
        let capacity = capacity.next_power_of_two().max(WAYS);
        let set_count = capacity / WAYS;
        let out_of_memory = ConnTableError::OutOfMemory {
            capacity,
            bytes: set_count.saturating_mul(size_of::<Set>()),
        };
        let sets = HugeSlice::filled(set_count, Set::EMPTY).ok_or(out_of_memory)?;

        let timeout_bits = u64::BITS - idle_timeout.leading_zeros();
        let tick_shift = timeout_bits.saturating_sub(TIMEOUT_TICK_BITS);
        Ok(Self {
            sets,
            set_mask: set_count - 1,
            placement_key,
            tick_shift,
            timeout_ticks: (idle_timeout >> tick_shift) as u32,
            idle_timeout,
            len: 0,
            sweep_cursor: 0,
            stats: ConnTableStats::default(),
        })
    }

    /// How many flows the table holds at most.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// How many flows it holds now (expired ones not yet freed included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The idle timeout, in the caller's unit, as given to [`ConnTable::new`].
    pub fn idle_timeout(&self) -> u64 {
        self.idle_timeout
    }

    /// Bytes the table occupies, all allocated at construction.
    pub fn memory_bytes(&self) -> usize {
        size_of_val(&*self.sets)
    }

    /// The counters so far.
    pub fn stats(&self) -> ConnTableStats {
        self.stats
    }

    #[inline(always)]
    fn ticks(&self, now: u64) -> u32 {
        (now >> self.tick_shift) as u32
    }

    /// The set and the signature of a flow hash, through this table's keyed mix.
    #[inline(always)]
    fn place(&self, hash: u64) -> (usize, u16) {
        let placed = keyed_mix(hash, self.placement_key);
        (placed as usize & self.set_mask, signature(placed))
    }

    /// Starts loading the set `hash` maps to. Call it for the packets a few places ahead in
    /// the burst, so the line arrives before their [`ConnTable::lookup`].
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(set) = self.sets.get(self.place(hash).0) {
            prefetch_line(&set.meta);
        }
    }

    /// Second prefetch stage: once [`ConnTable::prefetch`]ed metadata has arrived, starts
    /// loading the entries whose signature matches `hash` (almost always one or none). A
    /// burst pipeline calls `prefetch` for all packets, then this, then `lookup_hinted` with
    /// the ways this returns, which spares the lookup comparing the signatures again.
    #[inline]
    pub fn prefetch_entries(&self, hash: u64) -> u8 {
        let (index, sig) = self.place(hash);
        let Some(set) = self.sets.get(index) else {
            return 0;
        };
        let ways = set.ways_with(sig);
        let mut candidates = ways;
        while candidates != 0 {
            if let Some(entry) = set.entries.get(candidates.trailing_zeros() as usize) {
                // An entry may straddle two lines: fetch the line of its last byte too.
                let first = entry as *const Entry;
                prefetch_line(first);
                prefetch_line(first.cast::<u8>().wrapping_add(size_of::<Entry>() - 1));
            }
            candidates &= candidates - 1;
        }
        ways as u8
    }

    /// The flow's value, refreshing its last-seen time to `now`. A flow idle for longer than
    /// the timeout is a miss, and is freed (counted as an expiry). `hash` is
    /// `key.flow_hash()` (or `fragment_hash()`: whichever the caller keys the flow by).
    #[inline]
    pub fn lookup(&mut self, key: &FiveTuple, hash: u64, now: u64) -> Option<FlowValue> {
        let (index, sig) = self.place(hash);
        let way = self.sets.get(index).and_then(|set| set.find(sig, key));
        self.take_hit(index, way, now)
    }

    /// [`ConnTable::lookup`], trying first the `ways` that [`ConnTable::prefetch_entries`]
    /// returned for `hash`. They may be stale (an insert since then may have reused a way or
    /// added the flow), so a hinted way counts only if its signature and key still match,
    /// and anything else falls back to the full lookup: the answer is always `lookup`'s.
    #[inline]
    pub fn lookup_hinted(
        &mut self,
        key: &FiveTuple,
        hash: u64,
        ways: u8,
        now: u64,
    ) -> Option<FlowValue> {
        let (index, sig) = self.place(hash);
        if let Some(set) = self.sets.get(index) {
            let mut candidates = u32::from(ways);
            while candidates != 0 {
                let way = candidates.trailing_zeros() as usize;
                if set.meta.sig.get(way) == Some(&sig)
                    && set.entries.get(way).is_some_and(|e| e.key == *key)
                {
                    return self.take_hit(index, Some(way), now);
                }
                candidates &= candidates - 1;
            }
        }
        self.lookup(key, hash, now)
    }

    /// Counts a lookup's outcome: a live flow is refreshed and returned; an expired one is
    /// freed and, like no flow at all, a miss.
    #[inline(always)]
    fn take_hit(&mut self, index: usize, way: Option<usize>, now: u64) -> Option<FlowValue> {
        let now = self.ticks(now);
        let timeout = self.timeout_ticks;
        let found = way.and_then(|way| Some((way, self.sets.get_mut(index)?)));
        let Some((way, set)) = found else {
            self.stats.misses += 1;
            return None;
        };
        let (Some(last_seen), Some(entry)) =
            (set.meta.last_seen.get_mut(way), set.entries.get(way))
        else {
            self.stats.misses += 1;
            return None;
        };
        if age(now, *last_seen) > timeout {
            set.meta.sig[way] = EMPTY;
            self.len -= 1;
            self.stats.expiries += 1;
            self.stats.misses += 1;
            return None;
        }
        *last_seen = now;
        set.meta.confirmed |= 1 << way;
        self.stats.hits += 1;
        Some(entry.value())
    }

    /// The flow's value if it is tracked and live at `now`, without refreshing it or
    /// counting anything: for the control plane and tests.
    pub fn peek(&self, key: &FiveTuple, hash: u64, now: u64) -> Option<FlowValue> {
        let (index, sig) = self.place(hash);
        let set = self.sets.get(index)?;
        let way = set.find(sig, key)?;
        let last_seen = *set.meta.last_seen.get(way)?;
        if age(self.ticks(now), last_seen) > self.timeout_ticks {
            return None;
        }
        set.entries.get(way).map(Entry::value)
    }

    /// Tracks `key` with `value` as of `now`. A tracked flow is updated in place (and is
    /// confirmed: it has been seen again). A new flow takes, in order of preference, a free
    /// way of its set, the way of an expired flow, the way of the least recently seen
    /// unconfirmed flow, or that of the least recently seen confirmed one.
    #[inline]
    pub fn insert(
        &mut self,
        key: &FiveTuple,
        hash: u64,
        now: u64,
        value: FlowValue,
    ) -> InsertResult {
        let now = self.ticks(now);
        let timeout = self.timeout_ticks;
        let (index, sig) = self.place(hash);
        let Some(set) = self.sets.get_mut(index) else {
            // Unreachable by the `set_mask` invariant; behaves as an immediate eviction.
            return InsertResult::Evicted { victim: *key };
        };

        if let Some(way) = set.find(sig, key) {
            let expired = age(now, set.meta.last_seen[way]) > timeout;
            set.meta.last_seen[way] = now;
            set.entries[way] = Entry::new(key, value);
            if expired {
                set.meta.confirmed &= !(1 << way);
                self.stats.expiries += 1;
                self.stats.inserts += 1;
                return InsertResult::Inserted;
            }
            set.meta.confirmed |= 1 << way;
            return InsertResult::Updated;
        }

        // The oldest flow overall (if it expired, its way is as good as free) and the oldest
        // of each class, in one pass over the metadata line.
        let mut oldest = [0usize; 2];
        let mut oldest_age = [0u32; 2];
        let mut seen = [false; 2];
        let mut free = None;
        for (way, (&s, &last_seen)) in set.meta.sig.iter().zip(&set.meta.last_seen).enumerate() {
            if s == EMPTY {
                free = Some(way);
                break;
            }
            let class = usize::from(set.meta.confirmed >> way & 1);
            let a = age(now, last_seen);
            if !seen[class] || a > oldest_age[class] {
                seen[class] = true;
                oldest[class] = way;
                oldest_age[class] = a;
            }
        }
        let expired = (0..2).find(|&c| seen[c] && oldest_age[c] > timeout);

        let (way, result) = match (free, expired) {
            (Some(way), _) => {
                self.len += 1;
                (way, InsertResult::Inserted)
            }
            (None, Some(class)) => {
                self.stats.expiries += 1;
                (oldest[class], InsertResult::Inserted)
            }
            (None, None) => {
                // A one-packet flow gives way first: a flood of new flows (spoofed SYNs)
                // churns among its own entries and leaves established flows alone.
                let class = if seen[0] { 0 } else { 1 };
                self.stats.evictions += 1;
                if class == 1 {
                    self.stats.confirmed_evictions += 1;
                }
                let victim = set.entries[oldest[class]].key;
                (oldest[class], InsertResult::Evicted { victim })
            }
        };
        set.meta.sig[way] = sig;
        set.meta.last_seen[way] = now;
        set.meta.confirmed &= !(1 << way);
        set.entries[way] = Entry::new(key, value);
        self.stats.inserts += 1;
        result
    }

    /// Moves a tracked flow to another backend (after the caller found its backend stale),
    /// leaving its VIP, flags and last-seen time alone. `false` if the flow is not tracked.
    pub fn update_backend(&mut self, key: &FiveTuple, hash: u64, backend: u32) -> bool {
        let (index, sig) = self.place(hash);
        let Some(set) = self.sets.get_mut(index) else {
            return false;
        };
        match set.find(sig, key) {
            Some(way) => {
                set.entries[way].backend = backend;
                true
            }
            None => false,
        }
    }

    /// Stops tracking a flow (e.g. after its TCP RST); returns what it held.
    pub fn remove(&mut self, key: &FiveTuple, hash: u64) -> Option<FlowValue> {
        let (index, sig) = self.place(hash);
        let set = self.sets.get_mut(index)?;
        let way = set.find(sig, key)?;
        set.meta.sig[way] = EMPTY;
        self.len -= 1;
        set.entries.get(way).map(Entry::value)
    }

    /// Frees the expired flows of the next `budget` sets (8 flows and one cache line of
    /// metadata each), continuing where the previous call stopped; returns how many it
    /// freed. A worker calls it when a poll finds no packets.
    pub fn expire_some(&mut self, now: u64, budget: usize) -> usize {
        let now = self.ticks(now);
        let timeout = self.timeout_ticks;
        let mut freed = 0;
        for _ in 0..budget.min(self.sets.len()) {
            if let Some(set) = self.sets.get_mut(self.sweep_cursor) {
                for (sig, &last_seen) in set.meta.sig.iter_mut().zip(&set.meta.last_seen) {
                    if *sig != EMPTY && age(now, last_seen) > timeout {
                        *sig = EMPTY;
                        freed += 1;
                    }
                }
            }
            self.sweep_cursor = (self.sweep_cursor + 1) & self.set_mask;
        }
        self.len -= freed;
        self.stats.expiries += freed as u64;
        freed
    }
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("idle_timeout", &self.idle_timeout)
            .field("tick_shift", &self.tick_shift)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::proto;
    use std::net::Ipv4Addr;

    /// The word-at-a-time compare against one way at a time, on signatures that stress the
    /// carries: 0, 0x7fff, 0x8000, 0xffff and neighbours, in every arrangement of a few.
    #[test]
    fn ways_with_matches_a_compare_per_way() {
        let values = [0u16, 1, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x1234];
        let mut set = Set::EMPTY;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            for sig in set.meta.sig.iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *sig = values[(state >> 61) as usize];
            }
            for &probe in &values {
                let expected = set
                    .meta
                    .sig
                    .iter()
                    .enumerate()
                    .fold(0u32, |m, (way, &s)| m | u32::from(s == probe) << way);
                assert_eq!(
                    set.ways_with(probe),
                    expected,
                    "{:x?} {probe:x}",
                    set.meta.sig
                );
            }
        }
    }

    /// The `i`th test flow: client 10.x.y.z (from `i`) to one VIP. `index_of` inverts it.
    fn flow(i: u32) -> FiveTuple {
        FiveTuple::from_v4(
            Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)),
            Ipv4Addr::new(192, 0, 2, 10),
            1024 + (i >> 24) as u16,
            443,
            proto::TCP,
        )
    }

    fn index_of(key: &FiveTuple) -> u32 {
        let [_, a, b, c] = match key.src_addr() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            std::net::IpAddr::V6(_) => panic!("test flows are IPv4"),
        };
        u32::from_be_bytes([0, a, b, c]) | u32::from(key.src_port - 1024) << 24
    }

    fn value(backend: u32) -> FlowValue {
        FlowValue {
            backend,
            flags: 0x5a,
        }
    }

    /// Occupied ways, counted from the metadata rather than the `len` counter.
    fn occupied(table: &ConnTable) -> usize {
        table
            .sets
            .iter()
            .map(|s| s.meta.sig.iter().filter(|&&sig| sig != EMPTY).count())
            .sum()
    }

    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn insert_lookup_update_remove() {
        let mut table = ConnTable::new(1024, 1000).unwrap();
        let a = flow(1);
        let b = flow(2);
        let (ha, hb) = (a.flow_hash(), b.flow_hash());

        assert_eq!(table.lookup(&a, ha, 0), None);
        assert_eq!(table.insert(&a, ha, 0, value(7)), InsertResult::Inserted);
        assert_eq!(table.insert(&b, hb, 0, value(8)), InsertResult::Inserted);
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup(&a, ha, 10), Some(value(7)));
        assert_eq!(table.lookup(&b, hb, 10), Some(value(8)));

        assert_eq!(table.insert(&a, ha, 20, value(9)), InsertResult::Updated);
        assert_eq!(table.lookup(&a, ha, 30), Some(value(9)));
        assert!(table.update_backend(&a, ha, 11));
        assert_eq!(
            table.lookup(&a, ha, 40),
            Some(FlowValue {
                backend: 11,
                ..value(9)
            })
        );
        assert_eq!(table.len(), 2);

        assert_eq!(
            table.remove(&a, ha),
            Some(FlowValue {
                backend: 11,
                ..value(9)
            })
        );
        assert_eq!(table.remove(&a, ha), None);
        assert!(!table.update_backend(&a, ha, 12));
        assert_eq!(table.lookup(&a, ha, 50), None);
        assert_eq!(table.lookup(&b, hb, 50), Some(value(8)));
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.stats(),
            ConnTableStats {
                hits: 5,
                misses: 2,
                inserts: 2,
                evictions: 0,
                confirmed_evictions: 0,
                expiries: 0
            }
        );
    }

    #[test]
    fn a_signature_match_alone_is_not_a_hit() {
        // Same hash, different keys: the full key decides.
        let mut table = ConnTable::new(8, 1000).unwrap();
        let hash = 0xabcd_0000_0000_0000;
        assert_eq!(
            table.insert(&flow(1), hash, 0, value(1)),
            InsertResult::Inserted
        );
        assert_eq!(
            table.insert(&flow(2), hash, 0, value(2)),
            InsertResult::Inserted
        );
        assert_eq!(table.lookup(&flow(3), hash, 0), None);
        assert_eq!(table.lookup(&flow(2), hash, 0), Some(value(2)));
        assert_eq!(table.lookup(&flow(1), hash, 0), Some(value(1)));
    }

    #[test]
    fn idle_flows_expire_on_lookup() {
        let mut table = ConnTable::new(64, 100).unwrap();
        let (a, b) = (flow(1), flow(2));
        table.insert(&a, a.flow_hash(), 0, value(1));
        table.insert(&b, b.flow_hash(), 0, value(2));

        // Seen at 60: the timeout runs from there.
        assert_eq!(table.lookup(&a, a.flow_hash(), 60), Some(value(1)));
        // Idle exactly the timeout is still live; one more tick is not.
        assert_eq!(table.peek(&b, b.flow_hash(), 100), Some(value(2)));
        assert_eq!(table.peek(&b, b.flow_hash(), 101), None);
        assert_eq!(table.len(), 2, "peek frees nothing");
        assert_eq!(table.lookup(&b, b.flow_hash(), 101), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(&a, a.flow_hash(), 160), Some(value(1)));
        assert_eq!(table.lookup(&a, a.flow_hash(), 261), None);
        assert!(table.is_empty());
        let stats = table.stats();
        assert_eq!((stats.expiries, stats.hits, stats.misses), (2, 2, 2));
        assert_eq!(occupied(&table), 0);

        // An expired flow that is inserted again counts as new.
        assert_eq!(
            table.insert(&a, a.flow_hash(), 300, value(3)),
            InsertResult::Inserted
        );
        assert_eq!(
            table.insert(&a, a.flow_hash(), 500, value(4)),
            InsertResult::Inserted
        );
        assert_eq!(table.stats().expiries, 3);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_used_flow() {
        // Eight ways, one set: every flow collides.
        let mut table = ConnTable::new(WAYS, 1000).unwrap();
        assert_eq!(table.capacity(), WAYS);
        for i in 0..WAYS as u32 {
            let f = flow(i);
            assert_eq!(
                table.insert(&f, f.flow_hash(), u64::from(i), value(i)),
                InsertResult::Inserted
            );
        }
        // Flow 0 is the oldest insert but was just used; flow 1 is now the LRU.
        assert!(table.lookup(&flow(0), flow(0).flow_hash(), 10).is_some());
        let new = flow(100);
        assert_eq!(
            table.insert(&new, new.flow_hash(), 11, value(100)),
            InsertResult::Evicted { victim: flow(1) }
        );
        assert_eq!(table.peek(&flow(1), flow(1).flow_hash(), 12), None);
        for i in [0, 2, 3, 4, 5, 6, 7, 100] {
            assert_eq!(
                table.peek(&flow(i), flow(i).flow_hash(), 12),
                Some(value(i))
            );
        }
        // Next in line: flow 2.
        let newer = flow(101);
        assert_eq!(
            table.insert(&newer, newer.flow_hash(), 12, value(101)),
            InsertResult::Evicted { victim: flow(2) }
        );
        assert_eq!(table.len(), WAYS);
        assert_eq!(table.stats().evictions, 2);
        assert_eq!(table.stats().expiries, 0);
    }

    #[test]
    fn a_full_set_reuses_an_expired_way_before_evicting() {
        let mut table = ConnTable::new(WAYS, 100).unwrap();
        for i in 0..WAYS as u32 {
            table.insert(&flow(i), flow(i).flow_hash(), 0, value(i));
        }
        for i in 1..WAYS as u32 {
            assert!(table.lookup(&flow(i), flow(i).flow_hash(), 90).is_some());
        }
        // Flow 0 has been idle 150 > 100 at time 150; the others 60.
        let new = flow(100);
        assert_eq!(
            table.insert(&new, new.flow_hash(), 150, value(100)),
            InsertResult::Inserted
        );
        assert_eq!(table.stats().evictions, 0);
        assert_eq!(table.stats().expiries, 1);
        assert_eq!(table.peek(&flow(0), flow(0).flow_hash(), 150), None);
        assert_eq!(table.peek(&new, new.flow_hash(), 150), Some(value(100)));
    }

    #[test]
    fn the_stored_timestamp_wraps_correctly() {
        // Shift 0 (timeout below 2^16): stored ticks are `now as u32` and wrap at 2^32.
        let mut table = ConnTable::new(WAYS, 1000).unwrap();
        assert_eq!(table.tick_shift, 0);
        let base = (7u64 << 32) + u64::from(u32::MAX) - 10;
        let f = flow(1);
        let h = f.flow_hash();
        table.insert(&f, h, base, value(1));
        // Stamped at u32::MAX - 10, read at small u32 values: the age is still right.
        assert_eq!(table.peek(&f, h, base + 1000), Some(value(1)));
        assert_eq!(table.peek(&f, h, base + 1001), None);
        assert_eq!(table.lookup(&f, h, base + 500), Some(value(1)));
        assert_eq!(table.peek(&f, h, base + 1500), Some(value(1)));
        assert_eq!(table.lookup(&f, h, base + 1501), None);
        assert_eq!(table.stats().expiries, 1);

        // LRU order must follow real age, not u32 order: a flow stamped just before the wrap
        // (a large u32) is older than flows stamped after it (small u32s).
        let mut table = ConnTable::new(WAYS, 1000).unwrap();
        table.insert(&flow(0), flow(0).flow_hash(), base, value(0));
        for i in 1..WAYS as u32 {
            let f = flow(i);
            table.insert(&f, f.flow_hash(), base + 20 + u64::from(i), value(i));
        }
        let late = flow(50);
        assert_eq!(
            table.insert(&late, late.flow_hash(), base + 30, value(50)),
            InsertResult::Evicted { victim: flow(0) }
        );
    }

    #[test]
    fn the_stored_timestamp_wraps_correctly_with_coarse_ticks() {
        // 60 s of 3 GHz TSC: ticks of 2^22 cycles; the stored u32 wraps every 2^54 cycles.
        let timeout = 60 * 3_000_000_000u64;
        let mut table = ConnTable::new(1024, timeout).unwrap();
        assert_eq!(table.tick_shift, 22);
        assert!((1 << 15..1 << 16).contains(&table.timeout_ticks));
        let wrap = 1u64 << (32 + 22);
        let f = flow(1);
        let h = f.flow_hash();
        table.insert(&f, h, wrap - 1_000_000, value(1));
        assert_eq!(table.peek(&f, h, wrap + timeout / 2), Some(value(1)));
        assert_eq!(
            table.peek(&f, h, wrap + timeout - 30_000_000),
            Some(value(1))
        );
        assert_eq!(table.peek(&f, h, wrap + timeout), None);
        // Expiry is within two ticks of the exact timeout.
        let tick = 1u64 << 22;
        assert_eq!(
            table.peek(&f, h, wrap - 1_000_000 + timeout - 2 * tick),
            Some(value(1))
        );
        assert_eq!(
            table.peek(&f, h, wrap - 1_000_000 + timeout + 2 * tick),
            None
        );
    }

    #[test]
    fn a_clock_slightly_behind_counts_as_age_zero() {
        let mut table = ConnTable::new(WAYS, 100).unwrap();
        let f = flow(1);
        table.insert(&f, f.flow_hash(), 1_000_000, value(1));
        assert_eq!(table.lookup(&f, f.flow_hash(), 999_990), Some(value(1)));
    }

    #[test]
    fn the_sweeper_frees_idle_flows_incrementally() {
        let mut table = ConnTable::new(16384, 100).unwrap();
        let sets = table.sets.len();
        for i in 0..2000 {
            table.insert(&flow(i), flow(i).flow_hash(), 0, value(i));
        }
        assert_eq!(table.len(), 2000);
        let live = (0..2000).step_by(3);
        for i in live.clone() {
            assert!(table.lookup(&flow(i), flow(i).flow_hash(), 80).is_some());
        }
        let refreshed = live.clone().count();

        // Nothing is idle for longer than 100 at 100.
        assert_eq!(table.expire_some(100, sets), 0);
        // Half the sets, then the rest: everything not refreshed goes, once.
        let first_half = table.expire_some(150, sets / 2);
        assert!(first_half > 0 && first_half < 2000 - refreshed);
        let second_half = table.expire_some(150, sets / 2);
        assert_eq!(first_half + second_half, 2000 - refreshed);
        assert_eq!(table.expire_some(150, sets * 10), 0);
        assert_eq!(table.len(), refreshed);
        assert_eq!(table.len(), occupied(&table));
        assert_eq!(table.stats().expiries, (2000 - refreshed) as u64);
        for i in live {
            assert_eq!(
                table.peek(&flow(i), flow(i).flow_hash(), 150),
                Some(value(i))
            );
        }
        // A budget of zero does nothing; then the refreshed ones go too.
        assert_eq!(table.expire_some(181, 0), 0);
        assert_eq!(table.expire_some(181, sets), refreshed);
        assert!(table.is_empty());
    }

    #[test]
    fn a_million_flows_fit_in_56_bytes_each() {
        assert_eq!(size_of::<Entry>(), 48);
        assert_eq!(size_of::<Meta>(), 64);
        assert_eq!(size_of::<Set>(), 448);
        assert_eq!(std::mem::align_of::<Set>(), 64);
        assert_eq!(BYTES_PER_FLOW, 56);

        let table = ConnTable::new(DEFAULT_CAPACITY, 1000).unwrap();
        assert_eq!(table.capacity(), 1 << 20);
        assert_eq!(table.memory_bytes(), 56 << 20);
        assert!(table.memory_bytes() / table.capacity() <= 64);
        assert_eq!(
            table.sets.as_ptr() as usize % 64,
            0,
            "sets start on a cache line"
        );
    }

    #[test]
    fn capacity_is_rounded_up_to_a_power_of_two() {
        assert_eq!(ConnTable::new(1, 1).unwrap().capacity(), WAYS);
        assert_eq!(ConnTable::new(1000, 1).unwrap().capacity(), 1024);
        assert_eq!(ConnTable::new(1024, 1).unwrap().capacity(), 1024);
        assert_eq!(ConnTable::new(1025, 1).unwrap().capacity(), 2048);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert_eq!(
            ConnTable::new(0, 1000).unwrap_err(),
            ConnTableError::ZeroCapacity
        );
        assert_eq!(
            ConnTable::new(1024, 0).unwrap_err(),
            ConnTableError::ZeroIdleTimeout
        );
        assert_eq!(
            ConnTable::new(MAX_CAPACITY + 1, 1000).unwrap_err(),
            ConnTableError::CapacityTooLarge {
                requested: MAX_CAPACITY + 1
            }
        );
        let message = ConnTable::new(0, 1).unwrap_err().to_string();
        assert!(message.contains("at least 1 flow"), "{message}");
    }

    #[test]
    fn timeouts_of_any_size_get_16_bits_of_resolution() {
        for timeout in [1, 100, 65_535, 65_536, 1 << 40, u64::MAX] {
            let table = ConnTable::new(WAYS, timeout).unwrap();
            let ticks = u64::from(table.timeout_ticks);
            assert!(ticks < 1 << 16, "{timeout}: {ticks}");
            assert!(timeout < 1 << 16 || ticks >= 1 << 15, "{timeout}: {ticks}");
            assert_eq!(
                ticks << table.tick_shift,
                timeout >> table.tick_shift << table.tick_shift
            );
        }
    }

    #[test]
    fn prefetching_changes_nothing() {
        let mut table = ConnTable::new(64, 100).unwrap();
        for hash in [0, 1, u64::MAX, 0xdead_beef] {
            table.prefetch(hash);
            table.prefetch_entries(hash);
        }
        let f = flow(1);
        table.insert(&f, f.flow_hash(), 0, value(1));
        table.prefetch(f.flow_hash());
        table.prefetch_entries(f.flow_hash());
        assert_eq!(table.lookup(&f, f.flow_hash(), 1), Some(value(1)));
        assert_eq!(table.stats().hits, 1);
    }

    /// Random flows into 8-way sets overflow like Poisson(8 x load) balls in bins of 8: at
    /// half load 0.84 % of inserts evict, at 90 % load 10.1 %. This is what sizing the table
    /// at twice the expected concurrent flows buys.
    #[test]
    fn eviction_rate_matches_the_balls_in_bins_prediction() {
        for (load, predicted) in [(0.5, 0.00841), (0.9, 0.10069)] {
            let mut table = ConnTable::new(1 << 16, u64::MAX).unwrap();
            let n = (load * table.capacity() as f64) as u32;
            for i in 0..n {
                let f = flow(i);
                table.insert(&f, f.flow_hash(), u64::from(i), value(i));
            }
            let rate = table.stats().evictions as f64 / f64::from(n);
            assert!(
                (rate - predicted).abs() < predicted * 0.15,
                "load {load}: {rate:.5} evicted, predicted {predicted}"
            );
            assert_eq!(table.len() as u64, u64::from(n) - table.stats().evictions);
        }
    }

    /// Hints taken a while before the lookup go stale: flows are inserted, replaced, removed
    /// and expire in between. Two tables given the same operations, one looked up plainly
    /// and one with the stale hints, must answer and count alike.
    #[test]
    fn hinted_lookups_answer_like_plain_ones_even_with_stale_hints() {
        // A small table and pool, so sets fill, evict and reuse ways often.
        let mut plain = ConnTable::with_placement_key(64, 3000, 7).unwrap();
        let mut hinted = ConnTable::with_placement_key(64, 3000, 7).unwrap();
        let pool: Vec<(FiveTuple, u64)> =
            (0..512).map(|i| (flow(i), flow(i).flow_hash())).collect();
        let mut rng = SplitMix(11);
        let mut hints = vec![0u8; pool.len()];
        let (mut hinted_hits, mut stale) = (0u64, 0u64);
        for now in 0..400_000u64 {
            let r = rng.next();
            let i = (r as usize) % pool.len();
            let (key, hash) = &pool[i];
            match (r >> 32) % 8 {
                0..=2 => hints[i] = hinted.prefetch_entries(*hash),
                3..=5 => {
                    let fresh = hinted.prefetch_entries(*hash);
                    stale += u64::from(fresh != hints[i]);
                    let expected = plain.lookup(key, *hash, now);
                    let got = hinted.lookup_hinted(key, *hash, hints[i], now);
                    assert_eq!(got, expected, "flow {i} at {now}");
                    hinted_hits += u64::from(got.is_some() && hints[i] != 0);
                }
                6 => {
                    let v = value((r >> 40) as u32);
                    assert_eq!(
                        plain.insert(key, *hash, now, v),
                        hinted.insert(key, *hash, now, v)
                    );
                }
                _ => assert_eq!(plain.remove(key, *hash), hinted.remove(key, *hash)),
            }
        }
        assert_eq!(plain.stats(), hinted.stats());
        assert_eq!(plain.len(), hinted.len());
        // The test exercised both kinds of hint.
        assert!(hinted_hits > 1000 && stale > 1000, "{hinted_hits} {stale}");
    }

    /// Ten million random operations on a small table (about 3 s in a debug build): the
    /// storage never moves or grows, every hit returns the value last stored for that flow,
    /// and the counters add up.
    #[test]
    fn no_allocation_and_consistent_answers_under_random_operations() {
        const OPS: u64 = 10_000_000;
        let mut table = ConnTable::new(4096, 20_000).unwrap();
        let (ptr, sets) = (table.sets.as_ptr(), table.sets.len());
        let pool: Vec<(FiveTuple, u64)> = (0..16_384)
            .map(|i| (flow(i), flow(i).flow_hash()))
            .collect();
        // What each pool flow was last given; a superset of what the table holds, since
        // the table drops expired flows silently.
        let mut model: Vec<Option<FlowValue>> = vec![None; pool.len()];
        let mut rng = SplitMix(7);
        let (mut lookups, mut removals) = (0u64, 0u64);
        for now in 0..OPS {
            let r = rng.next();
            let i = (r as usize) % pool.len();
            let (key, hash) = &pool[i];
            match (r >> 32) % 16 {
                0..=9 => {
                    lookups += 1;
                    match table.lookup(key, *hash, now) {
                        Some(v) => assert_eq!(model[i], Some(v), "flow {i}"),
                        None => model[i] = None,
                    }
                }
                10..=13 => {
                    let v = value((r >> 40) as u32);
                    if let InsertResult::Evicted { victim } = table.insert(key, *hash, now, v) {
                        assert!(model[index_of(&victim) as usize].take().is_some());
                    }
                    model[i] = Some(v);
                }
                14 => {
                    if let Some(v) = table.remove(key, *hash) {
                        removals += 1;
                        assert_eq!(model[i], Some(v));
                    }
                    model[i] = None;
                }
                _ => {
                    let backend = (r >> 40) as u32;
                    if table.update_backend(key, *hash, backend) {
                        let v = model[i].as_mut().expect("updated flow is tracked");
                        v.backend = backend;
                    }
                }
            }
            if now % 1024 == 0 {
                table.expire_some(now, 16);
            }
        }
        assert_eq!(table.sets.as_ptr(), ptr);
        assert_eq!(table.sets.len(), sets);
        let s = table.stats();
        assert_eq!(s.hits + s.misses, lookups);
        assert_eq!(table.len(), occupied(&table));
        assert_eq!(
            table.len() as u64,
            s.inserts - s.evictions - s.expiries - removals
        );
        assert!(model.iter().flatten().count() >= table.len());
        assert!(s.hits > 0 && s.evictions > 0 && s.expiries > 0, "{s:?}");
    }

    /// Flows whose public flow hash puts them in one set of a 1024-set table, as an attacker
    /// would compute them offline.
    fn colliding_flows(count: usize) -> Vec<FiveTuple> {
        let mask = 1023;
        let target = flow(0).flow_hash() & mask;
        (0..)
            .map(flow)
            .filter(|f| f.flow_hash() & mask == target)
            .take(count)
            .collect()
    }

    #[test]
    fn crafted_flows_cannot_fill_one_set() {
        // 64 flows an unkeyed table (set = flow_hash & mask) would all put in one set: 56 of
        // them would be evicted. With the keyed placement they scatter over 1024 sets.
        let flows = colliding_flows(64);
        for key in [0, 1, 0x0123_4567_89ab_cdef, random_key()] {
            let mut table = ConnTable::with_placement_key(8192, 1000, key).unwrap();
            for (i, f) in flows.iter().enumerate() {
                table.insert(f, f.flow_hash(), 0, value(i as u32));
            }
            // 64 random balls in 1024 bins of 8 never overflow in practice (p < 1e-12).
            assert_eq!(table.stats().evictions, 0, "key {key:#x}");
            assert_eq!(table.len(), 64);
        }
    }

    #[test]
    fn two_tables_place_the_same_flows_differently() {
        let a = ConnTable::new(8192, 1000).unwrap();
        let b = ConnTable::new(8192, 1000).unwrap();
        assert_ne!(a.placement_key, b.placement_key);
        let differ = (0..64)
            .map(flow)
            .filter(|f| a.place(f.flow_hash()).0 != b.place(f.flow_hash()).0)
            .count();
        assert!(differ > 50, "only {differ} of 64 flows placed differently");
    }

    #[test]
    fn a_flood_of_new_flows_evicts_unconfirmed_flows_first() {
        // One set. Four established flows (seen twice), then 1000 one-packet flows. A timeout
        // below 2^16 keeps ticks exact, so the LRU order is the order of `now`.
        let mut table = ConnTable::new(WAYS, 60_000).unwrap();
        for i in 0..4 {
            table.insert(&flow(i), flow(i).flow_hash(), 0, value(i));
            assert!(table.lookup(&flow(i), flow(i).flow_hash(), 1).is_some());
        }
        for i in 1000..2000 {
            table.insert(&flow(i), flow(i).flow_hash(), u64::from(i), value(i));
        }
        for i in 0..4 {
            assert_eq!(
                table.peek(&flow(i), flow(i).flow_hash(), 3000),
                Some(value(i)),
                "established flow {i} was evicted by the flood"
            );
        }
        let s = table.stats();
        assert_eq!(s.evictions, 1000 - 4);
        assert_eq!(s.confirmed_evictions, 0);
        // The flood's survivors are its four most recent flows.
        for i in 1996..2000 {
            assert!(table.peek(&flow(i), flow(i).flow_hash(), 3000).is_some());
        }
    }

    #[test]
    fn a_set_full_of_confirmed_flows_still_takes_a_new_one() {
        let mut table = ConnTable::new(WAYS, 60_000).unwrap();
        for i in 0..WAYS as u32 {
            table.insert(&flow(i), flow(i).flow_hash(), u64::from(i), value(i));
            // An insert of a tracked flow confirms it as a lookup does.
            assert_eq!(
                table.insert(&flow(i), flow(i).flow_hash(), 10 + u64::from(i), value(i)),
                InsertResult::Updated
            );
        }
        // All confirmed: the least recently seen one (flow 0) gives way.
        assert_eq!(
            table.insert(&flow(100), flow(100).flow_hash(), 50, value(100)),
            InsertResult::Evicted { victim: flow(0) }
        );
        // Now the newcomer is the set's only unconfirmed flow: the next newcomer takes its
        // way, however recent, and the established flows stay.
        assert_eq!(
            table.insert(&flow(101), flow(101).flow_hash(), 60, value(101)),
            InsertResult::Evicted { victim: flow(100) }
        );
        let s = table.stats();
        assert_eq!((s.evictions, s.confirmed_evictions), (2, 1));
    }
}
