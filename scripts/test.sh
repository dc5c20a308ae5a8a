#!/usr/bin/env bash
# The README's test command: installs what is missing, checks formatting and lints, builds,
# and runs every test (unit, integration with real EALs on vdevs, end-to-end lab).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo build --release (the binary the end-to-end tests run)"
cargo build --release --bin fulcrum

echo "== cargo test"
cargo test --workspace

echo "== end-to-end tests in network namespaces (real kernel TCP/UDP through fulcrum)"
bash scripts/e2e.sh
