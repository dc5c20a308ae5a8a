//! Running the data plane: the per-packet logic of [`crate::datapath`] on DPDK's lcores,
//! ports and mbufs.
//!
//! The parts: this file starts and stops it (EAL, mempool, ports, exception TAPs, workers);
//! [`worker`] is the poll loop of one worker; [`handle`] is what the control plane holds of
//! the running data plane; [`bench`] measures it (`fulcrum bench`).
//!
//! [`run`] turns a validated [`Config`] into running workers, hands a [`DataplaneHandle`] to
//! the control plane's closure, and once it returns stops the workers, then the ports (which
//! flushes pcap output), then the EAL.
//!
//! Everything is built before the first worker launches: the ports, every queue, every
//! worker's conntrack table and pipeline. A start that fails therefore fails with no lcore
//! running. The workers borrow the ports and the pool that live on `run`'s stack, and run in
//! an [`lcore::scope`], which waits for them before those can be dropped; a guard sets the
//! stop flag when the control plane's closure ends, however it ends.

pub mod bench;
pub mod handle;
pub mod worker;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::datapath::pipeline::{Pipeline, PipelineConfig};
use crate::datapath::stats::{self, WorkerStats};
use crate::dpdk::{self, clock, lcore, Eal, Mempool, Port, PortConfig, RxQueue, TxQueue};
use crate::runtime::handle::{DataplaneHandle, PortCounters};
use crate::runtime::worker::{Worker, WorkerPort};
use crate::snapshot::{self, PortInfo, Publisher, VipSpec};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Dpdk(#[from] dpdk::DpdkError),
    #[error("port {index} ({device}): {reason}")]
    Port {
        index: usize,
        device: String,
        reason: String,
    },
    #[error("{0}")]
    Workers(String),
    #[error("the initial VIPs: {0}")]
    Initial(String),
    #[error("the configuration cannot be turned into tables: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("worker {worker}: conntrack: {source}")]
    Conntrack {
        worker: usize,
        source: crate::datapath::conntrack::ConnTableError,
    },
}

/// What [`run`] gives back once the data plane has stopped.
#[derive(Debug)]
pub struct Stopped<R> {
    /// The control plane closure's value.
    pub value: R,
    /// Mbufs still out of the pool once workers, ports and queues were gone (0 = no leak).
    pub mempool_in_use: u32,
}

/// Sets the workers' stop flag when dropped: on every way out of the control plane's
/// closure, so the lcore scope's wait that follows always ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Adds `-l` (main lcore 0 plus one lcore per worker) unless the EAL arguments choose lcores.
fn eal_args(config: &Config, devices: &[String]) -> Vec<String> {
    let mut args = config.dataplane.eal_args.clone();
    let chooses_lcores = args
        .iter()
        .any(|a| a == "-l" || a == "-c" || a.starts_with("--lcores") || a.starts_with("-l"));
    if !chooses_lcores {
        let workers: Vec<String> = match &config.dataplane.lcores {
            Some(l) => l.iter().map(|x| x.to_string()).collect(),
            None => (1..=config.dataplane.workers)
                .map(|x| x.to_string())
                .collect(),
        };
        let main = if workers.iter().any(|w| w == "0") {
            // Pick the first lcore not used by a worker.
            (0u16..)
                .map(|x| x.to_string())
                .find(|x| !workers.contains(x))
                .unwrap_or_else(|| "0".into())
        } else {
            "0".into()
        };
        args.push("-l".into());
        args.push(
            std::iter::once(main)
                .chain(workers)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    dpdk::eal_args_with_devices(&args, devices)
}

/// The exception port device for port `i`: the configured one, or a TAP.
fn exception_device(config: &Config, i: usize) -> Option<String> {
    if !config.dataplane.exception_path {
        return None;
    }
    let port = config.ports.get(i)?;
    Some(match &port.exception_device {
        Some(d) => d.clone(),
        None => format!("net_tap_exc{i},iface={}", port.exception_tap_name(i)),
    })
}

/// Runs `ip` with `args`; failures are logged, not fatal (the operator may manage the
/// interface themselves).
fn ip(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => tracing::warn!("cannot run ip {}: {e}", args.join(" ")),
    }
}

/// Makes the kernel side of an exception TAP stand in for the port: the port's MAC (so the
/// kernel's ARP/ND answers name the port), its addresses, and up.
fn setup_exception_iface(iface: &str, mac: [u8; 6], port: &crate::config::Port) {
    let mac = crate::addr::MacAddr(mac).to_string();
    ip(&["link", "set", "dev", iface, "address", &mac]);
    ip(&["link", "set", "dev", iface, "mtu", &port.mtu.to_string()]);
    ip(&["link", "set", "dev", iface, "up"]);
    if let Some(a) = port.address {
        ip(&[
            "addr",
            "replace",
            &format!("{a}/{}", port.prefix_len),
            "dev",
            iface,
        ]);
    }
    if let Some(a) = port.address6 {
        ip(&[
            "-6",
            "addr",
            "replace",
            &format!("{a}/{}", port.prefix_len6),
            "dev",
            iface,
            "nodad",
        ]);
    }
}

struct DpdkPortCounters {
    ids: Vec<u16>,
}

impl PortCounters for DpdkPortCounters {
    fn read(&self) -> Vec<dpdk::PortStats> {
        self.ids
            .iter()
            .map(|id| dpdk::port_stats(*id).unwrap_or_default())
            .collect()
    }
}

/// Starts the EAL, ports and workers for `config`, runs `control` with the control plane's
/// handle on this (the main) thread, and when it returns stops and joins the workers and
/// releases the ports, the pool and the EAL. The first snapshot holds `initial` (see
/// `control::initial_specs`), so workers balance from their first packet.
///
/// An error means nothing is left running: no worker was launched, or the ones that were
/// have been stopped and waited for.
pub fn run<R>(
    config: &Config,
    initial: &[VipSpec],
    control: impl FnOnce(DataplaneHandle) -> R,
) -> Result<Stopped<R>, DataplaneError> {
    let workers = usize::from(config.dataplane.workers);
    let burst = usize::from(config.dataplane.burst);
    let mut devices: Vec<String> = config.ports.iter().map(|p| p.device.clone()).collect();
    let exception_devices: Vec<Option<String>> = (0..config.ports.len())
        .map(|i| exception_device(config, i))
        .collect();
    devices.extend(exception_devices.iter().flatten().cloned());
    let eal = Eal::init(&eal_args(config, &devices))?;
    if let Err(e) = eal.enable_pdump() {
        tracing::warn!("live capture (dpdk-dumpcap) unavailable: {e}");
    }
    let worker_lcores = lcore::workers();
    if worker_lcores.len() != workers {
        return Err(DataplaneError::Workers(format!(
            "the EAL has {} worker lcores ({:?}) but [dataplane] workers = {workers}; give the EAL one lcore per worker besides the main lcore (e.g. -l 0,1)",
            worker_lcores.len(),
            worker_lcores
        )));
    }

    let all_ports = config.ports.len() + exception_devices.iter().flatten().count();
    let per_port: u32 = config
        .ports
        .iter()
        .map(|p| u32::from(p.rx_desc) + u32::from(p.tx_desc))
        .max()
        .unwrap_or(2048);
    // Rings full, plus each worker's three batches of a burst in flight, plus slack.
    let needed =
        all_ports as u32 * workers as u32 * per_port + (workers as u32 * 4 * burst as u32) + 4096;
    let pool_size = needed.next_power_of_two() - 1;
    let max_mtu = config.ports.iter().map(|p| p.mtu).max().unwrap_or(1500);
    let pool = Mempool::new(
        &eal,
        "fulcrum_pool",
        pool_size,
        256,
        dpdk::data_room_for_mtu(max_mtu),
    )?;

    let port_err = |index: usize, device: &str, reason: String| DataplaneError::Port {
        index,
        device: device.to_owned(),
        reason,
    };
    let mut ports = Vec::new();
    let mut port_infos = Vec::new();
    for (i, pc) in config.ports.iter().enumerate() {
        let id =
            Port::id_by_name(&pc.device).map_err(|e| port_err(i, &pc.device, e.to_string()))?;
        let cfg = PortConfig {
            rx_queues: workers as u16,
            tx_queues: workers as u16,
            rx_desc: pc.rx_desc,
            tx_desc: pc.tx_desc,
            mtu: Some(pc.mtu),
            promiscuous: pc.promiscuous,
        };
        let port =
            Port::start(id, &cfg, &pool).map_err(|e| port_err(i, &pc.device, e.to_string()))?;
        let mac = match pc.mac {
            Some(m) => {
                port.set_mac(m.0)
                    .map_err(|e| port_err(i, &pc.device, e.to_string()))?;
                m.0
            }
            None => port
                .mac()
                .map_err(|e| port_err(i, &pc.device, e.to_string()))?,
        };
        port_infos.push(PortInfo {
            mac,
            mtu: pc.mtu,
            src_v4: pc.address,
            src_v6: pc.address6,
            gateway_mac: pc.gateway_mac.map(|m| m.0),
            promiscuous: pc.promiscuous,
        });
        tracing::info!(
            "port {i}: {} (id {id}) mac {} mtu {} rss {:#x}",
            pc.device,
            crate::addr::MacAddr(mac),
            pc.mtu,
            port.rss_hash_functions()
        );
        ports.push(port);
    }
    let mut exception_ports = Vec::new();
    let mut exception_ifaces = Vec::new();
    for (i, dev) in exception_devices.iter().enumerate() {
        let Some(dev) = dev else {
            exception_ifaces.push(None);
            continue;
        };
        let id = Port::id_by_name(dev).map_err(|e| port_err(i, dev, e.to_string()))?;
        let cfg = PortConfig {
            rx_queues: workers as u16,
            tx_queues: workers as u16,
            ..PortConfig::default()
        };
        let port = Port::start(id, &cfg, &pool).map_err(|e| port_err(i, dev, e.to_string()))?;
        let pc = &config.ports[i];
        if pc.exception_device.is_none() {
            let iface = pc.exception_tap_name(i);
            setup_exception_iface(&iface, port_infos[i].mac, pc);
            exception_ifaces.push(Some(iface));
        } else {
            exception_ifaces.push(None);
        }
        exception_ports.push((i, port));
    }

    let first = snapshot::build(1, initial, &port_infos, None)?;
    let publisher = Publisher::new(first);
    let stop = Arc::new(AtomicBool::new(false));
    let hz = clock::tsc_hz().max(1);
    let pipeline_cfg = PipelineConfig {
        conntrack_flows: config.dataplane.conntrack_flows as usize,
        idle_timeout: u64::from(config.dataplane.conntrack_idle_timeout_secs) * hz,
        ticks_per_second: hz,
        icmp_rate: 1000,
    };
    // Every worker, complete (queues taken, conntrack table allocated), before any launches.
    let mut built = Vec::new();
    let mut all_stats = Vec::new();
    let mut collectors = Vec::new();
    for (w, &lc) in worker_lcores.iter().enumerate() {
        let q = w as u16;
        let mut wports = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let (rx, tx) = take_queues(port, q)?;
            let exception = match exception_ports.iter().find(|(pi, _)| *pi == i) {
                Some((_, ep)) => Some(take_queues(ep, q)?),
                None => None,
            };
            wports.push(WorkerPort { rx, tx, exception });
        }
        let stats = Arc::new(WorkerStats::new(w, lc));
        let (exchange, collector) = stats::histogram_exchange();
        let pipeline = Pipeline::new(&pipeline_cfg, stats.clone())
            .map_err(|source| DataplaneError::Conntrack { worker: w, source })?;
        built.push((
            lc,
            Worker {
                ports: wports,
                burst,
                pipeline,
                snapshot: publisher.reader(),
                stats: stats.clone(),
                histogram: exchange,
                stop: stop.clone(),
            },
        ));
        all_stats.push(stats);
        collectors.push(collector);
    }

    let handle = DataplaneHandle {
        publisher,
        ports: port_infos,
        port_names: config.ports.iter().map(|p| p.device.clone()).collect(),
        exception_ifaces,
        workers: all_stats,
        histograms: collectors,
        port_counters: Some(Box::new(DpdkPortCounters {
            ids: ports.iter().map(|p| p.id()).collect(),
        })),
    };
    let (value, exits) = lcore::scope(&eal, |scope| {
        let _stop = StopOnDrop(&stop);
        for (w, (lc, worker)) in built.into_iter().enumerate() {
            scope.launch(lc, move || worker.run())?;
            tracing::info!("worker {w} running on lcore {lc}");
        }
        Ok::<R, DataplaneError>(control(handle))
    });
    for exit in exits.iter().filter(|e| e.code != 0) {
        tracing::error!("worker on lcore {} exited with {}", exit.lcore, exit.code);
    }
    let value = value?;
    // Ports first (closing them flushes pcap output and returns their rings' mbufs), then
    // count what is still out of the pool, then the pool and the EAL.
    drop(ports);
    drop(exception_ports);
    let mempool_in_use = pool.in_use();
    drop(pool);
    eal.cleanup();
    Ok(Stopped {
        value,
        mempool_in_use,
    })
}

/// Takes RX and TX queue `q` of `port` for one worker.
fn take_queues<'port, 'pool>(
    port: &'port Port<'pool>,
    q: u16,
) -> Result<(RxQueue<'port, 'pool>, TxQueue<'port, 'pool>), DataplaneError> {
    match (port.rx_queue(q), port.tx_queue(q)) {
        (Some(rx), Some(tx)) => Ok((rx, tx)),
        _ => Err(DataplaneError::Workers(format!(
            "queue {q} of port {} already taken",
            port.name()
        ))),
    }
}
