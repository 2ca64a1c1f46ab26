#!/usr/bin/env bash
# The README's second command: `sudo scripts/test.sh [cargo test args]`
# Installs what is missing, builds the release binary and runs every test of the workspace
# (unit, kernel and end-to-end tests with a real etcd and the real weft in network namespaces).
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test e2e_hostgw`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

prepare
log "cargo build --release --locked"
"${CARGO[@]}" build --release --locked
log "cargo test --workspace --locked $*"
# End-to-end tests each build a cluster of namespaces with etcd and several agents; on a small
# machine more than a few at once only adds timing noise. RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
"${CARGO[@]}" test --workspace --locked "$@"
