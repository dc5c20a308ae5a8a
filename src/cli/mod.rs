//! The command line: `fulcrum run` (the daemon), `fulcrum maglev simulate`, and the
//! commands that talk to a running daemon's control API (`fulcrum vip`, `backend`, `stats`,
//! `health` and `config`).
//!
//! The daemon is found from `--api URL`, else `FULCRUM_API`, else `http://127.0.0.1:9180`;
//! `unix:/path` reaches a daemon listening on a Unix socket. The token comes from `--token`
//! or `FULCRUM_TOKEN`. Addresses are checked here before anything is sent, with the same
//! messages as the daemon's; every error says what was wrong and how to fix it, and makes
//! the command exit non-zero ([`CliError::exit_code`]).
//!
//! The parts:
//! - `api`: where the daemon is ([`ApiArgs`], [`ApiTarget`]), the HTTP transport over TCP
//!   or a Unix socket, raw answers ([`Answer`]), the errors ([`CliError`]) and the API's
//!   paths.
//! - `vip`, `backend`, `stats`, `health`, `config`: one subcommand each, its arguments and
//!   its text output.
//! - `table`: the output helpers they share (aligned tables, pretty JSON, stdout).
//! - `maglev`: `fulcrum maglev simulate`, which needs no daemon.
//! - here: the top-level parser ([`Cli`], [`Command`]) and [`ClientCommand`], which mounts
//!   the daemon's subcommands.

pub mod api;
pub mod backend;
pub mod config;
pub mod health;
pub mod maglev;
pub mod stats;
mod table;
pub mod vip;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use api::{Answer, ApiArgs, ApiTarget, CliError, API_ENV, DEFAULT_API};
pub use backend::BackendCommand;
pub use config::ConfigCommand;
pub use health::HealthArgs;
pub use stats::{rates_text, totals_text, StatsArgs};
pub use vip::{CheckArg, EncapArg, VipCommand};

/// fulcrum: a kernel-bypass layer-4 load balancer (DPDK, Maglev, direct server return).
#[derive(Parser, Debug)]
#[command(name = "fulcrum", version = crate::version::long_version_static(), about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub api: ApiArgs,
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
    Client(ClientCommand),
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

// The commands that talk to the daemon, for the top-level parser to mount (flattened into
// its subcommands; a doc comment here would become the program's about text).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// List, add and remove VIPs.
    #[command(subcommand)]
    Vip(VipCommand),
    /// List, add, remove, weight and drain the backends of a VIP.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Counters summed over workers; --watch for live rates.
    Stats(StatsArgs),
    /// Health-check state of every backend.
    Health(HealthArgs),
    /// Show the running configuration, or apply a configuration file's VIPs.
    #[command(subcommand)]
    Config(ConfigCommand),
}

impl ClientCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        match self {
            ClientCommand::Vip(c) => c.run(api),
            ClientCommand::Backend(c) => c.run(api),
            ClientCommand::Stats(c) => c.run(api),
            ClientCommand::Health(c) => c.run(api),
            ClientCommand::Config(c) => c.run(api),
        }
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            ClientCommand::Vip(c) => c.run_to(api, out),
            ClientCommand::Backend(c) => c.run_to(api, out),
            ClientCommand::Stats(c) => c.run_to(api, out, false),
            ClientCommand::Health(c) => c.run_to(api, out),
            ClientCommand::Config(c) => c.run_to(api, out),
        }
    }
}
