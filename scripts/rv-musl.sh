#!/usr/bin/env bash
# Builds musl for riscv64 from Debian's own musl source package, for the
# RISC-V machine's musl tests, and installs the host's musl-gcc (Debian
# package musl-tools, the native reference build of the same musl).
#
#   scripts/rv-musl.sh PREFIX
#
# Debian 12 has no riscv64 binary packages (musl-dev:riscv64 cannot be
# installed), so the source of the Debian musl package is fetched with
# `apt-get source` (through a private package list: the machine's apt
# configuration is left alone), built with riscv64-linux-gnu-gcc
# (scripts/rv-toolchain.sh installs it) and installed in PREFIX, with
# musl's own wrapper PREFIX/bin/musl-gcc (the cross gcc with musl's specs
# file). Idempotent: with a finished build in PREFIX (PREFIX/.complete)
# and musl-gcc present it does nothing.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
cross=riscv64-linux-gnu-gcc

if [ -f "$prefix/.complete" ] && [ -x "$prefix/bin/musl-gcc" ] && command -v musl-gcc >/dev/null 2>&1; then
    echo "rv-musl: $prefix/bin/musl-gcc and musl-gcc are installed"
    exit 0
fi
if ! command -v "$cross" >/dev/null 2>&1; then
    echo "rv-musl: $cross is missing: run scripts/rv-toolchain.sh first" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -ne 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "rv-musl: missing ${need[*]} and apt-get is not available" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "rv-musl: missing ${need[*]}; not root and no sudo, so cannot install them" >&2
        exit 1
    fi
    echo "rv-musl: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y "${need[@]}"
fi

# The host's musl version: the riscv64 build uses the same source.
version="$(dpkg-query -W -f='${Version}' musl-dev 2>/dev/null || true)"
if [ -z "$version" ]; then
    echo "rv-musl: musl-dev (a dependency of musl-tools) is not installed" >&2
    exit 1
fi

work="$prefix/.build"
rm -rf "$work" "$prefix/.complete"
mkdir -p "$work/lists/partial" "$work/src"
# deb-src lines for the mirrors and suites the machine's own sources name.
apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 'Created-By: Packages' 2>/dev/null | sort -u |
    while read -r uri suite; do echo "deb-src $uri $suite main"; done >"$work/sources.list"
if [ ! -s "$work/sources.list" ]; then
    echo "rv-musl: cannot tell the machine's Debian mirrors from apt (no package lists: apt-get update?)" >&2
    exit 1
fi
apt_private=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::Lists="$work/lists" -o APT::Sandbox::User=root)
echo "rv-musl: fetching the source of musl $version"
apt-get "${apt_private[@]}" update >"$work/apt.log" 2>&1 || {
    cat "$work/apt.log" >&2
    exit 1
}
(cd "$work/src" && apt-get "${apt_private[@]}" source "musl=$version") >>"$work/apt.log" 2>&1 || {
    cat "$work/apt.log" >&2
    exit 1
}
srcdir="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'musl-*' | head -n1)"
if [ -z "$srcdir" ]; then
    echo "rv-musl: apt-get source left no musl directory in $work/src" >&2
    exit 1
fi

echo "rv-musl: building musl $version for riscv64 into $prefix"
(
    cd "$srcdir"
    ./configure --prefix="$prefix" --target=riscv64-linux-gnu CROSS_COMPILE=riscv64-linux-gnu- \
        --disable-shared --enable-wrapper=gcc
    make -j"$(nproc)"
    make install
) >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    exit 1
}
if [ ! -x "$prefix/bin/musl-gcc" ]; then
    echo "rv-musl: the build finished without $prefix/bin/musl-gcc" >&2
    exit 1
fi
rm -rf "$work"
echo "$version" >"$prefix/.complete"
echo "rv-musl: installed $prefix/bin/musl-gcc (musl $version for riscv64)"
