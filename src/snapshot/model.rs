//! What a snapshot holds (the VIPs with their Maglev tables, the backends by id, the ports),
//! and the specs the control plane describes it with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr::{BackendAddr, VipKey};
use crate::classify::Classifier;
use crate::encap::EncapMode;
use crate::maglev::MaglevTable;

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
    pub(super) ids_unique: bool,
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
