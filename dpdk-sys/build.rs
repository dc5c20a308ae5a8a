//! Generates the raw DPDK bindings from the installed headers and compiles
//! bindgen's C wrappers for DPDK's `static inline` data-path functions.

use std::env;
use std::path::PathBuf;

const MIN_DPDK: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/helpers.c");

    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "error: libdpdk >= {MIN_DPDK} not found by pkg-config ({e}); run scripts/setup.sh"
            );
            panic!("libdpdk >= {MIN_DPDK} not found: run scripts/setup.sh");
        }
    };
    // Exported to dependants as DEP_DPDK_VERSION (the package has `links = "dpdk"`).
    println!("cargo:version={}", lib.version);

    println!("cargo:rustc-env=DPDK_SYS_VERSION={}", lib.version);

    // The same flags pkg-config gives C programs, including `-include rte_config.h -march=...`,
    // so bindgen and the wrapper compile see the layout DPDK was built with.
    let cflags_out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    let all_cflags: Vec<String> = String::from_utf8_lossy(&cflags_out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let clang_args = all_cflags.clone();

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let wrappers = out.join("static_wrappers");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("rte_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("rte_.*")
        .allowlist_var("per_lcore__rte_errno")
        // Packed-and-aligned types that bindgen cannot lay out; nothing here reads them.
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .generate()
        .expect("bindgen could not generate the DPDK bindings");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .file("src/helpers.c")
        .include(env::current_dir().expect("cwd"))
        .warnings(false)
        .flag_if_supported("-Wno-deprecated-declarations");
    for f in &all_cflags {
        build.flag(f);
    }
    build.compile("dpdk_static_wrappers");
}
