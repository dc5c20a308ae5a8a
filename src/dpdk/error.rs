use std::ffi::CStr;

/// What went wrong in a DPDK call, with DPDK's own explanation of the errno.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("the EAL is already initialised in this process (one EAL per process)")]
    AlreadyInitialised,
    #[error("EAL initialisation failed: {0} (check the EAL arguments and the devices named)")]
    EalInit(String),
    #[error("{call} failed: {reason}")]
    Call { call: &'static str, reason: String },
    #[error("no DPDK port named {0:?} (is the device in the EAL arguments?)")]
    NoSuchPort(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl DpdkError {
    /// A failed call, explained by the negative return value (`-errno`) it gave.
    pub(crate) fn from_ret(call: &'static str, ret: i32) -> Self {
        DpdkError::Call {
            call,
            reason: strerror(ret.saturating_abs()),
        }
    }

    /// A failed call, explained by the thread's `rte_errno`.
    pub(crate) fn from_errno(call: &'static str) -> Self {
        // SAFETY: reads this thread's rte_errno through a C helper; no preconditions.
        let errno = unsafe { dpdk_sys::fulcrum_rte_errno() };
        DpdkError::Call {
            call,
            reason: strerror(errno),
        }
    }
}

pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string for any errno value; we copy it out immediately.
    let s = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) };
    format!("{} (errno {errno})", s.to_string_lossy())
}
