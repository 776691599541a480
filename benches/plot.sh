#!/usr/bin/env bash
# Plots of a `loanflow bench --json` file (benches/plot.py, matplotlib):
#   throughput.png   records/s vs workers, with the limits as reference lines
#   latency.png      latency p50/p99 vs offered load (% of max), with the p99 target
#
#   benches/plot.sh [BENCH_JSON] [OUT_DIR]   default: benches/results/bench.json, its directory
#
# The first run creates a venv ($LOANFLOW_PLOT_ENV, default
# ~/.cache/loanflow/plot-venv, ~200 MB) from benches/requirements-plot.txt;
# later runs reuse it (a stamp of the requirements' sha256). Needs Python 3.11
# with venv, and PyPI the first time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
json="${1:-$here/results/bench.json}"
out="${2:-$(dirname "$json")}"
venv="${LOANFLOW_PLOT_ENV:-$HOME/.cache/loanflow/plot-venv}"
python="${PYTHON:-python3}"
req="$here/requirements-plot.txt"

fail() { echo "plot: $*" >&2; exit 1; }
[[ -f "$json" ]] || fail "no $json (make it with loanflow bench --json FILE)"
stamp="$venv/.loanflow-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$python" -c 'import venv, ensurepip' 2>/dev/null \
        || fail "$python cannot create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
    if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" && -n "$(ls -A "$venv" 2>/dev/null)" ]]; then
        fail "$venv exists and is not a venv; not deleting it"
    fi
    echo "plot: installing $req into $venv (once)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || fail "python -m venv $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 \
        || fail "pip install -r $req (network? PyPI?)"
    echo "$want" >"$stamp"
fi
exec 9>&-
"$venv/bin/python" "$here/plot.py" "$json" --out-dir "$out"
