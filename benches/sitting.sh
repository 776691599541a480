#!/usr/bin/env bash
# One benchmarking sitting, start to finish: `loanflow bench` (markdown table
# and JSON), its two plots, and the "Latest sitting" section of
# benches/README.md rewritten from them. Run on a quiet machine.
#
#   benches/sitting.sh                      1,000,000 rows, -w 1,2, 3 runs each, loads 10…90 %
#   ROWS=200000 REPEAT=5 benches/sitting.sh
#   KAFKA=1 benches/sitting.sh              also Kafka → Kafka and the passthrough (starts Tansu)
#
# Environment: ROWS (1000000), WORKERS (1,2), REPEAT (3), RATES (10%,25%,50%,75%,90%),
# P99_TARGET_MS (20), KAFKA (0; 1: start a Tansu broker with scripts/broker),
# OUT (benches/results). Writes OUT/bench.md, OUT/bench.json, OUT/throughput.png,
# OUT/latency.png; needs cargo, python3 (3.11, venv) and, the first time, PyPI (matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
WORKERS="${WORKERS:-1,2}"
REPEAT="${REPEAT:-3}"
RATES="${RATES:-10%,25%,50%,75%,90%}"
P99_TARGET_MS="${P99_TARGET_MS:-20}"
KAFKA="${KAFKA:-0}"
OUT="${OUT:-benches/results}"

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loanflow"
mkdir -p "$OUT"

args=(bench --rows "$ROWS" --workers "$WORKERS" --repeat "$REPEAT" --rate "$RATES"
      --p99-target-ms "$P99_TARGET_MS" --json "$OUT/bench.json")
if [[ "$KAFKA" == 1 ]]; then
    dir=$(mktemp -d)
    addr=$(scripts/broker start --dir "$dir" --prebuilt)  # what benches/README.md measured on
    trap 'scripts/broker stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    args+=(--brokers "$addr" --partitions 4)
fi
shown="loanflow ${args[*]}"
[[ "$KAFKA" == 1 ]] && shown="${shown/--brokers $addr/--brokers \$addr}"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$bin" "${args[@]}" >"$OUT/bench.md.partial"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
mv "$OUT/bench.md.partial" "$OUT/bench.md"
benches/plot.sh "$OUT/bench.json" "$OUT" >/dev/null

# The README section, between its two markers.
export SITTING_TABLE="$OUT/bench.md" SITTING_DIR="$OUT" SITTING_COMMAND="$shown" \
    SITTING_LOAD="$load_before → $load_after" \
    SITTING_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    SITTING_DATE="$(date -u +%Y-%m-%d)" \
    SITTING_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
    SITTING_CORES="$(nproc)"
python3 - <<'PY'
import os
readme = "benches/README.md"
begin, end = "<!-- sitting:begin -->", "<!-- sitting:end -->"
e = os.environ
rel = os.path.relpath(e["SITTING_DIR"], "benches")
with open(e["SITTING_TABLE"], encoding="utf-8") as f:
    table = f.read().strip()
body = f"""{begin}
<!-- written by benches/sitting.sh: edit the script, not this section -->
Measured {e["SITTING_DATE"]} at commit {e["SITTING_COMMIT"]} on {e["SITTING_CORES"]} cores
({e["SITTING_CPU"]}), load average (1, 5, 15 min) {e["SITTING_LOAD"]}:

```sh
{e["SITTING_COMMAND"]}
```

{table}

![records/s vs workers]({rel}/throughput.png)
![latency vs offered load]({rel}/latency.png)

Raw numbers: [`{rel}/bench.json`]({rel}/bench.json).
{end}"""
with open(readme, encoding="utf-8") as f:
    text = f.read()
if begin not in text or end not in text:
    raise SystemExit(f"{readme}: no {begin} … {end} section to rewrite")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(readme, "w", encoding="utf-8") as f:
    f.write(head + body + tail)
print(f"sitting: {readme} updated; {e['SITTING_DIR']}/bench.md, bench.json, throughput.png, latency.png")
PY
