#!/usr/bin/env bash
# Compare two commands on a noisy machine: run them by turns, ROUNDS times,
# the order swapped every round, and judge each round on its own (B's wall
# and CPU time over A's, in the same minute). A shared 2-core machine moves
# by ±30 % between minutes; within a round both commands meet the same load,
# so the per-round ratio is steadier than either command's own numbers.
#
#   benches/paired.sh ROUNDS "COMMAND A" "COMMAND B"
#
# Example (two builds, the velocity dataflow at -w 2):
#   benches/paired.sh 16 \
#     "/tmp/before run --dataflow dataflows/lending_club_velocity.toml -i /tmp/g1m.csv -o /tmp/a.jsonl -w 2 -q" \
#     "/tmp/after run --dataflow dataflows/lending_club_velocity.toml -i /tmp/g1m.csv -o /tmp/b.jsonl -w 2 -q"
#
# Prints each command's median wall and CPU (user + sys) seconds, and the
# median B/A ratios with how many rounds B won. Needs GNU time
# (/usr/bin/time) and python3. A command that fails stops the comparison.
set -euo pipefail

if [ $# -ne 3 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: benches/paired.sh ROUNDS \"COMMAND A\" \"COMMAND B\"" >&2
    exit 2
fi
rounds=$1
commands=("$2" "$3")
[ -x /usr/bin/time ] || { echo "benches/paired.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One line per round: A's wall, user and sys seconds, then B's.
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order="0 1"; else order="1 0"; fi
    for i in $order; do
        if ! /usr/bin/time -o "$work/t$i" -f "%e %U %S" bash -c "${commands[$i]}" >"$work/out$i" 2>&1; then
            echo "benches/paired.sh: command $([ "$i" = 0 ] && echo A || echo B) failed in round $round:" >&2
            tail -5 "$work/out$i" >&2
            exit 1
        fi
    done
    echo "$(cat "$work/t0") $(cat "$work/t1")" >>"$work/rounds"
    echo "round $round/$rounds: A $(cut -d' ' -f1 "$work/t0") s, B $(cut -d' ' -f1 "$work/t1") s" >&2
done

python3 - "$work/rounds" <<'EOF'
import statistics as st
import sys

# (wall A, CPU A, wall B, CPU B), CPU = user + sys.
rows = [
    (v[0], v[1] + v[2], v[3], v[4] + v[5])
    for v in (list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip())
]
wall = [b / a for a, _, b, _ in rows]
cpu = [bc / ac if ac > 0 else float("nan") for _, ac, _, bc in rows]
n = len(rows)
print(f"A: wall median {st.median(r[0] for r in rows):.3f} s, CPU median {st.median(r[1] for r in rows):.3f} s")
print(f"B: wall median {st.median(r[2] for r in rows):.3f} s, CPU median {st.median(r[3] for r in rows):.3f} s")
print(f"B/A wall: median {st.median(wall):.3f} (B faster in {sum(x < 1 for x in wall)} of {n} rounds)")
print(f"B/A CPU:  median {st.median(cpu):.3f} (B less CPU in {sum(x < 1 for x in cpu)} of {n} rounds)")
EOF
