#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for SECONDS each (default 600), one after the other
# with one job (the machine's cores are shared), under nice, and prints per target the
# executions, executions per second, corpus size and crashes. Exits non-zero on a crash; the
# crashing input is then in fuzz/artifacts/TARGET/ (replay it with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`, then add it to
# fuzz/corpus/TARGET/ so tests/fuzz_corpus.rs keeps replaying it).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# The corpus grows in fuzz/corpus/TARGET/; minimise it before committing:
#   cargo +nightly fuzz cmin -s none TARGET
set -euo pipefail

seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(parser pipeline config api)
cd "$(dirname "$0")/.."
root=$(pwd)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

# No sanitizer: the code under the targets is safe Rust (unsafe lives in src/dpdk, which no
# target reaches), so AddressSanitizer would only slow the search. Debug assertions are on,
# so arithmetic overflow panics like an out-of-bounds index does.
flags=(-s none --debug-assertions)
echo "fuzz.sh: building the targets (cargo +nightly fuzz build; the first build takes minutes)"
set +e
nice -n 10 cargo +nightly fuzz build "${flags[@]}" 2>&1 | grep -v '^\s*Compiling'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz.sh: building the fuzz targets failed" >&2
    exit 2
fi
# The built binaries are run directly: `cargo fuzz run` would first rebuild the library
# whenever build.rs sees a new git revision.
bin=fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
for t in "${targets[@]}"; do
    if [ ! -x "$bin/$t" ]; then
        echo "fuzz.sh: $bin/$t was not built (see the build's output above)" >&2
        exit 2
    fi
done

logdir=fuzz/artifacts/logs
mkdir -p "$logdir"
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    # With -jobs, libFuzzer runs the fuzzing in a child process that writes fuzz-0.log in
    # the current directory: run it in the target's log directory and follow that file.
    rundir=$root/$logdir/$t
    rm -rf "$rundir"
    mkdir -p "$rundir"
    log=$logdir/$t.log
    echo "fuzz.sh: $t for ${seconds}s (corpus $before inputs; log $rundir/fuzz-0.log)"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
    set +e
    (cd "$rundir" && exec nice -n 10 "$root/$bin/$t" "$root/fuzz/corpus/$t" \
        -artifact_prefix="$root/fuzz/artifacts/$t/" \
        -max_total_time="$seconds" -jobs=1 -workers=1 -print_final_stats=1 \
        -max_len=8192 -timeout=10 -rss_limit_mb=2048 "${dict[@]}") >"$log" 2>&1 &
    pid=$!
    # Progress every 30 s: libFuzzer's latest status line.
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        line=$(grep -ahE '^#[0-9]+' "$rundir/fuzz-0.log" 2>/dev/null | tail -1 || true)
        [ -n "$line" ] && echo "  $t: $line"
    done
    wait "$pid"
    rc=$?
    set -e
    cat "$rundir/fuzz-0.log" >>"$log" 2>/dev/null || true
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
    after=$(find "fuzz/corpus/$t" -type f | wc -l)
    crashes=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="? (libFuzzer exited $rc; see $log)"
    fi
    if [ "$rc" -ne 0 ] || [ "$crashes" != 0 ]; then
        status=1
        grep -aE 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /' || true
    fi
    line=$(printf '%-9s %6ss  executions %-12s exec/s %-8s corpus %s -> %s  crashes %s' \
        "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$before" "$after" "$crashes")
    echo "fuzz.sh: $line"
    summary+=("$line")
done
echo
echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
exit $status
