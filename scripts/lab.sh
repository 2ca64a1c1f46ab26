#!/usr/bin/env bash
# The README's first command, as root (a normal user: sudo in front):
#   scripts/lab.sh [--nodes N] [--backend host-gw|vxlan|ipip] [--keep]
# Installs what is missing (Debian packages; Rust via rustup if there is none), builds weft in
# release mode and runs `weft-lab` (crate testkit): a local cluster in network namespaces, torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

prepare
log "building weft, weft-cni and weft-lab (cargo build --release)"
cargo build --release --locked
give_back
exec target/release/weft-lab "$@"
