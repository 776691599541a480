#!/usr/bin/env bash
# Create the Python virtualenv used by models/*.py and install the pinned
# requirements. Location: $LOANFLOW_PYENV, default .venv-models in the repo root.
#   bash models/setup_venv.sh
#   "${LOANFLOW_PYENV:-.venv-models}/bin/python" models/train.py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${LOANFLOW_PYENV:-$root/.venv-models}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c 'import xgboost, numpy, pandas, sklearn; print("xgboost", xgboost.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__, "scikit-learn", sklearn.__version__)'
echo "venv ready: $venv"
