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

/// A start that fails while building the second worker (its conntrack table cannot be
/// allocated) fails before any worker lcore runs: the process exits 1 promptly with the
/// reason, and no worker is left polling ports that are being closed (DPDK reports such a
/// worker as "called rx_pkt_burst for not ready port").
///
/// The address-space limit makes the allocation fail for real: each table is 1.75 GiB
/// (2^25 flows of 56 bytes) and the process needs 0.5 to 1 GiB before the tables, so under a
/// 3 GiB limit the first table fits and the second cannot.
#[test]
fn a_worker_that_cannot_be_built_fails_the_start_before_any_worker_runs() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    let prefix = format!("fulcrum-errtest-late-{}", std::process::id());
    std::fs::write(
        &path,
        format!(
            "[dataplane]\nworkers = 2\nexception_path = false\nconntrack_flows = 33554432\n\
             eal_args = [\"--lcores=0@0,1@0,2@0\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix={prefix}\", \"--log-level=lib.eal:error\"]\n\n\
             [[port]]\ndevice = \"net_ring0\"\naddress = \"203.0.113.2\"\n\n\
             [control]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 3200000 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_fulcrum"))
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = started + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let hung = child.try_wait().expect("wait").is_none();
    if hung {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!hung, "fulcrum did not exit within 30 s\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start the data plane"), "{err}");
    assert!(
        err.contains("conntrack: cannot allocate"),
        "names the reason: {err}"
    );
    assert!(
        !err.contains("running on lcore"),
        "no worker launched before the start failed: {err}"
    );
    assert!(
        !err.contains("not ready port"),
        "no worker polled a port being closed: {err}"
    );
}
