//! A real EAL on net_ring: bursts through RxQueue/TxQueue come back byte for byte, a full TX
//! ring leaves the refused mbufs with us, and the pool ends exactly full. One EAL per process,
//! so this binary holds one test.

mod common;

use fulcrum::dpdk::{Batch, Eal, Mempool, Port, PortConfig};
use fulcrum::packet::PacketBuf;

fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60 + (i as usize % 64)];
    f[..4].copy_from_slice(&i.to_be_bytes());
    for (k, b) in f.iter_mut().enumerate().skip(4) {
        *b = (k as u32 ^ i) as u8;
    }
    f
}

#[test]
fn ring_loopback_bytes_and_mbuf_accounting() {
    let eal = Eal::init(&common::eal_args("ring", &["net_ring0"])).expect("EAL init");
    assert!(matches!(
        Eal::init(&common::eal_args("ring2", &[])),
        Err(fulcrum::dpdk::DpdkError::AlreadyInitialised)
    ));
    let pool = Mempool::new(&eal, "ring_pool", 4095, 0, 2176).expect("mempool");
    let size = pool.size();
    assert_eq!(pool.available(), size);

    {
        let id = Port::id_by_name("net_ring0").expect("port");
        let port = Port::start(id, &PortConfig::default(), &pool).expect("start");
        let mut rx = port.rx_queue(0).expect("rx queue 0");
        assert!(port.rx_queue(0).is_none(), "a queue is handed out once");
        let mut tx = port.tx_queue(0).expect("tx queue 0");

        // Headroom: prepend/adj/append/trim on a real mbuf, refusing what does not fit.
        {
            let mut m = pool.alloc().expect("alloc");
            assert!(m.set_data(&[1, 2, 3, 4]));
            let room = m.headroom();
            assert_eq!(room, 128, "RTE_PKTMBUF_HEADROOM");
            assert!(
                m.prepend(room + 1).is_none(),
                "more than the headroom is refused"
            );
            assert_eq!(m.data(), &[1, 2, 3, 4], "and leaves the packet unchanged");
            m.prepend(20).expect("fits")[..20].fill(9);
            assert_eq!(m.len(), 24);
            assert_eq!(&m.data()[20..], &[1, 2, 3, 4]);
            assert!(m.adj(20));
            assert_eq!(m.data(), &[1, 2, 3, 4]);
            assert!(!m.adj(5));
            let tail = m.tailroom();
            assert!(m.append(tail + 1).is_none());
            assert!(m.append(2).is_some());
            assert!(m.trim(6));
            assert!(m.is_empty());
            assert!(m.is_contiguous());
        }
        assert_eq!(pool.available(), size, "the mbuf went back on drop");

        // A shared mbuf (an indirect clone shares its bytes) is read-only, and changing
        // nothing is what a refusal means.
        {
            let mut m = pool.alloc().expect("alloc");
            assert!(m.set_data(&[1, 2, 3, 4]));
            assert!(m.is_exclusive());
            let mut c = m.share(&pool).expect("clone");
            assert_eq!(c.data(), &[1, 2, 3, 4], "the clone sees the same bytes");
            for x in [&mut m, &mut c] {
                assert!(!x.is_exclusive());
                assert!(x.try_data_mut().is_none());
                assert!(x.data_mut().is_empty(), "no &mut to shared bytes");
                assert!(x.prepend(4).is_none());
                assert!(x.append(1).is_none());
                assert!(!x.set_data(&[9]));
                assert!(!x.adj(1));
                assert!(!x.trim(1));
                assert_eq!(x.data(), &[1, 2, 3, 4], "unchanged");
            }
            drop(c);
            assert!(m.is_exclusive(), "ours alone again once the clone is gone");
            m.try_data_mut().expect("writable")[0] = 7;
            assert_eq!(m.data(), &[7, 2, 3, 4]);
        }
        assert_eq!(pool.available(), size, "mbuf and clone went back");

        // A chain refuses append and set_data without touching it.
        {
            let mut head = pool.alloc().expect("alloc");
            assert!(head.set_data(&[1, 2, 3]));
            let mut tail = pool.alloc().expect("alloc");
            assert!(tail.set_data(&[4, 5]));
            head.chain(tail).expect("chain of two");
            assert_eq!(head.segments(), 2);
            assert!(!head.is_contiguous());
            assert!(head.append(1).is_none());
            assert!(!head.set_data(&[9, 9]));
            assert_eq!(head.data(), &[1, 2, 3], "first segment unchanged");
            assert_eq!(head.segments(), 2, "chain unchanged");
        }
        assert_eq!(pool.available(), size, "both segments went back");

        // (1) Loopback: send 4 bursts, receive them back and compare bytes.
        let mut seq = 0u32;
        let mut sent_frames = Vec::new();
        for _ in 0..4 {
            let mut b: Batch = Batch::new();
            while !b.is_full() {
                let mut m = pool.alloc().expect("alloc");
                let f = frame(seq);
                assert!(m.set_data(&f));
                sent_frames.push(f);
                seq += 1;
                b.push(m).expect("room");
            }
            assert_eq!(tx.tx_burst(&mut b), 32);
            assert!(b.is_empty());
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            let mut b: Batch = Batch::new();
            if rx.rx_burst(&mut b) == 0 {
                break;
            }
            b.drain_into(|m| got.push(m.data().to_vec()));
        }
        assert_eq!(
            got, sent_frames,
            "every frame comes back in order, byte for byte"
        );
        assert_eq!(pool.available(), size, "received mbufs were freed");

        // (2) Fill the ring until tx_burst accepts only part of a burst.
        let mut partial_seen = false;
        let mut accepted_total = 0usize;
        for _ in 0..200 {
            let mut b: Batch = Batch::new();
            while !b.is_full() {
                b.push(pool.alloc().expect("alloc")).expect("room");
            }
            let sent = tx.tx_burst(&mut b);
            accepted_total += sent;
            assert_eq!(b.len(), 32 - sent, "refused mbufs stay in the batch");
            if sent < 32 {
                partial_seen = true;
                // The refused mbufs are still ours: dropping the batch frees them once.
                drop(b);
                break;
            }
        }
        assert!(partial_seen, "the TX ring never filled");
        assert_eq!(
            pool.in_use() as usize,
            accepted_total,
            "only the accepted mbufs are out of the pool"
        );
        // Drain what the ring accepted.
        loop {
            let mut b: Batch = Batch::new();
            if rx.rx_burst(&mut b) == 0 {
                break;
            }
        }
        assert_eq!(pool.available(), size, "no leak, no double free");
        drop(port);
    }
    assert_eq!(pool.available(), size);
    drop(pool);
    eal.cleanup();
}
