#!/usr/bin/env bash
# Runs the whole test suite: ./test.sh [pytest arguments]
source "$(dirname "$0")/scripts/ensure_venv.sh"
exec "$venv/bin/python" -m pytest -q "$@"
