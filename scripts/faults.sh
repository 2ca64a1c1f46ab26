#!/usr/bin/env bash
# The fault suite, as root (a normal user: sudo in front):
#   scripts/faults.sh [--quick] [--out FILE]
#
# Runs the fault scenarios of tests/faults/ (targets R1–R7, S1: etcd outage, compaction while
# cut off, restarts, boot from the peer cache, 50 nodes at once, drift repair, stale purge,
# health endpoints, malformed-lease storm) against the release weft in lab clusters, plus the
# property tests of net-conf, and prints the figures as a Markdown table with the machine, the
# command and the date (RELIABILITY.md holds the last full run).
#
#   (default)  full sizes: etcd down 10 min, agents down 5 s per restart, etcd down 90 s at a
#              start, a 20,000-write storm, 50 nodes, 2 min behind a slow link, a 30-min churn
#              soak after a 5-min warm-up, 10,000 cases per property. About 50 minutes.
#   --quick    the CI sizes (etcd down 10 s, 2 s, 500 writes, 50 nodes, 256 cases): about a minute.
#   --out FILE also write the report to FILE.
#
# Installs what is missing (like scripts/test.sh); needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

quick=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="${2:?--out needs a file}"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (use --quick, --out FILE)" ;;
  esac
  shift
done

prepare
log "building weft (cargo build --release --locked)"
cargo build --release --locked

if [ "$quick" = 1 ]; then
  mode="quick (CI sizes)"
  export WEFT_FAULTS_OUTAGE_SECS=10 WEFT_FAULTS_DOWN_SECS=2 WEFT_FAULTS_STORM=500
  export WEFT_FAULTS_NODES=50 WEFT_FAULTS_R7_DOWN_SECS=3 WEFT_FAULTS_SLOW_SECS=5 WEFT_FAULTS_CHURN_SECS=60 PROPTEST_CASES=256
else
  mode="full"
  export WEFT_FAULTS_OUTAGE_SECS=600 WEFT_FAULTS_DOWN_SECS=5 WEFT_FAULTS_STORM=20000
  export WEFT_FAULTS_NODES=50 WEFT_FAULTS_R7_DOWN_SECS=90 WEFT_FAULTS_SLOW_SECS=120 WEFT_FAULTS_CHURN_SECS=1800 WEFT_FAULTS_CHURN_WARMUP_SECS=300 PROPTEST_CASES=10000
fi

report=$(mktemp /tmp/weft-faults.XXXXXX)
trap 'rm -f "$report"; give_back' EXIT
export WEFT_FAULTS_REPORT="$report"
# The agents under test are the release binary; the test driver itself stays a debug build.
export WEFT_TEST_BIN="$PWD/target/release/weft"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)

status=0
log "fault scenarios ($mode): cargo test --test faults -- --test-threads=1"
cargo test --locked --test faults -- --test-threads=1 --nocapture || status=$?
log "property tests: cargo test -p net-conf --test fuzz (PROPTEST_CASES=$PROPTEST_CASES)"
if cargo test --locked -p net-conf --test fuzz; then
  n=$(grep -c '#\[test\]' net-conf/tests/fuzz.rs)
  echo "FIGURE|S1|property tests (net-conf/tests/fuzz.rs): $n properties × $PROPTEST_CASES cases|pass|pass" >>"$report"
else
  status=1
  echo "FIGURE|S1|property tests (net-conf/tests/fuzz.rs)|FAILED|pass" >>"$report"
fi
elapsed=$(( $(date +%s) - t0 ))

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
{
  echo "### Fault suite, $mode run"
  echo
  echo "- date: $started; took ${elapsed} s; result: $([ $status = 0 ] && echo pass || echo FAIL)"
  echo "- machine: $(nproc) × $cpu, $mem, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- command: \`scripts/faults.sh$([ $quick = 1 ] && echo ' --quick')\` (agents: release build)"
  echo
  echo "| target | what | measured | goal |"
  echo "|---|---|---|---|"
  awk -F'|' '$1 == "FIGURE" { printf "| %s | %s | %s | %s |\n", $2, $3, $4, $5 }' "$report"
} | tee ${out:+"$out"}
exit "$status"
