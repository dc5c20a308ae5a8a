//! The real `fulcrum` binary against an in-process daemon: the syntax scripts use, the
//! `FULCRUM_API` / `--api` lookup, stderr messages and exit codes.

mod control_support;

use std::process::{Command, Output};

use control_support::{Daemon, CONFIG};

fn fulcrum(args: &[&str], api_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command
        .args(args)
        .env_remove("FULCRUM_TOKEN")
        .env_remove("FULCRUM_API");
    if let Some(api) = api_env {
        command.env("FULCRUM_API", api);
    }
    command.output().expect("run fulcrum")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_binary_speaks_the_documented_syntax() {
    let d = Daemon::start(CONFIG);
    let vip = "192.0.2.10:80/tcp";

    let out = fulcrum(
        &[
            "--api",
            &d.url,
            "backend",
            "add",
            vip,
            "198.51.100.7",
            "--weight",
            "2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout)
        .starts_with("backend 198.51.100.7 added to vip 192.0.2.10:80/tcp (weight 2)"));

    // FULCRUM_API when --api is absent.
    let out = fulcrum(&["backend", "list", vip, "--json"], Some(&d.url));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["backends"][1]["address"], "198.51.100.7");
    assert_eq!(list["backends"][1]["weight"], 2);

    let out = fulcrum(
        &["--api", &d.url, "backend", "del", vip, "198.51.100.7:80"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("backend 198.51.100.7:80 is not part of vip 192.0.2.10:80/tcp; did you mean 198.51.100.7? (try: fulcrum backend list 192.0.2.10:80/tcp)"),
        "{}",
        text(&out.stderr)
    );

    let out = fulcrum(
        &[
            "--api",
            &d.url,
            "vip",
            "add",
            "192.0.2.10:80",
            "--encap",
            "ipip",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing protocol"),
        "{}",
        text(&out.stderr)
    );

    let out = fulcrum(&["--api", &d.url, "vip", "list"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("192.0.2.10:80/tcp"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = fulcrum(&["vip", "list"], Some(&format!("http://127.0.0.1:{port}")));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot reach the fulcrum API"),
        "{}",
        text(&out.stderr)
    );
}
