//! The real daemon under configuration churn: 10,000 snapshot swaps through the API while the
//! worker forwards a pcap replayed without end. Nothing may be lost or mis-sent because of a
//! swap, the daemon must not crash, and retired snapshots must be freed (memory stays flat).
//!
//! Also, run by hand (ignored), two measurements with 100 VIPs of 1,000 backends each: how
//! long after an API answer every worker runs the new snapshot, and how long after the
//! publish itself. They are meant for release builds, on a machine where nothing else
//! competes for the worker's core:
//!
//! ```text
//! cargo test --release --test daemon_stress -- --ignored --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{dataplane_toml, quantile, unique_prefix, vip_path, DaemonProcess};
use common::golden::{tcp_frame, write_pcap, ACK, GATEWAY_MAC, LB_V4, LB_V6};

/// The churned VIP and the one left alone.
const CHURNED: &str = "192.0.2.10:80/tcp";
const STEADY: &str = "192.0.2.20:80/tcp";
const SWAPS: usize = 10_000;

/// The tests here each busy a worker core: one at a time, or they measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// `flows` TCP flows from distinct clients to `vip`, one frame each; the pcap is replayed
/// without end, so every flow keeps sending.
fn flows_to(vip: Ipv4Addr, flows: u16) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let client = IpAddr::V4(Ipv4Addr::new(198, 18, (i / 200) as u8, (i % 200) as u8 + 1));
            tcp_frame(client, IpAddr::V4(vip), 40_000 + i, 80, ACK, b"churn")
        })
        .collect()
}

fn port_toml(input: &Path) -> String {
    format!(
        r#"[[port]]
device = "net_pcap0,rx_pcap={},infinite_rx=1"
mtu = 1500
address = "{LB_V4}"
address6 = "{LB_V6}"
gateway_mac = "{}"
"#,
        input.display(),
        fulcrum::addr::MacAddr(GATEWAY_MAC)
    )
}

/// Packets per VIP and per backend address, from `GET /v1/stats`.
struct Counts {
    vips: BTreeMap<String, u64>,
    backends: BTreeMap<(String, String), u64>,
    rx: u64,
    tx: u64,
}

fn counts(d: &DaemonProcess) -> Counts {
    let stats = d.ok("GET", "/v1/stats", None);
    let mut c = Counts {
        vips: BTreeMap::new(),
        backends: BTreeMap::new(),
        rx: stats["ports"][0]["rx_packets"].as_u64().unwrap(),
        tx: stats["ports"][0]["tx_packets"].as_u64().unwrap(),
    };
    for v in stats["vips"].as_array().unwrap() {
        let vip = v["vip"].as_str().unwrap().to_owned();
        c.vips.insert(vip.clone(), v["packets"].as_u64().unwrap());
        for b in v["backends"].as_array().unwrap() {
            let backend = b["backend"].as_str().unwrap().to_owned();
            c.backends
                .insert((vip.clone(), backend), b["packets"].as_u64().unwrap());
        }
    }
    c
}

/// The i-th change: a cycle of weight, membership and drain changes of the churned VIP that
/// always leaves it backends with weight (198.51.100.3 is never touched).
fn change(i: usize) -> (&'static str, String, Option<&'static str>) {
    let vip = vip_path(CHURNED);
    match i % 6 {
        0 => (
            "PATCH",
            format!("{vip}/backends/198.51.100.1"),
            Some(r#"{"weight": 2}"#),
        ),
        1 => (
            "POST",
            format!("{vip}/backends"),
            Some(r#"{"address": "198.51.100.4", "weight": 3}"#),
        ),
        2 => ("POST", format!("{vip}/backends/198.51.100.2/drain"), None),
        3 => (
            "PATCH",
            format!("{vip}/backends/198.51.100.1"),
            Some(r#"{"weight": 1}"#),
        ),
        4 => ("DELETE", format!("{vip}/backends/198.51.100.4"), None),
        _ => ("POST", format!("{vip}/backends/198.51.100.2/undrain"), None),
    }
}

#[test]
fn ten_thousand_swaps_under_traffic_lose_nothing_and_free_their_snapshots() {
    let _exclusive = exclusive();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    let mut frames = flows_to(Ipv4Addr::new(192, 0, 2, 10), 48);
    frames.extend(flows_to(Ipv4Addr::new(192, 0, 2, 20), 16));
    write_pcap(&input, &frames);
    let prefix = unique_prefix("stress");
    let config = format!(
        r#"{}
{}
[control]
listen = "127.0.0.1:0"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 1009

[[vip.backend]]
address = "198.51.100.1"

[[vip.backend]]
address = "198.51.100.2"

[[vip.backend]]
address = "198.51.100.3"

[[vip]]
address = "192.0.2.20:80"
protocol = "tcp"
encap = "ipip"
table_size = 1009

[[vip.backend]]
address = "198.51.100.20"
"#,
        // Without the exception path every frame is the worker's: forwarded or a counted drop.
        dataplane_toml(&prefix, 512, "exception_path = false"),
        port_toml(&input),
    );
    let config_path = dir.path().join("fulcrum.toml");
    std::fs::write(&config_path, config).unwrap();
    let d = DaemonProcess::start(&config_path, &prefix, Duration::from_secs(30));

    let mut version = d.ok("GET", "/v1/snapshot", None)["version"]
        .as_u64()
        .unwrap();
    let mut rss_after_1000 = 0;
    let mut rx_after_1000 = 0;
    let churn_started = Instant::now();
    for i in 0..SWAPS {
        let (method, path, body) = change(i);
        let answer = d.ok(method, &path, body);
        let acknowledged = answer["version"].as_u64().unwrap();
        assert_eq!(acknowledged, version + 1, "change {i}: {method} {path}");
        version = acknowledged;
        if i + 1 == 1000 {
            rss_after_1000 = d.vm_rss_kib();
            rx_after_1000 = counts(&d).rx;
        }
    }
    let churn = churn_started.elapsed();
    let rss_after_10000 = d.vm_rss_kib();

    // The last change reached the worker, and the worker kept forwarding throughout.
    let snapshot = d.ok("GET", "/v1/snapshot", None);
    assert_eq!(snapshot["version"], version);
    assert_eq!(snapshot["workers"][0]["version"], version, "{snapshot}");
    assert_eq!(snapshot["all_workers_current"], true);
    let adoption = &snapshot["adoption"];
    assert!(
        adoption["measured"].as_u64().unwrap() >= SWAPS as u64,
        "{adoption}"
    );
    // Each publish swapped out one snapshot; the worker holds at most the one before the
    // newest while it finishes a burst. Anything more is a retired snapshot never freed.
    let retired = snapshot["retired_waiting"].as_u64().unwrap();
    assert!(retired <= 1, "{retired} retired snapshots still held");

    // Counters are read while the worker runs. `GET /v1/stats` reads a port's counters,
    // then each VIP's, then its backends'; the worker counts a packet for its VIP, then for
    // its backend, then (once the burst is sent) for the port. So in one answer a backend
    // count read after its VIP's can trail it by at most the one packet between the two
    // increments, unless packets went elsewhere; and the VIPs' sum is at least what the
    // port had sent.
    let after_churn = counts(&d);
    // The steady VIP's table was shared by all 10,001 snapshots: every one of its packets
    // over the whole run went to its one backend, whatever the swaps around it did.
    let steady_vip = after_churn.vips[STEADY];
    let steady_backend = after_churn.backends[&(STEADY.to_owned(), "198.51.100.20".to_owned())];
    assert!(
        steady_backend + 1 >= steady_vip && steady_vip > 0,
        "{steady_vip} packets to {STEADY}, only {steady_backend} to its backend"
    );
    assert!(after_churn.vips.values().sum::<u64>() >= after_churn.tx);

    // Quiet window: with the churn over, every packet of the churned VIP goes to one of its
    // current backends (a removed one's id is no longer listed). Differences of two answers
    // lose the exact bound above (a read delayed between a VIP and its backends lets both
    // move apart), so they get a tolerance of 2 %: a control thread preempted for 20 ms in
    // the middle of a read, or a systematic mis-send of one packet in 50.
    let before = counts(&d);
    std::thread::sleep(Duration::from_secs(1));
    let after = counts(&d);
    for vip in [CHURNED, STEADY] {
        let sent = after.vips[vip] - before.vips[vip];
        let to_backends: u64 = after
            .backends
            .iter()
            .filter(|((v, _), _)| v == vip)
            .map(|(k, n)| n - before.backends.get(k).copied().unwrap_or(0))
            .sum();
        assert!(sent > 1000, "vip {vip}: only {sent} packets in 1 s");
        assert!(
            sent.abs_diff(to_backends) <= (sent / 50).max(64),
            "vip {vip}: {sent} packets but {to_backends} went to its backends"
        );
    }
    assert!(after.rx > rx_after_1000 && rx_after_1000 > 0);

    let metrics = d.metrics();
    let adoption_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fulcrum_snapshot_adoption_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no adoption histogram in /metrics"));
    assert_eq!(adoption_count, adoption["measured"].as_u64().unwrap());
    let buckets: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("fulcrum_snapshot_adoption_seconds_bucket"))
        .collect();
    eprintln!(
        "adoption after the answer, cumulative: {}",
        buckets.join(", ")
    );

    let exit = d.terminate(Duration::from_secs(20));
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let (rx, tx) = (exit.total("rx_packets"), exit.total("tx_packets"));
    let to_kernel = exit.total("to_kernel_packets");
    let drops = exit.drops();
    let dropped: u64 = drops.values().sum();
    // Every packet received was sent or is a counted drop; and since the churned VIP always
    // had backends with weight and every frame is well formed, there is no drop at all.
    assert_eq!(rx, tx + to_kernel + dropped, "{}", exit.totals);
    assert!(drops.is_empty(), "drops: {drops:?}");
    assert_eq!(exit.total("mempool_in_use_at_exit"), 0, "{}", exit.totals);

    // Freed snapshots keep memory flat. A retired snapshot that leaked would hold at least
    // the churned VIP's Maglev table (1009 slots of 4 bytes) and its backend array (one slot
    // per backend id handed out, ~1,700 ids by the end, 48 bytes each): 9,000 leaked swaps
    // would add well over 36 MiB. 8 MiB leaves room for allocator noise and for the ids'
    // legitimate growth (one array per live snapshot, the released-id quarantine).
    let growth_kib = rss_after_10000.saturating_sub(rss_after_1000);
    eprintln!(
        "{SWAPS} swaps in {churn:.2?} ({:.0} µs each); VmRSS {rss_after_1000} KiB after 1,000, {rss_after_10000} KiB after 10,000; {rx} packets forwarded; adoption {adoption}; total {:.1?}",
        churn.as_secs_f64() * 1e6 / SWAPS as f64,
        started.elapsed()
    );
    assert!(
        growth_kib < 8 * 1024,
        "VmRSS grew by {growth_kib} KiB between 1,000 and 10,000 swaps"
    );
}

/// 100 VIPs of 1,000 backends each (500 IPv4, 500 IPv6), default table size 65537.
fn scale_vips_toml() -> String {
    let mut text = String::with_capacity(8 << 20);
    for v in 1..=100u32 {
        text.push_str(&format!(
            "[[vip]]\naddress = \"192.0.2.{v}:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n\n"
        ));
        for j in 0..1000u32 {
            let address = match j {
                0..=253 => format!("198.51.100.{}", j + 1),
                // 203.0.113.2 is the balancer's own address.
                254..=499 => format!("203.0.113.{}", j - 254 + 3),
                _ => format!("2001:db8:2::{:x}", j - 499),
            };
            text.push_str(&format!("[[vip.backend]]\naddress = \"{address}\"\n\n"));
        }
    }
    text
}

/// The scale configuration, with a pcap of 64 flows to four of the VIPs replayed without end
/// written to `dir`.
fn scale_config(dir: &Path, prefix: &str) -> String {
    let input = dir.join("in.pcap");
    let mut frames = Vec::new();
    for v in 1..=4 {
        frames.extend(flows_to(Ipv4Addr::new(192, 0, 2, v), 16));
    }
    write_pcap(&input, &frames);
    format!(
        "{}\n{}\n[control]\nlisten = \"127.0.0.1:0\"\n\n{}",
        dataplane_toml(prefix, 1024, "exception_path = false"),
        port_toml(&input),
        scale_vips_toml()
    )
}

fn summary(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    eprintln!(
        "{name:<42} p50 {:>9.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
        quantile(values, 0.5),
        quantile(values, 0.99),
        values[values.len() - 1]
    );
}

/// Through the API (see the module's comment for how to run it; `FULCRUM_BIN` picks another
/// daemon binary): 100 weight changes, each to a different VIP, while the worker forwards a
/// pcap replayed without end; for each, the daemon reports how long after its answer every
/// worker ran the new snapshot (`GET /v1/snapshot`'s `adoption`).
#[test]
#[ignore = "a measurement: run with --release, see the module's comment"]
fn adoption_latency_at_scale() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("adoption");
    let config_path = dir.path().join("fulcrum.toml");
    std::fs::write(&config_path, scale_config(dir.path(), &prefix)).unwrap();
    let booting = Instant::now();
    let d = DaemonProcess::start(&config_path, &prefix, Duration::from_secs(600));
    let boot = booting.elapsed();
    // The client (this process) stays off the worker's core, as a remote client would.
    let _pinned = common::daemon::Pinned::to("0");

    let (mut adopted, mut answered, mut commit, mut round_trip) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Versions some worker had not adopted 50 ms after the answer.
    let mut late = Vec::new();
    for i in 0..100u32 {
        let vip = format!("192.0.2.{}:80/tcp", i % 100 + 1);
        let path = format!("{}/backends/198.51.100.{}", vip_path(&vip), i / 100 + 1);
        let sent = Instant::now();
        let answer = d.ok("PATCH", &path, Some(r#"{"weight": 2}"#));
        round_trip.push(sent.elapsed().as_secs_f64() * 1e6);
        let version = answer["version"].as_u64().unwrap();
        let snapshot = d.ok("GET", "/v1/snapshot", None);
        let last = &snapshot["adoption"]["last"];
        assert_eq!(last["version"], version, "{snapshot}");
        match last["adopted_us"].as_f64() {
            Some(us) => adopted.push(us),
            None => late.push(version),
        }
        answered.push(last["answered_us"].as_f64().unwrap());
        commit.push(last["commit_us"].as_f64().unwrap());
    }
    let stats = d.ok("GET", "/v1/stats", None);
    let forwarded = stats["ports"][0]["tx_packets"].as_u64().unwrap();
    let rss = d.vm_rss_kib();
    let exit = d.terminate(Duration::from_secs(60));
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(forwarded > 0, "the worker forwarded nothing");

    eprintln!(
        "{}: 100 VIPs x 1000 backends, started in {boot:.1?}, VmRSS {} MiB, {forwarded} packets forwarded during the run",
        common::daemon::daemon_bin().display(),
        rss / 1024
    );
    summary("answer sent -> all workers adopted", &mut adopted);
    summary("publish -> answer sent", &mut answered);
    summary("validate+build+publish (control thread)", &mut commit);
    summary("PATCH round trip (client)", &mut round_trip);
    assert!(
        late.is_empty(),
        "not adopted within 50 ms: versions {late:?}"
    );
}

/// The data plane's side alone, in this process: the test thread stands where the control
/// thread does (the EAL's main lcore), builds each snapshot, publishes it and spins until the
/// worker, busy forwarding, runs it. Unlike the API's measurement, which starts when the
/// answer leaves, this one starts at the publish itself.
#[test]
#[ignore = "a measurement: run with --release, see the module's comment"]
fn adoption_by_the_worker_in_process_at_scale() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("adoption-in-process");
    let _runtime_dir = common::daemon::RuntimeDir(prefix.clone());
    let config = fulcrum::config::from_str(&scale_config(dir.path(), &prefix), "scale.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut specs = fulcrum::control::initial_specs(&config).unwrap();
    let initial = specs.clone();
    let stopped = fulcrum::runtime::run(&config, &initial, |mut handle| {
        let workers = handle.workers.clone();
        let (mut build, mut reclaim, mut adopted, mut late) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for i in 0..100 {
            specs[i].backends[0].weight = 2;
            let version = handle.publisher.version() + 1;
            let building = Instant::now();
            let previous = handle.publisher.current();
            let next =
                fulcrum::snapshot::build(version, &specs, &handle.ports, Some(&previous)).unwrap();
            drop(previous);
            build.push(building.elapsed().as_secs_f64() * 1e6);
            // A publish swaps the pointer, then frees the retired snapshots no worker holds (the
            // one before last: ~100 µs for its 100,000-entry backend array). Freeing them first
            // leaves the swap alone in the timed publish; the worker still holds the last one.
            let reclaiming = Instant::now();
            handle.publisher.reclaim();
            reclaim.push(reclaiming.elapsed().as_secs_f64() * 1e6);
            let publishing = Instant::now();
            handle.publisher.publish(next);
            // A tight spin: a yield on a shared core could hand it away for a time slice and
            // measure the scheduler instead of the worker.
            loop {
                if fulcrum::control::workers_at(&workers, version) {
                    adopted.push(publishing.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                if publishing.elapsed() > Duration::from_millis(50) {
                    late += 1;
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let forwarded = workers[0].total_tx_packets();
        (build, reclaim, adopted, late, forwarded)
    })
    .unwrap();
    assert_eq!(stopped.mempool_in_use, 0, "mbufs leaked");
    let (mut build, mut reclaim, mut adopted, late, forwarded) = stopped.value;
    eprintln!("in process, 100 VIPs x 1000 backends, {forwarded} packets forwarded meanwhile:");
    summary("snapshot build (one VIP's table rebuilt)", &mut build);
    summary("free the retired snapshot (control thread)", &mut reclaim);
    summary("publish -> the worker runs it", &mut adopted);
    assert_eq!(late, 0, "{late} snapshots not adopted within 50 ms");
}
