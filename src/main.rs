//! The `fulcrum` program: the daemon (`fulcrum run`), the benchmark, and the CLI that talks
//! to a running daemon. The work is in the library; this file parses arguments and exits.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use fulcrum::cli::{BenchArgs, Cli, Command, MaglevCommand, RunArgs};
use fulcrum::control::ControlPlane;
use fulcrum::stats::Totals;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FULCRUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn run(args: &RunArgs) -> ExitCode {
    init_logging();
    let config = match fulcrum::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: configuration OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("fulcrum: cannot handle signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    // The state file is read once, here: the data plane starts on its VIPs, and the control
    // plane takes the same state over.
    let initial = match fulcrum::control::Initial::load(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            return ExitCode::from(2);
        }
    };
    let specs = initial.specs();
    let control_config = config.clone();
    let vips = config.vips.len();
    let ran = fulcrum::dataplane::run(&config, &specs, |handle| {
        tracing::info!(
            "running: {} port(s), {} worker(s), {} VIP(s) configured",
            handle.ports.len(),
            handle.workers.len(),
            vips
        );
        let workers = handle.workers.clone();
        let served = ControlPlane::start(control_config, initial, handle, Default::default())
            .and_then(|cp| {
                tracing::info!("control API on {}", cp.local_addr());
                cp.serve(stop.clone())
            });
        tracing::info!("stopping");
        (served, workers)
    });
    let ((served, workers), in_use) = match ran {
        Ok(s) => (s.value, s.mempool_in_use),
        Err(e) => {
            eprintln!("fulcrum: cannot start the data plane: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: control plane: {e}");
            ExitCode::from(1)
        }
    };
    let mut totals = serde_json::to_value(Totals::of(&workers)).unwrap_or_default();
    totals["mempool_in_use_at_exit"] = in_use.into();
    match serde_json::to_string(&totals) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("fulcrum: cannot print the final counters: {e}"),
    }
    code
}

fn bench(args: &BenchArgs) -> ExitCode {
    init_logging();
    let config = match fulcrum::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            return ExitCode::from(2);
        }
    };
    match fulcrum::bench::run(
        &config,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
    ) {
        Ok(r) if args.json => match serde_json::to_string(&r) {
            Ok(j) => {
                println!("{j}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fulcrum: {e}");
                ExitCode::from(1)
            }
        },
        Ok(r) => {
            print!("{}", r.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fulcrum: cannot start the data plane: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => run(args),
        Command::Bench(args) => bench(args),
        Command::Maglev(MaglevCommand::Simulate(args)) => {
            match fulcrum::cli::maglev::simulate(args) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fulcrum: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Client(c) => match cli.api.target().and_then(|api| c.run(&api)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
    }
}
