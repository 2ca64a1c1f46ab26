# Shared by scripts/lab.sh and scripts/test.sh (sourced, not run).
# Debian packages weft's lab and tests need, installed only when missing, and a cargo to build with
# (run by root, also under sudo).

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
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, packages): run it as root, or as a normal user with sudo in front"
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

# Makes `cargo` runnable by root: the kernel and end-to-end tests need root (network namespaces,
# netlink), so cargo never drops to another user. Looks for a cargo on PATH, then in root's own
# ~/.cargo/bin, then (under sudo) in the invoking user's ~/.cargo/bin; with none, rustup installs
# one for root. Under sudo from a user:
# - their rustup proxies find their toolchain through RUSTUP_HOME (their ~/.rustup, only read);
# - CARGO_HOME is their ~/.cargo when they have one (else root's own, from the passwd entry, not
#   $HOME, which some sudo setups keep as the user's). Sharing it keeps the registry sources at
#   the paths the user's own builds recorded in target/, so nothing is downloaded or rebuilt twice;
#   what root writes there (registry cache, locks) is handed back to them at exit;
# - target/ is the checkout's, handed back at exit too (give_back).
find_cargo() {
  local own_home user_home="" found
  own_home=$(getent passwd "$(id -u)" | cut -d: -f6)
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -z "${CARGO_HOME:-}" ]; then
      if [ -d "$user_home/.cargo" ]; then
        export CARGO_HOME=$user_home/.cargo
      else
        export CARGO_HOME=$own_home/.cargo
      fi
    fi
  fi
  found=$(command -v cargo || true)
  if [ -z "$found" ] && [ -x "$own_home/.cargo/bin/cargo" ]; then
    found=$own_home/.cargo/bin/cargo
    export PATH="$own_home/.cargo/bin:$PATH"
  fi
  if [ -z "$found" ] && [ -n "$user_home" ] && [ -x "$user_home/.cargo/bin/cargo" ]; then
    found=$user_home/.cargo/bin/cargo
    log "using $SUDO_USER's toolchain ($user_home/.cargo/bin), run as root"
    export PATH="$user_home/.cargo/bin:$PATH"
  fi
  if [ -n "$user_home" ] && [[ $found == "$user_home"/* ]]; then
    export RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
  fi
  [ -n "$found" ] && return 0
  command -v curl >/dev/null || apt-get install -y -q curl
  log "no Rust toolchain found: installing one with rustup (https://rustup.rs) for $(id -un)"
  # Into root's own home, whatever CARGO_HOME was chosen above for the registry.
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    CARGO_HOME=$own_home/.cargo RUSTUP_HOME=$own_home/.rustup sh -s -- -y --profile minimal \
      --component rustfmt,clippy
  export PATH="$own_home/.cargo/bin:$PATH"
}

# Under sudo, hands what root created back to the invoking user: in target/ when the checkout is
# theirs, and in CARGO_HOME when it is theirs (find_cargo), so their own cargo can still write
# there. Run at exit by prepare's trap; call it first when a script replaces that trap or execs.
give_back() {
  [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] || return 0
  local owner="$SUDO_UID:${SUDO_GID:-$SUDO_UID}" dir
  for dir in target "${CARGO_HOME:-}"; do
    [ -n "$dir" ] && [ -d "$dir" ] && [ "$(stat -c %u "$dir")" = "$SUDO_UID" ] || continue
    chown -R --from=0 "$owner" "$dir" ||
      log "could not give $dir back to ${SUDO_USER:-uid $SUDO_UID}"
  done
}

# What both set-up commands do first: root, packages, a `cargo` on PATH, and (under sudo) what
# root created in the user's target/ and CARGO_HOME handed back at exit.
prepare() {
  require_root
  trap give_back EXIT
  ensure_packages
  ensure_pip_packages
  find_cargo
}
