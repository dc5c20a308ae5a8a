//! A fixed amount of pipeline work for an instruction counter: `Pipeline::process_burst`
//! over the same frames, snapshot and reloads as `benches/pipeline.rs`, for a given number
//! of bursts and nothing else, so that
//!
//! ```text
//! valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/deps/instructions-HASH MODE FLOWS CONNTRACK BURSTS
//! ```
//!
//! run once with BURSTS = N and once with BURSTS = 0 gives the instructions of N bursts as
//! the difference of the two totals (set-up and warm-up cancel out). `scripts/bench.sh
//! --instructions` does that and prints instructions per packet; docs/benchmarks.md has the
//! figures. Deterministic: the same build gives the same count.
//!
//! MODE is `ipip`, `gue` or `l2dsr`; the warm-up is one pass over every flow, as in
//! `benches/pipeline.rs`.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use fulcrum::datapath::encap::EncapMode;
use fulcrum::datapath::pipeline::{Pipeline, PipelineConfig, Verdict};
use fulcrum::datapath::stats::{DropReason, WorkerStats};
use fulcrum::packet::{PacketBuf, VecPacket};
use fulcrum::snapshot::{self, BackendSpec, BackendState, PortInfo, Snapshot, VipSpec};
use std::net::Ipv4Addr;

const BURST: usize = 32;
const FRAME: usize = 64;

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Flow `i` of `scripts/gen-traffic --flows N`, as in `benches/pipeline.rs`.
fn frame(i: u32) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x1b]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xc1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((FRAME - 14) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&(0xc612_0000u32 + i % 131_072).to_be_bytes());
    ip[16..20].copy_from_slice(&[192, 0, 2, 10]);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let sport = 1024 + ((i / 131_072 * 7919 + i) % 64_512) as u16;
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    f
}

fn snapshot(mode: EncapMode) -> Snapshot {
    let port = PortInfo {
        mac: [0x02, 0, 0, 0, 0, 0x1b],
        mtu: 1500,
        src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
        src_v6: None,
        gateway_mac: Some([0x02, 0, 0, 0, 0, 1]),
        promiscuous: false,
    };
    let vip = VipSpec {
        id: 0,
        key: "192.0.2.10:80/tcp".parse().expect("vip"),
        encap: mode,
        gue_port: fulcrum::datapath::encap::GUE_DEFAULT_PORT,
        table_size: 65_537,
        backends: (1..=3u8)
            .map(|b| BackendSpec {
                id: u32::from(b),
                addr: format!("198.51.100.{}", 10 + b).parse().expect("backend"),
                weight: u32::from(b),
                state: BackendState::Active,
                mac: Some([0x02, 0xbe, 0, 0, 0, b]),
            })
            .collect(),
    };
    snapshot::build(1, &[vip], &[port], None).expect("snapshot")
}

/// Puts `bytes` back into `p` at the default headroom, whatever encapsulation did to it.
fn reload(p: &mut VecPacket, bytes: &[u8]) {
    let len = p.len();
    p.adj(len);
    let back = p.headroom() - VecPacket::DEFAULT_HEADROOM;
    p.prepend(back);
    p.trim(back.saturating_sub(bytes.len()));
    if let Some(tail) = bytes.len().checked_sub(back) {
        p.append(tail);
    }
    p.data_mut().copy_from_slice(bytes);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; this program is run directly.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [mode, flows, conntrack, bursts] = args[..] else {
        eprintln!("usage: instructions MODE FLOWS CONNTRACK BURSTS (MODE: ipip, gue, l2dsr)");
        return ExitCode::from(2);
    };
    let Some(mode) = EncapMode::ALL.into_iter().find(|m| m.as_str() == mode) else {
        eprintln!("unknown mode {mode:?}");
        return ExitCode::from(2);
    };
    let (Ok(flows), Ok(conntrack), Ok(bursts)) = (
        flows.parse::<u32>(),
        conntrack.parse::<usize>(),
        bursts.parse::<u64>(),
    ) else {
        eprintln!("FLOWS, CONNTRACK and BURSTS are numbers");
        return ExitCode::from(2);
    };
    let snap = snapshot(mode);
    let cfg = PipelineConfig {
        conntrack_flows: conntrack,
        idle_timeout: u64::MAX / 4,
        ticks_per_second: 1_000_000_000,
        icmp_rate: 1000,
    };
    let mut pipeline = Pipeline::new(&cfg, Arc::new(WorkerStats::new(0, 1))).expect("pipeline");
    let frames: Vec<[u8; FRAME]> = (0..flows.max(1)).map(frame).collect();
    let mut pkts: Vec<VecPacket> = (0..BURST).map(|_| VecPacket::new(&[0; FRAME])).collect();
    let mut verdicts = [Verdict::Drop(DropReason::Parse); BURST];
    let mut next = 0usize;
    let mut now = 0u64;
    let mut burst = |pipeline: &mut Pipeline, now: u64| {
        for p in &mut pkts {
            reload(p, &frames[next]);
            next = if next + 1 == frames.len() {
                0
            } else {
                next + 1
            };
        }
        pipeline.process_burst(&snap, 0, &mut pkts, &mut verdicts, now);
        black_box(&verdicts);
        verdicts[0]
    };
    for _ in 0..(flows as usize).div_ceil(BURST) {
        now += 1;
        let first = burst(&mut pipeline, now);
        if first != Verdict::Forward {
            eprintln!("warm-up: {first:?}");
            return ExitCode::FAILURE;
        }
    }
    for _ in 0..bursts {
        now += 1;
        burst(&mut pipeline, now);
    }
    ExitCode::SUCCESS
}
