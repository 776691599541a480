#!/usr/bin/env bash
# The tutorial's three-service chain next to the one dataflow, in one
# sitting, on one broker: Kafka → Kafka on ROWS generated (resampled)
# applications in a 4-partition topic.
#
#   one dataflow   run -w W --input-topic loans --output-topic one.scored
#   chain          run --stages clean   -w W --input-topic loans  --cleaned-topic c.cleaned
#                  run --stages predict -w W --cleaned-topic c.cleaned --output-topic c.scored
#
# Each run reads to the end (--until-caught-up) with the whole machine; the
# chain's records/s is ROWS over the two stages' times added (what a
# deployment of the two services costs in machine time per record). Prints
# one table (markdown).
#
#   benches/chain.sh [ROWS] [REPEATS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
REPEATS="${2:-3}"
W="${3:-2}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loanflow"
mkdir -p out/bench
stream="out/bench/stream-$ROWS.csv"
[[ -f "$stream" ]] || "$bin" generate --rows "$ROWS" --seed 7 --output "$stream" --quiet

# seconds from a loanflow summary line ("N records in S s — …")
secs() { grep -oE 'records in [0-9.]+ s' | head -1 | awk '{print $3}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { awk -v n="$ROWS" -v s="$1" 'BEGIN {printf "%.0f", n / s}'; }

dir=$(mktemp -d)
addr=$(scripts/broker start --dir "$dir")
trap 'scripts/broker stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$bin" ingest --brokers "$addr" --topic loans --partitions 4 --input "$stream" --quiet 2>&1 | sed 's/^/  ingest: /' >&2

one=() clean=() predict=() chain=() pass=()
for r in $(seq "$REPEATS"); do
    t=$("$bin" run -w "$W" --brokers "$addr" --input-topic loans --output-topic "one$r.scored" \
        --until-caught-up --group "one$r" --quiet 2>&1 | secs)
    one+=("$(rate "$t")")
    a=$("$bin" run --stages clean -w "$W" --brokers "$addr" --input-topic loans \
        --cleaned-topic "c$r.cleaned" --until-caught-up --group "c$r" --quiet 2>&1 | secs)
    b=$("$bin" run --stages predict -w "$W" --brokers "$addr" --cleaned-topic "c$r.cleaned" \
        --output-topic "c$r.scored" --until-caught-up --group "p$r" --quiet 2>&1 | secs)
    # The broker's own limit for messages of a cleaned topic's size: consume → produce.
    p=$("$bin" passthrough -w "$W" --brokers "$addr" --input-topic "c$r.cleaned" \
        --output-topic "copy$r" 2>&1 | grep -oE 'in [0-9.]+ s' | head -1 | awk '{print $2}')
    clean+=("$(rate "$a")") predict+=("$(rate "$b")") pass+=("$(rate "$p")")
    chain+=("$(rate "$(awk -v a="$a" -v b="$b" 'BEGIN {print a + b}')")")
    echo "  repeat $r: one $t s, clean $a s, predict $b s, passthrough of the cleaned topic $p s" >&2
done

echo "| $ROWS records, 4 partitions, -w $W | records/s (median of $REPEATS) | all runs |"
echo "|---|---:|---|"
echo "| one dataflow (ingest → clean → predict) | $(printf '%s\n' "${one[@]}" | median) | ${one[*]} |"
echo "| clean stage alone (\`--stages clean\`) | $(printf '%s\n' "${clean[@]}" | median) | ${clean[*]} |"
echo "| predict stage alone (\`--stages predict\`) | $(printf '%s\n' "${predict[@]}" | median) | ${predict[*]} |"
echo "| three-service chain (clean + predict, times added) | $(printf '%s\n' "${chain[@]}" | median) | ${chain[*]} |"
echo "| broker limit: passthrough of the cleaned topic (consume → produce) | $(printf '%s\n' "${pass[@]}" | median) | ${pass[*]} |"
