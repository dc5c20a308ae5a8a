//! The Maglev table's tests: the build against the paper's definition, shares, stability,
//! the fill strategies and schedules against each other, and the pinned fingerprint.

use super::fill::{fill_with, Filling, Permutation, Strategy};
use super::quotas::quotas;
use super::schedule::{general, turn_order_by_counting, Calendar, QuotaGroups};
use super::*;

/// The weights of `backends`, in their order (what the build hands to `quotas`).
fn weights(backends: &[MaglevBackend]) -> Vec<u32> {
    backends.iter().map(|b| b.weight).collect()
}

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
        &quotas(&weights(sorted), size),
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
        let quotas = quotas(&weights(table.backends()), size);
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
    let quotas = quotas(&weights(table.backends()), size);
    let mut entries = vec![NONE; size as usize];
    let mut filling = Filling::new(&permutations, size, &mut entries, Strategy::fast(size));
    let rounds = quotas.iter().copied().max().unwrap();
    general(&quotas, rounds, size, &mut |due: &[u32]| {
        filling.take_turns(due)
    });
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
