//! Running workers on their lcores.

use std::os::raw::{c_int, c_void};

use super::DpdkError;

/// The lcore the calling thread runs on (`u32::MAX` for a non-EAL thread).
pub fn current() -> u32 {
    // SAFETY: reads a thread-local set by the EAL.
    unsafe { dpdk_sys::rte_lcore_id() }
}

/// The main lcore (the one that called `rte_eal_init`).
pub fn main_lcore() -> u32 {
    // SAFETY: plain query of EAL state.
    unsafe { dpdk_sys::rte_get_main_lcore() }
}

/// The worker lcores the EAL was given (`-l`), in order, excluding the main lcore.
pub fn workers() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: plain iteration over EAL state; starting from u32::MAX (-1) gives the first.
    let mut l = unsafe { dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0) };
    while (l as usize) < dpdk_sys::RTE_MAX_LCORE as usize {
        out.push(l);
        // SAFETY: as above.
        l = unsafe { dpdk_sys::rte_get_next_lcore(l, 1, 0) };
    }
    out
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `launch`, handed to exactly one lcore, which
    // takes it back here exactly once.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Runs `job` on worker lcore `lcore`. The job's return value is collected by [`wait`].
pub fn launch(lcore: u32, job: impl FnOnce() -> i32 + Send + 'static) -> Result<(), DpdkError> {
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: trampoline matches lcore_function_t; arg is a leaked Box<Job> that the
    // trampoline reclaims; on failure we reclaim it here instead.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret != 0 {
        // SAFETY: the launch failed, so the lcore never saw arg; we still own it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(DpdkError::from_ret("rte_eal_remote_launch", ret));
    }
    Ok(())
}

/// Waits for the job on `lcore` to finish and returns its value.
pub fn wait(lcore: u32) -> i32 {
    // SAFETY: plain EAL call; returns immediately if nothing runs there.
    unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) }
}
