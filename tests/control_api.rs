//! The control API over raw HTTP: round trips, every error path (and that a refused request
//! changes nothing), tokens, config apply, metrics, worker versions, the Unix socket, and
//! persistence across a simulated crash. The daemon runs in-process on 127.0.0.1:0. Also the
//! same request handling without a socket (`DetachedApi`), and the first snapshot's version.

mod control_support;

use std::time::Duration;

use control_support::{config, http, wait_until, Daemon, CONFIG};
use fulcrum::control::{ControlError, ControlPlane, DetachedApi};
use fulcrum::runtime::handle::DataplaneHandle;
use fulcrum::snapshot::{BackendState, Publisher};
use serde_json::Value;

const VIP: &str = "/v1/vips/192.0.2.10:80%2Ftcp";

#[test]
fn vips_and_backends_round_trip_and_each_change_is_published_before_the_answer() {
    let d = Daemon::start(CONFIG);
    let (status, list) = d.json("GET", "/v1/vips", None);
    assert_eq!(status, 200);
    assert_eq!(list["version"], d.first_version);
    assert_eq!(list["vips"][0]["vip"], "192.0.2.10:80/tcp");
    assert_eq!(list["vips"][0]["backends"][0]["address"], "198.51.100.11");
    assert_eq!(list["vips"][0]["backends"][0]["id"], 0);

    let (status, reply) = d.json(
        "POST",
        "/v1/vips",
        Some(r#"{"vip": "[2001:DB8::10]:443/tcp", "encap": "gue", "table_size": 251}"#),
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["vip"]["vip"], "[2001:db8::10]:443/tcp");
    assert_eq!(reply["vip"]["id"], 1);
    assert_eq!(reply["vip"]["gue_port"], 6080);
    let version = reply["version"].as_u64().unwrap();
    assert_eq!(version, d.first_version + 1);
    // Published before the answer: a worker already sees it.
    assert_eq!(d.with_snapshot(|s| (s.version, s.vips.len())), (version, 2));

    let v6 = "/v1/vips/%5B2001:db8::10%5D:443%2Ftcp";
    let (status, reply) = d.json(
        "POST",
        &format!("{v6}/backends"),
        Some(r#"{"address": "2001:db8::7", "weight": 3}"#),
    );
    assert_eq!(status, 201, "{reply}");
    let (status, _) = d.json(
        "POST",
        &format!("{v6}/backends"),
        Some(r#"{"address": "198.51.100.7"}"#),
    );
    assert_eq!(status, 201);
    // The unencoded form of the VIP works too.
    let (status, list) = d.json("GET", "/v1/vips/[2001:db8::10]:443/tcp/backends", None);
    assert_eq!(status, 200, "{list}");
    let backends = list["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["address"], "2001:db8::7");
    assert_eq!(backends[0]["weight"], 3);
    assert_eq!(backends[1]["weight"], 1);
    let ids: Vec<u64> = backends.iter().map(|b| b["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2], "ids unique across VIPs");

    let b7 = format!("{v6}/backends/2001:db8::7");
    let (status, reply) = d.json("PATCH", &b7, Some(r#"{"weight": 5}"#));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["backend"]["weight"], 5);
    let version = reply["version"].as_u64().unwrap();
    d.with_snapshot(|s| {
        assert_eq!(s.version, version);
        assert_eq!(s.backend(1).unwrap().weight, 5);
    });

    let (status, reply) = d.json("POST", &format!("{b7}/drain"), None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["backend"]["state"], "draining");
    assert_eq!(reply["backend"]["drained"], true);
    d.with_snapshot(|s| {
        assert_eq!(s.backend(1).unwrap().state, BackendState::Draining);
        assert!(
            s.backend(1).unwrap().keeps_flows(),
            "a drained backend keeps its flows"
        );
        let vip = s.vips.iter().find(|v| v.id == 1).unwrap();
        for h in 0..500u64 {
            assert_eq!(
                vip.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                Some(2),
                "no new flows to a drained backend"
            );
        }
    });
    let (_, reply) = d.json("POST", &format!("{b7}/undrain"), None);
    assert_eq!(reply["backend"]["state"], "active");
    d.with_snapshot(|s| assert_eq!(s.backend(1).unwrap().state, BackendState::Active));

    let (_, reply) = d.json("PATCH", &b7, Some(r#"{"weight": 0}"#));
    assert_eq!(reply["backend"]["state"], "draining", "weight 0 drains");

    let (status, reply) = d.json("DELETE", &b7, None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["message"],
        "backend 2001:db8::7 removed from vip [2001:db8::10]:443/tcp"
    );
    d.with_snapshot(|s| assert!(s.backend(1).is_none()));

    let (status, reply) = d.json("DELETE", v6, None);
    assert_eq!(status, 200, "{reply}");
    let version = reply["version"].as_u64().unwrap();
    d.with_snapshot(|s| {
        assert_eq!(s.version, version);
        assert_eq!(s.vips.len(), 1);
    });
}

#[test]
fn every_error_says_what_is_wrong_and_a_refused_request_changes_nothing() {
    let d = Daemon::start(CONFIG);
    let (_, before) = d.json("GET", "/v1/vips", None);
    let b = format!("{VIP}/backends");
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("POST", b.clone(), r#"{"address": "198.51.100.300"}"#, 400, r#"invalid backend "198.51.100.300": "198.51.100.300" is not an IP address"#),
        ("POST", b.clone(), r#"{"address": "real-1"}"#, 400, "names are not resolved"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.10:80", "encap": "ipip"}"#, 400, "missing protocol (expected ADDR:PORT/PROTO"),
        ("GET", "/v1/vips/192.0.2.99:80%2Ftcp".into(), "", 404, "vip 192.0.2.99:80/tcp does not exist (try: fulcrum vip list)"),
        ("POST", "/v1/vips/192.0.2.99:80/tcp/backends".into(), r#"{"address": "198.51.100.7"}"#, 404, "vip 192.0.2.99:80/tcp does not exist"),
        ("GET", "/v1/vips/192.0.2.10:80%2Fsctp".into(), "", 400, "unknown protocol"),
        ("POST", b.clone(), r#"{"address": "198.51.100.11"}"#, 409, "backend 198.51.100.11 is already part of vip 192.0.2.10:80/tcp (weight 1); to change its weight: fulcrum backend weight 192.0.2.10:80/tcp 198.51.100.11 WEIGHT"),
        ("POST", b.clone(), r#"{"address": "198.51.100.12", "weight": 20000}"#, 400, "weight 20000 is out of range; use 0 to 10000 (0 drains the backend)"),
        ("POST", b.clone(), r#"{"address": "198.51.100.12", "weight": -1}"#, 400, "weight -1 is out of range"),
        ("PATCH", format!("{b}/198.51.100.11"), r#"{"weight": 10001}"#, 400, "weight 10001 is out of range"),
        ("PATCH", format!("{b}/198.51.100.11"), r#"{"weight": "heavy"}"#, 400, "malformed JSON body: invalid type: string \"heavy\", expected i64"),
        ("POST", b.clone(), r#"{"address": "#, 400, "malformed JSON body: EOF while parsing"),
        ("POST", b.clone(), r#"{"address": "198.51.100.12", "wieght": 2}"#, 400, "unknown field `wieght`"),
        ("POST", b.clone(), "", 400, "the request needs a JSON body, e.g. {\"address\": \"198.51.100.7\", \"weight\": 1}"),
        ("DELETE", format!("{b}/198.51.100.11:80"), "", 404, "backend 198.51.100.11:80 is not part of vip 192.0.2.10:80/tcp; did you mean 198.51.100.11? (try: fulcrum backend list 192.0.2.10:80/tcp)"),
        ("POST", format!("{b}/198.51.100.99/drain"), "", 404, "backend 198.51.100.99 is not part of vip 192.0.2.10:80/tcp (try: fulcrum backend list 192.0.2.10:80/tcp)"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.10:80/tcp", "encap": "ipip"}"#, 409, "vip 192.0.2.10:80/tcp already exists"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:80/tcp", "encap": "vxlan"}"#, 400, "unknown encap mode 'vxlan' (expected one of: ipip, gue, l2dsr)"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:80/tcp", "encap": "ipip", "table_size": 100}"#, 400, "table_size = 100 is not prime"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:80/tcp", "encap": "ipip", "gue_port": 7000}"#, 400, "gue_port is only used with encap gue"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:80/tcp", "encap": "l2dsr", "backends": [{"address": "198.51.100.7"}, {"address": "2001:db8::9"}]}"#, 400, "backend 2001:db8::9 is not of vip 192.0.2.20:80/tcp's address family"),
        ("POST", b.clone(), r#"{"address": "198.51.100.12:8080"}"#, 400, "fulcrum does not rewrite ports"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:0/tcp", "encap": "ipip", "healthcheck": {"kind": "tcp"}, "backends": [{"address": "198.51.100.7"}]}"#, 400, "the health check needs one"),
        ("POST", "/v1/vips".into(), r#"{"vip": "192.0.2.20:80/tcp", "encap": "ipip", "healthcheck": {"kind": "tcp", "timeout_ms": 2000}}"#, 400, "timeout_ms = 2000 is longer than interval_ms = 1000"),
        ("GET", "/v1/nothing".into(), "", 404, "no such endpoint: GET /v1/nothing"),
        ("PUT", "/v1/vips".into(), "{}", 405, "PUT is not allowed on /v1/vips; use GET or POST"),
        ("GET", "/v1/vips/%zz".into(), "", 400, "bad percent-encoding"),
        ("POST", "/v1/config?dry_run=maybe".into(), "", 400, "dry_run=maybe is not a boolean"),
    ];
    for (method, path, body, status, message) in cases {
        let (got, text) = d.send(method, &path, body);
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        let error = error["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error in {text}"));
        assert_eq!(got, status, "{method} {path} {body}: {error}");
        assert!(
            error.contains(message),
            "{method} {path} {body}:\n  got  {error}\n  want {message}"
        );
    }
    let (_, after) = d.json("GET", "/v1/vips", None);
    assert_eq!(after, before, "refused requests changed the state");
    assert_eq!(
        d.with_snapshot(|s| s.version),
        d.first_version,
        "refused requests published a snapshot"
    );
}

#[test]
fn a_configured_token_is_required_on_every_endpoint() {
    let text = CONFIG.replace("[control]", "[control]\ntoken = \"s3cret-token\"");
    let d = Daemon::start(&text);
    let addr = d.tcp();
    for path in ["/v1/vips", "/metrics", "/v1/stats", "/v1/config"] {
        let (status, body) = http(addr, "GET", path, None, None);
        assert_eq!(status, 401, "{path}");
        assert!(
            body.contains(
                "missing API token; send the daemon's token as `Authorization: Bearer TOKEN`"
            ),
            "{body}"
        );
        let (status, body) = http(
            addr,
            "GET",
            path,
            Some(&[("Authorization", "Bearer wrong")]),
            None,
        );
        assert_eq!(status, 401, "{path}");
        assert!(body.contains("wrong API token"), "{body}");
        let (status, _) = http(
            addr,
            "GET",
            path,
            Some(&[("Authorization", "Bearer s3cret-token")]),
            None,
        );
        assert_eq!(status, 200, "{path}");
        let (status, _) = http(
            addr,
            "GET",
            path,
            Some(&[("Authorization", "bearer s3cret-token")]),
            None,
        );
        assert_eq!(status, 200, "the scheme is case-insensitive");
    }
    let (status, _) = http(
        addr,
        "DELETE",
        VIP,
        Some(&[("Authorization", "Bearer s3cret-tokem")]),
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(
        d.with_snapshot(|s| s.vips.len()),
        1,
        "a refused delete deleted"
    );
    // The running configuration never shows the token.
    let (_, body) = http(
        addr,
        "GET",
        "/v1/config",
        Some(&[("Authorization", "Bearer s3cret-token")]),
        None,
    );
    assert!(!body.contains("s3cret"), "{body}");
    assert!(body.contains("token = \"<redacted>\""), "{body}");
}

#[test]
fn a_non_local_listener_needs_a_token() {
    let text = CONFIG.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let e = Daemon::try_start(&text, 0)
        .err()
        .expect("started without a token");
    assert!(matches!(e, ControlError::InsecureListen { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("no API token is set"), "{message}");
    assert!(
        message.contains("set [control] token (or the FULCRUM_TOKEN environment variable)"),
        "{message}"
    );
}

const APPLY: &str = r#"
[[port]]
device = "net_tap0,iface=fulcrum0"
address = "203.0.113.2"
address6 = "2001:db8::2"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 251

[[vip.backend]]
address = "198.51.100.11"
weight = 5

[[vip.backend]]
address = "198.51.100.12"

[[vip]]
address = "[2001:db8::10]:443"
protocol = "udp"
encap = "gue"
gue_port = 7000
table_size = 251

[[vip.backend]]
address = "2001:db8::7"

[control]
listen = "127.0.0.1:0"
"#;

#[test]
fn config_apply_shows_the_diff_and_applies_it_all_at_once_or_not_at_all() {
    let d = Daemon::start(CONFIG);
    let (status, text) = d.get("/v1/config");
    assert_eq!(status, 200);
    assert!(
        text.starts_with(&format!(
            "# fulcrum running configuration, snapshot version {}",
            d.first_version
        )),
        "{text}"
    );
    assert!(text.contains("address = \"192.0.2.10:80\""), "{text}");
    config(&text); // what config show prints is a valid configuration file

    let (status, report) = d.json("POST", "/v1/config?dry_run=true", Some(APPLY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], false);
    let changes: Vec<String> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::from_value::<fulcrum::control::messages::Change>(c.clone())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            "~ backend 198.51.100.11 of vip 192.0.2.10:80/tcp: weight 1 -> 5",
            "+ backend 198.51.100.12 of vip 192.0.2.10:80/tcp: weight 1",
            "+ vip [2001:db8::10]:443/udp: encap gue (port 7000), table_size 251, healthcheck none",
            "+ backend 2001:db8::7 of vip [2001:db8::10]:443/udp: weight 1",
        ]
    );
    assert_eq!(
        d.with_snapshot(|s| s.version),
        d.first_version,
        "a dry run changed something"
    );

    // Refused applies change nothing.
    let (_, before) = d.json("GET", "/v1/vips", None);
    let refused = [
        (
            APPLY.replace("weight = 5", "weight = 5\nweight = 6"),
            400,
            "request body:",
        ),
        (
            APPLY.replace("address = \"203.0.113.2\"", "address = \"203.0.113.3\""),
            409,
            "the file changes [[port]], which take effect only when fulcrum restarts",
        ),
        (
            APPLY.replace(
                "address = \"2001:db8::7\"",
                "address = \"2001:db8::7\"\n[[vip.backend]]\naddress = \"2001:db8::7\"",
            ),
            400,
            "backend 2001:db8::7 is listed twice",
        ),
        (
            APPLY.replace(
                "table_size = 251\n\n[[vip.backend]]\naddress = \"2001:db8::7\"",
                "table_size = 250\n\n[[vip.backend]]\naddress = \"2001:db8::7\"",
            ),
            400,
            "not prime",
        ),
    ];
    for (file, status, message) in refused {
        let (got, error) = d.json("POST", "/v1/config", Some(&file));
        assert_eq!(got, status, "{error}");
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
    let (_, after) = d.json("GET", "/v1/vips", None);
    assert_eq!(after, before);

    let (status, report) = d.json("POST", "/v1/config", Some(APPLY));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], true);
    assert_eq!(report["changes"].as_array().unwrap().len(), 4);
    let version = report["version"].as_u64().unwrap();
    assert_eq!(version, d.first_version + 1, "one apply, one snapshot");
    let (_, list) = d.json("GET", "/v1/vips", None);
    let first = &list["vips"][0]["backends"];
    assert_eq!(first[0]["id"], 0, "a backend that stays keeps its id");
    assert_eq!(first[0]["weight"], 5);
    assert_eq!(list["vips"][1]["gue_port"], 7000);
    d.with_snapshot(|s| {
        assert_eq!(s.version, version);
        assert_eq!(s.vips.len(), 2);
    });
    // Applying the same file again changes nothing.
    let (_, report) = d.json("POST", "/v1/config", Some(APPLY));
    assert_eq!(report["changes"].as_array().unwrap().len(), 0);
    assert_eq!(report["applied"], false);
}

#[test]
fn metrics_stats_and_worker_versions() {
    let d = Daemon::start_with(CONFIG, 2);
    for w in &d.workers {
        w.vip_packet(0, 100);
        w.backend_packet(0, 100);
        w.rx[0].add(100);
        w.count_drop(fulcrum::datapath::stats::DropReason::NoBackend);
    }
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "fulcrum_vip_packets_total{vip=\"192.0.2.10:80/tcp\"} 2",
        "fulcrum_backend_packets_total{vip=\"192.0.2.10:80/tcp\",backend=\"198.51.100.11\"} 2",
        "fulcrum_drops_total{reason=\"no_backend\"} 2",
        "fulcrum_parse_errors_total{kind=\"bad_ihl\"} 0",
        "fulcrum_vip_all_backends_down{vip=\"192.0.2.10:80/tcp\"} 0",
        "fulcrum_backend_state{vip=\"192.0.2.10:80/tcp\",backend=\"198.51.100.11\",state=\"active\"} 1",
        "fulcrum_burst_cycles_count 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}\n{text}");
    }
    let (status, stats) = d.json("GET", "/v1/stats", None);
    assert_eq!(status, 200);
    assert_eq!(stats["workers"], 2);
    assert_eq!(stats["vips"][0]["packets"], 2);
    assert_eq!(stats["vips"][0]["backends"][0]["bytes"], 200);

    // A change reaches every worker; the answer carries the version to wait for.
    let (_, reply) = d.json(
        "POST",
        &format!("{VIP}/backends"),
        Some(r#"{"address": "198.51.100.12"}"#),
    );
    let version = reply["version"].as_u64().unwrap();
    let took = wait_until(Duration::from_secs(5), || {
        let (_, s) = d.json("GET", "/v1/snapshot", None);
        s["all_workers_current"] == true && s["version"] == version
    });
    assert!(took.is_some(), "workers never adopted version {version}");
    let (_, s) = d.json("GET", "/v1/snapshot", None);
    assert_eq!(s["workers"][1]["version"], version);
    assert_eq!(s["workers"][1]["lcore"], 2);
    let (_, text) = d.get("/metrics");
    assert!(
        text.contains(&format!(
            "fulcrum_worker_snapshot_version{{worker=\"0\",lcore=\"1\"}} {version}"
        )),
        "{text}"
    );

    let api = fulcrum::cli::ApiTarget::new(&d.url, None).unwrap();
    let (_, reply) = d.json(
        "PATCH",
        &format!("{VIP}/backends/198.51.100.12"),
        Some(r#"{"weight": 2}"#),
    );
    let waited = api
        .wait_for_workers(reply["version"].as_u64().unwrap(), Duration::from_secs(5))
        .unwrap();
    assert!(waited < Duration::from_secs(5));
    // The same wait from inside the daemon's process, as the propagation benchmark does it.
    let (_, reply) = d.json(
        "PATCH",
        &format!("{VIP}/backends/198.51.100.12"),
        Some(r#"{"weight": 3}"#),
    );
    let version = reply["version"].as_u64().unwrap();
    let took = fulcrum::control::wait_for_workers(&d.workers, version, Duration::from_secs(5));
    assert!(took.is_some(), "workers never adopted version {version}");
    assert!(fulcrum::control::workers_at(&d.workers, version));
    assert!(!fulcrum::control::workers_at(&d.workers, version + 1));
}

#[test]
fn a_unix_socket_listener_is_private_and_removed_on_exit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let text = CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"unix:{}\"", socket.display()),
    );
    let d = Daemon::start(&text);
    assert_eq!(d.url, format!("unix:{}", socket.display()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let api = fulcrum::cli::ApiTarget::new(&d.url, None).unwrap();
    let list: fulcrum::control::messages::VipList = api.call("GET", "/v1/vips", None).unwrap();
    assert_eq!(list.vips.len(), 1);
    let e = api
        .call::<Value>("DELETE", "/v1/vips/192.0.2.99:80%2Ftcp", None)
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    // A second daemon on the same socket is refused while the first serves.
    let second = Daemon::try_start(&text, 0)
        .err()
        .expect("two daemons on one socket");
    assert!(
        second.to_string().contains("another process serves"),
        "{second}"
    );
    d.stop();
    assert!(!socket.exists(), "the socket outlived the daemon");
}

#[test]
fn acknowledged_changes_survive_a_crash_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let text = CONFIG.replace(
        "[control]",
        &format!("[control]\nstate_file = \"{}\"", state.display()),
    );
    let a = Daemon::start(&text);
    assert!(
        state.exists(),
        "the first start writes the configuration's VIPs and ids"
    );
    a.json(
        "POST",
        "/v1/vips",
        Some(r#"{"vip": "192.0.2.11:53/udp", "encap": "ipip", "table_size": 251}"#),
    );
    a.json(
        "POST",
        "/v1/vips/192.0.2.11:53/udp/backends",
        Some(r#"{"address": "198.51.100.21", "weight": 7}"#),
    );
    a.json(
        "POST",
        "/v1/vips/192.0.2.11:53/udp/backends",
        Some(r#"{"address": "198.51.100.22"}"#),
    );
    a.json(
        "POST",
        &format!("{VIP}/backends"),
        Some(r#"{"address": "198.51.100.12"}"#),
    );
    a.json("POST", &format!("{VIP}/backends/198.51.100.11/drain"), None);
    let (status, _) = a.json(
        "DELETE",
        "/v1/vips/192.0.2.11:53/udp/backends/198.51.100.22",
        None,
    );
    assert_eq!(status, 200);
    let (_, acknowledged) = a.json("GET", "/v1/vips", None);
    // A leftover temporary file from an interrupted write is ignored.
    std::fs::write(dir.path().join(".state.json.tmp"), "{garbage").unwrap();

    // "Crash": daemon A never shuts down cleanly; B starts from the same files.
    let b = Daemon::start(&text);
    let (_, restored) = b.json("GET", "/v1/vips", None);
    assert_eq!(
        restored["vips"], acknowledged["vips"],
        "state lost across a restart"
    );
    assert!(restored["version"].as_u64() > Some(0));
    // Ids go on from where they were: the removed backend's id (2) is not handed out again.
    let (_, reply) = b.json(
        "POST",
        "/v1/vips/192.0.2.11:53/udp/backends",
        Some(r#"{"address": "198.51.100.23"}"#),
    );
    assert_eq!(reply["backend"]["id"], 4);
    drop(a);
}

#[test]
fn the_state_file_wins_over_the_configuration_file_and_must_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let text = CONFIG.replace(
        "[control]",
        &format!("[control]\nstate_file = \"{}\"", state.display()),
    );
    let a = Daemon::start(&text);
    a.json(
        "POST",
        &format!("{VIP}/backends"),
        Some(r#"{"address": "2001:db8::7"}"#),
    );
    a.stop();
    // The file now names another backend; the state file's VIPs are used.
    let b = Daemon::start(&text.replace("198.51.100.11", "198.51.100.99"));
    let (_, list) = b.json("GET", &format!("{VIP}/backends"), None);
    let addresses: Vec<&str> = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, vec!["198.51.100.11", "2001:db8::7"]);
    b.stop();
    // A configuration that cannot carry the saved state (no IPv6 source) is refused.
    let no_v6 = text.replace("address6 = \"2001:db8::2\"\n", "");
    let e = ControlPlane::new(config(&no_v6), DataplaneHandle::detached())
        .err()
        .unwrap();
    let message = e.to_string();
    assert!(
        message.contains("does not fit the configuration"),
        "{message}"
    );
    assert!(message.contains("move the state file away"), "{message}");
}

#[test]
fn the_first_snapshot_the_control_plane_publishes_is_one_the_workers_adopt() {
    // As `fulcrum run` starts: the data plane runs its own first snapshot (version 1) of the
    // same VIPs before the control plane takes over.
    let config = config(CONFIG);
    let initial = fulcrum::control::initial_specs(&config).unwrap();
    let mut handle = DataplaneHandle::detached();
    handle.publisher = Publisher::new(fulcrum::snapshot::build(1, &initial, &[], None).unwrap());
    let mut worker = handle.publisher.reader();
    assert_eq!(worker.snapshot().version, 1);
    let plane = ControlPlane::new(config, handle).unwrap();
    assert!(plane.version() > 1, "version {}", plane.version());
    assert!(
        worker.refresh(),
        "a worker running the data plane's first snapshot did not take the control plane's"
    );
    assert_eq!(worker.snapshot().version, plane.version());
}

#[test]
fn the_detached_api_answers_without_a_socket() {
    let text = CONFIG.replace("[control]", "[control]\ntoken = \"s3cret-token\"");
    let mut api = DetachedApi::new(config(&text)).unwrap();
    let (status, content_type, body) = api.handle("GET", "/v1/vips", None, b"");
    assert_eq!((status, content_type), (401, "application/json"));
    assert!(String::from_utf8_lossy(&body).contains("missing API token"));

    let auth = Some("Bearer s3cret-token");
    let (status, _, body) = api.handle("GET", "/v1/vips?x=1", auth, b"");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["vips"][0]["vip"], "192.0.2.10:80/tcp");
    assert_eq!(list["version"], api.version());

    let (status, _, body) = api.handle(
        "POST",
        &format!("{VIP}/backends"),
        auth,
        br#"{"address": "198.51.100.12", "weight": 3}"#,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, content_type, body) = api.handle("GET", "/metrics", auth, b"");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&body).contains("198.51.100.12"));

    let (status, _, body) = api.handle("POST", "/v1/config", auth, &vec![b' '; (4 << 20) + 1]);
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("request body larger than 4194304 bytes"));
    for (method, url, body) in [
        ("BREW", "/v1/vips", &b""[..]),
        ("GET", "%%%", b""),
        ("POST", "/v1/vips", b"\xff\xfe"),
        ("POST", "/v1/config", b"[[vip]]\x00"),
    ] {
        let (status, _, _) = api.handle(method, url, auth, body);
        assert!((400..500).contains(&status), "{method} {url}: {status}");
    }
}

#[test]
fn the_unix_socket_is_never_reachable_with_other_permissions() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let text = CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"unix:{}\"", socket.display()),
    );
    // Watches the socket's directory while the socket is bound again and again: no socket
    // in it may ever have another mode than 0600, and nothing in it may let others in.
    let binding = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (binding, dir) = (binding.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while binding.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                    let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                        continue; // gone between listing and looking
                    };
                    let mode = meta.permissions().mode() & 0o777;
                    let open = if meta.file_type().is_socket() {
                        mode != 0o600
                    } else {
                        mode & 0o077 != 0
                    };
                    if open {
                        seen.insert(format!("{} mode {mode:o}", entry.path().display()));
                    }
                }
            }
            seen
        })
    };
    for _ in 0..300 {
        let plane = ControlPlane::new(config(&text), DataplaneHandle::detached()).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(plane);
        assert!(!socket.exists(), "the socket outlived its control plane");
    }
    binding.store(false, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(
        seen.is_empty(),
        "reachable with other permissions: {seen:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
