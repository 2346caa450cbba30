#!/usr/bin/env bash
# The whole test suite: data validation, ruff, pytest (SQLite, PostgreSQL, Redis, real model, real
# browser) and conversation tests. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2 SQLALCHEMY_SILENCE_UBER_WARNING=1
PY=.venv/bin/python
RASA=(.venv/bin/python -m rasa)
./scripts/bootstrap.sh
./scripts/ensure-chromium.sh || echo "[test] Chromium unavailable: the browser test will report it"

echo "[test] training the model if config, domain or data changed"
$PY -m bot train
MODEL="$($PY -c 'from bot.training import model_path; from bot.settings import get_settings; print(model_path(get_settings()))')"

echo "[test] rasa data validate"
mkdir -p var
"${RASA[@]}" data validate --config config.yml --domain bot/domain --data nlu_data bot/data >var/validate.log 2>&1 \
  || { cat var/validate.log; exit 1; }
# unused-utterance warnings are expected (actions choose responses at run time); any other warning fails
if grep -E "UserWarning" var/validate.log \
    | grep -vE "is not used in any story or rule|'empty_message' is listed in the domain file" | grep -q .; then
  grep -E "UserWarning" var/validate.log; exit 1
fi

echo "[test] ruff (style and import order: pyproject.toml)"
$PY -m ruff check .

echo "[test] pytest"
$PY -m pytest -q "$@"

echo "[test] conversation tests (rasa test core --fail-on-prediction-errors)"
"${RASA[@]}" test core --model "$MODEL" --stories tests/conversations --endpoints bot/endpoints.yml \
  --fail-on-prediction-errors --out var/test-results/core >var/test-core.log 2>&1 || {
  cat var/test-results/core/failed_test_stories.yml 2>/dev/null; tail -40 var/test-core.log; exit 1; }
grep -E "Correct:|Accuracy:" var/test-core.log | tail -2
echo "[test] all green"
