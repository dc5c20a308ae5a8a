//! `fulcrum run` refuses bad configurations and EAL failures with a clear message and a
//! non-zero exit, and `fulcrum --version` names the DPDK it was built against.

use std::process::Command;

fn fulcrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
}

#[test]
fn version_names_fulcrum_and_dpdk() {
    let out = fulcrum().arg("--version").output().expect("run");
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with(&format!("fulcrum {}", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("DPDK 22.11"), "{s}");
}

#[test]
fn bad_config_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[dataplane]\nworkers = 1\n\n[[port]]\ndevice = \"net_null0\"\naddress = \"203.0.113.2\"\n\n[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\nencap = \"ipipx\"\n",
    )
    .unwrap();
    let out = fulcrum()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:11:", path.display())), "{err}");
    assert!(err.contains("ipip"), "says what is allowed: {err}");

    let out = fulcrum()
        .args(["run", "--config", "/nonexistent/fulcrum.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fulcrum.toml"));
}

#[test]
fn eal_failure_is_reported_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(
        &path,
        format!(
            "[dataplane]\nworkers = 1\nexception_path = false\neal_args = [\"--no-huge\", \"-m\", \"256\", \"--file-prefix=fulcrum-errtest-{}\"]\n\n[[port]]\ndevice = \"net_nosuchdriver0\"\naddress = \"203.0.113.2\"\n",
            std::process::id()
        ),
    )
    .unwrap();
    let out = fulcrum()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    // An EAL that failed to start cannot clean up after itself: remove its runtime directory.
    let _ = std::fs::remove_dir_all(format!(
        "/var/run/dpdk/fulcrum-errtest-{}",
        std::process::id()
    ));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start the data plane"), "{err}");
}
