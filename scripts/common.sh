# Shared by scripts/lab.sh and scripts/test.sh (sourced, not run).
# Debian packages weft's lab and tests need, installed only when missing, and a cargo to build with.

# protobuf-compiler: etcd-client's build script runs protoc. etcd-server/etcd-client: the real
# etcd and etcdctl. The rest: namespaces, ping, throughput (iperf3; ethtool: the offload state the
# bench shows and sets on the lab's veths), NAT tools, CNI plugins, certs, capture,
# systemd-analyze (unit checks), python3-pip (the manifest validators below).
WEFT_PACKAGES=(protobuf-compiler etcd-server etcd-client iputils-ping iproute2 iperf3 ethtool
  nftables iptables containernetworking-plugins openssl tcpdump systemd python3-pip)
# PyPI tools of tests/manifests.rs (offline Kubernetes schema validation, YAML lint).
WEFT_PIP_PACKAGES=(kubernetes-validate yamllint)

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, packages): run it with sudo"
}

# Installs the packages of WEFT_PACKAGES that are not installed yet (apt-get, Debian/Ubuntu).
ensure_packages() {
  local missing=() p
  for p in "${WEFT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
}

# Installs the PyPI validators when python3 cannot import them.
ensure_pip_packages() {
  python3 -c 'import kubernetes_validate, yamllint' 2>/dev/null && return 0
  log "installing ${WEFT_PIP_PACKAGES[*]} (pip)"
  # Debian 12's system python refuses global installs without this flag (PEP 668).
  python3 -m pip install --quiet "${WEFT_PIP_PACKAGES[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "${WEFT_PIP_PACKAGES[@]}"
}

# Sets CARGO to a command that runs cargo. Under sudo, a toolchain in the invoking user's home is
# used as that user (so target/ stays theirs); with none anywhere, rustup installs one for root.
find_cargo() {
  if command -v cargo >/dev/null; then CARGO=(cargo); return 0; fi
  local home=""
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -x "$home/.cargo/bin/cargo" ]; then
      CARGO=(sudo -u "$SUDO_USER" -H env "PATH=$home/.cargo/bin:$PATH" cargo)
      return 0
    fi
  fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"; CARGO=(cargo); return 0
  fi
  command -v curl >/dev/null || apt-get install -y -q curl
  log "no Rust toolchain found: installing one with rustup (https://rustup.rs) for $(id -un)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    --component rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
  CARGO=(cargo)
}

# What both set-up commands do first: root, packages, a cargo in CARGO.
prepare() {
  require_root
  ensure_packages
  ensure_pip_packages
  find_cargo
}
