#!/usr/bin/env bash
# Run commands inside a small qemu (TCG) VM booted from Debian's generic kernel, for the tests
# that need kernel features the development/CI kernel lacks (ipip, module loading).
#
# Usage:
#   scripts/vm-test.sh                      run every full-kernel test (see "Convention" below)
#   scripts/vm-test.sh [--] COMMAND [ARG..] run COMMAND inside the VM (cwd = current directory)
#   scripts/vm-test.sh --help
#
# Exit status: the guest command's exit status, read from the guest's own `GUEST: exit rc=N`
# console line (qemu itself always exits 0); 1 when that line is missing (crash, timeout).
#
# Convention for the default run: every integration-test target of the workspace whose name
# starts with `vm_` or `e2e_ipip` (files `tests/vm_*.rs`, `tests/e2e_ipip*.rs`, also
# `tests/<name>/main.rs`, in any workspace package) needs a full kernel and runs in the VM, and
# only there. Mark their kernel-dependent tests
#     #[ignore = "needs the VM kernel (ipip): run scripts/vm-test.sh"]
# so a plain `cargo test` on the host lists them as ignored instead of failing; inside the guest
# WEFT_IN_VM=1 is set (assert it for a clear message). They are built on the host
# (`cargo test --no-run`; the guest cannot build) and each executable then runs in the guest with
# `--include-ignored --test-threads=1`, cwd = its package directory. The default run first runs
# scripts/vm/smoke.sh (checks the VM itself: ipip, netns + veth tunnel ping, module autoload,
# etcd). Extra arguments for the test executables: VM_TEST_ARGS (e.g. a test name filter).
#
# The VM: kernel /boot/vmlinuz-<ver> with an initramfs (busybox-static, a few modules, /init =
# scripts/vm/init) cached under target/vm/ and rebuilt when the kernel version or the scripts
# change. The host root is shared read-only over 9p (the host's real tools run in the guest via
# chroot); the project directory (and CARGO_TARGET_DIR when it lies outside) is shared
# read-write at the same path. /tmp and /run are tmpfs in the guest. Modules not in the
# initramfs load on demand through the host's kmod. No network device: tests build their own
# namespaces and veth pairs (add one with VM_QEMU_ARGS to reach a host etcd).
#
# Environment:
#   VM_TIMEOUT=600     seconds before the VM is killed (counts as failure)
#   VM_MEM=1024        guest memory in MiB
#   VM_SMP=1           guest CPUs (TCG; the machines have 2 shared cores)
#   VM_VERBOSE=1       stream the console live instead of printing it at the end
#   VM_KERNEL=<ver>    kernel version to boot (default: newest /boot/vmlinuz-* with modules)
#   VM_QEMU_ARGS=...   extra qemu arguments (word-split), e.g. a -nic for host etcd
#   VM_TEST_ARGS=...   extra arguments for each test executable in the default run (word-split
#                      in the guest), e.g. a test name filter
#   RUST_LOG, RUST_BACKTRACE, CI and WEFT_* are passed to the guest command.
#
# Installs what it needs (qemu-system-x86 linux-image-amd64 busybox-static cpio kmod) with
# apt-get when missing; needs root (9p passthrough of / and the tests' netns work need it too).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VM_DIR=$ROOT/scripts/vm
CACHE=$ROOT/target/vm
PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static cpio kmod)
# Loaded at boot, in this order (dependencies from modules.dep first). Anything else is loaded
# on demand through the host's kmod (see scripts/vm/modprobe). br_netfilter: weft, like
# flanneld, refuses to start in iptables mode without it.
MODULES=(virtio_pci virtio_net 9pnet_virtio 9p ipip vxlan veth bridge br_netfilter tun)

log() { printf 'vm-test: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$p")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]} and not root to install them"
    log "installing ${missing[*]} (about a minute: the kernel package also builds its own initrd)"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    "${apt[@]}" update >&2 </dev/null
    "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >&2 </dev/null ||
        die "apt-get install ${PACKAGES[*]} failed"
}

pick_kernel() {
    local v
    if [[ -n ${VM_KERNEL:-} ]]; then
        v=$VM_KERNEL
    else
        # Newest installed kernel that has both an image and a module tree.
        v=$(for f in /boot/vmlinuz-*; do
            v=${f#/boot/vmlinuz-}
            [[ -f /lib/modules/$v/modules.dep ]] && echo "$v"
        done | sort -V | tail -n1)
    fi
    [[ -n $v && -f /boot/vmlinuz-$v && -f /lib/modules/$v/modules.dep ]] ||
        die "no usable kernel (want /boot/vmlinuz-<ver> and /lib/modules/<ver>/modules.dep; got '${v}')"
    KVER=$v
}

# Print the module paths (relative to /lib/modules/$KVER) for MODULES, dependencies first.
resolve_modules() {
    local dep=/lib/modules/$KVER/modules.dep
    declare -A seen=()
    local order=()
    visit() {
        local name=$1 line path deps d
        line=$(grep -m1 -E "(^|/)${name}\.ko(\.(xz|zst|gz))?:" "$dep") ||
            die "module $name not in $dep"
        path=${line%%:*}
        [[ -n ${seen[$path]:-} ]] && return 0
        seen[$path]=1
        deps=${line#*:}
        for d in $deps; do
            d=${d##*/}
            visit "${d%%.ko*}"
        done
        order+=("$path")
    }
    local m
    for m in "${MODULES[@]}"; do visit "$m"; done
    printf '%s\n' "${order[@]}"
}

build_initramfs() {
    local busybox=/bin/busybox
    [[ -x $busybox ]] || die "$busybox missing (package busybox-static)"
    local key
    key=$( {
        echo "$KVER"
        echo "${MODULES[*]}"
        # Same version string, rebuilt package: the modules must match the image we boot.
        stat -c '%s %Y' "/boot/vmlinuz-$KVER" "/lib/modules/$KVER/modules.dep"
        sha256sum "$busybox" "$VM_DIR/init" "$VM_DIR/modprobe" "${BASH_SOURCE[0]}" | cut -d' ' -f1
    } | sha256sum | cut -c1-16)
    INITRD=$CACHE/initramfs-$KVER-$key.cpio.gz
    [[ -s $INITRD ]] && return 0

    log "building initramfs for $KVER"
    mkdir -p "$CACHE"
    # Staging dirs left by interrupted builds (not a concurrent one: those are fresh).
    find "$CACHE" -maxdepth 1 -name 'stage.*' -mmin +60 -exec rm -rf {} +
    local stage mods
    stage=$(mktemp -d "$CACHE/stage.XXXXXX")
    mods=$(resolve_modules)
    mkdir -p "$stage"/{bin,sbin,etc/weft-vm,proc,sys,dev,newroot,lib/modules/"$KVER"}
    cp "$busybox" "$stage/bin/busybox"
    local a
    for a in $("$busybox" --list); do
        [[ $a == busybox ]] || ln -s busybox "$stage/bin/$a"
    done
    install -m 755 "$VM_DIR/init" "$stage/init"
    install -m 755 "$VM_DIR/modprobe" "$stage/sbin/weft-modprobe"

    local rel src dst
    : > "$stage/etc/weft-vm/modules"
    while read -r rel; do
        src=/lib/modules/$KVER/$rel
        dst=$stage/lib/modules/$KVER/${rel%.xz}
        dst=${dst%.zst}
        dst=${dst%.gz}
        mkdir -p "$(dirname "$dst")"
        # busybox insmod wants plain ELF: decompress here.
        case $rel in
            *.ko.xz) xz -dc "$src" > "$dst" ;;
            *.ko.zst) zstd -qdc "$src" > "$dst" ;;
            *.ko.gz) gzip -dc "$src" > "$dst" ;;
            *) cp "$src" "$dst" ;;
        esac
        echo "${dst#"$stage/lib/modules/$KVER/"}" >> "$stage/etc/weft-vm/modules"
    done <<<"$mods"

    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
        gzip -1 > "$stage.cpio.gz"
    mv "$stage.cpio.gz" "$INITRD"
    rm -rf "$stage"
    # Older images of this kernel are stale now.
    find "$CACHE" -maxdepth 1 -name "initramfs-$KVER-*.cpio.gz" ! -path "$INITRD" -delete
    log "initramfs $(du -h "$INITRD" | cut -f1) at ${INITRD#"$ROOT/"}"
}

# Find (and build on the host) the full-kernel test executables; fills TEST_EXES/TEST_DIRS.
build_vm_tests() {
    TEST_EXES=()
    TEST_DIRS=()
    local names=() f n
    shopt -s nullglob
    for f in "$ROOT"/tests/{vm_,e2e_ipip}* "$ROOT"/*/tests/{vm_,e2e_ipip}*; do
        n=${f##*/}
        if [[ -f $f && $n == *.rs ]]; then
            names+=("${n%.rs}")
        elif [[ -f $f/main.rs ]]; then
            names+=("$n")
        fi
    done
    shopt -u nullglob
    if [[ ${#names[@]} -eq 0 ]]; then
        log "no vm_*/e2e_ipip* test targets found"
        return 0
    fi
    local args=() json line name exe manifest
    for n in "${names[@]}"; do args+=(--test "$n"); done
    log "building on the host: cargo test --workspace --no-run ${args[*]}"
    json=$(cd "$ROOT" && cargo test --workspace --no-run --message-format=json-render-diagnostics "${args[@]}") ||
        die "cargo build of the vm tests failed"
    while IFS= read -r line; do
        [[ $line == *'"reason":"compiler-artifact"'* && $line == *'"kind":["test"]'* ]] || continue
        name=$(sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*/\1/p' <<<"$line")
        exe=$(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' <<<"$line")
        manifest=$(sed -n 's/.*"manifest_path":"\([^"]*\)".*/\1/p' <<<"$line")
        [[ -n $exe && $name =~ ^(vm_|e2e_ipip) ]] || continue
        TEST_EXES+=("$exe")
        TEST_DIRS+=("$(dirname "$manifest")")
    done <<<"$json"
    [[ ${#TEST_EXES[@]} -eq ${#names[@]} ]] ||
        die "found ${#names[@]} test targets (${names[*]}) but ${#TEST_EXES[@]} executables"
}

# Write the guest command file: bash, run by /init inside the chroot.
write_cmd_file() {
    local file=$1
    shift
    {
        echo "# generated by scripts/vm-test.sh"
        local v
        for v in CI RUST_LOG RUST_BACKTRACE RUST_TEST_THREADS NO_COLOR $(compgen -e | grep '^WEFT_' || true); do
            [[ -n ${!v+x} ]] && printf 'export %s=%q\n' "$v" "${!v}"
        done
        printf 'cd %q || exit 125\n' "$PWD"
        if [[ $# -gt 0 ]]; then
            printf '%q ' "$@"
            echo
        else
            # The default run: smoke check, then every full-kernel test; report all failures.
            printf 'failed=()\n'
            printf 'echo "=== vm: scripts/vm/smoke.sh"\n'
            printf '%q || failed+=(smoke.sh)\n' "$VM_DIR/smoke.sh"
            local i
            for i in "${!TEST_EXES[@]}"; do
                printf 'echo "=== vm: %s"\n' "${TEST_EXES[$i]##*/}"
                printf '(cd %q && CARGO_MANIFEST_DIR=%q %q --include-ignored --test-threads=1 %s) || failed+=(%q)\n' \
                    "${TEST_DIRS[$i]}" "${TEST_DIRS[$i]}" "${TEST_EXES[$i]}" "${VM_TEST_ARGS:-}" "${TEST_EXES[$i]##*/}"
            done
            # shellcheck disable=SC2016 # expands in the guest
            printf 'if [ ${#failed[@]} -gt 0 ]; then echo "=== vm: FAILED: ${failed[*]}"; exit 1; fi\n'
            printf 'echo "=== vm: all passed"\n'
        fi
    } > "$file"
}

# The console log without CRs and terminal escapes (SeaBIOS resets the terminal).
console() { sed -e 's/\r$//' -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' "$1"; }

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        --) shift ;;
    esac
    [[ $ROOT != *[[:space:]]* ]] || die "the project path '$ROOT' contains whitespace (it goes on the kernel command line)"
    ensure_packages
    pick_kernel
    build_initramfs

    if [[ $# -eq 0 ]]; then
        build_vm_tests
    fi

    mkdir -p "$CACHE/runs"
    local run
    run=$(mktemp -d "$CACHE/runs/run.XXXXXX")
    # shellcheck disable=SC2064 # $run is local: expand now
    trap "rm -rf '$run'" EXIT
    write_cmd_file "$run/cmd.sh" "$@"
    # Per-run log (runs may be concurrent), copied to target/vm/last-console.log at the end.
    local logf=$run/console.log
    [[ -n ${VM_VERBOSE:-} ]] || log "booting $KVER (console log: target/vm/last-console.log)"

    # shellcheck disable=SC2054 # commas belong to qemu's option syntax
    local qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp "${VM_SMP:-1}" -m "${VM_MEM:-1024}"
        -nographic -no-reboot -nic none
        -kernel "/boot/vmlinuz-$KVER" -initrd "$INITRD"
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap)
    # Read-write shares, mounted at their host paths: the project, and a CARGO_TARGET_DIR
    # outside it (tests write to CARGO_TARGET_TMPDIR).
    local rw=("$ROOT") append="console=ttyS0 quiet panic=-1 rdinit=/init weft.cmd=$run/cmd.sh" i
    if [[ -n ${CARGO_TARGET_DIR:-} && -d $CARGO_TARGET_DIR ]]; then
        local t
        t=$(cd "$CARGO_TARGET_DIR" && pwd -P)
        [[ $t == "$ROOT"/* || $t == *[[:space:]]* ]] || rw+=("$t")
    fi
    for i in "${!rw[@]}"; do
        qemu+=(-virtfs "local,path=${rw[$i]},mount_tag=rw$i,security_model=none,multidevs=remap")
        append+=" weft.rw=${rw[$i]}"
    done
    qemu+=(-append "$append")
    # shellcheck disable=SC2206
    [[ -n ${VM_QEMU_ARGS:-} ]] && qemu+=($VM_QEMU_ARGS)

    local start end qrc=0
    start=$(date +%s.%N)
    if [[ -n ${VM_VERBOSE:-} ]]; then
        timeout -k 10 "${VM_TIMEOUT:-600}" "${qemu[@]}" </dev/null 2>&1 | tee "$logf" || qrc=$?
    else
        timeout -k 10 "${VM_TIMEOUT:-600}" "${qemu[@]}" </dev/null >"$logf" 2>&1 || qrc=$?
    fi
    end=$(date +%s.%N)
    cp "$logf" "$CACHE/last-console.log"
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

    local rc
    rc=$(console "$logf" | sed -n 's/^GUEST: exit rc=\([0-9][0-9]*\)$/\1/p' | tail -n1)
    if [[ -z $rc ]]; then
        [[ -n ${VM_VERBOSE:-} ]] || console "$logf"
        if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
            log "FAILED: VM timed out after ${VM_TIMEOUT:-600}s (no 'GUEST: exit rc=' line)"
        else
            log "FAILED: no 'GUEST: exit rc=' line from the guest (qemu exit $qrc) after ${secs}s"
        fi
        exit 1
    fi
    if [[ $rc -ne 0 ]]; then
        [[ -n ${VM_VERBOSE:-} ]] || console "$logf"
        log "FAILED: guest command exited $rc (${secs}s)"
        exit "$rc"
    fi
    [[ -n ${VM_VERBOSE:-} ]] || console "$logf" | tail -n 40
    log "ok: guest command exited 0 (${secs}s)"
}

main "$@"
