//! Running workers on their lcores.
//!
//! Workers run inside a [`scope`], like `std::thread::scope`: a job may borrow what the caller
//! owns (ports, queues, the mempool), because the scope waits for every lcore it launched
//! before it returns, on every path out of it. No lcore can still poll a port or hold an mbuf
//! once the objects it borrowed are dropped.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};

use super::{DpdkError, Eal};

/// The lcore the calling thread runs on (`u32::MAX` for a non-EAL thread).
pub fn current() -> u32 {
    // SAFETY: reads a thread-local set by the EAL; no preconditions.
    unsafe { dpdk_sys::rte_lcore_id() }
}

/// The main lcore (the one that called `rte_eal_init`).
pub fn main_lcore() -> u32 {
    // SAFETY: plain read of EAL configuration; no preconditions.
    unsafe { dpdk_sys::rte_get_main_lcore() }
}

/// The worker lcores the EAL was given (`-l`), in order, excluding the main lcore.
pub fn workers() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: plain iteration over EAL configuration; starting from u32::MAX (-1) gives the
    // first lcore.
    let mut l = unsafe { dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0) };
    while (l as usize) < dpdk_sys::RTE_MAX_LCORE as usize {
        out.push(l);
        // SAFETY: as above.
        l = unsafe { dpdk_sys::rte_get_next_lcore(l, 1, 0) };
    }
    out
}

/// A job as it crosses to the lcore: boxed twice so a thin pointer carries it.
type Job<'scope> = Box<dyn FnOnce() -> i32 + Send + 'scope>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `Scope::launch`, handed to exactly one lcore,
    // which takes it back here exactly once. Its lifetime is erased to 'static in the type
    // only: the scope that launched it waits for this lcore before that lifetime ends.
    let job: Box<Job<'static>> = unsafe { Box::from_raw(arg as *mut Job<'static>) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// The lcores launched in one [`scope`]. Handed to the scope's closure by reference only, so
/// it cannot be moved out or forgotten.
pub struct Scope<'scope, 'env: 'scope> {
    launched: RefCell<Vec<u32>>,
    // 'scope and 'env are invariant, as in std::thread::Scope: jobs may borrow from 'env
    // (outside the scope call) but never from the closure's own locals.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// How a worker lcore ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub lcore: u32,
    /// The job's return value (-1 when it panicked).
    pub code: i32,
}

impl<'scope> Scope<'scope, '_> {
    /// Runs `job` on worker lcore `lcore`. The job may borrow anything that outlives the
    /// scope; the scope waits for it before returning.
    pub fn launch<F>(&'scope self, lcore: u32, job: F) -> Result<(), DpdkError>
    where
        F: FnOnce() -> i32 + Send + 'scope,
    {
        // rte_eal_remote_launch and rte_eal_wait_lcore belong to the main lcore.
        if current() != main_lcore() {
            return Err(DpdkError::Invalid(
                "workers are launched from the main lcore only".into(),
            ));
        }
        let boxed: Box<Job<'scope>> = Box::new(Box::new(job));
        let arg = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: trampoline matches lcore_function_t; arg is a leaked Box<Job> that the
        // trampoline reclaims once. The job's borrows live for 'scope, and `scope` waits for
        // this lcore (it is recorded below) before 'scope ends.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret != 0 {
            // SAFETY: the launch failed, so no lcore saw arg; we still own it, once.
            drop(unsafe { Box::from_raw(arg as *mut Job<'scope>) });
            return Err(DpdkError::from_ret("rte_eal_remote_launch", ret));
        }
        self.launched.borrow_mut().push(lcore);
        Ok(())
    }

    /// Waits for every lcore launched so far; returns how each ended.
    fn join(&self) -> Vec<Exit> {
        let lcores = std::mem::take(&mut *self.launched.borrow_mut());
        lcores
            .into_iter()
            .map(|lcore| Exit {
                lcore,
                // SAFETY: called on the main lcore (launch checked it) for an lcore this
                // scope launched; blocks until its job returned.
                code: unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) },
            })
            .collect()
    }
}

/// Calls `f` with a [`Scope`] to launch workers in, waits for every worker launched, and
/// returns `f`'s value with how each worker ended. The workers must be told to stop by `f`
/// (or by a guard of `f`'s that drops on every path out of it): the scope waits for them
/// however `f` ends, so a worker that never stops blocks the scope.
///
/// The `&Eal` keeps the EAL alive (not cleaned up) while workers run.
///
/// ```compile_fail,E0373
/// # use fulcrum::dpdk::{lcore, Eal};
/// # fn f(eal: Eal) {
/// // A job may not borrow a local of the scope's closure: it could outlive it.
/// lcore::scope(&eal, |s| {
///     let local = vec![1u8];
///     s.launch(1, || local.len() as i32).unwrap();
/// });
/// # }
/// ```
pub fn scope<'env, F, R>(_eal: &'env Eal, f: F) -> (R, Vec<Exit>)
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    struct JoinOnDrop<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);
    impl Drop for JoinOnDrop<'_, '_, '_> {
        fn drop(&mut self) {
            // Reached only when f unwinds: wait anyway, the jobs borrow what is unwinding.
            let _ = self.0.join();
        }
    }
    let scope = Scope {
        launched: RefCell::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let guard = JoinOnDrop(&scope);
    let value = f(&scope);
    let exits = guard.0.join();
    drop(guard);
    (value, exits)
}
