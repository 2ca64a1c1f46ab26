#!/usr/bin/env bash
# The README's second command, as root (a normal user: sudo in front; the tests still run as
# root, see find_cargo in scripts/common.sh):
#   scripts/test.sh [cargo test args]
# Installs what is missing, builds the release binary and runs every test of the workspace
# (unit, kernel and end-to-end tests with a real etcd and the real weft in network namespaces),
# then the ipip end-to-end tests in a qemu VM (scripts/vm-test.sh).
# Extra arguments go to `cargo test` (and skip the VM), e.g. `scripts/test.sh --test e2e_hostgw`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

prepare
log "cargo build --release --locked"
cargo build --release --locked
log "cargo test --workspace --locked $*"
# End-to-end tests each build a cluster of namespaces with etcd and several agents; on a small
# machine more than a few at once only adds timing noise. RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --workspace --locked "$@"

# Then the tests that need a kernel with ipip (tests/vm_*.rs, tests/e2e_ipip*.rs) inside a small
# qemu VM (about 2 minutes under TCG); see scripts/vm-test.sh. Only for a full run (no cargo test
# arguments); WEFT_SKIP_VM=1 skips it.
if [ $# -eq 0 ] && [ -z "${WEFT_SKIP_VM:-}" ]; then
  log "scripts/vm-test.sh (ipip end to end in a VM)"
  # Runs as root too, with the toolchain find_cargo exported (it only locates the test
  # executables built above).
  scripts/vm-test.sh
fi
