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

use std::collections::HashMap;
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
    /// Frames to any destination MAC are balanced (`[[port]] promiscuous`); otherwise only
    /// those to `mac`.
    pub promiscuous: bool,
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
    /// Indexed by backend id; shared with the previous snapshot when no backend changed.
    pub backends: Arc<[Option<BackendEntry>]>,
    pub ports: Box<[PortInfo]>,
    /// No backend id belongs to two VIPs: the next build may patch `backends` instead of
    /// filling it anew.
    ids_unique: bool,
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
            backends: Arc::new([]),
            ports: ports.into_boxed_slice(),
            ids_unique: true,
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

/// A VIP spec as the caller holds it. A caller that keeps its specs in `Arc`s and passes the
/// same `Arc` again for every VIP a change did not touch lets [`build`] recognise those VIPs
/// by pointer; plain specs are compared with what the previous entry was built from.
pub trait SpecSource {
    fn spec(&self) -> &VipSpec;
    /// Whether this spec is the one `source` (a previous entry's) was built from.
    fn same_as(&self, source: &Arc<VipSpec>) -> bool;
    /// The spec for an entry to keep as its source.
    fn to_source(&self) -> Arc<VipSpec>;
}

impl SpecSource for VipSpec {
    fn spec(&self) -> &VipSpec {
        self
    }

    fn same_as(&self, source: &Arc<VipSpec>) -> bool {
        **source == *self
    }

    fn to_source(&self) -> Arc<VipSpec> {
        Arc::new(self.clone())
    }
}

impl SpecSource for Arc<VipSpec> {
    fn spec(&self) -> &VipSpec {
        self
    }

    /// O(1) for an unchanged VIP; a spec made anew is still compared, so a caller that
    /// rebuilds every spec loses nothing but the shortcut.
    fn same_as(&self, source: &Arc<VipSpec>) -> bool {
        Arc::ptr_eq(self, source) || **source == **self
    }

    fn to_source(&self) -> Arc<VipSpec> {
        self.clone()
    }
}

fn backend_entry(v: &VipSpec, b: &BackendSpec) -> BackendEntry {
    BackendEntry {
        id: b.id,
        vip_id: v.id,
        addr: b.addr.addr,
        weight: b.weight,
        state: b.state,
        mac: b.mac,
    }
}

/// Builds a snapshot from the control plane's description. Pure and deterministic: the same
/// specs give the same tables on every instance, whatever `previous` was.
///
/// With `previous`, a change costs the work of the VIPs it touches plus O(VIPs): a VIP whose
/// spec is unchanged takes its previous entry over whole; a changed VIP reuses its Maglev
/// table while its backends and weights are unchanged; the backend array is the previous one
/// with the touched VIPs' backends patched in (shared outright when no entry changed).
pub fn build<S: SpecSource>(
    version: u64,
    vips: &[S],
    ports: &[PortInfo],
    previous: Option<&Snapshot>,
) -> Result<Snapshot, SnapshotError> {
    if vips.len() > crate::stats::MAX_VIPS {
        return Err(SnapshotError::TooManyVips(vips.len()));
    }
    let earlier_vips: &[VipEntry] = previous.map_or(&[], |p| &p.vips);
    // By VIP id, the first entry of each id (as a search in order would find it).
    let mut earlier: HashMap<u32, usize> = HashMap::with_capacity(earlier_vips.len());
    for (i, e) in earlier_vips.iter().enumerate() {
        earlier.entry(e.id).or_insert(i);
    }
    // Which previous entries live on unchanged: the backends of the others are patched out.
    let mut kept = vec![false; earlier_vips.len()];
    let mut changed: Vec<&VipSpec> = Vec::new();
    let mut entries = Vec::with_capacity(vips.len());
    let mut matches = Vec::with_capacity(vips.len());
    for s in vips {
        let v = s.spec();
        matches.push(VipMatch {
            addr: mapped(v.key.addr),
            port: v.key.port,
            proto: v.key.protocol.number(),
        });
        let before = earlier.get(&v.id).map(|&i| (i, &earlier_vips[i]));
        // Its spec passed the range checks when that entry was built.
        if let Some((i, same)) = before.filter(|(_, e)| s.same_as(&e.source)) {
            kept[i] = true;
            entries.push(same.clone());
            continue;
        }
        for b in &v.backends {
            if v.id as usize >= crate::stats::MAX_VIPS
                || b.id as usize >= crate::stats::MAX_BACKENDS
            {
                return Err(SnapshotError::IdRange(v.id, b.id));
            }
        }
        entries.push(vip_entry(s, before.map(|(_, e)| e))?);
        changed.push(v);
    }
    let classifier =
        Classifier::new(&matches).map_err(|d| SnapshotError::DuplicateVip(vips[d.0].spec().key))?;
    let patched = previous.filter(|p| p.ids_unique).and_then(|p| {
        let gone = p.vips.iter().zip(&kept).filter(|(_, k)| !**k);
        patch_backends(&p.backends, gone.map(|(e, _)| &*e.source), &changed)
    });
    let (backends, ids_unique) = match patched {
        Some(backends) => (backends, true),
        None => fill_backends(vips),
    };
    Ok(Snapshot {
        version,
        vips: entries.into_boxed_slice(),
        classifier,
        backends,
        ports: ports.to_vec().into_boxed_slice(),
        ids_unique,
    })
}

/// The entry of a VIP that changed since `before` (its entry in the previous snapshot).
fn vip_entry<S: SpecSource>(s: &S, before: Option<&VipEntry>) -> Result<VipEntry, SnapshotError> {
    let v = s.spec();
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
    let reusable = before
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
    Ok(VipEntry {
        id: v.id,
        key: v.key,
        encap: v.encap,
        gue_port: v.gue_port,
        table,
        members,
        all_down,
        source: s.to_source(),
    })
}

/// The backend array of every VIP, and whether no backend id appeared twice (where one
/// does, the VIP later in order holds it).
fn fill_backends<S: SpecSource>(vips: &[S]) -> (Arc<[Option<BackendEntry>]>, bool) {
    let len = vips
        .iter()
        .flat_map(|s| s.spec().backends.iter().map(|b| b.id))
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut backends: Vec<Option<BackendEntry>> = vec![None; len];
    let mut unique = true;
    for v in vips.iter().map(SpecSource::spec) {
        for b in &v.backends {
            let slot = &mut backends[b.id as usize];
            unique &= slot.is_none();
            *slot = Some(backend_entry(v, b));
        }
    }
    (backends.into(), unique)
}

/// `earlier` (whose ids are unique) without the backends of the VIPs `gone` and with those
/// of `changed`: the array a full fill would give, in one pass over it. `None` when an id of
/// `changed` is also another VIP's; the caller then fills anew to keep the order's rule.
fn patch_backends<'a>(
    earlier: &Arc<[Option<BackendEntry>]>,
    gone: impl Iterator<Item = &'a VipSpec>,
    changed: &[&VipSpec],
) -> Option<Arc<[Option<BackendEntry>]>> {
    let mut patches: Vec<(u32, Option<BackendEntry>)> = gone
        .flat_map(|v| v.backends.iter().map(|b| (b.id, None)))
        .chain(
            changed
                .iter()
                .flat_map(|v| v.backends.iter().map(|b| (b.id, Some(backend_entry(v, b))))),
        )
        .collect();
    if patches.is_empty() {
        return Some(earlier.clone());
    }
    // Per id, a removal sorts before a new entry; a second new entry is a duplicate id.
    patches.sort_unstable_by_key(|(id, e)| (*id, e.is_some()));
    let mut last: Vec<(u32, Option<BackendEntry>)> = Vec::with_capacity(patches.len());
    for (id, e) in patches {
        match last.last_mut() {
            Some((at, held)) if *at == id => {
                if held.is_some() {
                    return None;
                }
                *held = e;
            }
            _ => {
                let held = earlier.get(id as usize).and_then(Option::as_ref);
                if e.is_some() && held.is_some() {
                    return None; // a VIP that stays keeps this id
                }
                last.push((id, e));
            }
        }
    }
    let now = |id: usize| match last.binary_search_by_key(&id, |(at, _)| *at as usize) {
        Ok(i) => last[i].1.as_ref(),
        Err(_) => earlier.get(id).and_then(Option::as_ref),
    };
    if last
        .iter()
        .all(|(id, e)| e.as_ref() == earlier.get(*id as usize).and_then(Option::as_ref))
    {
        return Some(earlier.clone());
    }
    let highest = last.last().map_or(0, |(id, _)| *id as usize + 1);
    let mut len = earlier.len().max(highest);
    while len > 0 && now(len - 1).is_none() {
        len -= 1;
    }
    let mut next = last.iter().peekable();
    Some(
        (0..len)
            .map(|i| match next.next_if(|(id, _)| *id as usize == i) {
                Some((_, e)) => e.clone(),
                None => earlier.get(i).cloned().flatten(),
            })
            .collect(),
    )
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
}
