#!/usr/bin/env bash
# Creates .venv with Rasa 3.6.21 on Python 3.11 (the recipe in README "Install").
# A second run is a no-op when requirements/ and this script are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.siyu-install-stamp"
HASH="$(cat requirements/*.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

if ! command -v "$PY" >/dev/null; then
  echo "[setup] $PY not found: Siyu needs CPython 3.11" >&2
  exit 1
fi

echo "[setup] installing into .venv (first run takes ~10 minutes: TensorFlow is ~600 MB)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=23.2,<25"
# 1. Rasa's dependency list with its markers evaluated as if Python were 3.10.
"${PIP[@]}" install -q --prefer-binary -r requirements/rasa.txt -c requirements/constraints.txt
# 2. Rasa itself declares Python <3.11: install it without its (already satisfied) dependency list.
"${PIP[@]}" install -q --no-deps --ignore-requires-python rasa==3.6.21 rasa-sdk==3.6.2
# 3. The product's own packages, under the same ceilings.
"${PIP[@]}" install -q --prefer-binary -r requirements/project.txt -c requirements/constraints.txt
echo "$HASH" > "$STAMP"
echo "[setup] .venv ready"
