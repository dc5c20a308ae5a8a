//! The snapshot's tests: builds, reuse of unchanged VIPs and tables, the backend array's
//! patches against a full fill, and publication.

use super::*;
use std::sync::Arc;

use crate::datapath::encap::EncapMode;
use crate::datapath::flow::mapped;

fn spec(id: u32, key: &str, backends: &[(u32, &str, u32, BackendState)]) -> VipSpec {
    VipSpec {
        id,
        key: key.parse().unwrap(),
        encap: EncapMode::Ipip,
        gue_port: 6080,
        table_size: 65537,
        backends: backends
            .iter()
            .map(|&(id, a, weight, state)| BackendSpec {
                id,
                addr: a.parse().unwrap(),
                weight,
                state,
                mac: None,
            })
            .collect(),
    }
}

#[test]
fn builds_vips_backends_and_members() {
    use BackendState::*;
    let s = build(
        7,
        &[
            spec(
                0,
                "192.0.2.10:80/tcp",
                &[
                    (0, "198.51.100.2", 1, Active),
                    (1, "198.51.100.1", 1, Active),
                ],
            ),
            spec(
                1,
                "[2001:db8::10]:443/tcp",
                &[(5, "2001:db8::2", 2, Draining)],
            ),
        ],
        &[PortInfo::default()],
        None,
    )
    .unwrap();
    assert_eq!(s.version, 7);
    assert_eq!(s.vips.len(), 2);
    // Members map Maglev's sorted order back to ids.
    let v = &s.vips[0];
    for (i, mb) in v.table.backends().iter().enumerate() {
        let id = v.members[i];
        assert_eq!(s.backend(id).unwrap().addr.to_string(), mb.key);
    }
    let picks: std::collections::HashSet<u32> = (0..1000u64)
        .filter_map(|h| v.pick(h.wrapping_mul(0x9e3779b97f4a7c15)))
        .collect();
    assert_eq!(picks, [0, 1].into_iter().collect());
    // A draining-only VIP takes no new flows but keeps its tracked ones.
    assert_eq!(s.vips[1].pick(12345), None);
    assert!(s.backend(5).unwrap().keeps_flows());
    assert!(s.backend(2).is_none());
}

#[test]
fn all_down_keeps_the_table_instead_of_black_holing() {
    use BackendState::*;
    let s = build(
        1,
        &[spec(
            0,
            "192.0.2.10:80/tcp",
            &[(0, "198.51.100.1", 1, Down), (1, "198.51.100.2", 1, Down)],
        )],
        &[],
        None,
    )
    .unwrap();
    assert!(s.vips[0].all_down);
    assert!(s.vips[0].pick(42).is_some());
    let s = build(
        2,
        &[spec(
            0,
            "192.0.2.10:80/tcp",
            &[(0, "198.51.100.1", 1, Down), (1, "198.51.100.2", 1, Active)],
        )],
        &[],
        None,
    )
    .unwrap();
    assert!(!s.vips[0].all_down);
    for h in 0..1000u64 {
        assert_eq!(s.vips[0].pick(h << 40), Some(1));
    }
}

#[test]
fn unchanged_tables_are_shared_changed_ones_rebuilt() {
    use BackendState::*;
    let a = spec(
        0,
        "192.0.2.10:80/tcp",
        &[
            (0, "198.51.100.1", 1, Active),
            (1, "198.51.100.2", 1, Active),
        ],
    );
    let b = spec(1, "192.0.2.11:80/tcp", &[(2, "198.51.100.1", 1, Active)]);
    let s1 = build(1, &[a.clone(), b.clone()], &[], None).unwrap();
    let mut b2 = b.clone();
    b2.backends[0].weight = 5;
    let s2 = build(2, &[a, b2], &[], Some(&s1)).unwrap();
    assert!(Arc::ptr_eq(&s1.vips[0].table, &s2.vips[0].table));
    assert!(
        Arc::ptr_eq(&s1.vips[0].source, &s2.vips[0].source),
        "whole entry reused"
    );
    assert!(!Arc::ptr_eq(&s1.vips[1].table, &s2.vips[1].table));
}

/// Asserts `a` holds what `b` does: the same VIPs, tables, members and backend array.
fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.backends[..], b.backends[..]);
    assert_eq!(a.vips.len(), b.vips.len());
    for (x, y) in a.vips.iter().zip(b.vips.iter()) {
        assert_eq!((x.id, x.key, x.all_down), (y.id, y.key, y.all_down));
        assert_eq!(x.members, y.members);
        assert_eq!(x.table.backends(), y.table.backends());
        for h in 0..200u64 {
            let h = h.wrapping_mul(0x9e3779b97f4a7c15);
            assert_eq!(x.pick(h), y.pick(h));
        }
    }
    for (i, v) in a.vips.iter().enumerate() {
        let (addr, port, proto) = (mapped(v.key.addr), v.key.port, v.key.protocol.number());
        assert_eq!(
            format!("{:?}", a.classifier.lookup(&addr, port, proto)),
            format!("{:?}", b.classifier.lookup(&addr, port, proto)),
            "VIP {i}"
        );
    }
}

fn small(id: u32, first: u32, n: u32) -> VipSpec {
    let addrs: Vec<String> = (0..n).map(|b| format!("198.51.100.{}", b + 1)).collect();
    let backends: Vec<(u32, &str, u32, BackendState)> = (0..n)
        .map(|b| {
            (
                first + b,
                addrs[b as usize].as_str(),
                1,
                BackendState::Active,
            )
        })
        .collect();
    let mut v = spec(id, &format!("192.0.2.{}:80/tcp", id + 1), &backends);
    v.table_size = 251;
    v
}

type Change = dyn Fn(&mut Vec<VipSpec>);

#[test]
fn a_patched_backend_array_matches_a_full_fill() {
    let mut specs: Vec<VipSpec> = (0..4).map(|i| small(i, i * 10, 3)).collect();
    let mut last = build(1, &specs, &[], None).unwrap();
    let steps: Vec<Box<Change>> = vec![
        Box::new(|s| s[1].backends[0].weight = 3),
        Box::new(|s| s[2].backends[1].state = BackendState::Down),
        // The highest id goes: the array shrinks to the next highest.
        Box::new(|s| {
            s[3].backends.pop();
        }),
        Box::new(|s| {
            s.remove(3);
        }),
        // A backend id moves from one VIP to another in one change.
        Box::new(|s| {
            let b = s[0].backends.remove(2);
            s[1].backends.push(b);
            s[1].backends[3].addr = "198.51.100.9".parse().unwrap();
        }),
        Box::new(|s| s.push(small(7, 200, 2))),
        Box::new(|s| s.swap(0, 2)),
        Box::new(|s| s[1].backends.clear()),
        Box::new(|s| s.clear()),
    ];
    for (n, step) in steps.iter().enumerate() {
        step(&mut specs);
        let version = n as u64 + 2;
        let next = build(version, &specs, &[], Some(&last)).unwrap();
        assert_same(&next, &build(version, &specs, &[], None).unwrap());
        last = next;
    }
    assert!(last.backends.is_empty());
}

#[test]
fn the_backend_array_is_shared_while_no_backend_changes() {
    let mut specs: Vec<VipSpec> = (0..3).map(|i| small(i, i * 10, 3)).collect();
    let s1 = build(1, &specs, &[], None).unwrap();
    specs[1].encap = EncapMode::Gue;
    specs[2].table_size = 509;
    let s2 = build(2, &specs, &[], Some(&s1)).unwrap();
    assert!(Arc::ptr_eq(&s1.backends, &s2.backends));
    assert_eq!(s2.vips[1].encap, EncapMode::Gue);
    assert_eq!(s2.vips[2].table.size(), 509);
    specs[0].backends[2].mac = Some([2, 0, 0, 0, 0, 1]);
    let s3 = build(3, &specs, &[], Some(&s2)).unwrap();
    assert!(!Arc::ptr_eq(&s2.backends, &s3.backends));
    assert_eq!(s3.backend(2).unwrap().mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(
        s2.backend(2).unwrap().mac,
        None,
        "published snapshots never change"
    );
}

#[test]
fn an_id_held_twice_goes_to_the_later_vip_as_before() {
    let mut specs: Vec<VipSpec> = (0..3).map(|i| small(i, i * 10, 3)).collect();
    let s1 = build(1, &specs, &[], None).unwrap();
    // VIP 0 takes an id VIP 2 keeps: the later VIP in order holds it.
    specs[0].backends[0].id = 21;
    let s2 = build(2, &specs, &[], Some(&s1)).unwrap();
    assert_same(&s2, &build(2, &specs, &[], None).unwrap());
    assert_eq!(s2.backend(21).unwrap().vip_id, 2);
    // Changes after a duplicate still match a full fill.
    specs[2].backends[1].weight = 4;
    let s3 = build(3, &specs, &[], Some(&s2)).unwrap();
    assert_same(&s3, &build(3, &specs, &[], None).unwrap());
    specs[0].backends[0].id = 0;
    let s4 = build(4, &specs, &[], Some(&s3)).unwrap();
    assert_same(&s4, &build(4, &specs, &[], None).unwrap());
    assert_eq!(s4.backend(0).unwrap().vip_id, 0);
    assert_eq!(s4.backend(21).unwrap().vip_id, 2);
}

#[test]
fn specs_in_arcs_are_recognised_by_pointer() {
    let specs: Vec<Arc<VipSpec>> = (0..3).map(|i| Arc::new(small(i, i * 10, 3))).collect();
    let s1 = build(1, &specs, &[], None).unwrap();
    assert!(Arc::ptr_eq(&s1.vips[1].source, &specs[1]), "no copy kept");
    let mut next = specs.clone();
    let mut changed = (*specs[1]).clone();
    changed.backends[0].weight = 2;
    next[1] = Arc::new(changed);
    // An equal spec in a new Arc is still taken over whole.
    next[2] = Arc::new((*specs[2]).clone());
    let s2 = build(2, &next, &[], Some(&s1)).unwrap();
    assert!(Arc::ptr_eq(&s2.vips[0].source, &specs[0]));
    assert!(Arc::ptr_eq(&s2.vips[1].source, &next[1]));
    assert!(Arc::ptr_eq(&s2.vips[2].table, &s1.vips[2].table));
    assert_eq!(s2.backend(10).unwrap().weight, 2);
    assert_same(&s2, &build(2, &next, &[], None).unwrap());
}

#[test]
fn duplicate_vips_are_rejected() {
    let e = build(
        1,
        &[
            spec(0, "192.0.2.10:80/tcp", &[]),
            spec(1, "192.0.2.10:80/tcp", &[]),
        ],
        &[],
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("192.0.2.10:80/tcp"), "{e}");
}

#[test]
fn readers_adopt_new_snapshots_and_old_ones_are_freed() {
    let mut p = Publisher::new(Snapshot::empty(vec![]));
    let mut r = p.reader();
    assert!(!r.refresh());
    let mut s = Snapshot::empty(vec![]);
    s.version = 1;
    p.publish(s);
    assert_eq!(p.reclaim(), 1, "the reader still holds version 0");
    assert!(r.refresh());
    assert_eq!(r.snapshot().version, 1);
    assert_eq!(p.reclaim(), 0, "version 0 freed on the publisher's thread");
    for v in 2..1000 {
        let mut s = Snapshot::empty(vec![]);
        s.version = v;
        p.publish(s);
        r.refresh();
    }
    assert_eq!(r.snapshot().version, 999);
    assert_eq!(p.reclaim(), 0);
}
