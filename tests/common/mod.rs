//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// EAL arguments for a test process: no hugepages, no PCI, one lcore, and a file prefix
/// unique to this process so tests and other DPDK processes never collide.
pub fn eal_args(test: &str, vdevs: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--no-huge".to_owned(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        "-l".into(),
        "0".into(),
        format!("--file-prefix=fulcrum-test-{test}-{}", std::process::id()),
        "--log-level=lib.eal:error".into(),
    ];
    args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    args
}
pub mod daemon;
pub mod golden;
