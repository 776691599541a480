#!/usr/bin/env bash
# End-to-end throughput in one sitting: file → file and Kafka → Kafka on
# 1,000,000 generated (resampled) applications, next to Kafka's raw
# consume → produce passthrough on the same broker with the same client
# settings. Prints one table (markdown). Run on a quiet machine:
#
#   benches/e2e.sh [ROWS] [REPEATS]
#
# Needs: cargo (builds the release binary), scripts/broker (Tansu).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
REPEATS="${2:-3}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loanflow"
mkdir -p out/bench
stream="out/bench/stream-$ROWS.csv"
[[ -f "$stream" ]] || "$bin" generate --rows "$ROWS" --seed 7 --output "$stream" --quiet

# records/s from a loanflow summary line ("… — N records/s" or "messages/s")
rate() { grep -oE '[0-9]+ (records|messages)/s' | head -1 | cut -d' ' -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| configuration | records/s (median of $REPEATS) | all runs |"
echo "|---|---:|---|"
for w in 1 2; do
    runs=()
    for _ in $(seq "$REPEATS"); do
        runs+=("$("$bin" run -w "$w" --input "$stream" --output out/bench/out.jsonl --quiet 2>&1 | rate)")
    done
    echo "| file → file, -w $w | $(printf '%s\n' "${runs[@]}" | median) | ${runs[*]} |"
done

dir=$(mktemp -d)
addr=$(scripts/broker start --dir "$dir" --prebuilt)  # what benches/README.md measured on
trap 'scripts/broker stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$bin" ingest --brokers "$addr" --topic bench --partitions 4 --input "$stream" --quiet 2>&1 | sed 's/^/  ingest: /' >&2
for w in 1 2; do
    pass=() pipe=()
    for r in $(seq "$REPEATS"); do
        pass+=("$("$bin" passthrough --brokers "$addr" --input-topic bench --output-topic "copy-$w-$r" \
            --partitions 4 -w "$w" 2>&1 | rate)")
        pipe+=("$("$bin" run -w "$w" --brokers "$addr" --input-topic bench --output-topic "scored-$w-$r" \
            --partitions 4 --group "bench-$w-$r" --until-caught-up --quiet 2>&1 | rate)")
    done
    p=$(printf '%s\n' "${pass[@]}" | median)
    q=$(printf '%s\n' "${pipe[@]}" | median)
    echo "| Kafka passthrough (consume → produce), $w thread$([[ $w == 1 ]] || echo s) | $p | ${pass[*]} |"
    echo "| Kafka → Kafka pipeline, -w $w | $q ($(awk -v a="$q" -v b="$p" 'BEGIN {printf "%.0f", 100*a/b}') % of passthrough) | ${pipe[*]} |"
done
