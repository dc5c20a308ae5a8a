//! Embeds the build's identity: the git revision and the DPDK version that
//! dpdk-sys was generated against, both shown by `fulcrum --version`.

use std::process::Command;

fn main() {
    // dpdk-sys has `links = "dpdk"` and exports its pkg-config version as `version`.
    let dpdk = std::env::var("DEP_DPDK_VERSION").unwrap_or_else(|_| "unknown".into());
    let (major, minor) = parse_major_minor(&dpdk);
    if (major, minor) < (22, 11) {
        panic!("fulcrum needs DPDK >= 22.11, found {dpdk}: run scripts/setup.sh");
    }
    println!("cargo:rustc-env=FULCRUM_DPDK_VERSION={dpdk}");

    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=FULCRUM_GIT_REVISION={rev}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
}

fn parse_major_minor(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
