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

use fulcrum::datapath::encap::EncapMode;
use fulcrum::datapath::pipeline::{Pipeline, Verdict};
use fulcrum::datapath::stats::DropReason;
use fulcrum::packet::VecPacket;

mod common;

use common::{frame, pipeline, reload, snapshot, BURST, FRAME};

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
    let mut pipeline = pipeline(conntrack);
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
