#!/usr/bin/env bash
# Create the virtualenv for the peers (Quix Streams, Bytewax) and install the
# exact pins of benches/peers/requirements.txt. Idempotent: a venv that already
# has every pin is left alone (pip has nothing to do).
#
#   bash benches/peers/setup.sh          # prints the venv's python on the last line
#
# Environment:
#   LOANFLOW_PEERS_ENV   venv directory (default $HOME/.cache/loanflow/peers-venv)
#   PYTHON               interpreter to create it with (default python3; 3.11)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LOANFLOW_PEERS_ENV:-$HOME/.cache/loanflow/peers-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
stamp="$venv/.loanflow-requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    echo "$want" >"$stamp"
fi
"$venv/bin/python" - >&2 <<'PY'
from importlib.metadata import version
import sys
print("python", sys.version.split()[0], *(f"{p} {version(p)}" for p in
      ("quixstreams", "bytewax", "xgboost", "confluent-kafka", "numpy", "pandas")))
PY
echo "$venv/bin/python"
