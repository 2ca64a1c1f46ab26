#!/usr/bin/env bash
# As root: `scripts/bench.sh [--quick | --smoke] [more benches/agent flags]` (a normal user: sudo)
# Builds the release agent and the benchmark, then runs it as root (network namespaces): cold
# start of 100…20,000 peers next to `ip -batch`, event latency, a no-change resync, idle CPU and
# wakeups, RSS, etcd RPCs and pod-to-pod iperf3 (see BENCHMARKS.md). The output, headed by the
# machine and the date, is also saved under target/bench/.
# A full run takes about 10 minutes on 2 cores, --quick about 1.5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

prepare
log "cargo build --release --locked"
cargo build --release --locked
log "cargo bench --bench agent --no-run --locked"
bin=$(cargo bench --bench agent --no-run --locked 2>&1 | tee /dev/stderr |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  die "could not find the benchmark binary in cargo's output"
fi

mkdir -p target/bench
out="target/bench/bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; kernel $(uname -r); ${cpu:-unknown CPU}"
  echo "# scripts/bench.sh $*"
} | tee "$out"
"$bin" --weft "$PWD/target/release/weft" "$@" 2>&1 | tee -a "$out"
log "saved to $out"
