#!/usr/bin/env bash
# Offline checks of manifests/ (no Kubernetes API server and no systemd PID 1 needed):
#   - yamllint (manifests/.yamllint) on every YAML file;
#   - kubernetes-validate --strict with its bundled schemas, against Kubernetes 1.27 and its
#     newest bundled version (unknown fields and wrong types fail);
#   - systemd-analyze verify of manifests/systemd/weft.service. verify insists that ExecStart's
#     binary exists, so a copy whose ExecStart points at $WEFT_BIN (default target/debug/weft)
#     is verified; any message it prints counts as a failure (unknown keys are only warnings).
# Tools: `pip install kubernetes-validate yamllint` (scripts/common.sh and .ci/run do it) and
# Debian's systemd package. Exit 3 when a tool is missing, 1 when a check fails.
#
#   scripts/check-manifests.sh            run every check (on $MANIFESTS, default manifests/)
#   scripts/check-manifests.sh json FILE  print FILE's YAML documents as one JSON array
#                                         (tests/manifests.rs checks their contents with weft)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'check-manifests: %s\n' "$*" >&2; exit 1; }
missing() { printf 'check-manifests: %s\n' "$*" >&2; exit 3; }

M=${MANIFESTS:-manifests}
[ -d "$M" ] || die "$M is not a directory"
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || missing "no $PY"

if [ "${1:-}" = json ]; then
  [ -n "${2:-}" ] || die "usage: $0 json FILE"
  "$PY" -c 'import sys, json, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))' "$2" \
    || missing "python3 with PyYAML is needed (pip install yamllint brings it)"
  exit 0
fi

# Run as modules of the same python, so PATH (pyenv shims, ~/.local/bin) does not matter.
"$PY" -c 'import yamllint' 2>/dev/null || missing "yamllint not found: pip install yamllint"
"$PY" -c 'import kubernetes_validate' 2>/dev/null \
  || missing "kubernetes-validate not found: pip install kubernetes-validate"
command -v systemd-analyze >/dev/null || missing "systemd-analyze not found: apt-get install systemd"

mapfile -t yaml_files < <(find "$M" -name '*.yml' -o -name '*.yaml' | sort)
[ ${#yaml_files[@]} -gt 0 ] || die "no YAML files under $M/"
# yamllint reads manifests/.yamllint only when asked.
"$PY" -m yamllint --strict -c "$M/.yamllint" "${yaml_files[@]}" || die "yamllint failed"

for f in "${yaml_files[@]}"; do
  for v in 1.27.0 ""; do
    args=(--strict --quiet)
    [ -n "$v" ] && args+=(-k "$v")
    "$PY" -m kubernetes_validate "${args[@]}" "$f" \
      || die "kubernetes-validate ${v:-(newest schemas)} rejected $f"
  done
done

bin=${WEFT_BIN:-target/debug/weft}
[ -x "$bin" ] || die "weft binary $bin does not exist (cargo build, or set WEFT_BIN)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units=("$M"/systemd/*.service)
[ -f "${units[0]}" ] || die "no systemd unit under $M/systemd/"
for unit in "${units[@]}"; do
  sed "s#/usr/local/bin/weft#$bin#g" "$unit" >"$tmp/$(basename "$unit")"
  out=$(systemd-analyze verify "$tmp/$(basename "$unit")" 2>&1) \
    || die "systemd-analyze verify $unit failed: $out"
  [ -z "$out" ] || die "systemd-analyze verify $unit: $out"
done
printf 'check-manifests: %s YAML file(s) and the systemd unit(s) are valid\n' "${#yaml_files[@]}"
