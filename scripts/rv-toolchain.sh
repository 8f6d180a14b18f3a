#!/usr/bin/env bash
# Installs what the RISC-V machine's tests use: the riscv64 cross compiler
# with its static glibc (gcc-riscv64-linux-gnu, libc6-dev-riscv64-cross) and
# qemu-user (qemu-riscv64, the second opinion). Idempotent: with both
# riscv64-linux-gnu-gcc and qemu-riscv64 present it does nothing.
#
#   scripts/rv-toolchain.sh [--musl PREFIX]
#
# With --musl it then builds riscv64 musl into PREFIX (scripts/rv-musl.sh;
# the tests run that script themselves, into the target directory).
set -euo pipefail

musl_prefix=""
if [ "${1:-}" = "--musl" ]; then
    if [ -z "${2:-}" ]; then
        echo "usage: $0 [--musl PREFIX]" >&2
        exit 2
    fi
    musl_prefix="$2"
fi
here="$(cd "$(dirname "$0")" && pwd)"
musl() {
    if [ -n "$musl_prefix" ]; then
        bash "$here/rv-musl.sh" "$musl_prefix"
    fi
}

missing=()
command -v riscv64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-riscv64-linux-gnu libc6-dev-riscv64-cross)
command -v qemu-riscv64 >/dev/null 2>&1 || missing+=(qemu-user)

if [ ${#missing[@]} -eq 0 ]; then
    echo "rv-toolchain: riscv64-linux-gnu-gcc and qemu-riscv64 are installed"
    musl
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "rv-toolchain: missing ${missing[*]} and apt-get is not available: install them by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "rv-toolchain: missing ${missing[*]}; not root and no sudo, so cannot install them" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "rv-toolchain: installing ${missing[*]}"
$SUDO apt-get update
$SUDO apt-get install -y "${missing[@]}"

for tool in riscv64-linux-gnu-gcc qemu-riscv64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "rv-toolchain: apt-get finished but $tool is still missing" >&2
        exit 1
    fi
done
echo "rv-toolchain: installed ${missing[*]}"
musl
