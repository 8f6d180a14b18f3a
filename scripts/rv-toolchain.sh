#!/usr/bin/env bash
# Installs the riscv64 cross toolchain (gcc, static glibc) and qemu-user, the
# second-opinion oracle, when riscv64-linux-gnu-gcc is missing. Idempotent:
# a second run with the compiler present does nothing.
set -euo pipefail

if command -v riscv64-linux-gnu-gcc >/dev/null 2>&1; then
    echo "rv-toolchain: riscv64-linux-gnu-gcc is installed ($(command -v riscv64-linux-gnu-gcc))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "rv-toolchain: riscv64-linux-gnu-gcc is missing and apt-get is not available;" >&2
    echo "rv-toolchain: install gcc-riscv64-linux-gnu and libc6-dev-riscv64-cross by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "rv-toolchain: not root and no sudo: cannot install the cross toolchain" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user

if ! command -v riscv64-linux-gnu-gcc >/dev/null 2>&1; then
    echo "rv-toolchain: apt-get finished but riscv64-linux-gnu-gcc is still missing" >&2
    exit 1
fi
echo "rv-toolchain: installed $(command -v riscv64-linux-gnu-gcc)"
