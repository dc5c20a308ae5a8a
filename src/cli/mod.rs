//! The command line: `fulcrum run` (the daemon), `fulcrum maglev simulate`, and the
//! commands that talk to a running daemon's API.

pub mod api;
pub mod maglev;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// fulcrum: a kernel-bypass layer-4 load balancer (DPDK, Maglev, direct server return).
#[derive(Parser, Debug)]
#[command(name = "fulcrum", version = crate::version::long_version_static(), about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub api: api::ApiArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the balancer: start DPDK, the workers and the control plane.
    Run(RunArgs),
    /// Measure the data plane: run it on the configured ports and report Mpps, cycles per
    /// packet, drops and burst latency.
    Bench(BenchArgs),
    /// Maglev table tools.
    #[command(subcommand)]
    Maglev(MaglevCommand),
    #[command(flatten)]
    Client(api::ClientCommand),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The configuration file (TOML; see docs/operations.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Check the configuration and exit without starting DPDK.
    #[arg(long)]
    pub check: bool,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The configuration file (use a `net_pcap ...,infinite_rx=1` port for a CPU benchmark).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    pub warmup: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 5 or 0.5)"))?;
    if !(0.0..=3600.0).contains(&v) || v.is_nan() {
        return Err(format!("{v} seconds is out of range (0 to 3600)"));
    }
    Ok(v)
}

#[derive(Subcommand, Debug)]
pub enum MaglevCommand {
    /// Build Maglev tables for a backend set and report balance, disruption and build time.
    Simulate(maglev::SimulateArgs),
}
