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
//!
//! The parts, in the order a build uses them: this file checks the input and sorts it into
//! canonical order; `quotas.rs` gives each backend its number of entries; `schedule.rs` says
//! whose turn it is; `fill.rs` holds the preference lists and gives each turn its slot.
//! `tests.rs` checks the whole against the paper's definition.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sha2::{Digest, Sha256};

mod fill;
mod quotas;
mod schedule;
#[cfg(test)]
mod tests;

use fill::{fill, Permutation};
pub use fill::{OFFSET_SEED, SKIP_SEED};
use quotas::quotas;

/// The default number of table entries (a prime; the paper's "small" M).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// The largest table size accepted: the largest prime below 2^24 (a 64 MiB table).
pub const MAX_TABLE_SIZE: u32 = 16_777_213;

/// Below this many entries per backend (of weight 1, for weighted sets) rounding alone makes a
/// share more than 1% off its weight share.
pub const MIN_ENTRIES_PER_BACKEND: u64 = 100;

/// Tags the fingerprint's input so a later, different table layout cannot collide with it.
const FINGERPRINT_DOMAIN: &[u8] = b"fulcrum-maglev-v1";

/// One backend of a table: its canonical address string, its weight, and an id of the
/// caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The canonical address string, e.g. "198.51.100.7" or "[2001:db8::7]:8080". Keys that
    /// are not addresses (names) are used verbatim.
    pub key: String,
    /// The backend's share of the table is proportional to this; 0 gives it no entries, so it
    /// receives no new flows (existing flows are the connection table's business).
    pub weight: u32,
    /// Opaque to the table (not part of its layout or fingerprint), carried in
    /// [`MaglevTable::backends`] so that an entry's index names the caller's backend: the
    /// snapshot's backend id. 0 unless set.
    pub id: u32,
}

impl MaglevBackend {
    pub fn new(key: impl Into<String>, weight: u32) -> MaglevBackend {
        MaglevBackend {
            key: key.into(),
            weight,
            id: 0,
        }
    }

    pub fn with_id(self, id: u32) -> MaglevBackend {
        MaglevBackend { id, ..self }
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
        let order = canonical_order(backends);
        if let Some(pair) = order.windows(2).find(|pair| pair[0].key == pair[1].key) {
            return Err(MaglevError::DuplicateKey {
                key: pair[0].key.clone(),
            });
        }
        let sorted: Vec<MaglevBackend> = order.into_iter().cloned().collect();

        let weights: Vec<u32> = sorted.iter().map(|b| b.weight).collect();
        let quotas = quotas(&weights, size);
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

    /// Whether [`MaglevTable::build`] of `backends` (in any order) and `size` gives this
    /// table: the same backends, weights and ids in canonical order. A caller that keeps its
    /// tables reuses one by this test rather than by an order of its own.
    pub fn is_built_from(&self, backends: &[MaglevBackend], size: u32) -> bool {
        self.size == size
            && self.backends.len() == backends.len()
            && canonical_order(backends)
                .into_iter()
                .eq(self.backends.iter())
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

/// `backends` in canonical order: by key, bytewise. Sorting references keyed by the first
/// sixteen bytes settles most comparisons without a string compare (every IPv4 key fits).
fn canonical_order(backends: &[MaglevBackend]) -> Vec<&MaglevBackend> {
    let mut order: Vec<(u128, &MaglevBackend)> = backends
        .iter()
        .map(|backend| (key_prefix(&backend.key), backend))
        .collect();
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
    order.into_iter().map(|(_, backend)| backend).collect()
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
