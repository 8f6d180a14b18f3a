#!/usr/bin/env bash
# Run every test of the workspace: the release-mode test suites (unit,
# integration, model-based, stress, CLI), the suites that reach the engine's
# internal assertions again with them on (`--profile checked`), the loom
# models of the lock-free protocols, the unit and loom tests again with
# `--features rmap-rwsem`, the examples' own checks, and the unit tests
# under Miri.
#
# Budgets (kept so the whole run fits CI's 25 minutes on 2 cores):
#   PROPTEST_CASES   model-based cases (default 2000, set in the tests)
#   LOOM_MAX_PREEMPTIONS  loom's preemption bound (default 3)
#   SOFTMM_SKIP_MIRI=1    skip the Miri step (it is also skipped, with a
#                         message, when Miri cannot be installed)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --release --workspace"
cargo test --release --workspace

echo "== debug assertions (--profile checked: release with debug_assert! and overflow checks)"
CARGO_TARGET_DIR=target/checked cargo test --profile checked -p softmm --lib \
    --test model --test chaos --test shared_tables --test borrowed --test mremap --test snapshot \
    --test files --test madvise
CARGO_TARGET_DIR=target/checked cargo test --profile checked -p softmm-rv --test programs

echo "== loom models (--cfg loom)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
    cargo test --release -p softmm --lib loom

echo "== rmap-rwsem (--features rmap-rwsem): unit tests and loom models"
# The other lock kind of the reverse map, built nowhere else; its own target
# directory (as scripts/bench-rmap.sh) so the default build stays cached.
CARGO_TARGET_DIR=target/rmap-rwsem cargo test --release -p softmm --features rmap-rwsem --lib
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}" \
    cargo test --release -p softmm --features rmap-rwsem --lib loom

echo "== examples (each one's main; a failed check exits non-zero)"
for ex in crates/softmm/examples/*.rs; do
    name=$(basename "$ex" .rs)
    echo "-- $name"
    cargo run --quiet --release -p softmm --example "$name"
done

echo "== Miri (unit tests)"
if [ "${SOFTMM_SKIP_MIRI:-0}" = 1 ]; then
    echo "skipped: SOFTMM_SKIP_MIRI=1"
elif ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "skipped: no nightly toolchain on this machine (Miri needs one)"
elif ! rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1; then
    echo "skipped: 'rustup component add miri --toolchain nightly' failed (no network to the Rust dist server?)"
else
    # Miri runs one test at a time: build once, then run two halves side
    # by side (one per core), each logging to its own file, shown after.
    # The futex tests take about as long as all the others together.
    cargo +nightly miri test -p softmm --lib --no-run
    logs=$(mktemp -d)
    half=(futex::)
    skip=()
    for h in "${half[@]}"; do skip+=(--skip "$h"); done
    cargo +nightly miri test -p softmm --lib -- "${half[@]}" >"$logs/a" 2>&1 &
    a=$!
    cargo +nightly miri test -p softmm --lib -- "${skip[@]}" >"$logs/b" 2>&1 &
    b=$!
    status=0
    wait "$a" || status=1
    wait "$b" || status=1
    cat "$logs/a" "$logs/b"
    rm -rf "$logs"
    if [ "$status" -ne 0 ]; then
        echo "Miri: a half failed (its output is above)"
        exit 1
    fi
fi
