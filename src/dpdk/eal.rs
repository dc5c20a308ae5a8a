use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use super::DpdkError;

static STARTED: AtomicBool = AtomicBool::new(false);

/// The DPDK environment abstraction layer of this process. DPDK allows one per process:
/// a second [`Eal::init`] returns [`DpdkError::AlreadyInitialised`].
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

/// Whether the arguments name PCI devices explicitly, in which case the user wants PCI.
fn names_pci(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "-a"
            || a == "-b"
            || a.starts_with("--allow")
            || a.starts_with("--block")
            || a.starts_with("-a")
            || a.starts_with("--pci")
    })
}

/// Turns configured port devices into EAL arguments: vdev strings (`net_tap0,iface=x`) become
/// `--vdev=...`, PCI addresses (`0000:01:00.0`) become `-a ...`.
pub fn eal_args_with_devices(eal_args: &[String], devices: &[String]) -> Vec<String> {
    let mut args = eal_args.to_vec();
    for d in devices {
        if is_pci_address(d) {
            args.push("-a".into());
            args.push(d.clone());
        } else {
            args.push(format!("--vdev={d}"));
        }
    }
    args
}

/// `DDDD:BB:DD.F` or `BB:DD.F`, optionally followed by `,devargs`.
pub(crate) fn is_pci_address(device: &str) -> bool {
    let name = device.split(',').next().unwrap_or("");
    let parts: Vec<&str> = name.split(':').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let dev_fn = |s: &str| {
        let mut it = s.split('.');
        matches!((it.next(), it.next(), it.next()), (Some(d), Some(f), None) if hex(d, 2) && f.len() == 1 && f.chars().all(|c| c.is_ascii_digit()))
    };
    match parts.as_slice() {
        [dom, bus, df] => hex(dom, 4) && hex(bus, 2) && dev_fn(df),
        [bus, df] => hex(bus, 2) && dev_fn(df),
        _ => false,
    }
}

impl Eal {
    /// Starts the EAL with `args` (without the program name). Adds `--no-pci` unless the
    /// arguments name PCI devices, because the machine's own NIC may be a PCI device the EAL
    /// would otherwise take.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialised);
        }
        let mut full = vec!["fulcrum".to_owned()];
        full.extend(args.iter().cloned());
        if !names_pci(args) && !args.iter().any(|a| a == "--no-pci") {
            full.push("--no-pci".into());
        }
        let cstrings: Vec<CString> = full
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| DpdkError::Invalid("an EAL argument contains a NUL byte".into()))?;
        // rte_eal_init may permute argv and keeps pointers to the strings for the life of the
        // process, so both the pointer array and the strings are leaked on purpose.
        let cstrings: &'static [CString] = Vec::leak(cstrings);
        let argv: &'static mut [*mut c_char] = Vec::leak(
            cstrings
                .iter()
                .map(|c| c.as_ptr() as *mut c_char)
                .collect::<Vec<_>>(),
        );
        let argc = argv.len() as c_int;
        // SAFETY: argv points to argc valid NUL-terminated strings that live forever (leaked
        // above); the STARTED flag guarantees this runs at most once per process.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::EalInit(super::error::strerror(
                // SAFETY: reads this thread's rte_errno through a C helper.
                unsafe { dpdk_sys::fulcrum_rte_errno() },
            )));
        }
        Ok(Eal { _private: () })
    }

    /// The number of Ethernet ports the EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is initialised (we hold an `Eal`).
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// Starts DPDK's packet-capture server so `dpdk-dumpcap` can capture live ports.
    pub fn enable_pdump(&self) -> Result<(), DpdkError> {
        // SAFETY: the EAL is initialised; rte_pdump_init registers a multi-process handler.
        let ret = unsafe { dpdk_sys::rte_pdump_init() };
        if ret < 0 {
            return Err(DpdkError::from_errno("rte_pdump_init"));
        }
        Ok(())
    }

    /// Releases the EAL's resources: the same as dropping the handle. Every pool, port and
    /// worker scope borrows the `Eal`, so the compiler makes sure they are gone first.
    pub fn cleanup(self) {
        drop(self);
    }
}

impl Drop for Eal {
    /// Cleans up the EAL. Also removes this process's runtime directory
    /// (`/var/run/dpdk/<file-prefix>`), which the EAL leaves behind: every test and benchmark
    /// run uses its own prefix, and the directories would pile up.
    fn drop(&mut self) {
        // SAFETY: the EAL is initialised; the returned pointer is a NUL-terminated string
        // owned by the EAL, copied out before cleanup frees anything.
        let runtime_dir = unsafe {
            let p = dpdk_sys::rte_eal_get_runtime_dir();
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        // SAFETY: runs once (the only `Eal` is dropped once). Mempools, ports and lcore scopes
        // borrow the `Eal`, so none is alive and no worker lcore is running; an object leaked
        // with mem::forget is never used again, so the memory cleanup frees under it is not
        // read either.
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
        if let Some(dir) = runtime_dir.filter(|d| d.starts_with("/") && d.contains("dpdk")) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pci_addresses() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("01:00.1,txq_inline=1"));
        assert!(!is_pci_address("net_tap0,iface=fulcrum0"));
        assert!(!is_pci_address("net_ring0"));
        assert!(!is_pci_address("0000:01:00"));
    }

    #[test]
    fn devices_become_eal_arguments() {
        let args = eal_args_with_devices(
            &["--file-prefix=x".into()],
            &["net_tap0,iface=t0".into(), "0000:03:00.0".into()],
        );
        assert_eq!(
            args,
            [
                "--file-prefix=x",
                "--vdev=net_tap0,iface=t0",
                "-a",
                "0000:03:00.0"
            ]
        );
        assert!(names_pci(&args));
        assert!(!names_pci(&["--vdev=net_ring0".into()]));
    }
}
