#!/usr/bin/env bash
# Create the virtualenv for the peers (Quix Streams, Bytewax) and install the
# exact pins of benches/peers/requirements.txt. Idempotent: a venv installed
# from the same requirements.txt (its sha256 is stamped in the venv) is left
# alone; otherwise it is rebuilt from scratch.
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

fail() { echo "peers: setup failed: $*" >&2; exit 1; }
mkdir -p "$(dirname "$venv")"
# One installer at a time (a test and a compare.sh may start together).
exec 9>"$venv.lock"
flock 9
stamp="$venv/.loanflow-requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    # New pins, or an install that never finished: start from an empty venv,
    # so nothing of an older set (e.g. the `xgboost` wheel `xgboost-cpu`
    # replaced) is left behind.
    echo "peers: installing $here/requirements.txt into $venv (once; ~0.5 GB)" >&2
    "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
        || fail "$python is missing or older than 3.11 (set PYTHON to a Python 3.11)"
    "$python" -c 'import venv, ensurepip' 2>/dev/null \
        || fail "$python cannot create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
    if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" && -n "$(ls -A "$venv" 2>/dev/null)" ]]; then
        fail "$venv exists and is not a venv; not deleting it"
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || fail "python -m venv $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt" >&2 || fail "pip install -r $here/requirements.txt (network? PyPI?)"
    echo "$want" >"$stamp"
fi
"$venv/bin/python" - >&2 <<'PY'
from importlib.metadata import version
import sys
import xgboost
print("python", sys.version.split()[0], f"xgboost {xgboost.__version__}",
      *(f"{p} {version(p)}" for p in
        ("quixstreams", "bytewax", "confluent-kafka", "numpy", "pandas")))
PY
echo "$venv/bin/python"
