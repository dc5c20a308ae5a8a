//! Next-hop MACs from the kernel's neighbour table.
//!
//! With the exception path on, every port has a kernel TAP twin, so the kernel answers ARP
//! and ND for the balancer and keeps a neighbour table for the port's link. The control plane
//! reads that table instead of resolving addresses itself: a helper thread runs iproute2
//! (`ip -j neigh show` and `ip -j route get ADDR`, which read the kernel's tables over
//! netlink) every [`PERIOD`], and sends the control thread the MAC of each backend's next hop
//! whenever one appears or changes; the control thread then publishes a new snapshot.
//!
//! The next hop of a backend is the gateway of the kernel's route to it, or the backend
//! itself when it is on-link (always, for `l2dsr`). Only routes that leave through a port's
//! exception interface count: anything else is not reachable through the data plane. When a
//! backend's next hop is not in the table yet, the thread sends one empty UDP datagram to the
//! backend's discard port (9), which makes the kernel resolve the next hop (health checks,
//! going through the kernel too, have the same effect).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;

use super::state::Desired;
use crate::addr::MacAddr;
use crate::encap::EncapMode;

/// How often the neighbour table is read.
pub const PERIOD: Duration = Duration::from_secs(2);

/// A backend whose next-hop MAC the workers need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub backend_id: u32,
    pub addr: IpAddr,
    /// The backend itself must be on the link (`l2dsr`): a route through a gateway is no use.
    pub on_link: bool,
}

/// One entry of `ip -j neigh show`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Neighbour {
    pub dst: IpAddr,
    #[serde(default)]
    pub dev: Option<String>,
    #[serde(default)]
    pub lladdr: Option<String>,
    #[serde(default)]
    pub state: Vec<String>,
}

impl Neighbour {
    /// The MAC, if the entry has a usable one (not FAILED or INCOMPLETE).
    pub fn mac(&self) -> Option<MacAddr> {
        if self
            .state
            .iter()
            .any(|s| s == "FAILED" || s == "INCOMPLETE")
        {
            return None;
        }
        self.lladdr.as_deref()?.parse().ok()
    }
}

/// One answer of `ip -j route get ADDR`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: IpAddr,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub dev: Option<String>,
}

/// Parses the output of `ip -j neigh show`.
pub fn parse_neighbours(json: &str) -> Result<Vec<Neighbour>, serde_json::Error> {
    serde_json::from_str(json)
}

/// Parses the output of `ip -force -j -batch -` fed `route get` lines: one JSON array per
/// command that succeeded.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, serde_json::Error> {
    let mut routes = Vec::new();
    for array in serde_json::Deserializer::from_str(json).into_iter::<Vec<Route>>() {
        routes.extend(array?);
    }
    Ok(routes)
}

/// The MAC of each wanted backend's next hop, where the tables know one.
pub fn next_hop_macs(
    wanted: &[Wanted],
    routes: &[Route],
    neighbours: &[Neighbour],
    ifaces: &[String],
) -> HashMap<u32, [u8; 6]> {
    let mut macs = HashMap::new();
    for w in wanted {
        let Some(route) = routes.iter().find(|r| r.dst == w.addr) else {
            continue;
        };
        let Some(dev) = route.dev.as_ref().filter(|d| ifaces.contains(d)) else {
            continue;
        };
        let next_hop = match route.gateway {
            Some(_) if w.on_link => continue,
            Some(gateway) => gateway,
            None => w.addr,
        };
        let mac = neighbours
            .iter()
            .filter(|n| n.dst == next_hop && n.dev.as_deref().is_none_or(|d| d == dev))
            .find_map(Neighbour::mac);
        if let Some(mac) = mac {
            macs.insert(w.backend_id, mac.0);
        }
    }
    macs
}

/// The next-hop MACs of the backends that need one, as the kernel's neighbour tables resolve
/// them (a reader thread asks; empty until it is started).
#[derive(Default)]
pub struct Macs {
    reader: Option<NeighbourReader>,
    found: HashMap<u32, [u8; 6]>,
}

impl Macs {
    /// Starts the reader thread on the ports' exception interfaces (none: no reader).
    pub fn start(&mut self, ifaces: Vec<String>) -> std::io::Result<()> {
        if !ifaces.is_empty() {
            self.reader = Some(NeighbourReader::start(ifaces)?);
        }
        Ok(())
    }

    /// Tells the reader which backends of `desired` need a next-hop MAC: those of L2 DSR
    /// VIPs (on the link), and with `encap_needs_mac` (a port without a gateway MAC) those of
    /// the other VIPs too. Backends with a configured MAC need none.
    pub fn want(&self, desired: &Desired, encap_needs_mac: bool) {
        let Some(reader) = &self.reader else {
            return;
        };
        let mut wanted = Vec::new();
        for v in &desired.vips {
            let l2 = v.encap == EncapMode::L2Dsr;
            if !l2 && !encap_needs_mac {
                continue;
            }
            for b in v.backends.iter().filter(|b| b.mac.is_none()) {
                wanted.push(Wanted {
                    backend_id: b.id,
                    addr: b.address.addr,
                    on_link: l2,
                });
            }
        }
        reader.want(wanted);
    }

    /// Takes in the reader's latest resolution; returns whether any MAC changed.
    pub fn poll(&mut self) -> bool {
        match self.reader.as_ref().and_then(NeighbourReader::try_found) {
            Some(found) if found != self.found => {
                self.found = found;
                true
            }
            _ => false,
        }
    }

    /// A backend's resolved MAC.
    pub fn get(&self, backend_id: u32) -> Option<[u8; 6]> {
        self.found.get(&backend_id).copied()
    }
}

/// The helper thread's handle.
pub struct NeighbourReader {
    wanted: Option<Sender<Vec<Wanted>>>,
    found: Receiver<HashMap<u32, [u8; 6]>>,
    _thread: JoinHandle<()>,
}

impl NeighbourReader {
    /// Starts reading the neighbour tables of `ifaces` (the ports' exception interfaces).
    pub fn start(ifaces: Vec<String>) -> std::io::Result<NeighbourReader> {
        let (wanted_tx, wanted_rx) = crossbeam::channel::unbounded();
        let (found_tx, found_rx) = crossbeam::channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("fulcrum-neigh".into())
            .spawn(move || run(ifaces, wanted_rx, found_tx))?;
        Ok(NeighbourReader {
            wanted: Some(wanted_tx),
            found: found_rx,
            _thread: thread,
        })
    }

    /// Replaces the list of backends to resolve.
    pub fn want(&self, wanted: Vec<Wanted>) {
        if let Some(tx) = &self.wanted {
            let _ = tx.send(wanted);
        }
    }

    /// The latest resolution, if a new one arrived.
    pub fn try_found(&self) -> Option<HashMap<u32, [u8; 6]>> {
        self.found.try_iter().last()
    }
}

impl Drop for NeighbourReader {
    fn drop(&mut self) {
        // Disconnecting ends the thread at its next wake-up.
        self.wanted.take();
    }
}

fn run(ifaces: Vec<String>, wanted: Receiver<Vec<Wanted>>, found: Sender<HashMap<u32, [u8; 6]>>) {
    let mut current: Vec<Wanted> = Vec::new();
    let mut last: Option<HashMap<u32, [u8; 6]>> = None;
    let mut warned = false;
    loop {
        match wanted.recv_timeout(PERIOD) {
            Ok(list) => current = wanted.try_iter().last().unwrap_or(list),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if current.is_empty() {
            continue;
        }
        match read_tables(&current) {
            Ok((routes, neighbours)) => {
                warned = false;
                let macs = next_hop_macs(&current, &routes, &neighbours, &ifaces);
                poke_unresolved(&current, &macs, &routes, &ifaces);
                if last.as_ref() != Some(&macs) {
                    if found.send(macs.clone()).is_err() {
                        return;
                    }
                    last = Some(macs);
                }
            }
            Err(e) if !warned => {
                tracing::warn!("cannot read the kernel's neighbour table ({e}); backends without a configured MAC stay unresolved");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// How long one `ip` invocation may take before it is killed: the reader must never hang on a
/// stuck or slow child.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

fn read_tables(wanted: &[Wanted]) -> Result<(Vec<Route>, Vec<Neighbour>), String> {
    read_tables_with("ip", wanted, IP_TIMEOUT)
}

/// [`read_tables`] with the iproute2 program `ip` (a test substitutes its own).
fn read_tables_with(
    ip: &str,
    wanted: &[Wanted],
    timeout: Duration,
) -> Result<(Vec<Route>, Vec<Neighbour>), String> {
    let neigh = run_piped(ip, &["-j", "neigh", "show"], Vec::new(), timeout)
        .map_err(|e| format!("{ip} -j neigh show: {e}"))?;
    let neighbours = parse_neighbours(&String::from_utf8_lossy(&neigh))
        .map_err(|e| format!("{ip} -j neigh show: {e}"))?;
    let addrs: HashSet<IpAddr> = wanted.iter().map(|w| w.addr).collect();
    let mut batch = String::new();
    for addr in addrs {
        batch.push_str(&format!("route get {addr}\n"));
    }
    let out = run_piped(
        ip,
        &["-force", "-j", "-batch", "-"],
        batch.into_bytes(),
        timeout,
    )
    .map_err(|e| format!("{ip} -batch: {e}"))?;
    let routes =
        parse_routes(&String::from_utf8_lossy(&out)).map_err(|e| format!("ip route get: {e}"))?;
    Ok((routes, neighbours))
}

/// Runs `program args`, feeding it `input` from a thread of its own while this one reads its
/// output: writing all the input first deadlocks as soon as both pipes fill (a few thousand
/// `route get` lines do). A child still running after `timeout` is killed.
fn run_piped(
    program: &str,
    args: &[&str],
    input: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that exits early closes the pipe: EPIPE is its answer, not ours to report.
            let _ = stdin.write_all(&input);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = match stdout {
            Some(mut s) => std::io::Read::read_to_end(&mut s, &mut out).map(|_| out),
            None => Ok(out),
        };
        let _ = tx.send(read);
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s; killed", timeout.as_secs())),
    };
    if result.is_err() {
        let _ = child.kill();
    }
    // Killing closes the child's ends of both pipes, so both threads finish.
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = writer.join();
    let _ = reader.join();
    let out = result?;
    if !status.success() && out.is_empty() {
        return Err(format!("exited with {status}"));
    }
    Ok(out)
}

/// Makes the kernel resolve the next hops not in its table yet.
fn poke_unresolved(
    wanted: &[Wanted],
    macs: &HashMap<u32, [u8; 6]>,
    routes: &[Route],
    ifaces: &[String],
) {
    let Ok(v4) = UdpSocket::bind("0.0.0.0:0") else {
        return;
    };
    let v6 = UdpSocket::bind("[::]:0").ok();
    for w in wanted.iter().filter(|w| !macs.contains_key(&w.backend_id)) {
        let through_port = routes
            .iter()
            .any(|r| r.dst == w.addr && r.dev.as_ref().is_some_and(|d| ifaces.contains(d)));
        if !through_port {
            continue;
        }
        let target = SocketAddr::new(w.addr, 9);
        let _ = match w.addr {
            IpAddr::V4(_) => v4.send_to(&[], target),
            IpAddr::V6(_) => match &v6 {
                Some(s) => s.send_to(&[], target),
                None => continue,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEIGH: &str = r#"[{"dst":"203.0.113.1","dev":"fx0","lladdr":"02:00:00:00:00:01","state":["REACHABLE"]},
        {"dst":"198.51.100.7","dev":"fx0","lladdr":"02:00:00:00:00:07","state":["STALE"]},
        {"dst":"198.51.100.8","dev":"fx0","state":["FAILED"]},
        {"dst":"198.51.100.9","dev":"eth0","lladdr":"02:00:00:00:00:09","state":["REACHABLE"]},
        {"dst":"fe80::1","dev":"fx0","lladdr":"02:00:00:00:00:61","router":null,"state":["STALE"]}]"#;

    const ROUTES: &str = r#"[{"dst":"198.51.100.7","dev":"fx0","prefsrc":"203.0.113.2","flags":[],"uid":0,"cache":[]}]
[{"dst":"198.51.100.8","dev":"fx0","prefsrc":"203.0.113.2","flags":[],"uid":0,"cache":[]}]
[{"dst":"198.51.100.9","dev":"eth0","flags":[],"uid":0,"cache":[]}]
[{"dst":"192.0.2.50","gateway":"203.0.113.1","dev":"fx0","flags":[],"uid":0,"cache":[]}]
[{"dst":"2001:db8::7","from":"::","gateway":"fe80::1","dev":"fx0","metric":1024,"flags":[],"pref":"medium"}]
"#;

    fn w(id: u32, addr: &str, on_link: bool) -> Wanted {
        Wanted {
            backend_id: id,
            addr: addr.parse().unwrap(),
            on_link,
        }
    }

    #[test]
    fn finds_on_link_and_gateway_next_hops_through_the_ports_only() {
        let neighbours = parse_neighbours(NEIGH).unwrap();
        let routes = parse_routes(ROUTES).unwrap();
        assert_eq!(routes.len(), 5);
        let wanted = [
            w(1, "198.51.100.7", true),   // on-link, in the table
            w(2, "198.51.100.8", false),  // FAILED entry: unresolved
            w(3, "198.51.100.9", false),  // routed out of another interface
            w(4, "192.0.2.50", false),    // off-link: the gateway's MAC
            w(5, "192.0.2.50", true),     // l2dsr but off-link: no use
            w(6, "2001:db8::7", false),   // IPv6 through a link-local router
            w(7, "198.51.100.99", false), // no route at all
        ];
        let macs = next_hop_macs(&wanted, &routes, &neighbours, &["fx0".to_string()]);
        let expected: HashMap<u32, [u8; 6]> = [
            (1, [2, 0, 0, 0, 0, 7]),
            (4, [2, 0, 0, 0, 0, 1]),
            (6, [2, 0, 0, 0, 0, 0x61]),
        ]
        .into_iter()
        .collect();
        assert_eq!(macs, expected);
    }

    #[test]
    fn thousands_of_backends_do_not_deadlock_the_reader() {
        // A stand-in for ip that, like the real one, answers each line of its batch with a
        // route of ~100 bytes as it reads: with 5,000 backends both pipes fill up.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("ip");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$*\" in\n*neigh*) echo '[]' ;;\n*) while read -r _ _ a; do printf '[{\"dst\":\"%s\",\"dev\":\"fl-padding-padding-padding-padding-padding-padding-padding\"}]\\n' \"$a\"; done ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wanted: Vec<Wanted> = (0..5000u32)
            .map(|i| Wanted {
                backend_id: i,
                addr: IpAddr::V6(std::net::Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
                )),
                on_link: true,
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let fake_path = fake.to_str().unwrap().to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(read_tables_with(
                &fake_path,
                &wanted,
                Duration::from_secs(20),
            ));
        });
        let (routes, neighbours) = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("reading the tables of 5,000 backends hangs")
            .expect("the tables parse");
        assert_eq!(routes.len(), 5000);
        assert!(neighbours.is_empty());
    }

    #[test]
    fn a_stuck_ip_is_killed_after_the_timeout() {
        let started = std::time::Instant::now();
        let r = run_piped("sleep", &["30"], Vec::new(), Duration::from_millis(300));
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_real_ip_command_output_parses() {
        // Reads this machine's tables (no traffic is sent); skipped without iproute2.
        let Ok(out) = Command::new("ip").args(["-j", "neigh", "show"]).output() else {
            return;
        };
        if out.status.success() {
            parse_neighbours(&String::from_utf8_lossy(&out.stdout)).unwrap();
        }
        let (routes, _) = read_tables(&[w(1, "127.0.0.1", false)]).unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].dev.as_deref(), Some("lo"));
    }
}
