//! The bodies of the fuzz targets in `fuzz/` (`cargo +nightly fuzz run TARGET`), shared
//! with `tests/fuzz_corpus.rs`, which replays every committed corpus input through them on
//! stable. Each function takes arbitrary bytes and must return without panicking: a panic
//! is a defect in the code under it (bad input is an error or a counted drop, never a
//! crash). Not part of the API.
//!
//! - [`parser`]: the frame parser (`wire::parse`) over arbitrary bytes.
//! - [`pipeline`]: `Pipeline::process_burst` over bursts of frames cut from the input, on a
//!   snapshot with VIPs in every encapsulation mode, with time advancing between bursts.
//! - [`config`]: the configuration file parser and validator (`config::from_str`).
//! - [`api`]: the control API's request handling (`control::DetachedApi`).

use crate::datapath::encap::{EncapMode, GUE_DEFAULT_PORT};
use crate::datapath::pipeline::{Pipeline, PipelineConfig, Verdict};
use crate::datapath::stats::{DropReason, WorkerStats};
use crate::frames;
use crate::packet::VecPacket;
use crate::snapshot::{self, BackendSpec, BackendState, PortInfo, Snapshot, VipSpec};
use crate::wire::{self, IpMeta, Parsed};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The parser over one arbitrary frame: `parse` and `parse_into` must agree, and the
/// offsets they report must lie inside the frame.
pub fn parser(data: &[u8]) {
    let parsed = wire::parse(data);
    let mut meta = IpMeta::UNSPECIFIED;
    let into = meta.parse_into(data);
    match (&parsed, &into) {
        (Ok(Parsed::Ip(ip)), Ok(true)) => {
            assert_eq!(*ip, meta, "parse and parse_into disagree");
            assert_eq!(usize::from(ip.l2_len), usize::from(ip.l3_offset));
            let ip_end = usize::from(ip.l3_offset) + ip.ip_len as usize;
            assert!(ip_end <= data.len(), "IP length beyond the frame");
            assert!(
                usize::from(ip.l4_offset) <= ip_end,
                "L4 offset beyond the IP"
            );
            let _ = (ip.l4_len(), ip.src_addr(), ip.dst_addr());
        }
        (Ok(Parsed::NotIp { l2_len, .. }), Ok(false)) => {
            assert!(usize::from(*l2_len) <= data.len());
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "parse and parse_into disagree"),
        _ => panic!("parse and parse_into disagree: {parsed:?} vs {into:?}"),
    }
}

/// The port MAC the pipeline target's frames are sent to.
const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const BURST: usize = 32;
/// Bursts per input, so one input cannot run for long.
const MAX_BURSTS: usize = 16;
const TICKS_PER_SECOND: u64 = 1000;

fn backend(id: u32, addr: &str) -> BackendSpec {
    BackendSpec {
        id,
        addr: addr.parse().expect("backend address"),
        weight: 1 + id % 3,
        state: if id % 5 == 4 {
            BackendState::Draining
        } else {
            BackendState::Active
        },
        mac: Some([0x02, 0xbe, 0, 0, 0, id as u8]),
    }
}

fn vip(id: u32, key: &str, encap: EncapMode, backends: Vec<BackendSpec>) -> VipSpec {
    VipSpec {
        id,
        key: key.parse().expect("vip"),
        encap,
        gue_port: GUE_DEFAULT_PORT,
        table_size: 251,
        backends,
    }
}

/// The pipeline target's VIPs: every encapsulation mode, both families, two port-0 VIPs,
/// one VIP with no backend. `changed` drops and adds backends (a second snapshot).
fn vips(changed: bool) -> Vec<VipSpec> {
    let b4 = |ids: &[u32]| -> Vec<BackendSpec> {
        ids.iter()
            .map(|&i| backend(i, &format!("198.51.100.{i}")))
            .collect()
    };
    let b6 = |ids: &[u32]| -> Vec<BackendSpec> {
        ids.iter()
            .map(|&i| backend(i, &format!("2001:db8::1:{i}")))
            .collect()
    };
    let (web, dns) = if changed {
        (b4(&[11, 13, 14]), b4(&[]))
    } else {
        (b4(&[11, 12, 13]), b4(&[21, 22]))
    };
    vec![
        vip(0, "192.0.2.10:80/tcp", EncapMode::Ipip, web),
        vip(1, "192.0.2.10:53/udp", EncapMode::Gue, dns),
        vip(2, "[2001:db8::10]:443/tcp", EncapMode::L2Dsr, b6(&[31, 32])),
        vip(3, "192.0.2.30:0/tcp", EncapMode::Ipip, b4(&[41, 42])),
        vip(4, "[2001:db8::20]:0/udp", EncapMode::Gue, b6(&[51, 52, 53])),
        vip(5, "192.0.2.40:8080/tcp", EncapMode::Gue, b6(&[61])),
        vip(6, "[2001:db8::30]:4500/udp", EncapMode::Ipip, b4(&[71, 74])),
        vip(7, "192.0.2.50:0/udp", EncapMode::L2Dsr, b4(&[81])),
    ]
}

fn ports() -> Vec<PortInfo> {
    vec![
        PortInfo {
            mac: PORT_MAC,
            mtu: 1500,
            src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
            src_v6: Some("2001:db8:ffff::2".parse().expect("v6")),
            gateway_mac: None,
            promiscuous: false,
        },
        PortInfo {
            mac: [0x02, 0, 0, 0, 0, 0x2b],
            mtu: 9000,
            src_v4: Some(Ipv4Addr::new(203, 0, 113, 3)),
            src_v6: None,
            gateway_mac: Some([0x02, 0, 0, 0, 0, 1]),
            promiscuous: true,
        },
    ]
}

/// The two snapshots the pipeline target switches between.
pub fn pipeline_snapshots() -> (Snapshot, Snapshot) {
    let ports = ports();
    let first = snapshot::build(1, &vips(false), &ports, None).expect("snapshot 1");
    let second = snapshot::build(2, &vips(true), &ports, Some(&first)).expect("snapshot 2");
    (first, second)
}

/// Appends a 16-bit big-endian value.
/// Ethernet + IPv4 header (no options) from client `198.18.0.src_low` for `l4` bytes of
/// protocol `proto`, fragment field `frag` (flags and offset), identification `id`.
fn ipv4_frame(dst: Ipv4Addr, src_low: u8, proto: u8, frag: u16, id: u16, l4: &[u8]) -> Vec<u8> {
    let o = frames::V4 {
        ttl: 64,
        df: frag & 0x4000 != 0,
        id,
        frag_offset8: frag & 0x1fff,
        more_fragments: frag & 0x2000 != 0,
    };
    let src = Ipv4Addr::new(198, 18, 0, src_low);
    let ip = frames::ipv4(src, dst, proto, o, l4);
    frames::ethernet(PORT_MAC, CLIENT_MAC, frames::ETHERTYPE_IPV4, &ip)
}

/// Ethernet + IPv6 header from client `2001:db8:c1::src_low` for `l4` bytes with next
/// header `next`.
fn ipv6_frame(dst: Ipv6Addr, src_low: u8, next: u8, l4: &[u8]) -> Vec<u8> {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, u16::from(src_low));
    let ip = frames::ipv6(src, dst, next, 64, l4);
    frames::ethernet(PORT_MAC, CLIENT_MAC, frames::ETHERTYPE_IPV6, &ip)
}

/// A TCP (proto 6) or UDP (17) header and `payload`.
fn l4(proto: u8, sport: u16, dport: u16, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    if proto == frames::TCP {
        frames::tcp(sport, dport, tcp_flags, payload)
    } else {
        frames::udp(sport, dport, payload)
    }
}

/// One frame from a record: kind `0` takes the bytes as they are; the others build a
/// well-formed frame toward one of the VIPs from the first bytes (client, ports, flags,
/// fragment fields) with the rest as payload, so the fuzzer starts deep in the pipeline.
fn frame(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let payload = bytes.get(6..).unwrap_or(&[]);
    let client = b(0);
    let sport = 1024 + u16::from(b(1));
    let flags = b(2);
    // A few of the ports that matter: the VIPs', one nobody serves, and a fuzzer's pick.
    let dport = match b(3) % 4 {
        0 => 80,
        1 => 53,
        2 => 22,
        _ => u16::from_be_bytes([b(4), b(5)]),
    };
    let v4 = |last: u8| Ipv4Addr::new(192, 0, 2, last);
    let v6 = |last: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last);
    match kind & 7 {
        0 => bytes.to_vec(),
        1 => ipv4_frame(
            v4(10),
            client,
            6,
            0x4000,
            0,
            &l4(6, sport, dport, flags, payload),
        ),
        2 => ipv4_frame(v4(10), client, 17, 0, 0, &l4(17, sport, dport, 0, payload)),
        3 => {
            let (dst, proto, port) = match b(3) % 4 {
                0 => (v6(0x10), 6, 443),
                1 => (v6(0x20), 17, dport),
                2 => (v6(0x30), 17, 4500),
                _ => (v6(0x10), 6, dport),
            };
            ipv6_frame(dst, client, proto, &l4(proto, sport, port, flags, payload))
        }
        4 => {
            let (dst, proto) = match b(3) % 3 {
                0 => (v4(30), 6),
                1 => (v4(50), 17),
                _ => (v4(40), 6),
            };
            let port = if b(3) % 3 == 2 { 8080 } else { dport };
            ipv4_frame(
                dst,
                client,
                proto,
                0,
                0,
                &l4(proto, sport, port, flags, payload),
            )
        }
        5 => {
            // An IPv4 fragment: offset (8-byte units) and MF from the fuzzer, a small id
            // space so fragments of one datagram meet.
            let offset = u16::from(b(4) & 0x1f);
            let mf = if b(4) & 0x80 != 0 { 0x2000 } else { 0 };
            let id = u16::from(b(5) & 7);
            let proto = if flags & 1 == 0 { 6 } else { 17 };
            let body = if offset == 0 {
                l4(proto, sport, dport, flags, payload)
            } else {
                payload.to_vec()
            };
            let dst = if b(3) & 4 == 0 { v4(10) } else { v4(30) };
            ipv4_frame(dst, client & 3, proto, mf | offset, id, &body)
        }
        6 => {
            // An IPv6 fragment header (next header 44) before TCP or UDP.
            let offset = u16::from(b(4) & 0x1f);
            let mf = u16::from(b(4) >> 7);
            let proto = if flags & 1 == 0 { 6 } else { 17 };
            let rest = if offset == 0 {
                l4(proto, sport, dport, flags, payload)
            } else {
                payload.to_vec()
            };
            let body = frames::ipv6_fragment(proto, offset, mf != 0, u32::from(b(5) & 7), &rest);
            let dst = if b(3) & 4 == 0 { v6(0x10) } else { v6(0x20) };
            ipv6_frame(dst, client & 3, 44, &body)
        }
        _ => {
            // An ICMP error (type/code from the fuzzer) sent to a VIP, quoting a
            // VIP -> client packet: the path that routes errors by the flow they quote.
            let quoted = ipv4_frame(
                Ipv4Addr::new(198, 18, 0, client),
                10,
                6,
                0,
                0,
                &l4(6, dport, sport, flags, &[]),
            );
            let mut icmp = vec![b(4) % 16, b(5) % 8, 0, 0, 0, 0, 0x05, 0xdc];
            // The quote: the inner IPv4 header (source rewritten to the VIP) and 8 bytes.
            let mut inner = quoted[14..].to_vec();
            inner[12..16].copy_from_slice(&v4(10).octets());
            inner.truncate(28 + usize::from(b(2) & 0x0f));
            icmp.extend_from_slice(&inner);
            icmp.extend_from_slice(payload);
            ipv4_frame(v4(10), 200, 1, 0, 0, &icmp)
        }
    }
}

/// The whole pipeline over arbitrary bursts, as a worker runs it.
///
/// The input is a sequence of records `[kind, len_hi, len_lo, bytes[len]]` (`len` modulo
/// 4096; a short last record takes what is left). `kind & 7` is the frame builder (see
/// [`frame`]); bit 3 overwrites one byte of the built frame (position and value from the
/// record's last two bytes); bit 7 ends the burst before this frame; bit 6 switches to the
/// other snapshot at that burst; bit 5 advances time by a minute instead of a millisecond
/// (past the idle and fragment timeouts); bit 4 sends the burst on port 1 (promiscuous,
/// MTU 9000, no IPv6 source). A burst also ends after 32 frames.
pub fn pipeline(data: &[u8]) {
    let (first, second) = pipeline_snapshots();
    pipeline_with(&first, &second, data);
}

/// The number of VIPs in [`pipeline_snapshots`] (ids `0..PIPELINE_VIPS`).
pub const PIPELINE_VIPS: usize = 8;

/// [`pipeline`] with the snapshots built once, for a fuzzer that runs it many times.
/// Returns the worker's counters (so a test can see what the input reached).
pub fn pipeline_with(first: &Snapshot, second: &Snapshot, data: &[u8]) -> Arc<WorkerStats> {
    let stats = Arc::new(WorkerStats::new(0, 2));
    let mut pipe = Pipeline::new(
        &PipelineConfig {
            conntrack_flows: 1024,
            idle_timeout: 30 * TICKS_PER_SECOND,
            ticks_per_second: TICKS_PER_SECOND,
            icmp_rate: 10,
        },
        stats.clone(),
    )
    .expect("pipeline");
    let mut now = 1_000u64;
    let mut snap = first;
    let mut port = 0usize;
    let mut burst: Vec<VecPacket> = Vec::with_capacity(BURST);
    let mut verdicts = [Verdict::Drop(DropReason::Parse); BURST];
    let mut bursts = 0;
    let mut rest = data;
    let mut run = |pipe: &mut Pipeline, burst: &mut Vec<VecPacket>, snap: &Snapshot, port, now| {
        if burst.is_empty() {
            return;
        }
        let n = burst.len();
        pipe.process_burst(snap, port, burst, &mut verdicts[..n], now);
        pipe.housekeeping(now);
        burst.clear();
    };
    while !rest.is_empty() && bursts < MAX_BURSTS {
        let kind = rest[0];
        let len = match rest.get(1..3) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]]) & 0x0fff),
            None => rest.len(),
        };
        let body = rest.get(3..).unwrap_or(&[]);
        let len = len.min(body.len());
        let (bytes, tail) = body.split_at(len);
        rest = tail;

        if kind & 0x80 != 0 || burst.len() == BURST {
            run(&mut pipe, &mut burst, snap, port, now);
            bursts += 1;
            now += if kind & 0x20 != 0 {
                60 * TICKS_PER_SECOND
            } else {
                1
            };
            if kind & 0x40 != 0 {
                snap = if std::ptr::eq(snap, first) {
                    second
                } else {
                    first
                };
            }
        }
        if burst.is_empty() {
            port = usize::from(kind & 0x10 != 0);
        }
        let mut f = frame(kind, bytes);
        if kind & 0x08 != 0 && !f.is_empty() && bytes.len() >= 2 {
            let at = usize::from(bytes[bytes.len() - 2]) % f.len();
            f[at] = bytes[bytes.len() - 1];
        }
        burst.push(VecPacket::new(&f));
    }
    run(&mut pipe, &mut burst, snap, port, now);
    stats
}

/// The configuration parser and validator over arbitrary text; a configuration it accepts
/// must also give the control plane its VIPs and the data plane its first snapshot (its
/// state file is not read).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut config) = crate::config::from_str(text, "fuzz.toml") {
        // The state file would be read: inputs name paths on this machine.
        config.control.state_file = None;
        if let Ok(specs) = crate::control::initial_specs(&config) {
            let _ = snapshot::build(1, &specs, &[], None);
        }
    }
}

/// The configuration the API target starts from: one VIP, a token.
pub const API_CONFIG: &str = r#"
[[port]]
device = "net_tap0,iface=fulcrum0"
address = "203.0.113.2"
address6 = "2001:db8::2"

[control]
listen = "127.0.0.1:0"
token = "fuzz-token"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 251

[[vip.backend]]
address = "198.51.100.11"
weight = 2

[[vip.backend]]
address = "198.51.100.12"
"#;

const METHODS: [&str; 8] = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "get", ""];

/// The control API's request handling over a sequence of requests cut from the input,
/// against one [`crate::control::DetachedApi`] (so earlier requests change what later ones
/// see). Each request is `[method, auth, url_len, body_hi, body_lo, url, body]`: `method`
/// picks from a list, `auth` none / the right token / a wrong one / bytes from the input.
pub fn api(data: &[u8]) {
    let config = crate::config::from_str(API_CONFIG, "api.toml").expect("API config");
    let mut api = crate::control::DetachedApi::new(config).expect("detached API");
    let mut rest = data;
    for _ in 0..16 {
        let Some((head, tail)) = rest.split_first_chunk::<5>() else {
            break;
        };
        let [method, auth, url_len, hi, lo] = *head;
        let url_len = usize::from(url_len).min(tail.len());
        let (url, tail) = tail.split_at(url_len);
        let body_len = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len());
        let (body, tail) = tail.split_at(body_len);
        rest = tail;
        let url = String::from_utf8_lossy(url);
        let token;
        let authorization = match auth % 4 {
            0 => None,
            1 => Some("Bearer fuzz-token"),
            2 => Some("Bearer wrong"),
            _ => {
                token = String::from_utf8_lossy(body).into_owned();
                Some(token.as_str())
            }
        };
        let method = METHODS[usize::from(method) % METHODS.len()];
        let (status, _, _) = api.handle(method, &url, authorization, body);
        assert!((100..600).contains(&status), "status {status}");
    }
}
