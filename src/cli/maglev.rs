//! `fulcrum maglev simulate`: builds a Maglev table offline and reports its balance, its build
//! time and how much of it moves when backends leave. Needs no daemon and no DPDK.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::json;
use xxhash_rust::xxh64::xxh64;

use crate::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE};

/// Seed of the hash that ranks backends for `--remove`: the K backends with the smallest
/// xxh64(key, REMOVE_SEED) leave, whatever the input order.
const REMOVE_SEED: u64 = 0x7265_6d6f_7665; // "remove"

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Simulate N backends with synthetic keys 10.0.0.1, 10.0.0.2, ...
    #[arg(long, value_name = "N", conflicts_with = "backend")]
    pub backends: Option<usize>,
    /// A backend as its canonical address, optionally with a weight (default 1); repeat it.
    #[arg(long = "backend", value_name = "KEY[=WEIGHT]")]
    pub backend: Vec<String>,
    /// Entries in the table; must be prime.
    #[arg(long, value_name = "M", default_value_t = DEFAULT_TABLE_SIZE)]
    pub table_size: u32,
    /// Weights cycled over the backends in input order, e.g. "1,2,3,4"; an explicit
    /// KEY=WEIGHT wins.
    #[arg(long, value_name = "PATTERN")]
    pub weights: Option<String>,
    /// Remove K backends (chosen by a fixed hash of their keys) and report what moves.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub remove: usize,
    /// Permute the input order with this seed (the table must not change).
    #[arg(long, value_name = "SEED")]
    pub shuffle: Option<u64>,
    /// Builds to time; the median is reported.
    #[arg(long, value_name = "R", default_value_t = 11)]
    pub runs: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the simulation and returns the report to print (text or JSON).
pub fn simulate(args: &SimulateArgs) -> Result<String, String> {
    let mut backends = input_backends(args)?;
    if let Some(seed) = args.shuffle {
        shuffle(&mut backends, seed);
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if args.remove > backends.len() {
        return Err(format!(
            "--remove {} is more than the {} backends",
            args.remove,
            backends.len()
        ));
    }

    let mut build_ms = Vec::with_capacity(args.runs);
    let mut table = None;
    for _ in 0..args.runs {
        // Free the previous table first, as a caller that rebuilds in a loop would: with both
        // alive, the allocator hands each build fresh pages, and their first-touch faults
        // (~0.4 ms for M = 65537 here) would be timed as part of the build.
        drop(table.take());
        let started = Instant::now();
        let built = MaglevTable::build(&backends, args.table_size).map_err(|e| e.to_string())?;
        build_ms.push(started.elapsed().as_secs_f64() * 1e3);
        table = Some(built);
    }
    let table = table.ok_or("no table was built")?;
    build_ms.sort_by(f64::total_cmp);
    let build_ms_median = build_ms[build_ms.len() / 2];

    let balance = Balance::of(&table);
    let removal = Removal::of(&table, &backends, args.remove)?;
    let report = Report {
        table: &table,
        build_ms_median,
        runs: args.runs,
        balance,
        removal,
    };
    Ok(if args.json {
        report.json()
    } else {
        report.text()
    })
}

fn input_backends(args: &SimulateArgs) -> Result<Vec<MaglevBackend>, String> {
    let pattern = match &args.weights {
        Some(text) => parse_weights(text)?,
        None => vec![1],
    };
    let cycled = |i: usize| pattern[i % pattern.len()];
    match (args.backends, args.backend.is_empty()) {
        (Some(count), _) => Ok((0..count)
            .map(|i| MaglevBackend::new(synthetic_key(i), cycled(i)))
            .collect()),
        (None, false) => args
            .backend
            .iter()
            .enumerate()
            .map(|(i, spec)| parse_backend(spec, cycled(i)))
            .collect(),
        (None, true) => {
            Err("no backends: give --backends N or --backend KEY[=WEIGHT] (repeated)".into())
        }
    }
}

/// The i-th synthetic backend: 10.0.0.1, 10.0.0.2, ... (canonical IPv4 keys).
fn synthetic_key(i: usize) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn parse_weights(text: &str) -> Result<Vec<u32>, String> {
    let weights: Result<Vec<u32>, String> = text
        .split(',')
        .map(|part| {
            part.trim().parse::<u32>().map_err(|_| {
                format!("bad --weights {text:?}: {part:?} is not a whole number (example: 1,2,3,4)")
            })
        })
        .collect();
    weights
}

/// `KEY` or `KEY=WEIGHT`; IPv6 keys contain ':' but never '='.
fn parse_backend(spec: &str, default_weight: u32) -> Result<MaglevBackend, String> {
    match spec.rsplit_once('=') {
        Some((key, weight)) => {
            let weight = weight.trim().parse::<u32>().map_err(|_| {
                format!("bad --backend {spec:?}: weight {weight:?} is not a whole number (example: 198.51.100.7=3)")
            })?;
            Ok(MaglevBackend::new(key, weight))
        }
        None => Ok(MaglevBackend::new(spec, default_weight)),
    }
}

/// Fisher-Yates with splitmix64: reproducible from the seed on every platform.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// How evenly the entries follow the weights, over backends with weight above 0.
#[derive(Debug, Default)]
struct Balance {
    entries_min: u32,
    entries_max: u32,
    per_weight_min: f64,
    per_weight_max: f64,
    max_share_error_pct: f64,
}

impl Balance {
    fn of(table: &MaglevTable) -> Balance {
        let counts = table.entry_counts();
        let mut balance: Option<Balance> = None;
        for (index, backend) in table.backends().iter().enumerate() {
            if backend.weight == 0 {
                continue;
            }
            let got = counts[index];
            let per_weight = f64::from(got) / f64::from(backend.weight);
            let owed = table.weight_share(index);
            let error_pct = (f64::from(got) - owed).abs() / owed * 100.0;
            let b = balance.get_or_insert(Balance {
                entries_min: got,
                entries_max: got,
                per_weight_min: per_weight,
                per_weight_max: per_weight,
                max_share_error_pct: error_pct,
            });
            b.entries_min = b.entries_min.min(got);
            b.entries_max = b.entries_max.max(got);
            b.per_weight_min = b.per_weight_min.min(per_weight);
            b.per_weight_max = b.per_weight_max.max(per_weight);
            b.max_share_error_pct = b.max_share_error_pct.max(error_pct);
        }
        balance.unwrap_or_default()
    }
}

/// What changes when some backends leave.
/// The key of the backend owning `slot`, if the table has entries.
fn key_at(table: &MaglevTable, slot: usize) -> Option<&str> {
    table
        .entries()
        .get(slot)
        .and_then(|&index| table.backends().get(index as usize))
        .map(|backend| backend.key.as_str())
}

#[derive(Debug, Default)]
struct Removal {
    removed: Vec<String>,
    /// Share of all entries the removed backends owned: these must move.
    removed_owned_pct: f64,
    /// Share of the other entries that moved anyway: the disruption consistent hashing keeps low.
    others_moved_pct: f64,
}

impl Removal {
    fn of(
        table: &MaglevTable,
        backends: &[MaglevBackend],
        count: usize,
    ) -> Result<Removal, String> {
        if count == 0 {
            return Ok(Removal::default());
        }
        let mut ranked: Vec<&MaglevBackend> = backends.iter().collect();
        ranked.sort_by_key(|b| (xxh64(b.key.as_bytes(), REMOVE_SEED), b.key.as_str()));
        let removed: HashSet<&str> = ranked[..count].iter().map(|b| b.key.as_str()).collect();
        let rest: Vec<MaglevBackend> = backends
            .iter()
            .filter(|b| !removed.contains(b.key.as_str()))
            .cloned()
            .collect();
        let after = MaglevTable::build(&rest, table.size()).map_err(|e| e.to_string())?;

        let (mut owned, mut others, mut moved) = (0usize, 0usize, 0usize);
        for slot in 0..table.entries().len() {
            let before = key_at(table, slot);
            if before.is_some_and(|key| removed.contains(key)) {
                owned += 1;
                continue;
            }
            others += 1;
            if key_at(&after, slot) != before {
                moved += 1;
            }
        }
        let pct = |part: usize, whole: usize| {
            if whole == 0 {
                0.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let mut removed: Vec<String> = removed.into_iter().map(str::to_owned).collect();
        removed.sort();
        Ok(Removal {
            removed,
            removed_owned_pct: pct(owned, table.entries().len()),
            others_moved_pct: pct(moved, others),
        })
    }
}

struct Report<'a> {
    table: &'a MaglevTable,
    build_ms_median: f64,
    runs: usize,
    balance: Balance,
    removal: Removal,
}

impl Report<'_> {
    fn json(&self) -> String {
        let table = self.table;
        let value = json!({
            "table_size": table.size(),
            "backends": table.backends().len(),
            "backends_with_weight": table.backends().iter().filter(|b| b.weight > 0).count(),
            "total_weight": table.backends().iter().map(|b| u64::from(b.weight)).sum::<u64>(),
            "build_ms_median": self.build_ms_median,
            "runs": self.runs,
            "entries_min": self.balance.entries_min,
            "entries_max": self.balance.entries_max,
            "entries_per_weight_min": self.balance.per_weight_min,
            "entries_per_weight_max": self.balance.per_weight_max,
            "max_share_error_pct": self.balance.max_share_error_pct,
            "fingerprint": table.fingerprint(),
            "removed": self.removal.removed.len(),
            "removed_keys": self.removal.removed,
            "removed_owned_pct": self.removal.removed_owned_pct,
            "others_moved_pct": self.removal.others_moved_pct,
            "warning": table.warning(),
        });
        value.to_string()
    }

    fn text(&self) -> String {
        let table = self.table;
        let active = table.backends().iter().filter(|b| b.weight > 0).count();
        let total: u64 = table.backends().iter().map(|b| u64::from(b.weight)).sum();
        let mut out = format!(
            "maglev table: M = {}, {} backends ({} with weight > 0, total weight {})\n",
            table.size(),
            table.backends().len(),
            active,
            total
        );
        out += &format!(
            "build time: {:.3} ms (median of {} builds)\n",
            self.build_ms_median, self.runs
        );
        out += &format!(
            "entries per backend: min {}, max {}; per unit of weight: min {:.2}, max {:.2}\n",
            self.balance.entries_min,
            self.balance.entries_max,
            self.balance.per_weight_min,
            self.balance.per_weight_max
        );
        out += &format!(
            "largest share error vs. weight share: {:.3}%\n",
            self.balance.max_share_error_pct
        );
        out += &format!("fingerprint: {}\n", table.fingerprint());
        if self.removal.removed.is_empty() {
            out += "removal: not simulated (use --remove K)\n";
        } else {
            let mut shown = self.removal.removed[..self.removal.removed.len().min(5)].join(", ");
            if self.removal.removed.len() > 5 {
                shown += ", ...";
            }
            out += &format!(
                "after removing {} backend(s) [{}]: they owned {:.3}% of the entries; {:.3}% of all other entries moved\n",
                self.removal.removed.len(),
                shown,
                self.removal.removed_owned_pct,
                self.removal.others_moved_pct
            );
        }
        if let Some(warning) = table.warning() {
            out += &format!("warning: {warning}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn args() -> SimulateArgs {
        SimulateArgs {
            backends: None,
            backend: Vec::new(),
            table_size: 10007,
            weights: None,
            remove: 0,
            shuffle: None,
            runs: 3,
            json: true,
        }
    }

    fn run_json(args: &SimulateArgs) -> Value {
        serde_json::from_str(&simulate(args).unwrap()).unwrap()
    }

    #[test]
    fn json_reports_balance_and_removal() {
        let report = run_json(&SimulateArgs {
            backends: Some(100),
            remove: 1,
            ..args()
        });
        for key in [
            "build_ms_median",
            "entries_min",
            "entries_max",
            "max_share_error_pct",
            "fingerprint",
            "removed_owned_pct",
            "others_moved_pct",
        ] {
            assert!(report.get(key).is_some(), "missing {key} in {report}");
        }
        // 10007 entries over 100 equal backends: 100 or 101 each.
        assert_eq!(report["entries_min"], 100);
        assert_eq!(report["entries_max"], 101);
        assert!(report["build_ms_median"].as_f64().unwrap() > 0.0);
        let error = report["max_share_error_pct"].as_f64().unwrap();
        assert!(error > 0.0 && error < 1.0, "{error}");
        assert_eq!(report["fingerprint"].as_str().unwrap().len(), 64);
        // One of 100 backends owned about 1% of the table.
        let owned = report["removed_owned_pct"].as_f64().unwrap();
        assert!((0.99..=1.02).contains(&owned), "{owned}");
        let moved = report["others_moved_pct"].as_f64().unwrap();
        assert!(moved > 0.0 && moved < 5.0, "{moved}");
        assert_eq!(report["removed"], 1);
    }

    #[test]
    fn shuffled_input_gives_the_same_fingerprint_and_removal() {
        let base = SimulateArgs {
            backends: Some(50),
            weights: Some("1,2,3,4".into()),
            remove: 3,
            ..args()
        };
        let plain = run_json(&base);
        let shuffled = run_json(&SimulateArgs {
            shuffle: Some(42),
            ..base
        });
        assert_eq!(plain["fingerprint"], shuffled["fingerprint"]);
        assert_eq!(plain["removed_keys"], shuffled["removed_keys"]);
        assert_eq!(plain["others_moved_pct"], shuffled["others_moved_pct"]);
        assert_eq!(
            plain["entries_per_weight_min"],
            shuffled["entries_per_weight_min"]
        );
    }

    #[test]
    fn explicit_backends_and_weights() {
        let report = run_json(&SimulateArgs {
            backend: vec![
                "198.51.100.7=3".into(),
                "[2001:db8::7]:8080".into(),
                "198.51.100.8=0".into(),
            ],
            table_size: 1009,
            ..args()
        });
        // Weights 3 and 1 (default) share 1009 entries; the weight-0 backend gets none.
        assert_eq!(report["entries_max"], 757);
        assert_eq!(report["entries_min"], 252);
        assert_eq!(report["backends_with_weight"], 2);
    }

    #[test]
    fn text_report_names_what_it_measured() {
        let text = simulate(&SimulateArgs {
            backends: Some(20),
            remove: 2,
            json: false,
            ..args()
        })
        .unwrap();
        assert!(text.contains("build time:"), "{text}");
        assert!(text.contains("fingerprint:"), "{text}");
        assert!(text.contains("after removing 2 backend(s)"), "{text}");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = simulate(&SimulateArgs {
            backends: Some(10),
            table_size: 65536,
            ..args()
        })
        .unwrap_err();
        assert!(err.contains("not prime") && err.contains("65537"), "{err}");

        let err = simulate(&SimulateArgs {
            backends: Some(10),
            weights: Some("1,x".into()),
            ..args()
        })
        .unwrap_err();
        assert!(err.contains("\"x\" is not a whole number"), "{err}");

        let err = simulate(&SimulateArgs {
            backend: vec!["198.51.100.7=heavy".into()],
            ..args()
        })
        .unwrap_err();
        assert!(err.contains("weight \"heavy\""), "{err}");

        let err = simulate(&args()).unwrap_err();
        assert!(err.contains("--backends N"), "{err}");

        let err = simulate(&SimulateArgs {
            backends: Some(3),
            remove: 4,
            ..args()
        })
        .unwrap_err();
        assert!(err.contains("--remove 4"), "{err}");
    }
}
