//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI'16, section 3.4), with weights.
//!
//! A [`MaglevTable`] maps a flow hash to a backend with one indexed load. The table is a pure
//! function of the set of `(backend key, weight)` pairs and the table size M: every fulcrum
//! instance behind the same ECMP group must pick the same backend for a flow, or a router
//! rehash sends the flow's packets to an instance that forwards them elsewhere and breaks the
//! connection. So the input order does not matter, the hash and its seeds are fixed, and a test
//! pins the fingerprint of a known table. docs/maglev.md describes the algorithm in full.
//!
//! The build, in the paper's terms:
//! * backend i's preference list is the permutation `offset_i + j * skip_i (mod M)`, with
//!   `offset_i = xxh64(key_i, OFFSET_SEED) mod M` and `skip_i = xxh64(key_i, SKIP_SEED) mod (M - 1) + 1`;
//!   M prime makes every such list visit every slot;
//! * each backend takes its next still-empty preferred slot in turn until the table is full.
//!
//! Weights change only how many turns a backend gets. Backend i is owed `M * w_i / W` slots
//! (W = sum of weights); it gets the floor of that, and the slots left over go to the largest
//! remainders (ties to the canonical order), so every share is within one slot of exact.
//! The turns are spread evenly: with Q the largest quota, backend i takes its k-th slot in round
//! `floor(k * Q / quota_i)`, and within a round backends go in canonical order. With equal
//! weights this is exactly the paper's round robin.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh64::xxh64;

/// The default number of table entries (a prime; the paper's "small" M).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// The largest table size accepted: the largest prime below 2^24 (a 64 MiB table).
pub const MAX_TABLE_SIZE: u32 = 16_777_213;

/// Seed of the xxh64 hash that places a backend's first preferred slot: the ASCII bytes of
/// "maglev-o" read as a big-endian integer. Part of the compatibility promise: never change it.
pub const OFFSET_SEED: u64 = 0x6d61_676c_6576_2d6f;

/// Seed of the xxh64 hash that sets the stride of a backend's preference list: the ASCII bytes
/// of "maglev-s" read as a big-endian integer. Part of the compatibility promise.
pub const SKIP_SEED: u64 = 0x6d61_676c_6576_2d73;

/// Below this many entries per backend (of weight 1, for weighted sets) rounding alone makes a
/// share more than 1% off its weight share.
pub const MIN_ENTRIES_PER_BACKEND: u64 = 100;

/// Tags the fingerprint's input so a later, different table layout cannot collide with it.
const FINGERPRINT_DOMAIN: &[u8] = b"fulcrum-maglev-v1";

/// One backend of a table: its canonical address string and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The canonical address string, e.g. "198.51.100.7" or "[2001:db8::7]:8080". Keys that
    /// are not addresses (names) are used verbatim.
    pub key: String,
    /// The backend's share of the table is proportional to this; 0 gives it no entries, so it
    /// receives no new flows (existing flows are the connection table's business).
    pub weight: u32,
}

impl MaglevBackend {
    pub fn new(key: impl Into<String>, weight: u32) -> MaglevBackend {
        MaglevBackend {
            key: key.into(),
            weight,
        }
    }
}

/// Why a table could not be built; each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error(
        "table size {size} is not prime; Maglev needs a prime number of entries (nearest primes: {below} and {above})"
    )]
    NotPrime { size: u32, below: u32, above: u32 },
    #[error("table size {size} is out of range; use a prime between 2 and {MAX_TABLE_SIZE} (default {DEFAULT_TABLE_SIZE})")]
    SizeOutOfRange { size: u32 },
    #[error(
        "table size {size} is smaller than the number of backends ({backends}); use a prime of at least {suggested} (100 entries per backend)"
    )]
    TableTooSmall {
        size: u32,
        backends: usize,
        suggested: u32,
    },
    #[error("backend {key} is listed twice; each backend key must be unique")]
    DuplicateKey { key: String },
    #[error("backend key {key:?} is not usable: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error(
        "backend key {key} is not in canonical form; write it as {canonical} (instances must agree on the exact key to build the same table)"
    )]
    NonCanonicalKey { key: String, canonical: String },
}

/// A built Maglev lookup table.
///
/// `entries()` holds M backend indices into `backends()`, which lists the backends sorted by key
/// (byte order). A table whose backends all have weight 0 (or that has none) has no entries, and
/// `lookup` returns `None` for every flow.
#[derive(Clone)]
pub struct MaglevTable {
    size: u32,
    backends: Vec<MaglevBackend>,
    entries: Box<[u32]>,
}

impl fmt::Debug for MaglevTable {
    // The entries are M numbers; printing them all would bury everything else in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("backends", &self.backends)
            .field("entries_len", &self.entries.len())
            .finish()
    }
}

/// A backend's preference list: slot `offset + j * skip (mod M)` for j = 0, 1, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Permutation {
    offset: u32,
    skip: u32,
}

impl Permutation {
    fn for_key(key: &str, size: u32) -> Permutation {
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

impl MaglevTable {
    /// Builds the table for `backends` (in any order; keys must be unique) with `size` entries.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Result<MaglevTable, MaglevError> {
        check_size(size)?;
        for backend in backends {
            check_key(&backend.key)?;
        }
        if (size as usize) < backends.len() {
            return Err(MaglevError::TableTooSmall {
                size,
                backends: backends.len(),
                suggested: suggested_size(backends.len()),
            });
        }
        // Sorting references keyed by the first sixteen bytes settles most comparisons without
        // a string compare (every IPv4 key fits in sixteen bytes).
        let mut order: Vec<(u128, &MaglevBackend)> = backends
            .iter()
            .map(|backend| (key_prefix(&backend.key), backend))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
        if let Some(pair) = order.windows(2).find(|pair| pair[0].1.key == pair[1].1.key) {
            return Err(MaglevError::DuplicateKey {
                key: pair[0].1.key.clone(),
            });
        }
        let sorted: Vec<MaglevBackend> = order.iter().map(|&(_, b)| b.clone()).collect();

        let quotas = quotas(&sorted, size);
        let entries: Box<[u32]> = if quotas.iter().all(|&quota| quota == 0) {
            Box::new([])
        } else {
            let permutations: Vec<Permutation> = sorted
                .iter()
                .map(|backend| Permutation::for_key(&backend.key, size))
                .collect();
            let mut entries = vec![0u32; size as usize].into_boxed_slice();
            fill(&permutations, &quotas, size, &mut entries);
            entries
        };
        Ok(MaglevTable {
            size,
            backends: sorted,
            entries,
        })
    }

    /// The backends sorted by key; `lookup` and `entries` index into this slice.
    pub fn backends(&self) -> &[MaglevBackend] {
        &self.backends
    }

    /// The index into `backends()` of the backend for a flow, or `None` when no backend has a
    /// weight above 0. Only the upper 32 bits of `flow_hash` are used: they are scaled to
    /// [0, M) by a multiply and a shift, so no division happens per packet.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> Option<u32> {
        let slot = ((flow_hash >> 32) * u64::from(self.size)) >> 32;
        self.entries.get(slot as usize).copied()
    }

    /// The number of entries M the table was built with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The table: M indices into `backends()`, or an empty slice when no backend has a weight
    /// above 0.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// How many entries each backend owns, in `backends()` order.
    pub fn entry_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.backends.len()];
        for &entry in self.entries.iter() {
            if let Some(count) = counts.get_mut(entry as usize) {
                *count += 1;
            }
        }
        counts
    }

    /// The entries a backend is owed by its weight, `M * weight / total weight` (not rounded).
    pub fn weight_share(&self, index: usize) -> f64 {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        match self.backends.get(index) {
            Some(backend) if total > 0 => {
                f64::from(self.size) * f64::from(backend.weight) / total as f64
            }
            _ => 0.0,
        }
    }

    /// The SHA-256 (lowercase hex) of the table as lookups see it: M, the keys in canonical
    /// order and the entries (docs/maglev.md gives the exact byte layout). Equal fingerprints
    /// mean equal forwarding decisions.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        hasher.update(self.size.to_le_bytes());
        hasher.update((self.backends.len() as u32).to_le_bytes());
        for backend in &self.backends {
            hasher.update((backend.key.len() as u32).to_le_bytes());
            hasher.update(backend.key.as_bytes());
        }
        hasher.update((self.entries.len() as u32).to_le_bytes());
        // Feeding the hasher in blocks, not per entry, keeps a 655373-entry table fast.
        let mut block = [0u8; 4096];
        for chunk in self.entries.chunks(block.len() / 4) {
            for (bytes, entry) in block.chunks_exact_mut(4).zip(chunk) {
                bytes.copy_from_slice(&entry.to_le_bytes());
            }
            hasher.update(&block[..chunk.len() * 4]);
        }
        hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// A warning when rounding alone can put a backend's share more than 1% off its weight
    /// share: when M is below 100 x the backends with weight above 0 or, for weighted sets,
    /// when the lightest backend is owed fewer than 100 entries.
    pub fn warning(&self) -> Option<String> {
        let active: Vec<&MaglevBackend> = self.backends.iter().filter(|b| b.weight > 0).collect();
        let total: u64 = active.iter().map(|b| u64::from(b.weight)).sum();
        let lightest = active.iter().min_by_key(|b| b.weight)?;
        let size = u64::from(self.size);
        if size < MIN_ENTRIES_PER_BACKEND * active.len() as u64 {
            return Some(format!(
                "table size {} is less than 100 x {} backends: shares can be more than 1% off; use a prime of at least {}",
                self.size,
                active.len(),
                suggested_size(active.len()),
            ));
        }
        if size * u64::from(lightest.weight) < MIN_ENTRIES_PER_BACKEND * total {
            // The size at which the lightest backend is owed 100 entries.
            let needed = (MIN_ENTRIES_PER_BACKEND * total).div_ceil(u64::from(lightest.weight));
            let suggestion = u32::try_from(needed)
                .ok()
                .and_then(next_prime)
                .map_or_else(String::new, |p| format!("; use a prime of at least {p}"));
            return Some(format!(
                "backend {} (weight {}) is owed only {:.1} of {} entries: its share can be more than 1% off{}",
                lightest.key,
                lightest.weight,
                self.size as f64 * f64::from(lightest.weight) / total as f64,
                self.size,
                suggestion,
            ));
        }
        None
    }
}

/// The first sixteen bytes of a key as a big-endian number (zero-padded): ordering by it agrees
/// with ordering the keys bytewise, up to ties.
fn key_prefix(key: &str) -> u128 {
    let mut prefix = [0u8; 16];
    let bytes = key.as_bytes();
    let len = bytes.len().min(16);
    prefix[..len].copy_from_slice(&bytes[..len]);
    u128::from_be_bytes(prefix)
}

/// Whether `n` is prime, by trial division (at most 2,048 odd divisors for a 24-bit table).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    let mut divisor = 3u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 2;
    }
    true
}

/// The smallest prime >= `n`, if it fits in a u32.
pub fn next_prime(n: u32) -> Option<u32> {
    (n.max(2)..=u32::MAX).find(|&candidate| is_prime(candidate))
}

/// The largest prime <= `n`, if there is one.
pub fn prev_prime(n: u32) -> Option<u32> {
    (2..=n).rev().find(|&candidate| is_prime(candidate))
}

/// The default size when it gives 100 entries per backend, else the next prime that does.
fn suggested_size(backends: usize) -> u32 {
    let needed = u32::try_from(backends as u64 * MIN_ENTRIES_PER_BACKEND).unwrap_or(u32::MAX);
    next_prime(needed)
        .unwrap_or(MAX_TABLE_SIZE)
        .clamp(DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE)
}

fn check_size(size: u32) -> Result<(), MaglevError> {
    if !(2..=MAX_TABLE_SIZE).contains(&size) {
        return Err(MaglevError::SizeOutOfRange { size });
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime {
            size,
            below: prev_prime(size).unwrap_or(2),
            above: next_prime(size).unwrap_or(MAX_TABLE_SIZE),
        });
    }
    Ok(())
}

/// Rejects keys two instances could spell differently for the same backend.
fn check_key(key: &str) -> Result<(), MaglevError> {
    let invalid = |reason| MaglevError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    if key
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid("keys contain no spaces or control characters"));
    }
    // The IPv4 parser rejects leading zeros and short forms, so what it accepts is canonical;
    // the common case then needs no formatting.
    if key.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if key.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(invalid(
            "it looks like an IPv4 address but is not four decimal numbers 0-255 without leading zeros",
        ));
    }
    let canonical = |address: &dyn fmt::Display| {
        let mut text = StackText::default();
        // An address never overflows the buffer; an overflow makes the text differ, which
        // at worst reports a canonical key as non-canonical.
        let _ = fmt::write(&mut text, format_args!("{address}"));
        if text.as_bytes() == key.as_bytes() {
            Ok(())
        } else {
            Err(MaglevError::NonCanonicalKey {
                key: key.to_owned(),
                canonical: address.to_string(),
            })
        }
    };
    if let Ok(ip) = key.parse::<IpAddr>() {
        return canonical(&ip);
    }
    if let Ok(socket) = key.parse::<SocketAddr>() {
        return canonical(&socket);
    }
    Ok(())
}

/// Formats an address without a heap allocation; the longest one (an IPv6 socket address with
/// an embedded IPv4 address and a scope id) is 65 bytes.
struct StackText {
    bytes: [u8; 80],
    len: usize,
}

impl Default for StackText {
    fn default() -> StackText {
        StackText {
            bytes: [0; 80],
            len: 0,
        }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Each backend's number of entries: floor(M * w / W), plus one for the backends with the
/// largest remainders (ties to the lower canonical index) until the quotas sum to M.
fn quotas(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return vec![0; backends.len()];
    }
    let size = u64::from(size);
    // M and w are below 2^32, so M * w fits in a u64; the quotient is at most M.
    let mut quotas: Vec<u32> = backends
        .iter()
        .map(|b| (size * u64::from(b.weight) / total) as u32)
        .collect();
    let assigned: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let left_over = (size - assigned) as usize;
    if left_over > 0 {
        let mut by_remainder: Vec<(u64, u32)> = backends
            .iter()
            .enumerate()
            .map(|(index, b)| (size * u64::from(b.weight) % total, index as u32))
            .filter(|&(remainder, _)| remainder > 0)
            .collect();
        // The remainders sum to left_over * total and each is below total, so at least
        // left_over backends have one. Only which backends rank first matters, not their
        // order: a selection (O(N)) finds them, where a sort cost three times as long for
        // weights 1,2,3,4 (the remainders then come in no order).
        if left_over < by_remainder.len() {
            by_remainder
                .select_nth_unstable_by(left_over, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        for &(_, index) in by_remainder.iter().take(left_over) {
            if let Some(quota) = quotas.get_mut(index as usize) {
                *quota += 1;
            }
        }
    }
    quotas
}

/// Fills `entries` (M slots) from the preference lists: backend i takes `quotas[i]` slots,
/// its k-th in round floor(k * Q / quotas[i]) (Q = the largest quota), and within a round the
/// backends go in index order. The quotas must sum to M, and M must be prime.
fn fill(permutations: &[Permutation], quotas: &[u32], size: u32, entries: &mut [u32]) {
    fill_with(permutations, quotas, size, entries, Strategy::fast(size));
}

/// How [`Filling`] finds a backend's next empty slot; every strategy gives the same table (a
/// test checks), they differ only in speed.
#[derive(Clone, Copy, Debug)]
struct Strategy {
    /// Walk four probes per step ([`walk_four`]) rather than one.
    four_probes: bool,
    /// Search the empty slots instead of walking once no more than this many are left.
    tail_length: u32,
}

impl Strategy {
    fn fast(size: u32) -> Strategy {
        Strategy {
            four_probes: true,
            // Walking costs about M/E probes per slot when E slots are empty, searching them
            // costs E: they meet near sqrt(M).
            tail_length: size.isqrt().max(16),
        }
    }

    /// One probe at a time, as in the paper: the reference the others are tested against.
    #[cfg(test)]
    fn plain() -> Strategy {
        Strategy {
            four_probes: false,
            tail_length: 0,
        }
    }
}

fn fill_with(
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
    let active: Vec<u32> = (0..quotas.len() as u32)
        .filter(|&index| quotas[index as usize] > 0)
        .collect();
    let rounds = quotas.iter().copied().max().unwrap_or(0);
    // Equal weights, the common case: the first backends get one entry more than the rest,
    // and the calendar below reduces to the paper's plain round robin.
    // (Counted from the front, not binary-searched: with unequal weights the longest quotas
    // need not come first, and then this is not the equal-weights case at all.)
    let longer = active
        .iter()
        .take_while(|&&index| quotas[index as usize] == rounds)
        .count();
    let round_robin = active[longer..]
        .iter()
        .all(|&index| quotas[index as usize] + 1 == rounds);
    if round_robin {
        for round in 0..rounds {
            let due = if round + 1 < rounds {
                &active[..]
            } else {
                &active[..longer]
            };
            filling.take_turns(due);
        }
    } else {
        fill_by_calendar(&mut filling, quotas, rounds);
    }
}

/// The general schedule. Its turns are written out a chunk at a time, as backend indices, and
/// each chunk is filled in one loop, as equal weights are: a loop over a round's few turns
/// (about six for ten backends weighted 1,2,3,4) cost a third of the build in per-round work.
/// The turns come from [`QuotaGroups`] when few distinct quotas occur, else from the
/// [`Calendar`] scan or, for very unequal weights, a counting sort.
fn fill_by_calendar(filling: &mut Filling<'_>, quotas: &[u32], rounds: u32) {
    // Small enough to stay in L1 next to the bitmap, large enough that a chunk's overhead
    // does not show.
    const CHUNK: usize = 2048;
    if let Some(mut groups) = QuotaGroups::new(quotas, rounds) {
        // A round this long is filled straight from the cached list: copying it would cost
        // more than the call it saves.
        const LONG_ROUND: usize = 256;
        let mut turns: Vec<u32> = Vec::with_capacity(CHUNK + LONG_ROUND);
        while let Some(due) = groups.next_round() {
            if due.len() >= LONG_ROUND {
                filling.take_turns(&turns);
                turns.clear();
                filling.take_turns(due);
            } else {
                turns.extend_from_slice(due);
                if turns.len() >= CHUNK {
                    filling.take_turns(&turns);
                    turns.clear();
                }
            }
        }
        filling.take_turns(&turns);
        return;
    }
    let mut calendar = Calendar::new(quotas, rounds);
    if calendar.scan_length() > 4 * u64::from(filling.size) {
        // Very unequal weights make the scan long (heavy backends set many rounds, each
        // scanned in full); sorting the turns costs O(M + Q) whatever the weights.
        filling.take_turns(&turn_order_by_counting(quotas, rounds));
        return;
    }
    let mut turns = vec![0u32; CHUNK + quotas.len() + 1];
    loop {
        let count = calendar.next_turns(&mut turns, CHUNK);
        if count == 0 {
            break;
        }
        filling.take_turns(&turns[..count]);
    }
}

/// The general schedule when few distinct quotas occur (weights from a short list, the usual
/// case): backends with equal quotas share a phase (see [`Calendar`]), so a round costs one
/// phase step per quota to find which groups are due, and the round's turns are a list cached
/// per set of due groups, built once by one scan over the backends. Weights 1,2,3,4 give at
/// most eight groups (a weight's quota and that plus one); for N = 1000 and M = 65537 there
/// are five, and their 105 rounds need five distinct lists, where the plain calendar scans
/// all backends 105 times.
struct QuotaGroups {
    /// Per group, its quota and phase.
    quotas: Vec<u32>,
    phases: Vec<u32>,
    /// The backends with a quota above 0, with their group numbers.
    indices: Vec<u32>,
    groups: Vec<u8>,
    /// Per set of due groups (a bit per group), the round's turns once built.
    lists: Vec<Option<Vec<u32>>>,
    rounds: u32,
    round: u32,
}

impl QuotaGroups {
    /// At most 2^8 lists of at most N turns: beyond that a scan per round is as cheap.
    const MAX_GROUPS: usize = 8;

    /// `None` when there are more than [`QuotaGroups::MAX_GROUPS`] distinct quotas above 0, or
    /// fewer than two backends per quota: then a round's scan is no longer than stepping the
    /// groups, and a round's few turns cost more to copy from a cached list than to scan (a
    /// heavy backend among two or three light ones sets tens of thousands of rounds).
    fn new(quotas: &[u32], rounds: u32) -> Option<QuotaGroups> {
        let mut distinct: Vec<u32> = Vec::with_capacity(Self::MAX_GROUPS + 1);
        let mut indices = Vec::new();
        let mut groups = Vec::new();
        for (index, &quota) in quotas.iter().enumerate() {
            if quota == 0 {
                continue;
            }
            let group = match distinct.iter().position(|&known| known == quota) {
                Some(group) => group,
                None if distinct.len() < Self::MAX_GROUPS => {
                    distinct.push(quota);
                    distinct.len() - 1
                }
                None => return None,
            };
            indices.push(index as u32);
            groups.push(group as u8);
        }
        if 2 * distinct.len() > indices.len() {
            return None;
        }
        Some(QuotaGroups {
            phases: vec![rounds.saturating_sub(1); distinct.len()],
            lists: vec![None; 1 << distinct.len()],
            quotas: distinct,
            indices,
            groups,
            rounds,
            round: 0,
        })
    }

    /// The next round's turns, in index order; `None` once all rounds are out.
    fn next_round(&mut self) -> Option<&[u32]> {
        if self.round >= self.rounds {
            return None;
        }
        self.round += 1;
        let mut due_groups = 0usize;
        for (group, (phase, &quota)) in self.phases.iter_mut().zip(&self.quotas).enumerate() {
            due_groups |= usize::from(step_phase(phase, quota, self.rounds)) << group;
        }
        let (indices, groups) = (&self.indices, &self.groups);
        let list = self.lists.get_mut(due_groups)?.get_or_insert_with(|| {
            let mut list = vec![0u32; indices.len()];
            let due = indices
                .iter()
                .zip(groups)
                .map(|(&index, &group)| (index, due_groups >> group & 1 != 0));
            let count = keep_due(&mut list, due);
            list.truncate(count);
            list
        });
        Some(list)
    }
}

/// Produces the general schedule's turns round by round: backend i's k-th turn falls in round
/// floor(k * Q / quota_i), and a round's turns go in index order.
///
/// Backend i is due in round r when some k has r <= k * Q / quota_i < r + 1, that is when
/// [r * quota_i, (r + 1) * quota_i) holds a multiple of Q. Its phase, (r * quota_i - 1) mod Q,
/// tells that with an add and a compare: the interval holds one when phase + quota_i >= Q.
struct Calendar {
    /// The backends with a quota above 0, and their quotas and phases.
    indices: Vec<u32>,
    quotas: Vec<u32>,
    phases: Vec<u32>,
    rounds: u32,
    round: u32,
}

impl Calendar {
    fn new(quotas: &[u32], rounds: u32) -> Calendar {
        let (indices, quotas): (Vec<u32>, Vec<u32>) = quotas
            .iter()
            .enumerate()
            .filter(|&(_, &quota)| quota > 0)
            .map(|(index, &quota)| (index as u32, quota))
            .unzip();
        Calendar {
            phases: vec![rounds.saturating_sub(1); indices.len()],
            indices,
            quotas,
            rounds,
            round: 0,
        }
    }

    /// How many (round, backend) pairs the scan visits.
    fn scan_length(&self) -> u64 {
        self.indices.len() as u64 * u64::from(self.rounds)
    }

    /// Writes the turns of the next rounds to `turns`, whole rounds until at least `at_least`
    /// (or the schedule ends), and returns how many. `turns` must have room for `at_least`
    /// plus one round and one more: every backend's index is written, and only a due one's
    /// is kept (no branch on a coin toss).
    fn next_turns(&mut self, turns: &mut [u32], at_least: usize) -> usize {
        let rounds = self.rounds;
        let mut count = 0;
        while count < at_least && self.round < rounds {
            // Two passes: the first has no dependence between backends, so it vectorizes.
            for (phase, &quota) in self.phases.iter_mut().zip(&self.quotas) {
                step_phase(phase, quota, rounds);
            }
            let due = self
                .phases
                .iter()
                .zip(&self.quotas)
                .zip(&self.indices)
                .map(|((&phase, &quota), &index)| (index, is_due(phase, quota)));
            count += keep_due(turns.get_mut(count..).unwrap_or_default(), due);
            self.round += 1;
        }
        count
    }
}

/// Moves a backend's (or a quota group's) phase on by one round (see [`Calendar`]) and tells
/// whether it is due in that round. phase + quota < 2Q, so the subtraction wraps exactly
/// when the sum is below Q.
#[inline(always)]
fn step_phase(phase: &mut u32, quota: u32, rounds: u32) -> bool {
    let sum = *phase + quota;
    *phase = sum.min(sum.wrapping_sub(rounds));
    is_due(*phase, quota)
}

/// Whether a phase just stepped means a turn in this round: the new phase is below the quota
/// exactly when the sum reached Q.
#[inline(always)]
fn is_due(phase: u32, quota: u32) -> bool {
    phase < quota
}

/// Writes the indices marked due to the front of `turns`, in order, and returns how many.
/// Every index is written and only a due one's kept: a branch on "due" would be a coin toss
/// per backend. `turns` needs room for one more index than are due.
#[inline(always)]
fn keep_due(turns: &mut [u32], due: impl Iterator<Item = (u32, bool)>) -> usize {
    let mut count = 0;
    for (index, due) in due {
        if let Some(turn) = turns.get_mut(count) {
            *turn = index;
        }
        count += usize::from(due);
    }
    count
}

/// Every turn's backend index in turn order, by counting the turns per round and then placing
/// them (O(M + Q)).
fn turn_order_by_counting(quotas: &[u32], rounds: u32) -> Vec<u32> {
    // `starts[r]` becomes the position of round r's first turn.
    let mut starts = vec![0u32; rounds as usize + 1];
    for &quota in quotas {
        for round in turn_rounds(quota, rounds) {
            if let Some(count) = starts.get_mut(round as usize + 1) {
                *count += 1;
            }
        }
    }
    let mut position = 0;
    for start in starts.iter_mut() {
        position += *start;
        *start = position;
    }
    let mut turns = vec![0u32; position as usize];
    for (index, &quota) in quotas.iter().enumerate() {
        for round in turn_rounds(quota, rounds) {
            if let Some(start) = starts.get_mut(round as usize) {
                if let Some(turn) = turns.get_mut(*start as usize) {
                    *turn = index as u32;
                }
                *start += 1;
            }
        }
    }
    turns
}

/// The rounds of a backend's turns, floor(k * Q / quota) for k = 0 .. quota - 1, by adding
/// Q / quota and carrying the remainder: no division per turn.
fn turn_rounds(quota: u32, rounds: u32) -> impl Iterator<Item = u32> {
    let quota_or_1 = quota.max(1);
    let (whole, fraction) = (rounds / quota_or_1, rounds % quota_or_1);
    let (mut round, mut carry) = (0u32, 0u32);
    (0..quota).map(move |_| {
        let this = round;
        carry += fraction;
        // Written to compile to a conditional move: the carry is a coin toss per turn.
        let wraps = carry >= quota_or_1;
        carry -= if wraps { quota_or_1 } else { 0 };
        round += whole + u32::from(wraps);
        this
    })
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
struct Filling<'a> {
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
    fn new(
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
    fn take_turns(&mut self, due: &[u32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks "no backend yet" in tables and turn lists under test.
    const NONE: u32 = u32::MAX;

    fn equal(count: usize) -> Vec<MaglevBackend> {
        (0..count)
            .map(|i| MaglevBackend::new(synthetic_key(i), 1))
            .collect()
    }

    fn synthetic_key(i: usize) -> String {
        let n = i + 1;
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
    }

    fn weighted(count: usize, pattern: &[u32]) -> Vec<MaglevBackend> {
        (0..count)
            .map(|i| MaglevBackend::new(synthetic_key(i), pattern[i % pattern.len()]))
            .collect()
    }

    /// Fraction of the slots not owned by `removed` in `before` whose backend key differs in `after`.
    fn others_moved(before: &MaglevTable, after: &MaglevTable, removed: &str) -> f64 {
        let mut others = 0usize;
        let mut moved = 0usize;
        for (old, new) in before.entries().iter().zip(after.entries()) {
            let old_key = &before.backends()[*old as usize].key;
            if old_key == removed {
                continue;
            }
            others += 1;
            if *old_key != after.backends()[*new as usize].key {
                moved += 1;
            }
        }
        moved as f64 / others as f64
    }

    #[test]
    fn primality() {
        let primes: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65537));
        assert!(is_prime(655373));
        assert!(is_prime(5_000_011));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65536));
        assert!(!is_prime(65539 * 3));
        assert!(!is_prime(4093 * 4099)); // a product of two primes near sqrt
        assert_eq!(next_prime(65536), Some(65537));
        assert_eq!(prev_prime(65536), Some(65521));
    }

    #[test]
    fn rejects_bad_sizes_with_a_fix() {
        let backends = equal(3);
        let err = MaglevTable::build(&backends, 65536).unwrap_err();
        assert_eq!(
            err,
            MaglevError::NotPrime {
                size: 65536,
                below: 65521,
                above: 65537
            }
        );
        assert!(err.to_string().contains("65537"), "{err}");
        assert!(matches!(
            MaglevTable::build(&backends, 0),
            Err(MaglevError::SizeOutOfRange { size: 0 })
        ));
        assert!(matches!(
            MaglevTable::build(&backends, 1),
            Err(MaglevError::SizeOutOfRange { .. })
        ));
        assert!(matches!(
            MaglevTable::build(&backends, 16_777_259),
            Err(MaglevError::SizeOutOfRange { .. })
        ));
        let err = MaglevTable::build(&equal(10), 7).unwrap_err();
        assert!(
            matches!(
                err,
                MaglevError::TableTooSmall {
                    size: 7,
                    backends: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("65537"), "{err}");
    }

    #[test]
    fn accepts_large_primes() {
        let table = MaglevTable::build(&equal(3), 5_000_011).unwrap();
        assert_eq!(table.size(), 5_000_011);
        assert_eq!(table.entries().len(), 5_000_011);
        let counts = table.entry_counts();
        assert_eq!(counts.iter().sum::<u32>(), 5_000_011);
        assert!(counts.iter().all(|&c| c == 1_666_670 || c == 1_666_671));
    }

    #[test]
    fn rejects_bad_keys() {
        let build = |keys: &[&str]| {
            let backends: Vec<_> = keys.iter().map(|k| MaglevBackend::new(*k, 1)).collect();
            MaglevTable::build(&backends, 101)
        };
        assert!(matches!(
            build(&["198.51.100.7", "198.51.100.8", "198.51.100.7"]),
            Err(MaglevError::DuplicateKey { key }) if key == "198.51.100.7"
        ));
        assert!(matches!(build(&[""]), Err(MaglevError::InvalidKey { .. })));
        assert!(matches!(
            build(&["198.51.100.7 "]),
            Err(MaglevError::InvalidKey { .. })
        ));
        let err = build(&["2001:DB8:0:0::7"]).unwrap_err();
        assert_eq!(
            err,
            MaglevError::NonCanonicalKey {
                key: "2001:DB8:0:0::7".into(),
                canonical: "2001:db8::7".into()
            }
        );
        assert!(build(&["[2001:db8::7]:8080", "198.51.100.7:80", "2001:db8::7"]).is_ok());
        assert!(matches!(
            build(&["[2001:db8:0::7]:8080"]),
            Err(MaglevError::NonCanonicalKey { canonical, .. }) if canonical == "[2001:db8::7]:8080"
        ));
        // Address-like keys the IPv4 parser refuses: two spellings of one address must not
        // pass as two names.
        for key in ["198.051.100.7", "198.51.100", "198.51.100.256"] {
            assert!(
                matches!(build(&[key]), Err(MaglevError::InvalidKey { .. })),
                "{key}"
            );
        }
        assert!(matches!(
            build(&["198.51.100.7:080"]),
            Err(MaglevError::NonCanonicalKey { canonical, .. }) if canonical == "198.51.100.7:80"
        ));
        // Names are opaque and used verbatim.
        assert!(build(&["web-1.example"]).is_ok());
    }

    #[test]
    fn weighted_shares_hold_whatever_the_key_order() {
        // Regressions: weights whose heaviest backend is not first in key order.
        for pattern in [
            &[1u32, 3][..],
            &[1, 2],
            &[1, 3, 3],
            &[3, 1],
            &[1, 1, 3],
            &[0, 1, 2],
            &[2, 0, 1, 5],
        ] {
            let backends: Vec<MaglevBackend> = pattern
                .iter()
                .enumerate()
                .map(|(i, &w)| MaglevBackend::new(format!("198.51.100.{}", i + 1), w))
                .collect();
            let table = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap();
            let counts = table.entry_counts();
            let total: u32 = pattern.iter().sum();
            for (i, &w) in pattern.iter().enumerate() {
                let want = f64::from(DEFAULT_TABLE_SIZE) * f64::from(w) / f64::from(total);
                assert!(
                    (f64::from(counts[i]) - want).abs() <= 1.0,
                    "weights {pattern:?}: backend {i} has {} entries, owed {want:.1}",
                    counts[i]
                );
            }
        }
    }

    #[test]
    fn paper_table_1() {
        // NSDI'16 Table 1: M = 7, B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1).
        let permutations = [
            Permutation { offset: 3, skip: 4 },
            Permutation { offset: 0, skip: 2 },
            Permutation { offset: 3, skip: 1 },
        ];
        let mut before = [NONE; 7];
        fill_with(&permutations, &[3, 2, 2], 7, &mut before, Strategy::plain());
        assert_eq!(before, [1, 0, 1, 0, 2, 2, 0]);

        // B1 removed: B0 and B2 share the table; B1's slots 0 and 2 go to B0, and slot 6
        // moves from B0 to B2 — the paper's example of a small disruption.
        let mut after = [NONE; 7];
        fill_with(
            &[permutations[0], permutations[2]],
            &[4, 3],
            7,
            &mut after,
            Strategy::plain(),
        );
        assert_eq!(after, [0, 0, 0, 0, 1, 1, 1]);
    }

    /// Fills the table of `backends` with `strategy`, for comparison with the fast path.
    fn entries_with(backends: &[MaglevBackend], size: u32, strategy: Strategy) -> Vec<u32> {
        let table = MaglevTable::build(backends, size).unwrap();
        let sorted = table.backends();
        let permutations: Vec<_> = sorted
            .iter()
            .map(|b| Permutation::for_key(&b.key, size))
            .collect();
        let mut entries = vec![NONE; size as usize];
        fill_with(
            &permutations,
            &quotas(sorted, size),
            size,
            &mut entries,
            strategy,
        );
        entries
    }

    #[test]
    fn fast_fill_matches_the_plain_walk() {
        for (count, size, pattern) in [
            (1, 7, &[1u32][..]),
            (3, 101, &[1][..]),
            (10, 65537, &[1][..]),
            (1000, 65537, &[1][..]),
            (997, 1009, &[1][..]),
            (100, 65537, &[1, 2, 3, 4][..]),
            (50, 10007, &[1, 0, 7][..]),
            (3, 65537, &[1, 1000][..]),
            // Weights unequal enough for the turns to be sorted rather than scanned.
            (50, 10007, &[100, 1, 1, 1, 1, 1, 1, 1, 1, 1][..]),
        ] {
            let backends = weighted(count, pattern);
            let plain = entries_with(&backends, size, Strategy::plain());
            let fast = MaglevTable::build(&backends, size).unwrap();
            assert_eq!(
                fast.entries(),
                &plain[..],
                "{count} backends, M={size}, weights {pattern:?}"
            );
            // Each part of the fast path alone: four-probe walks to the last slot, and one-probe
            // walks with the tail search; and a tail search over a quarter of the table.
            let tail_length = Strategy::fast(size).tail_length;
            let mut parts = vec![
                Strategy {
                    four_probes: true,
                    tail_length: 0,
                },
                Strategy {
                    four_probes: false,
                    tail_length,
                },
            ];
            if size <= 10007 {
                parts.push(Strategy {
                    four_probes: true,
                    tail_length: size / 4,
                });
            }
            for strategy in parts {
                assert_eq!(
                    entries_with(&backends, size, strategy),
                    plain,
                    "{count} backends, M={size}, weights {pattern:?}, {strategy:?}"
                );
            }
        }
    }

    #[test]
    fn turn_order_follows_its_definition() {
        // Backend i's k-th turn in round floor(k * Q / quota_i), a round's turns in index
        // order: sorting (round, index) pairs is the definition; the scan (in chunks of
        // several sizes), the counting sort and the quota groups (where their rule takes
        // them: at most eight distinct quotas, at least two backends per quota) must all give
        // it.
        for (count, size, pattern) in [
            (1, 7, &[1u32][..]),
            (10, 65537, &[1, 2, 3, 4][..]),
            (37, 1009, &[1][..]),
            (50, 10007, &[1, 0, 7][..]),
            (3, 65537, &[1, 1000][..]),
            (50, 10007, &[100, 1, 1, 1, 1, 1, 1, 1, 1, 1][..]),
            (40, 10007, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][..]),
        ] {
            let backends = weighted(count, pattern);
            let table = MaglevTable::build(&backends, size).unwrap();
            let quotas = quotas(table.backends(), size);
            let rounds = quotas.iter().copied().max().unwrap();
            let mut defined: Vec<(u64, u32)> = Vec::new();
            for (index, &quota) in quotas.iter().enumerate() {
                for k in 0..u64::from(quota) {
                    defined.push((k * u64::from(rounds) / u64::from(quota), index as u32));
                }
            }
            defined.sort_unstable();
            let defined: Vec<u32> = defined.into_iter().map(|(_, index)| index).collect();
            let what = format!("{count} backends, M={size}, weights {pattern:?}");
            assert_eq!(turn_order_by_counting(&quotas, rounds), defined, "{what}");
            for chunk in [1, 7, 2048] {
                let mut calendar = Calendar::new(&quotas, rounds);
                let mut turns = vec![NONE; chunk + quotas.len() + 1];
                let mut scanned = Vec::new();
                loop {
                    let taken = calendar.next_turns(&mut turns, chunk);
                    if taken == 0 {
                        break;
                    }
                    scanned.extend_from_slice(&turns[..taken]);
                }
                assert_eq!(scanned, defined, "{what}, chunk {chunk}");
            }
            let distinct: std::collections::BTreeSet<u32> =
                quotas.iter().copied().filter(|&quota| quota > 0).collect();
            let active = quotas.iter().filter(|&&quota| quota > 0).count();
            let groups = QuotaGroups::new(&quotas, rounds);
            assert_eq!(
                groups.is_some(),
                distinct.len() <= QuotaGroups::MAX_GROUPS && 2 * distinct.len() <= active,
                "{what}"
            );
            if let Some(mut groups) = groups {
                let mut grouped = Vec::new();
                while let Some(due) = groups.next_round() {
                    grouped.extend_from_slice(due);
                }
                assert_eq!(grouped, defined, "{what}, grouped");
            }
        }
    }

    #[test]
    fn calendar_reduces_to_round_robin_for_equal_weights() {
        // The round-robin shortcut must give what the general calendar gives.
        let backends = equal(37);
        let size = 1009;
        let table = MaglevTable::build(&backends, size).unwrap();
        let permutations: Vec<_> = table
            .backends()
            .iter()
            .map(|b| Permutation::for_key(&b.key, size))
            .collect();
        let quotas = quotas(table.backends(), size);
        let mut entries = vec![NONE; size as usize];
        let mut filling = Filling::new(&permutations, size, &mut entries, Strategy::fast(size));
        let rounds = quotas.iter().copied().max().unwrap();
        fill_by_calendar(&mut filling, &quotas, rounds);
        assert_eq!(table.entries(), &entries[..]);
    }

    #[test]
    fn equal_weights_get_floor_or_ceil() {
        for (count, size) in [
            (1, 7),
            (3, 7),
            (10, 65537),
            (1000, 65537),
            (7, 1009),
            (997, 1009),
        ] {
            let table = MaglevTable::build(&equal(count), size).unwrap();
            let counts = table.entry_counts();
            let floor = size / count as u32;
            let ceil = size.div_ceil(count as u32);
            assert_eq!(counts.iter().sum::<u32>(), size);
            assert!(
                counts.iter().all(|&c| c == floor || c == ceil),
                "{count} backends, M={size}: {:?}",
                (counts.iter().min(), counts.iter().max())
            );
        }
    }

    #[test]
    fn weighted_shares_within_one_entry_and_one_percent() {
        for (count, size, pattern) in [
            (100, 65537, &[1u32, 2, 3, 4][..]),
            (1000, 655373, &[1, 2, 3, 4][..]),
            (10, 1009, &[5, 1][..]),
            (25, 2503, &[1, 2, 3, 4][..]),
            (50, 5003, &[1, 100][..]),
        ] {
            let backends = weighted(count, pattern);
            let table = MaglevTable::build(&backends, size).unwrap();
            let counts = table.entry_counts();
            assert_eq!(counts.iter().sum::<u32>(), size);
            for (index, &got) in counts.iter().enumerate() {
                let owed = table.weight_share(index);
                let error = (f64::from(got) - owed).abs();
                // Largest-remainder rounding: never a whole entry off.
                assert!(
                    error < 1.0,
                    "backend {index}: {got} entries, owed {owed:.2}"
                );
                // So within 1% wherever the backend is owed 100 entries or more, which holds
                // for every backend when the table raises no warning.
                if owed >= 100.0 {
                    assert!(error / owed < 0.01);
                }
            }
            if size as usize >= 100 * count && table.warning().is_none() {
                for (index, &got) in counts.iter().enumerate() {
                    let owed = table.weight_share(index);
                    assert!((f64::from(got) - owed).abs() / owed < 0.01);
                }
            }
        }
    }

    #[test]
    fn weight_zero_gets_no_entries() {
        let mut backends = equal(10);
        backends[3].weight = 0;
        let table = MaglevTable::build(&backends, 1009).unwrap();
        let drained = table
            .backends()
            .iter()
            .position(|b| b.key == backends[3].key)
            .unwrap();
        assert_eq!(table.entry_counts()[drained], 0);
        assert!(table.entries().iter().all(|&e| e as usize != drained));

        let all_zero: Vec<_> = backends
            .iter()
            .map(|b| MaglevBackend::new(b.key.clone(), 0))
            .collect();
        let table = MaglevTable::build(&all_zero, 1009).unwrap();
        assert!(table.entries().is_empty());
        assert_eq!(table.lookup(0x1234_5678_9abc_def0), None);
        assert_eq!(MaglevTable::build(&[], 1009).unwrap().lookup(7), None);
    }

    #[test]
    fn order_does_not_matter() {
        let backends = weighted(200, &[1, 2, 3]);
        let table = MaglevTable::build(&backends, 65537).unwrap();
        let mut shuffled = backends.clone();
        shuffled.reverse();
        shuffled.swap(3, 150);
        shuffled.rotate_left(77);
        let other = MaglevTable::build(&shuffled, 65537).unwrap();
        assert_eq!(table.fingerprint(), other.fingerprint());
        assert_eq!(table.entries(), other.entries());
        assert_eq!(table.backends(), other.backends());
        assert!(table.backends().windows(2).all(|w| w[0].key < w[1].key));
    }

    #[test]
    fn removing_one_of_1000_moves_few_others_and_adding_back_restores() {
        let backends = equal(1000);
        let table = MaglevTable::build(&backends, 65537).unwrap();
        let removed = backends[421].clone();
        let rest: Vec<_> = backends
            .iter()
            .filter(|b| **b != removed)
            .cloned()
            .collect();
        let smaller = MaglevTable::build(&rest, 65537).unwrap();
        let moved = others_moved(&table, &smaller, &removed.key);
        assert!(
            moved <= 0.007,
            "{:.3}% of other entries moved",
            moved * 100.0
        );
        assert!(moved > 0.0);

        let mut restored = rest.clone();
        restored.insert(17, removed);
        let again = MaglevTable::build(&restored, 65537).unwrap();
        assert_eq!(again.entries(), table.entries());
        assert_eq!(again.fingerprint(), table.fingerprint());
    }

    #[test]
    fn lookup_is_the_scaled_slot() {
        let table = MaglevTable::build(&equal(5), 101).unwrap();
        assert_eq!(table.lookup(0), Some(table.entries()[0]));
        assert_eq!(table.lookup(u64::MAX), Some(table.entries()[100]));
        // The lower 32 bits do not matter.
        assert_eq!(
            table.lookup(0x8000_0000_0000_0000),
            table.lookup(0x8000_0000_ffff_ffff)
        );
        assert_eq!(
            table.lookup(0x8000_0000_0000_0000),
            Some(table.entries()[50])
        );
        for slot in 0..101u64 {
            // The smallest hash that scales to `slot`.
            let hash = (slot << 32).div_ceil(101) << 32;
            assert_eq!(table.lookup(hash), Some(table.entries()[slot as usize]));
        }
    }

    #[test]
    fn warns_below_100_entries_per_backend() {
        let table = MaglevTable::build(&equal(1000), 65537).unwrap();
        let warning = table.warning().unwrap();
        assert!(warning.contains("100 x 1000"), "{warning}");
        assert!(warning.contains("100003"), "{warning}");
        assert!(MaglevTable::build(&equal(655), 65537)
            .unwrap()
            .warning()
            .is_none());
        // Weighted: 100 backends fit by count, but the weight-1 ones are owed ~32 entries.
        let table = MaglevTable::build(&weighted(100, &[1, 40]), 65537).unwrap();
        let warning = table.warning().unwrap();
        assert!(warning.contains("weight 1"), "{warning}");
    }

    #[test]
    fn fingerprint_is_pinned() {
        // The compatibility promise: this table is the same on every machine and every
        // fulcrum version. If this fails, the change breaks instances behind one ECMP group.
        let backends: Vec<_> = [
            ("198.51.100.7", 1),
            ("198.51.100.8", 2),
            ("[2001:db8::7]:8080", 3),
            ("203.0.113.1:443", 1),
            ("web-1.example", 0),
        ]
        .iter()
        .map(|&(key, weight)| MaglevBackend::new(key, weight))
        .collect();
        let table = MaglevTable::build(&backends, 65537).unwrap();
        assert_eq!(
            Permutation::for_key("198.51.100.7", 65537),
            Permutation {
                offset: 41739,
                skip: 56538
            }
        );
        assert_eq!(&table.entries()[..8], &[2, 0, 3, 2, 2, 2, 0, 2]);
        assert_eq!(
            table.fingerprint(),
            "bad8fbd3585840953a51cf2dc6abda0a9555e0ebc13a215522bb8ac57b58daf7"
        );
    }

    #[test]
    fn table_is_send_and_sync() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<MaglevTable>();
    }
}
