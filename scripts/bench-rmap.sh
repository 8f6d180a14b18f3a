#!/usr/bin/env bash
# Compare the two anon_vma locks under fork + exit churn: run
# `softmm bench rmap --json` built with the default spinning lock and with
# `--features rmap-rwsem`, and print both results side by side.
#
# Extra arguments go to both runs (e.g. `--reps 3 --iterations 200`).
# The rwsem build uses its own target directory (target/rmap-rwsem) so the
# two builds do not keep invalidating each other. Needs jq or python3 to
# read the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    # The JSON object is the last line of stdout; the human-readable report
    # above it goes to stderr so it stays visible.
    local out
    out=$("$@" bench rmap --json "${EXTRA[@]}")
    printf '%s\n' "$out" | sed '$d' >&2
    printf '%s\n' "$out" | tail -n 1
}

EXTRA=("$@")

echo "== spin (default build)" >&2
spin=$(run cargo run --quiet --release -p softmm-cli --)
echo >&2
echo "== rwsem (--features rmap-rwsem)" >&2
rwsem=$(CARGO_TARGET_DIR=target/rmap-rwsem run cargo run --quiet --release -p softmm-cli --features rmap-rwsem --)
echo >&2

# field JSON KEY: one top-level field of a JSON object.
if command -v jq >/dev/null 2>&1; then
    field() { jq -r ".$2" <<<"$1"; }
elif command -v python3 >/dev/null 2>&1; then
    field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
else
    echo "bench-rmap.sh: need jq or python3 to read the results; raw JSON:" >&2
    printf '%s\n%s\n' "$spin" "$rwsem"
    exit 1
fi

# ratio A B: B / A to two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }'; }
rate() { awk -v x="$1" 'BEGIN { printf "%.0f/s", x }'; }

printf '%s, %s forks per thread per run, median of %s runs\n' \
    "$(field "$spin" size_bytes | awk '{ printf "%d MiB process", $1 / 1048576 }')" \
    "$(field "$spin" iterations)" "$(field "$spin" reps)"
printf '%-36s %14s %14s %12s\n' "fork + exit pairs per second" "$(field "$spin" lock)" "$(field "$rwsem" lock)" "rwsem/spin"
for row in "fork_exit_per_s:fork + exit, shared tables" \
    "fork_exit_per_s_copy:fork + exit, copied tables" \
    "fork_write_exit_per_s:fork + write 1% + exit, shared" \
    "fork_write_exit_per_s_copy:fork + write 1% + exit, copied"; do
    key=${row%%:*}
    name=${row#*:}
    a=$(field "$spin" "$key")
    b=$(field "$rwsem" "$key")
    printf '%-36s %14s %14s %12s\n' "$name" "$(rate "$a")" "$(rate "$b")" "$(ratio "$a" "$b")"
done
