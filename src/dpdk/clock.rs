//! The time-stamp counter: the data plane's clock (no syscalls on the hot path).

/// The current TSC value.
#[inline(always)]
pub fn tsc() -> u64 {
    // RDTSC inline, as DPDK's own `rte_rdtsc` is; its C wrapper would be a call.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC only reads the CPU's time-stamp counter.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rte_rdtsc only reads the CPU's time-stamp counter.
    unsafe {
        dpdk_sys::rte_rdtsc()
    }
}

/// TSC ticks per second, as the EAL measured at start-up. Needs an initialised EAL.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init; returns 0 before init, never faults.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}
