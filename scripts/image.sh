#!/usr/bin/env bash
# Builds the DaemonSet's image, localhost/weft:<version>, from manifests/Containerfile: the
# release binaries (weft, weft-cni) on a minimal Debian root filesystem made by mmdebstrap from
# the Debian mirror (no registry is needed). Works on a fresh Debian 12 machine as root: it
# installs podman, mmdebstrap and runc when they are missing. Prints the image reference as its
# last line; the size and build time go to stderr.
#
#   scripts/image.sh                 build (the base root filesystem is reused when cached)
#   WEFT_IMAGE_REBUILD_BASE=1 ...    make the base again
#   WEFT_IMAGE_SKIP_CARGO=1 ...      use target/release as it is (CI built it already)
#
# The base, localhost/weft-base:bookworm, carries a label with the package list and the
# mirror it came from; a base whose label differs is rebuilt. podman runs with runc and a
# containers.conf of ours (crun and podman's default ulimits fail on these machines).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR="${WEFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the agent execs (iptables, nft), what operators use on the node (ip), TLS roots.
PACKAGES=iproute2,iptables,nftables,ca-certificates
BASE=localhost/weft-base:$SUITE
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
IMAGE=localhost/weft:$VERSION
STATE=/var/lib/weft-image
start=$(date +%s)

say() { echo "image.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "run as root (podman's root storage, mmdebstrap)"
  exit 1
fi
missing=()
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq podman mmdebstrap runc >&2
fi

mkdir -p "$STATE"
hard=$(ulimit -Hn)
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
  "$hard" "$hard" > "$STATE/containers.conf"
export CONTAINERS_CONF="$STATE/containers.conf"

stamp="$SUITE $MIRROR $PACKAGES trim-2"
have=$(podman image inspect --format '{{ index .Labels "weft.base" }}' "$BASE" 2>/dev/null || true)
if [ "${WEFT_IMAGE_REBUILD_BASE:-}" = 1 ] || [ "$have" != "$stamp" ]; then
  say "making the base root filesystem ($stamp)"
  tar="$STATE/rootfs.tar"
  # minbase, without docs (copyright files stay), man pages and locales. Then what neither the
  # agent nor an operator's `ip`/`nft`/`iptables` needs goes (the image never runs apt or dpkg
  # again): apt, perl, the shells' and tools' extras, PAM, tzdata, the e2fs/util-linux tools and
  # their libraries, TLS libraries (weft links rustls statically), iconv modules; binaries left
  # without their libraries (ss, arpd, logger) go too.
  purge1="libapt-pkg6.0 libstdc++6 gpgv tzdata e2fsprogs libext2fs2 libss2 logsave login passwd
    util-linux libgnutls30 libp11-kit0 libunistring2 openssl libssl3 libdb5.3 libpam-modules
    libpam-modules-bin libpam-runtime libpam0g libsemanage2 libsemanage-common libsepol2
    libsystemd0 libkrb5-3 libgssapi-krb5-2 libk5crypto3 libkrb5support0 libkeyutils1 libtirpc3
    libtirpc-common libgcrypt20 libgpg-error0 liblz4-1"
  # dpkg itself needs diff and tar, and maintainer scripts perl (debconf): these go last.
  purge2="debconf perl-base bash diffutils tar"
  purge="env DEBIAN_FRONTEND=noninteractive dpkg --purge --force-remove-essential --force-depends"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="chroot \"\$1\" $purge apt >/dev/null" \
    --customize-hook="chroot \"\$1\" $purge $(echo $purge1) >/dev/null 2>&1" \
    --customize-hook="chroot \"\$1\" $purge $purge2 >/dev/null 2>&1" \
    --customize-hook='rm -rf "$1"/var/lib/apt "$1"/var/cache/* "$1"/var/log/* "$1"/usr/lib/x86_64-linux-gnu/gconv "$1"/usr/share/zoneinfo "$1"/usr/share/bash-completion "$1"/usr/bin/ss "$1"/usr/sbin/arpd "$1"/usr/bin/logger' \
    "$SUITE" "$tar" "deb $MIRROR $SUITE main" >&2
  podman image rm -f "$BASE" >/dev/null 2>&1 || true
  podman import --quiet --change "LABEL weft.base=\"$stamp\"" "$tar" "$BASE" >/dev/null
  rm -f "$tar"
else
  say "base $BASE is cached"
fi

if [ "${WEFT_IMAGE_SKIP_CARGO:-}" != 1 ]; then
  # The workspace's default members, as scripts/test.sh builds them: after test.sh this is a
  # no-op (`-p weft -p weft-cni` would unify features differently and rebuild).
  cargo build --release --locked >&2
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
install -m 0755 target/release/weft target/release/weft-cni "$ctx/"
podman build --quiet --file manifests/Containerfile --tag "$IMAGE" "$ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
say "built $IMAGE: $((size / 1000000)) MB uncompressed (base $((base_size / 1000000)) MB, binaries $(((size - base_size) / 1000000)) MB) in $(($(date +%s) - start)) s"
echo "$IMAGE"
