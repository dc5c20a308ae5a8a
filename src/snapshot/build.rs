//! Building a snapshot from the control plane's specs: pure and deterministic, and, given
//! the previous snapshot, costing only what changed.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{
    BackendEntry, BackendSpec, BackendState, PortInfo, Snapshot, VipEntry, VipSpec,
};
use crate::addr::VipKey;
use crate::datapath::classify::{Classifier, VipMatch};
use crate::datapath::flow::mapped;
use crate::maglev::{MaglevBackend, MaglevError, MaglevTable};

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
    #[error("too many VIPs ({0}; at most {max})", max = crate::datapath::stats::MAX_VIPS)]
    TooManyVips(usize),
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
    if vips.len() > crate::datapath::stats::MAX_VIPS {
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
            if v.id as usize >= crate::datapath::stats::MAX_VIPS
                || b.id as usize >= crate::datapath::stats::MAX_BACKENDS
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
    // The table carries each backend's id, so its own (canonical) order names the members:
    // the order is decided in one place, the Maglev build.
    let maglev: Vec<MaglevBackend> = v
        .backends
        .iter()
        .map(|b| {
            let takes_new = match b.state {
                BackendState::Active => true,
                BackendState::Down => all_down,
                BackendState::Draining => false,
            };
            MaglevBackend::new(b.addr.to_string(), if takes_new { b.weight } else { 0 })
                .with_id(b.id)
        })
        .collect();
    let reusable = before
        .filter(|e| e.table.is_built_from(&maglev, v.table_size))
        .map(|e| e.table.clone());
    let table = match reusable {
        Some(t) => t,
        None => Arc::new(
            MaglevTable::build(&maglev, v.table_size)
                .map_err(|source| SnapshotError::Maglev { vip: v.key, source })?,
        ),
    };
    let members: Box<[u32]> = table.backends().iter().map(|b| b.id).collect();
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
