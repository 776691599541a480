#!/usr/bin/env bash
# loanflow next to its peers (Quix Streams, Bytewax) on the same pipeline, in
# one sitting: same generated applications, same spec'd cleaning, same XGBoost
# model file, same input topic, same broker. Each writes its own output topic;
# the outputs are then compared id by id (scores within 1e-6, same counts).
#
#   benches/peers/compare.sh [ROWS] [BIG]    timing run (default 20000 rows): markdown table;
#                                            with BIG (e.g. 1000000), loanflow also runs alone on
#                                            BIG rows (at ROWS its rate is mostly start-up)
#   benches/peers/compare.sh --check [ROWS]  correctness only (default 2000 rows);
#                                            exit 1 on any mismatch (what a test calls)
#
# Needs: cargo, scripts/broker (Tansu), Python 3.11 + PyPI for benches/peers/setup.sh
# (the venv is $LOANFLOW_PEERS_ENV, default ~/.cache/loanflow/peers-venv).
# Everything runs one after the other (2-core machine): loanflow -w 1, the
# peers with 1 worker / 1 XGBoost thread.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benches/peers

check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
ROWS="${1:-$([[ $check == 1 ]] && echo 2000 || echo 20000)}"
BIG="${2:-0}"
[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -gt 0 && "$BIG" =~ ^[0-9]+$ ]] \
    || { echo "usage: $0 [--check] [ROWS] [BIG]" >&2; exit 2; }

log() { echo "peers: $*" >&2; }
# records/s from a summary line ("… — N records/s")
rate() { grep -oE '[0-9]+ records/s' | head -1 | cut -d' ' -f1; }

py="$(bash "$here/setup.sh" | tail -1)"
[[ -x "$py" ]] || { bash "$here/setup.sh"; exit 1; }
cargo build --release --quiet
bin=target/release/loanflow

mkdir -p out/peers
stream="out/peers/stream-$ROWS.csv"
[[ -f "$stream" ]] || "$bin" generate --rows "$ROWS" --seed 7 --output "$stream" --quiet >/dev/null 2>&1

dir=$(mktemp -d)
addr=$(scripts/broker start --dir "$dir")
trap 'scripts/broker stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
log "broker $addr; $ROWS applications from $stream"
"$bin" ingest --brokers "$addr" --topic peers-in --partitions 4 --input "$stream" -q 2>&1 \
    | sed 's/^/  /' >&2

run_id=$$
logs="out/peers/logs"
mkdir -p "$logs"

log "loanflow"
"$bin" run -w 1 --brokers "$addr" --input-topic peers-in --output-topic out-loanflow \
    --partitions 4 --group "peers-loanflow-$run_id" --until-caught-up -q >"$logs/loanflow.txt" 2>&1 \
    || { cat "$logs/loanflow.txt" >&2; exit 1; }
r_loanflow=$(rate <"$logs/loanflow.txt")
head -1 "$logs/loanflow.txt" | sed 's/^/  /' >&2

log "Quix Streams"
(cd "$here" && "$py" -W ignore quix_pipeline.py --brokers "$addr" --input-topic peers-in \
    --output-topic out-quix --count "$ROWS" --group "peers-quix-$run_id") >"$logs/quix.txt" 2>&1 \
    || { cat "$logs/quix.txt" >&2; exit 1; }
r_quix=$(grep '^quix:' "$logs/quix.txt" | rate)
grep '^quix:' "$logs/quix.txt" | sed 's/^/  /' >&2

log "Bytewax"
(cd "$here" && "$py" -W ignore -m bytewax.run \
    "bytewax_pipeline:get_flow('$addr', 'peers-in', 'out-bytewax', $ROWS)") >"$logs/bytewax.txt" 2>&1 \
    || { cat "$logs/bytewax.txt" >&2; exit 1; }
r_bytewax=$(grep '^bytewax:' "$logs/bytewax.txt" | rate)
grep '^bytewax:' "$logs/bytewax.txt" | sed 's/^/  /' >&2

log "comparing outputs with loanflow's"
status=0
(cd "$here" && "$py" -W ignore compare_outputs.py --brokers "$addr" --rows "$ROWS" \
    --csv "../../$stream" out-loanflow out-quix out-bytewax) || status=1

if [[ $check == 1 ]]; then
    exit $status
fi
r_big=""
if [[ "$BIG" -gt 0 ]]; then
    big="out/peers/stream-$BIG.csv"
    [[ -f "$big" ]] || "$bin" generate --rows "$BIG" --seed 7 --output "$big" --quiet >/dev/null 2>&1
    log "loanflow alone on $BIG applications"
    "$bin" ingest --brokers "$addr" --topic peers-in-big --partitions 4 --input "$big" -q 2>&1 \
        | sed 's/^/  /' >&2
    "$bin" run -w 1 --brokers "$addr" --input-topic peers-in-big --output-topic out-loanflow-big \
        --partitions 4 --group "peers-loanflow-big-$run_id" --until-caught-up -q \
        >"$logs/loanflow-big.txt" 2>&1 || { cat "$logs/loanflow-big.txt" >&2; exit 1; }
    r_big=$(rate <"$logs/loanflow-big.txt")
    head -1 "$logs/loanflow-big.txt" | sed 's/^/  /' >&2
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
echo
echo "$ROWS applications, Kafka (Tansu, 4 partitions) → clean → XGBoost → Kafka, 1 worker each:"
echo
echo "| tool | records/s | loanflow ÷ tool |"
echo "|---|---:|---:|"
echo "| loanflow (Rust, timely) | $r_loanflow | 1.0 |"
echo "| Quix Streams $("$py" -c 'from importlib.metadata import version; print(version("quixstreams"))') | $r_quix | $(ratio "$r_loanflow" "$r_quix") |"
echo "| Bytewax $("$py" -c 'from importlib.metadata import version; print(version("bytewax"))') | $r_bytewax | $(ratio "$r_loanflow" "$r_bytewax") |"
if [[ -n "$r_big" ]]; then
    echo
    echo "loanflow alone on $BIG applications (same broker, same settings): $r_big records/s"
    echo "(÷ Quix Streams: $(ratio "$r_big" "$r_quix"), ÷ Bytewax: $(ratio "$r_big" "$r_bytewax"))"
fi
exit $status
