//! Counters summed over workers: the JSON of `GET /v1/stats` and the Prometheus text of
//! `GET /metrics`.
//!
//! Workers write their own counters without locks; this module only reads them (relaxed
//! loads), so a scrape may see one worker a packet behind another, never a torn value.

use std::fmt::Write as _;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::adoption::{AdoptionStats, ADOPTION_BUCKETS};
use super::messages::{
    ApiStats, BackendHealth, BackendStats, ConntrackStats, HealthReport, HealthStatus,
    LatencySummary, NamedCount, PortStatsView, StatsReport, VipStats, VipView, WorkerVersion,
};
use crate::handle::DataplaneHandle;
use crate::snapshot::BackendState;
use crate::stats::{self, Counter, DropReason, WorkerStats};
use crate::wire::ParseError;

fn sum(workers: &[Arc<WorkerStats>], f: impl Fn(&WorkerStats) -> u64) -> u64 {
    workers.iter().map(|w| f(w)).fold(0, u64::wrapping_add)
}

/// The workers' burst-latency histograms merged.
pub fn burst_histogram(handle: &DataplaneHandle) -> Histogram<u64> {
    let mut total = stats::new_burst_histogram();
    for collector in &handle.histograms {
        // Same bounds on both sides, so adding cannot fail.
        let _ = total.add(&collector.total);
    }
    total
}

/// Sums every worker's counters into the report `GET /v1/stats` answers, with the API's
/// own (`api`, read from its counters).
pub fn stats_report(
    version: u64,
    uptime_secs: f64,
    handle: &DataplaneHandle,
    vips: &[VipView],
    burst: &Histogram<u64>,
    api: ApiStats,
) -> StatsReport {
    let w = &handle.workers;
    let nic = handle.port_counters.as_ref().map(|p| p.read());
    let ports = handle
        .port_names
        .iter()
        .enumerate()
        .take(stats::MAX_PORTS)
        .map(|(i, name)| {
            let nic = nic.as_ref().and_then(|n| n.get(i));
            PortStatsView {
                port: i,
                name: name.clone(),
                rx_packets: sum(w, |s| s.rx[i].packets.get()),
                rx_bytes: sum(w, |s| s.rx[i].bytes.get()),
                tx_packets: sum(w, |s| s.tx[i].packets.get()),
                tx_bytes: sum(w, |s| s.tx[i].bytes.get()),
                to_kernel_packets: sum(w, |s| s.to_kernel[i].packets.get()),
                from_kernel_packets: sum(w, |s| s.from_kernel[i].packets.get()),
                nic_missed: nic.map(|n| n.imissed),
                nic_rx_errors: nic.map(|n| n.ierrors),
                nic_tx_errors: nic.map(|n| n.oerrors),
                nic_rx_nombuf: nic.map(|n| n.rx_nombuf),
            }
        })
        .collect();
    let drops = DropReason::ALL
        .iter()
        .map(|r| NamedCount {
            name: r.name().into(),
            count: sum(w, |s| s.drops[*r as usize].get()),
        })
        .collect();
    let parse_errors = ParseError::ALL
        .iter()
        .map(|e| NamedCount {
            name: e.name().into(),
            count: sum(w, |s| {
                s.parse_errors.get(*e as usize).map_or(0, Counter::get)
            }),
        })
        .collect();
    let vips = vips
        .iter()
        .map(|v| VipStats {
            vip: v.vip,
            packets: sum(w, |s| {
                s.vip.get(v.id as usize).map_or(0, |c| c.packets.get())
            }),
            bytes: sum(w, |s| s.vip.get(v.id as usize).map_or(0, |c| c.bytes.get())),
            all_backends_down: v.all_backends_down,
            backends: v
                .backends
                .iter()
                .map(|b| BackendStats {
                    backend: b.address,
                    state: b.state,
                    packets: sum(w, |s| {
                        s.backend.get(b.id as usize).map_or(0, |c| c.packets.get())
                    }),
                    bytes: sum(w, |s| {
                        s.backend.get(b.id as usize).map_or(0, |c| c.bytes.get())
                    }),
                })
                .collect(),
        })
        .collect();
    let quantile = |q: f64| {
        if burst.is_empty() {
            0
        } else {
            burst.value_at_quantile(q)
        }
    };
    StatsReport {
        version,
        workers: w.len(),
        uptime_secs,
        ports,
        drops,
        parse_errors,
        vips,
        conntrack: ConntrackStats {
            flows: sum(w, |s| s.conntrack_flows.get()),
            hits: sum(w, |s| s.conntrack_hits.get()),
            misses: sum(w, |s| s.conntrack_misses.get()),
            inserts: sum(w, |s| s.conntrack_inserts.get()),
            evictions: sum(w, |s| s.conntrack_evictions.get()),
            confirmed_evictions: sum(w, |s| s.conntrack_confirmed_evictions.get()),
            expiries: sum(w, |s| s.conntrack_expiries.get()),
            repicks: sum(w, |s| s.conntrack_repicks.get()),
        },
        fragments: sum(w, |s| s.fragments.get()),
        icmp_errors_forwarded: sum(w, |s| s.icmp_errors_forwarded.get()),
        icmp_too_big_sent: sum(w, |s| s.icmp_too_big_sent.get()),
        bursts: sum(w, |s| s.bursts.get()),
        burst_cycles: LatencySummary {
            count: burst.len(),
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: burst.max(),
        },
        api,
    }
}

/// Upper bounds of the burst-latency histogram's buckets, in cycles: powers of two from 64
/// (a few packets on a fast core) to 2^30 (a stalled worker).
pub fn burst_buckets() -> impl Iterator<Item = u64> {
    (6..=30).map(|p| 1u64 << p)
}

/// Everything `/metrics` shows.
pub struct MetricsInput<'a> {
    pub report: &'a StatsReport,
    pub vips: &'a [VipView],
    pub health: &'a HealthReport,
    pub workers: &'a [WorkerVersion],
    pub burst: &'a Histogram<u64>,
    pub adoption: &'a AdoptionStats,
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn prometheus(input: &MetricsInput) -> String {
    let r = input.report;
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;

    family(
        o,
        "fulcrum_snapshot_version",
        "gauge",
        "The newest published snapshot version.",
    );
    sample(o, "fulcrum_snapshot_version", &[], r.version);
    family(
        o,
        "fulcrum_worker_snapshot_version",
        "gauge",
        "The snapshot version each worker runs.",
    );
    for w in input.workers {
        let (worker, lcore) = (w.worker.to_string(), w.lcore.to_string());
        sample(
            o,
            "fulcrum_worker_snapshot_version",
            &[("worker", &worker), ("lcore", &lcore)],
            w.version,
        );
    }

    adoption_histogram(o, input.adoption);

    type PortField = fn(&PortStatsView) -> u64;
    let port_counters: [(&str, &str, PortField); 6] = [
        (
            "fulcrum_port_rx_packets_total",
            "Packets received by the workers.",
            |p| p.rx_packets,
        ),
        (
            "fulcrum_port_rx_bytes_total",
            "Bytes received by the workers.",
            |p| p.rx_bytes,
        ),
        (
            "fulcrum_port_tx_packets_total",
            "Packets sent by the workers.",
            |p| p.tx_packets,
        ),
        (
            "fulcrum_port_tx_bytes_total",
            "Bytes sent by the workers.",
            |p| p.tx_bytes,
        ),
        (
            "fulcrum_port_to_kernel_packets_total",
            "Frames handed to the exception TAP.",
            |p| p.to_kernel_packets,
        ),
        (
            "fulcrum_port_from_kernel_packets_total",
            "Frames the kernel sent through the exception TAP.",
            |p| p.from_kernel_packets,
        ),
    ];
    for (name, help, field) in port_counters {
        family(o, name, "counter", help);
        for p in &r.ports {
            sample(
                o,
                name,
                &[("port", &p.port.to_string()), ("device", &p.name)],
                field(p),
            );
        }
    }
    type NicField = fn(&PortStatsView) -> Option<u64>;
    let nic_counters: [(&str, &str, NicField); 4] = [
        (
            "fulcrum_port_nic_missed_total",
            "Packets the NIC dropped for want of RX descriptors.",
            |p| p.nic_missed,
        ),
        (
            "fulcrum_port_nic_rx_errors_total",
            "Receive errors counted by the NIC.",
            |p| p.nic_rx_errors,
        ),
        (
            "fulcrum_port_nic_tx_errors_total",
            "Transmit errors counted by the NIC.",
            |p| p.nic_tx_errors,
        ),
        (
            "fulcrum_port_nic_rx_nombuf_total",
            "Receive failures for want of mbufs.",
            |p| p.nic_rx_nombuf,
        ),
    ];
    if r.ports.iter().any(|p| p.nic_missed.is_some()) {
        for (name, help, field) in nic_counters {
            family(o, name, "counter", help);
            for p in &r.ports {
                if let Some(v) = field(p) {
                    sample(
                        o,
                        name,
                        &[("port", &p.port.to_string()), ("device", &p.name)],
                        v,
                    );
                }
            }
        }
    }

    family(
        o,
        "fulcrum_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for d in &r.drops {
        sample(o, "fulcrum_drops_total", &[("reason", &d.name)], d.count);
    }
    family(
        o,
        "fulcrum_parse_errors_total",
        "counter",
        "Malformed frames dropped, by kind.",
    );
    for d in &r.parse_errors {
        sample(
            o,
            "fulcrum_parse_errors_total",
            &[("kind", &d.name)],
            d.count,
        );
    }

    let vip_counters: [CounterFamily<VipStats>; 2] = [
        (
            "fulcrum_vip_packets_total",
            "Packets forwarded for a VIP.",
            |v| v.packets,
        ),
        (
            "fulcrum_vip_bytes_total",
            "Bytes forwarded for a VIP (before encapsulation).",
            |v| v.bytes,
        ),
    ];
    for (name, help, value) in vip_counters {
        family(o, name, "counter", help);
        for v in &r.vips {
            sample(o, name, &[("vip", &v.vip.to_string())], value(v));
        }
    }
    family(
        o,
        "fulcrum_vip_all_backends_down",
        "gauge",
        "1 when every backend with weight failed its health check (the table is kept as if they were up).",
    );
    for v in input.vips {
        sample(
            o,
            "fulcrum_vip_all_backends_down",
            &[("vip", &v.vip.to_string())],
            u64::from(v.all_backends_down),
        );
    }
    family(
        o,
        "fulcrum_vip_backends",
        "gauge",
        "Backends of a VIP, by state.",
    );
    for v in input.vips {
        let vip = v.vip.to_string();
        for state in [
            BackendState::Active,
            BackendState::Draining,
            BackendState::Down,
        ] {
            let n = v.backends.iter().filter(|b| b.state == state).count() as u64;
            sample(
                o,
                "fulcrum_vip_backends",
                &[("vip", &vip), ("state", state_name(state))],
                n,
            );
        }
    }

    let backend_counters: [CounterFamily<BackendStats>; 2] = [
        (
            "fulcrum_backend_packets_total",
            "Packets sent to a backend.",
            |b| b.packets,
        ),
        (
            "fulcrum_backend_bytes_total",
            "Bytes sent to a backend (before encapsulation).",
            |b| b.bytes,
        ),
    ];
    for (name, help, value) in backend_counters {
        family(o, name, "counter", help);
        for v in &r.vips {
            let vip = v.vip.to_string();
            for b in &v.backends {
                sample(
                    o,
                    name,
                    &[("vip", &vip), ("backend", &b.backend.to_string())],
                    value(b),
                );
            }
        }
    }
    family(
        o,
        "fulcrum_backend_weight",
        "gauge",
        "A backend's configured weight.",
    );
    for v in input.vips {
        let vip = v.vip.to_string();
        for b in &v.backends {
            sample(
                o,
                "fulcrum_backend_weight",
                &[("vip", &vip), ("backend", &b.address.to_string())],
                u64::from(b.weight),
            );
        }
    }
    family(
        o,
        "fulcrum_backend_state",
        "gauge",
        "1 for the state a backend is in: active, draining or down.",
    );
    for v in input.vips {
        let vip = v.vip.to_string();
        for b in &v.backends {
            let backend = b.address.to_string();
            for state in [
                BackendState::Active,
                BackendState::Draining,
                BackendState::Down,
            ] {
                sample(
                    o,
                    "fulcrum_backend_state",
                    &[
                        ("vip", &vip),
                        ("backend", &backend),
                        ("state", state_name(state)),
                    ],
                    u64::from(b.state == state),
                );
            }
        }
    }
    family(
        o,
        "fulcrum_backend_up",
        "gauge",
        "1 when a backend passes its health check (or has none).",
    );
    for v in input.vips {
        let vip = v.vip.to_string();
        for b in &v.backends {
            let up = b.health != HealthStatus::Down;
            sample(
                o,
                "fulcrum_backend_up",
                &[("vip", &vip), ("backend", &b.address.to_string())],
                u64::from(up),
            );
        }
    }
    let health_counters: [CounterFamily<BackendHealth>; 2] = [
        (
            "fulcrum_health_checks_total",
            "Health checks run against a backend.",
            |b| b.checks,
        ),
        (
            "fulcrum_health_check_failures_total",
            "Health checks a backend failed.",
            |b| b.failures,
        ),
    ];
    for (name, help, value) in health_counters {
        family(o, name, "counter", help);
        for v in &input.health.vips {
            let vip = v.vip.to_string();
            for b in v
                .backends
                .iter()
                .filter(|b| b.status != HealthStatus::Unchecked)
            {
                sample(
                    o,
                    name,
                    &[("vip", &vip), ("backend", &b.address.to_string())],
                    value(b),
                );
            }
        }
    }

    let c = &r.conntrack;
    family(
        o,
        "fulcrum_conntrack_flows",
        "gauge",
        "Flows in the workers' connection tables.",
    );
    sample(o, "fulcrum_conntrack_flows", &[], c.flows);
    for (name, help, value) in [
        (
            "fulcrum_conntrack_hits_total",
            "Packets of a tracked flow.",
            c.hits,
        ),
        (
            "fulcrum_conntrack_misses_total",
            "Packets of an untracked flow.",
            c.misses,
        ),
        (
            "fulcrum_conntrack_inserts_total",
            "Flows added to a connection table.",
            c.inserts,
        ),
        (
            "fulcrum_conntrack_evictions_total",
            "Flows pushed out of a full table.",
            c.evictions,
        ),
        (
            "fulcrum_conntrack_confirmed_evictions_total",
            "Confirmed (seen more than once) flows pushed out of a set full of them.",
            c.confirmed_evictions,
        ),
        (
            "fulcrum_conntrack_expiries_total",
            "Flows forgotten after the idle timeout.",
            c.expiries,
        ),
        (
            "fulcrum_conntrack_repicks_total",
            "Tracked flows whose backend was gone or down and got a new one.",
            c.repicks,
        ),
        (
            "fulcrum_fragments_total",
            "IP fragments forwarded.",
            r.fragments,
        ),
        (
            "fulcrum_icmp_errors_forwarded_total",
            "ICMP errors about a VIP flow forwarded to its backend.",
            r.icmp_errors_forwarded,
        ),
        (
            "fulcrum_icmp_too_big_sent_total",
            "Frag-needed / packet-too-big errors sent to clients.",
            r.icmp_too_big_sent,
        ),
        (
            "fulcrum_bursts_total",
            "Non-empty RX bursts processed.",
            r.bursts,
        ),
    ] {
        family(o, name, "counter", help);
        sample(o, name, &[], value);
    }

    let h = input.burst;
    family(
        o,
        "fulcrum_burst_cycles",
        "histogram",
        "TSC cycles a worker spent on one non-empty burst.",
    );
    let bounds: Vec<u64> = burst_buckets().collect();
    let mut counts = vec![0u64; bounds.len()];
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            counts[i] += v.count_at_value();
        }
    }
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(&counts) {
        cumulative += count;
        sample(
            o,
            "fulcrum_burst_cycles_bucket",
            &[("le", &bound.to_string())],
            cumulative,
        );
    }
    sample(o, "fulcrum_burst_cycles_bucket", &[("le", "+Inf")], h.len());
    sample(
        o,
        "fulcrum_burst_cycles_sum",
        &[],
        (h.mean() * h.len() as f64) as u64,
    );
    sample(o, "fulcrum_burst_cycles_count", &[], h.len());

    api_metrics(o, &r.api);
    out
}

/// The control API's connections, refusals and closes.
fn api_metrics(o: &mut String, a: &ApiStats) {
    family(
        o,
        "fulcrum_api_connections_open",
        "gauge",
        "Control API connections open (admitted ones).",
    );
    sample(o, "fulcrum_api_connections_open", &[], a.connections_open);
    for (name, help, value) in [
        (
            "fulcrum_api_connections_total",
            "Control API connections accepted, refused ones included.",
            a.connections_total,
        ),
        (
            "fulcrum_api_accept_errors_total",
            "Failed accepts of control API connections (out of file descriptors or memory); each pauses accepting for 50 ms.",
            a.accept_errors,
        ),
    ] {
        family(o, name, "counter", help);
        sample(o, name, &[], value);
    }
    for (name, help, counts) in [
        (
            "fulcrum_api_refused_total",
            "Control API requests and connections refused with an error answer, by reason.",
            &a.refused,
        ),
        (
            "fulcrum_api_closed_total",
            "Control API connections closed without an answer, by reason.",
            &a.closed,
        ),
    ] {
        family(o, name, "counter", help);
        for c in counts {
            sample(o, name, &[("reason", &c.name)], c.count);
        }
    }
}

fn adoption_histogram(o: &mut String, a: &AdoptionStats) {
    const NAME: &str = "fulcrum_snapshot_adoption_seconds";
    family(
        o,
        NAME,
        "histogram",
        "From an API answer (or a health/MAC change's publish) until every worker runs the new snapshot.",
    );
    let mut cumulative = 0;
    for (bound, count) in ADOPTION_BUCKETS.iter().zip(&a.buckets) {
        cumulative += count;
        sample(
            o,
            &format!("{NAME}_bucket"),
            &[("le", &bound.to_string())],
            cumulative,
        );
    }
    sample(
        o,
        &format!("{NAME}_bucket"),
        &[("le", "+Inf")],
        a.report.measured,
    );
    let _ = writeln!(o, "{NAME}_sum {}", a.sum_seconds);
    sample(o, &format!("{NAME}_count"), &[], a.report.measured);
    let timeouts = "fulcrum_snapshot_adoption_timeouts_total";
    family(
        o,
        timeouts,
        "counter",
        "Snapshots some worker had not adopted 50 ms after the answer.",
    );
    sample(o, timeouts, &[], a.report.timeouts);
}

fn state_name(state: BackendState) -> &'static str {
    match state {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
        BackendState::Down => "down",
    }
}

/// A metric family's name, help text, and how to read its value from a `T`.
type CounterFamily<T> = (&'static str, &'static str, fn(&T) -> u64);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::adoption::AdoptionSample;
    use crate::control::messages::BackendView;
    use crate::encap::EncapMode;

    fn handle_with_two_workers() -> DataplaneHandle {
        let mut handle = DataplaneHandle::detached();
        handle.port_names = vec!["net_tap0".into()];
        for i in 0..2 {
            let s = WorkerStats::new(i, i as u32 + 1);
            s.rx[0].add(100);
            s.tx[0].add(120);
            s.count_drop(DropReason::TxFull);
            s.parse_drop(ParseError::BadIhl as usize);
            s.vip_packet(3, 100);
            s.backend_packet(7, 100);
            s.conntrack_flows.set(5);
            s.snapshot_version.set(9);
            handle.workers.push(Arc::new(s));
        }
        handle
    }

    fn vips() -> Vec<VipView> {
        vec![VipView {
            vip: "192.0.2.10:80/tcp".parse().unwrap(),
            id: 3,
            encap: EncapMode::Ipip,
            gue_port: None,
            table_size: 65537,
            healthcheck: None,
            all_backends_down: false,
            backends: vec![BackendView {
                address: "198.51.100.7".parse().unwrap(),
                id: 7,
                weight: 2,
                state: BackendState::Active,
                drained: false,
                health: HealthStatus::Unchecked,
                mac: None,
            }],
        }]
    }

    #[test]
    fn sums_over_workers() {
        let handle = handle_with_two_workers();
        let mut burst = stats::new_burst_histogram();
        for v in [100, 200, 5000] {
            burst.record(v).unwrap();
        }
        let r = stats_report(9, 1.0, &handle, &vips(), &burst, ApiStats::default());
        assert_eq!(
            (
                r.ports[0].rx_packets,
                r.ports[0].rx_bytes,
                r.ports[0].tx_bytes
            ),
            (2, 200, 240)
        );
        let tx_full = r.drops.iter().find(|d| d.name == "tx_full").unwrap();
        assert_eq!(tx_full.count, 2);
        let bad_ihl = r.parse_errors.iter().find(|d| d.name == "bad_ihl").unwrap();
        assert_eq!(bad_ihl.count, 2);
        assert_eq!((r.vips[0].packets, r.vips[0].bytes), (2, 200));
        assert_eq!(r.vips[0].backends[0].packets, 2);
        assert_eq!(r.conntrack.flows, 10);
        assert_eq!(r.burst_cycles.count, 3);
        assert!(r.burst_cycles.max >= 5000);
    }

    #[test]
    fn prometheus_text_has_labels_and_a_cumulative_histogram() {
        let handle = handle_with_two_workers();
        let mut burst = stats::new_burst_histogram();
        for v in [50, 100, 100, 5000] {
            burst.record(v).unwrap();
        }
        let vips = vips();
        let named = |pairs: &[(&str, u64)]| -> Vec<NamedCount> {
            pairs
                .iter()
                .map(|(name, count)| NamedCount {
                    name: (*name).into(),
                    count: *count,
                })
                .collect()
        };
        let api = ApiStats {
            connections_open: 3,
            connections_total: 41,
            accept_errors: 6,
            refused: named(&[("max_connections", 2), ("unauthorized", 0)]),
            closed: named(&[("idle", 5), ("write_timeout", 1)]),
        };
        let report = stats_report(9, 1.0, &handle, &vips, &burst, api);
        let workers: Vec<WorkerVersion> = handle
            .workers
            .iter()
            .map(|w| WorkerVersion {
                worker: w.worker,
                lcore: w.lcore,
                version: w.snapshot_version.get(),
            })
            .collect();
        let health = HealthReport {
            version: 9,
            vips: vec![],
        };
        let mut adoption = AdoptionStats::default();
        for adopted_us in [Some(4.0), Some(30.0), Some(30.0), Some(900.0), None] {
            adoption.record(AdoptionSample {
                version: 9,
                adopted_us,
                answered_us: 20.0,
                commit_us: 100.0,
            });
        }
        let text = prometheus(&MetricsInput {
            report: &report,
            vips: &vips,
            health: &health,
            workers: &workers,
            burst: &burst,
            adoption: &adoption,
        });
        for line in [
            "fulcrum_port_rx_packets_total{port=\"0\",device=\"net_tap0\"} 2",
            "fulcrum_drops_total{reason=\"tx_full\"} 2",
            "fulcrum_parse_errors_total{kind=\"bad_ihl\"} 2",
            "fulcrum_vip_packets_total{vip=\"192.0.2.10:80/tcp\"} 2",
            "fulcrum_backend_packets_total{vip=\"192.0.2.10:80/tcp\",backend=\"198.51.100.7\"} 2",
            "fulcrum_backend_weight{vip=\"192.0.2.10:80/tcp\",backend=\"198.51.100.7\"} 2",
            "fulcrum_vip_all_backends_down{vip=\"192.0.2.10:80/tcp\"} 0",
            "fulcrum_worker_snapshot_version{worker=\"1\",lcore=\"2\"} 9",
            "fulcrum_conntrack_flows 10",
            "fulcrum_burst_cycles_bucket{le=\"64\"} 1",
            "fulcrum_burst_cycles_bucket{le=\"128\"} 3",
            "fulcrum_burst_cycles_bucket{le=\"8192\"} 4",
            "fulcrum_burst_cycles_bucket{le=\"+Inf\"} 4",
            "fulcrum_burst_cycles_count 4",
            "# TYPE fulcrum_burst_cycles histogram",
            "# TYPE fulcrum_snapshot_adoption_seconds histogram",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"0.00001\"} 1",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"0.000025\"} 1",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"0.00005\"} 3",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"0.001\"} 4",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"0.05\"} 4",
            "fulcrum_snapshot_adoption_seconds_bucket{le=\"+Inf\"} 5",
            "fulcrum_snapshot_adoption_seconds_count 5",
            "fulcrum_snapshot_adoption_timeouts_total 1",
            "# TYPE fulcrum_api_connections_open gauge",
            "fulcrum_api_connections_open 3",
            "# TYPE fulcrum_api_connections_total counter",
            "fulcrum_api_connections_total 41",
            "# TYPE fulcrum_api_accept_errors_total counter",
            "fulcrum_api_accept_errors_total 6",
            "# TYPE fulcrum_api_refused_total counter",
            "fulcrum_api_refused_total{reason=\"max_connections\"} 2",
            "fulcrum_api_refused_total{reason=\"unauthorized\"} 0",
            "# TYPE fulcrum_api_closed_total counter",
            "fulcrum_api_closed_total{reason=\"idle\"} 5",
            "fulcrum_api_closed_total{reason=\"write_timeout\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a numeric value, and belongs to
        // a family announced (HELP and TYPE) before it, once.
        let mut announced: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap();
                assert!(!announced.contains(&name), "{name} announced twice");
                announced.push(name);
                continue;
            }
            if let Some(kind) = line.strip_prefix("# TYPE ") {
                assert_eq!(kind.split(' ').next(), announced.last().copied(), "{line}");
                continue;
            }
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "{line}");
            let name = line.split(['{', ' ']).next().unwrap();
            let family = announced.last().copied().unwrap_or_default();
            assert!(
                name == family
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(family)),
                "{line} is not of the family {family}"
            );
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("fulcrum_snapshot_adoption_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((sum - 964e-6).abs() < 1e-9, "{sum}");
        assert_eq!(adoption.report().max_adopted_us, 900.0);
        assert_eq!(adoption.report().last.unwrap().adopted_us, None);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("device", "a\"b\\c\nd")], 1);
        assert_eq!(out, "m{device=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
