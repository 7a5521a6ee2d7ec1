#!/usr/bin/env bash
# Runs the whole test suite: ./test.sh [pytest arguments]
source "$(dirname "$0")/scripts/ensure_venv.sh"
# One process per core, at most 4 (each holds its own JAX runtime, ~2-3 GB), a test file per process at a
# time (module fixtures are built once); MIE_JAX_TEST_WORKERS=0 runs in this process.
exec "$venv/bin/python" -m pytest -q -n "${MIE_JAX_TEST_WORKERS:-auto}" --maxprocesses=4 --dist loadfile "$@"
