#!/usr/bin/env bash
# The backlog of a Kafka → Kafka run while it runs: generates N resampled
# applications, ingests them into a 4-partition topic on a fresh loopback
# Tansu, runs `loanflow run -w W --until-caught-up --http …` and samples,
# every half second, the process's RSS and the gap between the records the
# source read and those the sink wrote (its /metrics). Prints the peak RSS,
# the largest gap and the rate. A window run whose source read some
# partitions ahead of the others would show the gap growing with the
# stream (benches/README.md, "Memory against stream length"); it stays
# within a few batches.
#
#   benches/backlog.sh 4000000 2                                  # N W
#   DATAFLOW=dataflows/lending_club_velocity.toml benches/backlog.sh 4000000 1
#
# GAP_SCALE=F is passed to `generate --gap-scale` (default 0.5, as rss.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
workers=${2:-2}
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/loanflow"
dataflow=()
if [ -n "${DATAFLOW:-}" ]; then
    [ -f "$DATAFLOW" ] || { echo "backlog.sh: DATAFLOW=$DATAFLOW: no such dataflow spec" >&2; exit 2; }
    dataflow=(--dataflow "$DATAFLOW")
fi
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; scripts/broker stop --dir "$dir/broker" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
pid=
addr=$(scripts/broker start --dir "$dir/broker" --prebuilt)
"$bin" generate --rows "$n" --seed 9 --gap-scale "${GAP_SCALE:-0.5}" --output "$dir/stream.csv" -q 2>/dev/null
"$bin" ingest --brokers "$addr" --topic loans --partitions 4 --input "$dir/stream.csv" -q >/dev/null 2>&1
rm -f "$dir/stream.csv"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s.%N)
"$bin" run "${dataflow[@]}" -w "$workers" --brokers "$addr" --input-topic loans --output-topic scored \
    --partitions 4 --until-caught-up -q --http "127.0.0.1:$port" >/dev/null 2>"$dir/run.log" &
pid=$!
peak=0
gap=0
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak=$rss
    metrics=$(curl -s "127.0.0.1:$port/metrics" 2>/dev/null || true)
    read_n=$(echo "$metrics" | awk '/^loanflow_records_out_total\{stage="source"/ {print $2}')
    wrote=$(echo "$metrics" | awk '/^loanflow_records_out_total\{stage="sink"/ {print $2}')
    if [ -n "$read_n" ] && [ -n "$wrote" ]; then
        now=$((read_n - wrote))
        [ "$now" -gt "$gap" ] && gap=$now
    fi
    sleep 0.5
done
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || { echo "backlog.sh: the run failed:" >&2; cat "$dir/run.log" >&2; exit 1; }
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "| records | -w | peak RSS (MB) | largest gap (records) | run time (s) | records/s |"
echo "|---:|---:|---:|---:|---:|---:|"
printf '| %s | %s | %d | %s | %.1f | %.0f |\n' "$n" "$workers" $((peak / 1024)) "$gap" "$secs" \
    "$(echo "$n / $secs" | bc -l)"
