//! A real EAL: a 2-queue port with RSS starts and reports its queues.

mod common;

use fulcrum::dpdk::{Eal, Mempool, Port, PortConfig};

#[test]
fn two_queue_port_with_rss_starts() {
    let eal = Eal::init(&common::eal_args("rss", &["net_null0"])).expect("EAL init");
    let pool = Mempool::new(&eal, "rss_pool", 4095, 0, 2176).expect("mempool");
    let id = Port::id_by_name("net_null0").expect("port");
    let cfg = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let port = Port::start(id, &cfg, &pool).expect("start with 2 queues");
    assert_eq!(port.rx_queue_count(), 2);
    assert_eq!(port.device_queue_counts().expect("info"), (2, 2));
    assert_ne!(port.rss_hash_functions(), 0, "RSS over IP/TCP/UDP enabled");
    assert!(port.rx_queue(0).is_some());
    assert!(port.rx_queue(1).is_some());
    assert!(port.rx_queue(2).is_none(), "only 2 queues exist");
    assert!(port.link().is_ok());
    assert!(port.stats().is_ok());
    assert!(!port.xstats().expect("xstats").is_empty());
    assert!(Port::id_by_name("net_nonexistent9").is_err());
    drop(port);
    drop(pool);
    eal.cleanup();
}
