//! `fulcrum bench`: the real data plane (the same code as `run`) measured for a while.
//!
//! With a `net_pcap ... infinite_rx=1` port the input never runs dry and TX goes nowhere,
//! so the numbers are the pipeline's CPU cost per packet on the worker cores.
//!
//! On a shared machine the worker's core is not always the worker's: the kernel runs other
//! tasks on it, and wall-clock rates then measure the neighbours as much as fulcrum. So the
//! bench also reads each worker thread's on-CPU time (the scheduler's `/proc/self/task/TID/
//! schedstat`, nanosecond resolution) and reports the rate per second the worker actually
//! ran (`rx_mpps_on_cpu`) and the TSC cycles per packet of that time. `scripts/bench.sh`
//! measures dpdk-testpmd's forwarding thread the same way, so the two stay comparable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::datapath::stats::{new_burst_histogram, DropReason, WorkerStats};
use crate::dpdk::clock;
use crate::runtime::{self, DataplaneError};

/// One worker's numbers over the measured interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerResult {
    pub worker: usize,
    pub lcore: u32,
    pub rx_mpps: f64,
    pub tx_mpps: f64,
    /// TSC cycles of the whole interval per received packet (the worker polls all the time).
    pub cycles_per_packet: f64,
    /// TSC cycles spent in non-empty bursts per packet (excludes empty polls).
    pub busy_cycles_per_packet: f64,
    pub drops: u64,
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Seconds the worker thread ran on a CPU during the interval (0 when unknown).
    pub cpu_seconds: f64,
    /// Received packets per second of on-CPU time: the rate with the core to itself.
    pub rx_mpps_on_cpu: f64,
    /// TSC cycles per packet of on-CPU time.
    pub cycles_per_packet_on_cpu: f64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchResult {
    pub seconds: f64,
    pub tsc_hz: u64,
    pub rx_mpps: f64,
    pub tx_mpps: f64,
    pub cycles_per_packet: f64,
    pub busy_cycles_per_packet: f64,
    pub drops: u64,
    /// Sum over workers of their on-CPU time, and of their on-CPU rates (see the module
    /// documentation); 0 when the scheduler's statistics are unavailable.
    pub cpu_seconds: f64,
    pub rx_mpps_on_cpu: f64,
    /// Mean over workers of their on-CPU cycles per packet.
    pub cycles_per_packet_on_cpu: f64,
    /// Cycles per burst (of up to 32 packets), from the workers' hdrhistograms.
    pub burst_cycles_p50: u64,
    pub burst_cycles_p99: u64,
    pub burst_cycles_p999: u64,
    pub burst_cycles_max: u64,
    /// Mean packets per non-empty burst: p50 burst cycles over this is a per-packet cost
    /// that preemption by other tasks barely moves.
    pub packets_per_burst: f64,
    pub workers: Vec<WorkerResult>,
}

#[derive(Clone, Default)]
struct Sample {
    rx: u64,
    tx: u64,
    busy_cycles: u64,
    busy_packets: u64,
    bursts: u64,
    drops: [u64; DropReason::COUNT],
}

/// The thread ids of the EAL's worker lcore threads, which DPDK 22.11 names `rte-worker-N`
/// (`lcore-worker-N` in other releases).
fn worker_threads(lcores: &[u32]) -> Vec<Option<u32>> {
    let mut by_lcore = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if let Some(lcore) = ["rte-worker-", "lcore-worker-"]
                .iter()
                .find_map(|prefix| comm.strip_prefix(prefix))
                .and_then(|l| l.parse::<u32>().ok())
            {
                by_lcore.insert(lcore, tid);
            }
        }
    }
    lcores.iter().map(|l| by_lcore.get(l).copied()).collect()
}

/// Nanoseconds thread `tid` has run on a CPU (first field of its schedstat).
fn on_cpu_ns(tid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", tid?)).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn sample(w: &WorkerStats) -> Sample {
    let mut d = [0u64; DropReason::COUNT];
    for (i, c) in w.drops.iter().enumerate() {
        d[i] = c.get();
    }
    Sample {
        rx: w.total_rx_packets(),
        tx: w.total_tx_packets(),
        busy_cycles: w.busy_cycles.get(),
        busy_packets: w.busy_packets.get(),
        bursts: w.bursts.get(),
        drops: d,
    }
}

/// Runs the data plane for `warmup` then measures for `seconds`.
pub fn run(
    config: &Config,
    warmup: Duration,
    seconds: Duration,
) -> Result<BenchResult, DataplaneError> {
    let initial = crate::control::initial_specs(config)
        .map_err(|e| DataplaneError::Initial(e.to_string()))?;
    let measured = runtime::run(config, &initial, |mut handle| {
        let hz = clock::tsc_hz().max(1);
        std::thread::sleep(warmup);
        let workers: Vec<Arc<WorkerStats>> = handle.workers.clone();
        // Throw away the warm-up's histograms.
        for h in &mut handle.histograms {
            h.collect();
            h.total.reset();
        }
        let lcores: Vec<u32> = workers.iter().map(|w| w.lcore).collect();
        let threads = worker_threads(&lcores);
        let cpu_before: Vec<Option<u64>> = threads.iter().map(|t| on_cpu_ns(*t)).collect();
        let before: Vec<Sample> = workers.iter().map(|w| sample(w)).collect();
        let t0 = Instant::now();
        let c0 = clock::tsc();
        let end = t0 + seconds;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            for h in &mut handle.histograms {
                h.collect();
            }
        }
        let after: Vec<Sample> = workers.iter().map(|w| sample(w)).collect();
        let cpu_after: Vec<Option<u64>> = threads.iter().map(|t| on_cpu_ns(*t)).collect();
        let cycles = clock::tsc().wrapping_sub(c0);
        let secs = t0.elapsed().as_secs_f64();
        // One more round so the last histograms come home.
        std::thread::sleep(Duration::from_millis(30));
        let mut hist = new_burst_histogram();
        for h in &mut handle.histograms {
            h.collect();
            let _ = hist.add(&h.total);
        }
        (
            workers, hz, before, after, cpu_before, cpu_after, cycles, secs, hist,
        )
    })?;
    let (workers, hz, before, after, cpu_before, cpu_after, cycles, secs, hist) = measured.value;

    let mut result = BenchResult {
        seconds: secs,
        tsc_hz: hz,
        burst_cycles_p50: hist.value_at_quantile(0.5),
        burst_cycles_p99: hist.value_at_quantile(0.99),
        burst_cycles_p999: hist.value_at_quantile(0.999),
        burst_cycles_max: hist.max(),
        ..Default::default()
    };
    let (mut rx_all, mut tx_all, mut busy_c, mut busy_p) = (0u64, 0u64, 0u64, 0u64);
    let mut bursts = 0u64;
    for (i, w) in workers.iter().enumerate() {
        let (b, a) = (&before[i], &after[i]);
        let rx = a.rx - b.rx;
        let tx = a.tx - b.tx;
        let mut by_reason = std::collections::BTreeMap::new();
        let mut drops = 0;
        for &r in DropReason::ALL {
            let d = a.drops[r as usize] - b.drops[r as usize];
            if d > 0 {
                by_reason.insert(r.name().to_owned(), d);
            }
            drops += d;
        }
        let bc = a.busy_cycles - b.busy_cycles;
        let bp = a.busy_packets - b.busy_packets;
        let cpu_seconds = match (cpu_before[i], cpu_after[i]) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / 1e9,
            _ => 0.0,
        };
        let (rx_mpps_on_cpu, cycles_per_packet_on_cpu) = if cpu_seconds > 0.0 && rx > 0 {
            (
                rx as f64 / cpu_seconds / 1e6,
                cpu_seconds * hz as f64 / rx as f64,
            )
        } else {
            (0.0, 0.0)
        };
        result.cpu_seconds += cpu_seconds;
        result.rx_mpps_on_cpu += rx_mpps_on_cpu;
        result.cycles_per_packet_on_cpu += cycles_per_packet_on_cpu / workers.len() as f64;
        result.workers.push(WorkerResult {
            worker: w.worker,
            lcore: w.lcore,
            rx_mpps: rx as f64 / secs / 1e6,
            tx_mpps: tx as f64 / secs / 1e6,
            cycles_per_packet: if rx > 0 {
                cycles as f64 / rx as f64
            } else {
                0.0
            },
            busy_cycles_per_packet: if bp > 0 { bc as f64 / bp as f64 } else { 0.0 },
            drops,
            drops_by_reason: by_reason,
            rx_packets: rx,
            tx_packets: tx,
            cpu_seconds,
            rx_mpps_on_cpu,
            cycles_per_packet_on_cpu,
        });
        rx_all += rx;
        tx_all += tx;
        busy_c += bc;
        busy_p += bp;
        bursts += a.bursts - b.bursts;
        result.drops += drops;
    }
    result.rx_mpps = rx_all as f64 / secs / 1e6;
    result.tx_mpps = tx_all as f64 / secs / 1e6;
    let n = workers.len().max(1) as f64;
    result.cycles_per_packet = if rx_all > 0 {
        cycles as f64 * n / rx_all as f64
    } else {
        0.0
    };
    result.packets_per_burst = if bursts > 0 {
        busy_p as f64 / bursts as f64
    } else {
        0.0
    };
    result.busy_cycles_per_packet = if busy_p > 0 {
        busy_c as f64 / busy_p as f64
    } else {
        0.0
    };
    Ok(result)
}

impl BenchResult {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fulcrum bench: {:.2} s measured, TSC {:.3} GHz\n",
            self.seconds,
            self.tsc_hz as f64 / 1e9
        );
        s += "worker lcore    rx Mpps    tx Mpps  cycles/pkt  busy cyc/pkt       drops   on-CPU  Mpps on-CPU  cyc/pkt on-CPU\n";
        for w in &self.workers {
            s += &format!(
                "{:>6} {:>5} {:>10.3} {:>10.3} {:>11.1} {:>13.1} {:>11} {:>7.0}% {:>12.3} {:>15.1}\n",
                w.worker,
                w.lcore,
                w.rx_mpps,
                w.tx_mpps,
                w.cycles_per_packet,
                w.busy_cycles_per_packet,
                w.drops,
                100.0 * w.cpu_seconds / self.seconds.max(1e-9),
                w.rx_mpps_on_cpu,
                w.cycles_per_packet_on_cpu
            );
            for (r, n) in &w.drops_by_reason {
                s += &format!("{:>62} {n}\n", format!("{r}:"));
            }
        }
        s += &format!(
            "{:>12} {:>10.3} {:>10.3} {:>11.1} {:>13.1} {:>11} {:>8} {:>12.3} {:>15.1}\n",
            "total",
            self.rx_mpps,
            self.tx_mpps,
            self.cycles_per_packet,
            self.busy_cycles_per_packet,
            self.drops,
            "",
            self.rx_mpps_on_cpu,
            self.cycles_per_packet_on_cpu
        );
        s += &format!(
            "burst cycles: p50 {} p99 {} p99.9 {} max {} ({:.1} packets per burst)\n",
            self.burst_cycles_p50,
            self.burst_cycles_p99,
            self.burst_cycles_p999,
            self.burst_cycles_max,
            self.packets_per_burst
        );
        s
    }
}
