#!/usr/bin/env bash
# loanflow next to its peers (Quix Streams, Bytewax) on the same pipeline, in
# one sitting: same generated applications, same spec'd cleaning, same XGBoost
# model file, same input topic, same broker. Each writes its own output topic;
# the outputs are then compared id by id (scores within 1e-6, same counts).
#
#   benches/peers/compare.sh [ROWS] [BIG]    timing run (default 20000 rows): markdown table;
#                                            with BIG (e.g. 1000000), loanflow also runs alone on
#                                            BIG rows (at ROWS its rate is mostly start-up)
#   benches/peers/compare.sh --check [ROWS]  correctness only (default 2000 rows); every score
#                                            must be bit-identical (float32) to loanflow's;
#                                            exit 1 on any mismatch (what tests/peers.rs calls)
#   --brokers HOST:PORT                      use this broker instead of starting a Tansu
#
# Needs: cargo, scripts/broker (Tansu), Python 3.11 + PyPI for benches/peers/setup.sh
# (the venv is $LOANFLOW_PEERS_ENV, default ~/.cache/loanflow/peers-venv).
# Environment (for tests): LOANFLOW_BIN (a built loanflow: no cargo build),
# LOANFLOW_PEERS_OUT (streams and logs, default out/peers), LOANFLOW_PEERS_TAG
# (suffix of every topic and group name, default the shell's pid).
# Everything runs one after the other (2-core machine): loanflow -w 1, the
# peers with 1 worker / 1 XGBoost thread.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benches/peers

usage() { echo "usage: $0 [--check] [--brokers HOST:PORT] [ROWS] [BIG]" >&2; exit 2; }
check=0
brokers=""
positional=()
while (($#)); do
    case "$1" in
        --check) check=1 ;;
        --brokers) [[ $# -ge 2 ]] || usage; brokers="$2"; shift ;;
        -*) usage ;;
        *) positional+=("$1") ;;
    esac
    shift
done
ROWS="${positional[0]:-$([[ $check == 1 ]] && echo 2000 || echo 20000)}"
BIG="${positional[1]:-0}"
[[ ${#positional[@]} -le 2 && "$ROWS" =~ ^[0-9]+$ && "$ROWS" -gt 0 && "$BIG" =~ ^[0-9]+$ ]] || usage

log() { echo "peers: $*" >&2; }
# records/s from a summary line ("… — N records/s")
rate() { grep -oE '[0-9]+ records/s' | head -1 | cut -d' ' -f1; }

py="$(bash "$here/setup.sh" | tail -1)"
[[ -x "$py" ]] || { echo "peers: benches/peers/setup.sh gave no python" >&2; exit 1; }
if [[ -n "${LOANFLOW_BIN:-}" ]]; then
    bin="$LOANFLOW_BIN"
else
    cargo build --release --quiet
    bin=target/release/loanflow
fi

out="${LOANFLOW_PEERS_OUT:-out/peers}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stream="$out/stream-$ROWS.csv"
if [[ ! -f "$stream" ]]; then
    "$bin" generate --rows "$ROWS" --seed 7 --output "$out/stream-$ROWS.partial.csv" --quiet >/dev/null 2>&1
    mv "$out/stream-$ROWS.partial.csv" "$stream"
fi

run_id="${LOANFLOW_PEERS_TAG:-$$}"
if [[ -n "$brokers" ]]; then
    addr="$brokers"
else
    dir=$(mktemp -d)
    addr=$(scripts/broker start --dir "$dir" --prebuilt)  # what benches/README.md measured on
    trap 'scripts/broker stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
fi
input="peers-in-$run_id"
log "broker $addr; $ROWS applications from $stream into $input"
"$bin" ingest --brokers "$addr" --topic "$input" --partitions 4 --input "$stream" -q 2>&1 \
    | sed 's/^/  /' >&2

logs="$out/logs"
mkdir -p "$logs"

log "loanflow"
"$bin" run -w 1 --brokers "$addr" --input-topic "$input" --output-topic "out-loanflow-$run_id" \
    --partitions 4 --group "peers-loanflow-$run_id" --until-caught-up -q >"$logs/loanflow.txt" 2>&1 \
    || { cat "$logs/loanflow.txt" >&2; exit 1; }
r_loanflow=$(rate <"$logs/loanflow.txt")
head -1 "$logs/loanflow.txt" | sed 's/^/  /' >&2

log "Quix Streams"
(cd "$here" && "$py" -W ignore quix_pipeline.py --brokers "$addr" --input-topic "$input" \
    --output-topic "out-quix-$run_id" --count "$ROWS" --group "peers-quix-$run_id") >"$logs/quix.txt" 2>&1 \
    || { cat "$logs/quix.txt" >&2; exit 1; }
r_quix=$(grep '^quix:' "$logs/quix.txt" | rate)
grep '^quix:' "$logs/quix.txt" | sed 's/^/  /' >&2

log "Bytewax"
(cd "$here" && "$py" -W ignore -m bytewax.run \
    "bytewax_pipeline:get_flow('$addr', '$input', 'out-bytewax-$run_id', $ROWS)") >"$logs/bytewax.txt" 2>&1 \
    || { cat "$logs/bytewax.txt" >&2; exit 1; }
r_bytewax=$(grep '^bytewax:' "$logs/bytewax.txt" | rate)
grep '^bytewax:' "$logs/bytewax.txt" | sed 's/^/  /' >&2

log "comparing outputs with loanflow's"
status=0
exact=()
[[ $check == 1 ]] && exact=(--exact)
(cd "$here" && "$py" -W ignore compare_outputs.py --brokers "$addr" --rows "$ROWS" "${exact[@]}" \
    --csv "$stream" "out-loanflow-$run_id" "out-quix-$run_id" "out-bytewax-$run_id") || status=1

if [[ $check == 1 ]]; then
    exit $status
fi
r_big=""
if [[ "$BIG" -gt 0 ]]; then
    big="$out/stream-$BIG.csv"
    if [[ ! -f "$big" ]]; then
        "$bin" generate --rows "$BIG" --seed 7 --output "$out/stream-$BIG.partial.csv" --quiet >/dev/null 2>&1
        mv "$out/stream-$BIG.partial.csv" "$big"
    fi
    log "loanflow alone on $BIG applications"
    "$bin" ingest --brokers "$addr" --topic "peers-in-big-$run_id" --partitions 4 --input "$big" -q 2>&1 \
        | sed 's/^/  /' >&2
    "$bin" run -w 1 --brokers "$addr" --input-topic "peers-in-big-$run_id" --output-topic "out-loanflow-big-$run_id" \
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
