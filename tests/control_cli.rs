//! The CLI against an in-process daemon: the command syntax scripts depend on, its output,
//! and every error path with its exit code. Commands are parsed by clap exactly as
//! `fulcrum` mounts them (global `--api`/`--token`, then the subcommand) and run in-process.

mod control_support;

use clap::Parser;
use control_support::{Daemon, CONFIG};
use fulcrum::cli::{ApiArgs, ClientCommand};

#[derive(Parser, Debug)]
#[command(name = "fulcrum")]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: ClientCommand,
}

/// Runs `fulcrum ARGS...`; Ok(stdout) or Err((exit code, message)).
fn fulcrum(args: &[&str]) -> Result<String, (u8, String)> {
    let argv = std::iter::once("fulcrum").chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).map_err(|e| (e.exit_code() as u8, e.to_string()))?;
    let api = cli
        .api
        .target()
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    let mut out = Vec::new();
    cli.command
        .run_to(&api, &mut out)
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    Ok(String::from_utf8(out).unwrap())
}

fn ok(args: &[&str]) -> String {
    fulcrum(args).unwrap_or_else(|(code, e)| panic!("fulcrum {}: exit {code}: {e}", args.join(" ")))
}

fn err(args: &[&str]) -> (u8, String) {
    match fulcrum(args) {
        Ok(out) => panic!("fulcrum {} succeeded:\n{out}", args.join(" ")),
        Err(e) => e,
    }
}

/// Cells of the table line that starts with `first`.
fn row(out: &str, first: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in\n{out}"))
}

#[test]
fn vip_and_backend_commands_round_trip() {
    let d = Daemon::start(CONFIG);
    let api = d.url.as_str();
    let out = ok(&[
        "--api",
        api,
        "vip",
        "add",
        "[2001:db8::10]:443/tcp",
        "--encap",
        "gue",
        "--table-size",
        "251",
    ]);
    assert!(
        out.starts_with("vip [2001:db8::10]:443/tcp added (gue, table size 251); version "),
        "{out}"
    );
    let out = ok(&[
        "--api",
        api,
        "vip",
        "add",
        "192.0.2.20:0/udp",
        "--encap",
        "l2dsr",
        "--check",
        "tcp",
        "--check-port",
        "53",
        "--interval-ms",
        "5000",
        "--timeout-ms",
        "100",
    ]);
    assert!(out.contains("192.0.2.20:0/udp added (l2dsr"), "{out}");

    let out = ok(&["--api", api, "vip", "list"]);
    assert_eq!(
        row(&out, "VIP"),
        ["VIP", "ENCAP", "TABLE", "BACKENDS", "CHECK"]
    );
    assert_eq!(
        row(&out, "192.0.2.10:80/tcp"),
        ["192.0.2.10:80/tcp", "ipip", "251", "1", "active", "-"]
    );
    assert_eq!(
        row(&out, "[2001:db8::10]:443/tcp"),
        [
            "[2001:db8::10]:443/tcp",
            "gue:6080",
            "251",
            "0",
            "active",
            "-"
        ]
    );
    assert_eq!(row(&out, "192.0.2.20:0/udp")[5], "tcp/5000ms");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["--api", api, "vip", "list", "--json"])).unwrap();
    assert_eq!(json["vips"].as_array().unwrap().len(), 3);

    let v6 = "[2001:db8::10]:443/tcp";
    let out = ok(&[
        "--api",
        api,
        "backend",
        "add",
        v6,
        "2001:DB8::7",
        "--weight",
        "3",
    ]);
    assert!(
        out.starts_with(
            "backend 2001:db8::7 added to vip [2001:db8::10]:443/tcp (weight 3); version"
        ),
        "{out}"
    );
    ok(&["--api", api, "backend", "add", v6, "198.51.100.7"]);
    let out = ok(&["--api", api, "backend", "list", v6]);
    assert_eq!(
        row(&out, "2001:db8::7"),
        ["2001:db8::7", "3", "active", "unchecked", "-"]
    );
    assert_eq!(row(&out, "198.51.100.7")[1], "1");

    let out = ok(&[
        "--api",
        api,
        "backend",
        "weight",
        v6,
        "198.51.100.7",
        "10000",
    ]);
    assert!(
        out.starts_with(
            "backend 198.51.100.7 of vip [2001:db8::10]:443/tcp: weight 10000; version"
        ),
        "{out}"
    );
    let out = ok(&["--api", api, "backend", "drain", v6, "2001:db8::7"]);
    assert!(
        out.starts_with("backend 2001:db8::7 of vip [2001:db8::10]:443/tcp drained; version"),
        "{out}"
    );
    let out = ok(&["--api", api, "backend", "list", v6]);
    assert_eq!(row(&out, "2001:db8::7")[2..4], ["draining", "(drained)"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["--api", api, "backend", "list", v6, "--json"])).unwrap();
    assert_eq!(json["backends"][0]["drained"], true);
    ok(&["--api", api, "backend", "undrain", v6, "2001:db8::7"]);
    let out = ok(&["--api", api, "backend", "list", v6]);
    assert_eq!(row(&out, "2001:db8::7")[2], "active");

    let out = ok(&["--api", api, "backend", "del", v6, "2001:db8::7"]);
    assert!(
        out.starts_with("backend 2001:db8::7 removed from vip [2001:db8::10]:443/tcp; version"),
        "{out}"
    );
    let out = ok(&["--api", api, "vip", "del", v6]);
    assert!(
        out.starts_with("vip [2001:db8::10]:443/tcp removed (with 1 backends); version"),
        "{out}"
    );
    d.with_snapshot(|s| assert_eq!(s.vips.len(), 2));
}

#[test]
fn every_error_says_what_is_wrong_and_exits_non_zero() {
    let d = Daemon::start(CONFIG);
    let api = d.url.as_str();
    let vip = "192.0.2.10:80/tcp";
    let cases: Vec<(Vec<&str>, u8, &str)> = vec![
        // Caught by the CLI before anything is sent (exit 2, like any usage error).
        (vec!["backend", "add", "192.0.2.10:80", "198.51.100.7"], 2, "invalid VIP \"192.0.2.10:80\": missing protocol (expected ADDR:PORT/PROTO"),
        (vec!["backend", "add", vip, "198.51.100.300"], 2, "invalid backend \"198.51.100.300\""),
        (vec!["backend", "add", vip, "198.51.100.7", "--weight", "20000"], 2, "weight 20000 is out of range; use 0 to 10000 (0 drains the backend)"),
        (vec!["backend", "weight", vip, "198.51.100.11", "-1"], 2, "weight -1 is out of range"),
        (vec!["backend", "add", vip, "198.51.100.7", "--weight", "-3"], 2, "weight -3 is out of range"),
        (vec!["backend", "weight", vip, "198.51.100.11", "x"], 2, "weight \"x\" is not a number"),
        (vec!["vip", "add", "[2001:db8::10]:443/tcp"], 2, "--encap <ENCAP>"),
        (vec!["vip", "add", "[2001:db8::10]:443/tcp", "--encap", "vxlan"], 2, "invalid value 'vxlan'"),
        (vec!["stats", "--count", "2"], 2, "--watch"),
        // Refused by the daemon (exit 1), which changes nothing.
        (vec!["backend", "list", "192.0.2.99:80/tcp"], 1, "vip 192.0.2.99:80/tcp does not exist (try: fulcrum vip list)"),
        (vec!["backend", "add", vip, "198.51.100.11"], 1, "backend 198.51.100.11 is already part of vip 192.0.2.10:80/tcp"),
        (vec!["backend", "del", vip, "198.51.100.7:80"], 1, "backend 198.51.100.7:80 is not part of vip 192.0.2.10:80/tcp (try: fulcrum backend list 192.0.2.10:80/tcp)"),
        (vec!["backend", "drain", vip, "198.51.100.11:80"], 1, "did you mean 198.51.100.11?"),
        (vec!["vip", "add", vip, "--encap", "ipip"], 1, "vip 192.0.2.10:80/tcp already exists"),
        (vec!["vip", "add", "192.0.2.20:80/tcp", "--encap", "ipip", "--table-size", "100"], 1, "table_size = 100 is not prime"),
        (vec!["vip", "del", "192.0.2.99:80/tcp"], 1, "does not exist"),
        (vec!["health", "192.0.2.99:80/tcp"], 1, "vip 192.0.2.99:80/tcp does not exist"),
    ];
    for (args, code, message) in cases {
        let mut argv = vec!["--api", api];
        argv.extend(&args);
        let (got, error) = err(&argv);
        assert_eq!(got, code, "fulcrum {}: {error}", args.join(" "));
        assert!(
            error.contains(message),
            "fulcrum {}:\n  got  {error}\n  want {message}",
            args.join(" ")
        );
    }
    assert_eq!(
        d.with_snapshot(|s| s.version),
        d.first_version,
        "a refused command changed something"
    );

    // The daemon is unreachable: exit 3 and how to point the CLI at it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let (code, error) = err(&["--api", &nowhere, "vip", "list"]);
    assert_eq!(code, 3, "{error}");
    assert!(
        error.starts_with(&format!("cannot reach the fulcrum API at {nowhere}:")),
        "{error}"
    );
    assert!(error.contains("--api URL or FULCRUM_API"), "{error}");
    let (code, error) = err(&["--api", "127.0.0.1:9180", "vip", "list"]);
    assert_eq!(code, 2);
    assert!(error.contains("give http://HOST:PORT"), "{error}");
}

#[test]
fn the_token_goes_with_every_command() {
    let text = CONFIG.replace("[control]", "[control]\ntoken = \"t0ken\"");
    let d = Daemon::start(&text);
    let api = d.url.as_str();
    let (code, error) = err(&["--api", api, "vip", "list"]);
    assert_eq!(code, 1);
    assert!(error.starts_with("missing API token"), "{error}");
    assert!(error.contains("--token or FULCRUM_TOKEN"), "{error}");
    let (_, error) = err(&[
        "--api",
        api,
        "--token",
        "wrong",
        "backend",
        "add",
        "192.0.2.10:80/tcp",
        "198.51.100.7",
    ]);
    assert!(error.starts_with("wrong API token"), "{error}");
    assert_eq!(d.with_snapshot(|s| s.version), d.first_version);
    let out = ok(&["vip", "list", "--api", api, "--token", "t0ken"]);
    assert!(out.contains("192.0.2.10:80/tcp"), "{out}");
}

#[test]
fn stats_health_and_config_commands() {
    let d = Daemon::start_with(CONFIG, 1);
    let api = d.url.as_str();
    d.workers[0].vip_packet(0, 1000);
    let out = ok(&["--api", api, "stats"]);
    assert!(out.starts_with("snapshot version"), "{out}");
    assert_eq!(row(&out, "192.0.2.10:80/tcp")[1..], ["1", "1000"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["--api", api, "stats", "--json"])).unwrap();
    assert_eq!(json["vips"][0]["bytes"], 1000);

    // Two refreshes, 0.1 s apart, with traffic in between.
    let worker = d.workers[0].clone();
    let feeder = std::thread::spawn(move || {
        for _ in 0..40 {
            worker.vip_packet(0, 100);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let out = ok(&[
        "--api",
        api,
        "stats",
        "--watch",
        "--count",
        "2",
        "--interval",
        "0.1",
    ]);
    feeder.join().unwrap();
    let frames: Vec<&str> = out
        .split("fulcrum stats: ")
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(frames.len(), 2, "{out}");
    let pps: Vec<String> = frames
        .iter()
        .map(|f| row(f, "192.0.2.10:80/tcp")[1].clone())
        .collect();
    assert!(pps.iter().any(|p| p != "0"), "no rate seen: {out}");

    let out = ok(&["--api", api, "health"]);
    assert_eq!(
        row(&out, "192.0.2.10:80/tcp")[1..4],
        ["no", "health", "check"]
    );
    assert_eq!(row(&out, "198.51.100.11")[1], "unchecked");

    let shown = ok(&["--api", api, "config", "show"]);
    assert!(
        shown.contains("[[vip.backend]]\naddress = \"198.51.100.11\""),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.toml");
    std::fs::write(
        &file,
        CONFIG.replace(
            "address = \"198.51.100.11\"",
            "address = \"198.51.100.11\"\nweight = 4",
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = ok(&["--api", api, "config", "apply", file, "--dry-run"]);
    assert_eq!(
        out,
        "~ backend 198.51.100.11 of vip 192.0.2.10:80/tcp: weight 1 -> 4\ndry run: 1 changes not applied (run without --dry-run to apply)\n"
    );
    assert_eq!(d.with_snapshot(|s| s.version), d.first_version);
    let out = ok(&["--api", api, "config", "apply", file]);
    assert!(out.starts_with("~ backend 198.51.100.11 of vip 192.0.2.10:80/tcp: weight 1 -> 4\napplied 1 changes; version "), "{out}");
    d.with_snapshot(|s| assert_eq!(s.backend(0).unwrap().weight, 4));
    let out = ok(&["--api", api, "config", "apply", file]);
    assert!(out.starts_with("nothing to change"), "{out}");

    // A broken file is reported against its own name and line, and nothing is sent.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, CONFIG.replace("table_size = 251", "table_size = 250")).unwrap();
    let (code, error) = err(&["--api", api, "config", "apply", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(error.starts_with(&format!("{}:", bad.display())), "{error}");
    assert!(error.contains("not prime"), "{error}");
    let (code, error) = err(&["--api", api, "config", "apply", "/nonexistent/fulcrum.toml"]);
    assert_eq!(code, 2);
    assert!(
        error.contains("cannot read the configuration file"),
        "{error}"
    );
}
