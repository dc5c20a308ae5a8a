use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mempool::{FRAME_OVERHEAD, MBUF_HEADROOM};
use super::{Batch, DpdkError, Mempool};

// RSS hash functions (RTE_ETH_RSS_* in rte_ethdev.h are RTE_BIT64() macros bindgen cannot see).
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
const RSS_NONFRAG_IPV4_OTHER: u64 = 1 << 7;
const RSS_IPV6: u64 = 1 << 8;
const RSS_FRAG_IPV6: u64 = 1 << 9;
const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
const RSS_NONFRAG_IPV6_OTHER: u64 = 1 << 13;
/// Hash on IP addresses and TCP/UDP ports, so one flow always lands on one queue (worker).
pub const RSS_IP_TCP_UDP: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_NONFRAG_IPV4_TCP
    | RSS_NONFRAG_IPV4_UDP
    | RSS_NONFRAG_IPV4_OTHER
    | RSS_IPV6
    | RSS_FRAG_IPV6
    | RSS_NONFRAG_IPV6_TCP
    | RSS_NONFRAG_IPV6_UDP
    | RSS_NONFRAG_IPV6_OTHER;

/// How to set up a port.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// `None` leaves the device's MTU as it is.
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            promiscuous: true,
        }
    }
}

/// Link state as the PMD reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The port's basic counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// The basic counters of port `id` (callable from any thread; DPDK's stats read is
/// thread-safe for the basic counters).
pub fn port_stats(id: u16) -> Result<PortStats, DpdkError> {
    let mut s = dpdk_sys::rte_eth_stats::default();
    // SAFETY: valid out-pointer; an invalid id is reported by the return value.
    let ret = unsafe { dpdk_sys::rte_eth_stats_get(id, &mut s) };
    if ret != 0 {
        return Err(DpdkError::from_ret("rte_eth_stats_get", ret));
    }
    Ok(PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

/// An Ethernet port: configured, started, and handing out its queues once each.
///
/// `'pool` is a borrow of the mempool its RX queues are filled from: the port cannot outlive
/// it. Its queues borrow the port, so it cannot be stopped or dropped while one is in use:
///
/// ```compile_fail,E0502
/// # use fulcrum::dpdk::{Batch, Mempool, Port, PortConfig};
/// # fn f(pool: &Mempool) {
/// let mut port = Port::start(0, &PortConfig::default(), pool).unwrap();
/// let mut rx = port.rx_queue(0).unwrap();
/// port.stop(); // the queue still borrows the port
/// let mut b: Batch = Batch::new();
/// rx.rx_burst(&mut b);
/// # }
/// ```
///
/// ```compile_fail,E0505
/// # use fulcrum::dpdk::{Batch, Mempool, Port, PortConfig};
/// # fn f(pool: &Mempool) {
/// let port = Port::start(0, &PortConfig::default(), pool).unwrap();
/// let mut tx = port.tx_queue(0).unwrap();
/// drop(port);
/// let mut b: Batch = Batch::new();
/// tx.tx_burst(&mut b);
/// # }
/// ```
///
/// nor outlive its pool:
///
/// ```compile_fail,E0505
/// # use fulcrum::dpdk::{Eal, Mempool, Port, PortConfig};
/// # fn f(eal: &Eal) {
/// let pool = Mempool::new(eal, "p", 1023, 0, 2176).unwrap();
/// let port = Port::start(0, &PortConfig::default(), &pool).unwrap();
/// drop(pool);
/// drop(port);
/// # }
/// ```
///
/// Transmitted mbufs stay in the TX ring until the port is closed, so a TX queue takes only
/// mbufs of pools that outlive the port's:
///
/// ```compile_fail,E0597
/// # use fulcrum::dpdk::{Batch, Eal, Mempool, Port, PortConfig};
/// # fn f(eal: &Eal, pool: &Mempool) {
/// let port = Port::start(0, &PortConfig::default(), pool).unwrap();
/// let mut tx = port.tx_queue(0).unwrap();
/// let short = Mempool::new(eal, "short", 1023, 0, 2176).unwrap();
/// let mut b: Batch = Batch::new();
/// let _ = b.push(short.alloc().unwrap());
/// tx.tx_burst(&mut b);
/// drop(b);
/// drop(short); // its mbuf may still sit in the port's TX ring
/// drop(tx);
/// drop(port);
/// # }
/// ```
///
/// In the right order it compiles:
///
/// ```no_run
/// # use fulcrum::dpdk::{Batch, Mempool, Port, PortConfig};
/// # fn f(pool: &Mempool) {
/// let mut port = Port::start(0, &PortConfig::default(), pool).unwrap();
/// let mut rx = port.rx_queue(0).unwrap();
/// let mut tx = port.tx_queue(0).unwrap();
/// let mut b: Batch = Batch::new();
/// rx.rx_burst(&mut b);
/// tx.tx_burst(&mut b);
/// drop((rx, tx, b));
/// port.stop();
/// # }
/// ```
pub struct Port<'pool> {
    id: u16,
    name: String,
    rx_queues: u16,
    tx_queues: u16,
    rss_hf: u64,
    /// Bit i set = queue i handed out.
    taken_rx: AtomicU64,
    taken_tx: AtomicU64,
    started: bool,
    /// The RX pool, borrowed for as long as the port may write into its buffers. Invariant
    /// in 'pool: a port must not pass for one of a shorter-lived pool, or its TX queues would
    /// take mbufs that die before the port releases them.
    _pool: PhantomData<fn(&'pool ()) -> &'pool ()>,
}

impl<'pool> Port<'pool> {
    /// Finds a probed port by device name (the vdev name before the first comma, e.g.
    /// `net_tap0`, or the PCI address).
    pub fn id_by_name(device: &str) -> Result<u16, DpdkError> {
        let name = device.split(',').next().unwrap_or(device);
        let cname = CString::new(name).map_err(|_| DpdkError::NoSuchPort(device.to_owned()))?;
        let mut id: u16 = 0;
        // SAFETY: cname is a valid C string; id is a valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret != 0 {
            return Err(DpdkError::NoSuchPort(name.to_owned()));
        }
        Ok(id)
    }

    /// Configures and starts port `id` with the given queues, all RX queues filled from `pool`.
    /// With more than one RX queue, RSS over IP addresses and TCP/UDP ports is enabled (limited
    /// to the hash functions the device supports).
    ///
    /// A port that fails to start is closed again (its queues may already hold mbufs of
    /// `pool`), so the device cannot be started a second time in this process.
    pub fn start(
        id: u16,
        cfg: &PortConfig,
        pool: &'pool Mempool<'_>,
    ) -> Result<Port<'pool>, DpdkError> {
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 || cfg.rx_queues > 64 || cfg.tx_queues > 64 {
            return Err(DpdkError::Invalid(format!(
                "port {id}: queues must be 1..=64 (rx {}, tx {})",
                cfg.rx_queues, cfg.tx_queues
            )));
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-pointer; an invalid id is reported by the return value.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_info_get", ret));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::Invalid(format!(
                "port {id} supports at most {} RX and {} TX queues, {} and {} requested",
                info.max_rx_queues, info.max_tx_queues, cfg.rx_queues, cfg.tx_queues
            )));
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let rss_hf = if cfg.rx_queues > 1 {
            RSS_IP_TCP_UDP & info.flow_type_rss_offloads
        } else {
            0
        };
        if rss_hf != 0 {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            // A NULL key selects the device's default key.
            conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
        }
        // SAFETY: conf is a fully initialised rte_eth_conf living across the call.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_configure", ret));
        }
        // From here on an error closes the device (dropping `port`): its RX queues may hold
        // mbufs of `pool`, which must not stay behind in a device nobody owns.
        let mut port = Port {
            id,
            name: format!("port{id}"),
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            rss_hf,
            taken_rx: AtomicU64::new(0),
            taken_tx: AtomicU64::new(0),
            started: false,
            _pool: PhantomData,
        };
        if let Some(mtu) = cfg.mtu {
            if mtu > info.max_mtu || mtu < info.min_mtu {
                return Err(DpdkError::Invalid(format!(
                    "the device takes an mtu of {} to {} bytes, not {mtu}",
                    info.min_mtu, info.max_mtu
                )));
            }
            // Frames are received whole into one mbuf (no scatter): the buffer must hold the
            // largest frame of this MTU behind the headroom.
            let room = usize::from(pool.data_room()).saturating_sub(MBUF_HEADROOM);
            let frame = usize::from(mtu) + FRAME_OVERHEAD;
            if frame > room {
                return Err(DpdkError::Invalid(format!(
                    "mtu {mtu} needs {frame}-byte frames but the pool's mbufs hold {room} bytes"
                )));
            }
            // SAFETY: plain call on a configured port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            // Some virtual devices (pcap, ring, null) have no MTU to set; that is fine.
            if ret != 0 && ret != -libc::ENOTSUP && ret != -libc::EOPNOTSUPP {
                return Err(DpdkError::from_ret("rte_eth_dev_set_mtu", ret));
            }
        }
        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid out-pointers; the port is configured.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_adjust_nb_rx_tx_desc", ret));
        }
        // SAFETY: plain query.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            // SAFETY: the port is configured with rx_queues queues; NULL conf = device default;
            // the pool outlives the port (Port<'pool> borrows it), and the port is closed
            // (releasing the queue's mbufs) before that borrow ends.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if ret != 0 {
                return Err(DpdkError::from_ret("rte_eth_rx_queue_setup", ret));
            }
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: the port is configured with tx_queues queues; NULL conf = device default.
            let ret = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null())
            };
            if ret != 0 {
                return Err(DpdkError::from_ret("rte_eth_tx_queue_setup", ret));
            }
        }
        // SAFETY: all queues are set up.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_start", ret));
        }
        port.started = true;
        if cfg.promiscuous {
            // SAFETY: plain call on a started port. Some vdevs do not support it; that is fine.
            let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
        } else {
            // IPv6 neighbour discovery and routing protocols need multicast frames, which
            // the exception path hands to the kernel; the pipeline still drops other
            // stations' unicast. A device without the mode is fine: it passes them already.
            // SAFETY: plain call on a started port.
            let _ = unsafe { dpdk_sys::rte_eth_allmulticast_enable(id) };
        }
        let mut name_buf = [0 as std::os::raw::c_char; 64];
        // SAFETY: name_buf is a writable buffer of RTE_ETH_NAME_MAX_LEN (64) bytes.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, name_buf.as_mut_ptr()) };
        if ret == 0 {
            // SAFETY: DPDK wrote a NUL-terminated name into the buffer.
            port.name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
                .to_string_lossy()
                .into_owned();
        }
        Ok(port)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rx_queue_count(&self) -> u16 {
        self.rx_queues
    }

    pub fn tx_queue_count(&self) -> u16 {
        self.tx_queues
    }

    /// The RSS hash functions enabled (0 = RSS off).
    pub fn rss_hash_functions(&self) -> u64 {
        self.rss_hf
    }

    /// The queue counts the device itself reports as configured.
    pub fn device_queue_counts(&self) -> Result<(u16, u16), DpdkError> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer; the port exists.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_info_get", ret));
        }
        Ok((info.nb_rx_queues, info.nb_tx_queues))
    }

    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_macaddr_get", ret));
        }
        Ok(addr.addr_bytes)
    }

    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;
        // SAFETY: valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_mtu(self.id, &mut mtu) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_get_mtu", ret));
        }
        Ok(mtu)
    }

    pub fn link(&self) -> Result<LinkStatus, DpdkError> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid out-pointer; nowait does not block.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_link_get_nowait", ret));
        }
        Ok(LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        port_stats(self.id)
    }

    /// Sets the port's MAC address.
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut addr = dpdk_sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: addr is a valid rte_ether_addr for the duration of the call.
        let ret = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id, &mut addr) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_default_mac_addr_set", ret));
        }
        Ok(())
    }

    /// Extended statistics as (name, value) pairs.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        // SAFETY: NULL buffers with size 0 ask for the count.
        let n = unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(DpdkError::from_ret("rte_eth_xstats_get_names", n));
        }
        let n = n as usize;
        let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); n];
        // SAFETY: both buffers hold n entries.
        let got_names =
            unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got = unsafe { dpdk_sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32) };
        if got_names < 0 || got < 0 {
            return Err(DpdkError::from_ret(
                "rte_eth_xstats_get",
                got.min(got_names),
            ));
        }
        let count = (got as usize).min(got_names as usize).min(n);
        Ok(values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates every xstat name within its fixed-size array.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }

    fn take(bits: &AtomicU64, q: u16, count: u16) -> bool {
        if q >= count {
            return false;
        }
        let bit = 1u64 << q;
        bits.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Hands out RX queue `q`, once: the queue belongs to one worker and borrows the port.
    pub fn rx_queue(&self, q: u16) -> Option<RxQueue<'_, 'pool>> {
        Self::take(&self.taken_rx, q, self.rx_queues).then_some(RxQueue {
            port: self.id,
            queue: q,
            _port: PhantomData,
        })
    }

    /// Hands out TX queue `q`, once.
    pub fn tx_queue(&self, q: u16) -> Option<TxQueue<'_, 'pool>> {
        Self::take(&self.taken_tx, q, self.tx_queues).then_some(TxQueue {
            port: self.id,
            queue: q,
            _port: PhantomData,
        })
    }

    /// Stops the port. Its queues borrow it, so none is in use (`&mut self`).
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: the port was started by us; &mut self means no RxQueue/TxQueue (each
            // borrows the port) exists, so no lcore is polling it.
            unsafe {
                dpdk_sys::rte_eth_dev_stop(self.id);
            }
            self.started = false;
        }
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: stopped above (or never started) and no queue borrows the port. Closing
        // releases the queues and the mbufs in their rings back to their pools, which are
        // alive: the RX pool for 'pool, TX mbufs for longer (tx_burst's bound).
        unsafe {
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

/// One RX queue of a port, owned by one worker: `Send` to move it to its lcore, not `Sync`,
/// since DPDK queues are not safe for concurrent use. Borrows its port (`'port`).
pub struct RxQueue<'port, 'pool> {
    port: u16,
    queue: u16,
    _port: PhantomData<(&'port Port<'pool>, Cell<()>)>,
}

/// One TX queue of a port, owned by one worker. Borrows its port (`'port`).
pub struct TxQueue<'port, 'pool> {
    port: u16,
    queue: u16,
    _port: PhantomData<(&'port Port<'pool>, Cell<()>)>,
}

impl<'pool> RxQueue<'_, 'pool> {
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to the batch's free room; returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, batch: &mut Batch<'pool, N>) -> usize {
        self.rx_burst_up_to(batch, N)
    }

    /// Receives at most `max` packets (and at most the batch's free room); returns how many
    /// arrived.
    #[inline]
    pub fn rx_burst_up_to<const N: usize>(
        &mut self,
        batch: &mut Batch<'pool, N>,
        max: usize,
    ) -> usize {
        let room = batch.room().min(max).min(usize::from(u16::MAX)) as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: spare_ptr points at `room` free slots laid out as *mut rte_mbuf; this
        // lcore owns the queue (&mut self, not Sync) and the port is started and alive (the
        // queue borrows it). rx_burst writes at most `room` mbuf pointers and hands one
        // reference to each over to us. The PMD allocated them from this queue's pool, which
        // lives for 'pool; a loop-back PMD (net_ring) instead returns mbufs a TX queue
        // accepted, which tx_burst required to live as long as that port's pool (fulcrum
        // gives every port the same pool).
        unsafe {
            let n =
                dpdk_sys::rte_eth_rx_burst(self.port, self.queue, batch.spare_ptr(), room) as usize;
            batch.assume_filled(n.min(usize::from(room)));
            n
        }
    }
}

impl<'pool> TxQueue<'_, 'pool> {
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Offers the whole batch to the PMD. The mbufs it accepted leave the batch (the PMD owns
    /// and frees them); the ones it refused (TX ring full) stay in the batch, in order, still
    /// owned by the caller — retry or drop them. Returns how many were accepted.
    ///
    /// The mbufs must be of pools that outlive the port's (`Batch<'pool>`): the PMD frees
    /// them later, as late as when the port is closed.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, batch: &mut Batch<'pool, N>) -> usize {
        let n = batch.len().min(usize::from(u16::MAX)) as u16;
        if n == 0 {
            return 0;
        }
        // SAFETY: the batch holds n valid owned mbufs laid out as *mut rte_mbuf; this lcore
        // owns the queue (&mut self, not Sync) and the port is started and alive (the queue
        // borrows it). tx_burst takes ownership of exactly the first `sent` mbufs, which
        // forget_front then removes from the batch without freeing them. Their pools live
        // for 'pool, at least as long as the port that will free them.
        unsafe {
            let sent =
                dpdk_sys::rte_eth_tx_burst(self.port, self.queue, batch.as_raw_ptr(), n) as usize;
            batch.forget_front(sent);
            sent
        }
    }
}
