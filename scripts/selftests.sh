#!/usr/bin/env bash
# Builds the Linux kernel's own futex and memory selftests from Debian's
# linux-source-6.1 package, twice: natively (gcc) and for riscv64, static
# (riscv64-linux-gnu-gcc -static), for crates/softmm-cli/tests/selftests.rs
# to run natively and under `softmm exec`.
#
#   scripts/selftests.sh OUT_DIR
#
# Installs linux-source-6.1 when /usr/src/linux-source-6.1.tar.xz is missing
# and the cross compiler through scripts/rv-toolchain.sh. Unpacks only the
# selftest folders it builds (and the kselftest headers they include) into
# OUT_DIR/src, never into the repository; the programs go to OUT_DIR/native
# and OUT_DIR/riscv64. A second run with the programs present does nothing.
#
# Exit status: 0 built; 77 the package or a compiler cannot be had here (the
# caller skips, saying so); anything else a real failure.
set -euo pipefail

out=${1:?usage: scripts/selftests.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tarball=/usr/src/linux-source-6.1.tar.xz
top=linux-source-6.1/tools/testing/selftests

futex_tests=(futex_wait_timeout futex_wait_wouldblock futex_requeue_pi futex_requeue_pi_signal_restart
    futex_requeue_pi_mismatched_ops futex_wait_uninitialized_heap futex_wait_private_mapped_file
    futex_wait futex_requeue futex_waitv)
vm_tests=(mremap_test map_fixed_noreplace mlock2-tests madv_populate mremap_dontunmap)

skip() {
    echo "selftests: skipped: $*" >&2
    exit 77
}

install_source() {
    [ -f "$tarball" ] && return 0
    command -v apt-get >/dev/null 2>&1 || skip "$tarball is missing and apt-get is not available"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || skip "$tarball is missing; not root and no sudo to install linux-source-6.1"
        sudo=sudo
    fi
    echo "selftests: installing linux-source-6.1"
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y linux-source-6.1; then
        $sudo apt-get update || true
        $sudo apt-get install -y linux-source-6.1 || skip "apt-get install linux-source-6.1 failed"
    fi
    [ -f "$tarball" ] || skip "linux-source-6.1 is installed but $tarball is missing"
}

unpack() {
    [ -f "$out/src/.unpacked" ] && return 0
    rm -rf "$out/src"
    mkdir -p "$out/src"
    echo "selftests: unpacking the futex and vm selftests from $tarball"
    tar -xJf "$tarball" -C "$out/src" --wildcards \
        "$top/futex/*" "$top/vm/*" "$top/kselftest.h" "$top/kselftest_harness.h"
    touch "$out/src/.unpacked"
}

# build CC OUT_SUBDIR EXTRA_FLAGS...
build() {
    local cc=$1 dest=$out/$2
    shift 2
    mkdir -p "$dest"
    local src=$out/src/$top
    local t
    for t in "${futex_tests[@]}"; do
        [ -x "$dest/$t" ] && continue
        (cd "$src/futex/functional" &&
            "$cc" "$@" -g -O2 -D_GNU_SOURCE= -pthread -I../include -I../.. -o "$dest/$t" "$t.c" -lpthread -lrt)
    done
    for t in "${vm_tests[@]}"; do
        [ -x "$dest/$t" ] && continue
        local extra=()
        [ "$t" = madv_populate ] && extra=(vm_util.c)
        (cd "$src/vm" && "$cc" "$@" -g -O2 -o "$dest/$t" "$t.c" "${extra[@]}" -lrt -lpthread)
    done
}

install_source
command -v gcc >/dev/null 2>&1 || skip "gcc is missing"
if ! command -v riscv64-linux-gnu-gcc >/dev/null 2>&1; then
    bash "$here/rv-toolchain.sh" || skip "the riscv64 cross compiler cannot be installed"
fi
unpack
build gcc native
build riscv64-linux-gnu-gcc riscv64 -static
echo "selftests: built in $out/native and $out/riscv64"
