//! The snapshot: everything a worker reads, published as one immutable value.
//!
//! The control thread owns the configuration. On every change it builds a complete new
//! [`Snapshot`] (all VIPs, their Maglev tables, all backends, the ports' addresses) with a new
//! version number and publishes it with one atomic pointer swap. Workers check the version at
//! every burst boundary — their quiescent point — and adopt the newest snapshot whole, so a
//! worker never sees half of a change (no torn views across VIPs).
//!
//! Reclamation: the publisher keeps a reference to every snapshot it retired. A worker that
//! moves on only drops its own reference, which never frees memory on the worker; the control
//! thread frees a retired snapshot once it holds the last reference ([`Publisher::reclaim`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::addr::{BackendAddr, VipKey};
use crate::classify::{Classifier, VipMatch};
use crate::encap::EncapMode;
use crate::maglev::{MaglevBackend, MaglevError, MaglevTable};

/// A port as the workers need it to build outer headers and replies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    pub mac: [u8; 6],
    pub mtu: u16,
    pub src_v4: Option<Ipv4Addr>,
    pub src_v6: Option<Ipv6Addr>,
    /// When set, every encapsulated packet goes to this MAC (the router); otherwise to the
    /// backend's own MAC (backends on the port's segment).
    pub gateway_mac: Option<[u8; 6]>,
}

/// What the control plane knows of a backend's health and intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows in proportion to its weight.
    Active,
    /// Takes no new flows; keeps the ones it has (operator drain).
    Draining,
    /// Failed its health check: takes nothing; its tracked flows are re-picked.
    Down,
}

/// A backend of one VIP. Its `id` is stable across snapshots and unique across VIPs, so a
/// tracked flow can find its backend again after any change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub id: u32,
    pub vip_id: u32,
    pub addr: IpAddr,
    pub weight: u32,
    pub state: BackendState,
    /// The backend's own MAC (resolved or configured); needed for l2dsr, and for the
    /// encapsulating modes when the port has no gateway MAC.
    pub mac: Option<[u8; 6]>,
}

impl BackendEntry {
    /// Whether a flow already tracked to this backend stays with it.
    #[inline]
    pub fn keeps_flows(&self) -> bool {
        match self.state {
            BackendState::Active => self.weight > 0,
            BackendState::Draining => true,
            BackendState::Down => false,
        }
    }
}

/// One VIP in a snapshot.
#[derive(Clone, Debug)]
pub struct VipEntry {
    pub id: u32,
    pub key: VipKey,
    pub encap: EncapMode,
    pub gue_port: u16,
    /// Shared with earlier snapshots while the VIP's backends and weights are unchanged.
    pub table: Arc<MaglevTable>,
    /// Maglev backend index -> backend id.
    pub members: Box<[u32]>,
    /// Every backend with weight is down: the table is built as if they were up, rather than
    /// black-holing the VIP (see docs/architecture.md).
    pub all_down: bool,
    /// What this entry was built from: an unchanged spec reuses the whole entry.
    pub source: Arc<VipSpec>,
}

impl VipEntry {
    /// The backend id for a flow hash, or `None` when the VIP has no backend with weight.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<u32> {
        let i = self.table.lookup(flow_hash)?;
        self.members.get(i as usize).copied()
    }
}

/// Everything the workers read, immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub vips: Box<[VipEntry]>,
    pub classifier: Classifier,
    /// Indexed by backend id.
    pub backends: Box<[Option<BackendEntry>]>,
    pub ports: Box<[PortInfo]>,
}

impl Snapshot {
    /// The backend with this id, if it exists in this snapshot.
    #[inline]
    pub fn backend(&self, id: u32) -> Option<&BackendEntry> {
        self.backends.get(id as usize)?.as_ref()
    }

    /// An empty snapshot (no VIPs) for `ports`.
    pub fn empty(ports: Vec<PortInfo>) -> Snapshot {
        Snapshot {
            version: 0,
            vips: Box::new([]),
            classifier: Classifier::new(&[]).expect("an empty VIP list has no duplicates"),
            backends: Box::new([]),
            ports: ports.into_boxed_slice(),
        }
    }
}

/// A VIP as the control plane describes it to the snapshot builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub id: u32,
    pub key: VipKey,
    pub encap: EncapMode,
    pub gue_port: u16,
    pub table_size: u32,
    pub backends: Vec<BackendSpec>,
}

/// A backend as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub id: u32,
    pub addr: BackendAddr,
    pub weight: u32,
    pub state: BackendState,
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("VIP {vip}: {source}")]
    Maglev {
        vip: VipKey,
        #[source]
        source: MaglevError,
    },
    #[error("VIP {0} is defined twice")]
    DuplicateVip(VipKey),
    #[error("VIP id {0} or backend id {1} is out of range")]
    IdRange(u32, u32),
    #[error("VIP {0}: the Maglev table orders backends differently from the snapshot builder")]
    Order(VipKey),
    #[error("too many VIPs ({0}; at most {max})", max = crate::stats::MAX_VIPS)]
    TooManyVips(usize),
}

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Builds a snapshot from the control plane's description. Pure and deterministic: the same
/// specs give the same tables on every instance. Maglev tables of VIPs whose backends and
/// weights did not change since `previous` are shared, not rebuilt.
pub fn build(
    version: u64,
    vips: &[VipSpec],
    ports: &[PortInfo],
    previous: Option<&Snapshot>,
) -> Result<Snapshot, SnapshotError> {
    if vips.len() > crate::stats::MAX_VIPS {
        return Err(SnapshotError::TooManyVips(vips.len()));
    }
    let max_backend = vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.id))
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut backends: Vec<Option<BackendEntry>> = vec![None; max_backend];
    let mut entries = Vec::with_capacity(vips.len());
    let mut matches = Vec::with_capacity(vips.len());
    for v in vips {
        for b in &v.backends {
            if v.id as usize >= crate::stats::MAX_VIPS
                || b.id as usize >= crate::stats::MAX_BACKENDS
            {
                return Err(SnapshotError::IdRange(v.id, b.id));
            }
        }
        for b in &v.backends {
            backends[b.id as usize] = Some(BackendEntry {
                id: b.id,
                vip_id: v.id,
                addr: b.addr.addr,
                weight: b.weight,
                state: b.state,
                mac: b.mac,
            });
        }
        matches.push(VipMatch {
            addr: mapped(v.key.addr),
            port: v.key.port,
            proto: v.key.protocol.number(),
        });
        // A change usually touches one VIP of many: the others are taken over whole, without
        // formatting their backends' keys or comparing tables.
        if let Some(same) = previous
            .and_then(|p| p.vips.iter().find(|e| e.id == v.id))
            .filter(|e| *e.source == *v)
        {
            entries.push(same.clone());
            continue;
        }
        let any_up = v
            .backends
            .iter()
            .any(|b| b.state == BackendState::Active && b.weight > 0);
        let all_down = !any_up
            && v.backends
                .iter()
                .any(|b| b.state == BackendState::Down && b.weight > 0);
        let mut keyed: Vec<(String, &BackendSpec)> =
            v.backends.iter().map(|b| (b.addr.to_string(), b)).collect();
        // Maglev orders backends by key; sorting here too lets members follow that order.
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let maglev: Vec<MaglevBackend> = keyed
            .iter()
            .map(|(key, b)| {
                let takes_new = match b.state {
                    BackendState::Active => true,
                    BackendState::Down => all_down,
                    BackendState::Draining => false,
                };
                MaglevBackend::new(key.clone(), if takes_new { b.weight } else { 0 })
            })
            .collect();
        let reusable = previous
            .and_then(|p| p.vips.iter().find(|e| e.id == v.id))
            .filter(|e| e.table.size() == v.table_size && e.table.backends() == maglev.as_slice())
            .map(|e| e.table.clone());
        let table = match reusable {
            Some(t) => t,
            None => Arc::new(
                MaglevTable::build(&maglev, v.table_size)
                    .map_err(|source| SnapshotError::Maglev { vip: v.key, source })?,
            ),
        };
        if table.backends().len() != keyed.len()
            || table
                .backends()
                .iter()
                .zip(&keyed)
                .any(|(m, k)| m.key != k.0)
        {
            return Err(SnapshotError::Order(v.key));
        }
        let members: Box<[u32]> = keyed.iter().map(|(_, b)| b.id).collect();
        entries.push(VipEntry {
            id: v.id,
            key: v.key,
            encap: v.encap,
            gue_port: v.gue_port,
            table,
            members,
            all_down,
            source: Arc::new(v.clone()),
        });
    }
    let classifier =
        Classifier::new(&matches).map_err(|d| SnapshotError::DuplicateVip(vips[d.0].key))?;
    Ok(Snapshot {
        version,
        vips: entries.into_boxed_slice(),
        classifier,
        backends: backends.into_boxed_slice(),
        ports: ports.to_vec().into_boxed_slice(),
    })
}

struct Shared {
    current: ArcSwap<Snapshot>,
    version: AtomicU64,
}

/// The control thread's handle: publishes snapshots and frees retired ones.
pub struct Publisher {
    shared: Arc<Shared>,
    retired: Vec<Arc<Snapshot>>,
}

/// A worker's handle: the snapshot it runs, refreshed at burst boundaries.
pub struct Reader {
    shared: Arc<Shared>,
    local: Arc<Snapshot>,
}

impl Publisher {
    pub fn new(first: Snapshot) -> Publisher {
        let version = first.version;
        Publisher {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(first),
                version: AtomicU64::new(version),
            }),
            retired: Vec::new(),
        }
    }

    /// A reader for one worker.
    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
            local: self.shared.current.load_full(),
        }
    }

    /// The version workers will pick up next.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// The newest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// Publishes `next`; workers adopt it at their next burst boundary.
    pub fn publish(&mut self, next: Snapshot) {
        let version = next.version;
        let old = self.shared.current.swap(Arc::new(next));
        // Release: a worker that sees the new version also sees the new pointer.
        self.shared.version.store(version, Ordering::Release);
        self.retired.push(old);
        self.reclaim();
    }

    /// Frees retired snapshots no worker holds any more. Returns how many are still waiting.
    pub fn reclaim(&mut self) -> usize {
        self.retired.retain(|s| Arc::strong_count(s) > 1);
        self.retired.len()
    }
}

impl Reader {
    /// Adopts the newest snapshot if there is one; returns whether it changed. The cost when
    /// nothing changed is one atomic load. Dropping the old snapshot here never frees it: the
    /// publisher still holds it.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.shared.version.load(Ordering::Acquire) == self.local.version {
            return false;
        }
        self.local = self.shared.current.load_full();
        true
    }

    #[inline]
    pub fn snapshot(&self) -> &Snapshot {
        &self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
