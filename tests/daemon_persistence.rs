//! `kill -9` during a burst of API changes loses no acknowledged change.
//!
//! A client thread applies a seeded mix of changes (VIPs and backends added and removed,
//! weights, drains) to the real daemon and records each one the API acknowledged. The daemon
//! is killed with SIGKILL at a seeded moment, usually with a request in flight, and restarted
//! from the same configuration three times. After each restart the state file must load, and
//! the daemon must hold exactly the acknowledged changes, plus possibly the one in flight
//! (written to disk, killed before it answered), with the same ids. The last restart also
//! forwards a pcap: every packet must reach the backend a snapshot built from the acknowledged
//! state picks, so the restarted workers' tables are that state's.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{dataplane_toml, unique_prefix, vip_path, DaemonProcess, Rng};
use common::golden::{read_pcap, tcp_frame, write_pcap, ACK, GATEWAY_MAC, LB_V4, LB_V6};
use fulcrum::cli::ApiTarget;
use fulcrum::datapath::flow::FiveTuple;
use fulcrum::snapshot::{self, BackendSpec, BackendState, PortInfo, VipSpec};

const SEED: u64 = 0x5eed_f00d;
const ROUNDS: usize = 5;
const FIRST_VIP: &str = "192.0.2.10:80/tcp";
/// VIPs the client may add, besides the first: 192.0.2.11 ..= 192.0.2.15.
const MORE_VIPS: u8 = 5;
/// Marks an id the test has not seen: the change was in flight when the daemon died.
const UNKNOWN_ID: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
struct BackendModel {
    id: u32,
    weight: u64,
    drained: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct VipModel {
    id: u32,
    backends: BTreeMap<String, BackendModel>,
}

/// The state the acknowledged changes add up to, by canonical VIP and backend text.
type Model = BTreeMap<String, VipModel>;

#[derive(Clone, Debug)]
enum Change {
    AddVip {
        vip: String,
        backend: String,
    },
    RemoveVip {
        vip: String,
    },
    AddBackend {
        vip: String,
        address: String,
        weight: u64,
    },
    RemoveBackend {
        vip: String,
        address: String,
    },
    Weight {
        vip: String,
        address: String,
        weight: u64,
    },
    Drain {
        vip: String,
        address: String,
        drain: bool,
    },
}

impl Change {
    /// A change that is valid in `model`, picked by `rng`.
    fn pick(model: &Model, rng: &mut Rng) -> Change {
        loop {
            let vips: Vec<&String> = model.keys().collect();
            let vip = vips[rng.below(vips.len() as u64) as usize].clone();
            let backends: Vec<&String> = model[&vip].backends.keys().collect();
            let backend = backends
                .get(rng.below(backends.len().max(1) as u64) as usize)
                .map(|b| (*b).clone());
            let roll = rng.below(100);
            let change = match (roll, backend) {
                (0..=29, Some(address)) => Change::Weight {
                    vip,
                    address,
                    weight: rng.below(5),
                },
                (30..=49, Some(address)) => Change::Drain {
                    drain: !model[&vip].backends[&address].drained,
                    vip,
                    address,
                },
                (50..=74, _) => {
                    let address = format!("198.51.100.{}", 1 + rng.below(254));
                    if model[&vip].backends.contains_key(&address) {
                        continue;
                    }
                    Change::AddBackend {
                        vip,
                        address,
                        weight: 1 + rng.below(3),
                    }
                }
                (75..=89, Some(address)) if backends.len() > 1 => {
                    Change::RemoveBackend { vip, address }
                }
                (90..=95, _) => {
                    let n = 11 + rng.below(u64::from(MORE_VIPS)) as u8;
                    let vip = format!("192.0.2.{n}:80/tcp");
                    if model.contains_key(&vip) {
                        continue;
                    }
                    Change::AddVip {
                        vip,
                        backend: format!("198.51.100.{}", 1 + rng.below(254)),
                    }
                }
                (96..=99, _) if vip != FIRST_VIP => Change::RemoveVip { vip },
                _ => continue,
            };
            return change;
        }
    }

    fn request(&self) -> (&'static str, String, Option<String>) {
        match self {
            Change::AddVip { vip, backend } => (
                "POST",
                "/v1/vips".into(),
                Some(format!(
                    r#"{{"vip": "{vip}", "encap": "ipip", "table_size": 1009, "backends": [{{"address": "{backend}"}}]}}"#
                )),
            ),
            Change::RemoveVip { vip } => ("DELETE", vip_path(vip), None),
            Change::AddBackend {
                vip,
                address,
                weight,
            } => (
                "POST",
                format!("{}/backends", vip_path(vip)),
                Some(format!(r#"{{"address": "{address}", "weight": {weight}}}"#)),
            ),
            Change::RemoveBackend { vip, address } => (
                "DELETE",
                format!("{}/backends/{address}", vip_path(vip)),
                None,
            ),
            Change::Weight {
                vip,
                address,
                weight,
            } => (
                "PATCH",
                format!("{}/backends/{address}", vip_path(vip)),
                Some(format!(r#"{{"weight": {weight}}}"#)),
            ),
            Change::Drain {
                vip,
                address,
                drain,
            } => (
                "POST",
                format!(
                    "{}/backends/{address}/{}",
                    vip_path(vip),
                    if *drain { "drain" } else { "undrain" }
                ),
                None,
            ),
        }
    }

    /// Applies the change to `model`; new ids come from the API's `answer`, or are
    /// [`UNKNOWN_ID`] for a change that was never answered.
    fn apply(&self, model: &mut Model, answer: Option<&serde_json::Value>) {
        let id = |v: &serde_json::Value| v.as_u64().map_or(UNKNOWN_ID, |id| id as u32);
        match self {
            Change::AddVip { vip, backend } => {
                let view = answer.map(|a| &a["vip"]);
                let backend_id = view.map_or(UNKNOWN_ID, |v| id(&v["backends"][0]["id"]));
                model.insert(
                    vip.clone(),
                    VipModel {
                        id: view.map_or(UNKNOWN_ID, |v| id(&v["id"])),
                        backends: BTreeMap::from([(
                            backend.clone(),
                            BackendModel {
                                id: backend_id,
                                weight: 1,
                                drained: false,
                            },
                        )]),
                    },
                );
            }
            Change::RemoveVip { vip } => {
                model.remove(vip);
            }
            Change::AddBackend {
                vip,
                address,
                weight,
            } => {
                let backend_id = answer.map_or(UNKNOWN_ID, |a| id(&a["backend"]["id"]));
                model.get_mut(vip).unwrap().backends.insert(
                    address.clone(),
                    BackendModel {
                        id: backend_id,
                        weight: *weight,
                        drained: false,
                    },
                );
            }
            Change::RemoveBackend { vip, address } => {
                model.get_mut(vip).unwrap().backends.remove(address);
            }
            Change::Weight {
                vip,
                address,
                weight,
            } => {
                let b = model.get_mut(vip).unwrap().backends.get_mut(address);
                b.unwrap().weight = *weight;
            }
            Change::Drain {
                vip,
                address,
                drain,
            } => {
                let b = model.get_mut(vip).unwrap().backends.get_mut(address);
                b.unwrap().drained = *drain;
            }
        }
    }
}

/// Whether `actual` is `expected`, where an expected [`UNKNOWN_ID`] matches any id.
fn matches(actual: &Model, expected: &Model) -> bool {
    let id_ok = |a: u32, e: u32| e == UNKNOWN_ID || a == e;
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|((ka, a), (ke, e))| {
            ka == ke
                && id_ok(a.id, e.id)
                && a.backends.len() == e.backends.len()
                && a.backends
                    .iter()
                    .zip(&e.backends)
                    .all(|((ba, a), (be, e))| {
                        ba == be
                            && id_ok(a.id, e.id)
                            && a.weight == e.weight
                            && a.drained == e.drained
                    })
        })
}

/// The state `GET /v1/vips` reports.
fn model_of_api(d: &DaemonProcess) -> (u64, Model) {
    let list = d.ok("GET", "/v1/vips", None);
    (
        list["version"].as_u64().unwrap(),
        model_of_views(&list["vips"]),
    )
}

fn model_of_views(vips: &serde_json::Value) -> Model {
    vips.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let backends = v["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["address"].as_str().unwrap().to_owned(),
                        BackendModel {
                            id: b["id"].as_u64().unwrap() as u32,
                            weight: b["weight"].as_u64().unwrap(),
                            drained: b["drained"].as_bool().unwrap(),
                        },
                    )
                })
                .collect();
            (
                v["vip"].as_str().unwrap().to_owned(),
                VipModel {
                    id: v["id"].as_u64().unwrap() as u32,
                    backends,
                },
            )
        })
        .collect()
}

/// The state file as fulcrum itself loads it on start.
fn model_of_state_file(path: &Path) -> (u64, Model) {
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("state file {} is not JSON: {e}", path.display()));
    assert_eq!(raw["format"], 1, "{raw}");
    let desired = fulcrum::control::persist::load(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the state file exists");
    let model = desired
        .vips
        .iter()
        .map(|v| {
            let backends = v
                .backends
                .iter()
                .map(|b| {
                    (
                        b.address.to_string(),
                        BackendModel {
                            id: b.id,
                            weight: u64::from(b.weight),
                            drained: b.drained,
                        },
                    )
                })
                .collect();
            (v.vip.to_string(), VipModel { id: v.id, backends })
        })
        .collect();
    (desired.version, model)
}

/// What the client thread and the test share.
#[derive(Default)]
struct Progress {
    model: Model,
    /// Sent, not (yet) answered.
    in_flight: Option<Change>,
    /// The version of the last acknowledged change.
    acknowledged_version: u64,
    acknowledged: usize,
    /// A refusal or malformed answer: the model and the daemon disagree.
    failure: Option<String>,
}

/// Applies changes until the daemon stops answering.
fn client(url: String, progress: Arc<Mutex<Progress>>, mut rng: Rng) {
    let api = ApiTarget::new(&url, None).unwrap();
    loop {
        let change = {
            let mut p = progress.lock().unwrap();
            let change = Change::pick(&p.model, &mut rng);
            p.in_flight = Some(change.clone());
            change
        };
        let (method, path, body) = change.request();
        let answer = api.request(
            method,
            &path,
            body.as_deref().map(|b| ("application/json", b.as_bytes())),
        );
        let Ok(answer) = answer else {
            return; // killed: the change stays in flight
        };
        let mut p = progress.lock().unwrap();
        let value: serde_json::Value = match serde_json::from_slice(&answer.body) {
            Ok(v) if (200..300).contains(&answer.status) => v,
            _ => {
                p.failure = Some(format!(
                    "{change:?} -> {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
                return;
            }
        };
        change.apply(&mut p.model, Some(&value));
        p.in_flight = None;
        p.acknowledged += 1;
        p.acknowledged_version = value["version"].as_u64().unwrap_or(0);
    }
}

/// After a restart: the state file loads, holds what the API reports, and that is every
/// acknowledged change plus at most the one in flight. Adopts the daemon's state as the
/// model for the next round.
fn check_restart(d: &DaemonProcess, state_file: &Path, progress: &mut Progress, round: usize) {
    let (file_version, from_file) = model_of_state_file(state_file);
    let (_, from_api) = model_of_api(d);
    assert_eq!(
        from_file, from_api,
        "round {round}: state file and API differ"
    );
    let acknowledged = progress.model.clone();
    let with_in_flight = progress.in_flight.as_ref().map(|c| {
        let mut m = acknowledged.clone();
        c.apply(&mut m, None);
        m
    });
    if matches(&from_api, &acknowledged) {
        assert_eq!(file_version, progress.acknowledged_version, "round {round}");
    } else {
        let in_flight_landed = with_in_flight
            .as_ref()
            .is_some_and(|m| matches(&from_api, m));
        assert!(
            in_flight_landed,
            "round {round}: after kill -9 the daemon holds\n{from_api:#?}\nbut the acknowledged changes add up to\n{acknowledged:#?}\n(in flight: {:?})",
            progress.in_flight
        );
        // Persisted, then killed before the answer left.
        assert_eq!(
            file_version,
            progress.acknowledged_version + 1,
            "round {round}"
        );
    }
    eprintln!(
        "round {round}: {} changes acknowledged so far, state version {file_version}, in flight {:?} {}",
        progress.acknowledged,
        progress.in_flight,
        if matches(&from_api, &acknowledged) {
            "(lost: never acknowledged)"
        } else {
            "(kept: on disk before the kill)"
        },
    );
    progress.model = from_api;
    progress.in_flight = None;
    progress.acknowledged_version = file_version;
}

/// Eight flows to every VIP the client may create; frames to absent VIPs are dropped.
fn traffic() -> Vec<(FiveTuple, Vec<u8>)> {
    let mut out = Vec::new();
    for n in 10..=10 + MORE_VIPS {
        for i in 0..8u16 {
            let client = Ipv4Addr::new(198, 18, n, i as u8 + 1);
            let vip = Ipv4Addr::new(192, 0, 2, n);
            let (sport, dport) = (50_000 + i, 80);
            out.push((
                FiveTuple::from_v4(client, vip, sport, dport, 6),
                tcp_frame(IpAddr::V4(client), IpAddr::V4(vip), sport, dport, ACK, b"p"),
            ));
        }
    }
    out
}

/// The backend a snapshot of `model` picks for each flow (`None`: the VIP is absent or has
/// no backend taking new flows).
fn expected_backends(model: &Model, flows: &[FiveTuple]) -> Vec<Option<Ipv4Addr>> {
    let specs: Vec<VipSpec> = model
        .iter()
        .map(|(key, v)| VipSpec {
            id: v.id,
            key: key.parse().unwrap(),
            encap: fulcrum::datapath::encap::EncapMode::Ipip,
            gue_port: 6080,
            table_size: 1009,
            backends: v
                .backends
                .iter()
                .map(|(address, b)| BackendSpec {
                    id: b.id,
                    addr: address.parse().unwrap(),
                    weight: b.weight as u32,
                    state: if b.drained || b.weight == 0 {
                        BackendState::Draining
                    } else {
                        BackendState::Active
                    },
                    mac: None,
                })
                .collect(),
        })
        .collect();
    let snap = snapshot::build(1, &specs, &[PortInfo::default()], None).unwrap();
    flows
        .iter()
        .map(|f| {
            let vip = snap
                .vips
                .iter()
                .find(|v| v.key.addr == f.dst_addr() && v.key.port == f.dst_port)?;
            let id = vip.pick(f.flow_hash())?;
            match snap.backend(id)?.addr {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }
        })
        .collect()
}

fn config_text(prefix: &str, input: &Path, output: &Path, state: &Path) -> String {
    format!(
        r#"{}
[[port]]
device = "net_pcap0,rx_pcap={},tx_pcap={}"
mtu = 1500
address = "{LB_V4}"
address6 = "{LB_V6}"
gateway_mac = "{}"

[control]
listen = "127.0.0.1:0"
state_file = "{}"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 1009

[[vip.backend]]
address = "198.51.100.1"

[[vip.backend]]
address = "198.51.100.2"
weight = 2
"#,
        dataplane_toml(prefix, 512, "exception_path = false"),
        input.display(),
        output.display(),
        fulcrum::addr::MacAddr(GATEWAY_MAC),
        state.display(),
    )
}

#[test]
fn kill_9_during_a_burst_of_changes_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    let state_file = dir.path().join("state").join("fulcrum.json");
    std::fs::create_dir(state_file.parent().unwrap()).unwrap();
    let flows = traffic();
    write_pcap(
        &input,
        &flows.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
    );
    let prefix = unique_prefix("persist");
    let config = dir.path().join("fulcrum.toml");
    std::fs::write(&config, config_text(&prefix, &input, &output, &state_file)).unwrap();
    let start = || DaemonProcess::start(&config, &prefix, Duration::from_secs(30));

    let mut rng = Rng(SEED);
    let mut progress = Progress::default();
    for round in 0..ROUNDS {
        let d = start();
        if round == 0 {
            // The configuration file's VIPs were written to the state file at once.
            let (version, model) = model_of_api(&d);
            assert_eq!(model_of_state_file(&state_file).1, model);
            progress.model = model;
            progress.acknowledged_version = version - 1;
        } else {
            check_restart(&d, &state_file, &mut progress, round);
        }
        let shared = Arc::new(Mutex::new(std::mem::take(&mut progress)));
        let thread = {
            let (url, shared) = (d.url.clone(), shared.clone());
            let rng = Rng(rng.next());
            std::thread::spawn(move || client(url, shared, rng))
        };
        // Kill after a seeded number of acknowledged changes, a seeded few hundred
        // microseconds later: usually in the middle of the next request.
        let kill_after = 20 + rng.below(30) as usize;
        let start_count = shared.lock().unwrap().acknowledged;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let p = shared.lock().unwrap();
            assert!(p.failure.is_none(), "{:?}", p.failure);
            if p.acknowledged >= start_count + kill_after {
                break;
            }
            assert!(
                !thread.is_finished() && std::time::Instant::now() < deadline,
                "round {round}: the client stopped after {} changes\n{}",
                p.acknowledged - start_count,
                d.stderr()
            );
            drop(p);
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
        d.kill9();
        thread.join().expect("the client thread panicked");
        progress = Arc::try_unwrap(shared)
            .ok()
            .expect("the client is done")
            .into_inner()
            .unwrap();
        assert!(progress.failure.is_none(), "{:?}", progress.failure);
    }

    // The last restart: the state is intact and the workers run it.
    let d = start();
    check_restart(&d, &state_file, &mut progress, ROUNDS);
    let tuples: Vec<FiveTuple> = flows.iter().map(|(t, _)| *t).collect();
    let expected: Vec<(FiveTuple, Ipv4Addr)> = tuples
        .iter()
        .zip(expected_backends(&progress.model, &tuples))
        .filter_map(|(t, b)| Some((*t, b?)))
        .collect();
    // Workers count packets by backend id, the API names ids by address: the counts per
    // address match only if the workers' snapshot has the acknowledged ids.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = d.ok("GET", "/v1/stats", None);
        if stats["ports"][0]["rx_packets"].as_u64() == Some(flows.len() as u64) {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pcap not replayed: {stats}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut per_backend: BTreeMap<(String, String), u64> = BTreeMap::new();
    for v in stats["vips"].as_array().unwrap() {
        for b in v["backends"].as_array().unwrap() {
            let packets = b["packets"].as_u64().unwrap();
            if packets > 0 {
                let key = (
                    v["vip"].as_str().unwrap().to_owned(),
                    b["backend"].as_str().unwrap().to_owned(),
                );
                per_backend.insert(key, packets);
            }
        }
    }
    let mut expected_per_backend: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (t, b) in &expected {
        let vip = format!("{}:{}/tcp", t.dst_addr(), t.dst_port);
        *expected_per_backend
            .entry((vip, b.to_string()))
            .or_default() += 1;
    }
    assert_eq!(per_backend, expected_per_backend);
    let exit = d.terminate(Duration::from_secs(20));
    assert!(exit.status.success(), "{}", exit.stderr);
    let sent = read_pcap(&output);
    // IPIP out of the port: Ethernet, outer IPv4 (backend = destination), the client's packet.
    let got: Vec<(FiveTuple, Ipv4Addr)> = sent
        .iter()
        .map(|f| {
            let outer = &f[14..34];
            let inner = &f[34..];
            let addr = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            (
                FiveTuple::from_v4(
                    addr(&inner[12..16]),
                    addr(&inner[16..20]),
                    port(&inner[20..22]),
                    port(&inner[22..24]),
                    inner[9],
                ),
                addr(&outer[16..20]),
            )
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        got, expected,
        "the restarted workers did not send each flow where the acknowledged state does"
    );
    let absent = flows.len() - expected.len();
    eprintln!(
        "final state: {} VIPs, {} backends; {} of {} flows forwarded as the acknowledged state picks",
        progress.model.len(),
        progress.model.values().map(|v| v.backends.len()).sum::<usize>(),
        got.len(),
        flows.len()
    );
    assert_eq!(
        exit.drops().values().sum::<u64>(),
        absent as u64,
        "{}",
        exit.totals
    );
}
