//! Golden-test plumbing: build frames, write input pcaps, run the real `fulcrum run` on
//! net_pcap ports, read what came out.
#![allow(dead_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
/// net_pcap's own MAC for its first port ("pcap"): the device cannot be given another.
pub const LB_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

// Not every test binary uses every builder.
#[allow(unused_imports)]
pub use fulcrum::frames::{checksum, ipv4, ipv6, ipv6_fragment, tcp, udp, ACK, SYN, V4};

/// An Ethernet header from the client to the balancer's port.
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    fulcrum::frames::ethernet(LB_MAC, CLIENT_MAC, ethertype, payload)
}

/// A client -> VIP TCP frame (IPv4 or IPv6 by the addresses).
pub fn tcp_frame(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = tcp(sport, dport, flags, payload);
    ip_frame(src, dst, 6, &l4)
}

pub fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let l4 = udp(sport, dport, payload);
    ip_frame(src, dst, 17, &l4)
}

pub fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth(0x0800, &ipv4(s, d, proto, V4::default(), l4)),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth(0x86dd, &ipv6(s, d, proto, 64, l4)),
        _ => panic!("mixed families"),
    }
}

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).expect("create pcap");
    let mut w = PcapWriter::new(f).expect("pcap writer");
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            fr.len() as u32,
            fr,
        ))
        .expect("write packet");
    }
}

pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = PcapReader::new(f).expect("pcap reader");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.expect("packet").data.into_owned());
    }
    out
}

/// A scratch directory for one golden run.
pub struct Run {
    pub dir: tempfile::TempDir,
}

/// The result of one `fulcrum run` over an input pcap.
pub struct Outcome {
    pub out: Vec<Vec<u8>>,
    pub exception: Vec<Vec<u8>>,
    pub totals: serde_json::Value,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Outcome {
    pub fn drops(&self, reason: &str) -> u64 {
        self.totals["drops"][reason].as_u64().unwrap_or(0)
    }
    pub fn total(&self, key: &str) -> u64 {
        self.totals[key].as_u64().unwrap_or(0)
    }
}

pub fn fulcrum_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fulcrum"))
}

static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Runs fulcrum with `vips_toml` (the `[[vip]]` tables) on `frames`, then stops it with
/// SIGTERM and returns what it sent. `extra_port` adds keys to the `[[port]]` table.
pub fn run_fulcrum(frames: &[Vec<u8>], vips_toml: &str, extra_port: &str) -> Outcome {
    run_fulcrum_mtu(frames, vips_toml, extra_port, 1500)
}

/// As [`run_fulcrum`], with the port's MTU set to `mtu`.
pub fn run_fulcrum_mtu(frames: &[Vec<u8>], vips_toml: &str, extra_port: &str, mtu: u16) -> Outcome {
    run_fulcrum_with(frames, vips_toml, extra_port, mtu, "")
}

/// As [`run_fulcrum_mtu`], with `extra_dataplane` added to the `[dataplane]` table.
pub fn run_fulcrum_with(
    frames: &[Vec<u8>],
    vips_toml: &str,
    extra_port: &str,
    mtu: u16,
    extra_dataplane: &str,
) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let exc_in = dir.path().join("exc-in.pcap");
    let exc_out = dir.path().join("exc-out.pcap");
    write_pcap(&input, frames);
    write_pcap(&exc_in, &[]);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let prefix = format!("fulcrum-golden-{}-{n}", std::process::id());
    let config = format!(
        r#"
[dataplane]
workers = 1
eal_args = ["--no-huge", "-m", "512", "--file-prefix={prefix}", "--log-level=lib.eal:error", "--log-level=pmd.net.pcap:error"]
conntrack_flows = 65536
{extra_dataplane}

[[port]]
device = "net_pcap0,rx_pcap={input},tx_pcap={output}"
mtu = {mtu}
address = "{LB_V4}"
address6 = "{LB_V6}"
gateway_mac = "02:00:00:00:00:01"
exception_device = "net_pcap1,rx_pcap={exc_in},tx_pcap={exc_out}"
{extra_port}

[control]
listen = "127.0.0.1:0"

{vips_toml}
"#,
        input = input.display(),
        output = output.display(),
        exc_in = exc_in.display(),
        exc_out = exc_out.display(),
    );
    let cfg_path = dir.path().join("fulcrum.toml");
    std::fs::write(&cfg_path, &config).expect("write config");
    let mut child = Command::new(fulcrum_bin())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fulcrum");
    // Wait until it runs, give the pcap replay time to drain, then stop it.
    let start = Instant::now();
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    let s = String::from_utf8_lossy(&buf[..k]).into_owned();
                    all.push_str(&s);
                    let _ = tx.send(s);
                }
            }
        }
        all
    });
    let mut seen = String::new();
    while !seen.contains("running:") && start.elapsed() < Duration::from_secs(20) {
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&s);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(700 + frames.len() as u64 / 50));
    // SAFETY-free signal: ask the process to stop like an operator would.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let output_all = child.wait_with_output().expect("wait");
    let stderr_all = reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&output_all.stdout).into_owned();
    let totals = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or(serde_json::Value::Null);
    let out = if output.exists() {
        read_pcap(&output)
    } else {
        Vec::new()
    };
    let exception = if exc_out.exists() {
        read_pcap(&exc_out)
    } else {
        Vec::new()
    };
    Outcome {
        out,
        exception,
        totals,
        stderr: stderr_all,
        status: output_all.status,
    }
}
