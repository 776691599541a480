#!/usr/bin/env bash
# Peak memory of a Kafka → Kafka run against stream length: generates N
# resampled applications, ingests them into a 4-partition topic on a fresh
# loopback Tansu, runs `loanflow run -w 2 --until-caught-up` under
# /usr/bin/time -v and prints its peak RSS. Run it for several N to see that
# the pipeline's memory does not grow with the stream (the source runs at most
# 4 epochs ahead of the sinks).
#
# Every stream is generated with --gap-scale 0.5 (GAP_SCALE=F to change it):
# at the real arrival rate 10 M applications would run past 2262, the last
# time a nanosecond clock holds, and the same density at every N keeps the
# window features' state the same size.
#
# DATAFLOW=SPEC runs another dataflow (default: the embedded stateless one),
# e.g. the window features' state kept over event time:
#
#   benches/rss.sh 1000000 10000000      # N…; needs ~1 GB of broker RAM per 1M records
#   DATAFLOW=dataflows/lending_club_velocity.toml benches/rss.sh 1000000 10000000
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/loanflow"
dataflow=()
if [ -n "${DATAFLOW:-}" ]; then
    [ -f "$DATAFLOW" ] || { echo "rss.sh: DATAFLOW=$DATAFLOW: no such dataflow spec" >&2; exit 2; }
    dataflow=(--dataflow "$DATAFLOW")
fi
dir=$(mktemp -d)
trap 'scripts/broker stop --dir "$dir/broker" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
echo "| records | run time (s) | records/s | peak RSS of loanflow run (MB) |"
echo "|---:|---:|---:|---:|"
for n in "${@:-1000000}"; do
    scripts/broker stop --dir "$dir/broker" >/dev/null 2>&1 || true
    rm -rf "$dir/broker"
    addr=$(scripts/broker start --dir "$dir/broker" --prebuilt)  # what benches/README.md measured on
    "$bin" generate --rows "$n" --seed 9 --gap-scale "${GAP_SCALE:-0.5}" --output "$dir/stream.csv" -q 2>/dev/null
    "$bin" ingest --brokers "$addr" --topic loans --partitions 4 --input "$dir/stream.csv" -q >/dev/null 2>&1
    rm -f "$dir/stream.csv"
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$dir/time.txt" "$bin" run "${dataflow[@]}" -w 2 --brokers "$addr" --input-topic loans \
        --output-topic scored --partitions 4 --until-caught-up -q 2>/dev/null
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time.txt")
    printf '| %s | %.1f | %.0f | %d |\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)" $((rss_kb / 1024))
done
