//! Starting and stopping the data plane: EAL, mempool, ports, exception TAPs, workers.
//!
//! `start` turns a validated [`Config`] into running workers and a [`DataplaneHandle`] for the
//! control plane; [`Dataplane::shutdown`] stops the workers, then the ports (which flushes
//! pcap output), then the EAL.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::dpdk::{self, clock, lcore, Eal, Mempool, Port, PortConfig, RxQueue, TxQueue};
use crate::handle::{DataplaneHandle, PortCounters};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::snapshot::{self, PortInfo, Publisher, VipSpec};
use crate::stats::{self, WorkerStats};
use crate::worker::{Worker, WorkerPort};

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
    #[error("conntrack: {0}")]
    Conntrack(#[from] crate::conntrack::ConnTableError),
}

/// The running data plane (everything but what the control plane holds).
pub struct Dataplane {
    eal: Option<Eal>,
    ports: Vec<Port>,
    exception_ports: Vec<Port>,
    worker_lcores: Vec<u32>,
    stop: Arc<AtomicBool>,
    pool: Option<Arc<Mempool>>,
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

/// Starts the EAL, ports and workers for `config`; returns the data plane (to shut down
/// later) and the control plane's handle. The first snapshot holds `initial` (see
/// `control::initial_specs`), so workers balance from their first packet.
pub fn start(
    config: &Config,
    initial: &[VipSpec],
) -> Result<(Dataplane, DataplaneHandle), DataplaneError> {
    let workers = usize::from(config.dataplane.workers);
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
    let needed = all_ports as u32 * workers as u32 * per_port
        + (workers as u32 * 4 * dpdk::BURST as u32)
        + 4096;
    let pool_size = needed.next_power_of_two() - 1;
    let max_mtu = config.ports.iter().map(|p| p.mtu).max().unwrap_or(1500);
    let pool = Arc::new(Mempool::new(
        "fulcrum_pool",
        pool_size,
        256,
        dpdk::data_room_for_mtu(max_mtu),
    )?);

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
        let port = Port::start(id, &cfg, pool.clone())
            .map_err(|e| port_err(i, &pc.device, e.to_string()))?;
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
        let port =
            Port::start(id, &cfg, pool.clone()).map_err(|e| port_err(i, dev, e.to_string()))?;
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
    let mut all_stats = Vec::new();
    let mut collectors = Vec::new();
    for (w, &lc) in worker_lcores.iter().enumerate() {
        let q = w as u16;
        let mut wports = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let take = |p: &Port| -> Result<(RxQueue, TxQueue), DataplaneError> {
                match (p.rx_queue(q), p.tx_queue(q)) {
                    (Some(rx), Some(tx)) => Ok((rx, tx)),
                    _ => Err(DataplaneError::Workers(format!(
                        "queue {q} of port {} already taken",
                        p.name()
                    ))),
                }
            };
            let (rx, tx) = take(port)?;
            let exception = match exception_ports.iter().find(|(pi, _)| *pi == i) {
                Some((_, ep)) => Some(take(ep)?),
                None => None,
            };
            wports.push(WorkerPort { rx, tx, exception });
        }
        let stats = Arc::new(WorkerStats::new(w, lc));
        let (exchange, collector) = stats::histogram_exchange();
        let worker = Worker {
            ports: wports,
            pipeline: Pipeline::new(&pipeline_cfg, stats.clone())?,
            snapshot: publisher.reader(),
            stats: stats.clone(),
            histogram: exchange,
            stop: stop.clone(),
        };
        lcore::launch(lc, move || worker.run())?;
        tracing::info!("worker {w} running on lcore {lc}");
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
    let dp = Dataplane {
        eal: Some(eal),
        ports,
        exception_ports: exception_ports.into_iter().map(|(_, p)| p).collect(),
        worker_lcores,
        stop,
        pool: Some(pool),
    };
    Ok((dp, handle))
}

impl Dataplane {
    /// Stops the workers, waits for them, stops and closes the ports (flushing pcap
    /// output), frees the pool and cleans up the EAL. Returns how many mbufs were still out
    /// of the pool once everything that could hold one was gone (0 = no leak).
    pub fn shutdown(mut self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        for &l in &self.worker_lcores {
            let code = lcore::wait(l);
            if code != 0 {
                tracing::error!("worker on lcore {l} exited with {code}");
            }
        }
        self.ports.clear();
        self.exception_ports.clear();
        let in_use = self.pool.as_ref().map_or(0, |p| p.in_use());
        self.pool.take();
        if let Some(eal) = self.eal.take() {
            eal.cleanup();
        }
        in_use
    }
}
