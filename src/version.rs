//! Build identity, embedded by build.rs.

/// fulcrum's own version.
pub const FULCRUM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`unknown` outside a checkout).
pub const GIT_REVISION: &str = env!("FULCRUM_GIT_REVISION");
/// The DPDK version (pkg-config `libdpdk`) the binary was built against.
pub const DPDK_VERSION: &str = env!("FULCRUM_DPDK_VERSION");

/// The long version string printed by `fulcrum --version`.
pub fn long_version() -> String {
    format!("{FULCRUM_VERSION} (git {GIT_REVISION}, DPDK {DPDK_VERSION})")
}

/// [`long_version`] with a `'static` lifetime, for clap.
pub fn long_version_static() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(long_version)
}
